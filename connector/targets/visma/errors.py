"""Visma eAccounting's errors: the `CommonExtendedBadRequest` body (ErrorCode,
DeveloperErrorMessage, ErrorId, Errors or the older ValidationErrors; keys in any casing, codes as
numbers or strings), and its codes in the connector's terms.

Codes are those of Visma's error-code page as the research notes quote it
(shared/specs/visma-eaccounting/NOTES.md, section 6). Refusals the client makes itself, before
sending anything, carry codes of the connector's own (lower-case words, never a number), so
they can never be mistaken for Visma's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from connector.errors import (
    ConfigError,
    ReauthRequiredError,
    RemoteSetupError,
    ScopeDeniedError,
    TargetRefusal,
)
from connector.http import decode_json
from connector.planning import PlannedInvoice
from connector.targets.api import where
from connector.targets.visma.oauth import APP, SCOPES

SYSTEM = "Visma eAccounting"
API_URL_SETTING = "CONNECTOR_VISMA__API_URL"

# Visma's codes (NOTES section 6).
VALIDATION = "2000"  # DataModelValidationError
NOT_FOUND = "3000"  # ResourceNotFound (also a bad customer or article id in a body)
RATE_LIMITED = "4010"  # TooManyRequests
SALES_ACCOUNT_MISSING = "4024"  # the article's sales category has no account
# CannotBookkeepInvoice (locked year or period), and the locked period and year codes.
LOCKED = frozenset({"4013", "4026", "4038"})
SCOPE_DENIED = frozenset({"4006"})  # NoAccessToScopes
# NotAuthorized, PermissionDenied, NoAccessForAuthenticatedUser, NoPermissionForReadonlyUser:
# the user who authorised the connector may not do this; another login can fix it.
REAUTH = frozenset({"4005", "4007", "4011", "4019"})
# The company's own set-up: authorising again cannot fix it.
SETUP: dict[str, str] = {
    "4003": "the company has not completed Visma eAccounting's startup guide; a person must "
    "finish it in Visma eAccounting",
    "4004": "the Visma eAccounting company is not active",
    "4009": "the company's Visma eAccounting variant cannot invoice (a Bookkeeping-only "
    "subscription); the company must change to a variant with invoicing",
    "4012": "the licence agreement of Visma eAccounting has not been accepted; a person must "
    "log in to Visma eAccounting and accept it",
}
SANDBOX_CLIENT = "4034"  # NotAllowedWithSandboxClient

# The client's own refusals, raised before anything is sent.
CUSTOMER_MISSING = "customer-missing"
CUSTOMER_INACTIVE = "customer-inactive"
CUSTOMER_PRIVATE = "customer-private-person"
CUSTOMER_CURRENCY = "customer-currency"
ARTICLE_MISSING = "article-missing"
# The draft's rows carry what a person set that a full replace would drop (client.update).
ROW_SETTINGS = "draft-row-settings"
OWN_CODES = frozenset({
    CUSTOMER_MISSING, CUSTOMER_INACTIVE, CUSTOMER_PRIVATE, CUSTOMER_CURRENCY, ARTICLE_MISSING,
    ROW_SETTINGS,
})  # fmt: skip

_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) second", re.IGNORECASE)
_ROW_FIELD = re.compile(r"^Rows\[(\d+)\]", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One entry of `Errors` (CommonError): the field, Visma's code and key, and its message."""

    field: str
    code: str
    message: str
    key: str


@dataclass(frozen=True)
class VismaError:
    status: int
    code: str | None
    message: str
    error_id: str | None
    problems: tuple[Problem, ...] = ()
    # Whether the body was Visma's error body at all (a bare 404 from another server is not).
    visma_body: bool = False


class VismaRefusal(TargetRefusal):
    """A refusal with Visma's field errors, for explaining it in plain words."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        problems: tuple[Problem, ...] = (),
    ) -> None:
        super().__init__(message, code=code, status=status, request_id=request_id)
        self.problems = problems


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return str(value).strip()


def _lowered(value: object) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}


def error_of(response: httpx.Response) -> VismaError:
    """Visma's error body, any key casing; tolerant of HTML pages and empty bodies."""
    status = response.status_code
    try:
        body = decode_json(response.content) if response.content else None
    except ValueError:
        snippet = " ".join(response.text.split())[:120]
        return VismaError(status, None, f"HTTP {status}: {snippet or 'empty body'}", None)
    fields = _lowered(body)
    if not fields:
        return VismaError(status, None, f"HTTP {status}", None)
    code = _text(fields.get("errorcode")) or None
    message = _text(fields.get("developererrormessage"))
    error_id = _text(fields.get("errorid")) or None
    listed = fields.get("errors")
    if not isinstance(listed, list):
        listed = fields.get("validationerrors")
    problems = tuple(
        Problem(
            field=_text(p.get("field")),
            code=_text(p.get("errorcode")),
            message=_text(p.get("message")),
            key=_text(p.get("key")),
        )
        for p in (_lowered(item) for item in (listed if isinstance(listed, list) else []))
        if p
    )
    if not message:
        # ASP.NET's own {"Message": ...}, or the identity server's {"error": ...}.
        message = _text(fields.get("message")) or _text(fields.get("error"))
    visma = code is not None or error_id is not None or bool(problems)
    return VismaError(status, code, message or f"HTTP {status}", error_id, problems, visma)


def _listed(problems: tuple[Problem, ...], limit: int = 5) -> str:
    parts = [f"{p.field}: {p.message}" if p.field else p.message for p in problems[:limit]]
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(x for x in parts if x) + more


def raise_for(response: httpx.Response) -> None:
    """Raise what a non-2xx answer means for the connector."""
    error = error_of(response)
    status, code, message, error_id = error.status, error.code, error.message, error.error_id
    detail = f"{message} (Visma code {code})" if code else message
    if status == 404 and not error.visma_body:
        # Visma names what it cannot find with an ErrorCode (3000); a bare 404 is another
        # server, or a wrong path.
        raise ConfigError(
            f"{where(response)} is not a Visma eAccounting API address: check "
            f"{API_URL_SETTING} (usually https://eaccountingapi.vismaonline.com/v2)",
            status=404,
        )
    if code in SCOPE_DENIED:
        raise ScopeDeniedError(
            f"the Visma eAccounting authorisation lacks a scope this needs ({detail}); "
            f"authorise again with the scopes {SCOPES}: {APP.login_hint}",
            status=status,
            request_id=error_id,
        )
    if code in SETUP:
        raise RemoteSetupError(
            f"{SETUP[code]} ({detail}); authorising again cannot fix it",
            status=status,
            request_id=error_id,
        )
    if code == SANDBOX_CLIENT:
        raise ConfigError(
            f"the Visma eAccounting client is a sandbox client and the company is a production "
            f"company ({detail}): use the production client id and secret "
            "(CONNECTOR_VISMA__CLIENT_ID, CONNECTOR_VISMA__CLIENT_SECRET), or authorise a "
            f"sandbox company: {APP.login_hint}",
            status=status,
            request_id=error_id,
        )
    if code in REAUTH or (status in (401, 403) and code is None):
        raise ReauthRequiredError(
            f"Visma eAccounting denies access ({detail}); a person allowed to invoice in the "
            f"company must authorise the integration again with the scopes {SCOPES}: "
            f"{APP.login_hint}",
            status=status,
            request_id=error_id,
        )
    listed = _listed(error.problems)
    raise VismaRefusal(
        f"{message}: {listed}" if listed else message,
        code=code,
        status=status,
        request_id=error_id,
        problems=error.problems,
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds a 429 asks to wait: Visma writes "Try again in N seconds." in its body and sends
    no Retry-After (connector.http honours that header first when it is there)."""
    message = error_of(response).message
    match = _TRY_AGAIN.search(message) or _TRY_AGAIN.search(response.text or "")
    return float(match.group(1)) if match else None


# --- plain words -------------------------------------------------------------------------------


def articles_missing(articles: list[str]) -> str:
    if len(articles) == 1:
        return f"article {articles[0]} does not exist or is inactive in {SYSTEM}"
    return f"articles {', '.join(articles)} do not exist or are inactive in {SYSTEM}"


def _articles(invoice: PlannedInvoice) -> list[str]:
    return sorted({r.article for r in invoice.rows if r.article})


def _problem_words(problems: tuple[Problem, ...], invoice: PlannedInvoice) -> str:
    """Field errors, a row named by its number and article ("row 3 (SK-GAMMAL)")."""
    words = []
    for p in problems[:5]:
        name = p.field
        match = _ROW_FIELD.match(name)
        if match is not None:
            index = int(match.group(1))
            article = invoice.rows[index].article if index < len(invoice.rows) else None
            rest = name[match.end() :].lstrip(".")
            name = f"row {index + 1}" + (f" ({article})" if article else "")
            name += f" {rest}" if rest else ""
        words.append(f"{name}: {p.message}" if name else p.message)
    if len(problems) > 5:
        words.append(f"and {len(problems) - 5} more")
    return "; ".join(words)


def row_settings_kept(invoice: PlannedInvoice, draft_id: str, unkept: list[str]) -> str:
    """Why a draft is left alone: its rows carry what a person set that the connector's full
    replace of the rows would drop or contradict."""
    listed = "; ".join(unkept[:3]) + (f"; and {len(unkept) - 3} more" if len(unkept) > 3 else "")
    return (
        f"the draft of invoice {invoice.key} ({draft_id}) in {SYSTEM} has row settings a person "
        f"made that the connector cannot keep when it writes the new rows: {listed}. The "
        "connector leaves the draft alone and sends nothing for it; to let it write, remove "
        f"those settings from the draft in {SYSTEM} (they can be set again after the next run)"
    )


def explain(
    refusal: TargetRefusal,
    invoice: PlannedInvoice,
    *,
    missing_articles: list[str] | None = None,
    customer_missing: bool = False,
) -> str:
    """A refusal in plain words, naming the customer or the articles concerned, with the
    ErrorId Visma's support asks for. `missing_articles` and `customer_missing` are what the
    registers show (for 3000)."""
    code = refusal.code or ""
    if code in OWN_CODES:
        return refusal.message  # already in plain words, nothing was sent
    customer = invoice.key.customer_number
    support = f" (Visma ErrorId {refusal.request_id})" if refusal.request_id else ""
    problems: tuple[Problem, ...] = getattr(refusal, "problems", ())
    detail = _problem_words(problems, invoice) or refusal.message
    if code == VALIDATION:
        text = f"{SYSTEM} refused invoice {invoice.key} for customer {customer}: {detail}"
    elif code == NOT_FOUND and refusal.status == 404:
        # The address itself was not found: the draft, deleted or converted meanwhile (a
        # reference in the body that does not exist is a 400).
        text = (
            f"the draft of invoice {invoice.key} is no longer in {SYSTEM} (deleted or converted "
            "by a person meanwhile); the next run looks at it again"
        )
    elif code == NOT_FOUND:
        if customer_missing:
            text = f"customer {customer} does not exist in {SYSTEM}"
        elif missing_articles:
            text = articles_missing(missing_articles)
        else:
            wanted = ", ".join(_articles(invoice)) or "none"
            text = (
                f"something invoice {invoice.key} names does not exist in {SYSTEM} (customer "
                f"{customer}, articles {wanted}): {detail}"
            )
    elif code in LOCKED:
        text = (
            f"{SYSTEM} refuses the invoice date of {invoice.key}: that period or year is locked "
            f"for bookkeeping ({refusal.message}); unlock it in {SYSTEM}, or set "
            "CONNECTOR_INVOICE__DATE to date invoices later"
        )
    elif code == SALES_ACCOUNT_MISSING:
        text = (
            f"a sales account is missing in {SYSTEM} for the articles of invoice {invoice.key} "
            f"({', '.join(_articles(invoice))}): set the accounts on the articles' sales "
            f"category (account coding) in {SYSTEM} ({refusal.message})"
        )
    elif code == RATE_LIMITED:
        text = (
            f"{SYSTEM}'s limit of requests per minute was still exceeded after waiting; the "
            f"next run sends invoice {invoice.key} again"
        )
    else:
        coded = f"Visma code {code}: " if code else ""
        text = f"{SYSTEM} refused invoice {invoice.key} for customer {customer}: {coded}{detail}"
    return text + support
