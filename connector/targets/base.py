"""What every accounting system target offers the sync, and the limits the planner must respect.

A target module defines a `PROFILE` (pure data the planner and the mapping validator use) and a
client implementing `Target`: the few operations the sync needs, in the system's own words
inside, in the connector's words outside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from connector.errors import ConnectorError, ExitCode

if TYPE_CHECKING:
    from connector.http import Stats
    from connector.planning import PlannedInvoice, Row


@dataclass(frozen=True)
class TargetProfile:
    name: str
    display_name: str
    # Longest row text the target stores; longer texts are cut by the planner.
    row_text_max: int
    article_max: int
    # None when the target documents no character rule for article numbers.
    article_pattern: re.Pattern[str] | None
    article_rule: str
    # Decimals a quantity may carry on the wire.
    quantity_places: int
    # Decimals a unit price may carry on the wire.
    price_places: int

    def article_problem(self, article: str) -> str | None:
        """Why the target would reject this article number, or None."""
        if not article:
            return f"{self.display_name} needs a non-empty article number"
        if len(article) > self.article_max:
            return (
                f"article {article!r} is {len(article)} characters; "
                f"{self.display_name} allows at most {self.article_max}"
            )
        if self.article_pattern is not None and not self.article_pattern.fullmatch(article):
            return f"article {article!r} is not valid in {self.display_name}: {self.article_rule}"
        return None


@dataclass(frozen=True)
class RemoteRow:
    article: str | None
    description: str
    quantity: Decimal | None
    price: Decimal | None
    unit: str | None
    # The target's id of the row, to update it in place. Not part of the row's identity: Fortnox
    # gives every row a new id on every update.
    row_id: int | None = field(default=None, compare=False)

    @property
    def is_text(self) -> bool:
        return not self.article


@dataclass(frozen=True)
class RemoteInvoice:
    """An invoice as the target reports it. `rows` is None in list results."""

    document_number: str
    key: str | None
    customer_number: str
    booked: bool
    cancelled: bool
    currency: str | None = None
    rows: tuple[RemoteRow, ...] | None = None
    # Sent to the customer (e-mailed, printed, e-invoiced or marked sent): the customer holds it.
    sent: bool = False
    # Whether row prices include VAT; None when the answer does not say (list results).
    vat_included: bool | None = None

    @property
    def live(self) -> bool:
        return not self.cancelled

    @property
    def closed(self) -> bool:
        """Never to be changed again by the connector: booked, sent or cancelled."""
        return self.booked or self.sent or self.cancelled


class TargetRefusal(ConnectorError):
    """The target refused one invoice for a reason a person must fix (unknown customer,
    unknown article...). Final for that invoice; the sync goes on with the others."""

    exit_code = ExitCode.ATTENTION

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.code = code


def row_differences(
    remote: Sequence[RemoteRow], rows: Sequence[Row], *, texts: bool = True
) -> list[str]:
    """How the target's rows differ from the planned ones, in words; empty when they match.

    Numbers compare as Decimals, so "2.50" and "2.5" match. A text row must carry no article,
    quantity or price. A price the plan left to the target (None: only in rows written by an
    earlier version) is not compared. `texts=False` leaves row texts out: what a write must
    land is the money, and a target may store a text in its own form.
    """
    if len(remote) != len(rows):
        return [f"{len(remote)} row(s) instead of {len(rows)}"]
    found: list[str] = []
    for number, (theirs, ours) in enumerate(zip(remote, rows, strict=True), start=1):
        if texts and theirs.description != ours.description:
            found.append(f"row {number}: text {theirs.description!r}")
        if ours.is_text:
            if theirs.article or theirs.quantity not in (None, Decimal(0)):
                found.append(f"row {number}: a text row carries article or quantity")
            elif theirs.price not in (None, Decimal(0)):
                found.append(f"row {number}: a text row carries price {theirs.price}")
            continue
        if theirs.article != ours.article:
            found.append(f"row {number}: article {theirs.article} instead of {ours.article}")
        if theirs.quantity != ours.quantity:
            found.append(f"row {number}: quantity {theirs.quantity} instead of {ours.quantity}")
        if (ours.unit or None) != (theirs.unit or None):
            found.append(f"row {number}: unit {theirs.unit} instead of {ours.unit}")
        if ours.price is not None and theirs.price != ours.price:
            found.append(f"row {number}: price {theirs.price} instead of {ours.price}")
    return found


def rows_match(remote: Sequence[RemoteRow], rows: Sequence[Row]) -> bool:
    """Whether the target's rows are the rows the connector wrote (so no person edited them)."""
    return not row_differences(remote, rows)


class Target(Protocol):
    """An accounting system the sync writes invoice drafts to."""

    profile: TargetProfile
    stats: Stats
    # How long the target's search may take to list a new invoice. After a create whose answer
    # was lost, a search that misses it is trusted only this long after the create.
    search_settle_seconds: float

    def find_invoices(self, fragment: str) -> list[RemoteInvoice]:
        """Every invoice whose key field contains `fragment` (the remote's search), read in a
        stable order so no page repeats or misses one."""

    def get_invoice(self, document_number: str) -> RemoteInvoice | None:
        """One invoice with its rows; None when the target does not have it."""

    def create_invoice(self, invoice: PlannedInvoice, invoice_date: date) -> RemoteInvoice:
        """Create a draft dated `invoice_date`; raises OutcomeUnknownError when the answer was
        lost. Returns the target's answer, rows included, for the caller to verify."""

    def can_update(self, invoice: PlannedInvoice, current: RemoteInvoice) -> bool:
        """Whether `update_invoice` can turn `current` into the plan in one request without a
        row inheriting fields of another (False for a draft written by an earlier version
        without the header row that shares no row with the plan)."""

    def update_invoice(
        self,
        document_number: str,
        invoice: PlannedInvoice,
        current: RemoteInvoice,
        *,
        header_only: bool = False,
        invoice_date: date | None = None,
    ) -> RemoteInvoice:
        """Make the draft's rows the planned ones. `current` is the draft as just read (its
        rows hold what the connector last wrote). `header_only`: add the plan's first (header)
        row and keep every current row untouched. `invoice_date` re-dates the draft. A lost
        answer raises OutcomeUnknownError: row ids change with every update, so it is never
        resent blindly."""

    def precheck(self, invoice: PlannedInvoice) -> str | None:
        """For a dry run: why the target would refuse creating this invoice (a customer it
        does not have), in plain words, or None."""

    def refuses_date(self, refusal: TargetRefusal) -> bool:
        """Whether a refusal is about the invoice date lying in a locked period."""

    def cancel_invoice(self, document_number: str) -> None:
        """Cancel a draft the connector made that has nothing left to bill."""

    def article_prices(self) -> dict[str, Decimal | None]:
        """The active articles: article number -> sales price (None when it has none)."""

    def locked_through(self) -> date | None:
        """The last day of the period the company has locked for bookkeeping, or None when
        nothing is locked or the target does not say."""

    def identity(self) -> str | None:
        """Which company the credentials reach (Fortnox: its tenant id), to bind the state to
        it; None when the target will not say."""

    def explain(self, refusal: TargetRefusal, invoice: PlannedInvoice) -> str:
        """The refusal in plain words, naming the customer or article concerned."""

    def still_refused(self, code: str | None, invoice: PlannedInvoice) -> str | None:
        """Before sending rows that were refused: the plain reason if a read shows the cause
        is still there (the customer or article still missing), None to send again."""

    def close(self) -> None: ...


class NeedsStepping(Exception):
    """The draft's rows cannot be changed into the planned ones in a single request without a
    row taking over fields of another (a draft written by an earlier version, without the
    header row). The sync first writes the header alone, keeping every row, then updates."""
