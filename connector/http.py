"""HTTP transport and retry policy.

The retry decision is a pure function, `decide(method, outcome)`, tested as a table. The loop
that applies it (tenacity) lives in `send()`. The key distinction is httpx's: an error before the
request left us (connect error, connect or pool timeout) is safe to repeat for any method, while
an error after sending (read timeout, dropped connection, 5xx) leaves a create's outcome unknown.
Such a create is never repeated here; the caller must reconcile against the remote first.
"""

from __future__ import annotations

import bisect
import email.utils
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import httpx
import tenacity

from connector.errors import OutcomeUnknownError
from connector.logs import get_logger

log = get_logger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class Outcome(StrEnum):
    """What happened to one attempt, as far as the retry decision cares."""

    NOT_SENT = "not_sent"  # connect error / connect timeout / pool timeout
    LOST = "lost"  # sent, then read timeout or dropped connection: outcome unknown
    RESPONSE = "response"


class Decision(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # back off and try again
    RATE_LIMITED = "rate_limited"  # wait for the window (Retry-After if given) and try again
    RECONCILE = "reconcile"  # a create may or may not have happened: look before anything else
    REAUTH = "reauth"  # refresh credentials once, then try again
    FAIL = "fail"  # final for this request


def decide(
    method: str, outcome: Outcome, status: int | None = None, *, idempotent: bool | None = None
) -> Decision:
    """The retry decision for one attempt. Pure: same inputs, same answer.

    `idempotent` overrides what the method says: a PUT that names rows by ids the target renews
    on every update is not safe to repeat, so its lost answer must be reconciled like a create.
    """
    if idempotent is None:
        idempotent = method.upper() in IDEMPOTENT_METHODS
    if outcome is Outcome.NOT_SENT:
        return Decision.RETRY
    if outcome is Outcome.LOST:
        return Decision.RETRY if idempotent else Decision.RECONCILE
    assert status is not None, "a response has a status"
    if 200 <= status < 300:
        return Decision.SUCCESS
    if status == 429:
        return Decision.RATE_LIMITED
    if status == 401:
        return Decision.REAUTH
    if status >= 500:
        return Decision.RETRY if idempotent else Decision.RECONCILE
    return Decision.FAIL


def classify_exception(exc: httpx.TransportError) -> Outcome:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Outcome.NOT_SENT
    return Outcome.LOST


def retry_after_seconds(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta or HTTP date), or None when absent or invalid."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# What the stdlib encoder writes for a Decimal in `dumps_exact`'s first pass: a string no
# ledger or invoice holds; should one hold it, the count tells and the slow path answers.
_DECIMAL_MARK = "\x00connector-exact-decimal\x00"
_DECIMAL_QUOTED = json.dumps(_DECIMAL_MARK)


def dumps_exact(value: Any) -> str:
    """JSON text in which Decimals are written verbatim as numbers, never via float.

    The stdlib's C encoder does the work (several times faster than walking the value in
    Python): each Decimal is first written as a marker string, then the markers are replaced,
    in order, by the Decimals' own text. If a string of the value itself reads as a marker
    (the count of markers differs), the value is written by the plain recursive walk."""
    numbers: list[str] = []

    def default(obj: object) -> str:
        if isinstance(obj, Decimal):
            numbers.append(_decimal_text(obj))
            return _DECIMAL_MARK
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)
    if not numbers:
        return text
    parts = text.split(_DECIMAL_QUOTED)
    if len(parts) != len(numbers) + 1:
        return _dumps_walk(value)
    out = [parts[0]]
    for number, part in zip(numbers, parts[1:], strict=True):
        out.append(number)
        out.append(part)
    return "".join(out)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    return str(value)


def _dumps_walk(value: Any) -> str:
    """`dumps_exact` the slow way: the value walked in Python."""
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k), ensure_ascii=False)}:{_dumps_walk(v)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps_walk(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def decode_json(content: bytes | str) -> Any:
    """JSON with every non-integer number decoded as Decimal, never float."""
    return json.loads(content, parse_float=Decimal)


class RateLimiter:
    """Client-side sliding window: at most `limit` requests in any `period` seconds.

    One instance is shared by every request of a process to one account, so the process stays
    under the remote's window instead of learning about it from 429s. `acquire()` before a
    request returns its ticket; `release(ticket)` once the answer is in moves the request's
    time in the window from its start to its end. The remote counts a request at some moment
    between the two, so waiting `period` after the end of the request `limit` places back
    never meets a 429, however the network's delay varies: the window can be the remote's
    own limit, with no margin. `connector.rate_window.SharedRateLimiter` keeps the same window
    in a file, for every process using one account.
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("rate limit must be at least 1 request per positive period")
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: list[float] = []
        self._lock = threading.Lock()
        self.waited = 0.0

    @classmethod
    def parse(cls, text: str, **kwargs: Any) -> Self:
        """From "24/5": 24 requests per 5 seconds."""
        count, _, seconds = text.partition("/")
        try:
            return cls(int(count), float(seconds), **kwargs)
        except ValueError:
            raise ValueError(f"expected REQUESTS/SECONDS such as 24/5, got {text!r}") from None

    def now(self) -> float:
        return (self._clock or time.monotonic)()

    def acquire(self) -> float:
        """Wait for a place in the window and take it; returns the ticket for `release`."""
        while True:
            with self._lock:
                now = self.now()
                self._sent, wait = admit(self._sent, now, self.limit, self.period)
                if wait is None:
                    return now
            self.waited += wait
            (self._sleep or pause)(wait)

    def release(self, ticket: float) -> None:
        """The request taken with `ticket` has its answer: it counts from now on."""
        with self._lock:
            self._sent = moved(self._sent, ticket, self.now())


def admit(
    sent: list[float], now: float, limit: int, period: float
) -> tuple[list[float], float | None]:
    """One decision of the sliding window. `sent` holds the times of recent requests in
    ascending order; returns the times to keep and None when a request may go now (`now` is
    added), else the seconds to wait. A time ahead of `now` (a wall clock set back) counts as
    now, so no wait is longer than one period. Only the newest `limit` times can ever decide,
    so no more are kept."""
    if sent and sent[-1] > now:
        sent = [min(t, now) for t in sent]
    kept = sent[max(bisect.bisect_right(sent, now - period), len(sent) - limit) :]
    if len(kept) < limit:
        kept.append(now)
        return kept, None
    return kept, max(kept[0] + period - now, period / limit / 100)


def moved(sent: list[float], ticket: float, now: float) -> list[float]:
    """`sent` (ascending) with the request taken at `ticket` counted at `now`, its end."""
    kept = list(sent)
    at = bisect.bisect_left(kept, ticket)
    if at < len(kept) and kept[at] == ticket:
        del kept[at]
    bisect.insort(kept, max(now, ticket))
    return kept


def pause(seconds: float) -> None:
    """The one place the connector sleeps between attempts; tests replace it."""
    time.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_total_seconds: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # Minimum wait after a 429 without Retry-After (one rate-limit window).
    rate_limit_wait: float = 5.0
    # Longest Retry-After we honour; beyond it we give up and leave the work for the next run.
    retry_after_cap: float = 120.0


class _Retryable(Exception):
    def __init__(self, decision: Decision, wait_hint: float | None, detail: str) -> None:
        super().__init__(detail)
        self.decision = decision
        self.wait_hint = wait_hint


class GaveUpError(Exception):
    """Retries exhausted; `last` describes the last failure."""

    def __init__(self, request: httpx.Request, attempts: int, last: str) -> None:
        super().__init__(
            f"{request.method} {request.url.path}: gave up after {attempts} attempt(s): {last}"
        )
        self.last = last
        self.attempts = attempts
        url = request.url
        # For messages: where it was sent, without the query (filters, never secrets).
        self.address = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"

    def reason(self) -> str:
        tries = f"{self.attempts} attempts" if self.attempts > 1 else "1 attempt"
        return f"{self.last} at {self.address} ({tries})"


@dataclass
class Stats:
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0


def send(
    client: httpx.Client,
    build: Callable[[], httpx.Request],
    *,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] | None = None,
    stats: Stats | None = None,
    before_attempt: Callable[[], None] | None = None,
    limiter: RateLimiter | None = None,
    idempotent: bool | None = None,
    wait_hint: Callable[[httpx.Response], float | None] | None = None,
) -> httpx.Response:
    """Send a request with the retry policy. Returns the final response (2xx or a final 4xx).

    `build` is called for every attempt so headers (a fresh token) can change between attempts.
    Raises OutcomeUnknownError for a write that is not safe to repeat (a create, or a request
    sent with `idempotent=False`) whose outcome is unknown, and GaveUpError when retries are
    exhausted. A 401 is returned to the caller, which owns credentials. After a 429, the wait
    is Retry-After if the answer has it, else what `wait_hint` reads from the answer (Visma
    writes "Try again in N seconds" in its body), else one rate-limit window. Each attempt
    takes a place in `limiter`'s window right before it leaves (after `build`, which may fetch
    a token elsewhere) and counts from its answer on.
    """
    stats = stats if stats is not None else Stats()
    attempts = 0
    last_request: httpx.Request | None = None

    def attempt() -> httpx.Response:
        nonlocal attempts, last_request
        attempts += 1
        if before_attempt is not None:
            before_attempt()
        request = last_request = build()
        stats.requests += 1
        ticket = limiter.acquire() if limiter is not None else None
        try:
            response = client.send(request)
        except httpx.TransportError as exc:
            outcome = classify_exception(exc)
            decision = decide(request.method, outcome, idempotent=idempotent)
            detail = f"{type(exc).__name__}"
            if decision is Decision.RECONCILE:
                raise OutcomeUnknownError(request.method, request.url.path, detail) from exc
            raise _Retryable(decision, None, detail) from exc
        finally:
            if limiter is not None and ticket is not None:
                limiter.release(ticket)
        decision = decide(
            request.method, Outcome.RESPONSE, response.status_code, idempotent=idempotent
        )
        if decision is Decision.RATE_LIMITED:
            stats.rate_limited += 1
            response.read()
            hint = retry_after_seconds(response)
            if hint is None and wait_hint is not None:
                hint = wait_hint(response)
            raise _Retryable(decision, hint, "HTTP 429")
        if decision is Decision.RETRY:
            response.read()
            raise _Retryable(decision, None, f"HTTP {response.status_code}")
        if decision is Decision.RECONCILE:
            response.read()
            raise OutcomeUnknownError(
                request.method, request.url.path, f"HTTP {response.status_code}"
            )
        return response

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        n = state.attempt_number
        if isinstance(exc, _Retryable) and exc.decision is Decision.RATE_LIMITED:
            hint = exc.wait_hint
            seconds = policy.rate_limit_wait if hint is None else max(hint, 0.0)
        else:
            ceiling = min(policy.backoff_max, policy.backoff_base * (2 ** (n - 1)))
            seconds = random.uniform(ceiling / 2, ceiling)
        return seconds

    def before_sleep(state: tenacity.RetryCallState) -> None:
        # Here, not in `wait`: tenacity asks for the wait before deciding to stop, and a log
        # line promising a retry that never comes misleads whoever reads it.
        exc = state.outcome.exception() if state.outcome else None
        seconds = state.next_action.sleep if state.next_action else 0.0
        stats.retries += 1
        log.info(
            "http.retry",
            attempt=state.attempt_number,
            wait_seconds=round(seconds, 2),
            reason=str(exc),
        )

    class TooLongToWait(tenacity.stop.stop_base):
        def __call__(self, state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return (
                isinstance(exc, _Retryable)
                and exc.wait_hint is not None
                and exc.wait_hint > policy.retry_after_cap
            )

    retrying = tenacity.Retrying(
        stop=(
            tenacity.stop_after_attempt(policy.max_attempts)
            | tenacity.stop_after_delay(policy.max_total_seconds)
            | TooLongToWait()
        ),
        wait=wait,
        before_sleep=before_sleep,
        retry=tenacity.retry_if_exception_type(_Retryable),
        sleep=sleep or pause,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _Retryable as exc:
        assert last_request is not None
        raise GaveUpError(last_request, attempts, str(exc)) from exc
