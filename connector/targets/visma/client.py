"""The Visma eAccounting client: the `Target` operations over API v2 (NOTES.md beside the OpenAPI
copies in shared/specs/visma-eaccounting).

The connector writes customer invoice drafts. A draft carries the invoice key in
`ContractNumber`: the reference field least visible on the printed invoice and not used for
e-invoice routing (ElectronicReference, BuyersOrderReference and YourReference are). Which
fields `$filter` takes is undocumented, so none is trusted: `find` and `find_all` list every
draft and every invoice, page by page in a fixed order (an unordered list may repeat or miss
items across pages), and compare the key exactly. A list that changes while it is paged (the
count read disagrees with Meta.TotalNumberOfResults) is read again, and stops the run if it
never settles.

Ids: a draft is addressed by its GUID and has no number. When a person converts it, it leaves
/customerinvoicedrafts and becomes an invoice in /customerinvoices with an InvoiceNumber and
(unverified) `CreatedFromDraftId`; the connector reports that invoice with the draft's GUID as
its remote id (the id the state recorded), booked. Without CreatedFromDraftId it is paired with
a draft this client has seen go, by exact key and customer, or else keeps its own id. A
deleted draft is simply gone. An id that is not a GUID was never made here: reading or writing
it stops the run (StateMismatchError) rather than taking the invoice as deleted, which would
stop billing its hours.

Customers and articles are GUIDs on the wire: both registers are read once per client (one
run), page by page, never one request per entry. Before anything is sent, a draft is refused
(TargetRefusal with a code of the connector's own) when its customer is missing or inactive,
is invoiced in another currency than the hours (a draft takes the customer's currency; a
customer without one, the company's from /companysettings, and when that cannot be read the
draft is refused too), or is a private person, or when an article is missing or inactive.
Private persons, because Visma marks a private person's draft `IncludesVat` (read-only, from
the company setting "ShowPricesExclVatPC") and would take the connector's prices, which exclude
VAT, as including it: the safe choice is not to invoice them here at all.

Visma's PUT replaces the whole draft, so an update is a read-modify-write from the draft as last
read: the header fields a person may have set are kept, the rows replaced; a project or cost
centre a person put on a row goes onto the same row (same article and text) when that row is
unambiguous, and otherwise the draft is left alone (a refusal of the connector's own) rather
than have them dropped. The company's
identity and its accounting lock date come from /companysettings (scope ea:sales).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from connector.auth import RotatingRefreshToken, TokenFile, TokenProvider
from connector.errors import (
    OutcomeUnknownError,
    RemoteSetupError,
    RemoteUnavailableError,
    ScopeDeniedError,
    StateMismatchError,
    TargetRefusal,
)
from connector.http import RateLimiter, RetryPolicy, Stats
from connector.logs import get_logger
from connector.planning import InvoiceKey, InvoiceStatus, PlannedInvoice
from connector.rate_window import shared_limiter
from connector.settings import Settings
from connector.targets.api import ApiBacked, ApiClient
from connector.targets.base import (
    Delivery,
    RegisterArticle,
    RemoteInvoice,
    RemoteState,
    SendOutcome,
)
from connector.targets.visma import SPEC, errors
from connector.targets.visma.oauth import APP
from connector.targets.visma.payloads import (
    Article,
    Customer,
    carry_row_fields,
    date_or_none,
    draft_payload,
    guid,
    is_guid,
    kept_fields,
    lowered,
    parse_article,
    parse_customer,
    parse_draft,
    parse_invoice,
    redated_draft,
    text,
)
from connector.targets.visma.profile import PROFILE
from connector.targets.visma.settings import VismaSettings

log = get_logger(__name__)

SETTING = "CONNECTOR_VISMA__"
PAGE_SIZE = 100  # the largest $pagesize taken for certain (NOTES section 2: the maximum is unknown)
# Readings of a list that changed while it was paged, before the run stops (see _pages).
LISTING_ATTEMPTS = 3
DRAFTS = "/customerinvoicedrafts"
INVOICES = "/customerinvoices"
# Sort orders for paging: new items land at the end, and a unique key breaks ties, so pages
# neither overlap nor miss while a person works in the company.
DRAFT_ORDER = "CreatedUtc,Id"
INVOICE_ORDER = "InvoiceNumber"
CUSTOMER_ORDER = "CustomerNumber"
ARTICLE_ORDER = "Number"
# Before this year an AccountingLockedTo is .NET's empty date (0001-01-01): nothing is locked.
_NO_LOCK_BEFORE = 1900


def _whole(value: object) -> int | None:
    """A JSON whole number (a bool is not one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def section(settings: Settings) -> VismaSettings:
    visma = settings.section(PROFILE.name)
    assert isinstance(visma, VismaSettings)
    return visma


class VismaClient(ApiBacked):
    """The Visma eAccounting operations the sync needs, with rate limiting, retries and token
    refresh."""

    profile = PROFILE

    def __init__(
        self,
        settings: VismaSettings,
        tokens: TokenProvider,
        *,
        http: httpx.Client | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        stats: Stats | None = None,
    ) -> None:
        limiter = limiter or RateLimiter.parse(settings.rate_limit, sleep=sleep)
        self.api = ApiClient(
            system=errors.SYSTEM,
            base_url=settings.api_url,
            url_setting=f"{SETTING}API_URL",
            tokens=tokens,
            http=http or httpx.Client(timeout=settings.timeout_seconds),
            limiter=limiter,
            on_error=errors.raise_for,
            login_hint=APP.login_hint,
            policy=policy,
            wait_hint=errors.wait_hint,
            sleep=sleep,
            stats=stats,
        )
        self.stats = self.api.stats
        self.search_settle_seconds = settings.search_settle_seconds
        # Read once per client (one run).
        self._customers: dict[str, Customer] | None = None
        self._articles: dict[str, Article] | None = None
        self._company: dict[str, Any] | None = None
        self._company_currency: tuple[str | None] | None = None
        # Draft id -> the invoice it became: a converted invoice never turns back into a draft.
        self._converted: dict[str, RemoteInvoice] = {}
        # Draft id -> (key, customer number) of each draft this client has read or written, and
        # the drafts a read by id found gone: what a converted invoice without
        # CreatedFromDraftId is paired with (_paired).
        self._drafts_seen: dict[str, tuple[str, str]] = {}
        self._drafts_gone: set[str] = set()

    def _pages(self, path: str, orderby: str) -> list[dict[str, Any]]:
        """Every item of a list endpoint ({"Meta": ..., "Data": [...]}), page after page from
        $page 1, as many pages as Meta.TotalNumberOfPages says (0 when there is nothing).

        $page counts positions, so a list that changes while it is read can hide an item: a
        draft deleted from a page already read moves the next one onto that page, and it is
        never shown. So the items read are counted against Meta.TotalNumberOfResults of the
        first and of the last page (and no Id may come twice); when they disagree, the list
        is read again from page 1, up to LISTING_ATTEMPTS times in all. A list that never
        settles stops the run (RemoteUnavailableError, exit 4): acting on an incomplete list
        could write a draft a second time."""
        for attempt in range(1, LISTING_ATTEMPTS + 1):
            items, count, first, last = self._read_pages(path, orderby)
            ids = [guid(lowered(i).get("id")) for i in items]
            ids = [i for i in ids if i]
            if count == first == last and len(set(ids)) == len(ids):
                return items
            log.warning(
                "visma.listing_changed",
                path=path,
                attempt=attempt,
                read=count,
                first_total=first,
                last_total=last,
            )
        raise RemoteUnavailableError(
            f"{errors.SYSTEM}'s list {path} changed while it was read page by page, "
            f"{LISTING_ATTEMPTS} times in a row (someone is adding or deleting there right "
            "now): the connector stops rather than act on an incomplete list; the next run "
            "reads it again"
        )

    def _read_pages(self, path: str, orderby: str) -> tuple[list[dict[str, Any]], int, int, int]:
        """One reading of a list, page by page: the items, how many Data held in all, and
        Meta.TotalNumberOfResults of the first and of the last page read."""
        found: list[dict[str, Any]] = []
        count = 0
        totals: list[int] = []
        page = 1
        while True:
            params = {"$orderby": orderby, "$page": str(page), "$pagesize": str(PAGE_SIZE)}
            answer = lowered(self._call("GET", path, params=params))
            items, meta = answer.get("data"), lowered(answer.get("meta"))
            pages = _whole(meta.get("totalnumberofpages"))
            total = _whole(meta.get("totalnumberofresults"))
            if not isinstance(items, list) or pages is None or total is None:
                # Without Data and Meta a page count cannot be trusted: a missed draft would
                # be written a second time.
                raise RemoteUnavailableError(
                    f"{errors.SYSTEM} answered {path} without Meta (TotalNumberOfPages, "
                    "TotalNumberOfResults) or Data"
                )
            totals.append(total)
            count += len(items)
            found.extend(i for i in items if isinstance(i, dict))
            if page >= pages or not items:
                return found, count, totals[0], totals[-1]
            page += 1

    @staticmethod
    def _id(remote_id: str) -> str:
        """The GUID to put in a path. Anything else was never made in Visma eAccounting: it is
        never sent (Visma answers 400 for it, not "not found") nor taken as a deleted draft."""
        if not is_guid(remote_id):
            raise StateMismatchError(
                f"the state records invoice id {remote_id!r}, which is not a Visma eAccounting "
                "id (a GUID): this state directory was not made against Visma eAccounting. Point "
                "CONNECTOR_STATE_DIR at the right one, or rebuild it: connector state rebuild"
            )
        return remote_id.lower()

    # --- registers ------------------------------------------------------------------------

    def customers(self) -> dict[str, Customer]:
        """Customer number -> customer, read once per client. Should a number appear twice,
        the active one counts."""
        if self._customers is None:
            found: dict[str, Customer] = {}
            for item in self._pages("/customers", CUSTOMER_ORDER):
                customer = parse_customer(item)
                prior = found.get(customer.number)
                if customer.number and (prior is None or (customer.active and not prior.active)):
                    found[customer.number] = customer
            self._customers = found
        return self._customers

    def articles(self) -> dict[str, Article]:
        """Article number -> article (active or not), read once per client."""
        if self._articles is None:
            found: dict[str, Article] = {}
            for item in self._pages("/articles", ARTICLE_ORDER):
                article = parse_article(item)
                prior = found.get(article.number)
                if article.number and (prior is None or (article.active and not prior.active)):
                    found[article.number] = article
            self._articles = found
        return self._articles

    def _article_numbers(self) -> dict[str, str]:
        """Article id -> number, when the register has been read (for rows that name their
        article by id only); never a read of its own."""
        return {a.id: a.number for a in (self._articles or {}).values()}

    def _refusal(self, invoice: PlannedInvoice) -> TargetRefusal | None:
        """Why Visma eAccounting must not get this draft, before anything is sent."""
        number = invoice.key.customer_number
        customer = self.customers().get(number)
        where = errors.SYSTEM
        if customer is None:
            return TargetRefusal(
                f"customer {number} does not exist in {where}", code=errors.CUSTOMER_MISSING
            )
        if not customer.active:
            return TargetRefusal(
                f"customer {number} is inactive in {where}: make it active there to invoice it",
                code=errors.CUSTOMER_INACTIVE,
            )
        if customer.private_person:
            return TargetRefusal(
                f"customer {number} is a private person in {where}, which would take the "
                "connector's prices (excluding VAT) as including VAT; the connector does not "
                f"invoice private persons in {where}: invoice these hours by hand, or register "
                "the customer as a company if it is one",
                code=errors.CUSTOMER_PRIVATE,
            )
        if customer.currency is None:
            # No currency of its own: its drafts take the company's currency.
            company = self.company_currency()
            if company is None:
                return TargetRefusal(
                    f"customer {number} has no currency of its own in {where}, so its drafts "
                    "take the company's currency, and the connector could not read which that "
                    f"is: set the customer's currency to {invoice.currency} there",
                    code=errors.CUSTOMER_CURRENCY,
                )
            if company != invoice.currency:
                return TargetRefusal(
                    f"customer {number} has no currency of its own in {where}, so its drafts "
                    f"take the company's currency, {company}, but these hours are in "
                    f"{invoice.currency}: set the customer's currency there, or the entries' "
                    "currency in the ledger",
                    code=errors.CUSTOMER_CURRENCY,
                )
        elif customer.currency != invoice.currency:
            return TargetRefusal(
                f"customer {number} is invoiced in {customer.currency} in {where}, but these "
                f"hours are in {invoice.currency}; a draft always takes the customer's currency: "
                "change the customer's currency there, or the entries' currency in the ledger",
                code=errors.CUSTOMER_CURRENCY,
            )
        register = self.articles()
        missing = sorted(
            {
                r.article
                for r in invoice.rows
                if r.article and (r.article not in register or not register[r.article].active)
            }
        )
        if missing:
            return TargetRefusal(errors.articles_missing(missing), code=errors.ARTICLE_MISSING)
        return None

    def _ids(self, invoice: PlannedInvoice) -> tuple[str, dict[str, str]]:
        """The customer's GUID and each article's, refusing first what Visma must not get."""
        refusal = self._refusal(invoice)
        if refusal is not None:
            raise refusal
        register = self.articles()
        ids = {r.article: register[r.article].id for r in invoice.rows if r.article}
        return self.customers()[invoice.key.customer_number].id, ids

    # --- finding --------------------------------------------------------------------------

    def _remember(self, invoice: RemoteInvoice) -> RemoteInvoice:
        self._converted[invoice.remote_id] = invoice
        return invoice

    def _seen(self, draft: RemoteInvoice) -> RemoteInvoice:
        if draft.key:
            self._drafts_seen[draft.remote_id] = (draft.key, draft.customer_number)
        return draft

    def _invoices(self) -> list[RemoteInvoice]:
        numbers = self._article_numbers()
        found = [parse_invoice(item, numbers) for item in self._pages(INVOICES, INVOICE_ORDER)]
        return [self._remember(invoice) for invoice in self._paired(found)]

    def _paired(self, invoices: list[RemoteInvoice]) -> list[RemoteInvoice]:
        """An invoice converted from a draft is reported under the draft's id, its
        CreatedFromDraftId. Whether Visma fills that in on a convert is unverified: one without
        it is paired with its draft by exact key (ContractNumber) and customer number, when
        exactly one draft this client has seen, and has since found gone by reading it, has
        that key and customer, and exactly one such invoice does. Otherwise it keeps its own id:
        an invoice of the connector's key that the state does not know, so the sync stops
        rather than guess (a draft this client never saw cannot be paired: the state, which
        knows it, is the sync's)."""
        drafted = [guid(lowered(i.source).get("createdfromdraftid")) for i in invoices]
        waiting: dict[tuple[str, str], list[str]] = {}
        for draft_id in sorted(self._drafts_gone - set(drafted)):
            seen = self._drafts_seen.get(draft_id)
            if seen is not None:
                waiting.setdefault(seen, []).append(draft_id)
        undrafted: dict[tuple[str, str], list[int]] = {}
        for index, (invoice, draft_id) in enumerate(zip(invoices, drafted, strict=True)):
            if invoice.key and not draft_id:
                undrafted.setdefault((invoice.key, invoice.customer_number), []).append(index)
        paired = list(invoices)
        for identity, indexes in undrafted.items():
            drafts = waiting.get(identity, [])
            if len(indexes) == 1 and len(drafts) == 1:
                paired[indexes[0]] = replace(invoices[indexes[0]], remote_id=drafts[0])
        return paired

    def _everything(self) -> list[RemoteInvoice]:
        """Every draft and every invoice. A draft converted while the lists were read shows
        twice under one id: the invoice (read last) wins."""
        numbers = self._article_numbers()
        found = {
            d.remote_id: self._seen(d)
            for d in (parse_draft(i, numbers) for i in self._pages(DRAFTS, DRAFT_ORDER))
        }
        found.update((i.remote_id, i) for i in self._invoices())
        return list(found.values())

    def find(self, keys: Collection[str]) -> list[RemoteInvoice]:
        wanted = set(keys)
        if not wanted:
            return []
        return [r for r in self._everything() if r.key is not None and r.key in wanted]

    def find_all(self, periods: Collection[str] | None = None) -> list[RemoteInvoice]:
        found = []
        for remote in self._everything():
            try:
                key = InvoiceKey.parse(remote.key or "")
            except ValueError:
                continue  # not the connector's
            if periods is None or key.period in periods:
                found.append(remote)
        return found

    def get(self, remote_id: str) -> RemoteInvoice:
        """The draft; once converted, the invoice it became (by CreatedFromDraftId, else paired
        by exact key and customer: _paired); else GONE (vanished). The invoice list is read
        whole (no filter is trusted), fresh each time: only a found conversion is
        remembered."""
        draft_id = self._id(remote_id)
        try:
            body = self._call("GET", f"{DRAFTS}/{draft_id}")
        except TargetRefusal as refusal:
            if refusal.status != 404 and refusal.code != errors.NOT_FOUND:
                raise
        else:
            return self._draft(body, "GET", f"{DRAFTS}/{draft_id}")
        self._drafts_gone.add(draft_id)
        if draft_id in self._converted:
            return self._converted[draft_id]
        for invoice in self._invoices():
            if invoice.remote_id == draft_id:
                return invoice
        return RemoteInvoice(
            remote_id=draft_id,
            number=None,
            key=None,
            customer_number="",
            state=RemoteState.GONE,
            status=InvoiceStatus.CANCELLED,
            vanished=True,
        )

    def _draft(self, body: Any, method: str, path: str) -> RemoteInvoice:
        if not isinstance(body, dict) or not is_guid(text(lowered(body).get("id"))):
            # A 2xx without the draft: what it holds is unknown, so the sync settles it by
            # reading (never by sending again).
            raise OutcomeUnknownError(method, path, "the answer holds no draft")
        return self._seen(parse_draft(body, self._article_numbers()))

    # --- writing --------------------------------------------------------------------------

    def create(self, invoice: PlannedInvoice, invoice_date: date) -> RemoteInvoice:
        customer_id, article_ids = self._ids(invoice)
        payload = draft_payload(invoice, customer_id, article_ids, invoice_date=invoice_date)
        body = self._call("POST", DRAFTS, body=payload)
        return self._draft(body, "POST", DRAFTS)

    def can_update(self, invoice: PlannedInvoice, current: RemoteInvoice) -> bool:
        # A PUT sends every row whole (no row ids to pair), so no row inherits another's fields.
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
        """Replace the draft's rows with the plan's, keeping the header a person may have set
        (read-modify-write from `current.source`). `header_only` needs no step of its own here:
        the sync passes the rows to keep with the header in front, and a full replace writes
        exactly those. A lost answer is settled by reading, never sent again.

        What a person set on a row that the connector does not send (a project, cost centres)
        is carried over onto the same row, same article and text, when that is unambiguous.
        When it is not, or a row carries a setting that changes what it bills (a discount,
        ROT/RUT), nothing is sent: a TargetRefusal (ROW_SETTINGS) leaves the draft alone
        until a person removes those settings (still_refused reads the draft again)."""
        draft_id = self._id(remote_id)
        customer_id, article_ids = self._ids(invoice)
        source = current.source
        if not isinstance(source, dict):
            # Not read by this client: read it now, or a person's header would be lost.
            source = self._call("GET", f"{DRAFTS}/{draft_id}")
        kept = kept_fields(source, redated=invoice_date is not None)
        payload = draft_payload(
            invoice, customer_id, article_ids, invoice_date=invoice_date, kept=kept
        )
        payload["Rows"], unkept = carry_row_fields(source, payload["Rows"], self._article_numbers())
        if unkept:
            # The PUT would drop what a person set on a row: the draft is left alone.
            raise TargetRefusal(
                errors.row_settings_kept(invoice, draft_id, unkept), code=errors.ROW_SETTINGS
            )
        path = f"{DRAFTS}/{draft_id}"
        body = self._call("PUT", path, body=payload, idempotent=False)
        return self._draft(body, "PUT", path)

    def discard(self, remote_id: str) -> None:
        """DELETE the draft (200, no body). A lost answer is settled by reading."""
        self._call("DELETE", f"{DRAFTS}/{self._id(remote_id)}", idempotent=False)

    # --- month end ---------------------------------------------------------------------------

    def redate(self, remote_id: str, invoice_date: date) -> RemoteInvoice:
        """A read-modify-write of the whole draft (a PUT replaces it) with the new date and no
        due date. A lost answer is settled by reading."""
        draft_id = self._id(remote_id)
        path = f"{DRAFTS}/{draft_id}"
        source = self._call("GET", path)
        body = self._call("PUT", path, body=redated_draft(source, invoice_date), idempotent=False)
        return self._draft(body, "PUT", path)

    def book(self, remote_id: str) -> RemoteInvoice:
        """POST .../convert keeping the draft's own date (the company setting may otherwise
        date the invoice today). A converted draft is gone from the drafts: converting it again
        is refused (not found), so a lost answer is settled by reading."""
        draft_id = self._id(remote_id)
        path = f"{DRAFTS}/{draft_id}/convert"
        params = {"keepOriginalDraftDate": "true", "overrideCompanyKeepOriginalDraftDate": "true"}
        body = self.api.call("POST", path, params=params)
        if not isinstance(body, dict) or not is_guid(text(lowered(body).get("id"))):
            raise OutcomeUnknownError("POST", path, "the answer holds no invoice")
        return self._remember(parse_invoice(body, self._article_numbers()))

    def send(self, remote_id: str) -> SendOutcome:
        """POST /customerinvoices/{id}/einvoice (SendType 1, AutoInvoiceElectronic) when the
        invoice has an electronic address, else .../email to the customer's invoice e-mail
        address (EmailApi's defaults); with neither, a person sends it. Visma shows no "sent"
        mark on an invoice afterwards, so a lost answer cannot be settled by reading."""
        invoice = self.get(remote_id)
        if invoice.state is not RemoteState.CLOSED or invoice.booked_id is None:
            raise TargetRefusal(
                f"invoice {invoice.label} is not a booked invoice in {errors.SYSTEM}",
                code=errors.NOT_FOUND,
            )
        f = lowered(invoice.source)
        electronic, email = text(f.get("electronicaddress")), text(f.get("customeremail"))
        path = f"{INVOICES}/{invoice.booked_id}"
        if electronic:
            self._call("POST", f"{path}/einvoice", body={"SendType": 1}, idempotent=False)
            return SendOutcome(Delivery.EINVOICE, True, electronic)
        if email:
            self._call("POST", f"{path}/email", body={}, idempotent=False)
            return SendOutcome(Delivery.EMAIL, True, email)
        return SendOutcome(
            Delivery.BY_HAND,
            False,
            f"customer {invoice.customer_number} has neither an e-mail address nor an "
            f"electronic address in {errors.SYSTEM}",
        )

    # --- reading the company ----------------------------------------------------------------

    def precheck(self, invoice: PlannedInvoice) -> str | None:
        refusal = self._refusal(invoice)
        return None if refusal is None else refusal.message

    def refuses_date(self, refusal: TargetRefusal) -> bool:
        return refusal.code in errors.LOCKED

    def article_prices(self) -> dict[str, Decimal | None]:
        """Active articles and their NetPrice. NetPrice is never null in the schema, so an
        article without a price has 0: that reads as no price (the planner flags the row
        rather than billing 0)."""
        return {
            number: (article.net_price or None)
            for number, article in self.articles().items()
            if article.active
        }

    def article_register(self) -> dict[str, RegisterArticle]:
        """Every article, active or not, with its NetPrice (0 reads as none) and its unit."""
        return {
            number: RegisterArticle(
                number=number,
                active=article.active,
                price=article.net_price or None,
                unit=article.unit,
            )
            for number, article in self.articles().items()
        }

    def unit_codes(self) -> set[str] | None:
        """None: a draft row takes its article's unit (UnitId is read-only)."""
        return None

    def company_settings(self) -> dict[str, Any]:
        """GET /companysettings (ea:sales), once per client."""
        if self._company is None:
            body = self._call("GET", "/companysettings")
            if not isinstance(body, dict):
                raise RemoteUnavailableError("Visma eAccounting answered without company settings")
            self._company = lowered(body)
        return self._company

    def company_currency(self) -> str | None:
        """CompanySettings.CurrencyCode ("Currency code used by the company"), the currency of
        a customer without one of its own; read once per client, and only when such a customer
        is met. None when it cannot be known (no scope to read it, or empty): such customers
        are then refused rather than guessed."""
        if self._company_currency is None:
            try:
                value = self.company_settings().get("currencycode")
            except ScopeDeniedError as exc:
                log.warning("visma.company_currency_unknown", reason=str(exc))
                value = None
            self._company_currency = (text(value).upper() or None,)
        return self._company_currency[0]

    def locked_through(self) -> date | None:
        """CompanySettings.AccountingLockedTo, "Date until which accounting is locked", read as
        the last locked day (the later reading of "until": invoices are then dated after it).
        Without the scope to read it, unknown: None, and Visma's own refusal names it."""
        try:
            value = self.company_settings().get("accountinglockedto")
        except (ScopeDeniedError, RemoteSetupError) as exc:
            log.warning("visma.locked_period_unknown", reason=str(exc))
            return None
        locked = date_or_none(value)
        if locked is None and text(value):
            log.warning("visma.locked_period_unreadable", value=text(value)[:40])
        if locked is None or locked.year < _NO_LOCK_BEFORE:
            return None
        return locked

    def identity(self) -> str | None:
        """ "company <digest>": the company the token reaches, by a digest of its corporate
        identity number (for a sole trader that is a personal identity number, which must not
        sit in the state or in messages), else of its name."""
        try:
            settings = self.company_settings()
        except ScopeDeniedError:
            return None
        number = text(settings.get("corporateidentitynumber"))
        name = text(settings.get("name"))
        if not (number or name):
            return None
        digest = hashlib.sha256((number or f"name:{name}").encode()).hexdigest()[:16]
        return f"company {digest}"

    def still_refused(self, code: str | None, invoice: PlannedInvoice) -> str | None:
        """For the connector's own refusals, the registers as read in this run say whether
        the cause is still there; Visma's refusals cannot be checked by a read: try again."""
        if code not in errors.OWN_CODES:
            return None
        refusal = self._refusal(invoice)
        if refusal is not None:
            return refusal.message
        if code == errors.ROW_SETTINGS and invoice.remote_id is not None:
            # Whether the draft still carries the settings: read it again.
            current = self.get(invoice.remote_id)
            if current.state is not RemoteState.OPEN:
                return None  # converted or deleted: the sync takes it from there
            customer_id, article_ids = self._ids(invoice)
            rows = draft_payload(invoice, customer_id, article_ids, invoice_date=None)["Rows"]
            _, unkept = carry_row_fields(current.source, rows, self._article_numbers())
            if unkept:
                return errors.row_settings_kept(invoice, current.remote_id, unkept)
        return None

    def explain(self, refusal: TargetRefusal, invoice: PlannedInvoice) -> str:
        customer_missing = False
        missing: list[str] = []
        if refusal.code == errors.NOT_FOUND:
            try:
                customer = self.customers().get(invoice.key.customer_number)
                register = self.articles()
            except (TargetRefusal, RemoteUnavailableError):
                pass  # the registers cannot be read now: the words stay general
            else:
                customer_missing = customer is None
                missing = sorted(
                    {r.article for r in invoice.rows if r.article and r.article not in register}
                )
        return errors.explain(
            refusal, invoice, missing_articles=missing, customer_missing=customer_missing
        )


def build(
    settings: Settings,
    *,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> VismaClient:
    """A client with the stored refresh token (Visma's identity server; a rotating or reusable
    refresh token, whichever the answer carries is stored before use)."""
    visma = section(settings)
    http = http or httpx.Client(timeout=visma.timeout_seconds)
    endpoint = SPEC.token_endpoint(settings, http)
    store = TokenFile(settings.state_dir / APP.token_file, APP.login_hint)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    tokens = RotatingRefreshToken(endpoint, store, **extra)
    # Visma counts per client (and endpoint); the state directory is bound to one company, so
    # every command on this account shares one window.
    limiter = shared_limiter(
        settings.state_dir,
        PROFILE.name,
        visma.rate_limit,
        api_url=visma.api_url,
        client_id=visma.client_id,
        sleep=sleep,
    )
    return VismaClient(visma, tokens, http=http, limiter=limiter, sleep=sleep, stats=endpoint.stats)
