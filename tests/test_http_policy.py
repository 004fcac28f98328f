"""The retry decision as a table, and the retry loop around it (sleep patched out)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
import structlog

from connector.errors import OutcomeUnknownError
from connector.http import (
    Decision,
    GaveUpError,
    Outcome,
    RetryPolicy,
    Stats,
    classify_exception,
    decide,
    retry_after_seconds,
    send,
)

R = Outcome.RESPONSE


@pytest.mark.parametrize(
    ("method", "outcome", "status", "expected"),
    [
        # Never sent: safe to repeat for every method.
        ("GET", Outcome.NOT_SENT, None, Decision.RETRY),
        ("PUT", Outcome.NOT_SENT, None, Decision.RETRY),
        ("POST", Outcome.NOT_SENT, None, Decision.RETRY),
        # Sent, answer lost: reads and full-replace updates repeat, creates reconcile.
        ("GET", Outcome.LOST, None, Decision.RETRY),
        ("PUT", Outcome.LOST, None, Decision.RETRY),
        ("POST", Outcome.LOST, None, Decision.RECONCILE),
        # Answers.
        ("GET", R, 200, Decision.SUCCESS),
        ("POST", R, 201, Decision.SUCCESS),
        ("PUT", R, 204, Decision.SUCCESS),
        ("GET", R, 429, Decision.RATE_LIMITED),
        ("POST", R, 429, Decision.RATE_LIMITED),
        ("PUT", R, 429, Decision.RATE_LIMITED),
        ("GET", R, 401, Decision.REAUTH),
        ("POST", R, 401, Decision.REAUTH),
        ("GET", R, 500, Decision.RETRY),
        ("GET", R, 503, Decision.RETRY),
        ("PUT", R, 502, Decision.RETRY),
        ("POST", R, 500, Decision.RECONCILE),
        ("POST", R, 503, Decision.RECONCILE),
        ("GET", R, 400, Decision.FAIL),
        ("POST", R, 400, Decision.FAIL),
        ("PUT", R, 403, Decision.FAIL),
        ("GET", R, 404, Decision.FAIL),
        ("post", R, 409, Decision.FAIL),
        ("GET", R, 301, Decision.FAIL),
    ],
)
def test_decide(method: str, outcome: Outcome, status: int | None, expected: Decision) -> None:
    assert decide(method, outcome, status) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), Outcome.NOT_SENT),
        (httpx.ConnectTimeout("slow"), Outcome.NOT_SENT),
        (httpx.PoolTimeout("busy"), Outcome.NOT_SENT),
        (httpx.ReadTimeout("slow"), Outcome.LOST),
        (httpx.WriteTimeout("slow"), Outcome.LOST),
        (httpx.RemoteProtocolError("dropped"), Outcome.LOST),
        (httpx.ReadError("reset"), Outcome.LOST),
    ],
)
def test_classify_exception(exc: httpx.TransportError, expected: Outcome) -> None:
    assert classify_exception(exc) is expected


def test_retry_after_parsing() -> None:
    def resp(value: str | None) -> httpx.Response:
        return httpx.Response(429, headers={} if value is None else {"Retry-After": value})

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(resp("7")) == 7.0
    assert retry_after_seconds(resp(None)) is None
    assert retry_after_seconds(resp("soon")) is None
    assert retry_after_seconds(resp("Thu, 26 Nov 2026 12:00:30 GMT"), now=now) == 30.0
    assert retry_after_seconds(resp("Thu, 26 Nov 2026 11:00:00 GMT"), now=now) == 0.0


Script = list[httpx.Response | Exception]


def scripted(script: Script) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def builder(client: httpx.Client, method: str) -> Callable[[], httpx.Request]:
    return lambda: client.build_request(method, "https://remote.test/x")


POLICY = RetryPolicy(max_attempts=4, backoff_base=1.0, backoff_max=8.0, rate_limit_wait=5.0)


def test_get_retries_5xx_then_succeeds(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.Response(503), httpx.Response(502), httpx.Response(200)])
    stats = Stats()
    response = send(client, builder(client, "GET"), policy=POLICY, stats=stats)
    assert response.status_code == 200
    assert len(seen) == 3
    assert stats.requests == 3 and stats.retries == 2
    # Exponential backoff with jitter: attempt n waits within [base*2^(n-1)/2, base*2^(n-1)].
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_429_honours_retry_after_else_waits_a_window(sleeps: list[float]) -> None:
    client, _ = scripted(
        [
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(429),
            httpx.Response(200),
        ]
    )
    stats = Stats()
    send(client, builder(client, "POST"), policy=POLICY, stats=stats)
    assert sleeps == [3.0, 5.0]
    assert stats.rate_limited == 2


def test_post_never_repeated_after_read_timeout(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.ReadTimeout("slow"), httpx.Response(201)])
    with pytest.raises(OutcomeUnknownError):
        send(client, builder(client, "POST"), policy=POLICY)
    assert len(seen) == 1 and sleeps == []


def test_post_never_repeated_after_5xx(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.Response(500), httpx.Response(201)])
    with pytest.raises(OutcomeUnknownError):
        send(client, builder(client, "POST"), policy=POLICY)
    assert len(seen) == 1


def test_post_repeated_when_never_sent(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.ConnectError("refused"), httpx.Response(201)])
    assert send(client, builder(client, "POST"), policy=POLICY).status_code == 201
    assert len(seen) == 2 and len(sleeps) == 1


def test_gives_up_after_max_attempts(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.ConnectError("refused")] * 10)
    with pytest.raises(GaveUpError) as info:
        send(client, builder(client, "GET"), policy=POLICY)
    assert len(seen) == POLICY.max_attempts
    assert info.value.attempts == POLICY.max_attempts
    assert "ConnectError" in info.value.last


def test_only_waits_that_happen_are_logged_as_retries(sleeps: list[float]) -> None:
    """tenacity computes the next wait before deciding to stop: the last failure must not be
    logged as a retry that never comes."""
    client, _ = scripted([httpx.ConnectError("refused")] * 10)
    stats = Stats()
    with structlog.testing.capture_logs() as logged, pytest.raises(GaveUpError):
        send(client, builder(client, "GET"), policy=POLICY, stats=stats)
    retries = [e for e in logged if e["event"] == "http.retry"]
    assert len(retries) == len(sleeps) == stats.retries == POLICY.max_attempts - 1
    assert [e["wait_seconds"] for e in retries] == [round(s, 2) for s in sleeps]


def test_final_4xx_and_401_are_returned_not_retried(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.Response(400), httpx.Response(401)])
    assert send(client, builder(client, "PUT"), policy=POLICY).status_code == 400
    assert send(client, builder(client, "PUT"), policy=POLICY).status_code == 401
    assert len(seen) == 2 and sleeps == []


def test_retry_after_beyond_cap_gives_up_without_waiting(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.Response(429, headers={"Retry-After": "3600"})])
    with pytest.raises(GaveUpError):
        send(client, builder(client, "GET"), policy=POLICY)
    assert len(seen) == 1 and sleeps == []
