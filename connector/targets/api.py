"""The HTTP loop every target client shares: bearer token, client-side rate limit, the retry
decision (`connector.http`), one token refresh on a 401, and the target's own reading of
answers (its error body, its codes) plugged in as a hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from connector.auth import TokenProvider
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

log = get_logger(__name__)

# The target's reading of a non-2xx answer: raise the right ConnectorError.
ErrorHook = Callable[[httpx.Response], None]
# The target's reading of how long a 429 asks to wait when no Retry-After header says.
WaitHook = Callable[[httpx.Response], float | None]


class ApiClient:
    """One target's API, as JSON in and out, Decimals exact both ways."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        url_setting: str,
        tokens: TokenProvider,
        http: httpx.Client,
        limiter: RateLimiter,
        on_error: ErrorHook,
        login_hint: str,
        policy: RetryPolicy | None = None,
        wait_hint: WaitHook | None = None,
        sleep: Callable[[float], None] | None = None,
        stats: Stats | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.system = system
        self.base_url = base_url
        self.url_setting = url_setting
        self._tokens = tokens
        self.http = http
        self.limiter = limiter
        self._on_error = on_error
        self._login_hint = login_hint
        self._policy = policy or RetryPolicy(rate_limit_wait=limiter.period)
        self._wait_hint = wait_hint
        self._sleep = sleep
        self._headers = headers or {}
        self.stats = stats or Stats()

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """The decoded answer of a 2xx; otherwise the error hook raises. A 401 invalidates the
        token and tries once more with a fresh one."""
        url = f"{self.base_url}{path}"
        content = dumps_exact(body).encode() if body is not None else None
        used: list[str] = []  # tokens sent, to invalidate the one a 401 refused
        for first_try in (True, False):

            def build() -> httpx.Request:
                token = self._tokens.token()
                used.append(token)
                headers = {
                    **self._headers,
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json",
                }
                if content is not None:
                    headers["Content-Type"] = "application/json"
                return self.http.build_request(
                    method, url, params=params, content=content, headers=headers
                )

            try:
                response = send(
                    self.http,
                    build,
                    policy=self._policy,
                    stats=self.stats,
                    limiter=self.limiter,
                    sleep=self._sleep,
                    idempotent=idempotent,
                    wait_hint=self._wait_hint,
                )
            except GaveUpError as exc:
                raise RemoteUnavailableError(
                    f"{self.system} unreachable: {exc.reason()}; check {self.url_setting} if "
                    "the address is wrong"
                ) from None
            if response.status_code == 401 and first_try:
                log.info("target.unauthorized_refreshing", target=self.system)
                self._tokens.invalidate(used[-1])
                continue
            return self._answer(response)
        raise ReauthRequiredError(
            f"{self.system} rejects the credentials even after a token refresh; "
            f"run: {self._login_hint}",
            status=401,
        )

    def _answer(self, response: httpx.Response) -> Any:
        if 200 <= response.status_code < 300:
            try:
                return decode_json(response.content) if response.content else None
            except ValueError:
                raise ConfigError(
                    f"{where(response)} answered with something that is not the "
                    f"{self.system} API (not JSON): check {self.url_setting}"
                ) from None
        self._on_error(response)
        raise RemoteUnavailableError(  # pragma: no cover - every hook raises
            f"{self.system} answered HTTP {response.status_code}"
        )


def where(response: httpx.Response) -> str:
    """The address answered, without query (it may carry filters) for messages."""
    url = response.request.url
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


class ApiBacked:
    """What every target client does with its `ApiClient` the same way: call it, close it."""

    api: ApiClient

    def close(self) -> None:
        self.api.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        return self.api.call(method, path, params=params, body=body, idempotent=idempotent)
