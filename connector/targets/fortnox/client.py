"""The Fortnox client: the `Target` operations over API v3 (docs/fortnox.md).

Invoices are found by Fortnox's substring search on `ExternalInvoiceReference1`, read in
document number order (pages of an unordered list may overlap or miss), and compared exactly.
A cancelled invoice stays in Fortnox; an invoice is never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from connector.auth import (
    ClientCredentials,
    RotatingRefreshToken,
    StaticToken,
    TokenFile,
    TokenProvider,
)
from connector.errors import (
    RemoteSetupError,
    RemoteUnavailableError,
    ScopeDeniedError,
    TargetRefusal,
)
from connector.http import RateLimiter, RetryPolicy, Stats
from connector.logs import get_logger
from connector.planning import KEY_PREFIX, InvoiceKey, InvoiceStatus, PlannedInvoice
from connector.rate_window import shared_limiter
from connector.settings import Settings
from connector.targets.api import ApiBacked, ApiClient
from connector.targets.base import (
    Delivery,
    NeedsStepping,
    RegisterArticle,
    RemoteInvoice,
    RemoteState,
    SendOutcome,
)
from connector.targets.fortnox import SPEC, errors
from connector.targets.fortnox.oauth import APP, TOKEN_FILE
from connector.targets.fortnox.payloads import (
    decimal_or_none,
    header_step_rows,
    invoice_payload,
    parse_invoice,
    redate_payload,
    text,
    update_rows,
)
from connector.targets.fortnox.profile import PROFILE
from connector.targets.fortnox.settings import FortnoxSettings

log = get_logger(__name__)

PAGE_SIZE = 500  # Fortnox's maximum `limit`
SETTING = "CONNECTOR_FORTNOX__"


def section(settings: Settings) -> FortnoxSettings:
    fortnox = settings.section(PROFILE.name)
    assert isinstance(fortnox, FortnoxSettings)
    return fortnox


class FortnoxClient(ApiBacked):
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
        limiter = limiter or RateLimiter.parse(settings.rate_limit, sleep=sleep)
        self.api = ApiClient(
            system="Fortnox",
            base_url=settings.api_url,
            url_setting=f"{SETTING}API_URL",
            tokens=tokens,
            http=http or httpx.Client(timeout=settings.timeout_seconds),
            limiter=limiter,
            on_error=errors.raise_for,
            login_hint=APP.login_hint,
            policy=policy,
            sleep=sleep,
            stats=stats,
        )
        self.stats = self.api.stats
        self._remarks = remarks
        self._tenant = settings.tenant_id
        self.search_settle_seconds = settings.search_settle_seconds
        self._prices: dict[str, Decimal | None] | None = None
        self._customer_numbers: set[str] | None = None  # read once per run, for dry runs
        self._missing_customers: dict[str, bool] = {}  # refused for it: still missing?

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

    # --- finding --------------------------------------------------------------------------

    def _search(self, fragment: str) -> list[RemoteInvoice]:
        """Invoices whose ExternalInvoiceReference1 contains `fragment`, every page, in document
        number order (a global sort, which may accompany the one resource filter)."""
        params = {"externalinvoicereference1": fragment, "sortby": "documentnumber"}
        return [
            parse_invoice(i, with_rows=False) for i in self._pages("/invoices", "Invoices", params)
        ]

    def find(self, keys: Collection[str]) -> list[RemoteInvoice]:
        wanted = set(keys)
        found: dict[str, RemoteInvoice] = {}
        for key in sorted(wanted):
            for remote in self._search(key):
                if remote.key in wanted:
                    found[remote.remote_id] = remote
        return list(found.values())

    def find_all(self, periods: Collection[str] | None = None) -> list[RemoteInvoice]:
        fragments = [f"{KEY_PREFIX}-"] if periods is None else [f"-{p}" for p in sorted(periods)]
        found: dict[str, RemoteInvoice] = {}
        for fragment in fragments:
            for remote in self._search(fragment):
                try:
                    key = InvoiceKey.parse(remote.key or "")
                except ValueError:
                    continue  # not the connector's
                if periods is None or key.period in periods:
                    found[remote.remote_id] = remote
        return list(found.values())

    def get(self, remote_id: str) -> RemoteInvoice:
        try:
            body = self._call("GET", f"/invoices/{quote(remote_id, safe='')}")
        except TargetRefusal as refusal:
            if refusal.status == 404 or refusal.code in errors.INVOICE_MISSING:
                return RemoteInvoice(
                    remote_id=remote_id,
                    number=remote_id,
                    key=None,
                    customer_number="",
                    state=RemoteState.GONE,
                    status=InvoiceStatus.CANCELLED,
                    vanished=True,
                )
            raise
        return parse_invoice(body["Invoice"], with_rows=True)

    # --- writing --------------------------------------------------------------------------

    def create(self, invoice: PlannedInvoice, invoice_date: date) -> RemoteInvoice:
        payload = invoice_payload(invoice, invoice_date=invoice_date, remarks=self._remarks)
        body = self._call("POST", "/invoices", body=payload)
        return parse_invoice(body["Invoice"], with_rows=True)

    def can_update(self, invoice: PlannedInvoice, current: RemoteInvoice) -> bool:
        try:
            update_rows(invoice.rows, current.rows or ())
        except NeedsStepping:
            return False
        return True

    def update(
        self,
        remote_id: str,
        invoice: PlannedInvoice,
        current: RemoteInvoice,
        *,
        header_only: bool = False,
        invoice_date: date | None = None,
    ) -> RemoteInvoice:
        existing = current.rows or ()
        if header_only:
            rows = header_step_rows(invoice.rows, existing)
        else:
            rows = update_rows(invoice.rows, existing)
        payload = invoice_payload(invoice, rows, invoice_date=invoice_date, remarks=self._remarks)
        # Row ids change with every update: a lost answer is reconciled, never sent again.
        body = self._call(
            "PUT", f"/invoices/{quote(remote_id, safe='')}", body=payload, idempotent=False
        )
        return parse_invoice(body["Invoice"], with_rows=True)

    def discard(self, remote_id: str) -> None:
        self._call("PUT", f"/invoices/{quote(remote_id, safe='')}/cancel", idempotent=False)

    # --- month end ---------------------------------------------------------------------------

    def redate(self, remote_id: str, invoice_date: date) -> RemoteInvoice:
        # A PUT renews every RowId: not safe to repeat blindly, though the same date twice is.
        body = self._call(
            "PUT",
            f"/invoices/{quote(remote_id, safe='')}",
            body=redate_payload(invoice_date),
            idempotent=False,
        )
        return parse_invoice(body["Invoice"], with_rows=True)

    def book(self, remote_id: str) -> RemoteInvoice:
        body = self._call(
            "PUT", f"/invoices/{quote(remote_id, safe='')}/bookkeep", idempotent=False
        )
        return parse_invoice(body["Invoice"], with_rows=True)

    def send(self, remote_id: str) -> SendOutcome:
        """As the customer card's DefaultDeliveryTypes.Invoice says: EMAIL by GET .../email,
        PRINTSERVICE by GET .../eprint, ELECTRONICINVOICE (not in the saved OpenAPI enum, but
        handled if met) by GET .../einvoice; PRINT, or nothing set, is left to a person. These
        GETs send: never retried blindly."""
        invoice = self.get(remote_id)
        number = invoice.customer_number
        body = self._call("GET", f"/customers/{quote(number, safe='')}")
        customer = body.get("Customer") if isinstance(body, dict) else None
        customer = customer if isinstance(customer, dict) else {}
        types = customer.get("DefaultDeliveryTypes")
        chosen = text(types.get("Invoice") if isinstance(types, dict) else None).upper()
        action = {
            "EMAIL": (Delivery.EMAIL, "email"),
            "ELECTRONICINVOICE": (Delivery.EINVOICE, "einvoice"),
            "PRINTSERVICE": (Delivery.PRINT_SERVICE, "eprint"),
        }.get(chosen)
        if action is None:
            why = (
                "gets invoices on paper"
                if chosen == "PRINT"
                else f"has no delivery type Fortnox sends ({chosen or 'none'})"
            )
            return SendOutcome(
                Delivery.BY_HAND, False, f"customer {number} {why}: print it and post it"
            )
        how, path = action
        self._call("GET", f"/invoices/{quote(remote_id, safe='')}/{path}", idempotent=False)
        where = text(customer.get("EmailInvoice")) if how is Delivery.EMAIL else ""
        return SendOutcome(how, True, where)

    # --- reading the company ----------------------------------------------------------------

    def precheck(self, invoice: PlannedInvoice) -> str | None:
        if self._customer_numbers is None:
            # One paged listing (500 a page) rather than one read per customer.
            self._customer_numbers = {
                text(c.get("CustomerNumber"))
                for c in self._pages("/customers", "Customers", {"sortby": "customernumber"})
            }
        number = invoice.key.customer_number
        if number not in self._customer_numbers:
            return f"customer {number} does not exist in Fortnox"
        return None

    def refuses_date(self, refusal: TargetRefusal) -> bool:
        return errors.is_locked_period(refusal.code, refusal.message)

    def article_prices(self) -> dict[str, Decimal | None]:
        """Active articles and their sales prices, read once per client (one run). Inactive
        articles are left out: Fortnox refuses them on an invoice as if they did not exist."""
        if self._prices is None:
            params = {"filter": "active", "sortby": "articlenumber"}
            self._prices = {
                text(a.get("ArticleNumber")): decimal_or_none(a.get("SalesPrice"))
                for a in self._pages("/articles", "Articles", params)
            }
        return self._prices

    def article_numbers(self) -> set[str]:
        return set(self.article_prices())

    def article_register(self) -> dict[str, RegisterArticle]:
        """Every article with its active flag, price and unit. The list items carry no Active
        field, so active and inactive articles are listed apart (two filtered listings)."""
        found: dict[str, RegisterArticle] = {}
        for active in (True, False):
            params = {"filter": "active" if active else "inactive", "sortby": "articlenumber"}
            for item in self._pages("/articles", "Articles", params):
                number = text(item.get("ArticleNumber"))
                if number and (active or number not in found):
                    found[number] = RegisterArticle(
                        number=number,
                        active=active,
                        price=decimal_or_none(item.get("SalesPrice")),
                        unit=text(item.get("Unit")) or None,
                    )
        return found

    def unit_codes(self) -> set[str] | None:
        """GET /units (scope settings): the codes a row's Unit may name."""
        return {
            code for item in self._pages("/units", "Units", {}) if (code := text(item.get("Code")))
        }

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
            if refusal.status == 404 or refusal.code in errors.CUSTOMER_MISSING:
                return False
            raise
        return True

    def _missing_articles(self, invoice: PlannedInvoice) -> list[str]:
        return sorted({r.article for r in invoice.rows if r.article} - self.article_numbers())

    def still_refused(self, code: str | None, invoice: PlannedInvoice) -> str | None:
        if code in errors.CUSTOMER_MISSING:
            # One read per customer and run, however many of its months wait for it.
            number = invoice.key.customer_number
            if number not in self._missing_customers:
                self._missing_customers[number] = not self.customer_exists(number)
            if self._missing_customers[number]:
                return f"customer {invoice.key.customer_number} does not exist in Fortnox"
            return None
        if code in errors.ARTICLE_MISSING:
            self._prices = None  # read the register again: it may have been fixed
            missing = self._missing_articles(invoice)
            if missing:
                return errors.articles_missing(missing)
            return None
        return None  # other causes cannot be checked by a read: try again

    def explain(self, refusal: TargetRefusal, invoice: PlannedInvoice) -> str:
        missing: list[str] = []
        if refusal.code in errors.ARTICLE_MISSING:
            try:
                missing = self._missing_articles(invoice)
            except (TargetRefusal, RemoteUnavailableError):
                missing = []
        return errors.explain(refusal, invoice, missing)


def service_account_lines(settings: Settings, access_token: str) -> list[str]:
    """After a service account's consent: the tenant id (DatabaseNumber of
    /companyinformation) that client credentials ask for."""
    client = FortnoxClient(section(settings), StaticToken(access_token, APP))
    try:
        number = client.company_information().get("DatabaseNumber")
    finally:
        client.close()
    if number is None or str(number).strip() == "":
        raise RemoteUnavailableError("Fortnox answered CompanyInformation without DatabaseNumber")
    return [
        "The service account is approved. Set, with the client id and secret:",
        f"  {SETTING}TENANT_ID={str(number).strip()}",
    ]


def build(
    settings: Settings,
    *,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> FortnoxClient:
    """A client with the authentication the settings choose: client credentials when a tenant
    id is set, otherwise the stored rotating refresh token."""
    fortnox = section(settings)
    http = http or httpx.Client(timeout=fortnox.timeout_seconds)
    endpoint = SPEC.token_endpoint(settings, http)
    store = TokenFile(settings.state_dir / TOKEN_FILE, APP.login_hint)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    tokens: TokenProvider
    if fortnox.tenant_id:
        tokens = ClientCredentials(endpoint, fortnox.tenant_id, store, **extra)
    else:
        tokens = RotatingRefreshToken(endpoint, store, **extra)
    return FortnoxClient(
        fortnox,
        tokens,
        http=http,
        # Fortnox counts per client id and tenant: every command on this account shares it.
        limiter=shared_limiter(
            settings.state_dir,
            PROFILE.name,
            fortnox.rate_limit,
            api_url=fortnox.api_url,
            client_id=fortnox.client_id,
            tenant=fortnox.tenant_id,
            sleep=sleep,
        ),
        sleep=sleep,
        stats=endpoint.stats,
        remarks=settings.invoice.remarks,
    )
