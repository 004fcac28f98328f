"""Fortnox API v3 target.

Payloads carry only fields the OpenAPI document defines for `InvoicePayload` and its rows, with
its types (`DeliveredQuantity` is a string, `Price` a number written exactly). The invoice key
goes to `ExternalInvoiceReference1`, which Fortnox searches by substring: callers compare it
exactly. Error bodies are `ErrorInformation` with lower- or upper-case keys; codes may arrive
as strings.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from connector.auth import (
    ClientCredentials,
    RotatingRefreshToken,
    TokenEndpoint,
    TokenFile,
    TokenProvider,
)
from connector.errors import ConfigError, ReauthRequiredError, RemoteUnavailableError
from connector.http import (
    GaveUpError,
    RateLimiter,
    RetryPolicy,
    Stats,
    decode_json,
    dumps_exact,
    send,
)
from connector.logs import get_logger
from connector.planning import PlannedInvoice, Row
from connector.settings import FortnoxSettings
from connector.targets.base import RemoteInvoice, RemoteRow, TargetProfile, TargetRefusal

log = get_logger(__name__)

PROFILE = TargetProfile(
    name="fortnox",
    display_name="Fortnox",
    row_text_max=255,  # InvoiceRow.Description maxLength in the OpenAPI document
    article_max=50,
    # Fortnox: "only alphanumeric characters, with the addition of - + / . and _". We read
    # "alphanumeric" as ASCII letters and digits: the safe reading (docs/mappings.md).
    article_pattern=re.compile(r"[A-Za-z0-9+/._-]+"),
    article_rule="letters A-Z, digits and - + / . _ only",
    quantity_places=2,  # decimals accepted are UNCERTAIN; 2 is what both targets accept
    price_places=2,
)

PAGE_SIZE = 500  # Fortnox's maximum `limit`
TOKEN_FILE = "fortnox-token.json"  # noqa: S105 - a file name, not a secret

SWEDISH_MONTHS = [
    "januari",
    "februari",
    "mars",
    "april",
    "maj",
    "juni",
    "juli",
    "augusti",
    "september",
    "oktober",
    "november",
    "december",
]

_CUSTOMER_MISSING = {"2000204", "2000433"}
_ARTICLE_MISSING = {"2000428", "2001302"}
_REAUTH = {"2000310", "2000311", "2001101", "2001103", "2000663"}
_PLAIN: dict[str, str] = {
    "2001304": "an account is missing in Fortnox: set the company's predefined accounts "
    "(or the customer's) in Fortnox's settings",
    "2003125": "the invoice is completed in Fortnox and cannot be changed",
    "2004167": "Fortnox needs an account on rows with a custom VAT rate (EasyVat)",
    "2000359": "a text contains characters Fortnox does not accept",
    "2001399": "Fortnox does not know one of the fields sent (connector bug: please report)",
}


def remarks(invoice: PlannedInvoice) -> str:
    """The invoice text the customer reads, in Swedish."""
    year, month = invoice.key.period.split("-")
    text = f"Servicekonto: arbete utanför månadsavgiften, {SWEDISH_MONTHS[int(month) - 1]} {year}."
    if invoice.supplements is not None:
        text = f"Tilläggsfaktura till {invoice.supplements}. " + text
    return text


def row_payload(row: Row) -> dict[str, Any]:
    if row.is_text:
        return {"Description": row.description}
    payload: dict[str, Any] = {
        "ArticleNumber": row.article,
        "Description": row.description,
        "DeliveredQuantity": str(row.quantity),
    }
    if row.price is not None:
        payload["Price"] = row.price
    if row.unit:
        payload["Unit"] = row.unit
    return payload


def invoice_payload(invoice: PlannedInvoice) -> dict[str, Any]:
    """The body of POST /invoices and PUT /invoices/{n}: the full desired row set."""
    return {
        "Invoice": {
            "CustomerNumber": invoice.key.customer_number,
            "ExternalInvoiceReference1": invoice.key.text,
            "Currency": invoice.currency,
            "Remarks": remarks(invoice),
            "InvoiceRows": [row_payload(r) for r in invoice.rows],
        }
    }


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _bool(value: object) -> bool:
    """Fortnox sends some values as strings: "false" must not read as true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def parse_invoice(data: dict[str, Any], with_rows: bool) -> RemoteInvoice:
    rows = None
    if with_rows:
        rows = tuple(
            RemoteRow(
                article=_text(r.get("ArticleNumber")) or None,
                description=_text(r.get("Description")),
                quantity=_decimal(r.get("DeliveredQuantity")),
                price=_decimal(r.get("Price")),
                unit=_text(r.get("Unit")) or None,
            )
            for r in data.get("InvoiceRows") or []
        )
    return RemoteInvoice(
        document_number=_text(data.get("DocumentNumber")),
        key=_text(data.get("ExternalInvoiceReference1")) or None,
        customer_number=_text(data.get("CustomerNumber")),
        booked=_bool(data.get("Booked")),
        cancelled=_bool(data.get("Cancelled")),
        currency=_text(data.get("Currency")) or None,
        rows=rows,
    )


def error_information(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) from an ErrorInformation body, any key case; tolerant of HTML pages."""
    try:
        body = decode_json(response.content)
    except ValueError:
        snippet = " ".join(response.text.split())[:120]
        return None, f"HTTP {response.status_code}: {snippet or 'empty body'}"
    if isinstance(body, dict):
        info = body.get("ErrorInformation") or body.get("errorInformation") or body
        if isinstance(info, dict):
            lowered = {str(k).lower(): v for k, v in info.items()}
            code = lowered.get("code")
            message = lowered.get("message") or lowered.get("error_description") or ""
            code_text = None if code is None or code == "" else str(code).strip()
            if isinstance(message, str) and (message or code_text):
                return code_text, message
            error = lowered.get("error")
            if isinstance(error, str):
                return None, error
    return None, f"HTTP {response.status_code}"


class FortnoxClient:
    """The Fortnox operations the sync needs, with rate limiting, retries and token refresh."""

    profile = PROFILE

    def __init__(
        self,
        settings: FortnoxSettings,
        tokens: TokenProvider,
        *,
        http: httpx.Client | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        stats: Stats | None = None,
    ) -> None:
        self._base = settings.api_url
        self._tokens = tokens
        self._http = http or httpx.Client(timeout=settings.timeout_seconds)
        self._limiter = limiter or RateLimiter.parse(settings.rate_limit, sleep=sleep)
        self._policy = policy or RetryPolicy(rate_limit_wait=self._limiter.period)
        self._sleep = sleep
        self.stats = stats or Stats()
        self._articles: set[str] | None = None

    def close(self) -> None:
        self._http.close()

    # --- transport ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        url = f"{self._base}{path}"
        content = dumps_exact(body).encode() if body is not None else None
        used: list[str] = []  # tokens sent, to invalidate the one a 401 refused
        for first_try in (True, False):

            def build() -> httpx.Request:
                token = self._tokens.token()
                used.append(token)
                headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
                if content is not None:
                    headers["Content-Type"] = "application/json"
                return self._http.build_request(
                    method, url, params=params, content=content, headers=headers
                )

            try:
                response = send(
                    self._http,
                    build,
                    policy=self._policy,
                    stats=self.stats,
                    before_attempt=self._limiter.acquire,
                    sleep=self._sleep,
                )
            except GaveUpError as exc:
                raise RemoteUnavailableError(f"Fortnox unreachable: {exc.last}") from None
            if response.status_code == 401 and first_try:
                log.info("fortnox.unauthorized_refreshing")
                self._tokens.invalidate(used[-1])
                continue
            return self._answer(response)
        raise ReauthRequiredError(
            "Fortnox rejects the credentials even after a token refresh; "
            "run: connector auth login fortnox (or check the service account's consent)",
            status=401,
        )

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if 200 <= response.status_code < 300:
            return decode_json(response.content) if response.content else None
        code, message = error_information(response)
        request_id = response.headers.get("X-Request-Id") or response.headers.get("x-uid")
        if code in _REAUTH or (response.status_code in (401, 403) and code is None):
            raise ReauthRequiredError(
                f"Fortnox denies access ({message}); a person must authorise the integration "
                "again with the scopes invoice, article and customer: "
                "connector auth login fortnox",
                status=response.status_code,
                request_id=request_id,
            )
        raise TargetRefusal(
            message or f"HTTP {response.status_code}",
            code=code,
            status=response.status_code,
            request_id=request_id,
        )

    # --- operations -----------------------------------------------------------------------

    def find_invoices(self, fragment: str) -> list[RemoteInvoice]:
        """Invoices whose ExternalInvoiceReference1 contains `fragment`, every page."""
        found: list[RemoteInvoice] = []
        page = 1
        while True:
            body = self._call(
                "GET",
                "/invoices",
                params={
                    "externalinvoicereference1": fragment,
                    "limit": str(PAGE_SIZE),
                    "page": str(page),
                },
            )
            items = body.get("Invoices") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RemoteUnavailableError("Fortnox answered an invoice list without Invoices")
            found.extend(parse_invoice(i, with_rows=False) for i in items if isinstance(i, dict))
            meta = body.get("MetaInformation") or {}
            total_pages = int(meta.get("@TotalPages") or 1)
            if page >= total_pages or not items:
                return found
            page += 1

    def get_invoice(self, document_number: str) -> RemoteInvoice:
        body = self._call("GET", f"/invoices/{document_number}")
        return parse_invoice(body["Invoice"], with_rows=True)

    def create_invoice(self, invoice: PlannedInvoice) -> RemoteInvoice:
        body = self._call("POST", "/invoices", body=invoice_payload(invoice))
        return parse_invoice(body["Invoice"], with_rows=True)

    def update_invoice(self, document_number: str, invoice: PlannedInvoice) -> RemoteInvoice:
        body = self._call("PUT", f"/invoices/{document_number}", body=invoice_payload(invoice))
        return parse_invoice(body["Invoice"], with_rows=True)

    def cancel_invoice(self, document_number: str) -> None:
        self._call("PUT", f"/invoices/{document_number}/cancel")

    def article_numbers(self) -> set[str]:
        if self._articles is None:
            numbers: set[str] = set()
            page = 1
            while True:
                body = self._call(
                    "GET", "/articles", params={"limit": str(PAGE_SIZE), "page": str(page)}
                )
                items = body.get("Articles") or []
                numbers.update(str(a.get("ArticleNumber")) for a in items if isinstance(a, dict))
                meta = body.get("MetaInformation") or {}
                if page >= int(meta.get("@TotalPages") or 1) or not items:
                    break
                page += 1
            self._articles = numbers
        return self._articles

    def customer_exists(self, number: str) -> bool:
        try:
            self._call("GET", f"/customers/{quote(number, safe='')}")
        except TargetRefusal as refusal:
            if refusal.status == 404 or refusal.code in _CUSTOMER_MISSING:
                return False
            raise
        return True

    def still_refused(self, code: str | None, invoice: PlannedInvoice) -> str | None:
        if code in _CUSTOMER_MISSING:
            if not self.customer_exists(invoice.key.customer_number):
                return f"customer {invoice.key.customer_number} does not exist in Fortnox"
            return None
        if code in _ARTICLE_MISSING:
            self._articles = None  # read the register again: it may have been fixed
            missing = sorted(
                {r.article for r in invoice.rows if r.article} - self.article_numbers()
            )
            if missing:
                plural = "s" if len(missing) > 1 else ""
                return f"article{plural} {', '.join(missing)} does not exist in Fortnox"
            return None
        return None  # other causes cannot be checked by a read: try again

    def explain(self, refusal: TargetRefusal, invoice: PlannedInvoice) -> str:
        code = refusal.code or ""
        customer = invoice.key.customer_number
        if code in _CUSTOMER_MISSING:
            return f"customer {customer} does not exist in Fortnox"
        if code in _ARTICLE_MISSING:
            wanted = sorted({r.article for r in invoice.rows if r.article})
            try:
                missing = [a for a in wanted if a not in self.article_numbers()]
            except (TargetRefusal, RemoteUnavailableError):
                missing = []
            names = ", ".join(missing or wanted)
            plural = "s" if len(missing or wanted) > 1 else ""
            return f"article{plural} {names} does not exist in Fortnox"
        plain = _PLAIN.get(code)
        detail = f"Fortnox code {code}: {refusal.message}" if code else refusal.message
        return f"{plain} ({detail})" if plain else f"Fortnox refused the invoice: {detail}"


@contextlib.contextmanager
def login_endpoint(settings: FortnoxSettings) -> Iterator[TokenEndpoint]:
    """The token endpoint alone, for `connector auth login`."""
    if not settings.client_id or settings.client_secret is None:
        raise ConfigError(
            "set CONNECTOR_FORTNOX__CLIENT_ID and CONNECTOR_FORTNOX__CLIENT_SECRET "
            "(see README, Configuration)"
        )
    with httpx.Client(timeout=settings.timeout_seconds) as http:
        yield TokenEndpoint(
            f"{settings.auth_url}/token", settings.client_id, settings.client_secret, http=http
        )


def build(
    settings: FortnoxSettings,
    state_dir: Path,
    *,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> FortnoxClient:
    """A client with the authentication the settings choose: client credentials when a tenant
    id is set, otherwise the stored rotating refresh token."""
    client_id = settings.client_id
    secret = settings.client_secret
    if not client_id or secret is None or not secret.get_secret_value():
        raise ConfigError(
            "set CONNECTOR_FORTNOX__CLIENT_ID and CONNECTOR_FORTNOX__CLIENT_SECRET "
            "(see README, Configuration)"
        )
    http = http or httpx.Client(timeout=settings.timeout_seconds)
    endpoint = TokenEndpoint(f"{settings.auth_url}/token", client_id, secret, http=http)
    store = TokenFile(state_dir / TOKEN_FILE)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    tokens: TokenProvider
    if settings.tenant_id:
        tokens = ClientCredentials(endpoint, settings.tenant_id, store, **extra)
    else:
        tokens = RotatingRefreshToken(endpoint, store, **extra)
    return FortnoxClient(settings, tokens, http=http, sleep=sleep, stats=endpoint.stats)
