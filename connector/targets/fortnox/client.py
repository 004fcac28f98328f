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
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from connector.auth import (
    FORTNOX_SCOPES,
    ClientCredentials,
    RotatingRefreshToken,
    StaticToken,
    TokenEndpoint,
    TokenFile,
    TokenProvider,
)
from connector.errors import (
    ConfigError,
    ReauthRequiredError,
    RemoteSetupError,
    RemoteUnavailableError,
    ScopeDeniedError,
)
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
from connector.targets.base import (
    NeedsStepping,
    RemoteInvoice,
    RemoteRow,
    TargetProfile,
    TargetRefusal,
    rows_match,
)

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

# Error codes, from Fortnox's error list and recorded answers (docs/fortnox.md, Errors).
_CUSTOMER_MISSING = {"2000204", "2000433"}
_ARTICLE_MISSING = {"2000428", "2001302"}
_UNIT_MISSING = {"2000432"}
_INVOICE_MISSING = {"2000434"}
_LOCKED_PERIOD = {"2000401", "2002141"}
_REAUTH = {"2000310", "2000311"}
_SCOPE_DENIED = {"2000663"}
# A missing licence: authorising again cannot fix it.
_NO_LICENCE = {"2001101", "2001103"}
_CONNECTOR_BUG = {"2000587", "2000588", "2001399", "2001392", "2002115"}
_PLAIN: dict[str, str] = {
    "2001304": "an account is missing in Fortnox: set the company's predefined accounts "
    "(or the customer's) in Fortnox's settings",
    "2003125": "the invoice is marked complete for the warehouse in Fortnox and cannot be changed",
    "2004167": "Fortnox needs an account on rows with a custom VAT rate (EasyVat)",
    "2000359": "a text contains characters Fortnox does not accept",
}


def is_locked_period(code: str | None, message: str) -> bool:
    """Fortnox's locked-period refusal. Its code is known only from integrators' help pages, so
    the Swedish wording is matched as well."""
    return code in _LOCKED_PERIOD or "låst perioden" in message.lower()


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


def _row_id(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


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
                row_id=_row_id(r.get("RowId")),
            )
            for r in data.get("InvoiceRows") or []
        )
    vat_included = data.get("VATIncluded")
    return RemoteInvoice(
        document_number=_text(data.get("DocumentNumber")),
        key=_text(data.get("ExternalInvoiceReference1")) or None,
        customer_number=_text(data.get("CustomerNumber")),
        booked=_bool(data.get("Booked")),
        cancelled=_bool(data.get("Cancelled")),
        currency=_text(data.get("Currency")) or None,
        rows=rows,
        sent=_bool(data.get("Sent")),
        vat_included=None if vat_included is None else _bool(vat_included),
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
        remarks: str | None = None,
    ) -> None:
        self._base = settings.api_url
        self._tokens = tokens
        self._http = http or httpx.Client(timeout=settings.timeout_seconds)
        self._limiter = limiter or RateLimiter.parse(settings.rate_limit, sleep=sleep)
        self._policy = policy or RetryPolicy(rate_limit_wait=self._limiter.period)
        self._sleep = sleep
        self._remarks = remarks
        self._tenant = settings.tenant_id
        self.search_settle_seconds = settings.search_settle_seconds
        self.stats = stats or Stats()
        self._prices: dict[str, Decimal | None] | None = None
        self._customer_numbers: set[str] | None = None  # read once per run, for dry runs

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
        idempotent: bool | None = None,
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
                    idempotent=idempotent,
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
        url = f"{response.request.url.scheme}://{response.request.url.host}{response.request.url.path}"
        if 200 <= response.status_code < 300:
            try:
                return decode_json(response.content) if response.content else None
            except ValueError:
                raise ConfigError(
                    f"{url} answered with something that is not the Fortnox API (not JSON): "
                    "check CONNECTOR_FORTNOX__API_URL"
                ) from None
        code, message = error_information(response)
        request_id = response.headers.get("X-Request-Id") or response.headers.get("x-uid")
        status = response.status_code
        if status == 404 and code is None:
            # Fortnox names what it cannot find with an ErrorInformation code; a bare 404 is
            # another server, or a wrong path.
            raise ConfigError(
                f"{url} is not a Fortnox API address (HTTP 404): check "
                "CONNECTOR_FORTNOX__API_URL (usually https://api.fortnox.se/3)",
                status=404,
            )
        if code in _NO_LICENCE:
            raise RemoteSetupError(
                f"the Fortnox company has no active licence for this part of the API ({message}, "
                f"Fortnox code {code}); authorising again cannot fix it: the company must add "
                "the licence in Fortnox",
                status=status,
                request_id=request_id,
            )
        if code in _SCOPE_DENIED:
            raise ScopeDeniedError(
                f"the Fortnox authorisation lacks a scope this needs ({message}); authorise "
                f"again with the scopes {FORTNOX_SCOPES}: connector auth login fortnox",
                status=status,
                request_id=request_id,
            )
        if code in _REAUTH or (status in (401, 403) and code is None):
            raise ReauthRequiredError(
                f"Fortnox denies access ({message}); a person must authorise the integration "
                f"again with the scopes {FORTNOX_SCOPES}: connector auth login fortnox",
                status=status,
                request_id=request_id,
            )
        raise TargetRefusal(
            message or f"HTTP {status}", code=code, status=status, request_id=request_id
        )

    def _pages(self, path: str, wrapper: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, page after page. Callers ask for a sort order: the
        API promises none otherwise, and pages of an unordered list may overlap or miss."""
        page = 1
        while True:
            body = self._call(
                "GET", path, params={**params, "limit": str(PAGE_SIZE), "page": str(page)}
            )
            items = body.get(wrapper) if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RemoteUnavailableError(f"Fortnox answered {path} without {wrapper}")
            yield from (i for i in items if isinstance(i, dict))
            meta = body.get("MetaInformation") or {}
            if page >= int(meta.get("@TotalPages") or 1) or not items:
                return
            page += 1

    # --- operations -----------------------------------------------------------------------

    def find_invoices(self, fragment: str) -> list[RemoteInvoice]:
        """Invoices whose ExternalInvoiceReference1 contains `fragment`, every page, in document
        number order (a global sort, which may accompany the one resource filter)."""
        params = {"externalinvoicereference1": fragment, "sortby": "documentnumber"}
        return [
            parse_invoice(i, with_rows=False) for i in self._pages("/invoices", "Invoices", params)
        ]

    def get_invoice(self, document_number: str) -> RemoteInvoice | None:
        try:
            body = self._call("GET", f"/invoices/{quote(document_number, safe='')}")
        except TargetRefusal as refusal:
            if refusal.status == 404 or refusal.code in _INVOICE_MISSING:
                return None
            raise
        return parse_invoice(body["Invoice"], with_rows=True)

    def create_invoice(self, invoice: PlannedInvoice, invoice_date: date) -> RemoteInvoice:
        payload = invoice_payload(invoice, invoice_date=invoice_date, remarks=self._remarks)
        body = self._call("POST", "/invoices", body=payload)
        return parse_invoice(body["Invoice"], with_rows=True)

    def can_update(self, invoice: PlannedInvoice, current: RemoteInvoice) -> bool:
        try:
            update_rows(invoice.rows, current.rows or ())
        except NeedsStepping:
            return False
        return True

    def precheck(self, invoice: PlannedInvoice) -> str | None:
        if self._customer_numbers is None:
            # One paged listing (500 a page) rather than one read per customer.
            self._customer_numbers = {
                _text(c.get("CustomerNumber"))
                for c in self._pages("/customers", "Customers", {"sortby": "customernumber"})
            }
        number = invoice.key.customer_number
        if number not in self._customer_numbers:
            return f"customer {number} does not exist in Fortnox"
        return None

    def refuses_date(self, refusal: TargetRefusal) -> bool:
        return is_locked_period(refusal.code, refusal.message)

    def update_invoice(
        self,
        document_number: str,
        invoice: PlannedInvoice,
        current: RemoteInvoice,
        *,
        header_only: bool = False,
        invoice_date: date | None = None,
    ) -> RemoteInvoice:
        if header_only:
            # The header as a new first row; every existing row named, so kept as it is.
            existing = current.rows or ()
            rows = [row_payload(invoice.rows[0])] + [{"RowId": r.row_id} for r in existing]
        else:
            rows = update_rows(invoice.rows, current.rows or ())
        payload = invoice_payload(invoice, rows, invoice_date=invoice_date, remarks=self._remarks)
        # Row ids change with every update: a lost answer is reconciled, never sent again.
        body = self._call(
            "PUT",
            f"/invoices/{quote(document_number, safe='')}",
            body=payload,
            idempotent=False,
        )
        return parse_invoice(body["Invoice"], with_rows=True)

    def cancel_invoice(self, document_number: str) -> None:
        self._call("PUT", f"/invoices/{quote(document_number, safe='')}/cancel", idempotent=False)

    def article_prices(self) -> dict[str, Decimal | None]:
        """Active articles and their sales prices, read once per client (one run). Inactive
        articles are left out: Fortnox refuses them on an invoice as if they did not exist."""
        if self._prices is None:
            params = {"filter": "active", "sortby": "articlenumber"}
            self._prices = {
                _text(a.get("ArticleNumber")): _decimal(a.get("SalesPrice"))
                for a in self._pages("/articles", "Articles", params)
            }
        return self._prices

    def article_numbers(self) -> set[str]:
        return set(self.article_prices())

    def locked_through(self) -> date | None:
        """GET /settings/lockedperiod ("If no date is returned, no period is locked"). Without
        the scope for it, the answer is unknown: None, and Fortnox's own refusal names it."""
        try:
            body = self._call("GET", "/settings/lockedperiod")
        except (ScopeDeniedError, RemoteSetupError) as exc:
            log.warning("fortnox.locked_period_unknown", reason=str(exc))
            return None
        period = body.get("LockedPeriod") if isinstance(body, dict) else None
        end = period.get("EndDate") if isinstance(period, dict) else None
        if not isinstance(end, str) or not end:
            return None
        try:
            return date.fromisoformat(end[:10])
        except ValueError:
            log.warning("fortnox.locked_period_unreadable", value=end[:40])
            return None

    def company_information(self) -> dict[str, Any]:
        """GET /companyinformation: its DatabaseNumber is the tenant id client credentials use."""
        body = self._call("GET", "/companyinformation")
        info = body.get("CompanyInformation") if isinstance(body, dict) else None
        if not isinstance(info, dict):
            raise RemoteUnavailableError("Fortnox answered without CompanyInformation")
        return info

    def identity(self) -> str | None:
        """ "tenant <DatabaseNumber>": the company the token reaches. Without the scope to read
        it, the configured tenant id (client credentials) or None."""
        try:
            number = self.company_information().get("DatabaseNumber")
        except ScopeDeniedError:
            number = self._tenant
        if number is None or str(number).strip() == "":
            return None
        return f"tenant {str(number).strip()}"

    def customer_exists(self, number: str) -> bool:
        try:
            self._call("GET", f"/customers/{quote(number, safe='')}")
        except TargetRefusal as refusal:
            if refusal.status == 404 or refusal.code in _CUSTOMER_MISSING:
                return False
            raise
        return True

    def _missing_articles(self, invoice: PlannedInvoice) -> list[str]:
        return sorted({r.article for r in invoice.rows if r.article} - self.article_numbers())

    def still_refused(self, code: str | None, invoice: PlannedInvoice) -> str | None:
        if code in _CUSTOMER_MISSING:
            if not self.customer_exists(invoice.key.customer_number):
                return f"customer {invoice.key.customer_number} does not exist in Fortnox"
            return None
        if code in _ARTICLE_MISSING:
            self._prices = None  # read the register again: it may have been fixed
            missing = self._missing_articles(invoice)
            if missing:
                return _articles_missing(missing)
            return None
        return None  # other causes cannot be checked by a read: try again

    def explain(self, refusal: TargetRefusal, invoice: PlannedInvoice) -> str:
        code = refusal.code or ""
        customer = invoice.key.customer_number
        detail = f"Fortnox code {code}: {refusal.message}" if code else refusal.message
        if code in _CUSTOMER_MISSING:
            return f"customer {customer} does not exist in Fortnox"
        if code in _ARTICLE_MISSING:
            wanted = sorted({r.article for r in invoice.rows if r.article})
            try:
                missing = self._missing_articles(invoice)
            except (TargetRefusal, RemoteUnavailableError):
                missing = []
            return _articles_missing(missing or wanted)
        if code in _UNIT_MISSING:
            units = ", ".join(sorted({r.unit for r in invoice.rows if r.unit}))
            return (
                f"unit {units} does not exist in Fortnox: add it under Settings > Units in "
                f"Fortnox, or change the unit in the mappings ({detail})"
            )
        if is_locked_period(refusal.code, refusal.message):
            return (
                f"Fortnox refuses the invoice date: that period is locked ({refusal.message}); "
                "unlock the period in Fortnox (Settings > Bookkeeping > Locked period), or "
                "set CONNECTOR_INVOICE__DATE to date invoices later"
            )
        if code in _CONNECTOR_BUG:
            return (
                f"Fortnox refused what the connector sent (connector bug: please report; {detail})"
            )
        plain = _PLAIN.get(code)
        return f"{plain} ({detail})" if plain else f"Fortnox refused the invoice: {detail}"


def _articles_missing(articles: list[str]) -> str:
    plural = "s" if len(articles) > 1 else ""
    return f"article{plural} {', '.join(articles)} does not exist or is inactive in Fortnox"


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


def tenant_of(settings: FortnoxSettings, access_token: str) -> str:
    """The tenant id (DatabaseNumber of /companyinformation) of the company a fresh access token
    belongs to: what client credentials ask for."""
    client = FortnoxClient(settings, StaticToken(access_token))
    try:
        number = client.company_information().get("DatabaseNumber")
    finally:
        client.close()
    if number is None or str(number).strip() == "":
        raise RemoteUnavailableError("Fortnox answered CompanyInformation without DatabaseNumber")
    return str(number).strip()


def build(
    settings: FortnoxSettings,
    state_dir: Path,
    *,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    remarks: str | None = None,
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
    return FortnoxClient(
        settings, tokens, http=http, sleep=sleep, stats=endpoint.stats, remarks=remarks
    )
