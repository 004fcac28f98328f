"""`connector audit`: a month's invoices in the accounting system proved against the ledger.

The books side is read from the accounting system itself, never from the state store: every
invoice of the month with the connector's key form (`SK-<customer>-<YYYY-MM>[-n]`), in any
state. Live ones (drafts, booked, sent, converted) are netted per customer, currency, article
and price, supplementary invoices and correction rows included; cancelled or deleted ones bill
nothing and are left out.

The ledger side is what the ledger's current revisions should bill for that month, computed
here from the ledger mirror (pulled first), the mapping files and the article register with
`planning.entry_rows`, the same rules the planner applies. The plan and the state store are used
only to know what the connector leaves alone on purpose (an invoice a person withdrew, an entry
needing attention keeps what an earlier revision put on invoices, a held month) and where an
entry's rows should be. Nothing is written to the accounting system: only reads are sent.

See docs/finance.md for what each finding means.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connector import targets
from connector.errors import ConnectorError, ExitCode
from connector.ledger import Entry, LedgerClient
from connector.logs import get_logger
from connector.mappings import Mappings
from connector.planning import (
    Action,
    EntryResult,
    Invoiced,
    InvoiceKey,
    InvoiceStatus,
    KnownInvoice,
    Limits,
    Outcome,
    Plan,
    Row,
    RowRole,
    clean,
    entry_rows,
    plan,
)
from connector.prepaid import Prepaid, accounts, overdraws
from connector.settings import Settings
from connector.state import StateStore
from connector.targets.base import RemoteInvoice, RemoteState, Target, TargetProfile

log = get_logger(__name__)

CENT = Decimal("0.01")


def _price_key(price: Decimal) -> Decimal:
    """A price as a group key and for display: 2 decimals when it has no more (the register's
    "1150" and a row's "1150.00" are one price)."""
    quantized = price.quantize(CENT)
    return quantized if quantized == price else price


def _dec(value: Decimal) -> str:
    return str(value)


def _money(value: Decimal) -> str:
    """An amount with 2 decimals when nothing is lost (1.5 x 1150.00 is "1725.00", not
    "1725.000"); exact otherwise."""
    return str(_price_key(value))


# --- the findings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BookRow:
    """An article row on a live invoice of the month."""

    key: str
    invoice: str  # the number a person sees, else the target's id
    state: str
    description: str
    quantity: Decimal
    price: Decimal
    remote_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "invoice": self.invoice,
            "remote_id": self.remote_id,
            "state": self.state,
            "description": self.description,
            "quantity": _dec(self.quantity),
            "price": _dec(self.price),
            "amount": _money(self.quantity * self.price),
        }


@dataclass(frozen=True)
class ExpectedRow:
    """What one ledger entry should bill in a group."""

    entry_id: str
    description: str
    quantity: Decimal
    # Why the figure is what it is when not simply the entry's current revision.
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "description": self.description,
            "quantity": _dec(self.quantity),
            "note": self.note or None,
        }


@dataclass
class Line:
    """One customer, currency, article and price: hours invoiced against hours expected."""

    customer: str
    currency: str
    article: str
    price: Decimal
    invoiced: Decimal = Decimal(0)
    expected: Decimal = Decimal(0)
    rows: list[BookRow] = field(default_factory=list)
    entries: list[ExpectedRow] = field(default_factory=list)

    @property
    def hours_difference(self) -> Decimal:
        return self.invoiced - self.expected

    @property
    def amount_difference(self) -> Decimal:
        return self.hours_difference * self.price

    @property
    def agrees(self) -> bool:
        return self.invoiced == self.expected

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_number": self.customer,
            "currency": self.currency,
            "article": self.article,
            "price": _dec(self.price),
            "hours_invoiced": _dec(self.invoiced),
            "hours_expected": _dec(self.expected),
            "hours_difference": _dec(self.hours_difference),
            "amount_invoiced": _money(self.invoiced * self.price),
            "amount_expected": _money(self.expected * self.price),
            "amount_difference": _money(self.amount_difference),
            "invoice_rows": [r.to_json() for r in self.rows],
            "ledger_entries": [e.to_json() for e in self.entries],
        }


@dataclass(frozen=True)
class AuditedInvoice:
    key: str
    remote_id: str
    number: str | None
    customer: str
    state: str  # open, closed, gone
    status: str | None  # booked, sent, cancelled (the connector's words), None for a draft
    currency: str
    total: Decimal  # excl. VAT, the exact sum of its article rows
    # Whether the state store records this very invoice for its key (False: one the
    # connector does not know, such as a copy or a second invoice with the same key).
    known: bool

    @property
    def live(self) -> bool:
        return self.state != RemoteState.GONE.value

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "remote_id": self.remote_id,
            "number": self.number,
            "customer_number": self.customer,
            "state": self.state,
            "status": self.status,
            "live": self.live,
            "currency": self.currency,
            "total_excl_vat": _money(self.total),
            "known_to_connector": self.known,
        }


@dataclass(frozen=True)
class EntryFinding:
    ref: str
    customer: str | None
    period: str | None
    outcome: str  # invoiced, excluded, attention, not_invoiced
    reason: str
    hours: Decimal | None = None
    invoices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "customer_number": self.customer,
            "period": self.period,
            "outcome": self.outcome,
            "reason": clean(self.reason),
            "hours": None if self.hours is None else _dec(self.hours),
            "invoices": list(self.invoices),
        }


@dataclass
class AuditReport:
    target: str
    period: str
    customer: str | None
    invoices: list[AuditedInvoice] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    # Invoice-level findings that make the books unprovable (prices incl. VAT, a row without
    # quantity or price).
    problems: list[str] = field(default_factory=list)
    entries: list[EntryFinding] = field(default_factory=list)
    invoice_attention: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    # When the accounting system was read (UTC, ISO 8601), for the auditor's file.
    checked_at: str | None = None

    @property
    def differences(self) -> list[Line]:
        return [line for line in self.lines if not line.agrees]

    def listed(self, outcome: str) -> list[EntryFinding]:
        return [e for e in self.entries if e.outcome == outcome]

    @property
    def agrees(self) -> bool:
        return not (
            self.differences or self.duplicates or self.problems or self.listed("not_invoiced")
        )

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.agrees else ExitCode.ATTENTION

    def totals(self) -> dict[str, dict[str, str]]:
        invoiced: dict[str, Decimal] = defaultdict(Decimal)
        expected: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            invoiced[line.currency] += line.invoiced * line.price
            expected[line.currency] += line.expected * line.price
        return {
            currency: {
                "invoiced": _money(invoiced[currency]),
                "expected": _money(expected[currency]),
                "difference": _money(invoiced[currency] - expected[currency]),
            }
            for currency in sorted(set(invoiced) | set(expected))
        }

    def customers(self) -> list[dict[str, Any]]:
        """Per customer and currency: the live invoices, amounts invoiced and expected."""
        sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
        for line in self.lines:
            pair = sums[(line.customer, line.currency)]
            pair[0] += line.invoiced * line.price
            pair[1] += line.expected * line.price
        labels: dict[str, list[str]] = defaultdict(list)
        for invoice in self.invoices:
            if invoice.live:
                labels[invoice.customer].append(invoice.number or invoice.key)
        return [
            {
                "customer_number": customer,
                "currency": currency,
                "invoices": labels.get(customer, []),
                "invoiced": _money(invoiced),
                "expected": _money(expected),
                "difference": _money(invoiced - expected),
            }
            for (customer, currency), (invoiced, expected) in sorted(sums.items())
        ]

    def to_json(self) -> dict[str, Any]:
        counts = Counter(e.outcome for e in self.entries)
        return {
            "target": self.target,
            "target_name": targets.profile(self.target).display_name,
            "period": self.period,
            "filter": {"customer": self.customer},
            "checked_at": self.checked_at,
            "agrees": self.agrees,
            "exit_code": int(self.exit_code),
            "totals": self.totals(),
            "customers": self.customers(),
            "differences": [line.to_json() for line in self.differences],
            "duplicates": [
                {"key": key, "invoices": labels} for key, labels in sorted(self.duplicates.items())
            ],
            "problems": [clean(p) for p in self.problems],
            "not_invoiced": [e.to_json() for e in self.listed("not_invoiced")],
            "attention": [e.to_json() for e in self.listed("attention")],
            "invoice_attention": [
                {"key": k, "reason": clean(r)} for k, r in sorted(self.invoice_attention.items())
            ],
            "excluded": [e.to_json() for e in self.listed("excluded")],
            "invoiced": [e.to_json() for e in self.listed("invoiced")],
            "invoices": [i.to_json() for i in self.invoices],
            "lines": [line.to_json() for line in self.lines],
            "counts": {
                "invoices": len(self.invoices),
                "live_invoices": sum(1 for i in self.invoices if i.live),
                "lines": len(self.lines),
                "differences": len(self.differences),
                "duplicates": len(self.duplicates),
                "problems": len(self.problems),
                "entries": len(self.entries),
                **{
                    name: counts.get(name, 0)
                    for name in ("invoiced", "excluded", "attention", "not_invoiced")
                },
            },
            "requests": self.requests,
        }


# --- the books: what the accounting system holds ---------------------------------------------


Group = tuple[str, str, str, Decimal]  # customer, currency, article, price


def read_books(
    target: Target, period: str, customer: str | None
) -> list[tuple[InvoiceKey, RemoteInvoice]]:
    """Every invoice of the connector's key form for the month, live ones with their rows."""
    found: list[tuple[InvoiceKey, RemoteInvoice]] = []
    for listed in target.find_all([period]):
        try:
            key = InvoiceKey.parse(listed.key or "")
        except ValueError:
            continue  # not the connector's
        if key.period != period or (customer is not None and key.customer_number != customer):
            continue
        full = listed if not listed.live else target.get(listed.remote_id)
        if full.vanished:
            continue  # deleted between the listing and the read: bills nothing
        found.append((key, full))
    found.sort(key=lambda kr: (kr[0], kr[1].remote_id))
    return found


class _Audit:
    def __init__(
        self,
        report: AuditReport,
        profile: TargetProfile,
        invoiced: Invoiced,
    ) -> None:
        self.report = report
        self.profile = profile
        self.invoiced = invoiced
        self.lines: dict[Group, Line] = {}

    def in_scope(self, customer: str | None, period: str | None) -> bool:
        if period != self.report.period:
            return False
        return self.report.customer is None or customer == self.report.customer

    def line(self, group: Group) -> Line:
        if group not in self.lines:
            customer, currency, article, price = group
            self.lines[group] = Line(customer, currency, article, price)
        return self.lines[group]

    # --- books ------------------------------------------------------------------------------

    def add_books(self, books: Sequence[tuple[InvoiceKey, RemoteInvoice]]) -> None:
        live: dict[str, list[str]] = defaultdict(list)
        for key, remote in books:
            known = self.invoiced.invoices.get(key)
            currency = remote.currency or (known.currency if known else None) or "SEK"
            total = Decimal(0)
            state = remote.state.value
            status = None if remote.state is RemoteState.OPEN else _status(remote).value
            if remote.live:
                live[key.text].append(remote.label)
                if remote.vat_included:
                    self.report.problems.append(
                        f"invoice {remote.label} ({key}) has prices including VAT: its amounts "
                        "cannot be compared with the ledger's prices excluding VAT"
                    )
                customer = remote.customer_number or key.customer_number
                for number, row in enumerate(remote.rows or (), start=1):
                    if not row.article:
                        continue
                    if row.quantity is None or row.price is None:
                        self.report.problems.append(
                            f"invoice {remote.label} ({key}) row {number} ({row.article}) has "
                            "no quantity or no price"
                        )
                    quantity = row.quantity or Decimal(0)
                    price = _price_key(row.price or Decimal(0))
                    line = self.line((customer, currency, row.article, price))
                    line.invoiced += quantity
                    # A draft without a number (Visma) is named by its key, not its GUID.
                    line.rows.append(
                        BookRow(
                            key.text,
                            remote.number or key.text,
                            state,
                            row.description,
                            quantity,
                            price,
                            remote.remote_id,
                        )
                    )
                    total += quantity * price
            self.report.invoices.append(
                AuditedInvoice(
                    key=key.text,
                    remote_id=remote.remote_id,
                    number=remote.number,
                    customer=remote.customer_number or key.customer_number,
                    state=state,
                    status=status,
                    currency=currency,
                    total=total,
                    known=known is not None and known.remote_id == remote.remote_id,
                )
            )
        self.report.duplicates = {k: v for k, v in live.items() if len(v) > 1}

    # --- the ledger -------------------------------------------------------------------------

    def expect(self, group: Group, row: ExpectedRow) -> None:
        line = self.line(group)
        line.expected += row.quantity
        line.entries.append(row)

    def kept(self, entry_id: str) -> list[tuple[Group, ExpectedRow]]:
        """What an entry the connector leaves alone still has on the month's invoices, as the
        state recorded it: those rows stay as written until the entry is fixed."""
        found = []
        for placement in self.invoiced.placements.get(entry_id, ()):
            key = placement.key
            known = self.invoiced.invoices.get(key)
            if known is None or known.status is InvoiceStatus.CANCELLED:
                continue
            if not known.remote_id or not self.in_scope(key.customer_number, key.period):
                continue
            for row in placement.rows:
                if row.article is None or row.quantity is None or row.price is None:
                    continue
                group = (key.customer_number, known.currency or "SEK", row.article, row.price)
                found.append(
                    (
                        (group[0], group[1], group[2], _price_key(group[3])),
                        ExpectedRow(
                            entry_id,
                            row.description,
                            row.quantity,
                            f"kept on {key} as written while the entry needs attention",
                        ),
                    )
                )
        return found


def _status(remote: RemoteInvoice) -> InvoiceStatus:
    if remote.state is RemoteState.GONE:
        return InvoiceStatus.CANCELLED
    return remote.status or InvoiceStatus.BOOKED


def _shape(rows: Iterable[Row]) -> Counter[tuple[str, Decimal, str | None]]:
    shape: Counter[tuple[str, Decimal, str | None]] = Counter()
    for row in rows:
        if row.article is not None and row.quantity is not None:
            shape[(row.article, row.quantity, row.unit)] += 1
    return shape


def expected_rows(entry: Entry, desired: tuple[Row, ...], invoiced: Invoiced) -> list[Row]:
    """The article rows an entry's current revision bills. Rows already written for this very
    revision keep the price they were written with (a later price in the mappings or the
    register never re-prices an unchanged entry, docs/planning.md), when they bill the same
    article and hours."""
    charges = [r for r in desired if r.article is not None and r.quantity is not None]
    written = [
        r
        for p in invoiced.placements.get(entry.id, ())
        if p.revision == entry.revision and invoiced.status(p.key) is not InvoiceStatus.CANCELLED
        for r in p.rows
        if r.role in (RowRole.CHARGE, RowRole.OVERDRAW) and r.price is not None
    ]
    if written and _shape(written) == _shape(charges):
        return written
    return charges


def _home(entry: Entry, result: EntryResult) -> tuple[str, str]:
    """Where an entry's rows belong: its customer and month, except an entry already invoiced
    whose date moved to another month since (same customer, same billing): the connector
    leaves it on the month it was invoiced in rather than crediting and charging it again."""
    # "already invoiced", also "... (with prepaid hours overdrawn)"
    if result.outcome is Outcome.INVOICED and result.reason.startswith("already invoiced"):
        periods = {k.period for k in result.keys if k.customer_number == entry.customer_number}
        if len(periods) == 1 and len(result.keys) > 0:
            return entry.customer_number, next(iter(periods))
    return entry.customer_number, entry.period


def audit_month(
    *,
    period: str,
    customer: str | None,
    profile: TargetProfile,
    books: Sequence[tuple[InvoiceKey, RemoteInvoice]],
    entries: Sequence[Entry],
    rejected: Sequence[tuple[str, str, str | None, str | None]],
    mappings: Mappings,
    register: dict[str, Decimal | None],
    invoiced: Invoiced,
    the_plan: Plan,
    invoice_attention: dict[str, str],
    limits: Limits | None = None,
    prepaid: Prepaid | None = None,
) -> AuditReport:
    """The comparison itself, pure: the books as read, the ledger's entries, the plan.
    `rejected` is (ref, reason, customer, period) of every malformed entry (customer and
    period as far as they can be read)."""
    report = AuditReport(profile.name, period, customer)
    audit = _Audit(report, profile, invoiced)
    # With CONNECTOR_PREPAID__OVERDRAW=invoice, prepaid hours drawn beyond the balance are
    # billed as ordinary hours (docs/planning.md, Prepaid hours).
    overdrawn = (
        {e: m.overdraw for e, m in overdraws(accounts(entries)).items()}
        if prepaid is not None and prepaid.overdraw == "invoice"
        else {}
    )
    audit.add_books(books)
    results = {r.ref: r for r in the_plan.results}
    planned = {i.key: i for i in the_plan.invoices}
    live_keys = {i.key for i in report.invoices if i.live}
    report.invoice_attention = {
        k: v
        for k, v in invoice_attention.items()
        if audit.in_scope(InvoiceKey.parse(k).customer_number, InvoiceKey.parse(k).period)
    }

    for ref, reason, who, when in rejected:
        # A malformed entry whose month cannot be read may belong to any month: listed always.
        if when is None or audit.in_scope(who, when):
            report.entries.append(
                EntryFinding(ref, who, when, "attention", f"malformed entry: {reason}")
            )

    for entry in sorted(entries, key=lambda e: (e.performed_on, e.id)):
        result = results.get(entry.id)
        if result is None:  # every entry has a result; a missing one is a bug, not a guess
            raise AssertionError(f"the plan has no result for entry {entry.id}")
        outcome, reason, keys = result.outcome, result.reason, result.keys
        blocked = [k for k in keys if k.text in invoice_attention]
        if outcome is Outcome.INVOICED and blocked:
            outcome = Outcome.ATTENTION
            reason = (
                f"its invoice {blocked[0]} needs attention: {invoice_attention[blocked[0].text]}"
            )
        invoices = tuple(k.text for k in keys)
        if outcome is Outcome.ATTENTION:
            kept = audit.kept(entry.id)
            if audit.in_scope(entry.customer_number, entry.period) or kept:
                report.entries.append(
                    EntryFinding(
                        entry.id,
                        entry.customer_number,
                        entry.period,
                        "attention",
                        reason,
                        entry.hours,
                        invoices,
                    )
                )
                for group, kept_row in kept:
                    audit.expect(group, kept_row)
            continue
        home_customer, home_period = _home(entry, result)
        if not audit.in_scope(home_customer, home_period):
            continue
        if outcome is Outcome.EXCLUDED:
            report.entries.append(
                EntryFinding(
                    entry.id,
                    entry.customer_number,
                    home_period,
                    "excluded",
                    reason,
                    entry.hours,
                    invoices,
                )
            )
            continue
        desired = entry_rows(
            entry, mappings, profile, register, limits, overdrawn.get(entry.id, Decimal(0))
        )
        rows = expected_rows(entry, desired, invoiced) if isinstance(desired, tuple) else []
        note = "" if home_period == entry.period else f"invoiced in {home_period}, dated later"
        for row in rows:
            assert row.article is not None
            assert row.quantity is not None
            assert row.price is not None, "with a register every article row has a price"
            group = (home_customer, entry.currency, row.article, _price_key(row.price))
            audit.expect(group, ExpectedRow(entry.id, row.description, row.quantity, note))
        missing = _not_written(entry, keys, planned, live_keys, invoiced, profile)
        report.entries.append(
            EntryFinding(
                entry.id,
                entry.customer_number,
                home_period,
                "not_invoiced" if missing else "invoiced",
                missing or reason,
                entry.hours,
                invoices,
            )
        )
    for invoice in report.invoices:
        if invoice.live and not invoice.known and invoice.key not in report.duplicates:
            report.invoice_attention.setdefault(
                invoice.key,
                f"invoice {invoice.number or invoice.remote_id} is not known to the state "
                "directory (a lost or another state directory, or a copy): its rows are "
                "compared like any other, but a sync stops until `connector state rebuild`",
            )
    report.lines = sorted(
        audit.lines.values(),
        key=lambda line: (line.customer, line.currency, line.article, line.price),
    )
    return report


def _not_written(
    entry: Entry,
    keys: Sequence[InvoiceKey],
    planned: dict[InvoiceKey, Any],
    live_keys: set[str],
    invoiced: Invoiced,
    profile: TargetProfile,
) -> str | None:
    """Why an entry the plan calls invoiced is not (yet) on the books, or None."""
    where = profile.display_name
    for key in keys:
        invoice = planned.get(key)
        if key.text not in live_keys:
            if invoice is not None and invoice.action is Action.CREATE:
                return f"not invoiced yet: the next sync creates invoice {key}"
            return f"its invoice {key} is not a live invoice in {where}"
        known = invoiced.invoices.get(key)
        if invoice is None or invoice.action is Action.UNCHANGED or not known:
            # Unchanged, or an invoice the state does not know (a lost state directory):
            # whether it bills the entry is for the money comparison to say.
            continue
        mine = tuple(r for r in invoice.rows if r.entry_id == entry.id)
        written = next((p.rows for p in invoiced.placements.get(entry.id, ()) if p.key == key), ())
        if mine != tuple(written):
            return f"not invoiced yet: the next sync updates invoice {key} with it"
    return None


# --- the command -----------------------------------------------------------------------------


def _rejected_where(store: StateStore, ref: str) -> tuple[str | None, str | None]:
    """Customer and month of a malformed entry, as far as its raw form tells."""
    raw = store.raw_entry(ref)
    if not isinstance(raw, dict):
        return None, None
    customer = raw.get("customer_number")
    performed = raw.get("performed_on")
    period = performed[:7] if isinstance(performed, str) and len(performed) >= 7 else None
    if period is not None and not (period[:4].isdigit() and period[5:7].isdigit()):
        period = None
    return (customer if isinstance(customer, str) else None), period


def run_audit(
    settings: Settings,
    period: str,
    customer: str | None = None,
    *,
    ledger: LedgerClient | None = None,
    target: Target | None = None,
) -> AuditReport:
    """`connector audit`: pull the ledger, read the month's invoices, compare. Reads only."""
    from connector.sync import (
        bind_ledger,
        bind_system,
        bind_target,
        load_entries,
        opened,
        pull,
        require_known_customer,
    )

    limits = settings.limits.limits()
    with opened(settings, ledger=ledger, target=target) as (run, mappings):
        ledger, target, store = run.ledger, run.target, run.store
        profile = target.profile
        name = profile.name
        bind_ledger(store, settings, record=False)
        bind_system(store, name, record=False)
        bind_target(store, target, record=False)
        run_id = store.start_run("audit", name)
        try:
            pull(store, ledger)
            require_known_customer(store, name, customer)
            books = read_books(target, period, customer)
            register = target.article_prices()
            entries, rejected = load_entries(store)
            invoiced = _with_remote_statuses(store.invoiced(name), books)
            prepaid = settings.prepaid.policy()
            the_plan = plan(
                entries, mappings, profile, invoiced, rejected, register, limits, prepaid
            )
            attention = _invoice_attention(store, name, the_plan, books, target, period, customer)
            report = audit_month(
                period=period,
                customer=customer,
                profile=profile,
                books=books,
                entries=entries,
                rejected=[(ref, why, *_rejected_where(store, ref)) for ref, why in rejected],
                mappings=mappings,
                register=register,
                invoiced=invoiced,
                the_plan=the_plan,
                invoice_attention=attention,
                limits=limits,
                prepaid=prepaid,
            )
            report.requests = target.stats.requests
            report.checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        except ConnectorError as exc:
            store.finish_run(run_id, exc.exit_code, {"period": period, "error": str(exc)})
            raise
        document = report.to_json()
        store.finish_run(
            run_id,
            report.exit_code,
            {"period": period, "customer": customer, **document["counts"]},
        )
    log.info("audit.done", period=period, agrees=report.agrees, **document["counts"])
    return report


def _with_remote_statuses(
    invoiced: Invoiced, books: Sequence[tuple[InvoiceKey, RemoteInvoice]]
) -> Invoiced:
    """The state's invoices with the statuses just read (an invoice booked or cancelled since
    the last sync), for this audit only: nothing is stored."""
    invoices: dict[InvoiceKey, KnownInvoice] = dict(invoiced.invoices)
    for key, remote in books:
        known = invoices.get(key)
        if known is None or known.remote_id != remote.remote_id:
            continue
        status = None if remote.state is RemoteState.OPEN else _status(remote)
        if status is not None and not known.status.closed:
            invoices[key] = KnownInvoice(
                key, status, known.currency, known.remote_id, known.digest,
                remote.number or known.display_number,
            )  # fmt: skip
    # Everything else as the state has it (holds, re-invoicing decisions).
    return replace(invoiced, invoices=invoices)


def _invoice_attention(
    store: StateStore,
    name: str,
    the_plan: Plan,
    books: Sequence[tuple[InvoiceKey, RemoteInvoice]],
    target: Target,
    period: str,
    customer: str | None,
) -> dict[str, str]:
    """Invoices needing attention: as the last sync left them, and a create the accounting
    system would refuse now (a customer it does not have), asked by a read."""
    found: dict[str, str] = {}
    # A locked invoice (a person changed it) stays on the attention list, but what it bills is
    # invoiced: its entries are not held back.
    locked = {r.key.text for r in store.invoice_records(name) if r.status is InvoiceStatus.LOCKED}
    for item in store.attention(name):
        with contextlib.suppress(ValueError):
            InvoiceKey.parse(item["ref"])
            if item["ref"] not in locked:
                found[item["ref"]] = item["reason"]
    there = {key.text for key, remote in books if remote.live}
    for invoice in the_plan.invoices:
        key = invoice.key
        if key.period != period or (customer is not None and key.customer_number != customer):
            continue
        if invoice.action is Action.CREATE and key.text not in there and invoice.rows:
            reason = target.precheck(invoice)
            if reason is not None:
                found[key.text] = reason
    return found


# --- output ----------------------------------------------------------------------------------


def _num(value: Decimal) -> str:
    """Amounts for a person: 2 decimals at least, space between thousands."""
    shown = value.quantize(CENT) if value == value.quantize(CENT) else value
    return f"{shown:,}".replace(",", " ")


def _hours(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def audit_text(doc: dict[str, Any], width: int = 120) -> str:
    """The audit for a person: the verdict first, then each list as a table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, emoji=False)
    c = doc["counts"]
    where = f" customer {doc['filter']['customer']}," if doc["filter"]["customer"] else ""
    verdict = (
        "AGREES: the invoices bill exactly what the ledger says"
        if doc["agrees"]
        else "DOES NOT AGREE with the ledger: see below"
    )
    console.print(f"Audit of {doc['period']},{where} {doc['target_name']}: {verdict}", markup=False)
    if doc.get("checked_at"):
        console.print(f"Invoices read at {doc['checked_at']}.", markup=False)
    console.print(
        f"{c['live_invoices']} live invoice(s) of {c['invoices']} found; {c['entries']} ledger "
        f"entries: {c['invoiced']} invoiced, {c['excluded']} excluded, {c['attention']} need "
        f"attention, {c['not_invoiced']} not invoiced; {c['differences']} difference(s), "
        f"{c['duplicates']} duplicate key(s).",
        markup=False,
    )

    def table(title: str, *columns: tuple[str, str]) -> Table:
        # The title is printed on its own line: a table's own title wraps to its width.
        console.print("")
        console.print(title, markup=False)
        t = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for number, (header, justify) in enumerate(columns, start=1):
            # Figures, keys and numbers never wrap; the last column (a reason, a list) folds.
            last = number == len(columns)
            t.add_column(
                header,
                justify=justify,  # type: ignore[arg-type]
                no_wrap=not last,
                min_width=None if last else len(header),
                overflow="fold",
            )
        return t

    totals = table(
        "Totals excl. VAT",
        ("currency", "left"), ("invoiced", "right"), ("expected", "right"),
        ("difference", "right"),
    )  # fmt: skip
    for currency, t in doc["totals"].items():
        totals.add_row(
            currency,
            _num(Decimal(t["invoiced"])),
            _num(Decimal(t["expected"])),
            _num(Decimal(t["difference"])),
        )
    if doc["totals"]:
        console.print(totals)
    if doc["customers"]:
        per = table(
            "Per customer, excl. VAT",
            ("customer", "left"), ("invoices", "left"), ("invoiced", "right"),
            ("expected", "right"), ("difference", "right"), ("currency", "left"),
        )  # fmt: skip
        for row in doc["customers"]:
            per.add_row(
                row["customer_number"],
                ", ".join(row["invoices"]) or "-",
                _num(Decimal(row["invoiced"])),
                _num(Decimal(row["expected"])),
                _num(Decimal(row["difference"])),
                row["currency"],
            )
        console.print(per)
    if doc["differences"]:
        diffs = table(
            f"Differences ({len(doc['differences'])}): invoiced minus what the ledger says",
            ("customer", "left"), ("article", "left"), ("price", "right"),
            ("h invoiced", "right"), ("h expected", "right"), ("h diff.", "right"),
            ("amount diff.", "right"), ("currency", "left"),
        )  # fmt: skip
        located: list[str] = []
        for d in doc["differences"]:
            diffs.add_row(
                d["customer_number"],
                d["article"],
                _num(Decimal(d["price"])),
                _hours(Decimal(d["hours_invoiced"])),
                _hours(Decimal(d["hours_expected"])),
                _hours(Decimal(d["hours_difference"])),
                _num(Decimal(d["amount_difference"])),
                d["currency"],
            )
            invoices = ", ".join(sorted({r["invoice"] for r in d["invoice_rows"]})) or "none"
            entries = ", ".join(sorted({e["entry_id"] for e in d["ledger_entries"]})) or "none"
            located.append(
                f"  {d['customer_number']} {d['article']} at {_num(Decimal(d['price']))}: "
                f"invoices {invoices}; ledger entries {entries}"
            )
        console.print(diffs)
        for line in located:
            console.print(line, markup=False)
    if doc["duplicates"]:
        dups = table(
            "Keys on more than one live invoice (withdraw all but one)",
            ("key", "left"), ("invoices", "left"),
        )  # fmt: skip
        for d in doc["duplicates"]:
            dups.add_row(d["key"], ", ".join(d["invoices"]))
        console.print(dups)
    if doc["problems"]:
        console.print("Invoices that cannot be proved:", markup=False)
        for p in doc["problems"]:
            console.print(f"    {p}", markup=False)
    for key, title in (
        ("not_invoiced", "Entries the ledger bills that are not on the invoices"),
        ("attention", "Entries needing attention (not a difference by themselves)"),
    ):
        if doc[key]:
            t = table(
                f"{title} ({len(doc[key])})",
                ("entry", "left"), ("customer", "left"), ("hours", "right"), ("reason", "left"),
            )  # fmt: skip
            for e in doc[key]:
                hours = _hours(Decimal(e["hours"])) if e["hours"] is not None else "-"
                t.add_row(e["ref"], e["customer_number"] or "-", hours, e["reason"])
            console.print(t)
    if doc["invoice_attention"]:
        t = table("Invoices needing attention", ("key", "left"), ("reason", "left"))
        for i in doc["invoice_attention"]:
            t.add_row(i["key"], i["reason"])
        console.print(t)
    if doc["excluded"]:
        reasons: dict[str, list[Decimal]] = defaultdict(list)
        for e in doc["excluded"]:
            reasons[e["reason"]].append(Decimal(e["hours"] or 0))
        t = table(
            f"Excluded on purpose ({len(doc['excluded'])} entries)",
            ("entries", "right"), ("hours", "right"), ("reason", "left"),
        )  # fmt: skip
        for why, spent in sorted(reasons.items()):
            t.add_row(str(len(spent)), _hours(sum(spent, Decimal(0))), why)
        console.print(t)
    return buffer.getvalue().rstrip()
