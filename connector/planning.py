"""Planning: from ledger entries, mappings and what was already invoiced to the desired invoices.

Pure functions, no I/O: the same inputs always give the same plan, which is what makes the sync
safe to repeat after any fault. The rules are written up in docs/planning.md.

The model is a net position per entry. Rows already on a closed (booked) invoice are fixed. The
entry's open invoice carries what is still needed to make the billed total equal the entry's
current revision: its rows, or, once a booked row is wrong, a correction (the booked rows negated)
plus the new rows.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from connector.ledger import Entry, Kind, Status
from connector.prepaid import Account, Movement, Prepaid, accounts, overdraw_reason

if TYPE_CHECKING:  # types only: the target modules import the planner
    from connector.mappings import Category, Mappings
    from connector.targets.base import TargetProfile

PREPAID_CATEGORY = "prepaid_hours"
KEY_PREFIX = "SK"
_KEY = re.compile(r"^SK-(?P<customer>.+)-(?P<period>\d{4}-\d{2})(?:-(?P<seq>[2-9]|[1-9]\d+))?$")


class RowRole(StrEnum):
    HEADER = "header"  # text row first on every invoice: what it is for (belongs to no entry)
    CHARGE = "charge"  # the entry's billed hours
    PREPAID_NOTE = "prepaid_note"  # text row: hours drawn from the prepaid balance
    CORRECTION = "correction"  # negation of rows on a booked invoice
    # Prepaid hours drawn beyond the balance, charged as ordinary hours (overdraw = invoice).
    OVERDRAW = "overdraw"
    # Text row last on an invoice: the prepaid balance at month end (belongs to no entry).
    BALANCE = "balance"


# Rows of the invoice itself rather than of an entry.
INVOICE_ROLES = frozenset({RowRole.HEADER, RowRole.BALANCE})
_ROLE_ORDER = {
    RowRole.CORRECTION: 0,
    RowRole.CHARGE: 1,
    RowRole.PREPAID_NOTE: 2,
    RowRole.OVERDRAW: 3,
}
BALANCE_PREFIX = "Kvar i timbanken:"
SWEDISH_MONTHS = (
    "januari", "februari", "mars", "april", "maj", "juni",
    "juli", "augusti", "september", "oktober", "november", "december",
)  # fmt: skip


# The rows an entry bills for itself (its corrections of earlier rows are CORRECTION).
_OWN_ROLES = frozenset({RowRole.CHARGE, RowRole.PREPAID_NOTE, RowRole.OVERDRAW})


class InvoiceStatus(StrEnum):
    OPEN = "open"  # a draft the connector may still change (or not yet created)
    BOOKED = "booked"  # booked in the accounting system: immutable, billed
    SENT = "sent"  # sent to the customer (e-mail, print, e-invoice), not yet booked: billed
    LOCKED = "locked"  # edited by a person: never overwritten, treated as billed
    CANCELLED = "cancelled"  # cancelled by a person: nothing on it is billed

    @property
    def closed(self) -> bool:
        return self is not InvoiceStatus.OPEN

    @property
    def billed(self) -> bool:
        """The customer holds it (or a person owns it): what is on it counts as invoiced."""
        return self in (InvoiceStatus.BOOKED, InvoiceStatus.SENT, InvoiceStatus.LOCKED)


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


class Outcome(StrEnum):
    INVOICED = "invoiced"
    EXCLUDED = "excluded"
    ATTENTION = "attention"


@dataclass(frozen=True, order=True)
class InvoiceKey:
    customer_number: str
    period: str  # YYYY-MM
    sequence: int = 1  # 1 = the month's invoice, 2.. = supplementary invoices

    @property
    def text(self) -> str:
        base = f"{KEY_PREFIX}-{self.customer_number}-{self.period}"
        return base if self.sequence == 1 else f"{base}-{self.sequence}"

    def next(self) -> InvoiceKey:
        return InvoiceKey(self.customer_number, self.period, self.sequence + 1)

    @property
    def base(self) -> InvoiceKey:
        return InvoiceKey(self.customer_number, self.period, 1)

    @classmethod
    def parse(cls, text: str) -> InvoiceKey:
        match = _KEY.match(text)
        if not match:
            raise ValueError(f"not an invoice key: {text!r}")
        return cls(match["customer"], match["period"], int(match["seq"] or 1))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Row:
    entry_id: str
    role: RowRole
    description: str
    article: str | None = None
    quantity: Decimal | None = None
    unit: str | None = None
    price: Decimal | None = None

    @property
    def is_text(self) -> bool:
        return self.article is None

    @property
    def amount(self) -> Decimal | None:
        if self.quantity is None or self.price is None:
            return None
        return self.quantity * self.price

    def money(self) -> tuple[str, Decimal, Decimal | None] | None:
        """What the row bills, for deciding whether a booked row is still right."""
        if self.article is None or self.quantity is None:
            return None
        return (self.article, self.quantity, self.price)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "role": self.role.value,
            "description": self.description,
            "article": self.article,
            "quantity": None if self.quantity is None else str(self.quantity),
            "unit": self.unit,
            "price": None if self.price is None else str(self.price),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        return cls(
            entry_id=data["entry_id"],
            role=RowRole(data["role"]),
            description=data["description"],
            article=data.get("article"),
            quantity=None if data.get("quantity") is None else Decimal(data["quantity"]),
            unit=data.get("unit"),
            price=None if data.get("price") is None else Decimal(data["price"]),
        )


@dataclass(frozen=True)
class Placement:
    """An entry's rows as last written to one invoice."""

    entry_id: str
    key: InvoiceKey
    revision: int
    rows: tuple[Row, ...]

    @property
    def charges(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.role is RowRole.CHARGE)


@dataclass(frozen=True)
class KnownInvoice:
    """An invoice the target already has (or had), as recorded in the state store."""

    key: InvoiceKey
    status: InvoiceStatus
    currency: str | None = None
    remote_id: str | None = None  # what addresses it in the target's API
    digest: str | None = None  # rows_digest() of what the connector last wrote
    display_number: str | None = None  # what a person sees (none on a Visma draft)


@dataclass(frozen=True)
class Invoiced:
    """What was already invoiced: the planner's view of the state store."""

    invoices: Mapping[InvoiceKey, KnownInvoice] = field(default_factory=dict)
    placements: Mapping[str, Sequence[Placement]] = field(default_factory=dict)
    # (customer, period) -> why: months a state rebuild could not account for fully; nothing
    # is planned for them until a person releases them.
    holds: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # (entry id, cancelled invoice): entries a person chose to invoice again although that
    # invoice of theirs was cancelled (connector resync --reinvoice-cancelled).
    reinvoiced: frozenset[tuple[str, InvoiceKey]] = frozenset()

    def status(self, key: InvoiceKey) -> InvoiceStatus:
        known = self.invoices.get(key)
        return known.status if known else InvoiceStatus.OPEN

    def open_key(self, base: InvoiceKey) -> InvoiceKey:
        """The invoice that new rows of this customer and month go to."""
        key = base.base
        while self.status(key).closed:
            key = key.next()
        return key


@dataclass(frozen=True)
class EntryResult:
    ref: str  # entry id, or feed position when the entry has no usable id
    outcome: Outcome
    reason: str
    keys: tuple[InvoiceKey, ...] = ()
    customer_number: str | None = None
    period: str | None = None
    revision: int | None = None


@dataclass(frozen=True)
class PlannedInvoice:
    key: InvoiceKey
    currency: str
    rows: tuple[Row, ...]
    action: Action
    revisions: Mapping[str, int]  # entry id -> revision whose rows are on this invoice
    remote_id: str | None = None
    display_number: str | None = None

    @property
    def item_rows(self) -> tuple[Row, ...]:
        """The rows that belong to entries: every row but the header (and the balance row)."""
        return tuple(r for r in self.rows if r.role not in INVOICE_ROLES)

    @property
    def total(self) -> Decimal:
        return sum((a for r in self.rows if (a := r.amount) is not None), Decimal(0))

    @property
    def unpriced_rows(self) -> int:
        return sum(1 for r in self.rows if not r.is_text and r.price is None)

    @property
    def supplements(self) -> InvoiceKey | None:
        return self.key.base if self.key.sequence > 1 else None

    @property
    def digest(self) -> str:
        return rows_digest(self.rows, self.currency)

    def placements(self) -> list[Placement]:
        """Each entry's rows on this invoice, as they are recorded once it is written."""
        by_entry: dict[str, list[Row]] = defaultdict(list)
        for row in self.rows:
            if row.role not in INVOICE_ROLES:
                by_entry[row.entry_id].append(row)
        return [
            Placement(entry_id, self.key, self.revisions[entry_id], tuple(rows))
            for entry_id, rows in by_entry.items()
        ]


@dataclass(frozen=True)
class Plan:
    target: str
    invoices: tuple[PlannedInvoice, ...]
    results: tuple[EntryResult, ...]

    def by_outcome(self, outcome: Outcome) -> list[EntryResult]:
        return [r for r in self.results if r.outcome is outcome]

    @property
    def changes(self) -> list[PlannedInvoice]:
        return [i for i in self.invoices if i.action is not Action.UNCHANGED]


@dataclass(frozen=True)
class PlanView:
    """What `connector plan` shows: the plan a sync would carry out, and what it learnt from
    the accounting system on the way (statuses, refusals it would meet)."""

    plan: Plan
    checked: bool  # False: made without asking the accounting system (no credentials set)
    invoice_attention: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def rows_digest(rows: Iterable[Row], currency: str) -> str:
    """Stable fingerprint of an invoice's rows, to see whether a write is needed."""
    payload = json.dumps(
        {"currency": currency, "rows": [r.to_json() for r in rows]},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def record_write(
    invoiced: Invoiced,
    invoice: PlannedInvoice,
    remote_id: str | None = None,
    number: str | None = None,
) -> Invoiced:
    """What is invoiced once `invoice` has been written as an open draft. Pure.

    The state store applies the same transition to its tables; tests use this one to simulate
    long histories quickly.
    """
    invoices = dict(invoiced.invoices)
    known = invoiced.invoices.get(invoice.key)
    invoices[invoice.key] = KnownInvoice(
        invoice.key,
        InvoiceStatus.OPEN,
        invoice.currency,
        remote_id or invoice.remote_id,
        invoice.digest,
        number or (known.display_number if known else None),
    )
    fresh = {p.entry_id: p for p in invoice.placements()}
    placements: dict[str, list[Placement]] = {}
    for entry_id, chain in invoiced.placements.items():
        kept = [p for p in chain if p.key != invoice.key]
        replaced = [fresh.pop(entry_id)] if entry_id in fresh else []
        # Replace in place when the entry was already on this invoice, keeping the order.
        if replaced and any(p.key == invoice.key for p in chain):
            index = next(i for i, p in enumerate(chain) if p.key == invoice.key)
            kept.insert(index, replaced[0])
        else:
            kept.extend(replaced)
        if kept:
            placements[entry_id] = kept
    for entry_id, placement in fresh.items():
        placements[entry_id] = [placement]
    return Invoiced(invoices=invoices, placements=placements, reinvoiced=invoiced.reinvoiced)


def with_status(invoiced: Invoiced, key: InvoiceKey, status: InvoiceStatus) -> Invoiced:
    """The same state with one known invoice's status changed (booked, cancelled, locked)."""
    known = invoiced.invoices[key]
    invoices = dict(invoiced.invoices)
    invoices[key] = replace(known, status=status)
    return Invoiced(
        invoices=invoices, placements=invoiced.placements, reinvoiced=invoiced.reinvoiced
    )


# --- rows of one entry -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Excluded:
    reason: str


@dataclass(frozen=True)
class _Attention:
    reason: str


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def swedish_number(value: Decimal) -> str:
    """1.50 -> '1,5': hours as a Swedish reader writes them."""
    text = format(value.normalize(), "f")
    return text.replace(".", ",")


def _clean(text: str) -> str:
    """Text fit for an invoice and a terminal: Unicode NFC (so "å" is one character before any
    cut), every control or format character (NUL, escape, bidi overrides) made a space, runs
    of whitespace folded to one space."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(text.split())


def clean(text: str) -> str:
    return _clean(text)


def cut(text: str, limit: int) -> str:
    # ASCII on purpose: Fortnox refuses some characters (code 2000359) and "..." is safe.
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def describe(entry: Entry, limit: int) -> str:
    """Row text: date, what was done, and the reference; the description is cut to fit."""
    head = f"{entry.performed_on.isoformat()}: "
    tail = (
        f" (ref. {_clean(entry.reference)})" if entry.reference and entry.reference.strip() else ""
    )
    room = limit - len(head) - len(tail)
    if room < 10:  # a huge reference: keep date and text, cut the whole line
        return cut(head + _clean(entry.description) + tail, limit)
    return head + cut(_clean(entry.description), room) + tail


Register = Mapping[str, Decimal | None]
"""The target's active articles: article number -> sales price (None when it has none)."""


def _price(
    entry: Entry,
    category: Category,
    article: str,
    profile: TargetProfile,
    register: Register | None,
) -> Decimal | _Attention | None:
    """The row's unit price: the entry's, else the mapping's, else the article register's.

    Every row goes out with an explicit price, because a row sent without one is priced by the
    target, and an article without a sales price is invoiced at 0. None is returned only when
    no register was given (a plan made without asking the target).
    """
    where = profile.display_name
    if register is not None and article not in register:
        return _Attention(
            f"article {article} (category '{category.slug}') does not exist or is inactive in "
            f"{where}: create or activate it there, or change the mapping"
        )
    mapped = category.price_on(entry.performed_on)
    if entry.unit_price is not None:
        price: Decimal | None = entry.unit_price
    elif mapped is not None:
        price = mapped
    elif register is not None:
        price = register[article]
        if price is not None and _places(price) <= profile.price_places:
            # The register's own notation ("1150", "1150.0") must not change the row: a fixed
            # number of decimals keeps the plan, and so the decision to write, stable.
            price = price.quantize(Decimal(1).scaleb(-profile.price_places))
    else:
        return None
    if price is None and category.free:
        price = Decimal(0)  # given away on purpose: no price anywhere is 0
    if price is None or (price == 0 and not category.free):
        origin = (
            "the ledger entry's unit_price is 0"
            if entry.unit_price is not None
            else f"the mapping's price is 0 for '{category.slug}'"
            if mapped is not None
            else f"article {article} has no sales price in {where} and neither the ledger "
            f"entry nor the mapping gives a price (set price for '{category.slug}' in the "
            f"mappings, or a sales price in {where})"
        )
        return _Attention(
            f"would be invoiced at price 0: {origin}; set free = true on the category if "
            "its hours are given away on purpose"
        )
    if _places(price) > profile.price_places:
        return _Attention(
            f"unit price {price} has more than {profile.price_places} decimals; "
            f"{where} would round it"
        )
    return price


@dataclass(frozen=True)
class Limits:
    """Sanity limits per ledger entry: an entry beyond one needs attention and is not invoiced
    until confirmed. The defaults are far beyond what a service company bills for one piece
    of work, so only a mistake meets them (docs/planning.md)."""

    max_hours: Decimal = Decimal(200)
    max_unit_price: Decimal = Decimal(5000)
    max_amount: Decimal = Decimal(250000)
    # Entries a person confirmed: "E123@2" confirms that revision, "E123" every revision.
    confirmed: frozenset[str] = frozenset()

    def confirms(self, entry: Entry) -> bool:
        return entry.id in self.confirmed or f"{entry.id}@{entry.revision}" in self.confirmed

    def problem(self, entry: Entry, rows: Sequence[Row]) -> str | None:
        """Why the entry's rows are beyond the limits, or None."""
        if self.confirms(entry):
            return None
        charged = [r for r in rows if r.article is not None and r.quantity is not None]
        amount = sum((a for r in charged if (a := r.amount) is not None), Decimal(0))
        prices = [r.price for r in charged if r.price is not None]
        found = None
        if entry.hours > self.max_hours:
            found = f"{entry.hours} hours exceed CONNECTOR_LIMITS__MAX_HOURS ({self.max_hours})"
        elif prices and max(prices) > self.max_unit_price:
            found = (
                f"unit price {max(prices)} exceeds CONNECTOR_LIMITS__MAX_UNIT_PRICE "
                f"({self.max_unit_price})"
            )
        elif amount > self.max_amount:
            found = (
                f"amount {amount} {entry.currency} exceeds CONNECTOR_LIMITS__MAX_AMOUNT "
                f"({self.max_amount})"
            )
        if found is None:
            return None
        return (
            f"{found}: not invoiced until checked. Correct the ledger entry, or if it is "
            f"right, confirm it with CONNECTOR_LIMITS__CONFIRMED={entry.id}@{entry.revision}"
        )


def entry_rows(
    entry: Entry,
    mappings: Mappings,
    profile: TargetProfile,
    register: Register | None = None,
    limits: Limits | None = None,
    overdraw: Decimal = Decimal(0),
) -> tuple[Row, ...] | _Excluded | _Attention:
    """The rows an active entry should have on an invoice, or why it has none. `overdraw`:
    prepaid hours it draws beyond the balance, to charge as ordinary hours (overdraw =
    invoice)."""
    rows = _rows_of(entry, mappings, profile, register, overdraw)
    if isinstance(rows, tuple):
        problem = (limits or Limits()).problem(entry, rows)
        if problem is not None:
            return _Attention(problem)
    return rows


def _rows_of(
    entry: Entry,
    mappings: Mappings,
    profile: TargetProfile,
    register: Register | None,
    overdraw: Decimal = Decimal(0),
) -> tuple[Row, ...] | _Excluded | _Attention:
    if entry.status is Status.VOID:
        return _Excluded("void in the ledger")
    category = mappings.categories.get(entry.category)
    if category is None:
        return _Attention(
            f"unknown category '{_clean(entry.category)}': add it to the mapping files"
        )
    if entry.kind is Kind.TOPUP:
        return _topup_rows(entry, category, profile, register)
    if entry.category == PREPAID_CATEGORY:
        return _Attention(f"a debit cannot use category '{PREPAID_CATEGORY}' (top-ups only)")
    if not category.billable:
        return _Excluded(f"included in the monthly fee ({category.slug})")
    quantity = category.rounding.apply(entry.hours - entry.prepaid_hours)
    extra = category.rounding.apply(overdraw) if overdraw > 0 else Decimal(0)
    article = category.article_for(profile.name)
    assert article is not None, "validated: billable categories have an article"
    price = (
        _price(entry, category, article, profile, register) if quantity > 0 or extra > 0 else None
    )
    if isinstance(price, _Attention):
        return price
    rows: list[Row] = []
    if quantity > 0:
        rows.append(
            Row(
                entry_id=entry.id,
                role=RowRole.CHARGE,
                description=describe(entry, profile.row_text_max),
                article=article,
                quantity=quantity,
                unit=category.unit if profile.row_units else None,
                price=price,
            )
        )
    if entry.prepaid_hours > 0 and mappings.defaults.show_prepaid_rows:
        note = (
            f"{entry.performed_on.isoformat()}: {swedish_number(entry.prepaid_hours)} tim "
            f"avräknade mot förbetalda timmar ({_clean(category.name)})"
        )
        rows.append(Row(entry.id, RowRole.PREPAID_NOTE, cut(note, profile.row_text_max)))
    if extra > 0:
        # Drawn from a prepaid balance that was not there: charged like the entry's other
        # hours, at the same price, with a text that says why.
        text = (
            f"{entry.performed_on.isoformat()}: {swedish_number(overdraw)} tim saknades i "
            f"timbanken och debiteras som vanliga timmar ({_clean(category.name)})"
        )
        rows.append(
            Row(
                entry_id=entry.id,
                role=RowRole.OVERDRAW,
                description=cut(text, profile.row_text_max),
                article=article,
                quantity=extra,
                unit=category.unit if profile.row_units else None,
                price=price,
            )
        )
    if not rows:
        if entry.prepaid_hours > 0:
            return _Excluded("fully covered by prepaid hours")
        return _Excluded(
            f"rounds to 0 hours ({category.rounding.increment} {category.rounding.mode})"
        )
    return tuple(rows)


def _topup_rows(
    entry: Entry, category: Category, profile: TargetProfile, register: Register | None
) -> tuple[Row, ...] | _Excluded | _Attention:
    if entry.category != PREPAID_CATEGORY:
        return _Attention(
            f"a top-up must use category '{PREPAID_CATEGORY}', not '{entry.category}'"
        )
    if not category.billable:
        return _Excluded(f"category '{PREPAID_CATEGORY}' is not billable in the mappings")
    if entry.unit_price is None and category.price_on(entry.performed_on) is None:
        # The price of a package is agreed: never taken from the article register.
        return _Attention(
            "top-up without price: set unit_price on the ledger entry "
            f"or price for '{PREPAID_CATEGORY}' in the mappings"
        )
    if _places(entry.hours) > profile.quantity_places:
        return _Attention(
            f"top-up of {entry.hours} hours has more than {profile.quantity_places} decimals; "
            f"{profile.display_name} would round it"
        )
    article = category.article_for(profile.name)
    assert article is not None
    price = _price(entry, category, article, profile, register)
    if isinstance(price, _Attention):
        return price
    return (
        Row(
            entry_id=entry.id,
            role=RowRole.CHARGE,
            description=describe(entry, profile.row_text_max),
            article=article,
            quantity=entry.hours,
            unit=category.unit if profile.row_units else None,
            price=price,
        ),
    )


_Group = tuple[str, str, str, str, Decimal | None, str | None]  # customer, period, currency,
# article, price, unit


@dataclass
class _Net:
    """What one entry has billed on closed invoices for one group, and where it was billed."""

    quantity: Decimal = Decimal(0)
    key: InvoiceKey | None = None
    description: str = ""


def _closed_net(
    placements: Sequence[Placement], invoiced: Invoiced, default_currency: str
) -> dict[_Group, _Net]:
    """Sum of an entry's rows on billed (booked or locked) invoices, per customer, period,
    currency, article, price and unit. Open drafts are not billed: they are rewritten."""
    net: dict[_Group, _Net] = {}
    for placement in placements:
        if not invoiced.status(placement.key).billed:
            continue
        known = invoiced.invoices.get(placement.key)
        currency = (known.currency if known else None) or default_currency
        for row in placement.rows:
            if row.article is None or row.quantity is None:
                continue
            group = (
                placement.key.customer_number,
                placement.key.period,
                currency,
                row.article,
                row.price,
                row.unit,
            )
            item = net.setdefault(group, _Net())
            item.quantity += row.quantity
            if row.role is RowRole.CHARGE or not item.description:
                item.key, item.description = placement.key, row.description
    return {g: n for g, n in net.items() if n.quantity != 0}


def _same_billing(net: dict[_Group, _Net], rows: Iterable[Row], entry: Entry) -> bool:
    """Whether what is billed equals what the entry now bills, ignoring the period: a new
    date on the same customer's bill is not worth a credit and a re-charge."""
    billed: Counter[tuple[str, str, str, Decimal | None, str | None]] = Counter()
    for (customer, _period, currency, article, price, unit), item in net.items():
        billed[(customer, currency, article, price, unit)] += item.quantity  # type: ignore[assignment]
    wanted: Counter[tuple[str, str, str, Decimal | None, str | None]] = Counter()
    for row in rows:
        if row.article is not None and row.quantity is not None:
            group = (entry.customer_number, entry.currency, row.article, row.price, row.unit)
            wanted[group] += row.quantity  # type: ignore[assignment]
    return {k: v for k, v in billed.items() if v} == {k: v for k, v in wanted.items() if v}


# --- the plan --------------------------------------------------------------------------------


@dataclass
class _Contribution:
    key: InvoiceKey
    entry: Entry
    rows: list[Row]
    currency: str


def plan(
    entries: Iterable[Entry],
    mappings: Mappings,
    profile: TargetProfile,
    invoiced: Invoiced | None = None,
    rejected: Iterable[tuple[str, str]] = (),
    register: Register | None = None,
    limits: Limits | None = None,
    prepaid: Prepaid | None = None,
) -> Plan:
    """Compute the desired invoices.

    `entries` is the current revision of every valid entry; `rejected` lists (ref, reason) for
    entries that failed validation. Every entry of both ends in exactly one result.
    `register` is the target's article register (article -> sales price): with it, every article
    row carries an explicit price; without it (a plan made offline) rows the ledger and the
    mappings leave unpriced show no price.
    `prepaid` says what an overdraw of the prepaid balance does and whether invoices show the
    balance (docs/planning.md, Prepaid hours); by default an overdraw needs attention.
    """
    invoiced = invoiced or Invoiced()
    prepaid = prepaid or Prepaid()
    entries = list(entries)
    found = accounts(entries)
    drawn_over = {m.entry_id: (a.customer_number, m) for a in found.values() for m in a.overdraws}
    charge_over = prepaid.overdraw == "invoice"
    results: dict[str, EntryResult] = {}
    contributions: list[_Contribution] = []

    for ref, reason in rejected:
        results[ref] = EntryResult(ref, Outcome.ATTENTION, f"malformed entry: {reason}")

    for entry in entries:
        over = drawn_over.get(entry.id)
        overdraw = over[1].overdraw if over and charge_over else Decimal(0)
        result, parts = _plan_entry(
            entry, mappings, profile, invoiced, register, limits, overdraw, charge_over
        )
        results[entry.id] = result
        contributions.extend(parts)

    contributions, currencies = _enforce_currency(contributions, invoiced, results)
    contributions = _drop_text_only(contributions, results)
    for entry in entries:
        over = drawn_over.get(entry.id)
        if over is None:
            continue
        customer, movement = over
        if charge_over and _charges_overdraw(entry, movement, mappings, profile, register, limits):
            continue
        _flag_overdraw(results, entry.id, customer, movement, charge_over)

    by_key: dict[InvoiceKey, list[_Contribution]] = defaultdict(list)
    for part in contributions:
        by_key[part.key].append(part)
    # Open invoices written before that may now have no rows at all.
    for key, known in invoiced.invoices.items():
        if known.status is InvoiceStatus.OPEN and known.digest is not None:
            by_key.setdefault(key, [])

    invoices = []
    for key, parts in sorted(by_key.items()):
        previous = invoiced.invoices.get(key)
        # A draft left without rows keeps the currency it was written in.
        currency = currencies.get(key) or (previous.currency if previous else None) or "SEK"
        balance = _balance_row(found.get(key.customer_number), key) if prepaid.balance_row else None
        invoices.append(_invoice(key, parts, previous, currency, invoiced, profile, balance))
    return Plan(
        target=profile.name,
        invoices=tuple(invoices),
        results=tuple(results[ref] for ref in sorted(results)),
    )


def _charges_overdraw(
    entry: Entry,
    movement: Movement,
    mappings: Mappings,
    profile: TargetProfile,
    register: Register | None,
    limits: Limits | None,
) -> bool:
    """Whether the entry's rows charge its overdraw (overdraw = invoice): not when its category
    has no article (not billable, unknown) or the hours round to 0."""
    rows = entry_rows(entry, mappings, profile, register, limits, movement.overdraw)
    return isinstance(rows, tuple) and any(r.role is RowRole.OVERDRAW for r in rows)


def _flag_overdraw(
    results: dict[str, EntryResult],
    entry_id: str,
    customer: str,
    movement: Movement,
    charge_over: bool,
) -> None:
    """An overdraw needs attention: its hours would otherwise never be paid for. The entry's
    other rows go out as planned (its result keeps the invoices they are on)."""
    reason = overdraw_reason(customer, movement)
    if charge_over:
        reason += (
            " and its category cannot invoice them (no article, or they round to 0): "
            "correct prepaid_hours of the entry or add the top-up in the ledger"
        )
    else:
        reason += (
            ": those hours are not invoiced. Add the top-up in the ledger (dated on or "
            "before that day), correct prepaid_hours of the entry, or set "
            "CONNECTOR_PREPAID__OVERDRAW=invoice to invoice them as ordinary hours"
        )
    known = results[entry_id]
    if known.outcome is Outcome.ATTENTION:
        reason = f"{known.reason}; also: {reason}"
    results[entry_id] = replace(known, outcome=Outcome.ATTENTION, reason=reason)


def _balance_row(account: Account | None, key: InvoiceKey) -> str | None:
    """The balance row's text for a customer with a prepaid account by the end of the month
    (the same on every invoice of that month, so a quiet re-run writes nothing)."""
    if account is None or not account.movements:
        return None
    year, month = (int(part) for part in key.period.split("-"))
    end = date(year, month, calendar.monthrange(year, month)[1])
    if account.movements[0].performed_on > end:
        return None  # no account yet that month
    return f"{BALANCE_PREFIX} {swedish_number(account.balance_on(end))} tim"


def _plan_entry(
    entry: Entry,
    mappings: Mappings,
    profile: TargetProfile,
    invoiced: Invoiced,
    register: Register | None,
    limits: Limits | None,
    overdraw: Decimal = Decimal(0),
    charge_over: bool = False,
) -> tuple[EntryResult, list[_Contribution]]:
    desired = entry_rows(entry, mappings, profile, register, limits, overdraw)
    placements = invoiced.placements.get(entry.id, ())

    def result(outcome: Outcome, reason: str, keys: tuple[InvoiceKey, ...] = ()) -> EntryResult:
        return EntryResult(
            entry.id, outcome, reason, keys, entry.customer_number, entry.period, entry.revision
        )

    def kept(reason: str) -> tuple[EntryResult, list[_Contribution]]:
        """Everything the entry has on invoices stays exactly where it is (no credit, no
        move): its open drafts keep its rows; closed invoices stay billed."""
        open_parts = [
            _Contribution(p.key, entry, list(p.rows), _currency(invoiced, p.key, entry))
            for p in placements
            if invoiced.status(p.key) is InvoiceStatus.OPEN
        ]
        return result(Outcome.ATTENTION, reason, tuple(dict.fromkeys(p.key for p in placements))), (
            open_parts
        )

    hold = invoiced.holds.get((entry.customer_number, entry.period))
    if hold is not None:
        return kept(
            f"held: {hold}. Check that month in {profile.display_name}, then: connector state "
            f"release --customer {entry.customer_number} --period {entry.period}"
        )
    if isinstance(desired, _Attention) and placements:
        # A revision that cannot be invoiced (an absurd value, a category without a price, a
        # mapping typo) neither withdraws, moves nor corrects what the entry has on invoices:
        # it all stays until the entry (or the mappings) is fixed.
        where = ", ".join(str(k) for k in dict.fromkeys(p.key for p in placements))
        latest = max(p.revision for p in placements)
        tail = (
            f"it stays on invoice {where} as written, because the ledger entry has not "
            "changed: correct the mappings, or re-invoice it on purpose"
            if latest == entry.revision
            else f"its rows of an earlier revision stay on invoice {where} until it is fixed"
        )
        return kept(f"{desired.reason}; {tail}")
    current = [p for p in placements if p.revision == entry.revision]
    # The entry's own rows live on one invoice at a time: the latest written (a text row may
    # also be left on a closed invoice, and must not be carried over twice).
    own: tuple[Row, ...] = ()
    for placement in current:
        mine = tuple(r for r in placement.rows if r.role in _OWN_ROLES)
        if mine:
            own = mine
    followed: tuple[Row, ...] | None = None
    if own and charge_over and isinstance(desired, tuple):
        own = _follow_overdraw(own, desired)
        followed = tuple(r for r in own if r.role is RowRole.OVERDRAW)
    if not own:
        # Not written for this revision (or only its credit was: a move left half done):
        # planned from the ledger and the mappings.
        return _plan_rows(entry, desired, placements, invoiced, profile, result)
    # The ledger has not changed this entry since its rows were written: those rows are what
    # it bills, whatever the mappings say now. Only a ledger change (or an explicit re-sync)
    # changes invoiced rows; a mapping or price change never withdraws or re-prices them. The
    # net position is still computed, so an older row left on a closed invoice is corrected.
    # Rows on an invoice cancelled and then invoiced again on purpose charge nothing.
    drift = _mapping_drift(
        desired,
        [p for p in current if (entry.id, p.key) not in invoiced.reinvoiced] or current,
        followed,
    )
    found, parts = _plan_rows(entry, own, placements, invoiced, profile, result)
    if drift is None or found.outcome is Outcome.ATTENTION:
        return found, parts
    where = ", ".join(str(k) for k in dict.fromkeys(p.key for p in current))
    return replace(
        found,
        outcome=Outcome.ATTENTION,
        reason=f"{drift}; it stays on invoice {where} as written, because the ledger entry has "
        "not changed: correct the mappings, or re-invoice it on purpose",
    ), parts


def _follow_overdraw(own: tuple[Row, ...], desired: tuple[Row, ...]) -> tuple[Row, ...]:
    """The written rows of an unchanged entry, with its overdraw row following the balance.

    The overdraw depends on other entries (a back-dated top-up, a voided one): a change there
    is a ledger change, so the overdraw row is added, changed or withdrawn (credited once
    billed) while the entry's own rows stay as written. An unchanged overdraw keeps its row,
    price included."""
    written = [r for r in own if r.role is RowRole.OVERDRAW]
    wanted = [r for r in desired if r.role is RowRole.OVERDRAW]
    if [(r.article, r.quantity) for r in written] == [(r.article, r.quantity) for r in wanted]:
        return own
    return tuple(r for r in own if r.role is not RowRole.OVERDRAW) + tuple(wanted)


def _currency(invoiced: Invoiced, key: InvoiceKey, entry: Entry) -> str:
    known = invoiced.invoices.get(key)
    return (known.currency if known else None) or entry.currency


def _plan_rows(
    entry: Entry,
    desired: tuple[Row, ...] | _Excluded | _Attention,
    placements: Sequence[Placement],
    invoiced: Invoiced,
    profile: TargetProfile,
    result: Callable[..., EntryResult],
) -> tuple[EntryResult, list[_Contribution]]:
    """The entry's net position: what it bills on closed invoices against `desired`."""
    base = InvoiceKey(entry.customer_number, entry.period)
    closed = [p for p in placements if invoiced.status(p.key).closed]
    if isinstance(desired, _Attention):
        return result(Outcome.ATTENTION, desired.reason), []
    again = "on invoice"
    # Where the entry was last charged decides, not where it was last corrected: a credit
    # written (and sent) after a charge a person withdrew must not make the entry billable
    # again (found by the soak: the outcome depended on the order of the writes).
    charged = [p for p in closed if any(r.role in _OWN_ROLES for r in p.rows)]
    last = (charged or closed)[-1] if closed else None
    cancelled = last is not None and invoiced.status(last.key) is InvoiceStatus.CANCELLED
    if cancelled and last is not None and (entry.id, last.key) in invoiced.reinvoiced:
        # Invoiced again on purpose: that invoice bills nothing, so the net position below
        # (what billed invoices hold) puts the entry on the month's open invoice.
        cancelled = False
        again = f"invoiced again on purpose after its invoice {last.key} was {profile.withdrawn}"
    if cancelled and last is not None:
        return result(
            Outcome.EXCLUDED,
            f"its invoice {last.key} was {profile.withdrawn} in {profile.display_name}; "
            "not invoiced again",
            (last.key,),
        ), []

    new_rows = list(desired) if isinstance(desired, tuple) else []
    net = _closed_net(placements, invoiced, entry.currency)
    unknown_price = sorted({str(n.key) for (*_, price, _unit), n in net.items() if price is None})
    if unknown_price:
        # Written by an earlier version that left prices to the target: what was billed is
        # unknown, so no correction can be computed without guessing.
        return result(
            Outcome.ATTENTION,
            f"its row on invoice {', '.join(unknown_price)} was priced by "
            f"{profile.display_name} (an earlier version of the connector), so a correction "
            "cannot be computed: correct that invoice by hand",
            tuple(dict.fromkeys(p.key for p in closed)),
        ), []
    if net and _same_billing(net, new_rows, entry):
        # With an overdraw row on either side, the billed rows may split the hours otherwise
        # than the entry does now (a charge of 2 h for 1 h charged and 1 h overdrawn): then
        # the rows must not stand for this revision (the sync advances only "already
        # invoiced"), or a later balance change could not tell which part to follow.
        overdrawn = any(
            r.role is RowRole.OVERDRAW
            for rows in (new_rows, *(p.rows for p in placements))
            for r in rows
        )
        reason = "already invoiced" + (" (with prepaid hours overdrawn)" if overdrawn else "")
        return result(Outcome.INVOICED, reason, tuple(dict.fromkeys(p.key for p in closed))), []
    if not net and new_rows and all(r.is_text for r in new_rows):
        # Fully prepaid hours bill nothing, so the net cannot tell that their text row is
        # already on an invoice the customer holds: without this, every supplementary invoice
        # of the month would repeat it (found by the mapping-change property).
        noted = [
            p.key
            for p in closed
            if invoiced.status(p.key).billed and tuple(p.rows) == tuple(new_rows)
        ]
        if noted:
            return result(Outcome.INVOICED, "already invoiced", tuple(dict.fromkeys(noted))), []

    # Credit everything billed (each on its own customer's and month's open invoice), then
    # charge the current revision.
    parts: dict[InvoiceKey, _Contribution] = {}
    for (customer, period, currency, article, price, unit), item in sorted(
        net.items(), key=lambda g: (g[0][0], g[0][1], g[0][3], str(g[0][4]))
    ):
        key = invoiced.open_key(InvoiceKey(customer, period))
        part = parts.setdefault(key, _Contribution(key, entry, [], currency))
        part.rows.append(
            Row(
                entry_id=entry.id,
                role=RowRole.CORRECTION,
                description=cut(
                    f"Korrigering av faktura {item.key}: {item.description}", profile.row_text_max
                ),
                article=article,
                quantity=-item.quantity,
                unit=unit,
                price=price,
            )
        )
    if new_rows:
        key = invoiced.open_key(base)
        part = parts.setdefault(key, _Contribution(key, entry, [], entry.currency))
        if part.currency != entry.currency:
            return result(
                Outcome.ATTENTION,
                f"currency changed from {part.currency} to {entry.currency} after invoicing",
            ), []
        part.rows.extend(new_rows)
    if not parts:
        assert isinstance(desired, _Excluded)
        return result(Outcome.EXCLUDED, desired.reason, tuple(p.key for p in closed)), []
    reason = (
        f"correction of {', '.join(sorted({str(n.key) for n in net.values()}))}" if net else again
    )
    return result(Outcome.INVOICED, reason, tuple(parts)), list(parts.values())


def _billing_shape(rows: Iterable[Row]) -> Counter[tuple[str, Decimal, str | None]]:
    """What rows bill, price aside: article, quantity and unit."""
    shape: Counter[tuple[str, Decimal, str | None]] = Counter()
    for row in rows:
        if row.article is not None and row.quantity is not None:
            shape[(row.article, row.quantity, row.unit)] += 1
    return shape


def _mapping_drift(
    desired: tuple[Row, ...] | _Excluded | _Attention,
    placements: Sequence[Placement],
    overdraw: tuple[Row, ...] | None = None,
) -> str | None:
    """Why the mappings would now plan an unchanged entry differently, or None. `overdraw`:
    the entry's overdraw rows as they follow the balance (overdraw = invoice), in place of
    the ones written: a balance change is a ledger change, not drift."""
    if isinstance(desired, _Attention):
        return desired.reason
    # What the entry charges now: the charge rows written for its current revision (a booked
    # invoice's older charge is netted by correction rows beside them).
    latest = max(p.revision for p in placements)
    roles = (RowRole.CHARGE,) if overdraw is not None else (RowRole.CHARGE, RowRole.OVERDRAW)
    written = [r for p in placements if p.revision == latest for r in p.rows if r.role in roles]
    written.extend(overdraw or ())
    if isinstance(desired, _Excluded):
        return f"the mappings now leave it out ({desired.reason})" if written else None
    if _billing_shape(desired) != _billing_shape(written):
        articles = ", ".join(sorted({r.article for r in desired if r.article}))
        return f"the mappings now give it other rows ({articles or 'no article'})"
    return None


def _enforce_currency(
    parts: list[_Contribution], invoiced: Invoiced, results: dict[str, EntryResult]
) -> tuple[list[_Contribution], dict[InvoiceKey, str]]:
    """One currency per invoice: the one it was written in, else the most common one.
    Returns the contributions that fit, and each invoice's currency."""
    by_key: dict[InvoiceKey, list[_Contribution]] = defaultdict(list)
    for part in parts:
        by_key[part.key].append(part)
    rejected: dict[str, str] = {}
    currencies: dict[InvoiceKey, str] = {}
    for key, group in by_key.items():
        known = invoiced.invoices.get(key)
        currency = known.currency if known and known.currency else _majority(group)
        currencies[key] = currency
        for part in group:
            if part.entry.currency != currency:
                rejected[part.entry.id] = (
                    f"currency {part.entry.currency} differs from {currency} of invoice {key}"
                )
    for entry_id, reason in rejected.items():
        results[entry_id] = replace(
            results[entry_id], outcome=Outcome.ATTENTION, reason=reason, keys=()
        )
    return [p for p in parts if p.entry.id not in rejected], currencies


def _drop_text_only(
    parts: list[_Contribution], results: dict[str, EntryResult]
) -> list[_Contribution]:
    """An invoice without a single article row would bill nothing: send no zero invoice.
    Its entries (fully prepaid hours) are excluded; their text rows return as soon as the
    month has something to charge."""
    charged = {p.key for p in parts if any(not r.is_text for r in p.rows)}
    kept = [p for p in parts if p.key in charged]
    still_on = {p.entry.id for p in kept}
    for part in parts:
        if part.key not in charged and part.entry.id not in still_on:
            results[part.entry.id] = replace(
                results[part.entry.id],
                outcome=Outcome.EXCLUDED,
                reason="fully covered by prepaid hours",
                keys=(),
            )
    return kept


def _majority(group: list[_Contribution]) -> str:
    counts = Counter(p.currency for p in group)
    earliest = min(group, key=lambda p: (p.entry.performed_on, p.entry.id)).currency
    best = max(counts.values())
    tied = {c for c, n in counts.items() if n == best}
    return earliest if earliest in tied else min(tied)


def invoice_date(
    period: str, policy: str, locked_through: date | None = None, today: date | None = None
) -> tuple[date, bool]:
    """The date a new invoice of `period` gets, and whether it was moved out of a locked period.

    Never the day the draft happens to be created: a draft made on the 3rd would otherwise be
    dated, and fall due, before the month's work is done. `month_end` is the last day of the
    service month, `next_month_start` the day after it. An invoice first created after the end
    of the month following its service month (a late entry, a correction months later) is
    dated `today`, or it would fall due before the customer receives it. A date on or before the
    last locked day becomes the first open day, because the target refuses invoices in a
    locked period.
    """
    year, month = (int(part) for part in period.split("-"))
    last = date(year, month, calendar.monthrange(year, month)[1])
    chosen = last if policy == "month_end" else last + timedelta(days=1)
    following = last + timedelta(days=1)
    grace = date(
        following.year, following.month, calendar.monthrange(following.year, following.month)[1]
    )
    if today is not None and today > grace:
        chosen = today
    if locked_through is not None and chosen <= locked_through:
        return locked_through + timedelta(days=1), True
    return chosen, False


def header_text(key: InvoiceKey, invoiced: Invoiced) -> str:
    """The invoice's first row, in Swedish: what the invoice is for, and for a supplementary
    invoice the invoice it adds to (the latest one of the month the customer holds)."""
    year, month = key.period.split("-")
    when = f"{SWEDISH_MONTHS[int(month) - 1]} {year}"
    text = f"Servicekonto: arbete utanför månadsavgiften, {when}"
    for sequence in range(key.sequence - 1, 0, -1):
        known = invoiced.invoices.get(InvoiceKey(key.customer_number, key.period, sequence))
        if known is not None and known.status.billed and known.display_number:
            return f"Tilläggsfaktura till faktura {known.display_number}. {text}"
    return text


def _invoice(
    key: InvoiceKey,
    parts: list[_Contribution],
    known: KnownInvoice | None,
    currency: str,
    invoiced: Invoiced,
    profile: TargetProfile,
    balance: str | None = None,
) -> PlannedInvoice:
    parts = sorted(parts, key=lambda p: (p.entry.performed_on, p.entry.id))
    rows: list[Row] = []
    if parts:
        # A fixed first row: it tells the customer what the invoice is for, and it gives every
        # update a text row to pair with, so no row ever lands on a row of another kind.
        rows.append(Row("", RowRole.HEADER, cut(header_text(key, invoiced), profile.row_text_max)))
    for part in parts:
        rows.extend(sorted(part.rows, key=lambda r: _ROLE_ORDER[r.role]))
    if parts and balance is not None:
        rows.append(Row("", RowRole.BALANCE, cut(balance, profile.row_text_max)))
    digest = rows_digest(rows, currency)
    if known is None or (known.digest is None and known.remote_id is None):
        action = Action.CREATE
    elif known.digest == digest:
        action = Action.UNCHANGED
    else:
        action = Action.UPDATE
    return PlannedInvoice(
        key=key,
        currency=currency,
        rows=tuple(rows),
        action=action,
        revisions={p.entry.id: p.entry.revision for p in parts},
        remote_id=known.remote_id if known else None,
        display_number=known.display_number if known else None,
    )
