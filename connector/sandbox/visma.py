"""A stateful fake of the Visma eAccounting API v2 (eEkonomi / Spiris "Bokföring & Fakturering"),
at least as strict as the real API, with the same fault switches as the fake Fortnox.

Served under /visma/v2 (the API; paths as in the OpenAPI document, whose server is
https://eaccountingapi.vismaonline.com/v2/) and /visma/connect (the identity server,
https://identity.vismaonline.com/connect/). It accepts client id `sandbox` and client secret
`sandbox`; the refresh token `sandbox` is a standing seed that always works, so demos and tests
start without a browser. Customers and articles carry the same numbers and names as the fake
Fortnox's seed, with GUID ids (uuid5 of the number: the same on every run).

Where this fake's behaviour comes from, in three kinds:

- documented: Visma's OpenAPI documents (the 2026-02-17 OpenAPI 3.1.1 copy, and the 2021
  Swagger 2.0 copy for its per-operation notes) and the developer portal as NOTES.md quotes it
  (section numbers below are NOTES.md's, beside the copies in shared/specs/visma-eaccounting);
- inferred: NOTES.md's own reading where nothing states it ([INFERRED] there);
- harsher reading: where the real behaviour is unknown ([UNCERTAIN] or not mentioned), the fake
  takes the reading that is harder on a client: refuse rather than accept, hide rather than
  show, shuffle rather than sort. Every such place says so in a comment. Error codes are those
  of NOTES section 6; where the real code is not stated, the comment says "code unverified".

tests/test_visma_fake.py and tests/test_visma_fake_more.py pin each behaviour.
"""

from __future__ import annotations

import base64
import itertools
import math
import random
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from connector.sandbox.app import (
    DropConnection,
    FakeDriver,
    Request,
    Response,
    SandboxApp,
    json_response,
)
from connector.sandbox.fortnox import (
    ORGANIZATION_NUMBER,
    SEED_ARTICLES,
    SEED_UNITS,
    TERMS_OF_PAYMENT,
    FakeArticle,
    FakeCustomer,
    Faults,
    seed_customers,
)

API = "/visma/v2"
IDENTITY = "/visma/connect"
CONTROL = "/_sandbox/visma"
CLIENT_ID = "sandbox"
CLIENT_SECRET = "sandbox"  # noqa: S105 - the public test secret of a local fake
# The standing refresh token: it is never used up, and every use also issues a new rotating one.
SEED_REFRESH_TOKEN = "sandbox"  # noqa: S105 - the public test token of a local fake
COMPANY_NAME = "Sandbox Konsult AB"
COMPANY_CURRENCY = "SEK"
COMPANY_COUNTRY = "SE"
# The company's organisation number: the fake Fortnox's, as both fakes are one seed company.
CORPORATE_IDENTITY_NUMBER = ORGANIZATION_NUMBER
# "60 minutes after the Access Token was issued, it will expire" (NOTES section 4).
TOKEN_LIFETIME = 3600
# "The auth code is single-use and lasts 5 min" (NOTES section 4).
CODE_LIFETIME = 300
# Default page size 50 (NOTES section 2, maesn blog; pwitab/visma pages with 50). The maximum is
# [UNCERTAIN]: harsher reading, 100, and a larger $pagesize is refused rather than capped.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100

# The identity server's scopes (NOTES section 4, portal "Getting started").
KNOWN_SCOPES = frozenset({
    "ea:api", "offline_access", "ea:sales", "ea:sales_readonly", "ea:accounting",
    "ea:accounting_readonly", "ea:purchase", "ea:purchase_readonly", "vls:api",
})  # fmt: skip
SEED_SCOPES = frozenset({"ea:api", "offline_access", "ea:sales"})

# Error codes of NOTES section 6 (the portal's error-code page).
E_VALIDATION = 2000  # DataModelValidationError
E_NOT_FOUND = 3000  # ResourceNotFound
E_NOT_AUTHORIZED = 4005  # NotAuthorized
E_NO_SCOPE = 4006  # NoAccessToScopes
E_TOO_MANY_REQUESTS = 4010  # TooManyRequests
E_QUERY = 6000  # QueryParameterError
E_INPUT = 6001  # InvalidInput

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Deterministic ids: uuid5 of the kind and number, the same on every run.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://sandbox.invalid/visma-eaccounting")


def seed_id(kind: str, key: str) -> str:
    """The GUID of a seeded register entry, e.g. seed_id("customer", "1003")."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{key}"))


# --- the registers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VismaUnit:
    id: str
    name: str
    abbreviation: str
    abbreviation_english: str


@dataclass(frozen=True)
class VismaCoding:
    """An article account coding (GET /articleaccountcodings): it decides the sales account
    and the VAT rate of every row of its articles (NOTES sections 3 and 7.4)."""

    id: str
    name: str
    type: str  # "Service" or "Goods"
    vat_percent: Decimal
    account: int


@dataclass(frozen=True)
class VismaTerms:
    id: str
    days: int


@dataclass
class VismaArticle:
    id: str
    number: str
    name: str
    # ArticleApi.NetPrice is a number with minimum 0 and no null in either OpenAPI document:
    # an article without a price in the fake Fortnox (SK-PL, SK-DATA) has NetPrice 0 here.
    net_price: Decimal
    unit: VismaUnit
    coding: VismaCoding
    active: bool = True

    @property
    def gross_price(self) -> Decimal:
        # "Net and Gross must match the VAT rate" (NOTES section 3): gross = net x (1 + rate).
        return _round2(self.net_price * (100 + self.coding.vat_percent) / 100)


@dataclass
class VismaCustomer:
    id: str
    number: str
    name: str
    terms: VismaTerms
    # CustomerApi.CurrencyCode may be null: such a customer is invoiced in the company's
    # currency (CompanySettingsApi.CurrencyCode).
    currency: str | None = COMPANY_CURRENCY
    country: str = COMPANY_COUNTRY
    private_person: bool = False
    active: bool = True
    address1: str = ""
    postal_code: str = "111 22"
    city: str = "Stockholm"

    @property
    def domestic(self) -> bool:
        return self.invoice_currency == COMPANY_CURRENCY and self.country == COMPANY_COUNTRY

    @property
    def invoice_currency(self) -> str:
        """The currency of the customer's drafts: its own, else the company's."""
        return self.currency or COMPANY_CURRENCY


_UNIT_ENGLISH = {"h": "h", "st": "pcs"}


def seed_units() -> dict[str, VismaUnit]:
    """Units by abbreviation: the fake Fortnox's units (h "timmar", st "styck")."""
    return {
        code: VismaUnit(seed_id("unit", code), name, code, _UNIT_ENGLISH.get(code, code))
        for code, name in SEED_UNITS.items()
    }


def _coding_for(article: FakeArticle) -> VismaCoding:
    # A coding per VAT rate and sales account of the fake Fortnox's articles. A goods article
    # (SK-BOK, a handbook in pieces at 6 %) gets a goods coding, the rest are services.
    kind = "Goods" if article.unit == "st" else "Service"
    name = f"{'Varor' if kind == 'Goods' else 'Tjänster'} {article.vat} % ({article.account})"
    return VismaCoding(
        seed_id("coding", f"{article.vat}/{article.account}"),
        name,
        kind,
        article.vat,
        article.account,
    )


def seed_codings() -> dict[str, VismaCoding]:
    codings = (_coding_for(a) for a in SEED_ARTICLES.values())
    return {c.id: c for c in sorted(codings, key=lambda c: c.name)}


def seed_terms() -> dict[str, VismaTerms]:
    return {
        seed_id("terms", code): VismaTerms(seed_id("terms", code), days)
        for code, days in TERMS_OF_PAYMENT.items()
    }


def seed_articles() -> dict[str, VismaArticle]:
    """Articles by Id: the fake Fortnox's SEED_ARTICLES with the same numbers, names, prices
    (0 where Fortnox has none), units, VAT and active flags (SK-GAMMAL inactive)."""
    units = seed_units()
    return {
        seed_id("article", a.number): VismaArticle(
            seed_id("article", a.number),
            a.number,
            a.description,
            a.sales_price if a.sales_price is not None else Decimal(0),
            units[a.unit],
            _coding_for(a),
            a.active,
        )
        for a in SEED_ARTICLES.values()
    }


def _visma_customer(card: FakeCustomer, index: int) -> VismaCustomer:
    # The fake Fortnox's card "show prices including VAT" (1005) is the consumer case: here a
    # private person, whose drafts come with IncludesVat true (see _includes_vat).
    return VismaCustomer(
        seed_id("customer", card.number),
        card.number,
        card.name,
        VismaTerms(
            seed_id("terms", card.terms_of_payment), TERMS_OF_PAYMENT[card.terms_of_payment]
        ),
        currency=card.currency,
        private_person=card.show_price_vat_included,
        address1=f"Verkstadsgatan {index + 1}",
    )


# Projects (GET /projects) and cost centre items (GET /costcenters, the items of each of the
# company's up to three cost centres) a person may put on a draft row: ProjectId and
# CostCenterItemId1..3 (CustomerInvoiceDraftRowApi). The fake serves neither list; it knows
# their ids, so a row may carry them. Each item belongs to one cost centre, 1 to 3, and only
# fits that slot (harsher reading: the schema does not say).
SEED_PROJECTS = {"P100": "Intern utveckling", "P200": "Fjällbyggen, ombyggnad"}
SEED_COST_CENTER_ITEMS = {"STH": (1, "Stockholm"), "GBG": (1, "Göteborg"), "KONS": (2, "Konsult")}


def project_id(number: str) -> str:
    """The GUID of a seeded project, e.g. project_id("P100")."""
    return seed_id("project", number)


def cost_center_item_id(code: str) -> str:
    """The GUID of a seeded cost centre item, e.g. cost_center_item_id("STH") (cost centre 1)."""
    return seed_id("costcenteritem", code)


def seed_visma_customers() -> dict[str, VismaCustomer]:
    """Customers by Id: the fake Fortnox's seed_customers(), so 1042 does not exist here either."""
    return {
        seed_id("customer", c.number): _visma_customer(c, i)
        for i, c in enumerate(seed_customers().values())
    }


# --- numbers and dates ---------------------------------------------------------------------------

_CENT = Decimal("0.01")
# No number may reach 10^11 in size: ArticleApi's prices stop at 99,000,000 and the row schemas
# give no maximum. Harsher reading; it also keeps every product of two numbers exact.
_LARGEST = Decimal(10) ** 11


def _round2(value: Decimal) -> Decimal:
    # "Roundings update for sales documents": amounts now round half up (NOTES section 7.3).
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _num(value: Decimal | int) -> Decimal:
    """A number as the API writes a double: no trailing zeros, never an exponent, never -0."""
    number = (Decimal(value) + 0).normalize()
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        number = number.quantize(Decimal(1))
    return number


def _places_ok(value: Decimal, places: int) -> bool:
    """Whether a number has at most `places` decimals. The value counts, not the JSON text: the
    server reads a number (a double), so 1.50 is 1.5."""
    try:
        return value == value.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation:
        return False


def _parse_date(value: str) -> date | None:
    """`YYYY-MM-DD` or `YYYY-MM-DDT00:00:00`. NOTES section 7.8 says send a plain date or
    midnight without a zone, and that what else is accepted is [UNCERTAIN]: harsher reading,
    any other form (a time, a zone, fractions) is refused."""
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(T00:00:00)?", value)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _date_text(value: date | None) -> str | None:
    return None if value is None else f"{value.isoformat()}T00:00:00"


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return False
    return not isinstance(value, Decimal) or value.is_finite()


# --- the draft schema ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _F:
    """One writable property of a schema: its JSON type, whether null is allowed, and the limits
    the OpenAPI document gives (maxLength, minimum/maximum, the decimals of its pattern)."""

    kind: str  # bool, int, number, string, uuid, date, rows, list, margin
    nullable: bool = True
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    places: int | None = None
    default: Any = None


def _text(limit: int | None = None) -> _F:
    return _F("string", max_length=limit)


# CustomerInvoiceDraftApi (OpenAPI 2026): required CustomerId, EuThirdParty,
# RotReducedInvoicingType; `additionalProperties: false`. Its writable properties:
DRAFT_FIELDS: dict[str, _F] = {
    "CustomerId": _F("uuid", nullable=False),
    "IsCreditInvoice": _F("bool", nullable=False, default=False),
    "RotReducedInvoicingType": _F("int", nullable=False, minimum=0, maximum=2, default=0),
    "RotReducedInvoicingPropertyName": _text(40),
    "RotReducedInvoicingOrgNumber": _text(11),
    "RotReducedInvoicingAmount": _F("number", nullable=False, places=2, default=Decimal(0)),
    "RotReducedInvoicingAutomaticDistribution": _F("bool", nullable=False, default=False),
    "RotPropertyType": _F("int"),
    "HouseWorkOtherCosts": _F("number"),
    "Rows": _F("rows"),
    "Persons": _F("list"),
    "YourReference": _text(100),
    "OurReference": _text(100),
    "BuyersOrderReference": _text(35),
    "ElectronicReference": _text(100),
    "SubscriptionNumber": _text(100),
    "ContractNumber": _text(100),
    "InvoiceAddress1": _text(50),
    "InvoiceAddress2": _text(50),
    "DeliveryCustomerName": _text(50),
    "DeliveryAddress1": _text(50),
    "DeliveryAddress2": _text(50),
    "DeliveryPostalCode": _text(10),
    "DeliveryCity": _text(50),
    "DeliveryCountryCode": _text(2),
    "DeliveryMethodName": _text(50),
    "DeliveryTermName": _text(50),
    "TermsOfPaymentId": _F("uuid"),
    "DeliveryMethodCode": _text(20),
    "DeliveryTermCode": _text(20),
    "EuThirdParty": _F("bool", nullable=False),
    "InvoiceDate": _F("date"),
    "DueDate": _F("date"),
    "DeliveryDate": _F("date"),
    "ReplaceUnitPriceWhenZero": _F("bool", nullable=False, default=False),
    "UsesGreenTechnology": _F("bool", nullable=False, default=False),
    "ContributionMargin": _F("margin"),
    "IsDirectDebit": _F("bool"),
    "BackgroundId": _F("uuid"),
}
DRAFT_REQUIRED = ("CustomerId", "EuThirdParty", "RotReducedInvoicingType")
# Its readOnly properties. Sending one is refused: the schema says readOnly and
# additionalProperties false; whether the server enforces either is untested (NOTES open item
# 6), so the harsher reading.
DRAFT_READ_ONLY = frozenset({
    "Id", "CreatedUtc", "MaxAllowedTaxReductionAmount", "InvoiceCustomerName",
    "InvoicePostalCode", "InvoiceCity", "InvoiceCountryCode", "InvoiceCurrencyCode",
    "CustomerIsPrivatePerson", "ReverseChargeOnConstructionServices", "SalesDocumentAttachments",
    "MessageThreads", "Notes", "TotalAmount", "TotalVatAmount", "TotalRoundings",
    "TotalAmountBaseCurrency", "TotalVatAmountBaseCurrency", "CustomerNumber", "CustomerName",
    "IncludesVat",
})  # fmt: skip
# CustomerInvoiceDraftRowApi: required IsTextRow, ReversedConstructionServicesVatFree.
ROW_FIELDS: dict[str, _F] = {
    "LineNumber": _F("int", minimum=0, maximum=1000),
    "ArticleId": _F("uuid"),
    "IsTextRow": _F("bool", nullable=False),
    "Text": _text(2000),
    # 2 decimals for a domestic customer, 4 for a foreign one: checked with the customer.
    "UnitPrice": _F("number", nullable=False, default=Decimal(0)),
    "DiscountPercentage": _F(
        "number", nullable=False, minimum=0, maximum=1, places=4, default=Decimal(0)
    ),
    # Pattern [-]?\d+(.\d{1,2})?: 2 decimals (NOTES section 2). More is refused, not rounded.
    "Quantity": _F("number", nullable=False, places=2, default=Decimal(0)),
    "WorkCostType": _F("int", nullable=False, default=0),
    "IsWorkCost": _F("bool", nullable=False, default=False),
    "WorkHours": _F("number"),
    "MaterialCosts": _F("number"),
    "ReversedConstructionServicesVatFree": _F("bool", nullable=False),
    "CostCenterItemId1": _F("uuid"),
    "CostCenterItemId2": _F("uuid"),
    "CostCenterItemId3": _F("uuid"),
    "UnitAbbreviation": _text(),
    "UnitAbbreviationEnglish": _text(),
    "UnitName": _text(),
    "ProjectId": _F("uuid"),
    "GreenTechnologyType": _F("int", nullable=False, minimum=0, maximum=3, default=0),
    "ContributionMargin": _F("margin"),
}
ROW_REQUIRED = ("IsTextRow", "ReversedConstructionServicesVatFree")
# The row's readOnly properties, and ArticleNumber: the schema does not mark it readOnly, but
# it "returns the article number from the entered ArticleId" and NOTES section 2 calls it
# read-only (you cannot post by article number). Harsher reading: refused when sent.
ROW_READ_ONLY = frozenset({
    "Id", "IsServiceArticle", "UnitId", "ArticleNumber", "IsDiscountInFixedAmount",
    "DiscountFixedAmount", "VatRateId", "VatRate", "PurchasePrice", "Amount", "FreightCosts",
})  # fmt: skip
DELIVERY_FIELDS = (
    "DeliveryCustomerName", "DeliveryAddress1", "DeliveryAddress2", "DeliveryPostalCode",
    "DeliveryCity", "DeliveryCountryCode", "DeliveryMethodName", "DeliveryTermName",
    "DeliveryMethodCode", "DeliveryTermCode",
)  # fmt: skip
# Row ids of the project and cost centre registers: an id the fake does not know is 3000.
ROW_REFERENCES = ("ProjectId", "CostCenterItemId1", "CostCenterItemId2", "CostCenterItemId3")
# CustomerInvoiceDraftValidationApi, the optional body of convert, and its rows.
VALIDATION_FIELDS = frozenset({
    "TotalAmountInvoiceCurrency", "TotalVatAmountInvoiceCurrency",
    "TotalRoundingsInvoiceCurrency", "Rows",
})  # fmt: skip
VALIDATION_ROW_FIELDS = frozenset(
    {"LineNumber", "TotalAmountNoVatInvoiceCurrency", "TotalAmountIncVatInvoiceCurrency"}
)
# Reference fields of a draft. Which draft fields are filterable is untested (NOTES open
# item 1): harsher reading, none of these is, so a client must list and compare.
REFERENCE_FIELDS = frozenset({
    "ContractNumber", "YourReference", "OurReference", "BuyersOrderReference",
    "ElectronicReference", "SubscriptionNumber",
})  # fmt: skip


# --- answers -------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


@dataclass
class _Problem:
    """One entry of a CommonExtendedBadRequest's `Errors` (CommonError: Field, ErrorCode as a
    string, Message, Key). The values are the fake's own; only the shape is documented."""

    field: str
    key: str
    message: str


# --- the rate-limit window and OAuth records -----------------------------------------------------


@dataclass
class _Window:
    limit: int
    period: float
    clock: Callable[[], float]
    times: deque[float] = field(default_factory=deque)

    def _expire(self) -> float:
        now = self.clock()
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        return now

    def admit(self) -> bool:
        now = self._expire()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True

    def wait_seconds(self) -> int:
        """Whole seconds until the oldest request leaves the window (a full period when none)."""
        now = self._expire()
        if not self.times:
            return max(1, math.ceil(self.period))
        return max(1, math.ceil(self.times[0] + self.period - now))


@dataclass(frozen=True)
class _Code:
    scopes: frozenset[str]
    redirect_uri: str
    expires: float


@dataclass(frozen=True)
class _Token:
    client: str
    expires: float
    scopes: frozenset[str]


# --- list queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ListSpec:
    """What one list operation accepts: fields its simple `$filter` may name (name -> type:
    string, bool, int, uuid), fields `$orderby` may name, and the operation's own parameters
    from the OpenAPI document (name -> type)."""

    filters: dict[str, str]
    orderby: frozenset[str]
    params: dict[str, str] = field(default_factory=dict)


_CUSTOMER_LIST = _ListSpec(
    {"CustomerNumber": "string", "Name": "string", "IsActive": "bool", "Id": "uuid"},
    frozenset({"CustomerNumber", "Name"}),
)
_ARTICLE_LIST = _ListSpec(
    {"Number": "string", "Name": "string", "IsActive": "bool", "Id": "uuid"},
    frozenset({"Number", "Name"}),
    {"showPricesWithTwoDecimals": "bool", "customerId": "uuid"},
)
_UNIT_LIST = _ListSpec(
    {"Code": "string", "Abbreviation": "string", "Id": "uuid"}, frozenset({"Code", "Name"})
)
_CODING_LIST = _ListSpec(
    {"Name": "string", "IsActive": "bool", "Id": "uuid"},
    frozenset({"Name"}),
    {"vatRateDate": "date"},
)
_TERMS_LIST = _ListSpec(
    {"Name": "string", "NumberOfDays": "int", "Id": "uuid"}, frozenset({"NumberOfDays", "Name"})
)
_DRAFT_LIST = _ListSpec(
    {"CustomerId": "uuid", "CustomerNumber": "string", "IsCreditInvoice": "bool", "Id": "uuid"},
    frozenset({"CreatedUtc", "CustomerNumber", "InvoiceDate", "Id"}),
)
_INVOICE_LIST = _ListSpec(
    {
        "CustomerId": "uuid", "CustomerNumber": "string", "InvoiceNumber": "int",
        "IsCreditInvoice": "bool", "HasAutoInvoiceError": "bool", "Id": "uuid",
    },
    frozenset({"InvoiceNumber", "InvoiceDate", "CreatedUtc", "CustomerNumber"}),
    {"modifiedSinceUtc": "datetime"},
)  # fmt: skip
_PAGING = frozenset({"$page", "$pagesize", "$filter", "$orderby", "$select"})


@dataclass
class _Meta:
    """What the fake keeps beside a stored draft or invoice."""

    created_at: float  # fake clock: the list's lag
    seq: int  # creation order: the tie-break of every sort


class VismaFake:
    def __init__(
        self,
        app: SandboxApp,
        *,
        rate_limit: str = "600/60",
        faults: Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        today: Callable[[], date] = date.today,
        utcnow: Callable[[], datetime] | None = None,
    ) -> None:
        self.app = app
        count, _, seconds = rate_limit.partition("/")
        self.rate_limit = (int(count), float(seconds))
        self.faults = faults or Faults()
        self.clock = clock
        self.sleep = sleep
        self.today = today
        self.utcnow = utcnow or (lambda: datetime.now(UTC))
        # The order of an unsorted list and every new id come from the fake's own generators.
        self.rng = random.Random(self.faults.seed)
        self._ids = random.Random(f"visma-{self.faults.seed}")
        self.units: dict[str, VismaUnit] = {}
        self.codings: dict[str, VismaCoding] = {}
        self.terms: dict[str, VismaTerms] = {}
        self.articles: dict[str, VismaArticle] = {}
        self.customers: dict[str, VismaCustomer] = {}
        # Project ids -> number; cost centre item ids -> (cost centre 1-3, code).
        self.projects: dict[str, str] = {}
        self.cost_center_items: dict[str, tuple[int, str]] = {}
        # CompanySettingsApi.AccountingLockedTo, "Date until which accounting is locked": the
        # last locked day, or None when nothing is locked.
        self.accounting_locked_to: date | None = None
        self._seed_registers()
        self.drafts: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        # Deleted drafts, kept for neutral_invoices() ("gone"); the API never shows them.
        self.graveyard: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, _Meta] = {}
        self._seq = itertools.count(1)
        # The counterpart of the fake Fortnox's modified_while_sent: every change accepted on
        # a converted invoice. The API has no way to change one, so it stays empty; the test
        # oracle reads it all the same.
        self.modified_after_convert: list[str] = []
        self.windows: dict[tuple[str, str], _Window] = {}
        self.access_tokens: dict[str, _Token] = {}
        self.refresh_tokens: dict[str, frozenset[str]] = {}
        self.codes: dict[str, _Code] = {}
        self.rate_limited = 0
        self.token_grants: dict[str, int] = {}
        # A person at work while a client pages: the next N listings of drafts that span more
        # than one page lose a draft between two page requests (after a page is answered, the
        # first draft on it is deleted). $page counts positions, so the next page starts one
        # draft later and a draft nobody deleted is never shown in that listing.
        self.delete_between_pages = 0
        for method in ("GET", "POST", "PUT", "DELETE"):
            app.add_route(method, f"{API}/*", self._api)
        app.add_route("GET", f"{IDENTITY}/authorize", self._authorize)
        app.add_route("POST", f"{IDENTITY}/token", self._token)
        app.add_route("POST", CONTROL, self._control)
        app.extensions["visma"] = self

    def _seed_registers(self) -> None:
        self.units = {u.id: u for u in seed_units().values()}
        self.codings = seed_codings()
        self.terms = seed_terms()
        self.articles = seed_articles()
        self.customers = seed_visma_customers()
        self.projects = {project_id(n): n for n in SEED_PROJECTS}
        self.cost_center_items = {
            cost_center_item_id(code): (center, code)
            for code, (center, _) in SEED_COST_CENTER_ITEMS.items()
        }

    def article_by_number(self, number: str) -> VismaArticle:
        for article in self.articles.values():
            if article.number == number:
                return article
        raise KeyError(number)

    def customer_by_number(self, number: str) -> VismaCustomer:
        for customer in self.customers.values():
            if customer.number == number:
                return customer
        raise KeyError(number)

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    # --- sandbox controls ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every draft and invoice and the counters; registers back to seed. Tokens
        stay."""
        self.drafts.clear()
        self.invoices.clear()
        self.graveyard.clear()
        self._meta.clear()
        self.modified_after_convert.clear()
        self._seed_registers()
        self.accounting_locked_to = None
        self.rate_limited = 0
        self.delete_between_pages = 0
        self.windows.clear()
        self.token_grants.clear()

    def state(self) -> dict[str, Any]:
        return {
            "drafts": [self._summary(d) for d in self.drafts.values()],
            "invoices": [self._summary(i) for i in self.invoices.values()],
            "deleted_drafts": list(self.graveyard),
            "modified_after_convert": list(self.modified_after_convert),
            "rate_limited": self.rate_limited,
            "token_grants": dict(self.token_grants),
            "faults": self.faults.public(),
            "delete_between_pages": self.delete_between_pages,
        }

    @staticmethod
    def _summary(document: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "Id", "InvoiceNumber", "CreatedFromDraftId", "CustomerNumber", "ContractNumber",
            "IsCreditInvoice", "IncludesVat", "InvoiceDate", "DueDate", "TotalAmount",
            "TotalVatAmount",
        )  # fmt: skip
        summary = {k: document[k] for k in keys if k in document}
        summary["Rows"] = len(document["Rows"])
        return summary

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def convert(self, draft_id: str, *, with_draft_id: bool = True) -> str:
        """A person converts a draft to an invoice in eAccounting. The draft's own invoice date
        is kept (as keepOriginalDraftDate=true would). Returns the new invoice's Id.

        Whether Visma fills in the invoice's CreatedFromDraftId on a convert is unverified (the
        OpenAPI document describes it as an input of POST /customerinvoices only): the fake
        does by default, and `with_draft_id=False` leaves it null, the harsher reading."""
        try:
            invoice = self._convert(
                self.drafts[draft_id], keep_date=True, validation=None, with_draft_id=with_draft_id
            )
        except _Refused as refused:
            raise ValueError(refused.response.body.decode()) from None
        return str(invoice["Id"])

    def delete(self, draft_id: str) -> None:
        """A person deletes a draft in eAccounting."""
        self._delete(self.drafts[draft_id])

    def edit_row(self, draft_id: str, index: int, **values: Any) -> None:
        """A person edits row `index` (from 0) of a draft in eAccounting's UI and saves: sets
        the given fields (ArticleId, or ArticleNumber to pick an article by number; Text,
        Quantity, UnitPrice, DiscountPercentage; ProjectId, CostCenterItemId1..3, None to
        clear one). Picking another article fills its name and
        price unless they are given too. Saving is a change, so every row gets a new Id."""
        draft = self.drafts[draft_id]
        allowed = {"ArticleId", "ArticleNumber", "Text", "Quantity", "UnitPrice",
                   "DiscountPercentage", *ROW_REFERENCES}  # fmt: skip
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"not an editable row field: {', '.join(unknown)}")
        body = self._writable(draft)
        row = body["Rows"][index]
        if "ArticleNumber" in values:
            number = values.pop("ArticleNumber")
            try:
                values["ArticleId"] = self.article_by_number(number).id
            except KeyError:
                raise ValueError(f"no article {number}") from None
        if "ArticleId" in values and values["ArticleId"] != row.get("ArticleId"):
            article = self.articles.get(str(values["ArticleId"]).lower())
            row["IsTextRow"] = False
            if article is not None:
                row["Text"] = article.name
                row["UnitPrice"] = article.net_price
        for name in ("Quantity", "UnitPrice", "DiscountPercentage"):
            if name in values:
                values[name] = Decimal(str(values[name]))
        row.update(values)
        try:
            rebuilt = self._build(body, draft_id=draft_id, created=draft["CreatedUtc"])
        except _Refused as refused:
            raise ValueError(refused.response.body.decode()) from None
        draft.clear()
        draft.update(rebuilt)

    def neutral_invoices(self) -> list[dict[str, Any]]:
        """Every draft and invoice in the neutral shape the test oracle shares with the fake
        Fortnox: open drafts, deleted ("gone") drafts, and converted ("closed") invoices. The
        key is the ContractNumber, the field the connector keys its drafts with ("" when
        null)."""
        found = [self._neutral(d, d["Id"], "open") for d in self.drafts.values()]
        found += [self._neutral(d, d["Id"], "gone") for d in self.graveyard.values()]
        found += [
            self._neutral(i, str(i["InvoiceNumber"]), "closed") for i in self.invoices.values()
        ]
        return found

    def _neutral(self, document: dict[str, Any], number: str, state: str) -> dict[str, Any]:
        currency = document.get("InvoiceCurrencyCode") or document.get("CurrencyCode") or ""
        return {
            "number": number,
            "remote_id": document["Id"],
            "key": document.get("ContractNumber") or "",
            "customer_number": document["CustomerNumber"],
            "currency": currency,
            "state": state,
            "vat_included": document["IncludesVat"],
            "rows": [
                {
                    "article": row["ArticleNumber"] or "",
                    "description": row["Text"] or "",
                    "quantity": Decimal(row["Quantity"]),
                    "price": Decimal(row["UnitPrice"]),
                    "unit": row["UnitAbbreviation"] or "",
                    "vat": self._row_percent(row),
                }
                for row in document["Rows"]
            ],
        }

    def _row_percent(self, row: dict[str, Any]) -> Decimal:
        if row["IsTextRow"] or row["ArticleId"] is None:
            return Decimal(0)
        return self.articles[row["ArticleId"]].coding.vat_percent

    def _control(self, request: Request) -> Response:
        """POST /_sandbox/visma: {"convert": [draft ids], "delete": [draft ids],
        "delete_between_pages": N}, each optional. Checked whole before anything changes;
        anything else is 400."""
        try:
            body = request.json()
        except ValueError:
            return json_response(400, {"error": "body must be a JSON object"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "body must be a JSON object"})
        unknown = sorted(set(body) - {"convert", "delete", "delete_between_pages"})
        if unknown:
            return json_response(400, {"error": f"unknown key: {', '.join(unknown)}"})
        between = body.get("delete_between_pages", self.delete_between_pages)
        if isinstance(between, bool) or not isinstance(between, int) or between < 0:
            return json_response(400, {"error": "delete_between_pages must be a whole number >= 0"})
        lists: dict[str, list[str]] = {}
        for key in ("convert", "delete"):
            ids = body.get(key, [])
            if (
                not isinstance(ids, list)
                or not all(isinstance(i, str) and i in self.drafts for i in ids)
                or len(set(ids)) != len(ids)
            ):
                return json_response(400, {"error": f"{key} must list existing draft ids"})
            lists[key] = ids
        if set(lists["convert"]) & set(lists["delete"]):
            return json_response(400, {"error": "a draft cannot be converted and deleted"})
        for draft_id in lists["convert"]:
            try:
                self._convert_date(self.drafts[draft_id], keep_date=True)
            except _Refused as refused:
                detail = refused.response.body.decode()
                error = f"draft {draft_id} cannot be converted: {detail}"
                return json_response(400, {"error": error})
        for draft_id in lists["convert"]:
            self.convert(draft_id)
        for draft_id in lists["delete"]:
            self.delete(draft_id)
        self.delete_between_pages = between
        return json_response(200, self.state())

    # --- errors ----------------------------------------------------------------------------------

    def _error(
        self, status: int, code: int, message: str, problems: Iterable[_Problem] = ()
    ) -> Response:
        """Visma's error body (CommonExtendedBadRequest; NOTES section 6): ErrorCode,
        DeveloperErrorMessage, ErrorId (a GUID on every non-success), and `Errors` when there
        are field errors. NOTES also mentions an older name, ValidationErrors; the fake writes
        the schema's `Errors` and leaves the key out when there is nothing in it (as the
        documented 429 body does), so a client cannot count on it."""
        body: dict[str, Any] = {
            "ErrorCode": code,
            "DeveloperErrorMessage": message,
            "ErrorId": self._new_id(),
        }
        listed = [
            {"Field": p.field, "ErrorCode": str(code), "Message": p.message, "Key": p.key}
            for p in problems
        ]
        if listed:
            body["Errors"] = listed
        return json_response(status, body)

    def _refuse(
        self, status: int, code: int, message: str, problems: Iterable[_Problem] = ()
    ) -> _Refused:
        return _Refused(self._error(status, code, message, problems))

    def _invalid(self, problems: list[_Problem]) -> _Refused:
        return self._refuse(400, E_VALIDATION, "Validation failed: see Errors.", problems)

    def _query_error(self, message: str) -> _Refused:
        return self._refuse(400, E_QUERY, f"QueryParameterError: {message}")

    # --- the identity server ---------------------------------------------------------------------

    def issue_code(self, scopes: Iterable[str], redirect_uri: str) -> str:
        """An authorization code as if a person had logged in and picked the company."""
        code = "sandbox-code-" + secrets.token_urlsafe(8)
        self.codes[code] = _Code(frozenset(scopes), redirect_uri, self.clock() + CODE_LIFETIME)
        return code

    def _authorize(self, request: Request) -> Response:
        """GET /connect/authorize (NOTES section 4): client_id, redirect_uri, scope, state,
        response_type=code; prompt and acr_values are accepted and have no effect here. The
        person is taken to have consented at once: a 302 to redirect_uri with ?code&state."""
        if request.arg("client_id") != CLIENT_ID:
            return json_response(400, {"error": "invalid_client"})
        redirect = request.arg("redirect_uri") or ""
        if not redirect.startswith(("http://", "https://")):
            return json_response(400, {"error": "invalid_request"})
        state = request.arg("state") or ""
        if request.arg("response_type") != "code":
            query = urlencode({"error": "unsupported_response_type", "state": state})
            return Response(302, b"", {"Location": f"{redirect}?{query}"})
        scopes = (request.arg("scope") or "").split()
        if not scopes or not set(scopes) <= KNOWN_SCOPES:
            query = urlencode({"error": "invalid_scope", "state": state})
            return Response(302, b"", {"Location": f"{redirect}?{query}"})
        code = self.issue_code(scopes, redirect)
        query = urlencode({"code": code, "state": state})
        return Response(302, b"", {"Location": f"{redirect}?{query}"})

    def _token(self, request: Request) -> Response:
        """POST /connect/token with Basic client authentication (NOTES section 4). Errors are
        IdentityServer's {"error": ...} with status 400, invalid_client included ([INFERRED]
        from IdentityServer; Visma does not document its error answers)."""
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            # Harsher reading: only Basic authentication, never the secret in the form.
            return json_response(400, {"error": "invalid_client"})
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type", "")
        self.token_grants[grant] = self.token_grants.get(grant, 0) + 1
        if grant == "authorization_code":
            # Single use, 5 minutes, and the redirect_uri of the authorization (NOTES 4).
            code = self.codes.pop(form.get("code", ""), None)
            if (
                code is None
                or code.expires <= self.clock()
                or form.get("redirect_uri") != code.redirect_uri
            ):
                return json_response(400, {"error": "invalid_grant"})
            return self._granted(code.scopes)
        if grant == "refresh_token":
            presented = form.get("refresh_token", "")
            if presented == SEED_REFRESH_TOKEN:
                scopes: frozenset[str] | None = SEED_SCOPES
            else:
                # Rotating: the old token is consumed on use ([INFERRED] NOTES section 4, the
                # IdentityServer "OneTime" usage of an older client). Newer clients get
                # reusable tokens; rotating is the harsher reading, so the fake rotates.
                scopes = self.refresh_tokens.pop(presented, None)
            if scopes is None:
                return json_response(400, {"error": "invalid_grant"})
            return self._granted(scopes)
        return json_response(400, {"error": "unsupported_grant_type"})

    def _granted(self, scopes: frozenset[str]) -> Response:
        # {access_token, refresh_token, token_type: "bearer", expires_in: 3600} (NOTES
        # section 4). A refresh token only with offline_access ("required for a refresh
        # token"). No `scope` field: a client cannot learn its scopes from the answer.
        access = "sandbox-at-" + secrets.token_urlsafe(12)
        self.access_tokens[access] = _Token(CLIENT_ID, self.clock() + TOKEN_LIFETIME, scopes)
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": TOKEN_LIFETIME,
            "token_type": "bearer",
        }
        if "offline_access" in scopes:
            refresh = "sandbox-rt-" + secrets.token_urlsafe(12)
            self.refresh_tokens[refresh] = scopes
            body["refresh_token"] = refresh
        return json_response(200, body)

    # --- the API ---------------------------------------------------------------------------------

    def _window(self, client: str, endpoint: str) -> _Window:
        # "registered per client and endpoint/URL" (NOTES section 5). Harsher reading of
        # "endpoint": the resource, whatever the method and id, so /customerinvoicedrafts and
        # /customerinvoicedrafts/{id}/convert share one window.
        key = (client, endpoint)
        if key not in self.windows:
            limit, period = self.rate_limit
            self.windows[key] = _Window(limit, period, self.clock)
        return self.windows[key]

    def _too_many(self, window: _Window) -> Response:
        # The documented body, with N the seconds until a slot frees (NOTES section 5). No
        # Retry-After header: none is documented ([UNCERTAIN]), so a client cannot count on it.
        limit, period = self.rate_limit
        unit = "Minute" if period == 60 else f"{period:g} Seconds"
        message = (
            f"API calls quota exceeded! maximum admitted {limit} per {unit}. "
            f"Try again in {window.wait_seconds()} seconds."
        )
        return self._error(429, E_TOO_MANY_REQUESTS, message)

    def _api(self, request: Request) -> Response:
        if self.faults.latency_ms:
            self.sleep(self.faults.latency_ms / 1000)
        header = request.headers.get("authorization", "")
        token = self.access_tokens.get(header.removeprefix("Bearer ")) if header else None
        if token is None or token.expires <= self.clock():
            # Harsher reading: 401 with no body (Visma documents none), so a client must go by
            # the status alone.
            return Response(401, b"", {"WWW-Authenticate": "Bearer"})
        path = request.path[len(API) :]
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        window = self._window(token.client, parts[0].lower() if parts else "")
        forced = self.faults.force_429 > 0 or self.faults.hit(self.faults.rate_429)
        if forced or not window.admit():
            # A refused request does not count: "As soon as the number of requests is below
            # the limit, the response will go back to normal again" (NOTES section 5).
            self.faults.force_429 = max(0, self.faults.force_429 - 1)
            self.rate_limited += 1
            return self._too_many(window)
        if self.faults.hit(self.faults.error_rate):
            return Response(
                503, b"<html><body>Service Unavailable</body></html>", {"Content-Type": "text/html"}
            )
        try:
            self._check_scope(request.method, token.scopes)
            return self._route(request, parts)
        except _Refused as refused:
            return refused.response

    def _check_scope(self, method: str, scopes: frozenset[str]) -> None:
        # ea:api is required for every call; reads need ea:sales or ea:sales_readonly, writes
        # ea:sales (OpenAPI, "Requires any of the following scopes"); else 4006 (NOTES 4).
        needed = {"ea:sales", "ea:sales_readonly"} if method == "GET" else {"ea:sales"}
        if "ea:api" not in scopes or not scopes & needed:
            wanted = " or ".join(sorted(needed))
            raise self._refuse(
                403, E_NO_SCOPE, f"NoAccessToScopes: this call needs ea:api and {wanted}."
            )

    def _no_route(self, request: Request) -> _Refused:
        return self._refuse(
            404,
            E_NOT_FOUND,
            f"No HTTP resource was found that matches the request URI ({request.method} "
            f"{request.path}).",
        )

    def _route(self, request: Request, parts: list[str]) -> Response:
        method = request.method
        resource = parts[0] if parts else ""
        rest = parts[1:]
        if resource == "customerinvoicedrafts":
            return self._drafts(request, rest)
        if resource == "customerinvoices" and method == "GET":
            if not rest:
                return self._list(request, _INVOICE_LIST, self._listed_invoices(request))
            if len(rest) == 1:
                invoice = self.invoices.get(self._path_id(rest[0]))
                if invoice is None:
                    raise self._not_found("customer invoice")
                self._only_params(request, {})
                return json_response(200, invoice)
        registers: dict[str, tuple[_ListSpec, Callable[[], list[dict[str, Any]]], str]] = {
            "customers": (_CUSTOMER_LIST, self._customer_items, "customer"),
            "articles": (_ARTICLE_LIST, self._article_items, "article"),
            "units": (_UNIT_LIST, self._unit_items, "unit"),
            "articleaccountcodings": (_CODING_LIST, self._coding_items, "article account coding"),
            "termsofpayments": (_TERMS_LIST, self._terms_items, "terms of payment"),
        }
        if resource == "companysettings" and method == "GET" and not rest:
            self._only_params(request, {})
            return json_response(200, self._company_settings())
        if resource in registers and method == "GET" and len(rest) <= 1:
            # showPricesWithTwoDecimals and customerId (customer prices) of GET /articles are
            # accepted and change nothing: the fake has no price lists and 2-decimal prices.
            spec, items, name = registers[resource]
            if not rest:
                return self._list(request, spec, items())
            wanted = self._path_id(rest[0])
            self._only_params(request, spec.params)
            for item in items():
                if item["Id"] == wanted:
                    return json_response(200, item)
            raise self._not_found(name)
        raise self._no_route(request)

    def _path_id(self, raw: str) -> str:
        # A path id that is not a GUID: harsher reading, 400 InvalidInput (whether the real
        # API answers 400 or 404 is not documented), so it never looks like "gone".
        if not _GUID.fullmatch(raw):
            raise self._refuse(400, E_INPUT, f"InvalidInput: '{raw}' is not a valid Guid.")
        return raw.lower()

    def _not_found(self, name: str) -> _Refused:
        # 3000 ResourceNotFound (NOTES section 6). The status 404 is documented for
        # GET /units/{id} only; the fake answers 404 for every id it does not know.
        return self._refuse(404, E_NOT_FOUND, f"ResourceNotFound: the {name} was not found.")

    # --- query parameters ------------------------------------------------------------------------

    def _only_params(self, request: Request, allowed: dict[str, str]) -> dict[str, Any]:
        """The operation's own parameters, parsed. Harsher reading: an unknown parameter or a
        repeated one is refused (6000) rather than ignored."""
        values: dict[str, Any] = {}
        for name, given in request.query.items():
            if name not in allowed:
                raise self._query_error(f"unknown query parameter {name}.")
            if len(given) != 1:
                raise self._query_error(f"{name} is given more than once.")
            values[name] = self._param(name, given[0], allowed[name])
        return values

    def _param(self, name: str, raw: str, kind: str) -> Any:
        if kind == "bool":
            if raw.lower() not in {"true", "false"}:
                raise self._query_error(f"{name} must be true or false.")
            return raw.lower() == "true"
        if kind == "uuid":
            if not _GUID.fullmatch(raw):
                raise self._refuse(400, E_INPUT, f"InvalidInput: {name} is not a valid Guid.")
            return raw.lower()
        if kind == "date":
            parsed = _parse_date(raw)
            if parsed is None:
                raise self._refuse(400, E_INPUT, f"InvalidInput: {name} is not a valid date.")
            return parsed
        if kind == "datetime":
            # A bad DateTime is 6001 (NOTES section 6).
            try:
                moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise self._refuse(
                    400, E_INPUT, f"InvalidInput: {name} is not a valid DateTime."
                ) from None
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return raw

    def _list(
        self,
        request: Request,
        spec: _ListSpec,
        items: list[dict[str, Any]],
        answered: Callable[[list[dict[str, Any]], int, int], None] | None = None,
    ) -> Response:
        """A list answer: {"Meta": CommonPaginationMetadata, "Data": [...]} (OpenAPI
        PaginatedResponseOf...), with $filter, $orderby, $select, $page and $pagesize.
        `answered(data, page, pages)` runs once the page is made, before it is sent."""
        params = {k: v for k, v in request.query.items() if k not in _PAGING}
        for name, given in request.query.items():
            if name.startswith("$") and name not in _PAGING:
                # $top, $skip, $count, $expand...: the portal documents $filter, $orderby,
                # $select, $page and $pagesize only (NOTES section 2). Harsher: refused.
                raise self._query_error(f"{name} is not supported.")
            if len(given) != 1:
                raise self._query_error(f"{name} is given more than once.")
        self._only_params(
            Request(request.method, request.path, params, request.headers), spec.params
        )
        page = self._int_arg(request, "$page", 1)
        size = self._int_arg(request, "$pagesize", DEFAULT_PAGE_SIZE)
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise self._query_error(
                f"$page must be at least 1 and $pagesize between 1 and {MAX_PAGE_SIZE}."
            )
        flt = request.arg("$filter")
        if flt is not None:
            items = self._filtered(items, flt, spec)
        items = self._ordered(items, request.arg("$orderby"), spec)
        select = request.arg("$select")
        if select is not None:
            items = self._selected(items, select)
        start = (page - 1) * size
        data = items[start : start + size]
        # 0 pages when nothing matches: a client must not ask for page 1 of 0.
        pages = math.ceil(len(items) / size)
        answer = {
            "Meta": {
                "CurrentPage": page,
                "PageSize": size,
                "TotalNumberOfPages": pages,
                "TotalNumberOfResults": len(items),
                "ServerTimeUtc": _utc_text(self.utcnow()),
            },
            "Data": data,
        }
        if answered is not None:
            answered(data, page, pages)
        return json_response(200, answer)

    def _int_arg(self, request: Request, name: str, default: int) -> int:
        raw = request.arg(name)
        if raw is None:
            return default
        if not re.fullmatch(r"-?\d+", raw):
            raise self._query_error(f"{name} must be a whole number.")
        return int(raw)

    def _filtered(
        self, items: list[dict[str, Any]], expression: str, spec: _ListSpec
    ) -> list[dict[str, Any]]:
        """A simple `Field eq value`: a quoted string ('' for a quote inside), or an unquoted
        true/false, whole number or GUID, on the few fields of `spec`. The portal documents
        OData-style filters (NOTES section 2) but not which fields or operators each endpoint
        takes: harsher reading, everything else (and, or, ne, functions, lambdas, other fields,
        reference fields in particular) is refused with 6000 QueryParameterError."""
        match = re.fullmatch(r"\s*(\w+)\s+eq\s+('(?:[^']|'')*'|[^\s']+)\s*", expression)
        if match is None:
            raise self._query_error(f"the filter '{expression}' is not supported.")
        name, literal = match.group(1), match.group(2)
        if name in REFERENCE_FIELDS:
            raise self._query_error(f"filtering on {name} is not supported.")
        kind = spec.filters.get(name)
        if kind is None:
            raise self._query_error(f"filtering on {name} is not supported.")
        quoted = literal.startswith("'")
        value: Any
        if kind == "string" and quoted:
            # Equality ignores case: harsher reading (SQL Server's usual collation), so a
            # client must still compare what comes back.
            wanted = literal[1:-1].replace("''", "'").casefold()
            return [i for i in items if str(i.get(name) or "").casefold() == wanted]
        if kind == "bool" and literal in {"true", "false"}:
            value = literal == "true"
        elif kind == "int" and re.fullmatch(r"-?\d+", literal):
            value = int(literal)
        elif kind == "uuid" and _GUID.fullmatch(literal):
            value = literal.lower()
        else:
            raise self._query_error(f"'{literal}' is not a valid {kind} for {name}.")
        return [i for i in items if i.get(name) == value]

    def _ordered(
        self, items: list[dict[str, Any]], orderby: str | None, spec: _ListSpec
    ) -> list[dict[str, Any]]:
        if orderby is None:
            # No order is documented without $orderby. Harsher reading: a new order on every
            # request, so paging without $orderby may repeat or miss items.
            shuffled = list(items)
            self.rng.shuffle(shuffled)
            return shuffled
        ordered = list(items)  # in creation order: the tie-break
        clauses = [c.split() for c in orderby.split(",")]
        for clause in clauses:
            valid = 1 <= len(clause) <= 2 and clause[0] in spec.orderby
            if not valid or (len(clause) == 2 and clause[1] not in {"asc", "desc"}):
                raise self._query_error(f"cannot order by '{' '.join(clause)}'.")
        for clause in reversed(clauses):  # stable sorts, the last key first
            ordered.sort(key=_sort_key(clause[0]), reverse=clause[-1] == "desc")
        return ordered

    def _selected(self, items: list[dict[str, Any]], select: str) -> list[dict[str, Any]]:
        """$select: top-level properties only, each one the items have."""
        names = [n.strip() for n in select.split(",")]
        if not all(names) or (items and not set(names) <= set(items[0])):
            raise self._query_error(f"cannot select '{select}'.")
        return [{n: i[n] for n in names} for i in items]

    # --- registers -------------------------------------------------------------------------------

    def _customer_items(self) -> list[dict[str, Any]]:
        return [self._customer(c) for c in self.customers.values()]

    @staticmethod
    def _customer(customer: VismaCustomer) -> dict[str, Any]:
        # CustomerApi: Name, InvoicePostalCode, InvoiceCity, IsPrivatePerson, IsActive and
        # TermsOfPaymentId are required (NOTES section 3); the fields the fake stores.
        return {
            "Id": customer.id,
            "CustomerNumber": customer.number,
            "Name": customer.name,
            "InvoiceAddress1": customer.address1,
            "InvoiceAddress2": None,
            "InvoicePostalCode": customer.postal_code,
            "InvoiceCity": customer.city,
            "InvoiceCountryCode": customer.country,
            "CurrencyCode": customer.currency,
            "TermsOfPaymentId": customer.terms.id,
            "IsPrivatePerson": customer.private_person,
            "IsActive": customer.active,
            "IsFutureInvoiceDateAllowed": False,
            "ReverseChargeOnConstructionServices": False,
        }

    def _company_settings(self) -> dict[str, Any]:
        """GET /companysettings (scope ea:sales or ea:sales_readonly; OpenAPI
        CompanySettingsApi): its required fields (Name, Address1, PostalCode, City, CountryCode)
        and the read-only ones a client may use. AccountingLockedTo is a non-nullable date-time
        in the schema; what it holds when nothing is locked is [UNCERTAIN]: harsher reading,
        .NET's empty date 0001-01-01, so a client must not take it for a lock."""
        terms = next(t for t in self.terms.values() if t.days == 30)
        locked = self.accounting_locked_to or date(1, 1, 1)
        return {
            "Name": COMPANY_NAME,
            "Email": None,
            "Address1": "Sandboxvägen 1",
            "Address2": None,
            "CountryCode": COMPANY_COUNTRY,
            "PostalCode": "111 22",
            "City": "Stockholm",
            "CurrencyCode": COMPANY_CURRENCY,
            "TermsOfPaymentId": terms.id,
            "CorporateIdentityNumber": CORPORATE_IDENTITY_NUMBER,
            "VatCode": "SE" + CORPORATE_IDENTITY_NUMBER.replace("-", "") + "01",
            "AccountingLockedTo": f"{locked.isoformat()}T00:00:00",
            # 0 None, 1 Month (OpenAPI).
            "AccountingLockInterval": 0 if self.accounting_locked_to is None else 1,
            "ProductVariant": 1,  # Standard: a variant that invoices
            "CompanyStatus": 1,  # Active
            # The setting that makes a private person's drafts include VAT (_includes_vat).
            "ShowPricesExclVatPC": True,
            # Off: convert dates an invoice today unless asked (_convert_request).
            "KeepOriginalDraftDate": False,
        }

    def _article_items(self) -> list[dict[str, Any]]:
        return [self._article(a) for a in self.articles.values()]

    @staticmethod
    def _article(article: VismaArticle) -> dict[str, Any]:
        # ArticleApi: prices are NetPrice and GrossPrice, no Price (NOTES section 3).
        return {
            "Id": article.id,
            "IsActive": article.active,
            "Number": article.number,
            "Name": article.name,
            "NameEnglish": None,
            "NetPrice": _num(article.net_price),
            "NetPriceWithDiscount": _num(article.net_price),
            "GrossPrice": _num(article.gross_price),
            "CodingId": article.coding.id,
            "CodingName": article.coding.name,
            "UnitId": article.unit.id,
            "UnitName": article.unit.name,
            "UnitAbbreviation": article.unit.abbreviation,
            "IsServiceArticle": article.coding.type == "Service",
        }

    def _unit_items(self) -> list[dict[str, Any]]:
        return [
            {
                "Id": u.id,
                "Name": u.name,
                "Code": u.abbreviation,
                "Abbreviation": u.abbreviation,
                "AbbreviationEnglish": u.abbreviation_english,
            }
            for u in self.units.values()
        ]

    def _coding_items(self) -> list[dict[str, Any]]:
        return [
            {
                "Id": c.id,
                "Name": c.name,
                "NameEnglish": c.name,
                "Type": c.type,
                "VatRate": str(_num(c.vat_percent)),
                "IsActive": True,
                "VatRatePercent": _num(c.vat_percent / 100),
                "DomesticSalesSubjectToVatAccountNumber": c.account,
            }
            for c in self.codings.values()
        ]

    def _terms_items(self) -> list[dict[str, Any]]:
        return [
            {
                "Id": t.id,
                "Name": f"{t.days} dagar",
                "NameEnglish": f"{t.days} days",
                "NumberOfDays": t.days,
                "TermsOfPaymentTypeId": 0,
                "TermsOfPaymentTypeText": "Normal",
                "AvailableForSales": True,
                "AvailableForPurchase": True,
            }
            for t in sorted(self.terms.values(), key=lambda t: t.days)
        ]

    # --- customer invoice drafts -----------------------------------------------------------------

    def _drafts(self, request: Request, rest: list[str]) -> Response:
        method = request.method
        if not rest:
            if method == "GET":
                return self._list(
                    request, _DRAFT_LIST, self._listed_drafts(), answered=self._between_pages
                )
            if method == "POST":
                self._only_params(request, {"overrideCustomerIsPrivatePerson": "bool"})
                return self._create(request)
            raise self._no_route(request)
        if len(rest) > 2 or (len(rest) == 2 and (rest[1] != "convert" or method != "POST")):
            raise self._no_route(request)
        draft = self.drafts.get(self._path_id(rest[0]))
        if draft is None:
            # Converted or deleted drafts are gone as well: a converted invoice cannot be
            # changed through its draft.
            raise self._not_found("customer invoice draft")
        if len(rest) == 2:
            return self._convert_request(request, draft)
        if method == "GET":
            self._only_params(request, {})
            return json_response(200, draft)
        if method == "PUT":
            self._only_params(request, {})
            return self._replace(request, draft)
        if method == "DELETE":
            self._only_params(request, {})
            self._delete(draft)
            # Both OpenAPI documents answer 200 ("Customer invoice draft deleted"), no body.
            return Response(200, b"")
        raise self._no_route(request)

    def _between_pages(self, shown: list[dict[str, Any]], page: int, pages: int) -> None:
        """delete_between_pages: a page of a listing with more to come has been answered; a
        person deletes the first draft on it before the client asks for the next page."""
        if self.delete_between_pages <= 0 or page >= pages or not shown:
            return
        draft = self.drafts.get(str(shown[0].get("Id")))
        if draft is not None:
            self.delete_between_pages -= 1
            self._delete(draft)

    def _listed_drafts(self) -> list[dict[str, Any]]:
        # search_lag_seconds: a draft created less than that ago is not listed yet (found by
        # GET by id all the same). How fresh the list is is unknown: harsher reading.
        return self._settled(self.drafts)

    def _settled(self, documents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        lag = self.faults.search_lag_seconds
        now = self.clock()
        return [d for key, d in documents.items() if now - self._meta[key].created_at >= lag]

    def _body(self, request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if request.body and content_type.split(";")[0].strip().lower() != "application/json":
            # An ASP.NET [FromBody] with another media type is 415; the body of that answer is
            # unknown, so none.
            raise _Refused(Response(415, b""))
        try:
            return request.json()
        except ValueError:
            raise self._invalid([_Problem("", "InvalidJson", "The body is not JSON.")]) from None

    def _create(self, request: Request) -> Response:
        # overrideCustomerIsPrivatePerson is accepted (OpenAPI), but what it does is not
        # documented: harsher reading, it changes nothing (IncludesVat stays the customer's).
        body = self._body(request)
        draft_id = self._new_id()
        draft = self._build(body, draft_id=draft_id, created=_utc_text(self.utcnow()))
        self.drafts[draft_id] = draft
        self._meta[draft_id] = _Meta(self.clock(), next(self._seq))
        if self.faults.hit(self.faults.lost_create_rate):
            raise DropConnection  # stored, but the answer never arrives
        # 201 with the CustomerInvoiceDraftApi (OpenAPI 2026; the 2021 copy says the same).
        return json_response(201, draft)

    def _replace(self, request: Request, draft: dict[str, Any]) -> Response:
        # "Replace an existing customer invoice draft's data with the provided new data"
        # (OpenAPI PUT); NOTES section 2: "PUT is a full replace". Every field not sent
        # returns to its default, and the rows are exactly the rows sent.
        body = self._body(request)
        rebuilt = self._build(body, draft_id=draft["Id"], created=draft["CreatedUtc"])
        draft.clear()
        draft.update(rebuilt)
        if self.faults.hit(self.faults.lost_update_rate):
            raise DropConnection  # applied, but the answer never arrives
        return json_response(200, draft)

    def _delete(self, draft: dict[str, Any]) -> None:
        draft_id = draft["Id"]
        self.graveyard[draft_id] = self.drafts.pop(draft_id)

    # --- building a draft ------------------------------------------------------------------------

    def _check_shape(
        self,
        value: Any,
        fields: dict[str, _F],
        read_only: frozenset[str],
        required: tuple[str, ...],
        prefix: str,
        problems: list[_Problem],
    ) -> None:
        """Unknown and read-only properties, required ones, types, nulls, lengths, ranges and
        decimals: everything that needs no state. Collects every problem, as model validation
        does, rather than stopping at the first."""
        if not isinstance(value, dict):
            problems.append(_Problem(prefix.rstrip("."), "InvalidType", "Expected an object."))
            return
        for name in value:
            path = f"{prefix}{name}"
            if name in read_only:
                problems.append(_Problem(path, "ReadOnly", f"{name} is read-only."))
            elif name not in fields:
                problems.append(_Problem(path, "UnknownProperty", f"Unknown property {name}."))
        for name in required:
            if name not in value:
                problems.append(_Problem(f"{prefix}{name}", "Required", f"{name} is required."))
        for name, spec in fields.items():
            if name in value:
                self._check_value(value[name], spec, f"{prefix}{name}", problems)

    def _check_value(self, value: Any, spec: _F, path: str, problems: list[_Problem]) -> None:
        def bad(key: str, message: str) -> None:
            problems.append(_Problem(path, key, message))

        if value is None:
            if not spec.nullable:
                bad("Required", "null is not allowed here.")
            return
        kind = spec.kind
        if kind == "bool" and not isinstance(value, bool):
            bad("InvalidType", "Expected true or false.")
        elif kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            bad("InvalidType", "Expected a whole number.")
        elif kind == "number" and not _is_number(value):
            # A JSON number; a string such as "2.5" is refused (harsher than coercing it).
            bad("InvalidType", "Expected a number.")
        elif kind in {"string", "uuid", "date"} and not isinstance(value, str):
            bad("InvalidType", "Expected a string.")
        elif kind == "uuid" and not _GUID.fullmatch(value):
            bad("InvalidFormat", "Expected a GUID.")
        elif kind == "date" and _parse_date(value) is None:
            bad("InvalidFormat", "Expected a date, YYYY-MM-DD or YYYY-MM-DDT00:00:00.")
        elif kind in {"rows", "list"} and not isinstance(value, list):
            bad("InvalidType", "Expected an array.")
        elif kind == "margin":
            if not isinstance(value, dict) or not set(value) <= {"Amount", "Percentage"}:
                bad("InvalidType", "Expected {Amount, Percentage}.")
            elif not all(v is None or _is_number(v) for v in value.values()):
                bad("InvalidType", "Expected numbers.")
        else:
            if kind == "string" and spec.max_length is not None and len(value) > spec.max_length:
                bad("MaxLength", f"At most {spec.max_length} characters.")
            if kind in {"int", "number"}:
                number = Decimal(value)
                if abs(number) >= _LARGEST:
                    bad("OutOfRange", f"Less than {_LARGEST} in size.")
                if spec.minimum is not None and number < spec.minimum:
                    bad("OutOfRange", f"At least {spec.minimum}.")
                if spec.maximum is not None and number > spec.maximum:
                    bad("OutOfRange", f"At most {spec.maximum}.")
                if spec.places is not None and not _places_ok(number, spec.places):
                    bad("TooManyDecimals", f"At most {spec.places} decimals.")

    def _build(self, body: Any, *, draft_id: str, created: str) -> dict[str, Any]:
        """A draft from a POST or PUT body, as CustomerInvoiceDraftApi. Every writable field
        not sent takes its default: that is what makes a PUT a full replace."""
        problems: list[_Problem] = []
        self._check_shape(body, DRAFT_FIELDS, DRAFT_READ_ONLY, DRAFT_REQUIRED, "", problems)
        sent_rows = body.get("Rows") if isinstance(body, dict) else None
        if isinstance(sent_rows, list):
            for i, row in enumerate(sent_rows):
                self._check_shape(
                    row, ROW_FIELDS, ROW_READ_ONLY, ROW_REQUIRED, f"Rows[{i}].", problems
                )
        if problems:
            raise self._invalid(problems)
        sent: dict[str, Any] = {
            name: body.get(name, spec.default) for name, spec in DRAFT_FIELDS.items()
        }
        rows: list[dict[str, Any]] = [
            {name: row.get(name, spec.default) for name, spec in ROW_FIELDS.items()}
            for row in (sent["Rows"] or [])
        ]
        customer, terms = self._references(sent, rows)
        self._check_rules(sent, rows, customer)
        includes_vat = self._includes_vat(customer)
        built_rows = [
            self._build_row(row, i, sent["ReplaceUnitPriceWhenZero"], includes_vat)
            for i, row in enumerate(rows)
        ]
        numbers = [r["LineNumber"] for r in built_rows]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            # Convert validation "matches upon the line number" (OpenAPI): harsher reading,
            # two rows with one LineNumber are refused.
            raise self._invalid(
                [_Problem("Rows", "DuplicateLineNumber", f"LineNumber {duplicates[0]} twice.")]
            )
        total, vat = self._totals(built_rows, includes_vat)
        self._check_sign(sent["IsCreditInvoice"], total)
        invoice_date = _parse_date(sent["InvoiceDate"]) if sent["InvoiceDate"] else None
        due = _parse_date(sent["DueDate"]) if sent["DueDate"] else None
        if due is None and invoice_date is not None:
            # "If TermsOfPaymentId is omitted, the customer's terms are used" (NOTES 2).
            due = invoice_date + timedelta(days=terms.days)
        if due is not None and invoice_date is not None and due < invoice_date:
            # Harsher reading: a due date before the invoice date is refused.
            raise self._invalid([_Problem("DueDate", "OutOfRange", "Before the InvoiceDate.")])
        delivery = _parse_date(sent["DeliveryDate"]) if sent["DeliveryDate"] else None
        return {
            "Id": draft_id,
            "CustomerId": customer.id,
            "CreatedUtc": created,
            "IsCreditInvoice": sent["IsCreditInvoice"],
            "RotReducedInvoicingType": sent["RotReducedInvoicingType"],
            "RotReducedInvoicingPropertyName": None,
            "RotReducedInvoicingOrgNumber": None,
            "MaxAllowedTaxReductionAmount": Decimal(0),
            "RotReducedInvoicingAmount": Decimal(0),
            "RotReducedInvoicingAutomaticDistribution": False,
            "RotPropertyType": None,
            "HouseWorkOtherCosts": None,
            "Rows": built_rows,
            "Persons": [],
            **{name: sent[name] for name in sorted(REFERENCE_FIELDS)},
            "InvoiceCustomerName": customer.name,
            # "Sending a null value will make the draft use the value on the customer"
            # (OpenAPI; changelog "New mapping on empty InvoiceAddress1 and InvoiceAddress2").
            "InvoiceAddress1": sent["InvoiceAddress1"] or customer.address1,
            "InvoiceAddress2": sent["InvoiceAddress2"],
            "InvoicePostalCode": customer.postal_code,
            "InvoiceCity": customer.city,
            "InvoiceCountryCode": customer.country,
            # No currency field on a draft: the customer's currency is the invoice currency,
            # the company's for a customer without one.
            "InvoiceCurrencyCode": customer.invoice_currency,
            # Delivery fields: optional overrides of the customer's (who has none here).
            **{name: sent[name] for name in DELIVERY_FIELDS},
            "TermsOfPaymentId": terms.id,
            "EuThirdParty": sent["EuThirdParty"],
            "CustomerIsPrivatePerson": customer.private_person,
            "ReverseChargeOnConstructionServices": False,
            "SalesDocumentAttachments": [],
            "MessageThreads": [],
            "Notes": [],
            # A draft may have no invoice date: convert then uses the creation date or today
            # (2021 Swagger, keepOriginalDraftDate), so none is made up here.
            "InvoiceDate": _date_text(invoice_date),
            "DueDate": _date_text(due),
            "DeliveryDate": _date_text(delivery),
            "TotalAmount": _num(total),
            "TotalVatAmount": _num(vat),
            "TotalRoundings": Decimal(0),
            "TotalAmountBaseCurrency": _num(total),
            "TotalVatAmountBaseCurrency": _num(vat),
            "CustomerNumber": customer.number,
            "CustomerName": customer.name,
            "IncludesVat": includes_vat,
            "ReplaceUnitPriceWhenZero": sent["ReplaceUnitPriceWhenZero"],
            "UsesGreenTechnology": False,
            "IsDirectDebit": sent["IsDirectDebit"],
            "BackgroundId": None,
        }

    def _references(
        self, sent: dict[str, Any], rows: list[dict[str, Any]]
    ) -> tuple[VismaCustomer, VismaTerms]:
        """The customer, terms, articles and other ids a draft names must exist: 3000
        ResourceNotFound, "bad customer or article id" (NOTES section 6), with status 400 (the
        operations list no 404)."""
        problems: list[_Problem] = []
        customer = self.customers.get(sent["CustomerId"].lower())
        if customer is None:
            problems.append(_Problem("CustomerId", "NotFound", "No customer with this Id."))
        terms_id = sent["TermsOfPaymentId"]
        terms = self.terms.get(terms_id.lower()) if terms_id else None
        if terms_id and terms is None:
            problems.append(_Problem("TermsOfPaymentId", "NotFound", "No such terms of payment."))
        if sent["BackgroundId"]:
            problems.append(_Problem("BackgroundId", "NotFound", "No such background."))
        for i, row in enumerate(rows):
            article_id = row["ArticleId"]
            if article_id and article_id.lower() not in self.articles:
                problems.append(_Problem(f"Rows[{i}].ArticleId", "NotFound", "No such article."))
            for name in ROW_REFERENCES:
                if row[name] and not self._known_reference(name, row[name]):
                    problems.append(_Problem(f"Rows[{i}].{name}", "NotFound", f"No such {name}."))
        if problems or customer is None:
            raise self._refuse(400, E_NOT_FOUND, "ResourceNotFound: see Errors.", problems)
        return customer, terms or customer.terms

    def _known_reference(self, name: str, value: str) -> bool:
        if name == "ProjectId":
            return value.lower() in self.projects
        item = self.cost_center_items.get(value.lower())
        return item is not None and name == f"CostCenterItemId{item[0]}"

    def _check_rules(
        self, sent: dict[str, Any], rows: list[dict[str, Any]], customer: VismaCustomer
    ) -> None:
        problems: list[_Problem] = []

        def bad(path: str, key: str, message: str) -> None:
            problems.append(_Problem(path, key, message))

        if not customer.active:
            bad("CustomerId", "Inactive", "The customer is inactive.")  # harsher reading
        if sent["ElectronicReference"] and customer.private_person:
            # "Can only be set for non-private individuals" (OpenAPI ElectronicReference).
            bad("ElectronicReference", "NotAllowed", "Not for a private person.")
        # ROT/RUT and green technology: "ROT fields trigger 2000 if half-filled" (NOTES 7.6).
        # The fake does not model them at all: harsher reading, any use is refused.
        rot = (
            sent["RotReducedInvoicingType"] != 0
            or sent["RotReducedInvoicingPropertyName"]
            or sent["RotReducedInvoicingOrgNumber"]
            or sent["RotReducedInvoicingAmount"] != 0
            or sent["RotReducedInvoicingAutomaticDistribution"]
            or sent["RotPropertyType"] is not None
            or sent["HouseWorkOtherCosts"] is not None
            or sent["Persons"]
            or sent["UsesGreenTechnology"]
        )
        if rot:
            bad("RotReducedInvoicingType", "RotRut", "ROT, RUT and green technology need more.")
        places = 2 if customer.domestic else 4
        for i, row in enumerate(rows):
            path = f"Rows[{i}]."
            if not _places_ok(Decimal(row["UnitPrice"]), places):
                # "2 decimals allowed if the customer is domestic or 4 decimals if foreign"
                # (OpenAPI UnitPrice): more is refused (harsher than rounding).
                bad(path + "UnitPrice", "TooManyDecimals", f"At most {places} decimals.")
            if row["ReversedConstructionServicesVatFree"]:
                # "shall only be used for articles with reverse VAT charge" (2021 Swagger,
                # POST /customerinvoicedrafts); the fake has none.
                bad(path + "ReversedConstructionServicesVatFree", "NotAllowed", "No such VAT.")
            if (
                row["WorkCostType"]
                or row["IsWorkCost"]
                or row["WorkHours"] is not None
                or row["MaterialCosts"] is not None
                or row["GreenTechnologyType"]
            ):
                bad(path + "WorkCostType", "RotRut", "Only used for ROT/RUT invoices.")
            if row["IsTextRow"]:
                text = row["Text"]
                if not text:
                    # "for text rows, there should be at least one character" (OpenAPI Text).
                    bad(path + "Text", "Required", "A text row needs a text.")
                if row["ArticleId"] or row["Quantity"] != 0 or row["UnitPrice"] != 0:
                    # Harsher reading: a text row carries no article, quantity or price.
                    bad(path + "IsTextRow", "NotAllowed", "A text row has no article or amount.")
                for name in ROW_REFERENCES:
                    if row[name]:
                        # Harsher reading: nor a project or cost centre (it books nothing).
                        bad(path + name, "NotAllowed", "A text row has no project or cost centre.")
                continue
            article_id = row["ArticleId"]
            if not article_id:
                # "Required if IsTextRow is false" (OpenAPI ArticleId).
                bad(path + "ArticleId", "Required", "ArticleId is required on an article row.")
            elif not self.articles[article_id.lower()].active:
                # An inactive article exists (GET /articles/{id} finds it), so "not found"
                # (3000) would be untrue. Harsher reading: a validation error, 2000, naming
                # the row, so a client cannot tell it from its own mistakes by the code alone.
                bad(path + "ArticleId", "Inactive", "The article is inactive.")
        if len(rows) > 1001:
            bad("Rows", "OutOfRange", "At most 1001 rows (LineNumber 0-1000).")
        if problems:
            raise self._invalid(problems)

    @staticmethod
    def _includes_vat(customer: VismaCustomer) -> bool:
        # IncludesVat (read-only): "True = Company settings checkbox 'ShowPricesExclVatPC' is
        # checked and customer type is 'Private'" (OpenAPI). The fake company has that setting
        # on, so a private person's drafts include VAT. The setting's name reads the other way
        # round; the fake follows the schema's statement of when IncludesVat is true.
        return customer.private_person

    def _build_row(
        self, row: dict[str, Any], index: int, replace_zero: bool, includes_vat: bool
    ) -> dict[str, Any]:
        """One stored row, CustomerInvoiceDraftRowApi. Every change gives every row a new Id:
        "This property will be updated on every change on the customer invoice draft" (2021
        Swagger, row Id)."""
        line = row["LineNumber"] if row["LineNumber"] is not None else index
        if row["IsTextRow"]:
            return {
                "Id": self._new_id(),
                "LineNumber": line,
                "ArticleId": None,
                "IsServiceArticle": False,
                "UnitId": None,
                "ArticleNumber": None,
                "IsTextRow": True,
                "Text": row["Text"],
                "UnitPrice": Decimal(0),
                "IsDiscountInFixedAmount": False,
                "DiscountFixedAmount": None,
                "DiscountPercentage": Decimal(0),
                "Quantity": Decimal(0),
                "WorkCostType": 0,
                "IsWorkCost": False,
                "WorkHours": None,
                "MaterialCosts": None,
                "ReversedConstructionServicesVatFree": False,
                "CostCenterItemId1": None,
                "CostCenterItemId2": None,
                "CostCenterItemId3": None,
                "UnitAbbreviation": None,
                "UnitAbbreviationEnglish": None,
                "VatRateId": None,
                # "When row is a comment, value is null" (OpenAPI VatRate).
                "VatRate": None,
                "UnitName": None,
                "ProjectId": None,
                "GreenTechnologyType": 0,
                "PurchasePrice": Decimal(0),
                "Amount": Decimal(0),
                "FreightCosts": Decimal(0),
            }
        article = self.articles[row["ArticleId"].lower()]
        price = Decimal(row["UnitPrice"])
        if price == 0 and replace_zero:
            # ReplaceUnitPriceWhenZero true: "Replaces row unit prices that are equal to zero
            # with article's unit price" (OpenAPI); the default false keeps 0 (NOTES 7.5).
            price = article.gross_price if includes_vat else article.net_price
        quantity = Decimal(row["Quantity"])
        discount = Decimal(row["DiscountPercentage"])
        # Amount: "Returns a total amount of row. Format: 2 decimals" (OpenAPI); the discount
        # is a fraction 0-1 (NOTES section 2).
        amount = _round2(quantity * price * (1 - discount))
        return {
            "Id": self._new_id(),
            "LineNumber": line,
            "ArticleId": article.id,
            "IsServiceArticle": article.coding.type == "Service",
            # The unit comes from the article (NOTES section 2; UnitId is read-only): unit
            # fields sent on a row do not change it.
            "UnitId": article.unit.id,
            "ArticleNumber": article.number,
            "IsTextRow": False,
            # "For non text rows, default value will be the article's name" (OpenAPI Text).
            "Text": row["Text"] if row["Text"] is not None else article.name,
            "UnitPrice": _num(price),
            "IsDiscountInFixedAmount": False,
            "DiscountFixedAmount": None,
            "DiscountPercentage": _num(discount),
            "Quantity": _num(quantity),
            "WorkCostType": 0,
            "IsWorkCost": False,
            "WorkHours": None,
            "MaterialCosts": None,
            "ReversedConstructionServicesVatFree": False,
            # A person's bookkeeping on the row, kept as sent: a PUT without them (a full
            # replace) leaves them null.
            **{name: _lower_or_none(row[name]) for name in _ROW_COST_CENTERS},
            "UnitAbbreviation": article.unit.abbreviation,
            "UnitAbbreviationEnglish": article.unit.abbreviation_english,
            # VAT comes from the article's coding and cannot be set per row (NOTES 2, 7.4).
            "VatRateId": article.coding.id,
            # [UNCERTAIN] whether VatRate is 0.25 or 25: the fake writes the fraction, as
            # DiscountPercentage is one; a client must accept either.
            "VatRate": _num(article.coding.vat_percent / 100),
            "UnitName": article.unit.name,
            "ProjectId": _lower_or_none(row["ProjectId"]),
            "GreenTechnologyType": 0,
            "PurchasePrice": Decimal(0),
            "Amount": _num(amount),
            "FreightCosts": Decimal(0),
        }

    def _vat_groups(self, rows: list[dict[str, Any]]) -> dict[Decimal, Decimal]:
        groups: dict[Decimal, Decimal] = {}
        for row in rows:
            if not row["IsTextRow"]:
                rate = self.articles[row["ArticleId"]].coding.vat_percent
                groups[rate] = groups.get(rate, Decimal(0)) + Decimal(row["Amount"])
        return groups

    def _totals(self, rows: list[dict[str, Any]], includes_vat: bool) -> tuple[Decimal, Decimal]:
        """TotalAmount (excluding VAT) and TotalVatAmount. VAT is computed per rate on the sum
        of the rows of that rate, rounded half up; on a draft whose prices include VAT the VAT
        is taken out of the row amounts. [INFERRED]: Visma documents neither formula.
        TotalRoundings stays 0 (the company rounds nothing)."""
        groups = self._vat_groups(rows)
        gross_or_net = sum(groups.values(), Decimal(0))
        if includes_vat:
            vat = sum((_round2(a * r / (100 + r)) for r, a in groups.items()), Decimal(0))
            return gross_or_net - vat, vat
        vat = sum((_round2(a * r / 100) for r, a in groups.items()), Decimal(0))
        return gross_or_net, vat

    def _check_sign(self, credit: bool, total: Decimal) -> None:
        # [UNCERTAIN] whether a credit carries negative quantities or is negated by the flag
        # (NOTES section 2); the convert validation's totals "should be negative when credit
        # invoice" (OpenAPI). Harsher reading: the sign must match the flag both ways.
        message = None
        if credit and total >= 0:
            message = "A credit invoice needs a negative total: negative quantities."
        if not credit and total < 0:
            message = "A negative total needs IsCreditInvoice true."
        if message is not None:
            raise self._invalid([_Problem("IsCreditInvoice", "CreditSign", message)])

    @staticmethod
    def _writable(draft: dict[str, Any]) -> dict[str, Any]:
        """The stored draft as the body a PUT would send to keep it as it is."""
        body = {name: draft[name] for name in DRAFT_FIELDS if name in draft}
        body["Rows"] = [
            {name: row[name] for name in ROW_FIELDS if name in row and row[name] is not None}
            for row in draft["Rows"]
        ]
        for row in body["Rows"]:
            for name in ("UnitAbbreviation", "UnitAbbreviationEnglish", "UnitName"):
                row.pop(name, None)
        return body

    # --- convert ---------------------------------------------------------------------------------

    def _convert_request(self, request: Request, draft: dict[str, Any]) -> Response:
        params = self._only_params(
            request,
            {"keepOriginalDraftDate": "bool", "overrideCompanyKeepOriginalDraftDate": "bool"},
        )
        body = self._body(request) if request.body else None
        if body is not None:
            problems: list[_Problem] = []
            self._check_validation_shape(body, problems)
            if problems:
                raise self._invalid(problems)
        # The company setting keepOriginalDraftDate is off in the fake company, so only the
        # parameter counts, with or without overrideCompanyKeepOriginalDraftDate.
        keep = bool(params.get("keepOriginalDraftDate", False))
        invoice = self._convert(draft, keep_date=keep, validation=body)
        if self.faults.hit(self.faults.lost_create_rate):
            raise DropConnection  # converted, but the answer never arrives
        # 201 with the CustomerInvoiceApi (OpenAPI).
        return json_response(201, invoice)

    @staticmethod
    def _check_validation_shape(body: Any, problems: list[_Problem]) -> None:
        if not isinstance(body, dict):
            problems.append(_Problem("", "InvalidType", "Expected an object."))
            return
        for name, value in body.items():
            if name not in VALIDATION_FIELDS:
                problems.append(_Problem(name, "UnknownProperty", f"Unknown property {name}."))
            elif name == "Rows":
                if value is not None and (
                    not isinstance(value, list)
                    or not all(
                        isinstance(r, dict)
                        and set(r) <= VALIDATION_ROW_FIELDS
                        and isinstance(r.get("LineNumber"), int)
                        and not isinstance(r.get("LineNumber"), bool)
                        and all(
                            v is None or _is_number(v) for k, v in r.items() if k != "LineNumber"
                        )
                        for r in value
                    )
                ):
                    problems.append(_Problem("Rows", "InvalidType", "Bad validation rows."))
            elif value is not None and not _is_number(value):
                problems.append(_Problem(name, "InvalidType", "Expected a number."))

    def _row_net_vat(self, row: dict[str, Any], includes_vat: bool) -> tuple[Decimal, Decimal]:
        if row["IsTextRow"]:
            return Decimal(0), Decimal(0)
        rate = self.articles[row["ArticleId"]].coding.vat_percent
        amount = Decimal(row["Amount"])
        if includes_vat:
            vat = _round2(amount * rate / (100 + rate))
            return amount - vat, vat
        return amount, _round2(amount * rate / 100)

    def _validate_totals(self, draft: dict[str, Any], body: dict[str, Any]) -> None:
        """The convert body: "Optional set of properties to validate. Ignore the properties you
        do not wish to validate" (2021 Swagger); rows are matched "upon the line number"
        (OpenAPI). A difference refuses the convert: 2000 naming the field (code unverified)."""
        problems: list[_Problem] = []
        expected = {
            "TotalAmountInvoiceCurrency": Decimal(draft["TotalAmount"]),
            "TotalVatAmountInvoiceCurrency": Decimal(draft["TotalVatAmount"]),
            "TotalRoundingsInvoiceCurrency": Decimal(draft["TotalRoundings"]),
        }
        for name, value in expected.items():
            given = body.get(name)
            if given is not None and Decimal(given) != value:
                problems.append(_Problem(name, "Mismatch", f"{given} is not {_num(value)}."))
        by_line = {r["LineNumber"]: r for r in draft["Rows"]}
        for i, check in enumerate(body.get("Rows") or []):
            row = by_line.get(check["LineNumber"])
            if row is None:
                problems.append(_Problem(f"Rows[{i}].LineNumber", "NotFound", "No such line."))
                continue
            net, vat = self._row_net_vat(row, draft["IncludesVat"])
            for name, value in (
                ("TotalAmountNoVatInvoiceCurrency", net),
                ("TotalAmountIncVatInvoiceCurrency", net + vat),
            ):
                given = check.get(name)
                if given is not None and Decimal(given) != value:
                    problems.append(
                        _Problem(f"Rows[{i}].{name}", "Mismatch", f"{given} is not {_num(value)}.")
                    )
        if problems:
            raise self._invalid(problems)

    def _convert_date(self, draft: dict[str, Any], *, keep_date: bool) -> date:
        """The invoice date a convert gives, or the refusal of the convert."""
        if not draft["Rows"]:
            # An invoice requires Rows (CustomerInvoiceApi); harsher reading: an empty draft
            # cannot be converted.
            raise self._invalid([_Problem("Rows", "Required", "The draft has no rows.")])
        today = self.today()
        drafted = _parse_date(draft["InvoiceDate"]) if draft["InvoiceDate"] else None
        created = date.fromisoformat(draft["CreatedUtc"][:10])
        # keepOriginalDraftDate (2021 Swagger): true, the draft's date (past or future), or its
        # creation date when it has none; false, the draft's date only if in the future, else
        # today.
        if keep_date:
            invoice_date = drafted or created
        else:
            invoice_date = drafted if drafted is not None and drafted > today else today
        if invoice_date > today:
            # "A new error message will occur when trying to convert an invoice draft to an
            # invoice which has a future date" (changelog; NOTES section 7.8). Code unverified;
            # the fake's customers do not allow future dates (IsFutureInvoiceDateAllowed).
            raise self._invalid(
                [_Problem("InvoiceDate", "FutureDate", "The invoice date is in the future.")]
            )
        return invoice_date

    def _convert(
        self,
        draft: dict[str, Any],
        *,
        keep_date: bool,
        validation: dict[str, Any] | None,
        with_draft_id: bool = True,
    ) -> dict[str, Any]:
        """The draft becomes a CustomerInvoiceApi with an InvoiceNumber and CreatedFromDraftId,
        and leaves /customerinvoicedrafts (NOTES section 2)."""
        if validation is not None:
            self._validate_totals(draft, validation)
        invoice_date = self._convert_date(draft, keep_date=keep_date)
        drafted = _parse_date(draft["InvoiceDate"]) if draft["InvoiceDate"] else None
        customer = self.customers[draft["CustomerId"]]
        due = _parse_date(draft["DueDate"]) if draft["DueDate"] else None
        if due is None or invoice_date != drafted:
            # [INFERRED] a new invoice date gets a new due date from the terms of payment.
            due = invoice_date + timedelta(days=self.terms[draft["TermsOfPaymentId"]].days)
        invoice_id = self._new_id()
        number = max((i["InvoiceNumber"] for i in self.invoices.values()), default=0) + 1
        total = Decimal(draft["TotalAmount"])
        vat = Decimal(draft["TotalVatAmount"])
        stamp = _utc_text(self.utcnow())
        invoice: dict[str, Any] = {
            "Id": invoice_id,
            "EuThirdParty": draft["EuThirdParty"],
            "IsCreditInvoice": draft["IsCreditInvoice"],
            "CurrencyCode": draft["InvoiceCurrencyCode"],
            "CurrencyRate": Decimal(1),
            "TotalAmount": _num(total),
            "TotalVatAmount": _num(vat),
            "TotalRoundings": Decimal(0),
            "TotalAmountInvoiceCurrency": _num(total),
            "TotalVatAmountInvoiceCurrency": _num(vat),
            "SetOffAmountInvoiceCurrency": Decimal(0),
            "CustomerId": draft["CustomerId"],
            "Rows": [self._invoice_row(r, draft["IncludesVat"]) for r in draft["Rows"]],
            "InvoiceDate": _date_text(invoice_date),
            "DueDate": _date_text(due),
            "DeliveryDate": draft["DeliveryDate"],
            "RotReducedInvoicingType": draft["RotReducedInvoicingType"],
            **{name: draft[name] for name in sorted(REFERENCE_FIELDS)},
            "InvoiceCustomerName": draft["InvoiceCustomerName"],
            "InvoiceAddress1": draft["InvoiceAddress1"],
            "InvoiceAddress2": draft["InvoiceAddress2"],
            "InvoicePostalCode": draft["InvoicePostalCode"],
            "InvoiceCity": draft["InvoiceCity"],
            "InvoiceCountryCode": draft["InvoiceCountryCode"],
            "CustomerIsPrivatePerson": customer.private_person,
            "TermsOfPaymentId": draft["TermsOfPaymentId"],
            "InvoiceNumber": number,
            "CustomerNumber": draft["CustomerNumber"],
            "CustomerName": draft["CustomerName"],
            "RemainingAmount": _num(total + vat),
            "RemainingAmountInvoiceCurrency": _num(total + vat),
            "ReferringInvoiceId": None,
            "CreatedFromDraftId": draft["Id"] if with_draft_id else None,
            "VoucherNumber": f"A{number}",
            "VoucherId": self._new_id(),
            "CreatedUtc": stamp,
            "ModifiedUtc": stamp,
            "IncludesVat": draft["IncludesVat"],
            "PaymentStatus": 1,  # Unpaid
            "CreditedBy": [],
            "HasAutoInvoiceError": False,
            "ReplaceUnitPriceWhenZero": draft["ReplaceUnitPriceWhenZero"],
        }
        del self.drafts[draft["Id"]]
        self.invoices[invoice_id] = invoice
        self._meta[invoice_id] = _Meta(self.clock(), next(self._seq))
        return invoice

    def _invoice_row(self, row: dict[str, Any], includes_vat: bool) -> dict[str, Any]:
        """A draft row as a CustomerInvoiceRowApi: the same article, text, quantity, price and
        amount, with a new Id (the invoice's rows are new resources)."""
        net, _ = self._row_net_vat(row, includes_vat)
        return {
            "Id": self._new_id(),
            "ArticleNumber": row["ArticleNumber"],
            "ArticleId": row["ArticleId"],
            "IsServiceArticle": row["IsServiceArticle"],
            "AmountNoVat": _num(net),
            "VatRate": row["VatRate"],
            "LineNumber": row["LineNumber"],
            "IsTextRow": row["IsTextRow"],
            "Text": row["Text"],
            "UnitPrice": row["UnitPrice"],
            "UnitAbbreviation": row["UnitAbbreviation"],
            "UnitAbbreviationEnglish": row["UnitAbbreviationEnglish"],
            "DiscountPercentage": row["DiscountPercentage"],
            "Quantity": row["Quantity"],
            "IsVatFree": False,
            "UnitId": row["UnitId"],
            **{name: row[name] for name in ROW_REFERENCES},
            "Amount": row["Amount"],
        }

    def _listed_invoices(self, request: Request) -> list[dict[str, Any]]:
        # The list lags like the drafts' list (harsher reading): a draft converted less than
        # search_lag_seconds ago is in neither list.
        items = self._settled(self.invoices)
        since = request.arg("modifiedSinceUtc")
        if since is not None:
            moment = self._param("modifiedSinceUtc", since, "datetime")
            items = [
                i
                for i in items
                if datetime.fromisoformat(i["ModifiedUtc"].replace("Z", "+00:00")) >= moment
            ]
        return items


_ROW_COST_CENTERS = ("CostCenterItemId1", "CostCenterItemId2", "CostCenterItemId3")


def _lower_or_none(value: str | None) -> str | None:
    return value.lower() if value else None


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """Sort by one property, nulls last."""

    def key(item: dict[str, Any]) -> tuple[int, Any]:
        value = item.get(name)
        return (1, "") if value is None else (0, value)

    return key


__all__ = [
    "API",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "CORPORATE_IDENTITY_NUMBER",
    "IDENTITY",
    "SEED_REFRESH_TOKEN",
    "SEED_SCOPES",
    "VismaArticle",
    "VismaCustomer",
    "VismaFake",
    "cost_center_item_id",
    "project_id",
    "seed_articles",
    "seed_id",
    "seed_visma_customers",
]


# --- what the sandbox and the demo need of this fake (the convention of connector.sandbox) ---

FAKE = VismaFake
RATE_LIMIT = "600/60"  # Visma's own: 600 requests per minute per client and endpoint


def connector_section(base_url: str) -> dict[str, str]:
    """The CONNECTOR_VISMA__* values that point the connector at this fake; the refresh token
    to start from is SEED_REFRESH_TOKEN (`connector auth import visma`)."""
    return {
        "api_url": base_url + API,
        "auth_url": base_url + IDENTITY,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


class Driver(FakeDriver):
    """The fake Visma for the test oracle and a person's actions (connector.sandbox)."""

    name = "visma"
    api_prefix = "/visma/v2"

    @property
    def fake(self) -> VismaFake:
        fake = self.app.extensions["visma"]
        assert isinstance(fake, VismaFake)
        return fake

    def invoices(self) -> list[dict[str, Any]]:
        return self.fake.neutral_invoices()

    def register(self) -> dict[str, Decimal | None]:
        # NetPrice cannot be null in Visma: 0 is how an article without a price reads.
        return {a.number: a.net_price or None for a in self.fake.articles.values() if a.active}

    def customers(self) -> set[str]:
        # A private person is refused by the connector (Visma would read its net prices as
        # VAT-inclusive): not a customer it can invoice here.
        return {c.number for c in self.fake.customers.values() if not c.private_person}

    def vat(self, article: str) -> Decimal:
        return self.fake.article_by_number(article).coding.vat_percent

    def add_customer(self, number: str, name: str) -> None:
        customer = _visma_customer(FakeCustomer(number, name), len(self.fake.customers))
        self.fake.customers[customer.id] = customer

    def close(self, remote_id: str) -> None:
        self.fake.convert(remote_id)

    def send(self, remote_id: str) -> None:
        self.fake.convert(remote_id)

    def withdraw(self, remote_id: str) -> None:
        self.fake.delete(remote_id)

    def edit_text(self, remote_id: str, index: int, text: str) -> None:
        self.fake.edit_row(remote_id, index, Text=text)

    def edit_quantity(self, remote_id: str, index: int, quantity: Decimal) -> None:
        self.fake.edit_row(remote_id, index, Quantity=quantity)

    def set_sales_price(self, article: str, price: Decimal) -> None:
        self.fake.article_by_number(article).net_price = price

    def modified_after_closing(self) -> list[Any]:
        return list(self.fake.modified_after_convert)

    def set_clock(self, clock: Callable[[], float]) -> None:
        self.fake.clock = clock
        self.fake.utcnow = lambda: datetime.fromtimestamp(clock(), UTC)

    def faults(self, **values: Any) -> None:
        self.fake.faults.update(values)
