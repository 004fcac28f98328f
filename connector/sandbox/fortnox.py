"""A stateful fake of the Fortnox API v3, faithful to the OpenAPI document for what the
connector uses, with fault switches.

Served under /fortnox/3 (API) and /fortnox/oauth-v1 (tokens). It accepts client id `sandbox`,
client secret `sandbox` and tenant id `sandbox`. Customers and articles are seeded the same
whatever ledger is served: every customer of the sample ledger but one (to show the attention
path), and every article of the shipped mappings.
"""

from __future__ import annotations

import base64
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode

from connector.sandbox.app import DropConnection, Request, Response, SandboxApp, json_response
from connector.sandbox.sample import FIRST_CUSTOMER, MISSING_CUSTOMER

API = "/fortnox/3"
AUTH = "/fortnox/oauth-v1"
CLIENT_ID = "sandbox"
CLIENT_SECRET = "sandbox"  # noqa: S105 - the public test secret of a local fake
TENANT_ID = "sandbox"
TOKEN_LIFETIME = 3600

# Article number -> (description, sales price): the articles of mappings/service-categories.toml.
SEED_ARTICLES: dict[str, tuple[str, Decimal]] = {
    "SK-INST": ("Installation", Decimal("1150.00")),
    "SK-UTB": ("Utbildning", Decimal("1050.00")),
    "SK-KONF": ("Konfiguration", Decimal("1150.00")),
    "SK-KONFAND": ("Konfigurationsändring", Decimal("1150.00")),
    "SK-FELSOK": ("Felsökning", Decimal("1250.00")),
    "SK-PROJ": ("Projekt", Decimal("1195.00")),
    "SK-PL": ("Projektledning", Decimal("1095.00")),
    "SK-DATA": ("Dataunderhåll", Decimal("995.00")),
    "SK-RAD": ("Verksamhetsrådgivning", Decimal("1350.00")),
    "SK-FORBET": ("Förbetalda timmar", Decimal("1050.00")),
}
_NAMES = (
    "Norrsken Data", "Fjällbyggen", "Kustlinjen Logistik", "Älvdalens Trä", "Solgläntan Vård",
    "Bergslagens Mekaniska", "Stadsodlarna", "Havsörn Konsult", "Lindgården Fastigheter",
    "Vinterviken Media",
)  # fmt: skip


def seed_customers(count: int = 40) -> dict[str, str]:
    numbers = [str(FIRST_CUSTOMER + n) for n in range(count)]
    return {
        n: f"{_NAMES[i % len(_NAMES)]} {i // len(_NAMES) + 1} AB"
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
_MAX_LENGTH = {"ExternalInvoiceReference1": 80, "Remarks": 1024, "YourReference": 50}


@dataclass
class Faults:
    """Fault switches, settable on the command line and through POST /_sandbox/faults."""

    latency_ms: int = 0  # added to every API answer
    error_rate: float = 0.0  # share of API requests answered 503 before doing anything
    lost_create_rate: float = 0.0  # share of creates stored, then the connection dropped
    rate_429: float = 0.0  # share of API requests answered 429
    force_429: int = 0  # the next N API requests are answered 429
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name not in {f for f in asdict(self)} or name == "seed":
                continue
            setattr(self, name, type(getattr(self, name))(value))
        if "seed" in values:
            self.seed = int(values["seed"])
            self.rng = random.Random(self.seed)

    def hit(self, share: float) -> bool:
        return share > 0 and self.rng.random() < share

    def public(self) -> dict[str, Any]:
        return asdict(self)


def _error(status: int, code: int, message: str) -> Response:
    return json_response(
        status, {"ErrorInformation": {"error": 1, "message": message, "code": code}}
    )


def _decimal(value: object) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class _Invalid(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("invalid")
        self.response = response


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


class FortnoxFake:
    def __init__(
        self,
        app: SandboxApp,
        *,
        rate_limit: str = "25/5",
        faults: Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app = app
        count, _, seconds = rate_limit.partition("/")
        self.window = _Window(int(count), float(seconds), clock)
        self.faults = faults or Faults()
        self.clock = clock
        self.sleep = sleep
        self.customers = seed_customers()
        self.articles = dict(SEED_ARTICLES)
        self.invoices: dict[int, dict[str, Any]] = {}
        self.access_tokens: dict[str, float] = {}
        self.refresh_tokens: set[str] = set()
        self.codes: set[str] = set()
        self.rate_limited = 0
        self.token_grants: dict[str, int] = {}
        app.add_route("GET", f"{API}/*", self._api)
        app.add_route("POST", f"{API}/*", self._api)
        app.add_route("PUT", f"{API}/*", self._api)
        app.add_route("POST", f"{AUTH}/token", self._token)
        app.add_route("GET", f"{AUTH}/auth", self._authorize)
        app.extensions["fortnox"] = self

    # --- sandbox controls -----------------------------------------------------------------

    def reset(self) -> None:
        self.invoices.clear()
        self.rate_limited = 0
        self.window.times.clear()
        self.token_grants.clear()

    def state(self) -> dict[str, Any]:
        return {
            "invoices": [self._summary(i) for i in self.invoices.values()],
            "rate_limited": self.rate_limited,
            "token_grants": dict(self.token_grants),
            "faults": self.faults.public(),
        }

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def issue_code(self) -> str:
        code = "sandbox-code-" + secrets.token_urlsafe(8)
        self.codes.add(code)
        return code

    def bookkeep(self, number: int) -> None:
        self.invoices[number]["Booked"] = True

    def cancel(self, number: int) -> None:
        self.invoices[number]["Cancelled"] = True

    def live_by_key(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for invoice in self.invoices.values():
            if not invoice["Cancelled"]:
                found.setdefault(invoice["ExternalInvoiceReference1"], []).append(invoice)
        return found

    # --- OAuth ----------------------------------------------------------------------------

    def _authorize(self, request: Request) -> Response:
        redirect = request.arg("redirect_uri") or ""
        query = urlencode({"code": self.issue_code(), "state": request.arg("state") or ""})
        return Response(302, b"", {"Location": f"{redirect}?{query}"})

    def _new_access(self) -> str:
        token = "sandbox-at-" + secrets.token_urlsafe(12)
        self.access_tokens[token] = self.clock() + TOKEN_LIFETIME
        return token

    def _new_refresh(self) -> str:
        token = "sandbox-rt-" + secrets.token_urlsafe(12)
        self.refresh_tokens.add(token)
        return token

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return json_response(401, {"error": "invalid_client"})
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type", "")
        self.token_grants[grant] = self.token_grants.get(grant, 0) + 1
        body: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": "invoice article customer",
        }
        if grant == "client_credentials":
            if request.headers.get("tenantid") != TENANT_ID:
                return json_response(400, {"error": "invalid_request",
                                           "error_description": "unknown TenantId"})  # fmt: skip
            return json_response(200, {**body, "access_token": self._new_access()})
        if grant == "authorization_code":
            code = form.get("code", "")
            if code not in self.codes:
                return json_response(400, {"error": "invalid_grant"})
            self.codes.discard(code)
        elif grant == "refresh_token":
            used = form.get("refresh_token", "")
            if used not in self.refresh_tokens:
                return json_response(
                    400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
                )
            self.refresh_tokens.discard(used)  # single use
        else:
            return json_response(400, {"error": "unsupported_grant_type"})
        return json_response(
            200, {**body, "access_token": self._new_access(), "refresh_token": self._new_refresh()}
        )

    def seed_refresh_token(self) -> str:
        return self._new_refresh()

    # --- the API --------------------------------------------------------------------------

    def _api(self, request: Request) -> Response:
        if self.faults.latency_ms:
            self.sleep(self.faults.latency_ms / 1000)
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if self.access_tokens.get(token, 0) <= self.clock():
            return _error(401, 2000310, "Ogiltig inloggning")
        if (
            self.faults.force_429 > 0
            or self.faults.hit(self.faults.rate_429)
            or not (self.window.admit())
        ):
            self.faults.force_429 = max(0, self.faults.force_429 - 1)
            self.rate_limited += 1
            return json_response(429, {"message": "Too Many Requests"})
        if self.faults.hit(self.faults.error_rate):
            return Response(503, b"<html><body>Service Unavailable</body></html>",
                            {"Content-Type": "text/html"})  # fmt: skip
        path = request.path[len(API) :]
        try:
            return self._route(request, path)
        except _Invalid as invalid:
            return invalid.response

    def _route(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "/invoices":
            return self._list_invoices(request) if method == "GET" else self._create(request)
        match = re.fullmatch(r"/invoices/(\d+)(/(bookkeep|cancel))?", path)
        if match:
            number = int(match.group(1))
            invoice = self.invoices.get(number)
            if invoice is None:
                return _error(404, 2000430, f"Kan inte hitta fakturan {number}")
            action = match.group(3)
            if method == "GET" and action is None:
                return json_response(200, {"Invoice": invoice})
            if method == "PUT" and action is None:
                return self._update(invoice, request)
            if method == "PUT" and action == "bookkeep":
                if invoice["Cancelled"]:
                    return _error(400, 2000700, "Fakturan är makulerad")
                invoice["Booked"] = True
                return json_response(200, {"Invoice": invoice})
            if method == "PUT" and action == "cancel":
                if invoice["Booked"]:
                    return _error(400, 2003125, "Fakturan är bokförd och kan inte makuleras")
                invoice["Cancelled"] = True
                return json_response(200, {"Invoice": invoice})
        if method == "GET" and path == "/articles":
            items = [self._article(n) for n in sorted(self.articles)]
            return json_response(200, self._paged("Articles", items, request))
        match = re.fullmatch(r"/articles/([^/]+)", path)
        if method == "GET" and match:
            if match.group(1) not in self.articles:
                return _error(404, 2000428, "Kan inte hitta artikeln")
            return json_response(200, {"Article": self._article(match.group(1))})
        if method == "GET" and path == "/customers":
            items = [self._customer(n) for n in sorted(self.customers)]
            return json_response(200, self._paged("Customers", items, request))
        match = re.fullmatch(r"/customers/([^/]+)", path)
        if method == "GET" and match:
            if match.group(1) not in self.customers:
                return _error(404, 2000433, "Kan inte hitta kunden")
            return json_response(200, {"Customer": self._customer(match.group(1))})
        return _error(404, 2000729, f"Okänd resurs {request.method} {path}")

    def _paged(self, wrapper: str, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
        try:
            limit = int(request.arg("limit") or 100)
            page = int(request.arg("page") or 1)
        except ValueError:
            raise _Invalid(_error(400, 2000588, "Ogiltig parameter")) from None
        if not 1 <= limit <= 500 or page < 1:
            raise _Invalid(_error(400, 2000588, "Ogiltig parameter: limit eller page"))
        pages = max(1, -(-len(items) // limit))
        chosen = items[(page - 1) * limit : page * limit]
        return {
            wrapper: chosen,
            "MetaInformation": {
                "@TotalResources": len(items),
                "@TotalPages": pages,
                "@CurrentPage": page,
            },
        }

    def _article(self, number: str) -> dict[str, Any]:
        description, price = self.articles[number]
        return {
            "ArticleNumber": number,
            "Description": description,
            "SalesPrice": price,
            "Unit": "h",
            "VAT": Decimal(25),
        }

    def _customer(self, number: str) -> dict[str, Any]:
        return {"CustomerNumber": number, "Name": self.customers[number], "City": "Stockholm"}

    def _summary(self, invoice: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "DocumentNumber", "CustomerNumber", "CustomerName", "ExternalInvoiceReference1",
            "Booked", "Cancelled", "Currency", "Total", "InvoiceDate",
        )  # fmt: skip
        return {k: invoice[k] for k in keys}

    def _list_invoices(self, request: Request) -> Response:
        items = list(self.invoices.values())
        reference = request.arg("externalinvoicereference1")
        if reference is not None:  # Fortnox searches with ILIKE '%value%'
            items = [
                i for i in items if reference.lower() in i["ExternalInvoiceReference1"].lower()
            ]
        customer = request.arg("customernumber")
        if customer is not None:
            items = [i for i in items if customer in i["CustomerNumber"]]
        flt = request.arg("filter")
        if flt == "cancelled":
            items = [i for i in items if i["Cancelled"]]
        elif flt == "unbooked":
            items = [i for i in items if not i["Booked"] and not i["Cancelled"]]
        items.sort(key=lambda i: int(i["DocumentNumber"]))
        summaries = [self._summary(i) for i in items]
        return json_response(200, self._paged("Invoices", summaries, request))

    # --- writing invoices -----------------------------------------------------------------

    def _payload(self, request: Request) -> dict[str, Any]:
        try:
            body = request.json()
        except ValueError:
            raise _Invalid(_error(400, 2002115, "Ogiltig JSON")) from None
        invoice = body.get("Invoice") if isinstance(body, dict) else None
        if not isinstance(invoice, dict):
            raise _Invalid(_error(400, 2001392, "Tom eller felaktig begäran"))
        unknown = set(invoice) - PAYLOAD_FIELDS
        rows = invoice.get("InvoiceRows", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _Invalid(_error(400, 2001392, "InvoiceRows måste vara en lista"))
        for row in rows:
            unknown |= set(row) - ROW_FIELDS
        if unknown:
            raise _Invalid(_error(400, 2001399, f"Felaktigt fältnamn: {sorted(unknown)[0]}"))
        for name, limit in _MAX_LENGTH.items():
            value = invoice.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise _Invalid(_error(400, 2000359, f"Ogiltigt värde för {name}"))
        for row in rows:
            quantity = row.get("DeliveredQuantity")
            if quantity is not None and (
                not isinstance(quantity, str) or _decimal(quantity) is None
            ):
                raise _Invalid(_error(400, 2000106, "DeliveredQuantity måste vara numeriskt"))
            price = row.get("Price")
            if price is not None and not isinstance(price, Decimal | int):
                raise _Invalid(_error(400, 2000106, "Price måste vara numeriskt"))
            if len(str(row.get("Description", ""))) > 255:
                raise _Invalid(_error(400, 2000359, "Description är för lång"))
            article = row.get("ArticleNumber")
            if article and article not in self.articles:
                raise _Invalid(_error(400, 2001302, f'Artikeln "{article}" hittades inte'))
        return invoice

    def _rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = []
        for index, row in enumerate(rows, start=1):
            article = row.get("ArticleNumber") or ""
            if article:
                quantity = row.get("DeliveredQuantity") or "1"
                price = row.get("Price")
                if price is None:
                    price = self.articles[article][1]
                unit = row.get("Unit") or "h"
            else:
                quantity, price, unit = "0", Decimal(0), ""
            total = (_decimal(quantity) or Decimal(0)) * (_decimal(price) or Decimal(0))
            stored.append(
                {
                    "RowId": index,
                    "ArticleNumber": article,
                    "Description": row.get("Description", ""),
                    "DeliveredQuantity": quantity,
                    "Price": price,
                    "Unit": unit,
                    "Total": total,
                    "VAT": Decimal(25) if article else Decimal(0),
                }
            )
        return stored

    def _create(self, request: Request) -> Response:
        payload = self._payload(request)
        customer = payload.get("CustomerNumber")
        if not isinstance(customer, str) or customer not in self.customers:
            return _error(400, 2000204, f"Kunden med kundnummer {customer} hittades inte")
        number = max(self.invoices, default=0) + 1
        invoice = {
            "DocumentNumber": str(number),
            "CustomerNumber": customer,
            "CustomerName": self.customers[customer],
            "ExternalInvoiceReference1": payload.get("ExternalInvoiceReference1", ""),
            "Currency": payload.get("Currency", "SEK"),
            "Remarks": payload.get("Remarks", ""),
            "InvoiceDate": time.strftime("%Y-%m-%d"),
            "Booked": False,
            "Cancelled": False,
            "InvoiceRows": self._rows(payload.get("InvoiceRows", [])),
        }
        invoice["Total"] = sum((r["Total"] for r in invoice["InvoiceRows"]), Decimal(0))
        self.invoices[number] = invoice
        if self.faults.hit(self.faults.lost_create_rate):
            raise DropConnection  # stored, but the answer never arrives
        return json_response(201, {"Invoice": invoice})

    def _update(self, invoice: dict[str, Any], request: Request) -> Response:
        if invoice["Booked"] or invoice["Cancelled"]:
            return _error(400, 2003125, "Fakturan är bokförd eller makulerad och kan inte ändras")
        payload = self._payload(request)
        for name in ("ExternalInvoiceReference1", "Currency", "Remarks"):
            if name in payload:
                invoice[name] = payload[name]
        if "InvoiceRows" in payload:
            # Without RowId, Fortnox maps rows by position; rows left out are deleted.
            invoice["InvoiceRows"] = self._rows(payload["InvoiceRows"])
            invoice["Total"] = sum((r["Total"] for r in invoice["InvoiceRows"]), Decimal(0))
        return json_response(200, {"Invoice": invoice})
