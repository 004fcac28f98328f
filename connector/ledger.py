"""The internal ledger: entry model, validation, and the change-feed client.

Validation is hand-written rather than generated so that each reason names the field and says
what is wrong in words an operator can act on. Amounts are parsed to Decimal from strings (or
from JSON numbers decoded as Decimal); a float never appears.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from connector.errors import ConfigError, LedgerUnavailableError

if TYPE_CHECKING:
    import httpx
    from pydantic import SecretStr

    from connector.http import RetryPolicy

# The entry model is imported by the planner, the state store and `connector status`; the feed
# client's HTTP stack (httpx, retries, logging) is imported only when a client is made.

MAX_ID = 64
MAX_DESCRIPTION = 1000
MAX_HOURS_PLACES = 4
_DECIMAL = re.compile(r"^[+-]?\d+(\.\d+)?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_FIELDS = (
    "id",
    "revision",
    "kind",
    "status",
    "customer_number",
    "category",
    "hours",
    "prepaid_hours",
    "unit_price",
    "currency",
    "performed_on",
    "description",
    "reference",
    "changed_at",
)


class Kind(StrEnum):
    DEBIT = "debit"
    TOPUP = "topup"


class Status(StrEnum):
    ACTIVE = "active"
    VOID = "void"


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    revision: int
    kind: Kind
    status: Status
    customer_number: str
    category: str
    hours: Decimal
    prepaid_hours: Decimal
    unit_price: Decimal | None
    currency: str
    performed_on: date
    description: str
    reference: str | None
    changed_at: datetime

    @property
    def period(self) -> str:
        return f"{self.performed_on.year:04d}-{self.performed_on.month:02d}"


class InvalidEntry(ValueError):
    """An entry that breaks the contract. `entry_id` is set when the id itself was usable."""

    def __init__(self, reason: str, entry_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.entry_id = entry_id


def usable_id(raw: object) -> str | None:
    """The entry's id when it is a valid id, else None (the entry is then known by position)."""
    if isinstance(raw, dict):
        value = raw.get("id")
        if isinstance(value, str) and 1 <= len(value) <= MAX_ID and value.strip() == value:
            return value
    return None


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{field}: must be a decimal string, got {_kind(value)}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str) and _DECIMAL.match(value.strip()):
        number = Decimal(value.strip())
    else:
        raise ValueError(f"{field}: must be a decimal string, got {value!r:.40}")
    if not number.is_finite():
        raise ValueError(f"{field}: must be a finite number")
    return number


def _places(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _text(raw: dict[str, Any], field: str, *, max_len: int, nullable: bool = False) -> str | None:
    value = raw.get(field)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, got {_kind(value)}")
    if len(value) > max_len:
        raise ValueError(f"{field}: longer than {max_len} characters ({len(value)})")
    return value


def parse_entry(raw: object) -> Entry:
    """Validate one raw feed item against the ledger contract (docs/ledger-api.md)."""
    entry_id = usable_id(raw)
    if not isinstance(raw, dict):
        raise InvalidEntry(f"entry is not a JSON object (got {_kind(raw)})", None)
    if entry_id is None:
        raise InvalidEntry("id: missing or not a string of 1-64 characters", None)
    try:
        return _parse(raw, entry_id)
    except ValueError as exc:
        raise InvalidEntry(str(exc), entry_id) from None


def _parse(raw: dict[str, Any], entry_id: str) -> Entry:
    missing = [f for f in _FIELDS if f not in raw and f not in ("reference", "unit_price")]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    revision = raw["revision"]
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise ValueError(f"revision: must be an integer >= 1, got {revision!r:.40}")
    try:
        kind = Kind(raw["kind"])
    except ValueError:
        raise ValueError(f"kind: must be 'debit' or 'topup', got {raw['kind']!r:.40}") from None
    try:
        status = Status(raw["status"])
    except ValueError:
        raise ValueError(f"status: must be 'active' or 'void', got {raw['status']!r:.40}") from None
    customer = _text(raw, "customer_number", max_len=64)
    if not customer or customer.strip() != customer:
        raise ValueError("customer_number: must be a non-empty string without surrounding spaces")
    category = _text(raw, "category", max_len=64)
    if not category:
        raise ValueError("category: must be a non-empty string")
    hours = _decimal(raw["hours"], "hours")
    if hours <= 0:
        raise ValueError(f"hours: must be greater than 0, got {hours}")
    if _places(hours) > MAX_HOURS_PLACES:
        raise ValueError(f"hours: more than {MAX_HOURS_PLACES} decimals ({hours})")
    prepaid = _decimal(raw["prepaid_hours"], "prepaid_hours")
    if prepaid < 0 or prepaid > hours:
        raise ValueError(f"prepaid_hours: must be between 0 and hours ({hours}), got {prepaid}")
    if _places(prepaid) > MAX_HOURS_PLACES:
        raise ValueError(f"prepaid_hours: more than {MAX_HOURS_PLACES} decimals ({prepaid})")
    if kind is Kind.TOPUP and prepaid != 0:
        raise ValueError(f"prepaid_hours: must be 0 for a top-up, got {prepaid}")
    unit_price = raw.get("unit_price")
    price = None if unit_price is None else _decimal(unit_price, "unit_price")
    if price is not None and price < 0:
        raise ValueError(f"unit_price: must not be negative, got {price}")
    currency = raw["currency"]
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ValueError(f"currency: must be a 3-letter ISO 4217 code, got {currency!r:.40}")
    performed = raw["performed_on"]
    try:
        if not isinstance(performed, str) or len(performed) != 10:
            raise ValueError
        performed_on = date.fromisoformat(performed)
    except ValueError:
        raise ValueError(
            f"performed_on: must be a date YYYY-MM-DD, got {performed!r:.40}"
        ) from None
    description = _text(raw, "description", max_len=MAX_DESCRIPTION)
    reference = _text(raw, "reference", max_len=200, nullable=True)
    changed = raw["changed_at"]
    try:
        if not isinstance(changed, str):
            raise ValueError
        changed_at = datetime.fromisoformat(changed.replace("Z", "+00:00"))
        if changed_at.tzinfo is None:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"changed_at: must be an RFC 3339 timestamp with offset, got {changed!r:.40}"
        ) from None
    assert description is not None
    return Entry(
        id=entry_id,
        revision=revision,
        kind=kind,
        status=status,
        customer_number=customer,
        category=category,
        hours=hours,
        prepaid_hours=prepaid,
        unit_price=price,
        currency=currency,
        performed_on=performed_on,
        description=description,
        reference=reference,
        changed_at=changed_at,
    )


@dataclass(frozen=True)
class FeedItem:
    """One raw item of a page, with its position for items that have no usable id."""

    position: str
    raw: object
    entry_id: str | None
    revision: int | None


@dataclass(frozen=True)
class Page:
    items: list[FeedItem]
    next_cursor: str
    has_more: bool


class LedgerClient:
    """Pages through the ledger's change feed (docs/ledger-api.md) with retries."""

    def __init__(
        self,
        url: str,
        token: SecretStr,
        *,
        client: httpx.Client | None = None,
        page_size: int = 500,
        timeout_seconds: float = 30.0,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        import httpx

        from connector.http import RetryPolicy, Stats

        self._base = url.rstrip("/")
        self._token = token
        self._client = client or httpx.Client(timeout=timeout_seconds)
        self._page_size = page_size
        self._policy = policy or RetryPolicy()
        self._sleep_kw: dict[str, Any] = {"sleep": sleep} if sleep else {}
        self.stats = Stats()

    def close(self) -> None:
        self._client.close()

    def feed(self, cursor: str | None) -> Iterator[Page]:
        """Pages of the change feed after `cursor` (from the beginning when None)."""
        yield from self._paged({}, cursor)

    def window(
        self, customer_number: str, performed_from: date, performed_to: date
    ) -> Iterator[Page]:
        """Current revision of every entry of one customer within a date window."""
        params = {
            "customer_number": customer_number,
            "performed_from": performed_from.isoformat(),
            "performed_to": performed_to.isoformat(),
        }
        yield from self._paged(params, None)

    def _paged(self, params: dict[str, str], cursor: str | None) -> Iterator[Page]:
        seen: set[str] = set()
        while True:
            page = self._fetch(params, cursor)
            yield page
            if not page.has_more:
                return
            if page.next_cursor == cursor or page.next_cursor in seen:
                raise LedgerUnavailableError(
                    f"ledger feed does not advance (cursor {page.next_cursor!r} repeats)"
                )
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    def _fetch(self, params: dict[str, str], cursor: str | None) -> Page:
        from connector.http import GaveUpError, send

        query = dict(params, limit=str(self._page_size))
        if cursor is not None:
            query["cursor"] = cursor
        url = f"{self._base}/entries"

        def build() -> httpx.Request:
            return self._client.build_request(
                "GET",
                url,
                params=query,
                headers={
                    "Authorization": f"Bearer {self._token.get_secret_value()}",
                    "Accept": "application/json",
                },
            )

        try:
            response = send(
                self._client, build, policy=self._policy, stats=self.stats, **self._sleep_kw
            )
        except GaveUpError as exc:
            raise LedgerUnavailableError(
                f"ledger unreachable: {exc.reason()}; check CONNECTOR_LEDGER__URL if the "
                "address is wrong"
            ) from None
        if response.status_code in (401, 403):
            raise ConfigError(
                "the ledger rejected the token: check CONNECTOR_LEDGER__TOKEN",
                status=response.status_code,
            )
        if response.status_code == 404:
            raise ConfigError(f"the ledger has no {url}: check CONNECTOR_LEDGER__URL", status=404)
        if response.status_code >= 300:
            raise LedgerUnavailableError(
                f"ledger refused the request: {response.text[:200]!r}",
                status=response.status_code,
            )
        return self._page(response, cursor)

    @staticmethod
    def _page(response: httpx.Response, cursor: str | None) -> Page:
        from connector.http import decode_json

        try:
            body = decode_json(response.content)
        except ValueError:
            raise LedgerUnavailableError(
                "ledger answered with a body that is not JSON", status=response.status_code
            ) from None
        if not (
            isinstance(body, dict)
            and isinstance(body.get("entries"), list)
            and isinstance(body.get("next_cursor"), str)
            and isinstance(body.get("has_more"), bool)
        ):
            raise LedgerUnavailableError(
                "ledger answered without entries/next_cursor/has_more", status=response.status_code
            )
        where = "start" if cursor is None else f"cursor {cursor}"
        items = []
        for index, raw in enumerate(body["entries"]):
            revision = raw.get("revision") if isinstance(raw, dict) else None
            items.append(
                FeedItem(
                    position=f"feed {where}, item {index + 1}",
                    raw=raw,
                    entry_id=usable_id(raw),
                    revision=revision
                    if isinstance(revision, int) and not isinstance(revision, bool)
                    else None,
                )
            )
        return Page(items=items, next_cursor=body["next_cursor"], has_more=body["has_more"])
