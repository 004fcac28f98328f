"""What every accounting system target offers the sync, and the limits the planner must respect.

A target module defines a `PROFILE` (pure data the planner and the mapping validator use) and a
client implementing `Target`: the few operations the sync needs, in the system's own words
inside, in the connector's words outside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
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

    @property
    def live(self) -> bool:
        return not self.cancelled


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


def rows_match(remote: Sequence[RemoteRow], rows: Sequence[Row]) -> bool:
    """Whether the target's rows are the rows the connector wrote (so no person edited them).

    Numbers compare as Decimals, so "2.50" and "2.5" match. A price the connector left to the
    article register is not compared; a text row compares by its text alone.
    """
    if len(remote) != len(rows):
        return False
    for theirs, ours in zip(remote, rows, strict=True):
        if theirs.description != ours.description:
            return False
        if ours.is_text:
            if theirs.article or (theirs.quantity not in (None, Decimal(0))):
                return False
            continue
        if theirs.article != ours.article or theirs.quantity != ours.quantity:
            return False
        if (ours.unit or None) != (theirs.unit or None):
            return False
        if ours.price is not None and theirs.price != ours.price:
            return False
    return True


class Target(Protocol):
    """An accounting system the sync writes invoice drafts to."""

    profile: TargetProfile
    stats: Stats

    def find_invoices(self, fragment: str) -> list[RemoteInvoice]:
        """Every invoice whose key field contains `fragment` (the remote's search)."""

    def get_invoice(self, document_number: str) -> RemoteInvoice:
        """One invoice with its rows."""

    def create_invoice(self, invoice: PlannedInvoice) -> RemoteInvoice:
        """Create a draft; raises OutcomeUnknownError when the answer was lost."""

    def update_invoice(self, document_number: str, invoice: PlannedInvoice) -> RemoteInvoice:
        """Replace a draft's rows with the planned ones."""

    def cancel_invoice(self, document_number: str) -> None:
        """Cancel a draft the connector made that has nothing left to bill."""

    def article_numbers(self) -> set[str]:
        """Every article number that exists in the system."""

    def explain(self, refusal: TargetRefusal, invoice: PlannedInvoice) -> str:
        """The refusal in plain words, naming the customer or article concerned."""

    def still_refused(self, code: str | None, invoice: PlannedInvoice) -> str | None:
        """Before sending rows that were refused: the plain reason if a read shows the cause
        is still there (the customer or article still missing), None to send again."""

    def close(self) -> None: ...
