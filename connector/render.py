"""Turning results into text for people and JSON for programs. No decisions here."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connector import targets
from connector.errors import ConfigError
from connector.planning import InvoiceKey, Outcome, Plan, PlannedInvoice, PlanView, Row, clean

if TYPE_CHECKING:  # types only: render imports no orchestration
    from connector.resync import ResyncReport


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def row_json(row: Row) -> dict[str, Any]:
    return {
        "entry_id": row.entry_id,
        "type": "text" if row.is_text else "article",
        "role": row.role.value,
        "article": row.article,
        "description": row.description,
        "quantity": _dec(row.quantity),
        "unit": row.unit,
        "price": _dec(row.price),
        "amount": _dec(row.amount),
    }


def invoice_json(invoice: PlannedInvoice, blocked: str | None = None) -> dict[str, Any]:
    """`blocked`: why the sync would not send it (a refusal a dry run met), if so."""
    return {
        "key": invoice.key.text,
        "customer_number": invoice.key.customer_number,
        "period": invoice.key.period,
        "supplements": invoice.supplements.text if invoice.supplements else None,
        "action": "blocked" if blocked is not None else invoice.action.value,
        "blocked_by": blocked,
        "remote_id": invoice.remote_id,
        "number": invoice.display_number,
        "currency": invoice.currency,
        "total": str(invoice.total),
        "unpriced_rows": invoice.unpriced_rows,
        "rows": [row_json(r) for r in invoice.rows],
    }


@dataclass(frozen=True)
class Items:
    """A list in a document whose items are made as they are read: a plan's invoices and entry
    outcomes run to tens of thousands, and `write_json` writes them one by one instead of
    holding them all (as dicts, then as one string) at once. Read as often as needed."""

    count: int
    make: Callable[[], Iterator[Any]]

    def __iter__(self) -> Iterator[Any]:
        return self.make()

    def __len__(self) -> int:
        return self.count


def whole(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document with every `Items` made into its list."""
    return {k: list(v) if isinstance(v, Items) else v for k, v in document.items()}


def write_json(document: Mapping[str, Any], write: Callable[[str], object]) -> None:
    """Write `document` and a newline: the same text as `json.dumps(whole(document),
    ensure_ascii=False, indent=2)`, but an `Items` value is written item by item."""

    def dumped(value: Any, depth: int) -> str:
        # Strings escape their line breaks, so every line break here is indentation.
        text = json.dumps(value, ensure_ascii=False, indent=2)
        return text.replace("\n", "\n" + "  " * depth)

    if not document:
        write("{}\n")
        return
    separator = "{"
    for key, value in document.items():
        write(f"{separator}\n  {json.dumps(key, ensure_ascii=False)}: ")
        separator = ","
        if not isinstance(value, Items):
            write(dumped(value, 1))
            continue
        opening = "["
        for item in value:
            write(f"{opening}\n    {dumped(item, 2)}")
            opening = ","
        write("[]" if opening == "[" else "\n  ]")
    write("\n}\n")


def _made(items: list[Any], render: Callable[[Any], Any]) -> Items:
    return Items(len(items), lambda: map(render, items))


def plan_json(
    view: PlanView | Plan, *, period: str | None = None, customer: str | None = None
) -> dict[str, Any]:
    """One JSON document for a plan, complete whatever its size; filters narrow every list."""
    return whole(plan_document(view, period=period, customer=customer))


def plan_document(
    view: PlanView | Plan, *, period: str | None = None, customer: str | None = None
) -> dict[str, Any]:
    """`plan_json`'s document with its long lists (invoices, excluded and attention entries)
    as `Items`, made when read: for `write_json` and for a summary on a terminal."""
    if isinstance(view, Plan):
        view = PlanView(view, checked=False)
    plan = view.plan
    invoices = [
        i for i in plan.invoices if _keep(i.key.period, i.key.customer_number, period, customer)
    ]
    results = [r for r in plan.results if _keep(r.period, r.customer_number, period, customer)]
    refused = []
    for text, reason in sorted(view.invoice_attention.items()):
        key = InvoiceKey.parse(text)
        if _keep(key.period, key.customer_number, period, customer):
            refused.append({"key": text, "reason": clean(reason)})

    def listed(outcome: Outcome) -> Items:
        return _made(
            [r for r in results if r.outcome is outcome],
            lambda r: {
                "ref": r.ref,
                "customer_number": r.customer_number,
                "period": r.period,
                "reason": clean(r.reason),
                "invoices": [k.text for k in r.keys],
            },
        )

    def totals(chosen: list[PlannedInvoice]) -> dict[str, str]:
        sums: dict[str, Decimal] = {}
        for invoice in chosen:
            sums[invoice.currency] = sums.get(invoice.currency, Decimal(0)) + invoice.total
        return {currency: str(total) for currency, total in sorted(sums.items())}

    # Invoices a checked plan found would be refused: shown, but not counted as changes.
    blocked = {
        i.key: clean(view.invoice_attention[i.key.text])
        for i in invoices
        if view.checked and i.action.value != "unchanged" and i.key.text in view.invoice_attention
    }
    changes = [i for i in invoices if i.action.value != "unchanged" and i.key not in blocked]
    counts = Counter(r.outcome.value for r in results)
    return {
        "target": plan.target,
        "target_name": _system(plan.target),
        "checked_against_target": view.checked,
        "filter": {"period": period, "customer": customer},
        "invoices": _made(invoices, lambda i: invoice_json(i, blocked.get(i.key))),
        "invoice_attention": refused,
        "excluded": listed(Outcome.EXCLUDED),
        "attention": listed(Outcome.ATTENTION),
        "notes": [clean(n) for n in view.notes],
        "totals": {"all": totals(invoices), "changes": totals(changes)},
        "counts": {
            "invoices": len(invoices),
            "changes": len(changes),
            "blocked": len(blocked),
            "entries": len(results),
            **{o.value: counts.get(o.value, 0) for o in Outcome},
            "invoices_need_attention": len(refused),
        },
    }


def _system(name: str) -> str:
    """A target's display name (Visma eAccounting), or the name itself if unknown."""
    try:
        return targets.profile(name).display_name
    except ConfigError:
        return name


def _keep(
    row_period: str | None, row_customer: str | None, period: str | None, customer: str | None
) -> bool:
    # Entries without a usable customer or period (malformed) are shown only without filters.
    if period is not None and row_period != period:
        return False
    return customer is None or row_customer == customer


def _num(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}".replace(",", " ")


_ACTION = {"create": "create", "update": "update", "unchanged": "unchanged"}


# On a terminal a plan of more invoices than this is summarised: nobody reads ten thousand
# invoices scrolling past. `--json`, and the text sent to a pipe or a file, keep everything.
SUMMARY_ABOVE = 50
SUMMARY_SHOWN = 20  # invoices and entries listed in a summary, each kind
_EVERYTHING = "connector plan --json lists everything, as does connector plan | less"


def plan_text(doc: Mapping[str, Any], *, terminal: bool = False) -> str:
    """Human-readable plan from `plan_json`'s (or `plan_document`'s) document. On a terminal,
    a plan above SUMMARY_ABOVE invoices is summarised: invoices per action, the first changes,
    totals, and the first of each kind of attention."""
    lines: list[str] = []
    c = doc["counts"]
    if not doc["checked_against_target"]:
        lines.append(
            f"Not checked against {doc['target_name']} (its credentials are not set): remote "
            "statuses are unknown, and rows priced by the article register show no price."
        )
    lines.append(
        f"Plan for {doc['target_name']}: {c['invoices']} invoice(s), "
        f"{c['changes']} to create or change"
        + (f" ({c['blocked']} more blocked, below)" if c.get("blocked") else "")
        + "; "
        f"{c['entries']} entries: {c['invoiced']} invoiced, {c['excluded']} excluded, "
        f"{c['attention']} need attention; {c['invoices_need_attention']} invoice(s) need "
        "attention"
    )
    summarise = terminal and c["invoices"] > SUMMARY_ABOVE
    heading = f"    {'article':<12} {'quantity':>8} {'price':>10} {'amount':>12}  text"
    for inv in () if summarise else doc["invoices"]:
        lines.append("")
        extra = f", supplements {inv['supplements']}" if inv["supplements"] else ""
        number = f" (#{inv['number']})" if inv.get("number") else ""
        action = "cancel (nothing left to bill)" if not inv["rows"] else inv["action"]
        if inv.get("blocked_by"):
            action = "blocked: would be refused, see below"
        lines.append(
            f"{inv['key']}{number}  [{action}]  customer {inv['customer_number']}, "
            f"{inv['period']}{extra}"
        )
        if inv["rows"]:
            lines.append(heading)
        for row in inv["rows"]:
            if row["type"] == "text":
                lines.append(f"    {'':<12} {'':>8} {'':>10} {'':>12}  {row['description']}")
                continue
            qty = Decimal(row["quantity"])
            price = _num(Decimal(row["price"])) if row["price"] is not None else "(register)"
            amount = _num(Decimal(row["amount"])) if row["amount"] is not None else "-"
            lines.append(
                f"    {row['article']:<12} {qty:>8} {price:>10} {amount:>12}  {row['description']}"
            )
        unpriced = (
            f" + {inv['unpriced_rows']} row(s) priced by the article register"
            if inv["unpriced_rows"]
            else ""
        )
        lines.append(
            f"    total excl. VAT: {_num(Decimal(inv['total']))} {inv['currency']}{unpriced}"
        )
    if summarise:
        lines.extend(_changes_summary(doc["invoices"]))
    if doc["invoices"]:
        lines.append("")
        for label, key in (
            ("Total excl. VAT", "all"),
            ("  of which to create or change", "changes"),
        ):
            for currency, total in doc["totals"][key].items():
                lines.append(f"{label}: {_num(Decimal(total))} {currency}")
    if doc["invoice_attention"]:
        lines.append("")
        lines.append(f"Invoices that need attention ({len(doc['invoice_attention'])}):")
        refused = (f"    {r['key']}: {r['reason']}" for r in doc["invoice_attention"])
        lines.extend(_first(refused, len(doc["invoice_attention"]), summarise))
    if doc["attention"]:
        lines.append("")
        lines.append(f"Entries that need attention ({len(doc['attention'])}):")
        entries = (f"    {r['ref']}: {r['reason']}" for r in doc["attention"])
        lines.extend(_first(entries, len(doc["attention"]), summarise))
    if doc["notes"]:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"    {n}" for n in doc["notes"])
    if doc["excluded"]:
        reasons = Counter(r["reason"] for r in doc["excluded"])
        lines.append("")
        lines.append(f"Excluded ({len(doc['excluded'])}):")
        lines.extend(f"    {n:>4} × {reason}" for reason, n in sorted(reasons.items()))
    return "\n".join(lines)


def _first(lines: Iterator[str], count: int, summarise: bool) -> list[str]:
    """All the lines, or in a summary the first SUMMARY_SHOWN and how many more there are."""
    if not summarise or count <= SUMMARY_SHOWN:
        return list(lines)
    shown = [line for _, line in zip(range(SUMMARY_SHOWN), lines, strict=False)]
    return [*shown, f"    ... and {count - len(shown)} more: {_EVERYTHING}"]


def _changes_summary(invoices: Iterable[dict[str, Any]]) -> list[str]:
    """Invoices per action, then the first changes, one line each."""
    actions: Counter[str] = Counter()
    shown: list[str] = []
    for inv in invoices:
        if inv.get("blocked_by"):
            action = "blocked"
        elif inv["action"] != "unchanged" and not inv["rows"]:
            action = "cancel"
        else:
            action = inv["action"]
        actions[action] += 1
        if action != "unchanged" and len(shown) < SUMMARY_SHOWN:
            number = f" (#{inv['number']})" if inv.get("number") else ""
            extra = f", supplements {inv['supplements']}" if inv["supplements"] else ""
            shown.append(
                f"    {inv['key']}{number}  [{action}]  customer {inv['customer_number']}, "
                f"{inv['period']}{extra}: {_num(Decimal(inv['total']))} {inv['currency']}"
            )
    order = ("create", "update", "cancel", "blocked", "unchanged")
    lines = ["", "Invoices by action:"]
    lines.extend(f"    {actions[a]:>7}  {a}" for a in order if actions[a])
    changed = sum(n for a, n in actions.items() if a != "unchanged")
    lines.append("")
    if not changed:
        lines.append(f"No invoice would change; {_EVERYTHING}.")
        return lines
    lines.append(f"Invoices that would change (the first {len(shown)} of {changed}):")
    lines.extend(shown)
    if changed > len(shown):
        lines.append(f"    ... and {changed - len(shown)} more: {_EVERYTHING}")
    return lines


def sync_text(doc: dict[str, Any]) -> str:
    """Human-readable summary from `SyncReport.to_json()`."""
    inv = doc["invoices"]
    entries = doc["entries"]
    system = f"{_system(doc['target'])}: " if doc.get("target") else ""
    head = system + ("Dry run (nothing sent): " if doc["dry_run"] else "")
    lines = [
        f"{head}pulled {doc['pulled']} ledger change(s); invoices: {len(inv['created'])} created, "
        f"{len(inv['updated'])} updated, {inv['unchanged']} unchanged"
        + (
            f", {len(inv['cancelled_empty'])} emptied and cancelled"
            if inv["cancelled_empty"]
            else ""
        )
        + (f", {len(inv['recovered'])} recovered after a lost answer" if inv["recovered"] else ""),
        f"entries: {entries['invoiced']} invoiced, {entries['excluded']} excluded, "
        f"{entries['attention']} need attention; invoices needing attention: "
        f"{len(doc['attention']['invoices'])}; {doc['requests']} request(s) to the accounting "
        f"system, {doc['rate_limited']} rate-limited (429)",
    ]
    if inv["would"]:
        lines.append("Would:")
        lines.extend(f"    {w['action']:<7} {w['key']}" for w in inv["would"])
    attention = doc["attention"]
    if attention["invoices"] or attention["entries"]:
        lines.append("Needs attention:")
        lines.extend(f"    {a['key']}: {a['reason']}" for a in attention["invoices"])
        lines.extend(f"    {a['ref']}: {a['reason']}" for a in attention["entries"])
    if attention.get("acknowledged"):
        lines.append(
            f"{len(attention['acknowledged'])} acknowledged item(s) not listed "
            "(connector attention --all)"
        )
    if doc.get("notes"):
        lines.append("Notes:")
        lines.extend(f"    {n}" for n in doc["notes"])
    if doc["excluded"]:
        lines.append("Excluded:")
        lines.extend(f"    {n:>4} × {reason}" for reason, n in doc["excluded"].items())
    return "\n".join(lines)


def resync_json(report: ResyncReport) -> dict[str, Any]:
    """One JSON document for `connector resync`: the window, the plan restricted to it (what
    was shown), the drafts restored with their row differences, the entries invoiced again,
    and what was done."""
    preview = report.preview
    doc: dict[str, Any] = {
        "command": "resync",
        "target": report.target,
        "target_name": _system(report.target),
        "window": {
            "period": report.period,
            "customers": report.customers,
            "entry": report.entry,
        },
        "dry_run": report.dry_run,
        "reinvoice_cancelled": report.reinvoice_cancelled,
        "fetched": report.fetched,
        "plan": None,
        "would": [],
        "restores": [
            {
                "key": r.key.text,
                "remote_id": r.remote_id,
                "number": r.number,
                "was": r.was,
                "differences": [
                    {
                        **d,
                        "draft": d["draft"] and clean(d["draft"]),
                        "plan": d["plan"] and clean(d["plan"]),
                    }
                    for d in r.differences
                ],
            }
            for r in report.restores
        ],
        "reinvoice": [
            {"entry_id": entry_id, "cancelled_invoice": key.text}
            for entry_id, key in report.reinvoice
        ],
        "confirmed": report.confirmed,
        "done": report.done.to_json() if report.done else None,
        "notes": [clean(n) for n in report.notes],
        "exit_code": int(report.exit_code),
    }
    if preview is not None and preview.plan is not None:
        view = PlanView(preview.plan, True, dict(preview.invoice_attention), tuple(preview.notes))
        plan_doc = plan_json(view)
        restored = {r.key.text for r in report.restores}
        for invoice in plan_doc["invoices"]:
            if invoice["key"] in restored and invoice["action"] == "update":
                invoice["action"] = "restore"
        doc["plan"] = plan_doc
        doc["would"] = [{"action": a, "key": k} for a, k in preview.would]
    return doc


def resync_text(doc: dict[str, Any], *, preview: bool = True, outcome: bool = True) -> str:
    """Human-readable `connector resync`: what will change (`preview`), then what was done
    (`outcome`)."""
    window = doc["window"]
    whom = f"customer {', '.join(window['customers'])}" if window["customers"] else "no customer"
    if window["entry"]:
        whom += f", entry {window['entry']}"
    lines: list[str] = []
    if preview:
        lines.append(
            f"Re-sync of {window['period']} ({whom}) in {doc['target_name']}: "
            f"{doc['fetched']} ledger entr{'y' if doc['fetched'] == 1 else 'ies'} read again"
        )
        if doc["plan"] is not None:
            lines.append("")
            lines.append(plan_text(doc["plan"]))
        if doc["restores"]:
            lines.append("")
            lines.append(
                f"Drafts a person edited, to be given the planned rows again "
                f"({len(doc['restores'])}):"
            )
            for restore in doc["restores"]:
                number = f" (#{restore['number']})" if restore["number"] else ""
                was = (
                    "flagged by an earlier sync"
                    if restore["was"] == "locked"
                    else "an edit no sync had noticed yet"
                )
                lines.append(f"    {restore['key']}{number}: {was}")
                for diff in restore["differences"]:
                    if diff["plan"] is None:
                        text = f"not in the plan, goes: {diff['draft']}"
                    elif diff["draft"] is None:
                        text = f"missing from the draft, comes back: {diff['plan']}"
                    else:
                        text = f"the draft has {diff['draft']}; the plan wants {diff['plan']}"
                    where = f"row {diff['row']}" if diff["row"] else "draft row"
                    lines.append(f"        {where}: {text}")
                if not restore["differences"]:
                    lines.append("        (the rows already match: only recorded, nothing sent)")
        if doc["reinvoice"]:
            lines.append("")
            lines.append(
                f"Entries of cancelled invoices to invoice again ({len(doc['reinvoice'])}):"
            )
            lines.extend(
                f"    {r['entry_id']} (was on {r['cancelled_invoice']})" for r in doc["reinvoice"]
            )
        if doc["notes"]:
            lines.append("")
            lines.append("Re-sync notes:")
            lines.extend(f"    {n}" for n in doc["notes"])
        lines.append("")
        if doc["would"]:
            lines.append("To change:")
            lines.extend(f"    {w['action']:<8} {w['key']}" for w in doc["would"])
        else:
            lines.append(
                f"Nothing to change: {doc['target_name']} already matches the ledger for this "
                "window."
            )
    if outcome:
        if doc["dry_run"]:
            lines.append("Dry run: nothing was sent.")
        elif doc["confirmed"] is False:
            lines.append("Not confirmed: nothing was sent.")
        elif doc["done"] is not None:
            if preview:
                lines.append("")
            lines.append(sync_text(doc["done"]))
    return "\n".join(lines)


# --- connector close ---------------------------------------------------------------------------


def close_table(doc: dict[str, Any], *, preview: bool) -> list[str]:
    """The invoices of a close, one line each: what is (or was) closed, with the date set."""
    invoices = doc["invoices"]
    if not invoices:
        return []
    heading = (
        f"    {'invoice':<22} {'number':>8} {'customer':>8} {'amount excl. VAT':>20} "
        f"{'invoice date':>12} {'due date':>10}" + ("" if preview else "  done")
    )
    lines = [heading]
    for inv in invoices:
        amount = "-"
        if inv["amount_excl_vat"] is not None:
            amount = f"{_num(Decimal(inv['amount_excl_vat']))} {inv['currency'] or ''}".strip()
        done = ""
        if not preview:
            done = "  " + inv["outcome"]
            sent = inv["sent"]
            if sent == "by hand":
                done += ", to send by hand"
            elif sent == "unknown":
                done += ", whether sent unknown: check by hand"
            elif sent == "already":
                done += ", sent before"
            elif sent and inv["outcome"] != "skipped":
                done += f" ({sent})"
        lines.append(
            f"    {inv['key']:<22} {inv['number'] or '-':>8} {inv['customer_number']:>8} "
            f"{amount:>20} {inv['invoice_date']:>12} {inv['due_date'] or '-':>10}{done}"
        )
    return lines


def close_preview_text(doc: dict[str, Any]) -> str:
    """What a close is about to do, for the person asked to confirm it."""
    system = _system(doc["target"])
    what = "book and send" if doc["send"] else "book"
    lines = [f"{system}: about to {what} {len(doc['invoices'])} invoice(s) of {doc['period']}:"]
    lines.extend(close_table(doc, preview=True))
    if doc["forced"]:
        lines.append(
            f"Despite {len(doc['forced']['differences'])} difference(s) found by the audit "
            f"(--force: {doc['forced']['why']})"
        )
    lines.extend(_close_lists(doc))
    return "\n".join(lines)


def close_text(doc: dict[str, Any]) -> str:
    """Human-readable result of `connector close`, from `CloseReport.to_json()`."""
    system = _system(doc["target"])
    scope = doc["period"] + (f", customer {doc['customer']}" if doc["customer"] else "")
    if doc["refused"]:
        lines = [
            f"{system}, {scope}: not closed. The audit finds differences between the ledger "
            f"and the books ({len(doc['differences'])}):"
        ]
        lines.extend(f"    {d}" for d in doc["differences"])
        lines.append(
            "Correct them (often: connector sync), then close again; or close anyway with "
            '--force --why "the reason" (recorded with your name).'
        )
        return "\n".join(lines)
    if not doc["confirmed"]:
        return f"{system}, {scope}: nothing was closed (not confirmed)."
    invoices = doc["invoices"]
    booked = sum(1 for i in invoices if i["booked"])
    sent = sum(1 for i in invoices if i["outcome"] == "booked and sent")
    head = f"{system}, {scope}: {booked} invoice(s) booked"
    if doc["send"]:
        head += f", {sent} sent"
    if not invoices:
        head = f"{system}, {scope}: no open draft of the connector to close"
    lines = [head]
    lines.extend(close_table(doc, preview=False))
    lines.extend(_close_lists(doc))
    return "\n".join(lines)


def _close_lists(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for title, key in (("To send by hand", "by_hand"), ("Needs attention", "attention")):
        if doc[key]:
            lines.append(f"{title} ({len(doc[key])}):")
            lines.extend(f"    {a['key']}: {a['reason']}" for a in doc[key])
    if doc["notes"]:
        lines.append("Notes:")
        lines.extend(f"    {n}" for n in doc["notes"])
    return lines


def _table_text(table: Any) -> str:
    """A rich table as plain text (no colours: it goes to a terminal or a pipe alike)."""
    import io

    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=110, color_system=None, force_terminal=False).print(table)
    return out.getvalue().rstrip("\n")


def balance_text(doc: dict[str, Any]) -> str:
    """Human-readable prepaid balances from `BalanceReport.to_json()`: one line per customer,
    and with a customer filter the entries behind each figure."""
    from rich import box
    from rich.table import Table

    lines: list[str] = []
    pulled = doc["pulled"]
    lines.append(
        "Prepaid hours (timbank), from the ledger"
        + (
            f" (pulled {pulled} new change(s))"
            if pulled is not None
            else " as last pulled (--no-pull)"
        )
        + f": {doc['counts']['customers']} customer(s), {doc['counts']['overdraws']} overdraw(s)"
    )
    if not doc["customers"]:
        who = doc["filter"]["customer"]
        lines.append(
            f"Customer {who} has no prepaid hours." if who else "No customer has prepaid hours."
        )
        return "\n".join(lines)
    summary = Table(box=box.SIMPLE)
    summary.add_column("customer")
    for name in ("bought h", "drawn h", "overdrawn h", "remaining h"):
        summary.add_column(name, justify="right")
    for account in doc["customers"]:
        summary.add_row(
            account["customer_number"],
            account["bought"],
            account["drawn"],
            account["overdrawn"] if Decimal(account["overdrawn"]) else "-",
            account["remaining"],
        )
    lines.append(_table_text(summary))
    if doc["filter"]["customer"] is not None:
        for account in doc["customers"]:
            detail = Table(box=box.SIMPLE, title=f"customer {account['customer_number']}")
            detail.add_column("date")
            detail.add_column("entry")
            detail.add_column("what")
            for name in ("hours", "overdrawn", "left after"):
                detail.add_column(name, justify="right")
            moves = [("top-up", m) for m in account["topups"]] + [
                ("draw", m) for m in account["draws"]
            ]
            # The account's own order: by date, top-ups first on a day, then by entry id.
            moves.sort(key=lambda w: (w[1]["date"], w[0] != "top-up", w[1]["entry_id"]))
            for what, move in moves:
                over = move.get("overdrawn", "0")
                detail.add_row(
                    move["date"],
                    clean(move["entry_id"]),
                    what,
                    ("+" if what == "top-up" else "-") + move["hours"],
                    over if Decimal(over) else "",
                    move["balance_after"],
                )
            lines.append(_table_text(detail))
    if doc["attention"]:
        lines.append("")
        lines.append(f"Needs attention ({len(doc['attention'])}):")
        lines.extend(f"    {a['ref']}: {a['reason']}" for a in doc["attention"])
        lines.append(
            "    Those hours are not invoiced: add the top-up in the ledger (dated on or before "
            "the draw), correct the draw, or set CONNECTOR_PREPAID__OVERDRAW=invoice."
        )
    elif doc["overdraws"]:
        lines.append("")
        lines.append(
            f"Overdraws invoiced as ordinary hours (CONNECTOR_PREPAID__OVERDRAW=invoice) "
            f"({len(doc['overdraws'])}):"
        )
        lines.extend(f"    {a['ref']}: {a['reason']}" for a in doc["overdraws"])
    return "\n".join(lines)
