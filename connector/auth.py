"""Tokens for the accounting systems: obtaining, storing, rotating. The mechanics are the same
for every system; each target describes its app (`OAuthApp`: endpoints, scopes, wording).

Two ways for an unattended job:
- client credentials (a Fortnox service account): `TenantId` header, no refresh token;
- authorization code with a refresh token that rotates (Fortnox: single-use, 45 days; Visma:
  rotating or reusable depending on the client, so the returned one is always stored).

A rotating refresh token is lost if two processes use it at once, or if a new one is received
and not stored. So a refresh runs under a lock that holds across processes. The stored token is
re-read after taking the lock (another process may have refreshed already), and the new pair is
stored atomically before the new access token is used. Token files are readable by the owner
only and their values never reach a log.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from connector.errors import (
    ConfigError,
    OutcomeUnknownError,
    ReauthRequiredError,
    RemoteUnavailableError,
)
from connector.http import GaveUpError, RetryPolicy, Stats, decode_json, send
from connector.logs import get_logger
from connector.targets.base import OAuthApp

# Re-exported: the token file is part of what this module offers its callers.
from connector.tokens import EXPIRY_MARGIN_SECONDS as EXPIRY_MARGIN_SECONDS
from connector.tokens import TokenFile as TokenFile
from connector.tokens import TokenSet as TokenSet

log = get_logger(__name__)


class TokenProvider(Protocol):
    def token(self) -> str:
        """A valid access token."""

    def invalidate(self, token: str) -> None:
        """The remote rejected `token`; the next token() must not return it."""


class StaticToken:
    """One access token, for a single command (reading the tenant id right after a login)."""

    def __init__(self, access_token: str, app: OAuthApp) -> None:
        self._token = access_token
        self._app = app

    def token(self) -> str:
        return self._token

    def invalidate(self, token: str) -> None:
        raise ReauthRequiredError(
            f"{self._app.system} refused the token just issued; run: {self._app.login_hint}"
        )


class TokenEndpoint:
    """The OAuth token endpoint: Basic client authentication, form-encoded grants. `app`
    words the messages; `setting` names the settings prefix (CONNECTOR_FORTNOX__)."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        http: httpx.Client,
        app: OAuthApp,
        setting: str,
        policy: RetryPolicy | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.url = url
        self.app = app
        self.setting = setting
        self._basic = base64.b64encode(
            f"{client_id}:{client_secret.get_secret_value()}".encode()
        ).decode()
        self._http = http
        self._policy = policy or RetryPolicy(max_attempts=4, max_total_seconds=60)
        self.stats = stats or Stats()

    def grant(self, form: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST a grant. Returns the token response; raises on refusal or unknown outcome."""

        def build() -> httpx.Request:
            return self._http.build_request(
                "POST",
                self.url,
                content=urlencode(form),
                headers={
                    "Authorization": f"Basic {self._basic}",
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                    **(headers or {}),
                },
            )

        try:
            response = send(self._http, build, policy=self._policy, stats=self.stats)
        except GaveUpError as exc:
            raise RemoteUnavailableError(
                f"{self.app.system}'s token endpoint unreachable: {exc.reason()}; check "
                f"{self.setting}AUTH_URL if the address is wrong"
            ) from None
        if response.status_code == 200:
            body = _json_or_none(response)
            if isinstance(body, dict) and isinstance(body.get("access_token"), str):
                return body
            if isinstance(body, dict):
                raise RemoteUnavailableError("token endpoint answered without an access token")
        error = _oauth_error(response)
        if response.status_code == 404 or (
            response.status_code == 200 and not isinstance(_json_or_none(response), dict)
        ):
            raise ConfigError(
                f"{self.url} is not an OAuth token endpoint: check {self.setting}AUTH_URL",
                status=response.status_code,
            )
        if error == "invalid_client" or response.status_code == 401:
            raise ConfigError(
                f"{self.app.system} refused the client credentials: check "
                f"{self.setting}CLIENT_ID and {self.setting}CLIENT_SECRET",
                status=response.status_code,
            )
        raise _GrantRefused(error or f"HTTP {response.status_code}", response.status_code)


class _GrantRefused(Exception):
    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return decode_json(response.content)
    except ValueError:
        return None


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = decode_json(response.content)
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return None


def _token_set(body: dict[str, Any], now: float, previous_refresh: str | None = None) -> TokenSet:
    expires_in = body.get("expires_in", 3600)
    try:
        lifetime = float(expires_in)
    except (TypeError, ValueError):
        lifetime = 3600.0
    refresh = body.get("refresh_token")
    return TokenSet(
        access_token=body["access_token"],
        expires_at=now + lifetime,
        refresh_token=refresh if isinstance(refresh, str) and refresh else previous_refresh,
    )


class ClientCredentials:
    """Service-account tokens: asked for with the tenant id, reused until shortly before expiry.

    The token is cached in the state directory so consecutive runs share it; without a refresh
    token there is nothing to lose, so a lost answer is simply asked again.
    """

    def __init__(
        self,
        endpoint: TokenEndpoint,
        tenant_id: str,
        store: TokenFile,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self._tenant = tenant_id
        self._store = store
        self._clock = clock
        self._current: TokenSet | None = None

    def token(self) -> str:
        now = self._clock()
        if self._current is not None and self._current.valid(now):
            return self._current.access_token
        with self._store.lock():
            stored = self._store.read()
            if stored is not None and stored.valid(now):
                self._current = stored
                return stored.access_token
            body = self._grant()
            self._current = _token_set(body, self._clock())
            self._store.write(self._current)
            log.info("auth.token_obtained", grant="client_credentials")
            return self._current.access_token

    def _grant(self) -> dict[str, Any]:
        form = {"grant_type": "client_credentials"}
        for _ in range(3):
            try:
                return self._endpoint.grant(form, {"TenantId": self._tenant})
            except OutcomeUnknownError:
                continue  # no refresh token to burn: asking again is harmless
            except _GrantRefused as exc:
                raise ReauthRequiredError(
                    f"{self._endpoint.app.system} refused the service account for tenant "
                    f"{self._tenant} "
                    f"({exc.error}); a system administrator must approve the integration again"
                ) from None
        raise RemoteUnavailableError("token endpoint did not answer")

    def invalidate(self, token: str) -> None:
        if self._current is not None and self._current.access_token == token:
            self._current = TokenSet("", 0.0)
        with self._store.lock():
            stored = self._store.read()
            if stored is not None and stored.access_token == token:
                self._store.write(TokenSet("", 0.0))


class RotatingRefreshToken:
    """Authorization-code tokens with a refresh token, refreshed single-flight. The answer's
    refresh token is stored before the access token is used: with a rotating client the old
    one is spent. A client whose refresh token is reusable may answer without one (the app
    says `refresh_may_be_reused`): the old one is kept."""

    def __init__(
        self,
        endpoint: TokenEndpoint,
        store: TokenFile,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self._store = store
        self._clock = clock
        self._current: TokenSet | None = None
        self._rejected: set[str] = set()
        self._app = endpoint.app

    def token(self) -> str:
        now = self._clock()
        current = self._current
        if (
            current is not None
            and current.valid(now)
            and current.access_token not in self._rejected
        ):
            return current.access_token
        with self._store.lock():
            # Another process may have refreshed while we waited for the lock.
            stored = self._store.read()
            if stored is None or not stored.refresh_token:
                raise ReauthRequiredError(
                    f"{self._app.system} is not authorised yet; run: {self._app.login_hint}"
                )
            if stored.valid(now) and stored.access_token not in self._rejected:
                self._current = stored
                return stored.access_token
            self._current = self._refresh(stored)
            return self._current.access_token

    def _refresh(self, stored: TokenSet) -> TokenSet:
        assert stored.refresh_token is not None
        used = stored.refresh_token
        for attempt in range(2):
            form = {"grant_type": "refresh_token", "refresh_token": used}
            try:
                body = self._endpoint.grant(form)
            except OutcomeUnknownError:
                raise RemoteUnavailableError(
                    "the token refresh was sent but its answer was lost; the next run retries "
                    f"(if it then reports an invalid refresh token, run: {self._app.login_hint})"
                ) from None
            except _GrantRefused as exc:
                if exc.error != "invalid_grant":
                    raise ReauthRequiredError(
                        f"{self._app.system} refused the token refresh ({exc.error}); "
                        f"run: {self._app.login_hint}"
                    ) from None
                # Someone may have stored a newer token without our lock (an import): re-read once.
                again = self._store.read()
                if attempt == 0 and again is not None and again.refresh_token not in (None, used):
                    assert again.refresh_token is not None
                    used = again.refresh_token
                    continue
                raise ReauthRequiredError(
                    f"the {self._app.system} refresh token is no longer valid; "
                    f"run: {self._app.login_hint}"
                ) from None
            keep = used if self._app.refresh_may_be_reused else None
            fresh = _token_set(body, self._clock(), previous_refresh=keep)
            if not fresh.refresh_token:
                raise RemoteUnavailableError("token refresh answered without a new refresh token")
            # Store before use: the old refresh token is already spent.
            self._store.write(fresh)
            log.info("auth.token_refreshed")
            return fresh
        raise AssertionError("unreachable")  # pragma: no cover

    def invalidate(self, token: str) -> None:
        self._rejected.add(token)


def authorization_url(
    app: OAuthApp,
    auth_url: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    *,
    service_account: bool = False,
) -> str:
    """The address a person opens to authorise the integration. With `service_account`, a
    system administrator's approval creates the consent that client credentials need
    (Fortnox: "You have to use account_type=service for the consent to be created")."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": app.scopes,
        "state": state,
        **dict(app.extra_params),
        "response_type": "code",
    }
    if service_account:
        if app.service_account_params is None:
            raise ConfigError(f"{app.system} has no service accounts")
        params.update(dict(app.service_account_params))
    return f"{auth_url}{app.authorize_path}?{urlencode(params)}"


def new_state() -> str:
    return secrets.token_urlsafe(16)


def exchange_code(
    endpoint: TokenEndpoint, store: TokenFile | None, code: str, redirect_uri: str
) -> TokenSet:
    """Authorization code -> first token pair, stored atomically (unless `store` is None: a
    service account's consent needs no stored token, only the tenant id read with it)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    try:
        body = endpoint.grant(form)
    except OutcomeUnknownError:
        raise RemoteUnavailableError(
            "the code exchange was sent but its answer was lost; log in again"
        ) from None
    except _GrantRefused as exc:
        app = endpoint.app
        raise ReauthRequiredError(
            f"{app.system} refused the authorisation code ({exc.error}); codes are valid for "
            f"{app.code_minutes} minutes and once: run {app.login_hint} again"
        ) from None
    tokens = _token_set(body, time.time())
    if store is None:
        return tokens
    if not tokens.refresh_token:
        raise ReauthRequiredError(
            f"{endpoint.app.system} gave no refresh token: the authorisation did not include "
            f"offline access; run {endpoint.app.login_hint} again and allow all the access "
            "asked for"
        )
    if store is not None:
        with store.lock():
            store.write(tokens)
    return tokens


def import_refresh_token(
    store: TokenFile, refresh_token: str, endpoint: TokenEndpoint | None = None
) -> None:
    """Store a refresh token obtained elsewhere. With `endpoint`, it is exchanged at once, so a
    wrong paste is found now rather than by the nightly run; if the system refuses it, the
    token stored before is put back."""
    refresh_token = refresh_token.strip()
    if not refresh_token:
        raise ConfigError("no refresh token on standard input")
    with store.lock():
        previous = store.read() if store.path.exists() else None
        store.write(TokenSet(access_token="", expires_at=0.0, refresh_token=refresh_token))
    if endpoint is None:
        return
    try:
        RotatingRefreshToken(endpoint, store).token()
    except ReauthRequiredError as exc:
        with store.lock():
            if previous is not None:
                store.write(previous)
            else:
                store.path.unlink(missing_ok=True)
        kept = "the token stored before is kept" if previous else "nothing was stored"
        raise ReauthRequiredError(
            f"{endpoint.app.system} refused that refresh token ({exc.message}); {kept}"
        ) from None
