"""What every accounting system target gives the connector, in the connector's words.

A target is a package `connector/targets/<name>/` exposing `SPEC` (a `TargetSpec`): pure data
the planner and the mapping validator use (the profile), its settings section, its OAuth app
description, and where its client lives. The client implements `Target`: the few operations the
sync needs, in the system's own words inside and the connector's words outside. Nothing here
imports an HTTP client, so `--help` and `mappings validate` stay light.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field, SecretStr, field_validator

from connector.errors import ConfigError, TargetRefusal

if TYPE_CHECKING:
    import httpx

    from connector.auth import TokenEndpoint
    from connector.http import Stats
    from connector.planning import InvoiceStatus, PlannedInvoice, Row
    from connector.settings import Settings

__all__ = [
    "NeedsStepping",
    "OAuthApp",
    "RegisterArticle",
    "RemoteInvoice",
    "RemoteRow",
    "RemoteState",
    "Target",
    "TargetProfile",
    "TargetRefusal",
    "TargetSettings",
    "TargetSpec",
    "row_differences",
    "rows_match",
]


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
    # What a person does to an invoice to withdraw it there ("cancelled", "deleted").
    withdrawn: str = "cancelled"
    # Whether an invoice can disappear from the target altogether (Visma deletes drafts).
    # Where it cannot (Fortnox keeps a cancelled invoice), one not found means something else
    # (another company, a wrong address) and never counts as withdrawn.
    deletable: bool = False
    # Whether a row carries its own unit. Visma takes it from the article: planned rows then
    # have none, and the mapping's unit is only checked against the article's.
    row_units: bool = True

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
class RegisterArticle:
    """One article of the target's register, as the mapping check needs it."""

    number: str
    active: bool
    # The sales price; None when it has none (Visma's 0 reads as none, as for the planner).
    price: Decimal | None
    # The article's own unit code, None when the register does not say.
    unit: str | None


class RemoteState(StrEnum):
    OPEN = "open"  # a draft the connector may still change
    CLOSED = "closed"  # booked, sent or converted: billed, never changed again
    GONE = "gone"  # cancelled or deleted: bills nothing


@dataclass(frozen=True)
class RemoteInvoice:
    """An invoice as the target reports it. `rows` is None in list results.

    `remote_id` addresses it in the target's API (Fortnox: the document number; Visma: the
    draft's GUID); `number` is what a person sees (None for a Visma draft, which has none).
    """

    remote_id: str
    number: str | None
    key: str | None
    customer_number: str
    state: RemoteState
    # How it closed or went, in the connector's status words (booked, sent, cancelled).
    status: InvoiceStatus | None = None
    currency: str | None = None
    rows: tuple[RemoteRow, ...] | None = None
    # Whether row prices include VAT; None when the answer does not say (list results).
    vat_included: bool | None = None
    # GONE only: the target no longer has it at all (deleted, or never known there) rather
    # than keeping it as cancelled.
    vanished: bool = False
    invoice_date: date | None = None
    # The target's own answer, for a read-modify-write that keeps what a person set on the
    # draft (Visma's PUT replaces the whole draft). Not part of the invoice's identity.
    source: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """How messages name it: its number, else its id."""
        return self.number or self.remote_id

    @property
    def live(self) -> bool:
        return self.state is not RemoteState.GONE


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
    # How long the target's listing may take to show a new invoice. After a create whose
    # answer was lost, a listing that misses it is trusted only this long after the create.
    search_settle_seconds: float

    def find(self, keys: Collection[str]) -> list[RemoteInvoice]:
        """Every invoice, in any state, whose key is exactly one of `keys`. The target chooses
        how to search; whatever its search matches, only exact keys come back."""

    def find_all(self, periods: Collection[str] | None = None) -> list[RemoteInvoice]:
        """Every invoice carrying a key of the connector's form for one of these service months
        (YYYY-MM), in any state; every one of the connector's when `periods` is None."""

    def get(self, remote_id: str) -> RemoteInvoice:
        """One invoice with its rows. One the target no longer has comes back GONE (vanished),
        never as an error: the run goes on."""

    def create(self, invoice: PlannedInvoice, invoice_date: date) -> RemoteInvoice:
        """Create a draft dated `invoice_date`; raises OutcomeUnknownError when the answer was
        lost. Returns the target's answer, rows included, for the caller to verify."""

    def can_update(self, invoice: PlannedInvoice, current: RemoteInvoice) -> bool:
        """Whether `update` can turn `current` into the plan in one request without a row
        inheriting fields of another (False for a Fortnox draft written by an earlier version
        without the header row that shares no row with the plan)."""

    def update(
        self,
        remote_id: str,
        invoice: PlannedInvoice,
        current: RemoteInvoice,
        *,
        header_only: bool = False,
        invoice_date: date | None = None,
    ) -> RemoteInvoice:
        """Make the draft's rows the planned ones. `current` is the draft as just read (its
        rows hold what the connector last wrote). `header_only`: add the plan's first (header)
        row and keep every current row untouched. `invoice_date` re-dates the draft. A lost
        answer raises OutcomeUnknownError and is settled by reading, never resent blindly."""

    def discard(self, remote_id: str) -> None:
        """Withdraw a draft the connector made that has nothing left to bill (Fortnox cancels
        it, Visma deletes it); afterwards `get` reports it GONE."""

    def precheck(self, invoice: PlannedInvoice) -> str | None:
        """For a dry run: why the target would refuse creating this invoice (a customer it
        does not have), in plain words, or None."""

    def refuses_date(self, refusal: TargetRefusal) -> bool:
        """Whether a refusal is about the invoice date lying in a locked period."""

    def article_prices(self) -> dict[str, Decimal | None]:
        """The active articles: article number -> sales price (None when it has none)."""

    def article_register(self) -> dict[str, RegisterArticle]:
        """Every article, active or not, by number: for `connector mappings check`."""

    def unit_codes(self) -> set[str] | None:
        """The unit codes a row may carry, or None where rows take the article's unit (Visma)."""

    def locked_through(self) -> date | None:
        """The last day of the period the company has locked for bookkeeping, or None when
        nothing is locked or the target does not say."""

    def identity(self) -> str | None:
        """Which company the credentials reach, to bind the state to it; None when the target
        will not say."""

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


# --- settings and authorisation -------------------------------------------------------------


def http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class TargetSettings(BaseModel):
    """The settings every target has, under `CONNECTOR_<NAME>__`; a target subclasses it with
    its own defaults and extra fields."""

    api_url: str
    auth_url: str
    client_id: str | None = None
    client_secret: SecretStr | None = None
    redirect_uri: str = "http://localhost:8790/callback"
    # REQUESTS/SECONDS, kept a little under the system's own limit.
    rate_limit: str
    timeout_seconds: float = Field(default=30.0, gt=0)
    # After a create whose answer was lost, "not found" in a listing is trusted only this long
    # after the create (how fast a listing shows a new invoice is undocumented).
    search_settle_seconds: float = Field(default=600.0, ge=0)

    @field_validator("api_url", "auth_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return http_url(value)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        count, _, seconds = value.partition("/")
        try:
            ok = int(count) >= 1 and float(seconds) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("must be REQUESTS/SECONDS, e.g. 24/5")
        return value


@dataclass(frozen=True)
class OAuthApp:
    """How a person authorises the connector in one system: its endpoints under the settings'
    `auth_url`, scopes, extra parameters and wording. auth.py holds the mechanics."""

    system: str  # the display name
    command: str  # the target's name in `connector auth login <command>`
    authorize_path: str
    token_path: str
    scopes: str
    extra_params: tuple[tuple[str, str], ...] = ()
    # Who logs in, for the instructions.
    who: str = "an administrator"
    code_minutes: int = 5
    # Extra authorisation parameters for a service account's consent (Fortnox), or None when
    # the system has no such thing.
    service_account_params: tuple[tuple[str, str], ...] | None = None
    # Whether a refresh answer may keep the refresh token (a reusable one) instead of returning
    # a new one; a rotating-only system treats a missing one as an error.
    refresh_may_be_reused: bool = False
    token_file: str = ""

    @property
    def login_hint(self) -> str:
        return f"connector auth login {self.command}"


@dataclass(frozen=True)
class TargetSpec:
    """One accounting system, as the registry knows it."""

    profile: TargetProfile
    settings: type[TargetSettings]
    oauth: OAuthApp
    # "module:function" of the client factory: (settings, *, http, sleep, clock) -> Target.
    factory: str
    # "module:function" (settings, access_token) -> lines: after a service account's consent,
    # what the person must still configure (Fortnox: the tenant id).
    after_service_login: str | None = None

    @property
    def name(self) -> str:
        return self.profile.name

    def env(self, field_name: str) -> str:
        return f"CONNECTOR_{self.name.upper()}__{field_name.upper()}"

    def section(self, settings: Settings) -> TargetSettings:
        section = getattr(settings, self.name)
        assert isinstance(section, self.settings)
        return section

    def configured(self, settings: Settings) -> bool:
        section = self.section(settings)
        secret = section.client_secret
        return bool(section.client_id and secret and secret.get_secret_value())

    def require(self, settings: Settings) -> tuple[str, SecretStr]:
        """The client id and secret, or a ConfigError naming the variables to set."""
        section = self.section(settings)
        missing = []
        if not section.client_id:
            missing.append(self.env("client_id"))
        secret = section.client_secret
        if secret is None or not secret.get_secret_value():
            missing.append(self.env("client_secret"))
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} (see README, Configuration)")
        assert section.client_id is not None
        assert secret is not None
        return section.client_id, secret

    def token_endpoint(self, settings: Settings, http: httpx.Client) -> TokenEndpoint:
        """The system's OAuth token endpoint with the configured client."""
        from connector.auth import TokenEndpoint

        client_id, secret = self.require(settings)
        return TokenEndpoint(
            f"{self.section(settings).auth_url}{self.oauth.token_path}",
            client_id,
            secret,
            http=http,
            app=self.oauth,
            setting=self.env(""),
        )

    def open(self, settings: Settings, **kwargs: Any) -> Target:
        """The client, imported only now (HTTP libraries and all)."""
        self.require(settings)
        factory: Callable[..., Target] = _load(self.factory)
        return factory(settings, **kwargs)

    def after_service_consent(self, settings: Settings, access_token: str) -> list[str]:
        if self.after_service_login is None:
            return []
        hook: Callable[[Settings, str], list[str]] = _load(self.after_service_login)
        return hook(settings, access_token)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
