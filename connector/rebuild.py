"""Rebuilding a lost state directory from the accounting system and the ledger.

The state store is the connector's memory of which ledger entry sits on which invoice. When it
is lost, the invoices the connector made are still in the accounting system, and the ledger
still holds every entry. Rows carry no entry id, but the connector writes every row text
deterministically (`planning.describe`: date, description, reference; corrections prefix it
with the invoice they correct; prepaid notes name date, hours and category), so each row is tied
back to the entry whose text it carries. What cannot be tied back is never guessed: that
customer's month is held (nothing is sent for it) until a person has looked.

After a rebuild the state knows every invoice of the connector's form, live or not, so a sync
sends only what is really missing.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connector.errors import ConfigError
from connector.ledger import Entry, LedgerClient
from connector.logs import get_logger
from connector.mappings import Mappings, load_mappings
from connector.planning import (
    BALANCE_PREFIX,
    INVOICE_ROLES,
    Action,
    InvoiceKey,
    InvoiceStatus,
    Limits,
    Placement,
    PlannedInvoice,
    Row,
    RowRole,
    describe,
    entry_rows,
    rows_digest,
)
from connector.settings import Settings
from connector.state import DB_NAME, StateStore, Written
from connector.targets.base import RemoteInvoice, RemoteRow, RemoteState, Target

log = get_logger(__name__)

CORRECTION_PREFIX = "Korrigering av faktura "
NOTE_MARK = "avräknade mot förbetalda timmar"
HEADER_PREFIXES = ("Servicekonto:", "Tilläggsfaktura till faktura ")
# Limits are checked when invoicing, not when recognising what was invoiced.
_NO_LIMITS = Limits(
    max_hours=Decimal("1e9"), max_unit_price=Decimal("1e9"), max_amount=Decimal("1e12")
)


@dataclass
class RebuiltInvoice:
    key: InvoiceKey
    remote: RemoteInvoice
    status: InvoiceStatus
    rows: list[Row] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=dict)
    unknown_rows: list[str] = field(default_factory=list)  # texts of rows tied to no entry


@dataclass
class RebuildReport:
    invoices: dict[str, int] = field(default_factory=dict)  # status -> count
    entries_placed: int = 0
    held: list[tuple[str, str, str]] = field(default_factory=list)  # customer, period, reason
    locked: list[str] = field(default_factory=list)  # drafts with rows of unknown origin
    backup: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "invoices": self.invoices,
            "entries_placed": self.entries_placed,
            "held": [{"customer": c, "period": p, "reason": r} for c, p, r in self.held],
            "locked": self.locked,
            "backup": self.backup,
        }


class _Index:
    """Every text the connector would write for an entry, to tie a remote row back to it."""

    def __init__(self, entries: Iterable[Entry], mappings: Mappings, target: Target) -> None:
        self.by_text: dict[str, list[Entry]] = defaultdict(list)
        self.notes: dict[str, list[Entry]] = defaultdict(list)
        self.rows: dict[str, tuple[Row, ...]] = {}
        self.charged: set[str] = set()  # entries a charge row was tied to, on any invoice
        self.by_day: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        register = target.article_prices()
        limit = target.profile.row_text_max
        for entry in entries:
            self.by_text[describe(entry, limit)].append(entry)
            if entry.prepaid_hours > 0:
                self.by_day[(entry.customer_number, entry.performed_on.isoformat())].append(entry)
            planned = entry_rows(entry, mappings, target.profile, register, _NO_LIMITS)
            if isinstance(planned, tuple):
                self.rows[entry.id] = planned
                for row in planned:
                    if row.role is RowRole.PREPAID_NOTE:
                        self.notes[row.description].append(entry)

    def text_matches(self, text: str) -> list[Entry]:
        found = self.by_text.get(text)
        if found:
            return found
        if text.endswith("..."):  # cut to the target's limit: match on what is left
            stem = text[:-3].rstrip()
            return [e for t, es in self.by_text.items() if t.startswith(stem) for e in es]
        return []


def _pick(
    candidates: Sequence[Entry], remote: RemoteRow, customer: str, used: set[str], index: _Index
) -> Entry | None:
    """The entry a row belongs to, among those whose text it carries: one of the invoice's
    customer first (an entry may have moved customer since), one with exactly this row planned
    first (entries with identical rows are interchangeable), one not tied to a charge anywhere
    yet first. Ambiguity is never guessed."""
    free = [e for e in candidates if e.id not in used]
    free.sort(key=lambda e: e.id in index.charged)  # untied ones first (a stable sort)
    for group in ([e for e in free if e.customer_number == customer], free):
        if not group:
            continue
        exact = [e for e in group if any(_same(r, remote) for r in index.rows.get(e.id, ()))]
        if exact:
            return exact[0]
        return group[0] if len(group) == 1 else None
    return None


def _same(planned: Row, remote: RemoteRow) -> bool:
    return (
        planned.description == remote.description
        and (planned.article or None) == (remote.article or None)
        and (planned.is_text or planned.quantity == remote.quantity)
        and (planned.is_text or planned.price == remote.price)
        and (planned.is_text or (planned.unit or None) == (remote.unit or None))
    )


def _two(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Decimal("0.01"))


def tie_rows(invoice: RebuiltInvoice, index: _Index) -> None:
    """Tie every remote row of one invoice to the entry it was written for."""
    key, rows = invoice.key, invoice.remote.rows or ()
    charged: set[str] = set()  # an entry has at most one charge row per invoice
    noted: set[str] = set()
    exact: dict[str, bool] = defaultdict(lambda: True)
    for position, remote in enumerate(rows):
        text = remote.description
        if position == 0 and remote.is_text and text.startswith(HEADER_PREFIXES):
            invoice.rows.append(Row("", RowRole.HEADER, text))
            continue
        if position == len(rows) - 1 and remote.is_text and text.startswith(BALANCE_PREFIX):
            # The prepaid balance at month end (CONNECTOR_PREPAID__BALANCE_ROW): no entry's.
            invoice.rows.append(Row("", RowRole.BALANCE, text))
            continue
        if remote.is_text:
            entry = _pick(index.notes.get(text, []), remote, key.customer_number, noted, index)
            stale = False
            if entry is None and NOTE_MARK in text:
                # A note written for other prepaid hours or another category name: the entry
                # of that customer and day with prepaid hours, if there is exactly one.
                day = (key.customer_number, text[:10])
                found = [e for e in index.by_day.get(day, []) if e.id not in noted]
                entry, stale = (found[0], True) if len(found) == 1 else (None, False)
            if entry is None:
                invoice.unknown_rows.append(text)
                continue
            noted.add(entry.id)
            invoice.rows.append(Row(entry.id, RowRole.PREPAID_NOTE, text))
            invoice.revisions.setdefault(entry.id, entry.revision)
            if stale:
                exact[entry.id] = False
            continue
        role = RowRole.CORRECTION if text.startswith(CORRECTION_PREFIX) else RowRole.CHARGE
        original = text.split(": ", 1)[1] if role is RowRole.CORRECTION and ": " in text else text
        used = charged if role is RowRole.CHARGE else set()
        entry = _pick(index.text_matches(original), remote, key.customer_number, used, index)
        if entry is None:
            invoice.unknown_rows.append(text)
            continue
        planned = next((r for r in index.rows.get(entry.id, ()) if _same(r, remote)), None)
        if role is RowRole.CHARGE:
            charged.add(entry.id)
            index.charged.add(entry.id)
            # What the entry bills now, price aside: its row stands for the current revision
            # (and keeps the price it was billed at); otherwise the entry changed since.
            exact[entry.id] &= any(
                r.role is RowRole.CHARGE
                and r.article == remote.article
                and r.quantity == remote.quantity
                and (r.unit or None) == (remote.unit or None)
                # A price the ledger agreed is part of the entry: if it differs, the entry
                # changed since. A price from the mappings or the register stays as billed.
                and (entry.unit_price is None or entry.unit_price == remote.price)
                and entry.customer_number == key.customer_number
                for r in index.rows.get(entry.id, ())
            )
        row = planned or Row(
            entry.id, role, text, remote.article, _two(remote.quantity), remote.unit,
            _two(remote.price),
        )  # fmt: skip
        invoice.rows.append(row)
        invoice.revisions.setdefault(entry.id, entry.revision)
    for entry_id in invoice.revisions:
        # Rows that are exactly what the entry plans now stand for its current revision and
        # stay as they are; others (written for an older revision) are planned again.
        if entry_id in exact and not exact[entry_id]:
            invoice.revisions[entry_id] = 0


def _status(remote: RemoteInvoice) -> InvoiceStatus:
    if remote.state is RemoteState.OPEN:
        return InvoiceStatus.OPEN
    if remote.state is RemoteState.GONE:
        return InvoiceStatus.CANCELLED
    return remote.status or InvoiceStatus.BOOKED


def connector_invoices(target: Target) -> list[tuple[InvoiceKey, RemoteInvoice]]:
    """Every invoice of the connector's key form in the target, with its rows."""
    found: list[tuple[InvoiceKey, RemoteInvoice]] = []
    for listed in target.find_all():
        try:
            key = InvoiceKey.parse(listed.key or "")
        except ValueError:
            continue
        full = target.get(listed.remote_id)
        if not full.vanished:
            found.append((key, full))
    live: dict[InvoiceKey, list[str]] = defaultdict(list)
    for key, remote in found:
        if remote.live:
            live[key].append(remote.label)
    doubles = {k: v for k, v in live.items() if len(v) > 1}
    if doubles:
        named = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(doubles.items()))
        raise ConfigError(
            f"{target.profile.display_name} has several live invoices with the same reference "
            f"({named}); leave one and withdraw the others ({target.profile.withdrawn} "
            "there), then rebuild again"
        )
    return found


def rebuild(
    settings: Settings,
    *,
    ledger: LedgerClient | None = None,
    target: Target | None = None,
    replace_existing: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> RebuildReport:
    """`connector state rebuild`: the state from the accounting system and the ledger."""
    from connector.sync import (
        bind_ledger,
        bind_system,
        bind_target,
        load_entries,
        open_ledger,
        open_target,
        pull,
    )

    mappings = load_mappings(settings.mappings_dir)
    report = RebuildReport()
    with contextlib.ExitStack() as resources:
        ledger = ledger or open_ledger(settings)
        resources.callback(ledger.close)
        target = target or open_target(settings)
        resources.callback(target.close)
        store = StateStore(settings.state_dir)
        resources.callback(store.close)
        resources.enter_context(store.lock())
        name = target.profile.name
        bind_system(store, name, record=False)  # before anything is cleared
        if store.invoice_records(name) or store.entry_count():
            if not replace_existing:
                raise ConfigError(
                    f"the state directory {settings.state_dir} is not empty; a rebuild replaces "
                    "what it holds (a copy is kept beside it): run connector state rebuild --yes"
                )
            report.backup = _backup(store, clock or (lambda: datetime.now(UTC)))
            store.clear(name)
        bind_ledger(store, settings)
        bind_system(store, name)
        bind_target(store, target)
        run_id = store.start_run("rebuild", name)
        pull(store, ledger)
        entries, _ = load_entries(store)
        index = _Index(entries, mappings, target)
        invoices = [
            RebuiltInvoice(key, remote, _status(remote))
            for key, remote in connector_invoices(target)
        ]
        # The live invoice of a key first: a cancelled twin (a copy someone cancelled) must not
        # take its place in the state.
        invoices.sort(key=lambda i: (i.key, not i.remote.live, i.remote.remote_id))
        for invoice in invoices:
            tie_rows(invoice, index)
            _judge(invoice, report)
        _record(store, name, invoices, report)
        store.finish_run(run_id, 0, report.to_json())
    log.info("state.rebuilt", **{k: v for k, v in report.to_json().items() if k != "held"})
    return report


def _judge(invoice: RebuiltInvoice, report: RebuildReport) -> None:
    """Rows tied to no entry: an open draft is locked (it may carry a person's edit); an
    article row of unknown origin holds its customer's month, because what it bills cannot
    be netted against any entry."""
    if not invoice.unknown_rows:
        return
    money = [
        r.description
        for r in invoice.remote.rows or ()
        if r.article and r.description in invoice.unknown_rows
    ]
    if invoice.status is InvoiceStatus.OPEN:
        invoice.status = InvoiceStatus.LOCKED
        report.locked.append(invoice.key.text)
    if money and invoice.status is not InvoiceStatus.CANCELLED:
        report.held.append(
            (
                invoice.key.customer_number,
                invoice.key.period,
                f"invoice {invoice.remote.label} ({invoice.key}) has "
                f"{len(money)} row(s) the rebuild could not tie to a ledger entry, for "
                f"example {money[0]!r}",
            )
        )


def _record(
    store: StateStore, target: str, invoices: list[RebuiltInvoice], report: RebuildReport
) -> None:
    counts: dict[str, int] = defaultdict(int)
    placed: set[str] = set()
    recorded: set[InvoiceKey] = set()
    # Holds first: a kill part-way then leaves months protected, never an unprotected month
    # (missing invoices stop the next sync anyway, until the rebuild is run again).
    for customer, period, reason in report.held:
        store.hold(target, customer, period, reason)
    for invoice in invoices:
        if invoice.key in recorded:  # a cancelled twin of a key already recorded
            continue
        recorded.add(invoice.key)
        counts[invoice.status.value] += 1
        currency = invoice.remote.currency or "SEK"
        planned = PlannedInvoice(
            key=invoice.key,
            currency=currency,
            rows=tuple(invoice.rows),
            action=Action.UPDATE,
            revisions=invoice.revisions,
            remote_id=invoice.remote.remote_id,
        )
        by_entry: dict[str, list[Row]] = defaultdict(list)
        for row in invoice.rows:
            if row.role not in INVOICE_ROLES:
                by_entry[row.entry_id].append(row)
        placements = [
            Placement(e, invoice.key, invoice.revisions[e], tuple(rows))
            for e, rows in by_entry.items()
        ]
        placed.update(by_entry)
        written = Written.of(planned, invoice.remote.rows)
        store.record_rebuilt(
            target,
            invoice.key,
            invoice.status,
            currency,
            invoice.remote.remote_id,
            rows_digest(invoice.rows, currency) if invoice.status is InvoiceStatus.OPEN else None,
            written if invoice.status is InvoiceStatus.OPEN else None,
            placements,
            invoice.remote.number,
        )
    report.invoices = dict(sorted(counts.items()))
    report.entries_placed = len(placed)


def _backup(store: StateStore, clock: Callable[[], datetime]) -> str:
    stamp = clock().strftime("%Y%m%dT%H%M%SZ")
    path = store.dir / f"{DB_NAME}.before-rebuild-{stamp}"
    store.backup_to(path)
    return str(path)
