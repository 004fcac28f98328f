"""Ledger entry validation, and the feed client's wire behaviour (respx)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connector.errors import ConfigError, LedgerUnavailableError
from connector.http import RetryPolicy
from connector.ledger import InvalidEntry, Kind, LedgerClient, Status, parse_entry

BASE = "https://ledger.test/api"
TOKEN = "ledger-secret-token-123"


def test_parse_valid_entry(raw_entry: Callable[..., dict[str, Any]]) -> None:
    entry = parse_entry(raw_entry())
    assert entry.id == "E1" and entry.revision == 1
    assert entry.kind is Kind.DEBIT and entry.status is Status.ACTIVE
    assert entry.hours == Decimal("2.5") and isinstance(entry.hours, Decimal)
    assert entry.unit_price == Decimal("1150.00")
    assert entry.performed_on == date(2026, 9, 14)
    assert entry.period == "2026-09"


def test_json_numbers_are_accepted_exactly(raw_entry: Callable[..., dict[str, Any]]) -> None:
    entry = parse_entry(raw_entry(hours=Decimal("1.1"), unit_price=1000, reference=None))
    assert entry.hours == Decimal("1.1") and entry.unit_price == Decimal(1000)
    assert entry.reference is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"revision": 0}, "revision: must be an integer >= 1"),
        ({"revision": "2"}, "revision: must be an integer >= 1"),
        ({"revision": True}, "revision: must be an integer >= 1"),
        ({"kind": "credit"}, "kind: must be 'debit' or 'topup'"),
        ({"status": "deleted"}, "status: must be 'active' or 'void'"),
        ({"customer_number": ""}, "customer_number"),
        ({"customer_number": 1001}, "customer_number: must be a string"),
        ({"category": ""}, "category: must be a non-empty string"),
        ({"hours": "0"}, "hours: must be greater than 0"),
        ({"hours": "-1"}, "hours: must be greater than 0"),
        ({"hours": "två"}, "hours: must be a decimal string"),
        ({"hours": "1e3"}, "hours: must be a decimal string"),
        ({"hours": "NaN"}, "hours: must be a decimal string"),
        ({"hours": "1.23456"}, "hours: more than 4 decimals"),
        ({"hours": None}, "hours: must be a decimal string, got null"),
        ({"prepaid_hours": "3"}, "prepaid_hours: must be between 0 and hours"),
        ({"prepaid_hours": "-0.5"}, "prepaid_hours: must be between 0 and hours"),
        ({"kind": "topup", "prepaid_hours": "1"}, "prepaid_hours: must be 0 for a top-up"),
        ({"unit_price": "-5"}, "unit_price: must not be negative"),
        ({"unit_price": "cheap"}, "unit_price: must be a decimal string"),
        ({"currency": "kr"}, "currency: must be a 3-letter ISO 4217 code"),
        ({"performed_on": "2026-13-01"}, "performed_on: must be a date YYYY-MM-DD"),
        ({"performed_on": "2026-09-14T10:00:00"}, "performed_on: must be a date"),
        ({"description": "x" * 1001}, "description: longer than 1000"),
        ({"description": None}, "description: must be a string"),
        ({"reference": 42}, "reference: must be a string"),
        ({"changed_at": "2026-09-14 16:00"}, "changed_at: must be an RFC 3339 timestamp"),
        ({"changed_at": "2026-09-14T16:00:00"}, "changed_at: must be an RFC 3339 timestamp"),
    ],
)
def test_invalid_entries_name_the_field(
    raw_entry: Callable[..., dict[str, Any]], overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEntry) as info:
        parse_entry(raw_entry(**overrides))
    assert reason in info.value.reason
    assert info.value.entry_id == "E1"


def test_missing_fields_are_listed(raw_entry: Callable[..., dict[str, Any]]) -> None:
    raw = raw_entry()
    del raw["hours"], raw["currency"]
    with pytest.raises(InvalidEntry, match="missing field\\(s\\): hours, currency"):
        parse_entry(raw)


@pytest.mark.parametrize("raw", [None, "E1", [], {"id": ""}, {"id": 7}, {"id": "x" * 65}, {}])
def test_entry_without_usable_id(raw: object) -> None:
    with pytest.raises(InvalidEntry) as info:
        parse_entry(raw)
    assert info.value.entry_id is None


def page(entries: list[Any], cursor: str, more: bool) -> httpx.Response:
    return httpx.Response(200, json={"entries": entries, "next_cursor": cursor, "has_more": more})


def client(**kwargs: Any) -> LedgerClient:
    return LedgerClient(
        BASE,
        SecretStr(TOKEN),
        page_size=2,
        policy=RetryPolicy(max_attempts=3),
        **kwargs,
    )


@respx.mock(assert_all_called=True)
def test_feed_pages_with_cursor_and_bearer_token(
    respx_mock: respx.MockRouter, raw_entry: Callable[..., dict[str, Any]]
) -> None:
    route = respx_mock.get(f"{BASE}/entries").mock(
        side_effect=[
            page([raw_entry(id="A"), raw_entry(id="B")], "c2", True),
            page([raw_entry(id="C")], "c3", False),
        ]
    )
    pages = list(client().feed(None))
    assert [i.entry_id for p in pages for i in p.items] == ["A", "B", "C"]
    assert pages[-1].next_cursor == "c3"
    first, second = (call.request for call in route.calls)
    assert dict(first.url.params) == {"limit": "2"}
    assert dict(second.url.params) == {"limit": "2", "cursor": "c2"}
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"


@respx.mock
def test_feed_continues_from_stored_cursor(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/entries").mock(return_value=page([], "c9", False))
    assert [p.items for p in client().feed("c9")] == [[]]
    assert route.calls.last.request.url.params["cursor"] == "c9"


@respx.mock
def test_window_query(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/entries").mock(return_value=page([], "w1", False))
    list(client().window("1042", date(2026, 9, 1), date(2026, 9, 30)))
    assert dict(route.calls.last.request.url.params) == {
        "customer_number": "1042",
        "performed_from": "2026-09-01",
        "performed_to": "2026-09-30",
        "limit": "2",
    }


@respx.mock
def test_transient_failures_are_retried(
    respx_mock: respx.MockRouter, sleeps: list[float], raw_entry: Callable[..., dict[str, Any]]
) -> None:
    respx_mock.get(f"{BASE}/entries").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(503),
            page([raw_entry()], "c1", False),
        ]
    )
    pages = list(client().feed(None))
    assert pages[0].items[0].entry_id == "E1"
    assert len(sleeps) == 2


@respx.mock
def test_gives_up_as_ledger_unavailable(respx_mock: respx.MockRouter, sleeps: list[float]) -> None:
    respx_mock.get(f"{BASE}/entries").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(LedgerUnavailableError, match="ledger unreachable") as info:
        list(client().feed(None))
    assert info.value.exit_code == 4
    assert len(sleeps) == 2


@respx.mock
def test_malformed_items_do_not_stop_the_page(
    respx_mock: respx.MockRouter, raw_entry: Callable[..., dict[str, Any]]
) -> None:
    respx_mock.get(f"{BASE}/entries").mock(
        return_value=page(
            [raw_entry(id="A"), {"hours": "1"}, "junk", raw_entry(id="B", hours="x")], "c", False
        )
    )
    (only,) = list(client().feed(None))
    assert [i.entry_id for i in only.items] == ["A", None, None, "B"]
    assert only.items[1].position == "feed start, item 2"
    with pytest.raises(InvalidEntry, match="hours"):
        parse_entry(only.items[3].raw)


@respx.mock
def test_numbers_in_the_feed_are_decoded_as_decimal(respx_mock: respx.MockRouter) -> None:
    body = '{"entries":[{"id":"A","hours":0.1}],"next_cursor":"c","has_more":false}'
    respx_mock.get(f"{BASE}/entries").mock(return_value=httpx.Response(200, text=body))
    (only,) = list(client().feed(None))
    assert isinstance(only.items[0].raw, dict)
    assert only.items[0].raw["hours"] == Decimal("0.1")


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (httpx.Response(401), ConfigError, "CONNECTOR_LEDGER__TOKEN"),
        (httpx.Response(403), ConfigError, "CONNECTOR_LEDGER__TOKEN"),
        (httpx.Response(404), ConfigError, "CONNECTOR_LEDGER__URL"),
        (httpx.Response(400, text="bad limit"), LedgerUnavailableError, "refused"),
        (httpx.Response(200, text="<html>"), LedgerUnavailableError, "not JSON"),
        (httpx.Response(200, json={"items": []}), LedgerUnavailableError, "without entries"),
    ],
)
@respx.mock
def test_bad_answers(
    respx_mock: respx.MockRouter, response: httpx.Response, error: type[Exception], message: str
) -> None:
    respx_mock.get(f"{BASE}/entries").mock(return_value=response)
    with pytest.raises(error, match=message):
        list(client().feed(None))


@respx.mock
def test_feed_that_does_not_advance_is_an_error(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/entries").mock(return_value=page([], "same", True))
    with pytest.raises(LedgerUnavailableError, match="does not advance"):
        list(client().feed("same"))


@respx.mock
def test_token_never_in_error_messages(respx_mock: respx.MockRouter, sleeps: list[float]) -> None:
    respx_mock.get(f"{BASE}/entries").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(LedgerUnavailableError) as info:
        list(client().feed(None))
    assert TOKEN not in str(info.value)
    assert TOKEN not in json.dumps(repr(info.value))
