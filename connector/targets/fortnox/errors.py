"""Fortnox's errors: the `ErrorInformation` body (lower- or upper-case keys, codes that may
arrive as strings), and its codes in the connector's terms (docs/fortnox.md, Errors)."""

from __future__ import annotations

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
from connector.targets.fortnox.oauth import APP, SCOPES

# Error codes, from Fortnox's error list and recorded answers (docs/fortnox.md, Errors).
CUSTOMER_MISSING = {"2000204", "2000433"}
ARTICLE_MISSING = {"2000428", "2001302"}
UNIT_MISSING = {"2000432"}
INVOICE_MISSING = {"2000434"}
LOCKED_PERIOD = {"2000401", "2002141"}
REAUTH = {"2000310", "2000311"}
SCOPE_DENIED = {"2000663"}
# A missing licence: authorising again cannot fix it.
NO_LICENCE = {"2001101", "2001103"}
CONNECTOR_BUG = {"2000587", "2000588", "2001399", "2001392", "2002115"}
PLAIN: dict[str, str] = {
    "2001304": "an account is missing in Fortnox: set the company's predefined accounts "
    "(or the customer's) in Fortnox's settings",
    "2003125": "the invoice is marked complete for the warehouse in Fortnox and cannot be changed",
    "2004167": "Fortnox needs an account on rows with a custom VAT rate (EasyVat)",
    "2000359": "a text contains characters Fortnox does not accept",
}


def is_locked_period(code: str | None, message: str) -> bool:
    """Fortnox's locked-period refusal. Its code is known only from integrators' help pages, so
    the Swedish wording is matched as well."""
    return code in LOCKED_PERIOD or "låst perioden" in message.lower()


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


def raise_for(response: httpx.Response) -> None:
    """Raise what a non-2xx answer means for the connector."""
    code, message = error_information(response)
    request_id = response.headers.get("X-Request-Id") or response.headers.get("x-uid")
    status = response.status_code
    if status == 404 and code is None:
        # Fortnox names what it cannot find with an ErrorInformation code; a bare 404 is
        # another server, or a wrong path.
        raise ConfigError(
            f"{where(response)} is not a Fortnox API address: check "
            "CONNECTOR_FORTNOX__API_URL (usually https://api.fortnox.se/3)",
            status=404,
        )
    if code in NO_LICENCE:
        raise RemoteSetupError(
            f"the Fortnox company has no active licence for this part of the API ({message}, "
            f"Fortnox code {code}); authorising again cannot fix it: the company must add "
            "the licence in Fortnox",
            status=status,
            request_id=request_id,
        )
    if code in SCOPE_DENIED:
        raise ScopeDeniedError(
            f"the Fortnox authorisation lacks a scope this needs ({message}); authorise "
            f"again with the scopes {SCOPES}: {APP.login_hint}",
            status=status,
            request_id=request_id,
        )
    if code in REAUTH or (status in (401, 403) and code is None):
        raise ReauthRequiredError(
            f"Fortnox denies access ({message}); a person must authorise the integration "
            f"again with the scopes {SCOPES}: {APP.login_hint}",
            status=status,
            request_id=request_id,
        )
    raise TargetRefusal(
        message or f"HTTP {status}", code=code, status=status, request_id=request_id
    )


def articles_missing(articles: list[str]) -> str:
    plural = "s" if len(articles) > 1 else ""
    return f"article{plural} {', '.join(articles)} does not exist or is inactive in Fortnox"


def explain(refusal: TargetRefusal, invoice: PlannedInvoice, missing: list[str]) -> str:
    """A refusal in plain words; `missing` lists the invoice's articles the register lacks."""
    code = refusal.code or ""
    customer = invoice.key.customer_number
    detail = f"Fortnox code {code}: {refusal.message}" if code else refusal.message
    if code in CUSTOMER_MISSING:
        return f"customer {customer} does not exist in Fortnox"
    if code in ARTICLE_MISSING:
        wanted = sorted({r.article for r in invoice.rows if r.article})
        return articles_missing(missing or wanted)
    if code in UNIT_MISSING:
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
    if code in CONNECTOR_BUG:
        return f"Fortnox refused what the connector sent (connector bug: please report; {detail})"
    plain = PLAIN.get(code)
    return f"{plain} ({detail})" if plain else f"Fortnox refused the invoice: {detail}"
