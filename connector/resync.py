"""`connector resync`: bring one month (of one customer, or of every customer) back in line with
the ledger on purpose, after a person has seen what will change.

It differs from the nightly sync in three ways, each asked for explicitly:

- the ledger is read again for that window (the ledger API's window form), so a change the
  change feed missed is seen; the feed cursor does not move;
- drafts a person edited (which the sync leaves alone) get the planned rows back;
- with `--reinvoice-cancelled`, entries of an invoice a person cancelled go on a new
  supplementary invoice.

Everything else is the sync's own machinery (`connector.sync._Sync`): the run lock, recovery
first, pending marks before every write, the lookups, the checks of every answer. The decisions
stay in the planner: a restored draft is planned as an open draft again, so what a billed
supplementary invoice already holds for its entries is netted by the usual net position (the
restored draft carries a correction rather than billing those hours twice).
"""

from __future__ import annotations

import calendar
import contextlib
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connector.errors import ConfigError, ConnectorError, ExitCode
from connector.ledger import LedgerClient, parse_entry
from connector.logs import get_logger
from connector.mappings import Mappings
from connector.planning import (
    Invoiced,
    InvoiceKey,
    InvoiceStatus,
    Plan,
    PlannedInvoice,
    Row,
)
from connector.settings import Settings
from connector.state import StateStore
from connector.sync import (
    SyncReport,
    _Sync,
    bind_ledger,
    bind_system,
    bind_target,
    load_entries,
    opened,
    remote_status,
    require_known_customer,
)
from connector.targets.base import RemoteRow, RemoteState, Target, rows_match

log = get_logger(__name__)


@dataclass(frozen=True)
class Window:
    """What a re-sync covers: a month, its customers, and optionally one entry."""

    period: str  # YYYY-MM
    customers: frozenset[str]
    entry: str | None = None
    # With an entry: the invoices holding it (as recorded), the only ones it may change.
    entry_keys: frozenset[InvoiceKey] = frozenset()

    @property
    def first_day(self) -> date:
        year, month = (int(p) for p in self.period.split("-"))
        return date(year, month, 1)

    @property
    def last_day(self) -> date:
        year, month = (int(p) for p in self.period.split("-"))
        return date(year, month, calendar.monthrange(year, month)[1])

    def holds_key(self, key: InvoiceKey) -> bool:
        return key.period == self.period and key.customer_number in self.customers


@dataclass
class Restore:
    """A draft a person edited, and what bringing it back to the plan changes, row by row."""

    key: InvoiceKey
    remote_id: str
    number: str | None
    # "locked": the sync had flagged it; "open": a person's edit no run had noticed yet.
    was: str
    remote_rows: tuple[RemoteRow, ...]
    differences: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ResyncReport:
    target: str
    period: str
    customers: list[str]
    entry: str | None
    dry_run: bool
    reinvoice_cancelled: bool
    fetched: int = 0
    # None: nothing asked (a dry run, or nothing to change); False: a person said no.
    confirmed: bool | None = None
    preview: SyncReport | None = None
    done: SyncReport | None = None
    restores: list[Restore] = field(default_factory=list)
    reinvoice: list[tuple[str, InvoiceKey]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """Whether the preview found anything to write (or to record as restored)."""
        return bool(self.preview and self.preview.would)

    @property
    def exit_code(self) -> ExitCode:
        if self.done is not None:
            return self.done.exit_code
        if self.confirmed is False:
            return ExitCode.OK  # a person said no: nothing was sent, as asked
        return self.preview.exit_code if self.preview else ExitCode.OK


def _row_text(row: RemoteRow | Row) -> str:
    """One row as a person reads it in a difference list."""
    if row.article is None or (isinstance(row, RemoteRow) and row.is_text):
        return f'text "{row.description}"'
    quantity = row.quantity if row.quantity is not None else Decimal(0)
    price = "-" if row.price is None else str(row.price)
    unit = f" {row.unit}" if row.unit else ""
    return f'{row.article} {quantity}{unit} × {price} "{row.description}"'


def _signature(row: RemoteRow | Row) -> tuple[Any, ...]:
    def number(value: Decimal | None) -> Decimal | None:
        return None if value in (None, Decimal(0)) else value

    article = None if isinstance(row, RemoteRow) and row.is_text else row.article
    return (article or None, number(row.quantity), number(row.price), row.description)


def row_diff(remote: Sequence[RemoteRow], planned: Sequence[Row]) -> list[dict[str, Any]]:
    """Row by row, what the draft holds against what the plan wants; rows equal in both are
    left out. A row changed in place (same text or same article) is one difference with both
    sides; a row only the plan has (a person deleted it) has `draft` None; a row only the
    draft has (a person added it) has `plan` and `row` None. `row` is the row's number in the
    planned invoice."""
    ours = [_signature(r) for r in planned]
    theirs = [_signature(r) for r in remote]
    found: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(a=theirs, b=ours, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        left = list(range(a0, a1))
        for j in range(b0, b1):
            # The same row changed: same text, else same article (or both text rows).
            same = next((i for i in left if theirs[i][3] == ours[j][3]), None)
            if same is None:
                same = next((i for i in left if theirs[i][0] == ours[j][0]), None)
            if same is not None:
                left.remove(same)
            found.append(
                {
                    "row": j + 1,
                    "draft": None if same is None else _row_text(remote[same]),
                    "plan": _row_text(planned[j]),
                }
            )
        found.extend({"row": None, "draft": _row_text(remote[i]), "plan": None} for i in left)
    return found


class _Resync(_Sync):
    """The sync's work narrowed to a window, with the two things only a re-sync does: drafts
    a person edited are restored to the plan, and (when asked) cancelled invoices' entries are
    invoiced again."""

    def __init__(
        self, *args: Any, window: Window, reinvoice_cancelled: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.window = window
        self.reinvoice_cancelled = reinvoice_cancelled
        # Drafts being brought back to the plan: planned as open drafts, written whole.
        self.restoring: set[InvoiceKey] = set()
        self.restores: dict[InvoiceKey, Restore] = {}
        self.marks: set[tuple[str, InvoiceKey]] = set()
        self.widened: dict[InvoiceKey, str] = {}
        # Months held because of a draft this re-sync restores: planned as released.
        self.lifted: dict[tuple[str, str], str] = {}
        self._read: dict[InvoiceKey, Any] = {}

    # --- what the window holds ---------------------------------------------------------------

    def survey(self) -> None:
        """Read every invoice of the window the connector knows: a closed one is recorded as
        such (never changed: its differences become corrections), a draft whose rows are not
        what the connector wrote (locked, or an edit not yet noticed) is to be restored, and
        a cancelled one's entries are marked for invoicing again when asked."""
        invoiced = self.store.invoiced(self.name)
        cancelled: list[InvoiceKey] = []
        for key, known in sorted(invoiced.invoices.items()):
            if not self.window.holds_key(key):
                continue
            if self.window.entry is not None and key not in self.window.entry_keys:
                continue
            month = (key.customer_number, key.period)
            if month in invoiced.holds and not self._liftable(month, invoiced.holds[month]):
                continue  # held: nothing is planned for it until a person releases it
            if known.status is InvoiceStatus.CANCELLED:
                cancelled.append(key)
                continue
            if known.status not in (InvoiceStatus.OPEN, InvoiceStatus.LOCKED):
                continue
            if known.remote_id is None or key in self.skip:
                continue
            record = self.store.invoice_record(self.name, key)
            if record is None or record.pending is not None:
                continue  # an unfinished write: recovery's (a dry run leaves it as it is)
            remote = self.target.get(known.remote_id)
            status = remote_status(remote)
            if status is not None:
                self._closed(key, known.remote_id, status, remote)
                if self._cancelled_now(key):
                    cancelled.append(key)
                continue
            rows = tuple(remote.rows or ())
            if known.status is InvoiceStatus.OPEN and (
                record.written is None or record.written.holds(rows)
            ):
                continue  # as the connector wrote it: the plan decides as in a sync
            self.restoring.add(key)
            # Planned as an open draft again, with a digest no plan has, so it is written
            # whole (or withdrawn, if nothing is left to bill on it).
            self.overrides[key] = replace(
                known, status=InvoiceStatus.OPEN, digest=f"restore:{known.digest}"
            )
            self.restores[key] = Restore(
                key, known.remote_id, known.display_number, known.status.value, rows
            )
            log.info("resync.restore", key=key.text, number=known.remote_id, was=known.status)
        if self.reinvoice_cancelled and cancelled:
            # Judged as the plan will see the window: restored drafts open again.
            now = self.store.invoiced(self.name)  # with what this survey recorded
            seen = replace(now, invoices={**now.invoices, **self.overrides})
            for key in cancelled:
                self._mark_cancelled(key, seen)

    def _cancelled_now(self, key: InvoiceKey) -> bool:
        """Whether this run has recorded `key` as cancelled (in a dry run, only in memory); an
        invoice merely not found yet is not."""
        known = self.overrides.get(key)
        if known is None:
            record = self.store.invoice_record(self.name, key)
            return record is not None and record.status is InvoiceStatus.CANCELLED
        return known.status is InvoiceStatus.CANCELLED

    def _liftable(self, month: tuple[str, str], reason: str) -> bool:
        """A month held only because one of its drafts bills other amounts than the connector
        wrote (the sync's own hold on a person's edit) is held for a reason this re-sync
        removes: that draft gets the planned rows back. Any other hold (a rebuild's rows of
        unknown origin, a booked invoice that differs) stays until a person releases it."""
        if month in self.lifted:
            return True
        customer, period = month
        if not reason.startswith("draft ") or f"(SK-{customer}-{period}" not in reason:
            return False
        self.lifted[month] = reason
        return True

    def _mark_cancelled(self, key: InvoiceKey, invoiced: Invoiced) -> None:
        for entry_id, chain in invoiced.placements.items():
            if self.window.entry is not None and entry_id != self.window.entry:
                continue
            closed = [p for p in chain if invoiced.status(p.key).closed]
            if closed and closed[-1].key == key:
                self.marks.add((entry_id, key))

    def in_window(self, invoice: PlannedInvoice, invoiced: Invoiced) -> bool:
        if not self.window.holds_key(invoice.key):
            return False
        entry = self.window.entry
        return entry is None or entry in invoice.revisions or invoice.key in self.window.entry_keys

    # --- planning ----------------------------------------------------------------------------

    def plan(self) -> Plan:
        entries, rejected = load_entries(self.store)
        stored = self.store.invoiced(self.name)
        invoiced = replace(
            stored,
            invoices={**stored.invoices, **self.overrides},
            holds={
                **{m: r for m, r in stored.holds.items() if m not in self.lifted},
                **self.held,
            },
            reinvoiced=stored.reinvoiced | self.marks,
        )
        return self.narrow(self.plan_of(entries, rejected, invoiced), invoiced)

    def narrow(self, full: Plan, invoiced: Invoiced) -> Plan:
        """The plan's invoices in the window, and the window's entries. An entry moving
        between an invoice in the window and one outside it (another month, another
        customer) changes both together, so it is never on two drafts, or on none."""
        keys = {i.key for i in full.invoices if self.in_window(i, invoiced)}
        changed = {i.key: i for i in full.changes}
        entries_on: dict[InvoiceKey, set[str]] = {k: set(i.revisions) for k, i in changed.items()}
        for entry_id, chain in invoiced.placements.items():
            for placement in chain:
                if placement.key in entries_on:
                    entries_on[placement.key].add(entry_id)
        todo = [k for k in keys if k in changed]
        while todo:
            key = todo.pop()
            moving = entries_on[key]
            for other in changed:
                if other in keys:
                    continue
                shared = moving & entries_on[other]
                if shared and invoiced.status(other) is InvoiceStatus.OPEN:
                    keys.add(other)
                    todo.append(other)
                    self.widened.setdefault(
                        other,
                        f"{other} changes too: entr{'y' if len(shared) == 1 else 'ies'} "
                        f"{', '.join(sorted(shared)[:3])} move{'s' if len(shared) == 1 else ''} "
                        f"between it and {key}",
                    )
        entry = self.window.entry
        results = tuple(
            r
            for r in full.results
            if set(r.keys) & keys
            or (
                r.ref == entry
                if entry is not None
                else r.period == self.window.period and r.customer_number in self.window.customers
            )
        )
        return Plan(full.target, tuple(i for i in full.invoices if i.key in keys), results)

    # --- writing: a restored draft is the connector's again ----------------------------------

    def _check_ours(self, invoice: PlannedInvoice) -> Any:
        if invoice.key not in self.restoring:
            return super()._check_ours(invoice)
        read = self._read.pop(invoice.key, None)
        if read is not None:
            return read
        assert invoice.remote_id is not None
        remote = self.target.get(invoice.remote_id)
        status = remote_status(remote)
        if status is not None:
            self._closed(invoice.key, invoice.remote_id, status, remote)
            return None
        return remote

    def update(self, invoice: PlannedInvoice) -> bool:
        key = invoice.key
        if key not in self.restoring:
            return super().update(invoice)
        assert invoice.remote_id is not None
        current = self._check_ours(invoice)
        if current is None:
            return True
        if current.state is RemoteState.OPEN and rows_match(current.rows or (), invoice.rows):
            # Already what the plan wants (a person undid their edit): recorded, nothing sent.
            if self.dry_run:
                self.report.would.append(("restore", key.text))
                return False
            self.store.confirm_write(self.name, invoice, invoice.remote_id, current.rows)
            self._restored(key)
            self.report.updated.append(key.text)
            return False
        if not self.dry_run and not self.target.can_update(invoice, current):
            # No row of the person's draft can carry a row id (Fortnox): first the header
            # alone in front of every row kept as it is, then the planned rows. A crash in
            # between leaves a draft that is no one's plan: the next run flags it again.
            step = replace(invoice, rows=invoice.rows[:1])
            current = self._put(step, current, header_only=True)
            if current is None:
                return True
        self._read[key] = current
        replan = super().update(invoice)
        if self.dry_run:
            self.report.would[-1:] = [("restore", key.text)]
        else:
            self._restored(key)
        return replan

    def cancel_empty(self, invoice: PlannedInvoice) -> bool:
        replan = super().cancel_empty(invoice)
        if not self.dry_run:
            self._restored(invoice.key)
        return replan

    def _restored(self, key: InvoiceKey) -> None:
        """Written (or found closed, or a person's again): planned from the state from now on."""
        if key in self.restoring:
            self.restoring.discard(key)
            self.overrides.pop(key, None)

    def set_status(
        self,
        key: InvoiceKey,
        status: InvoiceStatus,
        remote_id: str | None,
        number: str | None = None,
    ) -> None:
        self._restored(key)  # closed, gone, or locked again by a person meanwhile
        super().set_status(key, status, remote_id, number)

    def run(self) -> Plan:
        self.survey()
        result = super().run()
        for (customer, period), reason in sorted(self.lifted.items()):
            keys = {InvoiceKey.parse(k) for k in self.report.invoice_attention}
            unwritten = set() if self.dry_run else self.restoring
            troubled = (customer, period) in self.held or any(
                (k.customer_number, k.period) == (customer, period) for k in unwritten | keys
            )
            if troubled:
                continue  # still not the connector's: the hold stays
            if self.dry_run:
                note = f"customer {customer} {period} is held ({reason}): this re-sync releases it"
                # A change of its own: even with every draft already right (a run cut off
                # between the restore and the release), confirming it releases the month.
                self.report.would.append(("release", f"SK-{customer}-{period}"))
            else:
                self.store.release(self.name, customer, period)
                note = f"customer {customer} {period} released: its draft is the connector's again"
            self.report.notes.append(note)
        for note in self.widened.values():
            if note not in self.report.notes:
                self.report.notes.append(note)
        return result


def _window_customers(store: StateStore, target: str, period: str) -> set[str]:
    """Every customer with an entry in the mirror, or an invoice the state knows, that month."""
    found: set[str] = set()
    for _, raw in store.raw_entries():
        if not isinstance(raw, dict):
            continue
        customer, performed = raw.get("customer_number"), raw.get("performed_on")
        if (
            isinstance(customer, str)
            and isinstance(performed, str)
            and performed.startswith(period + "-")
        ):
            found.add(customer)
    found.update(
        r.key.customer_number for r in store.invoice_records(target) if r.key.period == period
    )
    return found


def fetch_window(store: StateStore, ledger: LedgerClient, window: Window, notes: list[str]) -> int:
    """Read the window from the ledger again and store what it returns in the mirror, newest
    revision kept, the feed cursor left where it is."""
    returned: set[str] = set()
    fetched = without_id = 0
    for customer in sorted(window.customers):
        for page in ledger.window(customer, window.first_day, window.last_day):
            # Items without a usable id are the feed's to report (by feed position).
            items = [i for i in page.items if i.entry_id is not None]
            without_id += len(page.items) - len(items)
            store.store_page(items, None)
            fetched += len(items)
            returned.update(i.entry_id for i in items if i.entry_id is not None)
    if without_id:
        notes.append(
            f"the ledger's window returned {without_id} entr{'y' if without_id == 1 else 'ies'} "
            "without a usable id: the sync's pull reports them by feed position"
        )
    missing = []
    for entry_id, raw in store.raw_entries():
        if entry_id in returned or not isinstance(raw, dict):
            continue
        performed = raw.get("performed_on")
        if (
            raw.get("customer_number") in window.customers
            and isinstance(performed, str)
            and performed.startswith(window.period + "-")
        ):
            missing.append(entry_id)
    if missing:
        notes.append(
            f"the ledger's window did not return {', '.join(sorted(missing)[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + ", which the state holds for this month: moved to another customer or month "
            "since (the next sync's pull brings the new revision); planned as last pulled"
        )
    log.info("resync.fetched", entries=fetched, customers=len(window.customers))
    return fetched


def _entry_window(store: StateStore, target: str, window: Window) -> Window:
    """The window narrowed to one entry: it must belong to the window, as the ledger now has
    it or by an invoice of the window holding it."""
    entry = window.entry
    assert entry is not None
    invoiced = store.invoiced(target)
    keys = frozenset(p.key for p in invoiced.placements.get(entry, ()) if window.holds_key(p.key))
    raw = store.raw_entry(entry)
    inside = False
    if raw is not None:
        with contextlib.suppress(ValueError):
            parsed = parse_entry(raw)
            inside = parsed.period == window.period and parsed.customer_number in window.customers
    if not inside and not keys:
        whose = ", ".join(sorted(window.customers)) or "no customer"
        raise ConfigError(
            f"--entry {entry}: not an entry of {window.period} for customer {whose}, as the "
            "ledger has it now, nor on an invoice of that month: check the entry id, "
            "--period and --customer"
        )
    return replace(window, entry_keys=keys)


def run_resync(
    settings: Settings,
    *,
    period: str,
    customer: str | None = None,
    entry: str | None = None,
    dry_run: bool = False,
    reinvoice_cancelled: bool = False,
    confirm: Callable[[ResyncReport], bool] | None = None,
    ledger: LedgerClient | None = None,
    target: Target | None = None,
    clock: Callable[[], datetime] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ResyncReport:
    """`connector resync`: fetch the window again, show what would change (the preview, a dry
    run), ask `confirm`, then bring the accounting system in line for that window only. One
    lock for the whole of it, so what was shown is what is done."""
    with opened(settings, ledger=ledger, target=target, clock=clock) as (run, mappings):
        ledger, target, store = run.ledger, run.target, run.store
        name = target.profile.name
        report = ResyncReport(
            target=name,
            period=period,
            customers=[],
            entry=entry,
            dry_run=dry_run,
            reinvoice_cancelled=reinvoice_cancelled,
        )
        run_id = None if dry_run else store.start_run("resync", name)
        try:
            _resync(
                report, settings, store, ledger, target, mappings, customer, confirm, clock,
                progress,
            )  # fmt: skip
        except ConnectorError as exc:
            if run_id is not None:
                store.finish_run(run_id, exc.exit_code, {"error": str(exc)})
            raise
        if run_id is not None:
            summary = report.done.to_json() if report.done else {"confirmed": report.confirmed}
            store.finish_run(run_id, report.exit_code, summary)
    return report


def _resync(
    report: ResyncReport,
    settings: Settings,
    store: StateStore,
    ledger: LedgerClient,
    target: Target,
    mappings: Mappings,
    customer: str | None,
    confirm: Callable[[ResyncReport], bool] | None,
    clock: Callable[[], datetime] | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    name = target.profile.name
    dry_run = report.dry_run
    bind_ledger(store, settings, record=not dry_run)
    bind_system(store, name, record=not dry_run)
    bind_target(store, target, record=not dry_run)

    def worker(into: SyncReport, window: Window | None = None) -> _Sync:
        common = (
            store,
            target,
            mappings,
            into,
            settings.invoice,
            clock,
            settings.limits.limits(),
            settings.prepaid.policy(),
        )
        if window is None:
            return _Sync(*common)
        return _Resync(*common, window=window, reinvoice_cancelled=report.reinvoice_cancelled)

    recovery = SyncReport(dry_run=dry_run, target=name)
    if not dry_run:
        worker(recovery).recover()  # unfinished writes first, as in a sync
    customers = {customer} if customer else _window_customers(store, name, report.period)
    window = Window(report.period, frozenset(customers), report.entry)
    report.customers = sorted(customers)
    report.fetched = fetch_window(store, ledger, window, report.notes) if customers else 0
    require_known_customer(store, name, customer)
    if report.entry is not None:
        window = _entry_window(store, name, window)
    if not customers:
        report.notes.append(f"no customer has ledger entries or invoices in {report.period}")

    preview = SyncReport(dry_run=True, target=name, pulled=report.fetched)
    preview.invoice_attention.update(recovery.invoice_attention)
    looking = worker(preview, window)
    assert isinstance(looking, _Resync)
    preview.plan = looking.run()
    preview.count_requests(target.stats)
    report.preview = preview
    report.reinvoice = sorted(looking.marks)
    report.restores = list(looking.restores.values())
    planned = {i.key: i for i in preview.plan.invoices}
    for restore in report.restores:
        wanted = planned.get(restore.key)
        restore.differences = row_diff(restore.remote_rows, wanted.rows if wanted else ())
    if recovery.recovered:
        report.notes.append(
            f"finished what an earlier run left unfinished: {', '.join(recovery.recovered)}"
        )
    if dry_run or not report.changes:
        return
    if confirm is not None and not confirm(report):
        report.confirmed = False
        return
    report.confirmed = True
    if report.reinvoice:
        # The decision is kept before anything is written: a crash on the way leaves it to the
        # next run (sync or re-sync) to carry out, the same way.
        store.record_reinvoice(name, report.reinvoice)
    done = SyncReport(dry_run=False, target=name, pulled=report.fetched)
    done.recovered.extend(recovery.recovered)
    done.invoice_attention.update(recovery.invoice_attention)
    writing = worker(done, window)
    assert isinstance(writing, _Resync)
    writing.progress = progress
    done.plan = writing.run()
    done.count_requests(target.stats)
    report.done = done
    log.info("resync.done", **done.counts())
