"""`connector report`: what was invoiced for a month, per customer, for finance to reconcile.

Read from the state directory alone (no network): the invoices the connector recorded for the
month (number, state, hours per category, amounts excluding VAT, as the connector wrote them),
and, from the plan made from the ledger as last pulled, the hours of the month that are not on
an invoice, by reason (included in the monthly fee, drawn from prepaid hours, needing
attention...). `connector audit` is the check against the accounting system itself.

Three formats: a table for a person, JSON for programs, and CSV for Excel. The CSV is the
dialect a Swedish Excel opens by double-click: UTF-8 with a byte-order mark, `;` between
fields, a decimal comma, no thousands separator, ISO dates.
"""

from __future__ import annotations

import calendar
import contextlib
import csv
import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector import targets
from connector.errors import ConfigError
from connector.ledger import Entry, Kind, Status
from connector.mappings import load_mappings
from connector.planning import (
    INVOICE_ROLES,
    Action,
    EntryResult,
    InvoiceKey,
    InvoiceStatus,
    Outcome,
    Placement,
    Plan,
    RowRole,
    clean,
)
from connector.prepaid import accounts, overdraws
from connector.settings import Settings
from connector.state import DB_NAME, InvoiceRecord, StateStore

FORMATS = ("table", "csv", "json")

# The reasons hours are not invoiced, as finance reads them; each entry's hours go to one.
FEE = "included in the monthly fee"
PREPAID = "drawn from prepaid hours"
ATTENTION = "needs attention"
WITHDRAWN = "on an invoice withdrawn by a person"
PENDING = "not yet sent: the next sync invoices it"
VOID = "void in the ledger"
ROUNDED = "rounded away"

# What a person calls each recorded status.
STATE_WORDS = {
    InvoiceStatus.OPEN: "draft",
    InvoiceStatus.BOOKED: "booked",
    InvoiceStatus.SENT: "sent",
    InvoiceStatus.LOCKED: "edited by a person",
    InvoiceStatus.CANCELLED: "withdrawn",
}

CSV_COLUMNS = (
    "period_start",
    "period_end",
    "customer",
    "kind",
    "invoice_key",
    "invoice_number",
    "state",
    "category",
    "hours",
    "amount_excl_vat",
    "currency",
    "last_written",
    "reason",
)


@dataclass
class InvoiceLine:
    """One invoice of the month as the connector recorded it."""

    key: InvoiceKey
    number: str | None
    status: InvoiceStatus
    currency: str
    last_written: str | None  # ISO date
    hours: dict[str, Decimal] = field(default_factory=dict)  # category -> hours
    amounts: dict[str, Decimal] = field(default_factory=dict)  # category -> amount excl. VAT

    @property
    def live(self) -> bool:
        return self.status is not InvoiceStatus.CANCELLED

    @property
    def total(self) -> Decimal:
        return sum(self.amounts.values(), Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key.text,
            "number": self.number,
            "state": STATE_WORDS[self.status],
            "status": self.status.value,
            "counts": self.live,
            "currency": self.currency,
            "last_written": self.last_written,
            "hours": {c: str(h) for c, h in sorted(self.hours.items())},
            "amounts_excl_vat": {c: str(two_places(a)) for c, a in sorted(self.amounts.items())},
            "total_excl_vat": str(two_places(self.total)),
        }


@dataclass
class MonthReport:
    target: str
    period: str
    invoices: list[InvoiceLine] = field(default_factory=list)
    # (customer, reason, category) -> hours, and the entries behind them
    not_invoiced: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    not_invoiced_entries: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    # Entries needing attention: ref -> reason, for the reader to act on.
    attention: dict[str, str] = field(default_factory=dict)

    @property
    def first_day(self) -> date:
        year, month = (int(p) for p in self.period.split("-"))
        return date(year, month, 1)

    @property
    def last_day(self) -> date:
        first = self.first_day
        return date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])

    def customers(self) -> list[str]:
        found = {i.key.customer_number for i in self.invoices}
        found |= {customer for customer, _, _ in self.not_invoiced}
        return sorted(found)

    def totals(self) -> dict[str, str]:
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for invoice in self.invoices:
            if invoice.live:
                sums[invoice.currency] += invoice.total
        return {currency: str(two_places(total)) for currency, total in sorted(sums.items())}

    def to_json(self) -> dict[str, Any]:
        customers = []
        for customer in self.customers():
            invoices = [i for i in self.invoices if i.key.customer_number == customer]
            hours: dict[str, Decimal] = defaultdict(Decimal)
            for invoice in invoices:
                if invoice.live:
                    for category, spent in invoice.hours.items():
                        hours[category] += spent
            customers.append(
                {
                    "customer_number": customer,
                    "invoices": [i.to_json() for i in invoices],
                    "hours_invoiced": {c: str(h) for c, h in sorted(hours.items())},
                    "not_invoiced": [
                        {
                            "reason": reason,
                            "category": category,
                            "hours": str(spent),
                            "entries": self.not_invoiced_entries[(who, reason, category)],
                        }
                        for (who, reason, category), spent in sorted(self.not_invoiced.items())
                        if who == customer
                    ],
                }
            )
        by_reason: dict[str, Decimal] = defaultdict(Decimal)
        for (_, reason, _), spent in self.not_invoiced.items():
            by_reason[reason] += spent
        return {
            "target": self.target,
            "target_name": targets.profile(self.target).display_name,
            "period": self.period,
            "source": "state directory and the plan from the ledger as last pulled (no network)",
            "customers": customers,
            "totals_excl_vat": self.totals(),
            "hours_not_invoiced": {r: str(h) for r, h in sorted(by_reason.items())},
            "attention": [
                {"ref": ref, "reason": clean(reason)}
                for ref, reason in sorted(self.attention.items())
            ],
        }


# --- building it ---------------------------------------------------------------------------


def _reason(
    entry: Entry, result: EntryResult, pending: bool, overdrawn: Decimal = Decimal(0)
) -> list[tuple[str, Decimal]]:
    """The entry's hours that are not invoiced, by reason (an entry may have two: prepaid
    hours drawn and the rest in the fee, say). `overdrawn`: prepaid hours drawn beyond the
    balance and invoiced as ordinary hours (CONNECTOR_PREPAID__OVERDRAW=invoice)."""
    hours = entry.hours
    if result.outcome is Outcome.ATTENTION:
        return [(ATTENTION, hours)]
    if entry.status is Status.VOID:
        return [(VOID, hours)] if result.outcome is Outcome.EXCLUDED else []
    found: list[tuple[str, Decimal]] = []
    prepaid = min(entry.prepaid_hours, hours) if entry.kind is Kind.DEBIT else Decimal(0)
    if prepaid - overdrawn > 0:
        found.append((PREPAID, prepaid - overdrawn))
    rest = hours - prepaid
    if result.outcome is Outcome.EXCLUDED:
        if result.reason.startswith("included in the monthly fee"):
            found.append((FEE, rest))
        elif " was " in result.reason and "its invoice" in result.reason:
            found.append((WITHDRAWN, rest))
        elif rest > 0 and result.reason != "fully covered by prepaid hours":
            found.append((f"{ROUNDED}: {result.reason}", rest))
    elif pending and rest > 0:
        found.append((PENDING, rest))
    return [(reason, spent) for reason, spent in found if spent]


def build_report(
    period: str,
    target: str,
    records: Iterable[InvoiceRecord],
    placements: dict[str, list[Placement]],
    entries: Iterable[Entry],
    the_plan: Plan,
    rejected_refs: dict[str, str],
    invoice_attention: dict[str, str] | None = None,
    overdrawn: dict[str, Decimal] | None = None,
) -> MonthReport:
    """The month's report, pure: the state's invoice records and placements, the entries of
    the mirror, and the plan made from them."""
    report = MonthReport(target, period)
    categories = {e.id: e.category for e in entries}
    by_key: dict[InvoiceKey, InvoiceLine] = {}
    for record in records:
        key = record.key
        if key.period != period or not record.remote_id:
            continue  # another month, or never created in the accounting system
        currency = (record.written.currency if record.written else None) or "SEK"
        line = InvoiceLine(
            key,
            record.display_number,
            record.status,
            currency,
            record.updated_at[:10] if record.updated_at else None,
        )
        by_key[key] = line
        report.invoices.append(line)
    for entry_id, chain in placements.items():
        for placement in chain:
            on = by_key.get(placement.key)
            if on is None:
                continue
            category = categories.get(entry_id, "unknown")
            for row in placement.rows:
                if row.role is RowRole.HEADER or row.article is None or row.quantity is None:
                    continue
                on.hours[category] = on.hours.get(category, Decimal(0)) + row.quantity
                amount = row.amount or Decimal(0)
                on.amounts[category] = on.amounts.get(category, Decimal(0)) + amount
    report.invoices.sort(key=lambda i: i.key)

    results = {r.ref: r for r in the_plan.results}
    # Per invoice the next sync would write: each entry's rows as planned, to compare with
    # what is recorded (another entry's change does not make this one pending).
    changing: dict[InvoiceKey, dict[str, tuple[Any, ...]]] = {}
    for invoice in the_plan.invoices:
        if invoice.action is Action.UNCHANGED:
            continue
        mine: dict[str, list[Any]] = defaultdict(list)
        for row in invoice.rows:
            if row.role not in INVOICE_ROLES:  # the header, the balance row: no entry's
                mine[row.entry_id].append(row)
        changing[invoice.key] = {e: tuple(rows) for e, rows in mine.items()}

    def pending_on(entry_id: str, key: InvoiceKey) -> bool:
        planned = changing.get(key, {}).get(entry_id)
        if planned is None:
            return False
        written = next((p.rows for p in placements.get(entry_id, ()) if p.key == key), ())
        return planned != tuple(written)

    for entry in entries:
        if entry.period != period:
            continue
        result = results.get(entry.id)
        if result is None:
            continue
        blocked = [k for k in result.keys if k.text in (invoice_attention or {})]
        if result.outcome is Outcome.INVOICED and blocked:
            # Its invoice was refused or held back at the last sync (a customer missing
            # in the accounting system, say): not on any invoice, for that reason.
            assert invoice_attention is not None
            reason = invoice_attention[blocked[0].text]
            result = replace(
                result,
                outcome=Outcome.ATTENTION,
                reason=f"its invoice {blocked[0]} needs attention: {reason}",
            )
        pending = result.outcome is Outcome.INVOICED and any(
            pending_on(entry.id, k) for k in result.keys
        )
        if result.outcome is Outcome.ATTENTION:
            report.attention[entry.id] = result.reason
        for reason, spent in _reason(
            entry, result, pending, (overdrawn or {}).get(entry.id, Decimal(0))
        ):
            group = (entry.customer_number, reason, entry.category)
            report.not_invoiced[group] = report.not_invoiced.get(group, Decimal(0)) + spent
            report.not_invoiced_entries.setdefault(group, []).append(entry.id)
    for ref, reason in rejected_refs.items():
        report.attention[ref] = f"malformed entry: {reason}"
    return report


def run_report(settings: Settings, period: str) -> MonthReport:
    """`connector report`: the month from the state directory; asks no remote system."""
    from connector.sync import bind_system, current_plan, load_entries

    if not (settings.state_dir / DB_NAME).is_file():
        raise ConfigError(
            f"no state directory at {settings.state_dir} (CONNECTOR_STATE_DIR): run connector "
            "sync first, or point CONNECTOR_STATE_DIR at the connector's state"
        )
    mappings = load_mappings(settings.mappings_dir)
    profile = targets.profile(settings.target)
    store = StateStore(settings.state_dir)
    try:
        bind_system(store, profile.name, record=False)
        entries, rejected = load_entries(store)
        the_plan = current_plan(
            store, mappings, profile, settings.limits.limits(), settings.prepaid.policy()
        )
        invoiced = store.invoiced(profile.name)
        records = store.invoice_records(profile.name)
        # Invoices the last sync could not send, and why (entries are listed by their own
        # reasons in the plan).
        refused = {}
        # A locked invoice (a person changed it) stays on the attention list, but what it
        # bills is invoiced: only the others held their entries back.
        locked = {r.key.text for r in records if r.status is InvoiceStatus.LOCKED}
        for item in store.attention(profile.name):
            with contextlib.suppress(ValueError):
                InvoiceKey.parse(item["ref"])
                if item["ref"] not in locked:
                    refused[item["ref"]] = item["reason"]
        in_month = {}
        for ref, reason in rejected:
            raw = store.raw_entry(ref)
            performed = raw.get("performed_on") if isinstance(raw, dict) else None
            if isinstance(performed, str) and performed.startswith(period):
                in_month[ref] = reason
    finally:
        store.close()
    placements = {e: list(chain) for e, chain in invoiced.placements.items()}
    # Overdrawn prepaid hours the settings invoice are invoiced hours, not prepaid ones.
    overdrawn = (
        {e: m.overdraw for e, m in overdraws(accounts(entries)).items()}
        if settings.prepaid.overdraw == "invoice"
        else {}
    )
    return build_report(
        period, profile.name, records, placements, entries, the_plan, in_month, refused, overdrawn
    )


# --- output --------------------------------------------------------------------------------


def two_places(value: Decimal) -> Decimal:
    """2 decimals when nothing is lost (0.25 x 995.00 = 248.7500 is 248.75); else exact."""
    quantized = value.quantize(Decimal("0.01"))
    return quantized if quantized == value else value


def excel_number(value: Decimal) -> str:
    """A number as a Swedish Excel reads it: decimal comma, no thousands separator."""
    return format(value, "f").replace(".", ",")


def report_csv(report: MonthReport) -> str:
    """The CSV text, byte-order mark first (so Excel reads it as UTF-8)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    start, end = report.first_day.isoformat(), report.last_day.isoformat()
    for invoice in report.invoices:
        kind = "invoiced" if invoice.live else "withdrawn"
        categories = sorted(invoice.hours) or [""]
        for category in categories:
            writer.writerow(
                [
                    start,
                    end,
                    invoice.key.customer_number,
                    kind,
                    invoice.key.text,
                    invoice.number or "",
                    STATE_WORDS[invoice.status],
                    category,
                    excel_number(invoice.hours.get(category, Decimal(0))),
                    excel_number(two_places(invoice.amounts.get(category, Decimal(0)))),
                    invoice.currency,
                    invoice.last_written or "",
                    "",
                ]
            )
    for (customer, reason, category), spent in sorted(report.not_invoiced.items()):
        writer.writerow(
            [start, end, customer, "not invoiced", "", "", "", category, excel_number(spent),
             "", "", "", reason]
        )  # fmt: skip
    return "\ufeff" + out.getvalue()


def _num(value: Decimal) -> str:
    return f"{value:,.2f}".replace(",", " ")


def _hours(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _column(table: Any, header: str, justify: str) -> None:
    # Keys, numbers and figures never wrap; a long reason folds.
    wraps = header == "reason"
    table.add_column(
        header,
        justify=justify,
        no_wrap=not wraps,
        min_width=None if wraps else len(header),
        overflow="fold",
    )


def report_text(doc: dict[str, Any], width: int = 120) -> str:
    """The report for a person: invoices per customer, then the hours not invoiced."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, emoji=False)
    console.print(
        f"Invoiced for {doc['period']} in {doc['target_name']}, as the connector recorded it "
        "(connector audit checks it against the accounting system)",
        markup=False,
    )
    invoices = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for header, justify in (
        ("customer", "left"), ("invoice", "left"), ("number", "left"), ("state", "left"),
        ("category", "left"), ("hours", "right"), ("amount excl. VAT", "right"),
        ("currency", "left"),
    ):  # fmt: skip
        _column(invoices, header, justify)
    for customer in doc["customers"]:
        for invoice in customer["invoices"]:
            first = True
            for category, spent in invoice["hours"].items() or [("", "0")]:
                invoices.add_row(
                    customer["customer_number"] if first else "",
                    invoice["key"] if first else "",
                    (invoice["number"] or "-") if first else "",
                    invoice["state"] if first else "",
                    category,
                    _hours(Decimal(spent)),
                    _num(Decimal(invoice["amounts_excl_vat"].get(category, "0"))),
                    invoice["currency"],
                )
                first = False
    console.print(invoices)
    for currency, total in doc["totals_excl_vat"].items():
        console.print(f"Total invoiced excl. VAT: {_num(Decimal(total))} {currency}", markup=False)
    rows = [
        (customer["customer_number"], item)
        for customer in doc["customers"]
        for item in customer["not_invoiced"]
    ]
    if rows:
        console.print("")
        console.print("Hours not invoiced, by reason", markup=False)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for header, justify in (
            ("customer", "left"), ("reason", "left"), ("category", "left"), ("hours", "right"),
            ("entries", "right"),
        ):  # fmt: skip
            _column(table, header, justify)
        for customer, item in rows:
            table.add_row(
                customer,
                item["reason"],
                item["category"],
                _hours(Decimal(item["hours"])),
                str(len(item["entries"])),
            )
        console.print(table)
        for reason, spent in doc["hours_not_invoiced"].items():
            console.print(f"  {reason}: {_hours(Decimal(spent))} h", markup=False)
    if doc["attention"]:
        console.print("")
        console.print(f"Entries needing attention ({len(doc['attention'])}):", markup=False)
        for item in doc["attention"]:
            console.print(f"  {item['ref']}: {item['reason']}", markup=False)
    return buffer.getvalue().rstrip()


def render(report: MonthReport, fmt: str, width: int = 120) -> str:
    if fmt == "csv":
        return report_csv(report)
    import json

    doc = report.to_json()
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    return report_text(doc, width) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` so that a reader sees the old file or the new one, never
    half of it; never over a directory."""
    if path.is_dir():
        raise ConfigError(f"--output {path} is a directory: give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--output {path}: the folder {folder} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp makes the file private; a report is an ordinary file (the umask decides).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
