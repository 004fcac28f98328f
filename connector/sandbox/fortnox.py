"""A stateful fake of the Fortnox API v3, at least as strict as the real API, with fault switches.

Served under /fortnox/3 (API) and /fortnox/oauth-v1 (tokens). It accepts client id `sandbox`,
client secret `sandbox` and tenant id `1234567` (the fake company's DatabaseNumber). Customers,
articles and units are seeded the same whatever ledger is served: every customer of the sample
ledger but one (to show the attention path), and every article of the shipped mappings plus a
few the connector must cope with (no sales price, inactive, another VAT rate).

Where this fake's behaviour comes from, in three kinds:

- recorded: answers of the real API recorded by the accodeing/fortnox-api gem's VCR cassettes
  (`spec/vcr_cassettes/...`), reproduced byte for byte where the brief says so;
- documented: the OpenAPI document (operation descriptions, parameter enums, schemas) and
  Fortnox's developer pages and blog;
- harsher reading: where the real behaviour is unknown, the fake takes the reading that is
  harder on a client (refuse rather than accept, hide rather than show, shuffle rather than
  sort). Every such place says so in a comment, and every error code not seen in a recording
  or in Fortnox's error list is marked as unverified or made up.

docs/fortnox.md carries the table of behaviours and sources; tests/test_fortnox_fake.py pins
each of them.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from connector.http import dumps_exact
from connector.sandbox.app import (
    DropConnection,
    FakeDriver,
    Request,
    Response,
    SandboxApp,
    json_response,
)
from connector.sandbox.sample import FIRST_CUSTOMER, MISSING_CUSTOMER

API = "/fortnox/3"
AUTH = "/fortnox/oauth-v1"
CONTROL = "/_sandbox/fortnox"
CLIENT_ID = "sandbox"
CLIENT_SECRET = "sandbox"  # noqa: S105 - the public test secret of a local fake
COMPANY_NAME = "Sandbox Konsult AB"
ORGANIZATION_NUMBER = "556677-8899"
# The TenantId of the client-credentials flow is the company's DatabaseNumber, as read from
# GET /3/companyinformation (Fortnox's client-credentials guide; NOTES.md section 4).
DATABASE_NUMBER = 1234567
TENANT_ID = str(DATABASE_NUMBER)
TOKEN_LIFETIME = 3600

# Scopes this fake enforces (Fortnox's scopes page: units and locked period are under
# "settings", company information under "companyinformation").
ALL_SCOPES = frozenset({"invoice", "article", "customer", "settings", "companyinformation"})


# --- the registers --------------------------------------------------------------------------


@dataclass
class FakeArticle:
    number: str
    description: str
    sales_price: Decimal | None  # None: the article has no price in the default price list
    unit: str = "h"
    vat: Decimal = Decimal(25)
    account: int = 3041
    active: bool = True


@dataclass
class FakeCustomer:
    number: str
    name: str
    show_price_vat_included: bool = False
    invoice_remark: str = ""
    terms_of_payment: str = "30"
    currency: str = "SEK"
    # DefaultDeliveryTypes.Invoice (OpenAPI enum PRINT, EMAIL, PRINTSERVICE; ELECTRONICINVOICE
    # is handled too) and the e-mail address invoices go to.
    invoice_delivery: str = "EMAIL"
    email_invoice: str = "ekonomi@kund.example"


# The articles of mappings/service-categories.toml, and two no mapping uses: an inactive one
# and one with another unit, VAT rate and account (VAT and account are inherited by rows).
SEED_ARTICLES: dict[str, FakeArticle] = {
    a.number: a
    for a in (
        FakeArticle("SK-INST", "Installation", Decimal("1150.00")),
        FakeArticle("SK-UTB", "Utbildning", Decimal("1050.00")),
        FakeArticle("SK-KONF", "Konfiguration", Decimal("1150.00")),
        FakeArticle("SK-KONFAND", "Konfigurationsändring", Decimal("1150.00")),
        FakeArticle("SK-FELSOK", "Felsökning", Decimal("1250.00")),
        FakeArticle("SK-PROJ", "Projekt", Decimal("1195.00")),
        FakeArticle("SK-PL", "Projektledning", None),
        FakeArticle("SK-DATA", "Dataunderhåll", None),
        FakeArticle("SK-RAD", "Verksamhetsrådgivning", Decimal("1350.00"), account=3044),
        FakeArticle("SK-FORBET", "Förbetalda timmar", Decimal("1050.00"), account=3042),
        FakeArticle("SK-GAMMAL", "Gammal tjänst (utgången)", Decimal("900.00"), active=False),
        FakeArticle(
            "SK-BOK", "Handbok", Decimal("250.00"), unit="st", vat=Decimal(6), account=3045
        ),
    )
}
# Unit code -> description (units/all.yml records h "timmar" and st "styck").
SEED_UNITS: dict[str, str] = {"h": "timmar", "st": "styck"}
_UNIT_ENGLISH = {"h": "h", "st": "pcs"}  # units/all.yml
# Terms of payment code -> days (termsofpayments/all.yml records 0, 10, 15, 20 and 30 days).
TERMS_OF_PAYMENT: dict[str, int] = {"0": 0, "10": 10, "15": 15, "20": 20, "30": 30}
VAT_RATES = frozenset({Decimal(0), Decimal(6), Decimal(12), Decimal(25)})  # Sweden's rates

_NAMES = (
    "Norrsken Data", "Fjällbyggen", "Kustlinjen Logistik", "Älvdalens Trä", "Solgläntan Vård",
    "Bergslagens Mekaniska", "Stadsodlarna", "Havsörn Konsult", "Lindgården Fastigheter",
    "Vinterviken Media",
)  # fmt: skip
# Customer cards whose "predefined values" differ from the defaults.
_CUSTOMER_CARDS: dict[str, dict[str, Any]] = {
    "1004": {"invoice_remark": "Ange PO-nummer 4711 vid betalning."},
    "1005": {"show_price_vat_included": True},
    "1006": {"terms_of_payment": "10"},
    "1007": {"invoice_delivery": "PRINT"},
}


def seed_customers(count: int = 40) -> dict[str, FakeCustomer]:
    numbers = [str(FIRST_CUSTOMER + n) for n in range(count)]
    return {
        n: FakeCustomer(
            n, f"{_NAMES[i % len(_NAMES)]} {i // len(_NAMES) + 1} AB", **_CUSTOMER_CARDS.get(n, {})
        )
        for i, n in enumerate(numbers)
        if n != MISSING_CUSTOMER
    }


# Fields of fortnox_InvoicePayload and its rows (OpenAPI document) the fake accepts.
PAYLOAD_FIELDS = {
    "Address1", "Address2", "AdministrationFee", "City", "Comments", "CostCenter", "Country",
    "CreditInvoiceReference", "Currency", "CurrencyRate", "CurrencyUnit", "CustomerName",
    "CustomerNumber", "DeliveryAddress1", "DeliveryAddress2", "DeliveryCity", "DeliveryCountry",
    "DeliveryDate", "DeliveryName", "DeliveryZipCode", "DocumentNumber", "DueDate",
    "EDIInformation", "EUQuarterlyReport", "EmailInformation", "ExternalInvoiceReference1",
    "ExternalInvoiceReference2", "Freight", "InvoiceDate", "InvoiceRows", "InvoiceType",
    "Labels", "Language", "NotCompleted", "OCR", "OurReference", "OutboundDate", "PaymentWay",
    "Phone1", "Phone2", "PriceList", "PrintTemplate", "Project", "Remarks", "TaxReductionType",
    "TermsOfDelivery", "TermsOfPayment", "VATIncluded", "WayOfDelivery", "YourOrderNumber",
    "YourReference", "ZipCode",
}  # fmt: skip
ROW_FIELDS = {
    "AccountNumber", "ArticleNumber", "CostCenter", "DeliveredQuantity", "Description",
    "Discount", "DiscountType", "HouseWork", "HouseWorkHoursToReport", "HouseWorkType", "Price",
    "Project", "RowId", "StockPointCode", "Unit", "VAT", "VATCode",
}  # fmt: skip
_MAX_LENGTH = {
    "ExternalInvoiceReference1": 80, "Remarks": 1024, "YourReference": 50, "CustomerName": 1024,
}  # fmt: skip
# Row fields a person may set with edit_row (the ones the fake stores).
_EDITABLE_ROW_FIELDS = {
    "ArticleNumber", "Description", "DeliveredQuantity", "Price", "Unit", "VAT", "AccountNumber",
}  # fmt: skip

# Error codes. Recorded or listed on Fortnox's error page unless marked otherwise.
E_NOT_ALPHANUMERIC = 2000106
E_NOT_NUMERIC = 2000108
E_NOT_BOOLEAN = 2000134
E_INVALID_CHARACTERS = 2000359
E_LOCKED_PERIOD = 2000401  # helpdesk.sharespine.com, "Fortnox error 2000401"
E_ARTICLE_NOT_FOUND = 2000428  # articles/find_failure.yml
E_TERMS_NOT_FOUND = 2000429  # termsofpayments/find_failure.yml (a GET; on a write: unverified)
E_UNIT_NOT_FOUND = 2000432  # units/find_failure.yml
E_CUSTOMER_NOT_FOUND = 2000433  # customers/find_failure.yml
E_INVOICE_NOT_FOUND = 2000434  # invoices/find_failure.yml
E_INVALID_FILTER = 2000587  # invoices/filter_invalid.yml
E_INVALID_PARAMETER = 2000588  # Fortnox's error list: "Ogiltig parameter i anropet."
E_NO_SCOPE = 2000663  # Fortnox's error list: no access to the scope
E_UNKNOWN_RESOURCE = 2000729  # "A valid identifier was not provided."
E_CUSTOMER_MISSING = 2000204  # Fortnox's error list: customer not found (on a write)
E_ACCOUNT_NOT_FOUND = 2001304  # Fortnox's error list: "Kunde inte hitta konto"
E_ARTICLE_MISSING = 2001302  # Fortnox's error list: article not found (on a write)
E_BAD_BODY = 2001392
E_BAD_FIELD = 2001399
E_BAD_JSON = 2002115
# MADE UP: the real code for "this invoice is booked (or cancelled) and cannot be changed" is
# unknown. It is NOT 2003125, which means a warehouse document marked complete. The same made-up
# code serves the other refusals whose real code is unknown (bad date, VAT rate not found).
E_DOCUMENT_STATE = 2000999
E_UNVERIFIED = E_DOCUMENT_STATE


@dataclass
class Faults:
    """Fault switches, settable on the command line and through POST /_sandbox/faults."""

    latency_ms: int = 0  # added to every API answer
    error_rate: float = 0.0  # share of API requests answered 503 before doing anything
    lost_create_rate: float = 0.0  # share of creates stored, then the connection dropped
    lost_update_rate: float = 0.0  # share of updates applied, then the connection dropped
    # Share of bookings and sendings (Fortnox: bookkeep, email, einvoice, eprint; Visma: convert,
    # email, einvoice) done, then the connection dropped.
    lost_action_rate: float = 0.0
    rate_429: float = 0.0  # share of API requests answered 429
    force_429: int = 0  # the next N API requests are answered 429
    # An invoice created less than this many seconds ago (fake clock) is missing from
    # GET /invoices. How fresh Fortnox's search is is unknown: the harsher reading is a lag.
    search_lag_seconds: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            setattr(self, name, self._parse(name, value))
        self.rng = random.Random(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        """Set switches by name; unknown names and out-of-range values raise ValueError and
        change nothing."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fault switch: {', '.join(unknown)}")
        parsed = {name: self._parse(name, value) for name, value in values.items()}
        for name, value in parsed.items():
            setattr(self, name, value)
        if "seed" in parsed:
            self.rng = random.Random(self.seed)

    @staticmethod
    def _parse(name: str, value: object) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise ValueError(f"{name} must be a number, not {value!r}")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{name} must be a number, not {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"{name} must be a finite number")
        if name in {"latency_ms", "force_429", "seed"}:
            if number != number.to_integral_value():
                raise ValueError(f"{name} must be a whole number")
            if name != "seed" and number < 0:
                raise ValueError(f"{name} must not be negative")
            return int(number)
        rates = {
            "error_rate",
            "lost_create_rate",
            "lost_update_rate",
            "lost_action_rate",
            "rate_429",
        }
        if name in rates and not 0 <= number <= 1:
            raise ValueError(f"{name} must be between 0 and 1")
        if number < 0:
            raise ValueError(f"{name} must not be negative")
        return float(number)

    def hit(self, share: float) -> bool:
        return share > 0 and self.rng.random() < share

    def public(self) -> dict[str, Any]:
        return asdict(self)


# --- answers ---------------------------------------------------------------------------------


def _escape(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]  # \\uXXXX, a surrogate pair beyond the BMP


def _answer(status: int, payload: Any) -> Response:
    """JSON as the API writes it: non-ASCII characters as \\u escapes and "/" as "\\/"
    (invoices/filter_invalid.yml: "anv\\u00e4nts"; invoices/all.yml: "https:\\/\\/api...").
    Numbers are written exactly, never via float."""
    text = dumps_exact(payload).replace("/", "\\/")
    body = re.sub(r"[^\x00-\x7f]", _escape, text).encode("ascii")
    return Response(status, body, {"Content-Type": "application/json"})


def _error(status: int, code: int, message: str) -> Response:
    """ErrorInformation with lowercase keys: what Fortnox answers to writes and bad queries
    (invoices/filter_invalid.yml)."""
    return _answer(status, {"ErrorInformation": {"error": 1, "message": message, "code": code}})


def _not_found(code: int, message: str) -> Response:
    """404 ErrorInformation with CAPITALISED keys, as recorded for every GET of a missing
    resource (invoices/, articles/, customers/, units/ find_failure.yml)."""
    return _answer(404, {"ErrorInformation": {"Error": 1, "Message": message, "Code": code}})


def _oauth_error(status: int, body: dict[str, str], content_type: str) -> Response:
    return Response(status, dumps_exact(body).encode(), {"Content-Type": content_type})


_OAUTH_400_TYPE = "text/html; charset=UTF-8"  # authentication/invalid_refresh_token.yml
_OAUTH_401_TYPE = "text/plain;charset=UTF-8"  # authentication/invalid_authorization.yml


class _Invalid(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("invalid")
        self.response = response


def _invalid(code: int, message: str, status: int = 400) -> _Invalid:
    return _Invalid(_error(status, code, message))


# --- numbers ---------------------------------------------------------------------------------

_CENT = Decimal("0.01")


def _decimal(value: object) -> Decimal | None:
    """A finite Decimal from a JSON number or numeric string, else None."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _round2(value: Decimal) -> Decimal:
    """Half up to two decimals, as Fortnox stores quantities and prices
    (invoices/row_price_limit_round_up.yml: 1.125 -> 1.13)."""
    try:
        return value.quantize(_CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise _invalid(E_NOT_NUMERIC, f"Värdet måste vara numeriskt ({value})") from None


def _plain(value: Decimal) -> Decimal:
    """A number written the way Fortnox writes it: no trailing zeros, never an exponent
    (Price 10, 1.12; recorded throughout invoices/). Callers pass at most two decimals."""
    if value == 0:
        return Decimal(0)
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def _quantity_text(value: Decimal) -> str:
    return str(_plain(_round2(value)))


def _iso_date(value: object) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


# --- the rate limit window and OAuth records ----------------------------------------------------


@dataclass
class _Window:
    limit: int
    period: float
    clock: Callable[[], float]
    times: deque[float] = field(default_factory=deque)

    def admit(self) -> bool:
        now = self.clock()
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


@dataclass(frozen=True)
class _Code:
    scopes: frozenset[str]
    account_type: str
    redirect_uri: str | None


@dataclass(frozen=True)
class _Token:
    expires: float
    scopes: frozenset[str]


# --- list queries --------------------------------------------------------------------------------

_PAGING = frozenset({"limit", "page", "offset", "sortby", "sortorder"})


@dataclass(frozen=True)
class _ListQuery:
    """The query parameters one list operation accepts. `specific` groups are the
    resource-specific search filters: Fortnox says "only one resource specific filter can be
    used at a time" (parameters guide). `combinable` are the global ones that may go with one.
    A from/to pair counts as one filter."""

    specific: tuple[frozenset[str], ...]
    combinable: frozenset[str]
    filters: frozenset[str]
    sorts: frozenset[str]

    def allowed(self) -> frozenset[str]:
        return frozenset().union(*self.specific) | self.combinable | _PAGING


def _groups(*names: str) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(n.split("+")) for n in names)


# GET /3/invoices: exactly the parameters of operation list_20 in the OpenAPI document.
_INVOICE_QUERY = _ListQuery(
    specific=_groups(
        "costcenter", "customername", "customernumber", "label", "documentnumber",
        "fromfinalpaydate+tofinalpaydate", "notcompleted", "ocr", "ourreference", "project",
        "sent", "externalinvoicereference1", "externalinvoicereference2", "yourreference",
        "invoicetype", "articlenumber", "articledescription", "currency",
        "accountnumberfrom+accountnumberto", "yourordernumber", "credit",
    ),
    combinable=frozenset({"filter", "fromdate", "todate", "lastmodified"}),
    filters=frozenset({"cancelled", "fullypaid", "unpaid", "unpaidoverdue", "unbooked"}),
    sorts=frozenset({"customername", "customernumber", "documentnumber", "invoicedate", "ocr",
                     "total"}),
)  # fmt: skip
# GET /3/articles and GET /3/customers: their parameters in the OpenAPI document.
_ARTICLE_QUERY = _ListQuery(
    specific=_groups(
        "articlenumber", "description", "ean", "suppliernumber", "manufacturer",
        "manufacturerarticlenumber", "webshop",
    ),
    combinable=frozenset({"filter", "lastmodified"}),
    filters=frozenset({"active", "inactive"}),
    sorts=frozenset({"articlenumber", "quantityinstock", "reservedquantity", "stockvalue"}),
)  # fmt: skip
_CUSTOMER_QUERY = _ListQuery(
    specific=_groups(
        "customernumber", "name", "zipcode", "city", "email", "phone", "organisationnumber",
        "gln", "glndelivery",
    ),
    combinable=frozenset({"filter", "lastmodified"}),
    filters=frozenset({"active", "inactive"}),
    sorts=frozenset({"customernumber", "name"}),
)  # fmt: skip
# GET /3/units: the OpenAPI document lists no parameter at all.
_UNIT_QUERY = _ListQuery(specific=(), combinable=frozenset(), filters=frozenset(),
                         sorts=frozenset())  # fmt: skip

_BAD_PARAMETER = "Ogiltig parameter i anropet."
_BAD_FILTER = "Ett ogiltigt filter har använts."


def _check_query(request: Request, spec: _ListQuery) -> None:
    names = set(request.query)
    if names - spec.allowed():
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
    # Harsher reading: two resource-specific filters at once are refused, not combined.
    if sum(1 for group in spec.specific if names & group) > 1:
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
    flt = request.arg("filter")
    if flt is not None and flt not in spec.filters:
        raise _invalid(E_INVALID_FILTER, _BAD_FILTER)
    sort = request.arg("sortby")
    if sort is not None and sort not in spec.sorts:
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
    if request.arg("sortorder") not in {None, "ascending", "descending"}:
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
    modified = request.arg("lastmodified")
    if modified is not None and not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?", modified
    ):
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)


def _contains(value: object, wanted: str) -> bool:
    """Fortnox's search: ILIKE '%value%' (parameters guide), so a case-insensitive substring."""
    return wanted.lower() in str(value).lower()


def _flag(request: Request, name: str) -> bool | None:
    raw = request.arg(name)
    if raw is None:
        return None
    if raw.lower() not in {"true", "false"}:
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
    return raw.lower() == "true"


def _date_arg(request: Request, name: str) -> date | None:
    raw = request.arg(name)
    if raw is None:
        return None
    parsed = _iso_date(raw)
    if parsed is None:
        raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
    return parsed


def stockholm_time(moment: datetime) -> datetime:
    """A moment as a naive Stockholm wall-clock time (CET, CEST from the last Sunday of March
    to the last Sunday of October, both at 01:00 UTC: the EU rule). Written out rather than
    read from the system's zone data, which a slim container may lack."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)

    def last_sunday(month: int) -> datetime:
        day = datetime(utc.year, month, 31 if month in (3, 10) else 30, 1)
        return day - timedelta(days=(day.weekday() + 1) % 7)

    summer = last_sunday(3) <= utc < last_sunday(10)
    return utc + timedelta(hours=2 if summer else 1)


def _lastmodified_arg(request: Request) -> datetime | None:
    """`lastmodified` as the parameters guide shows it ("2019-03-10 12:30"), to the second as
    SDKs send it, or a bare date (midnight): a Stockholm wall-clock time (NOTES section 7.9:
    local time, UNCERTAIN, so the fake reads it the way that hides the most, see
    FortnoxFake.lastmodified_resolution)."""
    raw = request.arg("lastmodified")
    if raw is None:
        return None
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, form)
        except ValueError:
            continue
    raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)


_SUMMARY_FIELDS = (
    "DocumentNumber", "CustomerNumber", "CustomerName", "ExternalInvoiceReference1",
    "Booked", "Cancelled", "Sent", "Currency", "Total", "InvoiceDate", "DueDate",
    "VATIncluded", "Remarks",
)  # fmt: skip
# Of fortnox_InvoiceListItem, the fields the fake stores. No rows, no VATIncluded, no
# Remarks: a client must GET the invoice for those.
_LIST_FIELDS = (
    "DocumentNumber", "CustomerNumber", "CustomerName", "ExternalInvoiceReference1",
    "Currency", "InvoiceDate", "DueDate", "TermsOfPayment", "Booked", "Cancelled", "Sent",
    "Total",
)  # fmt: skip
# Search parameters over fields the fake stores ...
_TEXT_SEARCH = {
    "customername": "CustomerName",
    "customernumber": "CustomerNumber",
    "documentnumber": "DocumentNumber",
    "externalinvoicereference1": "ExternalInvoiceReference1",
    "currency": "Currency",
}
# ... and over fields it does not store (empty on every invoice of the fake).
_EMPTY_SEARCH = (
    "costcenter", "label", "ocr", "ourreference", "project", "externalinvoicereference2",
    "yourreference", "yourordernumber",
)  # fmt: skip


class FortnoxFake:
    def __init__(
        self,
        app: SandboxApp,
        *,
        rate_limit: str = "25/5",
        faults: Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.app = app
        count, _, seconds = rate_limit.partition("/")
        self.window = _Window(int(count), float(seconds), clock)
        self.faults = faults or Faults()
        self.clock = clock
        self.sleep = sleep
        self.today = today
        # The fake's own generator: the order of an unsorted invoice list.
        self.rng = random.Random(self.faults.seed)
        self.articles: dict[str, FakeArticle] = {}
        self.customers: dict[str, FakeCustomer] = {}
        self.units: dict[str, str] = {}
        self.terms_of_payment: dict[str, int] = {}
        self._seed_registers()
        self.invoices: dict[int, dict[str, Any]] = {}
        self.locked_through: date | None = None
        # Whether a PUT with a new InvoiceDate and no DueDate moves the due date by the terms
        # of payment, as Fortnox's invoice form does. UNCERTAIN for the API: False is the
        # harsher reading (the old due date stays), for tests that the connector catches it.
        self.redate_moves_due_date = True
        # When each invoice last changed (wall clock, UTC), by the API or by a person: what
        # GET /invoices?lastmodified= filters on. Fortnox documents neither the resolution nor
        # whether "modified after" is strict: the fake keeps Stockholm wall-clock times cut to
        # this many seconds and lists an invoice only when that is strictly after the
        # parameter. Harsher reading (it hides the most): a change in the same minute as the
        # parameter is not listed, so a proof of "unchanged" built on the filter fails here.
        self.lastmodified_resolution = 60
        self.wall: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._modified: dict[int, datetime] = {}
        # Every PUT or cancel accepted on an invoice whose Sent was true (the real API accepts
        # both): tests use it to prove the connector never does that.
        self.modified_while_sent: list[int] = []
        # Every invoice the API sent to a customer: (document number, how), in order.
        self.deliveries: list[tuple[int, str]] = []
        self._created_at: dict[int, float] = {}
        self._row_ids = itertools.count(1)  # RowIds are never reused, not even after reset()
        self.access_tokens: dict[str, _Token] = {}
        self.refresh_tokens: dict[str, frozenset[str]] = {}
        self.codes: dict[str, _Code] = {}
        # Tenant -> scopes consented for the client-credentials flow. The seeded tenant has a
        # standing consent with every scope.
        self.consents: dict[str, frozenset[str]] = {TENANT_ID: ALL_SCOPES}
        self.rate_limited = 0
        self.token_grants: dict[str, int] = {}
        app.add_route("GET", f"{API}/*", self._api)
        app.add_route("POST", f"{API}/*", self._api)
        app.add_route("PUT", f"{API}/*", self._api)
        app.add_route("POST", f"{AUTH}/token", self._token)
        app.add_route("GET", f"{AUTH}/auth", self._authorize)
        app.add_route("POST", CONTROL, self._control)
        app.extensions["fortnox"] = self

    def _seed_registers(self) -> None:
        self.articles = {n: replace(a) for n, a in SEED_ARTICLES.items()}
        self.customers = seed_customers()
        self.units = dict(SEED_UNITS)
        self.terms_of_payment = dict(TERMS_OF_PAYMENT)

    # --- sandbox controls -----------------------------------------------------------------

    def reset(self) -> None:
        """Forget every invoice, the locked period and the counters; registers back to seed.
        Tokens and consents stay."""
        self.invoices.clear()
        self._created_at.clear()
        self._modified.clear()
        self.modified_while_sent.clear()
        self.deliveries.clear()
        self.locked_through = None
        self._seed_registers()
        self.rate_limited = 0
        self.window.times.clear()
        self.token_grants.clear()

    def state(self) -> dict[str, Any]:
        return {
            "invoices": [self._summary(i) for i in self.invoices.values()],
            "locked_through": self.locked_through.isoformat() if self.locked_through else None,
            "modified_while_sent": list(self.modified_while_sent),
            "rate_limited": self.rate_limited,
            "token_grants": dict(self.token_grants),
            "faults": self.faults.public(),
        }

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def touch(self, number: int) -> None:
        """Record a change to the invoice now, for the lastmodified filter."""
        self._modified[number] = self.wall()

    def modified_after(self, number: int, since: datetime) -> bool:
        """Whether GET /invoices?lastmodified= with this Stockholm wall-clock time lists the
        invoice: its last change, in Stockholm time cut to the resolution, strictly after."""
        changed = self._modified.get(number)
        if changed is None:
            return False
        local = stockholm_time(changed)
        step = max(1, int(self.lastmodified_resolution))
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        cut = local.replace(microsecond=0) - timedelta(seconds=seconds % step)
        return cut > since

    def mark_sent(self, number: int) -> None:
        """A person sends the invoice (or marks it sent) in Fortnox."""
        self.invoices[number]["Sent"] = True
        self.touch(number)

    def bookkeep(self, number: int) -> None:
        """A person books the invoice in Fortnox."""
        invoice = self.invoices[number]
        if invoice["Cancelled"]:
            raise ValueError(f"invoice {number} is cancelled and cannot be booked")
        invoice["Booked"] = True
        self.touch(number)

    def cancel(self, number: int) -> None:
        """A person cancels the invoice in Fortnox."""
        invoice = self.invoices[number]
        if invoice["Booked"]:
            raise ValueError(f"invoice {number} is booked and cannot be cancelled")
        invoice["Cancelled"] = True
        self.touch(number)

    def edit_row(self, number: int, index: int, **values: Any) -> None:
        """A person edits row `index` (from 0) of a draft in Fortnox's UI: sets the given
        Fortnox fields (ArticleNumber, Description, DeliveredQuantity, Price, Unit, VAT,
        AccountNumber). Saving is an update, so every row gets a new RowId, as after a PUT."""
        invoice = self.invoices[number]
        if invoice["Booked"] or invoice["Cancelled"]:
            raise ValueError(f"invoice {number} is booked or cancelled and cannot be edited")
        unknown = sorted(set(values) - _EDITABLE_ROW_FIELDS)
        if unknown:
            raise ValueError(f"not an editable row field: {', '.join(unknown)}")
        if "DeliveredQuantity" in values:
            values["DeliveredQuantity"] = str(values["DeliveredQuantity"])
        try:
            self._check_row(values)
            row = self._update_row(invoice["InvoiceRows"][index], values)
        except _Invalid as invalid:
            raise ValueError(invalid.response.body.decode()) from None
        invoice["InvoiceRows"][index] = row
        self._renumber(invoice)
        invoice["Total"] = self._total(invoice["InvoiceRows"])
        self.touch(number)

    def delete_row(self, number: int, index: int) -> None:
        """A person deletes row `index` (from 0) of a draft in Fortnox's UI and saves: every
        row left gets a new RowId, as after a PUT."""
        invoice = self.invoices[number]
        if invoice["Booked"] or invoice["Cancelled"]:
            raise ValueError(f"invoice {number} is booked or cancelled and cannot be edited")
        del invoice["InvoiceRows"][index]
        self._renumber(invoice)
        invoice["Total"] = self._total(invoice["InvoiceRows"])
        self.touch(number)

    def live_by_key(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for invoice in self.invoices.values():
            if not invoice["Cancelled"]:
                found.setdefault(invoice["ExternalInvoiceReference1"], []).append(invoice)
        return found

    def neutral_invoices(self) -> list[dict[str, Any]]:
        """Every invoice in the neutral shape the test oracle shares with the fake Visma: the
        key is ExternalInvoiceReference1; "open" is unbooked, unsent and uncancelled, "closed"
        booked or sent, "gone" cancelled."""
        found = []
        for invoice in self.invoices.values():
            if invoice["Cancelled"]:
                state = "gone"
            elif invoice["Booked"] or invoice["Sent"]:
                state = "closed"
            else:
                state = "open"
            found.append(
                {
                    "number": invoice["DocumentNumber"],
                    "remote_id": invoice["DocumentNumber"],
                    "key": invoice["ExternalInvoiceReference1"],
                    "customer_number": invoice["CustomerNumber"],
                    "currency": invoice["Currency"],
                    "state": state,
                    "vat_included": invoice["VATIncluded"],
                    "rows": [
                        {
                            "article": row["ArticleNumber"],
                            "description": row["Description"],
                            "quantity": Decimal(row["DeliveredQuantity"]),
                            "price": Decimal(row["Price"]),
                            "unit": row["Unit"],
                            "vat": Decimal(row["VAT"]),
                        }
                        for row in invoice["InvoiceRows"]
                    ],
                }
            )
        return found

    def _control(self, request: Request) -> Response:
        """POST /_sandbox/fortnox: {"locked_through": "YYYY-MM-DD" | null, "mark_sent": [n],
        "bookkeep": [n], "cancel": [n]}, all optional. Checked whole before anything changes."""
        try:
            body = request.json()
        except ValueError:
            return json_response(400, {"error": "body must be a JSON object"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "body must be a JSON object"})
        unknown = sorted(set(body) - {"locked_through", "mark_sent", "bookkeep", "cancel"})
        if unknown:
            return json_response(400, {"error": f"unknown key: {', '.join(unknown)}"})
        lock = self.locked_through
        if "locked_through" in body:
            raw = body["locked_through"]
            lock = None if raw is None else _iso_date(raw)
            if raw is not None and lock is None:
                return json_response(400, {"error": "locked_through must be YYYY-MM-DD or null"})
        lists: dict[str, list[int]] = {}
        for key in ("mark_sent", "bookkeep", "cancel"):
            numbers = body.get(key, [])
            if not isinstance(numbers, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n in self.invoices
                for n in numbers
            ):
                return json_response(400, {"error": f"{key} must list existing invoice numbers"})
            lists[key] = numbers
        if set(lists["bookkeep"]) & set(lists["cancel"]):
            return json_response(400, {"error": "an invoice cannot be booked and cancelled"})
        if any(self.invoices[n]["Cancelled"] for n in lists["bookkeep"]) or any(
            self.invoices[n]["Booked"] for n in lists["cancel"]
        ):
            return json_response(
                400, {"error": "booked invoices cannot be cancelled, nor cancelled ones booked"}
            )
        self.locked_through = lock
        for n in lists["mark_sent"]:
            self.mark_sent(n)
        for n in lists["bookkeep"]:
            self.bookkeep(n)
        for n in lists["cancel"]:
            self.cancel(n)
        return json_response(200, self.state())

    # --- OAuth ----------------------------------------------------------------------------

    def issue_code(
        self,
        scopes: Iterable[str] = ALL_SCOPES,
        account_type: str = "",
        redirect_uri: str | None = None,
    ) -> str:
        """An authorization code as if a person had consented. A code issued with
        account_type=service also records the tenant's consent for the client-credentials
        flow, with the same scopes."""
        code = "sandbox-code-" + secrets.token_urlsafe(8)
        granted = frozenset(scopes)
        self.codes[code] = _Code(granted, account_type, redirect_uri)
        if account_type == "service":
            self.consents[TENANT_ID] = granted
        return code

    def _authorize(self, request: Request) -> Response:
        if request.arg("client_id") != CLIENT_ID:
            return json_response(400, {"error": "invalid_client"})
        if request.arg("response_type") != "code":
            return json_response(400, {"error": "unsupported_response_type"})
        redirect = request.arg("redirect_uri") or ""
        scopes = (request.arg("scope") or "").split()
        code = self.issue_code(scopes, request.arg("account_type") or "", redirect)
        query = urlencode({"code": code, "state": request.arg("state") or ""})
        return Response(302, b"", {"Location": f"{redirect}?{query}"})

    def _new_access(self, scopes: frozenset[str]) -> str:
        token = "sandbox-at-" + secrets.token_urlsafe(12)
        self.access_tokens[token] = _Token(self.clock() + TOKEN_LIFETIME, scopes)
        return token

    def _new_refresh(self, scopes: frozenset[str]) -> str:
        token = "sandbox-rt-" + secrets.token_urlsafe(12)
        self.refresh_tokens[token] = scopes
        return token

    def seed_refresh_token(self, scopes: Iterable[str] = ALL_SCOPES) -> str:
        return self._new_refresh(frozenset(scopes))

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            # authentication/invalid_authorization.yml, byte for byte.
            return _oauth_error(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "The client credentials are invalid",
                },
                _OAUTH_401_TYPE,
            )
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type", "")
        self.token_grants[grant] = self.token_grants.get(grant, 0) + 1
        if grant == "client_credentials":
            # The answer for a missing consent is unrecorded; the content type follows the
            # recorded 400 of this endpoint.
            scopes = self.consents.get(request.headers.get("tenantid", ""))
            if scopes is None:
                return _oauth_error(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "No consent for this TenantId",
                    },
                    _OAUTH_400_TYPE,
                )
            return self._granted(scopes, refresh=False)
        if grant == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            if code is None or (
                code.redirect_uri is not None and form.get("redirect_uri") != code.redirect_uri
            ):
                return _oauth_error(
                    400,
                    {"error": "invalid_grant", "error_description": "Invalid authorization code"},
                    _OAUTH_400_TYPE,
                )
            return self._granted(code.scopes, refresh=True)
        if grant == "refresh_token":
            scopes = self.refresh_tokens.pop(form.get("refresh_token", ""), None)  # single use
            if scopes is None:
                # authentication/invalid_refresh_token.yml, byte for byte.
                return _oauth_error(
                    400,
                    {"error": "invalid_grant", "error_description": "Invalid refresh token"},
                    _OAUTH_400_TYPE,
                )
            return self._granted(scopes, refresh=True)
        return _oauth_error(400, {"error": "unsupported_grant_type"}, _OAUTH_400_TYPE)

    def _granted(self, scopes: frozenset[str], *, refresh: bool) -> Response:
        # Field order of authentication/valid_request.yml.
        body: dict[str, Any] = {
            "access_token": self._new_access(scopes),
            "expires_in": TOKEN_LIFETIME,
            "token_type": "bearer",
            "scope": " ".join(sorted(scopes)),
        }
        if refresh:
            body["refresh_token"] = self._new_refresh(scopes)
        return json_response(200, body)

    # --- the API --------------------------------------------------------------------------

    def _api(self, request: Request) -> Response:
        if self.faults.latency_ms:
            self.sleep(self.faults.latency_ms / 1000)
        token = self.access_tokens.get(
            request.headers.get("authorization", "").removeprefix("Bearer ")
        )
        if token is None or token.expires <= self.clock():
            # authentication/expired_token.yml, byte for byte.
            return _answer(401, {"message": "unauthorized"})
        if (
            self.faults.force_429 > 0
            or self.faults.hit(self.faults.rate_429)
            or not (self.window.admit())
        ):
            self.faults.force_429 = max(0, self.faults.force_429 - 1)
            self.rate_limited += 1
            return _answer(429, {"message": "Too Many Requests"})
        if self.faults.hit(self.faults.error_rate):
            return Response(
                503, b"<html><body>Service Unavailable</body></html>", {"Content-Type": "text/html"}
            )
        path = request.path[len(API) :]
        try:
            return self._route(request, path, token.scopes)
        except _Invalid as invalid:
            return invalid.response

    def _route(self, request: Request, path: str, scopes: frozenset[str]) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        resource = parts[0] if parts else ""
        needed = {
            "invoices": "invoice",
            "articles": "article",
            "customers": "customer",
            "units": "settings",
            "settings": "settings",
            "companyinformation": "companyinformation",
        }.get(resource)
        if needed is None:
            return _error(404, E_UNKNOWN_RESOURCE, f"Okänd resurs {request.method} {path}")
        if needed not in scopes:
            return _error(403, E_NO_SCOPE, "Har inte behörighet för scope")
        method, rest = request.method, parts[1:]
        if resource == "invoices":
            return self._invoices(request, method, rest)
        if method != "GET":
            return _error(404, E_UNKNOWN_RESOURCE, f"Okänd resurs {request.method} {path}")
        if resource == "articles" and not rest:
            return self._list_articles(request)
        if resource == "articles" and len(rest) == 1:
            article = self.articles.get(rest[0])
            if article is None:
                return _not_found(E_ARTICLE_NOT_FOUND, "Kan inte hitta artikeln.")
            return _answer(200, {"Article": self._article_detail(article)})
        if resource == "customers" and not rest:
            return self._list_customers(request)
        if resource == "customers" and len(rest) == 1:
            customer = self.customers.get(rest[0])
            if customer is None:
                return _not_found(E_CUSTOMER_NOT_FOUND, "Kan inte hitta kunden.")
            return _answer(200, {"Customer": self._customer_detail(customer)})
        if resource == "units" and not rest:
            _check_query(request, _UNIT_QUERY)
            items = [self._unit(code) for code in sorted(self.units)]
            return _answer(200, self._paged("Units", items, request))
        if resource == "units" and len(rest) == 1:
            if rest[0] not in self.units:
                return _not_found(E_UNIT_NOT_FOUND, "Kan inte hitta enheten.")
            return _answer(200, {"Unit": self._unit(rest[0])})
        if resource == "settings" and rest == ["lockedperiod"]:
            # "If no date is returned, no period is locked." (OpenAPI, GET lockedperiod)
            locked = {"EndDate": self.locked_through.isoformat()} if self.locked_through else {}
            return _answer(200, {"LockedPeriod": locked})
        if resource == "companyinformation" and not rest:
            return _answer(
                200,
                {
                    "CompanyInformation": {
                        "CompanyName": COMPANY_NAME,
                        "DatabaseNumber": DATABASE_NUMBER,
                        "OrganizationNumber": ORGANIZATION_NUMBER,
                    }
                },
            )
        return _error(404, E_UNKNOWN_RESOURCE, f"Okänd resurs {request.method} {path}")

    def _invoices(self, request: Request, method: str, rest: list[str]) -> Response:
        if not rest:
            if method == "GET":
                return self._list_invoices(request)
            if method == "POST":
                return self._create(request)
            return _error(404, E_UNKNOWN_RESOURCE, f"Okänd resurs {method} /invoices")
        action = rest[1] if len(rest) == 2 else None
        known = {
            ("GET", None), ("PUT", None), ("PUT", "bookkeep"), ("PUT", "cancel"),
            ("PUT", "externalprint"), ("GET", "email"), ("GET", "einvoice"), ("GET", "eprint"),
        }  # fmt: skip
        if len(rest) > 2 or (method, action) not in known:
            return _error(
                404, E_UNKNOWN_RESOURCE, f"Okänd resurs {method} /invoices/{'/'.join(rest)}"
            )
        number = int(rest[0]) if rest[0].isdigit() else None
        invoice = self.invoices.get(number) if number is not None else None
        if number is None or invoice is None:
            return _not_found(E_INVOICE_NOT_FOUND, "Kan inte hitta fakturan.")
        if method == "GET" and action is None:
            return _answer(200, {"Invoice": invoice})
        if action is None:
            return self._update(number, invoice, request)
        if action == "bookkeep":
            if invoice["Cancelled"]:
                return _error(400, E_DOCUMENT_STATE, "Fakturan är makulerad och kan inte bokföras")
            if invoice["Booked"]:
                # Made-up code and wording: the real answer to booking a booked invoice is
                # unrecorded. Harsher reading: refused, so a client must read before it books.
                return _error(400, E_DOCUMENT_STATE, "Fakturan är redan bokförd")
            self._check_lock(invoice["InvoiceDate"])
            invoice["Booked"] = True
            self.touch(number)
            if self.faults.hit(self.faults.lost_action_rate):
                raise DropConnection  # booked, but the answer never arrives
        elif action in ("email", "einvoice", "eprint"):
            return self._deliver(number, invoice, action)
        elif action == "cancel":
            if invoice["Booked"]:
                return _error(400, E_DOCUMENT_STATE, "Fakturan är bokförd och kan inte makuleras")
            if invoice["Sent"]:
                self.modified_while_sent.append(number)
            invoice["Cancelled"] = True
            self.touch(number)
        else:
            # PUT externalprint ("Set an invoice as sent").
            invoice["Sent"] = True
            self.touch(number)
        return _answer(200, {"Invoice": invoice})

    def _deliver(self, number: int, invoice: dict[str, Any], action: str) -> Response:
        """GET .../email, .../einvoice, .../eprint: side-effecting GETs that send the invoice
        and set Sent ("The difference between this and the print-endpoint is that property Sent
        is not set to TRUE", OpenAPI on preview). What Fortnox answers for a customer without
        an e-mail address or e-invoice set-up is unrecorded: harsher reading, refused with the
        made-up code. Sending an unbooked invoice is allowed (it stays unbooked)."""
        if invoice["Cancelled"]:
            return _error(400, E_DOCUMENT_STATE, "Fakturan är makulerad och kan inte skickas")
        customer = self.customers.get(invoice["CustomerNumber"])
        if action == "email" and (customer is None or not customer.email_invoice):
            return _error(400, E_UNVERIFIED, "Kunden saknar e-postadress för fakturor")
        if action == "einvoice" and (
            customer is None or customer.invoice_delivery != "ELECTRONICINVOICE"
        ):
            return _error(400, E_UNVERIFIED, "Kunden är inte ansluten till e-faktura")
        invoice["Sent"] = True
        self.touch(number)
        self.deliveries.append((number, action))
        if self.faults.hit(self.faults.lost_action_rate):
            raise DropConnection  # sent, but the answer never arrives
        return _answer(200, {"Invoice": invoice})

    def _paged(self, wrapper: str, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
        try:
            limit = int(request.arg("limit") or 100)
            page = int(request.arg("page") or 1)
            offset = int(request.arg("offset") or 0)
        except ValueError:
            raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER) from None
        if not 1 <= limit <= 500 or page < 1 or offset < 0:
            raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
        start = (page - 1) * limit + offset
        return {
            wrapper: items[start : start + limit],
            "MetaInformation": {
                "@TotalResources": len(items),
                # 0 when nothing matches (invoices/search_miss.yml).
                "@TotalPages": math.ceil(len(items) / limit),
                "@CurrentPage": page,
            },
        }

    # --- registers ------------------------------------------------------------------------

    def _list_articles(self, request: Request) -> Response:
        _check_query(request, _ARTICLE_QUERY)
        chosen = [self.articles[n] for n in sorted(self.articles)]
        flt = request.arg("filter")
        if flt is not None:
            chosen = [a for a in chosen if a.active == (flt == "active")]
        for name, attribute in (("articlenumber", "number"), ("description", "description")):
            wanted = request.arg(name)
            if wanted is not None:
                chosen = [a for a in chosen if _contains(getattr(a, attribute), wanted)]
        for name in ("ean", "suppliernumber", "manufacturer", "manufacturerarticlenumber"):
            wanted = request.arg(name)
            if wanted:  # the fake's articles have none of these
                chosen = []
        if _flag(request, "webshop"):
            chosen = []
        if request.arg("sortorder") == "descending":
            chosen.reverse()
        # ArticleListItem: no Active field, SalesPrice and VAT as strings, SalesPrice null when
        # the article has none (articles/all.yml).
        items = [
            {
                "ArticleNumber": a.number,
                "Description": a.description,
                "SalesPrice": None if a.sales_price is None else str(_plain(a.sales_price)),
                "Unit": a.unit,
                "VAT": str(_plain(a.vat)),
            }
            for a in chosen
        ]
        return _answer(200, self._paged("Articles", items, request))

    @staticmethod
    def _article_detail(article: FakeArticle) -> dict[str, Any]:
        return {
            "ArticleNumber": article.number,
            "Description": article.description,
            "Active": article.active,
            "SalesPrice": None if article.sales_price is None else _plain(article.sales_price),
            "Unit": article.unit,
            "VAT": _plain(article.vat),
            "SalesAccount": article.account,
            "Type": "SERVICE",
        }

    def _list_customers(self, request: Request) -> Response:
        _check_query(request, _CUSTOMER_QUERY)
        chosen = [self.customers[n] for n in sorted(self.customers)]
        if request.arg("filter") == "inactive":
            chosen = []  # every customer of the fake is active
        for name, attribute in (("customernumber", "number"), ("name", "name")):
            wanted = request.arg(name)
            if wanted is not None:
                chosen = [c for c in chosen if _contains(getattr(c, attribute), wanted)]
        city = request.arg("city")
        if city is not None:
            chosen = [c for c in chosen if _contains("Stockholm", city)]
        for name in ("zipcode", "email", "phone", "organisationnumber", "gln", "glndelivery"):
            if request.arg(name):
                chosen = []
        if request.arg("sortby") == "name":
            chosen.sort(key=lambda c: (c.name, c.number))
        if request.arg("sortorder") == "descending":
            chosen.reverse()
        items = [{"CustomerNumber": c.number, "Name": c.name, "City": "Stockholm"} for c in chosen]
        return _answer(200, self._paged("Customers", items, request))

    @staticmethod
    def _customer_detail(customer: FakeCustomer) -> dict[str, Any]:
        return {
            "CustomerNumber": customer.number,
            "Name": customer.name,
            "Active": True,
            "City": "Stockholm",
            "Currency": customer.currency,
            "ShowPriceVATIncluded": customer.show_price_vat_included,
            "InvoiceRemark": customer.invoice_remark,
            "TermsOfPayment": customer.terms_of_payment,
            "VATType": "SEVAT",
            "DefaultDeliveryTypes": {
                "Invoice": customer.invoice_delivery,
                "Offer": "PRINT",
                "Order": "PRINT",
            },
            "EmailInvoice": customer.email_invoice,
        }

    def _unit(self, code: str) -> dict[str, Any]:
        return {
            "Code": code,
            "CodeEnglish": _UNIT_ENGLISH.get(code, ""),
            "Description": self.units[code],
        }

    # --- listing invoices -----------------------------------------------------------------

    def _summary(self, invoice: dict[str, Any]) -> dict[str, Any]:
        return {k: invoice[k] for k in _SUMMARY_FIELDS}

    def _list_invoices(self, request: Request) -> Response:
        _check_query(request, _INVOICE_QUERY)
        lag = self.faults.search_lag_seconds
        now = self.clock()
        items = [
            invoice
            for number, invoice in self.invoices.items()
            if now - self._created_at.get(number, -math.inf) >= lag
        ]
        for name, key in _TEXT_SEARCH.items():
            wanted = request.arg(name)
            if wanted is not None:
                items = [i for i in items if _contains(i[key], wanted)]
        for name in _EMPTY_SEARCH:
            if request.arg(name):
                items = []
        invoice_type = request.arg("invoicetype")
        if invoice_type is not None:
            items = [i for i in items if _contains("INVOICE", invoice_type)]
        for name, key in (
            ("articlenumber", "ArticleNumber"),
            ("articledescription", "Description"),
        ):
            wanted = request.arg(name)
            if wanted is not None:
                items = [
                    i for i in items if any(_contains(r[key], wanted) for r in i["InvoiceRows"])
                ]
        low, high = request.arg("accountnumberfrom"), request.arg("accountnumberto")
        if low is not None or high is not None:
            try:
                low_n, high_n = int(low or 0), int(high or 9999)
            except ValueError:
                raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER) from None
            items = [
                i
                for i in items
                if any(low_n <= r["AccountNumber"] <= high_n for r in i["InvoiceRows"])
            ]
        sent = _flag(request, "sent")
        if sent is not None:
            items = [i for i in items if i["Sent"] == sent]
        for name in ("notcompleted", "credit"):  # no invoice of the fake is either
            if _flag(request, name):
                items = []
        if _date_arg(request, "fromfinalpaydate") or _date_arg(request, "tofinalpaydate"):
            items = []  # no invoice of the fake is paid: FinalPayDate is null on all
        start, end = _date_arg(request, "fromdate"), _date_arg(request, "todate")
        if start is not None:
            items = [i for i in items if date.fromisoformat(i["InvoiceDate"]) >= start]
        if end is not None:
            items = [i for i in items if date.fromisoformat(i["InvoiceDate"]) <= end]
        since = _lastmodified_arg(request)
        if since is not None:
            items = [i for i in items if self.modified_after(int(i["DocumentNumber"]), since)]
        items = self._filtered(items, request.arg("filter"))
        items = self._ordered(items, request.arg("sortby"), request.arg("sortorder"))
        summaries = [{k: i[k] for k in _LIST_FIELDS} for i in items]
        return _answer(200, self._paged("Invoices", summaries, request))

    def _filtered(self, items: list[dict[str, Any]], flt: str | None) -> list[dict[str, Any]]:
        # The fake records no payments: a booked invoice is fully paid when its total is 0.
        today = self.today()
        unpaid = [i for i in items if i["Booked"] and not i["Cancelled"] and i["Total"] != 0]
        chosen = {
            None: items,
            "cancelled": [i for i in items if i["Cancelled"]],
            "unbooked": [i for i in items if not i["Booked"] and not i["Cancelled"]],
            "fullypaid": [i for i in items if i["Booked"] and i["Total"] == 0],
            "unpaid": unpaid,
            "unpaidoverdue": [i for i in unpaid if date.fromisoformat(i["DueDate"]) < today],
        }
        return chosen[flt]

    def _ordered(
        self, items: list[dict[str, Any]], sort: str | None, order: str | None
    ) -> list[dict[str, Any]]:
        if sort is None:
            # The API promises no order without sortby. Harsher reading: a new order on every
            # request, so paging without a sort order may repeat or miss invoices.
            shuffled = list(items)
            self.rng.shuffle(shuffled)
            return shuffled
        keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "customername": lambda i: i["CustomerName"],
            "customernumber": lambda i: i["CustomerNumber"],
            "documentnumber": lambda i: 0,
            "invoicedate": lambda i: i["InvoiceDate"],
            "ocr": lambda i: 0,  # no OCR in the fake: by document number
            "total": lambda i: i["Total"],
        }
        key = keys[sort]
        ordered = sorted(items, key=lambda i: (key(i), int(i["DocumentNumber"])))
        if order == "descending":
            ordered.reverse()
        return ordered

    # --- writing invoices -----------------------------------------------------------------

    def _payload(self, request: Request) -> dict[str, Any]:
        """The body's `Invoice`, checked for shape and types (nothing that needs state)."""
        try:
            body = request.json()
        except ValueError:
            raise _invalid(E_BAD_JSON, "Error deserializing JSON: JSON_ERROR_SYNTAX") from None
        invoice = body.get("Invoice") if isinstance(body, dict) else None
        if not isinstance(invoice, dict):
            raise _invalid(E_BAD_BODY, "Ingen eller felaktig typ av data.")
        unknown = set(invoice) - PAYLOAD_FIELDS
        rows = invoice.get("InvoiceRows", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _invalid(E_BAD_BODY, "Ingen eller felaktig typ av data.")
        for row in rows:
            unknown |= set(row) - ROW_FIELDS
        if unknown:
            raise _invalid(E_BAD_FIELD, f"Felaktigt fältnamn ({sorted(unknown)[0]})")
        for name, limit in _MAX_LENGTH.items():
            value = invoice.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise _invalid(E_INVALID_CHARACTERS, f"Ogiltigt värde för {name}")
        for name in ("Currency", "CustomerNumber", "TermsOfPayment"):
            if name in invoice and not isinstance(invoice[name], str):
                raise _invalid(E_NOT_ALPHANUMERIC, f"Värdet måste vara alfanumeriskt ({name})")
        for name in ("InvoiceDate", "DueDate"):
            if name in invoice and _iso_date(invoice[name]) is None:
                # Unverified code: the real answer to a malformed date is unrecorded.
                raise _invalid(E_UNVERIFIED, f"Ogiltigt datum ({invoice[name]})")
        if "VATIncluded" in invoice and not isinstance(invoice["VATIncluded"], bool):
            raise _invalid(
                E_NOT_BOOLEAN, f"Värdet måste vara en boolean ({invoice['VATIncluded']})"
            )
        for row in rows:
            self._check_row(row)
        return invoice

    def _check_row(self, row: dict[str, Any]) -> None:
        """Types and values of one sent row, and the articles and units it names."""
        quantity = row.get("DeliveredQuantity")
        if quantity is not None:
            if not isinstance(quantity, str):  # a string in the OpenAPI document
                raise _invalid(E_NOT_ALPHANUMERIC, f"Värdet måste vara alfanumeriskt ({quantity})")
            if _decimal(quantity) is None:
                raise _invalid(E_NOT_NUMERIC, f"Värdet måste vara numeriskt ({quantity})")
        price = row.get("Price")
        if price is not None and (isinstance(price, str) or _decimal(price) is None):
            raise _invalid(E_NOT_NUMERIC, f"Värdet måste vara numeriskt ({price})")
        description = row.get("Description")
        if description is not None and (not isinstance(description, str) or len(description) > 255):
            raise _invalid(E_INVALID_CHARACTERS, "Ogiltigt värde för Description")
        row_id = row.get("RowId")
        if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, int)):
            raise _invalid(E_NOT_NUMERIC, f"Värdet måste vara numeriskt ({row_id})")
        vat = row.get("VAT")
        if vat is not None:
            rate = None if isinstance(vat, str) else _decimal(vat)
            if rate is None:
                raise _invalid(E_NOT_NUMERIC, f"Värdet måste vara numeriskt ({vat})")
            if rate not in VAT_RATES:
                # Unverified code; integrators report "Kunde inte hämta/hitta moms".
                raise _invalid(E_UNVERIFIED, f"Kunde inte hämta/hitta moms ({vat})")
        account = row.get("AccountNumber")
        if account is not None:
            if isinstance(account, bool) or not isinstance(account, int):
                raise _invalid(E_NOT_NUMERIC, f"Värdet måste vara numeriskt ({account})")
            if not 1000 <= account <= 9999:  # the OpenAPI row schema's range
                raise _invalid(E_ACCOUNT_NOT_FOUND, "Kunde inte hitta konto")
        article = row.get("ArticleNumber")
        if article is not None and not isinstance(article, str):
            raise _invalid(E_NOT_ALPHANUMERIC, f"Värdet måste vara alfanumeriskt ({article})")
        if article:
            found = self.articles.get(article)
            if found is None or not found.active:  # an inactive article cannot be invoiced
                raise _invalid(E_ARTICLE_MISSING, f'Artikeln "{article}" hittades inte')
        unit = row.get("Unit")
        if unit is not None and not isinstance(unit, str):
            raise _invalid(E_NOT_ALPHANUMERIC, f"Värdet måste vara alfanumeriskt ({unit})")
        if unit:
            self._check_unit(unit)

    def _check_unit(self, unit: str) -> None:
        # 2000432 is recorded for GET /units/{x} of a missing unit (units/find_failure.yml).
        # Refusing an invoice row with it is our harsher reading: the real answer to a row with
        # an unknown unit is unrecorded.
        if unit not in self.units:
            raise _invalid(E_UNIT_NOT_FOUND, "Kan inte hitta enheten.")

    def _check_lock(self, invoice_date: str) -> None:
        # Wording from https://helpdesk.sharespine.com/hc/sv/articles/28193815116701-Fortnox-error-2000401
        lock = self.locked_through
        if lock is not None and date.fromisoformat(invoice_date) <= lock:
            raise _invalid(
                E_LOCKED_PERIOD,
                f"har låst perioden t.o.m. {lock.isoformat()}. Lås upp perioden för att fortsätta.",
            )

    @staticmethod
    def _set_fields(row: dict[str, Any], sent: dict[str, Any]) -> None:
        """Copy the sent stored fields onto `row`, as Fortnox stores them: quantity and price
        rounded half up to two decimals, silently (invoices/row_*_round_up.yml)."""
        for name in ("Description", "Unit"):
            if sent.get(name) is not None:
                row[name] = sent[name]
        if sent.get("DeliveredQuantity") is not None:
            row["DeliveredQuantity"] = _quantity_text(Decimal(sent["DeliveredQuantity"].strip()))
        if sent.get("Price") is not None:
            row["Price"] = _plain(_round2(Decimal(str(sent["Price"]))))
        if sent.get("VAT") is not None:
            row["VAT"] = _plain(Decimal(str(sent["VAT"])))
        if sent.get("AccountNumber") is not None:
            row["AccountNumber"] = sent["AccountNumber"]

    @staticmethod
    def _with_total(row: dict[str, Any]) -> dict[str, Any]:
        quantity = Decimal(row["DeliveredQuantity"])
        row["Total"] = _plain(_round2(quantity * row["Price"]))
        return row

    @staticmethod
    def _total(rows: list[dict[str, Any]]) -> Decimal:
        return _plain(sum((r["Total"] for r in rows), Decimal(0)))

    def _new_row(self, sent: dict[str, Any]) -> dict[str, Any]:
        """A new row: fields not sent come from the article (save_with_nested_model.yml: an
        article row without quantity comes back "0"; without Price, the sales price, 0 when the
        article has none), or are empty on a text row."""
        article = self.articles.get(sent.get("ArticleNumber") or "")
        row: dict[str, Any] = {
            "RowId": next(self._row_ids),
            "ArticleNumber": article.number if article else "",
            "Description": article.description if article else "",
            "DeliveredQuantity": "0",
            "Price": _plain(_round2(article.sales_price or Decimal(0))) if article else Decimal(0),
            "Unit": article.unit if article else "",
            "VAT": _plain(article.vat) if article else Decimal(0),
            "AccountNumber": article.account if article else 0,
        }
        self._set_fields(row, sent)
        if row["Unit"]:
            self._check_unit(row["Unit"])  # a defaulted unit must exist too
        return self._with_total(row)

    def _update_row(self, old: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
        """An existing row with the sent fields set and every other field kept. A new
        ArticleNumber keeps the row's VAT, account, description, price and unit: the "wrong
        VAT" of Fortnox's blog "Updating document rows using RowId"."""
        row = dict(old)
        if "ArticleNumber" in sent:
            row["ArticleNumber"] = sent["ArticleNumber"] or ""
        self._set_fields(row, sent)
        return self._with_total(row)

    def _merged_rows(
        self, current: list[dict[str, Any]], sent: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The rows after a PUT, as the OpenAPI PUT /3/invoices/{DocumentNumber} describes."""
        if not any(r.get("RowId") is not None for r in sent):
            # By position; sent rows beyond the existing ones are new, existing rows beyond the
            # sent ones are removed.
            return [
                self._update_row(current[i], row) if i < len(current) else self._new_row(row)
                for i, row in enumerate(sent)
            ]
        by_id = {r["RowId"]: r for r in current}
        named: set[int] = set()
        merged = []
        for row in sent:
            row_id = row.get("RowId")
            if row_id is None:
                merged.append(self._new_row(row))
                continue
            if row_id not in by_id or row_id in named:
                # Harsher reading, unverified code: the answer to a RowId that is not on the
                # invoice is unrecorded; the fake refuses it with the generic parameter error.
                raise _invalid(E_INVALID_PARAMETER, _BAD_PARAMETER)
            named.add(row_id)
            merged.append(self._update_row(by_id[row_id], row))
        return merged

    def _renumber(self, invoice: dict[str, Any]) -> None:
        """ "New RowIds are generated for all rows every time an invoice is updated." (OpenAPI)"""
        for row in invoice["InvoiceRows"]:
            row["RowId"] = next(self._row_ids)

    def _apply_header(self, invoice: dict[str, Any], payload: dict[str, Any]) -> None:
        for name in (
            "CustomerName", "ExternalInvoiceReference1", "Currency", "Remarks", "InvoiceDate",
            "DueDate", "VATIncluded",
        ):  # fmt: skip
            if payload.get(name) is not None:
                invoice[name] = payload[name]
        terms = payload.get("TermsOfPayment")
        if terms is not None:
            if terms not in self.terms_of_payment:
                # 2000429 is recorded for a GET of missing terms; on a write it is unverified.
                raise _invalid(E_TERMS_NOT_FOUND, "Kan inte hitta betalningsvillkoret.")
            invoice["TermsOfPayment"] = terms

    def _create(self, request: Request) -> Response:
        payload = self._payload(request)
        number_sent = payload.get("CustomerNumber")
        customer = self.customers.get(number_sent) if isinstance(number_sent, str) else None
        if customer is None:
            return _error(
                400, E_CUSTOMER_MISSING, f"Kunden med kundnummer {number_sent} hittades inte"
            )
        # The customer card's "predefined values" fill what the payload leaves out (OpenAPI,
        # POST /3/invoices: "Omitted values in the payload will be supplied by Predefined
        # values").
        invoice: dict[str, Any] = {
            "DocumentNumber": "",
            "CustomerNumber": customer.number,
            "CustomerName": customer.name,
            "ExternalInvoiceReference1": "",
            "Currency": customer.currency,
            "Remarks": customer.invoice_remark,
            "InvoiceDate": self.today().isoformat(),
            "DueDate": "",
            "TermsOfPayment": customer.terms_of_payment,
            "VATIncluded": customer.show_price_vat_included,
            "Booked": False,
            "Cancelled": False,
            "Sent": False,
            "Total": Decimal(0),
            "InvoiceRows": [],
        }
        self._apply_header(invoice, payload)
        if payload.get("DueDate") is None:
            days = self.terms_of_payment[invoice["TermsOfPayment"]]
            due = date.fromisoformat(invoice["InvoiceDate"]) + timedelta(days=days)
            invoice["DueDate"] = due.isoformat()
        invoice["InvoiceRows"] = [self._new_row(r) for r in payload.get("InvoiceRows", [])]
        invoice["Total"] = self._total(invoice["InvoiceRows"])
        self._check_lock(invoice["InvoiceDate"])
        number = max(self.invoices, default=0) + 1
        invoice["DocumentNumber"] = str(number)
        self.invoices[number] = invoice
        self._created_at[number] = self.clock()
        self.touch(number)
        if self.faults.hit(self.faults.lost_create_rate):
            raise DropConnection  # stored, but the answer never arrives
        return _answer(201, {"Invoice": invoice})

    def _update(self, number: int, invoice: dict[str, Any], request: Request) -> Response:
        if invoice["Booked"]:
            # Made-up code (see E_DOCUMENT_STATE); booked invoices cannot be edited (NOTES.md).
            return _error(400, E_DOCUMENT_STATE, "Fakturan är bokförd och kan inte ändras")
        if invoice["Cancelled"]:
            return _error(400, E_DOCUMENT_STATE, "Fakturan är makulerad och kan inte ändras")
        payload = self._payload(request)
        updated = copy.deepcopy(invoice)
        customer_number = payload.get("CustomerNumber")
        if customer_number is not None and customer_number != invoice["CustomerNumber"]:
            customer = self.customers.get(customer_number)
            if customer is None:
                return _error(
                    400,
                    E_CUSTOMER_MISSING,
                    f"Kunden med kundnummer {customer_number} hittades inte",
                )
            updated["CustomerNumber"], updated["CustomerName"] = customer.number, customer.name
        # Partial: header fields not sent keep their values (DueDate included), except that a
        # new InvoiceDate without a DueDate moves the due date by the invoice's terms of
        # payment, as Fortnox's own invoice form does (UNCERTAIN for the API: undocumented).
        self._apply_header(updated, payload)
        if (
            self.redate_moves_due_date
            and updated["InvoiceDate"] != invoice["InvoiceDate"]
            and payload.get("DueDate") is None
        ):
            days = self.terms_of_payment.get(updated["TermsOfPayment"], 0)
            moved = date.fromisoformat(updated["InvoiceDate"]) + timedelta(days=days)
            updated["DueDate"] = moved.isoformat()
        if "InvoiceRows" in payload:
            updated["InvoiceRows"] = self._merged_rows(
                invoice["InvoiceRows"], payload["InvoiceRows"]
            )
        self._renumber(updated)
        updated["Total"] = self._total(updated["InvoiceRows"])
        self._check_lock(updated["InvoiceDate"])
        if invoice["Sent"]:
            self.modified_while_sent.append(number)
        invoice.clear()
        invoice.update(updated)
        self.touch(number)
        if self.faults.hit(self.faults.lost_update_rate):
            raise DropConnection  # applied, but the answer never arrives
        return _answer(200, {"Invoice": invoice})


__all__ = [
    "API",
    "AUTH",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "SEED_ARTICLES",
    "TENANT_ID",
    "FakeArticle",
    "FakeCustomer",
    "Faults",
    "FortnoxFake",
    "seed_customers",
]


# --- what the sandbox and the demo need of this fake (the convention of connector.sandbox) ---

FAKE = FortnoxFake
RATE_LIMIT = "25/5"  # Fortnox's own window
SEED_REFRESH_TOKEN: str | None = None  # the demo uses client credentials (a service account)


def connector_section(base_url: str) -> dict[str, str]:
    """The CONNECTOR_FORTNOX__* values that point the connector at this fake."""
    return {
        "api_url": base_url + API,
        "auth_url": base_url + AUTH,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "tenant_id": TENANT_ID,
    }


class Driver(FakeDriver):
    """The fake Fortnox for the test oracle and a person's actions (connector.sandbox)."""

    name = "fortnox"
    api_prefix = "/fortnox/3"

    @property
    def fake(self) -> FortnoxFake:
        fake = self.app.extensions["fortnox"]
        assert isinstance(fake, FortnoxFake)
        return fake

    def invoices(self) -> list[dict[str, Any]]:
        return self.fake.neutral_invoices()

    def register(self) -> dict[str, Decimal | None]:
        return {n: a.sales_price for n, a in self.fake.articles.items() if a.active}

    def customers(self) -> set[str]:
        return set(self.fake.customers)

    def vat(self, article: str) -> Decimal:
        return self.fake.articles[article].vat

    def add_customer(self, number: str, name: str) -> None:
        self.fake.customers[number] = FakeCustomer(number, name)

    def close(self, remote_id: str) -> None:
        self.fake.bookkeep(int(remote_id))

    def send(self, remote_id: str) -> None:
        self.fake.mark_sent(int(remote_id))

    def withdraw(self, remote_id: str) -> None:
        self.fake.cancel(int(remote_id))

    def edit_text(self, remote_id: str, index: int, text: str) -> None:
        self.fake.edit_row(int(remote_id), index, Description=text)

    def delete_row(self, remote_id: str, index: int) -> None:
        self.fake.delete_row(int(remote_id), index)

    def edit_quantity(self, remote_id: str, index: int, quantity: Decimal) -> None:
        self.fake.edit_row(int(remote_id), index, DeliveredQuantity=quantity)

    def set_sales_price(self, article: str, price: Decimal) -> None:
        self.fake.articles[article].sales_price = price

    def modified_after_closing(self) -> list[Any]:
        return list(self.fake.modified_while_sent)

    def set_clock(self, clock: Callable[[], float]) -> None:
        self.fake.clock = clock

    def faults(self, **values: Any) -> None:
        self.fake.faults.update(values)

    def lock_through(self, day: date | None) -> bool:
        self.fake.locked_through = day
        return True
