"""Fortnox's JSON, both ways: what is sent for an invoice and how its answers read.

Payloads carry only fields the OpenAPI document defines for `InvoicePayload` and its rows, with
its types (`DeliveredQuantity` is a string, `Price` a number written exactly). The invoice key
goes to `ExternalInvoiceReference1`, which Fortnox searches by substring: callers compare it
exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.planning import InvoiceStatus, PlannedInvoice, Row
from connector.targets.base import (
    NeedsStepping,
    RemoteInvoice,
    RemoteRow,
    RemoteState,
    rows_match,
)


def row_payload(row: Row) -> dict[str, Any]:
    """A complete row: Fortnox fills any field left out from the article (a row without Price
    gets the article's sales price, 0 when it has none), so article rows send every field."""
    if row.is_text:
        return {"Description": row.description}
    if row.price is None or row.quantity is None:
        raise ValueError(f"article row for entry {row.entry_id} has no price or quantity")
    payload: dict[str, Any] = {
        "ArticleNumber": row.article,
        "Description": row.description,
        "DeliveredQuantity": str(row.quantity),
        "Price": row.price,
    }
    if row.unit:
        payload["Unit"] = row.unit
    return payload


def update_rows(planned: Sequence[Row], current: Sequence[RemoteRow]) -> list[dict[str, Any]]:
    """Rows for a PUT that turns `current` into exactly `planned`.

    Fortnox maps rows sent without RowId onto the existing rows by position and updates only
    the fields sent, so a row could inherit another row's article, price or VAT. With a RowId
    on at least one row, rows with RowId update that row, rows without are created new (with
    every default taken from their article) and rows not named are removed. So: a planned row
    identical to an existing one keeps it by RowId; a text row may take over an existing text
    row (text onto text inherits nothing); every other row is sent whole as a new row. The
    header text row the planner puts on every invoice guarantees a RowId in practice.
    """
    unused = [r for r in current if r.row_id is not None]
    rows: list[dict[str, Any]] = []
    for row in planned:
        same = next((r for r in unused if rows_match([r], [row])), None)
        if same is not None:
            unused.remove(same)
            rows.append({"RowId": same.row_id})
            continue
        if row.is_text:
            text = next((r for r in unused if r.is_text and not r.quantity and not r.price), None)
            if text is not None:
                unused.remove(text)
                rows.append({"RowId": text.row_id, "Description": row.description})
                continue
        rows.append(row_payload(row))
    if current and not any("RowId" in r for r in rows):
        raise NeedsStepping(f"no row of the draft can carry a RowId ({len(current)} rows)")
    return rows


def header_step_rows(planned: Sequence[Row], current: Sequence[RemoteRow]) -> list[dict[str, Any]]:
    """The header as a new first row; every existing row named, so kept as it is."""
    return [row_payload(planned[0])] + [{"RowId": r.row_id} for r in current]


def invoice_payload(
    invoice: PlannedInvoice,
    rows: list[dict[str, Any]] | None = None,
    *,
    invoice_date: date | None = None,
    remarks: str | None = None,
) -> dict[str, Any]:
    """The body of POST /invoices (with an invoice date) and PUT /invoices/{n} (without: a PUT
    keeps header fields it does not send). Prices exclude VAT whatever the customer card says.
    Remarks are sent only when a setting asks: otherwise the customer card's remark applies."""
    body: dict[str, Any] = {
        "CustomerNumber": invoice.key.customer_number,
        "ExternalInvoiceReference1": invoice.key.text,
        "Currency": invoice.currency,
        "VATIncluded": False,
    }
    if invoice_date is not None:
        body["InvoiceDate"] = invoice_date.isoformat()
    if remarks is not None:
        body["Remarks"] = remarks
    body["InvoiceRows"] = rows if rows is not None else [row_payload(r) for r in invoice.rows]
    return {"Invoice": body}


def decimal_or_none(value: object) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def truthy(value: object) -> bool:
    """Fortnox sends some values as strings: "false" must not read as true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def text(value: object) -> str:
    return "" if value is None else str(value)


def _row_id(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def date_or_none(value: object) -> date | None:
    """A YYYY-MM-DD date as Fortnox writes it; None for an empty or unreadable one."""
    raw = text(value).strip()[:10]
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def redate_payload(invoice_date: date) -> dict[str, Any]:
    """The body of a PUT that re-dates a draft: the invoice date alone. No DueDate, so Fortnox
    derives it from the terms of payment; no rows, so they are kept as they are."""
    return {"Invoice": {"InvoiceDate": invoice_date.isoformat()}}


def parse_invoice(data: dict[str, Any], with_rows: bool) -> RemoteInvoice:
    rows = None
    if with_rows:
        rows = tuple(
            RemoteRow(
                article=text(r.get("ArticleNumber")) or None,
                description=text(r.get("Description")),
                quantity=decimal_or_none(r.get("DeliveredQuantity")),
                price=decimal_or_none(r.get("Price")),
                unit=text(r.get("Unit")) or None,
                row_id=_row_id(r.get("RowId")),
            )
            for r in data.get("InvoiceRows") or []
        )
    vat_included = data.get("VATIncluded")
    state, status = RemoteState.OPEN, None
    if truthy(data.get("Cancelled")):
        state, status = RemoteState.GONE, InvoiceStatus.CANCELLED
    elif truthy(data.get("Booked")):
        state, status = RemoteState.CLOSED, InvoiceStatus.BOOKED
    elif truthy(data.get("Sent")):
        # Sent to the customer (e-mailed, printed, e-invoiced or marked sent): they hold it.
        state, status = RemoteState.CLOSED, InvoiceStatus.SENT
    number = text(data.get("DocumentNumber"))
    return RemoteInvoice(
        remote_id=number,
        number=number,
        key=text(data.get("ExternalInvoiceReference1")) or None,
        customer_number=text(data.get("CustomerNumber")),
        state=state,
        status=status,
        currency=text(data.get("Currency")) or None,
        rows=rows,
        vat_included=None if vat_included is None else truthy(vat_included),
        invoice_date=date_or_none(data.get("InvoiceDate")),
        due_date=date_or_none(data.get("DueDate")),
        sent=None if data.get("Sent") is None else truthy(data.get("Sent")),
    )
