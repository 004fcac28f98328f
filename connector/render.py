"""Turning results into text for people and JSON for programs. No decisions here."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from connector.planning import Outcome, Plan, PlannedInvoice, Row


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


def invoice_json(invoice: PlannedInvoice) -> dict[str, Any]:
    return {
        "key": invoice.key.text,
        "customer_number": invoice.key.customer_number,
        "period": invoice.key.period,
        "supplements": invoice.supplements.text if invoice.supplements else None,
        "action": invoice.action.value,
        "document_number": invoice.document_number,
        "currency": invoice.currency,
        "total": str(invoice.total),
        "unpriced_rows": invoice.unpriced_rows,
        "rows": [row_json(r) for r in invoice.rows],
    }


def plan_json(
    plan: Plan, *, period: str | None = None, customer: str | None = None
) -> dict[str, Any]:
    invoices = [
        i for i in plan.invoices if _keep(i.key.period, i.key.customer_number, period, customer)
    ]
    results = [r for r in plan.results if _keep(r.period, r.customer_number, period, customer)]

    def listed(outcome: Outcome) -> list[dict[str, Any]]:
        return [
            {
                "ref": r.ref,
                "customer_number": r.customer_number,
                "period": r.period,
                "reason": r.reason,
                "invoices": [k.text for k in r.keys],
            }
            for r in results
            if r.outcome is outcome
        ]

    counts = Counter(r.outcome.value for r in results)
    return {
        "target": plan.target,
        "filter": {"period": period, "customer": customer},
        "invoices": [invoice_json(i) for i in invoices],
        "excluded": listed(Outcome.EXCLUDED),
        "attention": listed(Outcome.ATTENTION),
        "counts": {
            "invoices": len(invoices),
            "changes": sum(1 for i in invoices if i.action.value != "unchanged"),
            "entries": len(results),
            **{o.value: counts.get(o.value, 0) for o in Outcome},
        },
    }


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


def plan_text(doc: dict[str, Any]) -> str:
    """Human-readable plan from `plan_json`'s document."""
    lines: list[str] = []
    c = doc["counts"]
    lines.append(
        f"Plan for {doc['target']}: {c['invoices']} invoice(s), "
        f"{c['changes']} to create or change; "
        f"{c['entries']} entries: {c['invoiced']} invoiced, {c['excluded']} excluded, "
        f"{c['attention']} need attention"
    )
    for inv in doc["invoices"]:
        lines.append("")
        extra = f", supplements {inv['supplements']}" if inv["supplements"] else ""
        number = f" (#{inv['document_number']})" if inv["document_number"] else ""
        lines.append(
            f"{inv['key']}{number}  [{inv['action']}]  customer {inv['customer_number']}, "
            f"{inv['period']}{extra}"
        )
        for row in inv["rows"]:
            if row["type"] == "text":
                lines.append(f"    {'':<12} {'':>8} {'':>10} {'':>12}  {row['description']}")
                continue
            qty = Decimal(row["quantity"])
            price = _num(Decimal(row["price"])) if row["price"] is not None else "(article)"
            amount = _num(Decimal(row["amount"])) if row["amount"] is not None else "-"
            lines.append(
                f"    {row['article']:<12} {qty:>8} {price:>10} {amount:>12}  {row['description']}"
            )
        unpriced = (
            f" + {inv['unpriced_rows']} row(s) priced by article" if inv["unpriced_rows"] else ""
        )
        lines.append(
            f"    total excl. VAT: {_num(Decimal(inv['total']))} {inv['currency']}{unpriced}"
        )
    if doc["attention"]:
        lines.append("")
        lines.append("Needs attention:")
        lines.extend(f"    {r['ref']}: {r['reason']}" for r in doc["attention"])
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
    head = "Dry run (nothing sent): " if doc["dry_run"] else ""
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
        f"{entries['attention']} need attention; {doc['requests']} request(s) to the accounting "
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
    if doc["excluded"]:
        lines.append("Excluded:")
        lines.extend(f"    {n:>4} × {reason}" for reason, n in doc["excluded"].items())
    return "\n".join(lines)
