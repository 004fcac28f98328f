"""Turning results into text for people and JSON for programs. No decisions here."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from connector import targets
from connector.errors import ConfigError
from connector.planning import InvoiceKey, Outcome, Plan, PlannedInvoice, PlanView, Row, clean


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


def plan_json(
    view: PlanView | Plan, *, period: str | None = None, customer: str | None = None
) -> dict[str, Any]:
    """One JSON document for a plan, complete whatever its size; filters narrow every list."""
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

    def listed(outcome: Outcome) -> list[dict[str, Any]]:
        return [
            {
                "ref": r.ref,
                "customer_number": r.customer_number,
                "period": r.period,
                "reason": clean(r.reason),
                "invoices": [k.text for k in r.keys],
            }
            for r in results
            if r.outcome is outcome
        ]

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
        "invoices": [invoice_json(i, blocked.get(i.key)) for i in invoices],
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


def plan_text(doc: dict[str, Any]) -> str:
    """Human-readable plan from `plan_json`'s document."""
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
    heading = f"    {'article':<12} {'quantity':>8} {'price':>10} {'amount':>12}  text"
    for inv in doc["invoices"]:
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
        lines.extend(f"    {r['key']}: {r['reason']}" for r in doc["invoice_attention"])
    if doc["attention"]:
        lines.append("")
        lines.append(f"Entries that need attention ({len(doc['attention'])}):")
        lines.extend(f"    {r['ref']}: {r['reason']}" for r in doc["attention"])
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
    if doc.get("notes"):
        lines.append("Notes:")
        lines.extend(f"    {n}" for n in doc["notes"])
    if doc["excluded"]:
        lines.append("Excluded:")
        lines.extend(f"    {n:>4} × {reason}" for reason, n in doc["excluded"].items())
    return "\n".join(lines)


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
