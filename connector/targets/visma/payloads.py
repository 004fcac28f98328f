"""Visma eAccounting's JSON, both ways: what is sent for a draft and how its answers read.

Models of our own, written from Visma's OpenAPI document (CustomerInvoiceDraftApi and its rows,
CustomerInvoiceApi, CustomerApi, ArticleApi). Payloads carry only properties the document
defines for `CustomerInvoiceDraftApi`, none of its read-only ones, and numbers as exact JSON
numbers from Decimals. Rows name articles by `ArticleId` (a row's ArticleNumber is derived from
it) and never carry a unit: the unit is the article's. The invoice key goes to `ContractNumber`.

Answers are read with keys in any casing: the live API writes PascalCase since its .NET 8
upgrade and an earlier document used camelCase (NOTES section 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.planning import InvoiceStatus, PlannedInvoice, Row
from connector.targets.base import RemoteInvoice, RemoteRow, RemoteState

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# The properties of CustomerInvoiceDraftApi that are not read-only (OpenAPI 2026-02-17).
DRAFT_WRITABLE: tuple[str, ...] = (
    "CustomerId", "IsCreditInvoice", "RotReducedInvoicingType", "RotReducedInvoicingPropertyName",
    "RotReducedInvoicingOrgNumber", "RotReducedInvoicingAmount",
    "RotReducedInvoicingAutomaticDistribution", "RotPropertyType", "HouseWorkOtherCosts", "Rows",
    "Persons", "YourReference", "OurReference", "BuyersOrderReference", "ElectronicReference",
    "SubscriptionNumber", "ContractNumber", "InvoiceAddress1", "InvoiceAddress2",
    "DeliveryCustomerName", "DeliveryAddress1", "DeliveryAddress2", "DeliveryPostalCode",
    "DeliveryCity", "DeliveryCountryCode", "DeliveryMethodName", "DeliveryTermName",
    "TermsOfPaymentId", "DeliveryMethodCode", "DeliveryTermCode", "EuThirdParty", "InvoiceDate",
    "DueDate", "DeliveryDate", "ReplaceUnitPriceWhenZero", "UsesGreenTechnology",
    "ContributionMargin", "IsDirectDebit", "BackgroundId",
)  # fmt: skip
# Writable properties a read-modify-write never takes from the draft as read: the connector
# sets them itself on every write, or leaves them to their default on purpose.
NOT_KEPT = frozenset({
    # Set by the connector: the customer, the key, the rows and the credit flag by their total.
    "CustomerId", "ContractNumber", "Rows", "IsCreditInvoice", "EuThirdParty",
    "RotReducedInvoicingType",
    # Default false: a zero price stays zero instead of becoming the article's price (NOTES 7.5).
    "ReplaceUnitPriceWhenZero",
    # Computed from the rows' purchase prices: a stale copy must not go back with new rows.
    "ContributionMargin",
})  # fmt: skip
DATE_FIELDS = frozenset({"InvoiceDate", "DueDate", "DeliveryDate"})

# The writable properties of CustomerInvoiceDraftRowApi (OpenAPI 2026-02-17), by what a
# read-modify-write does with those of a row as read. A PUT replaces every row, and a property
# not sent returns to its default: each of them is sent, derived, carried over, or stops the
# write.
# Sent by the connector on every row.
ROW_SENT: tuple[str, ...] = (
    "IsTextRow", "ArticleId", "Text", "Quantity", "UnitPrice",
    "ReversedConstructionServicesVatFree",
)  # fmt: skip
# Worked out by Visma: the line from the row's place, the number and unit from the article, the
# margin from purchase prices. Never a person's own setting, never sent back.
ROW_DERIVED: tuple[str, ...] = (
    "LineNumber", "ArticleNumber", "UnitAbbreviation", "UnitAbbreviationEnglish", "UnitName",
    "ContributionMargin",
)  # fmt: skip
# Bookkeeping a person may add to a row without changing what it bills: carried over onto the
# same row (same article and text) when that row is unambiguously one of the rows sent.
ROW_CARRIED: tuple[str, ...] = (
    "ProjectId", "CostCenterItemId1", "CostCenterItemId2", "CostCenterItemId3",
)  # fmt: skip
# Settings that change what a row bills or its VAT: a discount, ROT/RUT work, green technology.
# Never carried over (the plan's amounts would no longer be what the draft bills); a row as read
# with one of them, or with ReversedConstructionServicesVatFree true, or with a fixed discount
# (read-only, so it cannot even be sent back), stops the write.
ROW_BILLING: tuple[str, ...] = (
    "DiscountPercentage", "WorkCostType", "IsWorkCost", "WorkHours", "MaterialCosts",
    "GreenTechnologyType",
)  # fmt: skip
_ROW_WORDS = {
    "ProjectId": "a project", "CostCenterItemId1": "a cost centre",
    "CostCenterItemId2": "a cost centre", "CostCenterItemId3": "a cost centre",
    "DiscountPercentage": "a discount", "DiscountFixedAmount": "a discount",
    "ReversedConstructionServicesVatFree": "reverse charge VAT", "WorkCostType": "ROT/RUT work",
    "IsWorkCost": "ROT/RUT work", "WorkHours": "ROT/RUT work", "MaterialCosts": "ROT/RUT work",
    "GreenTechnologyType": "green technology",
}  # fmt: skip
_CANONICAL = {name.lower(): name for name in DRAFT_WRITABLE}


# --- reading -------------------------------------------------------------------------------------


def lowered(value: object) -> dict[str, Any]:
    """A JSON object with lower-case keys (answers are read case-insensitively)."""
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}


def text(value: object) -> str:
    return "" if value is None else str(value).strip()


def decimal_or_none(value: object) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def truthy(value: object) -> bool:
    """A JSON boolean; "false" as a string must not read as true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True


def bool_or_none(value: object) -> bool | None:
    return None if value is None else truthy(value)


def is_guid(value: str) -> bool:
    return _GUID.fullmatch(value) is not None


def guid(value: object) -> str:
    """A GUID as the connector records it: lower case, so ids compare as text."""
    return text(value).lower()


def date_or_none(value: object) -> date | None:
    raw = text(value)
    if not _DATE.match(raw):
        return None
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        return None


@dataclass(frozen=True)
class Customer:
    id: str
    number: str
    name: str
    private_person: bool
    active: bool
    currency: str | None


@dataclass(frozen=True)
class Article:
    id: str
    number: str
    name: str
    active: bool
    net_price: Decimal | None
    # UnitAbbreviation: the unit every row of this article carries.
    unit: str | None = None


def parse_customer(data: object) -> Customer:
    f = lowered(data)
    return Customer(
        id=guid(f.get("id")),
        number=text(f.get("customernumber")),
        name=text(f.get("name")),
        private_person=truthy(f.get("isprivateperson")),
        active=truthy(f.get("isactive")),
        currency=text(f.get("currencycode")).upper() or None,
    )


def parse_article(data: object) -> Article:
    f = lowered(data)
    return Article(
        id=guid(f.get("id")),
        number=text(f.get("number")),
        name=text(f.get("name")),
        active=truthy(f.get("isactive")),
        net_price=decimal_or_none(f.get("netprice")),
        unit=text(f.get("unitabbreviation")) or None,
    )


def parse_row(data: object, article_numbers: Mapping[str, str]) -> RemoteRow:
    """A draft or invoice row in the connector's words. The unit is left out (None): on Visma
    it is the article's, and planned rows carry none either (profile.row_units). A discount a
    person gave shows in the price, so the row no longer reads as the one the connector wrote."""
    f = lowered(data)
    article = None
    if not truthy(f.get("istextrow")):
        article = text(f.get("articlenumber")) or article_numbers.get(guid(f.get("articleid")))
    quantity = decimal_or_none(f.get("quantity"))
    price = decimal_or_none(f.get("unitprice"))
    percent = decimal_or_none(f.get("discountpercentage"))
    fixed = decimal_or_none(f.get("discountfixedamount"))
    if price is not None and percent:
        price = price * (1 - percent)
    if price is not None and fixed and truthy(f.get("isdiscountinfixedamount")) and quantity:
        price = price - fixed / quantity
    return RemoteRow(
        article=article or None,
        description=text(f.get("text")) if f.get("text") is not None else "",
        quantity=quantity,
        price=price,
        unit=None,
    )


def _rows(f: Mapping[str, Any], article_numbers: Mapping[str, str]) -> tuple[RemoteRow, ...] | None:
    # In the answer's order: LineNumber is "calculated from the order of the row in the JSON".
    rows = f.get("rows")
    if not isinstance(rows, list):
        return None
    return tuple(parse_row(r, article_numbers) for r in rows)


def parse_draft(data: object, article_numbers: Mapping[str, str] | None = None) -> RemoteInvoice:
    """A draft in /customerinvoicedrafts: open, addressed by its GUID, without a number."""
    f = lowered(data)
    return RemoteInvoice(
        remote_id=guid(f.get("id")),
        number=None,
        key=text(f.get("contractnumber")) or None,
        customer_number=text(f.get("customernumber")),
        state=RemoteState.OPEN,
        status=None,
        currency=text(f.get("invoicecurrencycode")).upper() or None,
        rows=_rows(f, article_numbers or {}),
        vat_included=bool_or_none(f.get("includesvat")),
        invoice_date=date_or_none(f.get("invoicedate")),
        source=data,
    )


def parse_invoice(data: object, article_numbers: Mapping[str, str] | None = None) -> RemoteInvoice:
    """An invoice in /customerinvoices: booked. One converted from a draft keeps the draft's id
    as its remote id (the state recorded that id); one a person made directly has its own."""
    f = lowered(data)
    drafted = guid(f.get("createdfromdraftid"))
    return RemoteInvoice(
        remote_id=drafted or guid(f.get("id")),
        number=text(f.get("invoicenumber")) or None,
        key=text(f.get("contractnumber")) or None,
        customer_number=text(f.get("customernumber")),
        state=RemoteState.CLOSED,
        status=InvoiceStatus.BOOKED,
        currency=text(f.get("currencycode")).upper() or None,
        rows=_rows(f, article_numbers or {}),
        vat_included=bool_or_none(f.get("includesvat")),
        invoice_date=date_or_none(f.get("invoicedate")),
        source=data,
    )


# --- writing -------------------------------------------------------------------------------------


def rows_total(rows: Iterable[Row]) -> Decimal:
    return sum((a for r in rows if (a := r.amount) is not None), Decimal(0))


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def row_payload(row: Row, article_ids: Mapping[str, str]) -> dict[str, Any]:
    """One CustomerInvoiceDraftRowApi. An article row sends its price and quantity always:
    a row without UnitPrice would be priced 0 (or from the article, with
    ReplaceUnitPriceWhenZero), never what the plan says."""
    if row.is_text:
        return {
            "IsTextRow": True,
            "Text": row.description,
            "ReversedConstructionServicesVatFree": False,
        }
    if row.price is None or row.quantity is None:
        raise ValueError(f"article row for entry {row.entry_id} has no price or quantity")
    for name, value in (("quantity", row.quantity), ("price", row.price)):
        # The planner rounds both to 2 decimals (the profile); more is a connector bug, never
        # rounded here: money is sent exactly as planned or not at all.
        if _places(value) > 2:
            raise ValueError(f"{name} {value} of entry {row.entry_id} has more than 2 decimals")
    assert row.article is not None
    return {
        "IsTextRow": False,
        "ArticleId": article_ids[row.article],
        "Text": row.description,
        "Quantity": row.quantity,
        "UnitPrice": row.price,
        "ReversedConstructionServicesVatFree": False,
    }


def draft_payload(
    invoice: PlannedInvoice,
    customer_id: str,
    article_ids: Mapping[str, str],
    *,
    invoice_date: date | None,
    kept: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of POST /customerinvoicedrafts, or of a PUT (which replaces the whole draft)
    with `kept`, the header fields of the draft as read. IsCreditInvoice only for a negative
    total: Visma wants a credit's quantities negative and the flag set, both ways."""
    body: dict[str, Any] = dict(kept or {})
    body["CustomerId"] = customer_id
    body["EuThirdParty"] = False
    body["RotReducedInvoicingType"] = 0
    body["ContractNumber"] = invoice.key.text
    if invoice_date is not None:
        body["InvoiceDate"] = invoice_date.isoformat()
    if rows_total(invoice.rows) < 0:
        body["IsCreditInvoice"] = True
    body["Rows"] = [row_payload(r, article_ids) for r in invoice.rows]
    return body


def kept_fields(source: object, *, redated: bool) -> dict[str, Any]:
    """The header a person may have set on the draft (references, addresses, due date, terms of
    payment...): exactly its writable properties, less those the connector sets itself; nulls
    left out (a full replace gives them their default, null, all the same). Dates go back as
    plain dates. Re-dated, the due date goes too: Visma then derives it from the new invoice
    date and the terms of payment instead of keeping one that may now come first."""
    kept: dict[str, Any] = {}
    for key, value in source.items() if isinstance(source, dict) else ():
        name = _CANONICAL.get(str(key).lower())
        if name is None or name in NOT_KEPT or value is None:
            continue
        if name in DATE_FIELDS:
            if redated and name in ("InvoiceDate", "DueDate"):
                continue
            raw = text(value)
            value = raw[:10] if _DATE.match(raw) else value
        kept[name] = value
    return kept


def _is_set(value: object) -> bool:
    """Whether a row property holds more than its default (null, 0, false, empty)."""
    return value is not None and value != "" and value is not False and value != 0


def _row_identity(row: Mapping[str, Any]) -> tuple[str | None, str]:
    """What makes a row the same row: its article (None on a text row) and its text."""
    article = None if truthy(row.get("istextrow")) else guid(row.get("articleid")) or None
    raw = row.get("text")
    return article, "" if raw is None else str(raw)


def _row_label(index: int, row: Mapping[str, Any], article_numbers: Mapping[str, str]) -> str:
    article, words = _row_identity(row)
    name = article_numbers.get(article, "") if article else ""
    shown = words if len(words) <= 40 else words[:39] + "…"
    return f"row {index + 1} ({name + ', ' if name else ''}{shown!r})"


def carry_row_fields(
    source: object, sent: list[dict[str, Any]], article_numbers: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows about to be sent, with the row properties a person set on the draft as read
    (`source`) that the connector does not send itself (ROW_CARRIED) carried over, each onto
    the row it belongs to: the one sent row with the same article and text, when exactly one
    row as read and exactly one row sent have them. And what cannot be kept, in words, one per
    row: a carried property on a row that is not unambiguously one of the rows sent, or a
    setting of ROW_BILLING. Empty when everything a person set is kept."""
    read = [lowered(r) for r in (lowered(source).get("rows") or []) if isinstance(r, dict)]
    read_counts: dict[tuple[str | None, str], int] = {}
    for row in read:
        read_counts[_row_identity(row)] = read_counts.get(_row_identity(row), 0) + 1
    sent_at: dict[tuple[str | None, str], list[int]] = {}
    for index, row in enumerate(sent):
        sent_at.setdefault(_row_identity(lowered(row)), []).append(index)
    carried = [dict(r) for r in sent]
    unkept: list[str] = []
    for index, row in enumerate(read):
        billing = [
            name
            for name in (*ROW_BILLING, "DiscountFixedAmount", "ReversedConstructionServicesVatFree")
            if _is_set(row.get(name.lower()))
        ]
        marks = {name: row[name.lower()] for name in ROW_CARRIED if _is_set(row.get(name.lower()))}
        if not (billing or marks):
            continue
        label = _row_label(index, row, article_numbers)
        if billing:
            what = " and ".join(sorted({_ROW_WORDS[n] for n in billing}))
            unkept.append(f"{label} has {what} ({', '.join(billing)})")
            continue
        identity = _row_identity(row)
        targets = sent_at.get(identity, [])
        if read_counts[identity] != 1 or len(targets) != 1:
            what = " and ".join(sorted({_ROW_WORDS[n] for n in marks}))
            if not targets:
                why = "the new rows have none with its article and text to keep it on"
            else:
                why = "more than one row has its article and text, so which one it is is unclear"
            unkept.append(f"{label} has {what} ({', '.join(marks)}), but {why}")
            continue
        carried[targets[0]].update((name, guid(value)) for name, value in marks.items())
    return carried, unkept
