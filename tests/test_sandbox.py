"""The sandbox ledger: the contract's paging, replacement by id, windows, and the sample data."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.http import _dumps_walk, dumps_exact
from connector.ledger import InvalidEntry, parse_entry
from connector.mappings import Mappings
from connector.sandbox.app import (
    DropConnection,
    Ledger,
    Request,
    Response,
    SandboxApp,
    _in_window,
)
from connector.sandbox.sample import SAMPLE_PATH, generate, load
from connector.sandbox.server import SandboxServer, running, transport

AUTH = {"Authorization": "Bearer sandbox"}


def client_for(app: SandboxApp) -> httpx.Client:
    return httpx.Client(transport=transport(app), base_url="http://sandbox")


def read_feed(
    client: httpx.Client, cursor: str | None = None, **params: str
) -> tuple[list[Any], str]:
    entries: list[Any] = []
    while True:
        query = dict(params, limit="7")
        if cursor:
            query["cursor"] = cursor
        body = client.get("/ledger/v1/entries", params=query, headers=AUTH).json()
        entries.extend(body["entries"])
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return entries, cursor


def test_requires_the_bearer_token(sandbox_app: SandboxApp) -> None:
    client = client_for(sandbox_app)
    assert client.get("/ledger/v1/entries").status_code == 401
    wrong = client.get("/ledger/v1/entries", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "1001"}, {"cursor": "bogus"}])
def test_bad_queries(sandbox_app: SandboxApp, query: dict[str, str]) -> None:
    response = client_for(sandbox_app).get("/ledger/v1/entries", params=query, headers=AUTH)
    assert response.status_code == 400


def served() -> list[object]:
    """The sample as a feed: a later line with the same id replaces the earlier one."""
    return Ledger(load()).entries()


def test_pages_through_the_whole_feed_in_order(sandbox_app: SandboxApp) -> None:
    entries, _ = read_feed(client_for(sandbox_app))
    assert entries == served()
    assert len(entries) < len(load())  # the revised and voided entries appear once


def test_posted_entry_replaces_and_moves_to_the_end(
    sandbox_app: SandboxApp, raw_entry: Callable[..., dict[str, Any]]
) -> None:
    client = client_for(sandbox_app)
    _, cursor = read_feed(client)
    first = load()[0]
    assert isinstance(first, dict)
    revised = dict(first, revision=2, hours="9")
    new = raw_entry(id="NEW-1")
    posted = client.post("/_sandbox/ledger", json=[revised, new])
    assert posted.json()["appended"] == 2
    later, _ = read_feed(client, cursor)
    assert later == [revised, new]
    everything, _ = read_feed(client)
    assert everything[-2:] == [revised, new]
    assert sum(1 for e in everything if e["id"] == first["id"]) == 1


def test_window_returns_one_customer_and_date_range(sandbox_app: SandboxApp) -> None:
    entries, _ = read_feed(
        client_for(sandbox_app),
        customer_number="1004",
        performed_from="2026-09-01",
        performed_to="2026-09-30",
    )
    assert entries
    assert {e["customer_number"] for e in entries} == {"1004"}
    assert all("2026-09-01" <= e["performed_on"] <= "2026-09-30" for e in entries)


def test_serves_malformed_data_as_given(sandbox_app: SandboxApp) -> None:
    client = client_for(sandbox_app)
    _, cursor = read_feed(client)
    payload = '[{"id":"X","hours":1.10,"weird":true},"not an object",{"no_id":1}]'
    client.post("/_sandbox/ledger", content=payload)
    later, _ = read_feed(client, cursor)
    assert later == [{"id": "X", "hours": 1.1, "weird": True}, "not an object", {"no_id": 1}]
    raw = client.get("/ledger/v1/entries", params={"cursor": cursor}, headers=AUTH).text
    assert '"hours":1.10' in raw  # numbers pass through exactly, not via float


def test_state_counts_requests(sandbox_app: SandboxApp) -> None:
    client = client_for(sandbox_app)
    client.get("/ledger/v1/entries", headers=AUTH)
    state = client.get("/_sandbox/state").json()
    assert state["ledger"]["entries"] == len(served())
    assert state["requests"]["GET /ledger/v1/entries"] == 1


def test_real_loopback_server(sandbox_server: SandboxServer) -> None:
    assert sandbox_server.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=sandbox_server.url) as client:
        entries, _ = read_feed(client)
    assert len(entries) == len(served())


def test_dropped_connection_looks_lost_to_the_client() -> None:
    app = SandboxApp()
    effects: list[str] = []

    def drop(request: Request) -> Response:
        effects.append(request.path)
        raise DropConnection

    app.add_route("POST", "/drop", drop)
    with (
        running(app) as server,
        httpx.Client(base_url=server.url) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.post("/drop", json={})
    with pytest.raises(httpx.RemoteProtocolError):
        client_for(app).post("/drop", json={})
    assert effects == ["/drop", "/drop"]  # the effect happened both times


# --- the sample ledger -----------------------------------------------------------------------


def test_shipped_sample_equals_the_generator() -> None:
    lines = SAMPLE_PATH.read_text(encoding="utf-8").splitlines()
    assert lines == [json.dumps(e, ensure_ascii=False) for e in generate()]


def test_sample_covers_the_cases_a_demo_needs(mappings: Mappings) -> None:
    raw = load()
    entries = []
    malformed = []
    for item in raw:
        try:
            entries.append(parse_entry(item))
        except InvalidEntry as exc:
            malformed.append(exc)
    assert len(malformed) == 1
    customers = {e.customer_number for e in entries}
    assert 38 <= len(customers) <= 42
    assert {e.period for e in entries} == {"2026-08", "2026-09", "2026-10"}
    assert set(mappings.categories) <= {e.category for e in entries}
    assert any(e.category not in mappings.categories for e in entries)  # unknown category
    assert any(e.kind == "topup" for e in entries)
    assert any(e.prepaid_hours > 0 for e in entries)
    assert any(e.prepaid_hours == e.hours for e in entries)  # fully prepaid
    ids = Counter(e.id for e in entries)
    revised = [e for e in entries if e.revision > 1]
    assert {e.status for e in revised} == {"active", "void"}
    assert all(ids[e.id] == 2 for e in revised)  # the original is in the feed too
    assert all(isinstance(e.hours, Decimal) for e in entries)


def test_faults_and_reset_over_http(sandbox_app: SandboxApp) -> None:
    client = client_for(sandbox_app)
    answer = client.post("/_sandbox/faults", json={"latency_ms": 5, "lost_create_rate": 0.5})
    assert answer.json()["fortnox"]["latency_ms"] == 5
    assert answer.json()["fortnox"]["lost_create_rate"] == 0.5
    assert client.post("/_sandbox/faults", json=[1]).status_code == 400
    state = client.get("/_sandbox/state").json()
    assert state["fortnox"]["invoices"] == [] and state["requests"]
    reset = client.post("/_sandbox/reset").json()
    assert reset["requests"] == {}  # the reset clears its own count too


def test_fortnox_requires_a_token_and_answers_error_information(sandbox_app: SandboxApp) -> None:
    client = client_for(sandbox_app)
    denied = client.get("/fortnox/3/invoices")
    assert denied.status_code == 401
    assert denied.content == b'{"message":"unauthorized"}'  # authentication/expired_token.yml
    grant = client.post(
        "/fortnox/oauth-v1/token",
        content="grant_type=client_credentials",
        headers={"Authorization": "Basic c2FuZGJveDpzYW5kYm94", "TenantId": "1234567",
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    token = grant.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    customers = client.get("/fortnox/3/customers", params={"limit": 10, "page": 4}, headers=headers)
    assert customers.json()["MetaInformation"] == {
        "@TotalResources": 39, "@TotalPages": 4, "@CurrentPage": 4,
    }  # fmt: skip
    assert "1042" not in {c["CustomerNumber"] for c in customers.json()["Customers"]}
    bad = client.post("/fortnox/3/invoices", headers=headers,
                      json={"Invoice": {"CustomerNumber": "1004", "Colour": "red"}})  # fmt: skip
    assert bad.json()["ErrorInformation"]["code"] == 2001399


def _naive_page(
    feed: list[tuple[int, object]], after: int, limit: int, keep: Callable[[object], bool]
) -> tuple[list[object], int, bool]:
    """The contract read literally: filter the whole feed after `after`, take `limit`."""
    kept = [(s, raw) for s, raw in feed if s > after and keep(raw)]
    chosen = kept[:limit]
    return [raw for _, raw in chosen], chosen[-1][0] if chosen else after, len(kept) > limit


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from("ABCDEFG"), st.sampled_from(["1003", "1004", "1005"])),
        max_size=60,
    ),
    after=st.integers(0, 70),
    limit=st.integers(1, 8),
    customer=st.sampled_from([None, "1003", "1004"]),
)
def test_pages_agree_with_filtering_the_whole_feed(
    ops: list[tuple[str, str]], after: int, limit: int, customer: str | None
) -> None:
    """Bisected pages (with gaps left by replaced entries, and per-customer windows) are the
    pages of the plain definition, whatever the order of appends and replacements."""
    ledger = Ledger()
    feed: list[tuple[int, object]] = []
    for seq, (entry_id, number) in enumerate(ops, start=1):
        raw = {"id": entry_id, "customer_number": number, "performed_on": "2026-09-01"}
        ledger.append([raw])
        feed = [(s, r) for s, r in feed if isinstance(r, dict) and r["id"] != entry_id]
        feed.append((seq, raw))
    ledger._compact()  # gaps dropped or not, the answer is the same
    keep: Callable[[object], bool] = lambda raw: True  # noqa: E731
    if customer is not None:
        keep = _in_window(customer, "2026-01-01", "2026-12-31")
    expected = _naive_page(feed, after, limit, keep)
    assert ledger.page(after, limit, None if customer is None else keep, customer) == expected
    assert ledger.entries() == [raw for _, raw in feed]


def test_a_page_costs_the_page_not_the_feed() -> None:
    """The last page of a long feed is read without touching the rest of it (the fake must not
    be what the scale benchmark measures)."""
    ledger = Ledger({"id": f"E{n}", "customer_number": "1003"} for n in range(50_000))
    touched = 0

    def keep(raw: object) -> bool:
        nonlocal touched
        touched += 1
        return True

    entries, last, more = ledger.page(49_990, 100, keep)
    assert (len(entries), last, more, touched) == (10, 50_000, False, 10)


def test_decimals_pass_verbatim() -> None:
    """Amounts go out exactly as they came: trailing zeros kept, sums exact, never via float;
    a string that looks like the encoder's own marker is still written as a string."""
    total = Decimal("0.1") + Decimal("0.2")
    row = {"q": Decimal("2.250"), "text": "Timbank 10 timmar"}
    value: dict[str, object] = {
        "price": Decimal("1.50"),
        "sum": total,
        "tiny": Decimal("1E-30"),
        "big": Decimal("12345678901234567890.123456789"),
        "rows": [row, (Decimal("-0.00"),)],
        "tricky": "\x00connector-exact-decimal\x00",
        "plain": [1, 1.5, True, None, 'ä/"\\'],
    }
    text = dumps_exact(value)
    assert '"price":1.50' in text and '"sum":0.3,' in text and '"q":2.250' in text
    assert '"tiny":1E-30' in text and '"big":12345678901234567890.123456789' in text
    assert "[-0.00]" in text and '"tricky":"\\u0000connector-exact-decimal\\u0000"' in text
    decoded = json.loads(text, parse_float=Decimal)
    assert decoded == {**value, "rows": [row, [Decimal("-0.00")]]}
    assert str(decoded["price"]) == "1.50" and str(decoded["sum"]) == "0.3"
    assert dumps_exact(["x", Decimal("1.0")]) == '["x",1.0]'
    assert dumps_exact({"a": [1, "b"]}) == json.dumps({"a": [1, "b"]}, separators=(",", ":"))
    with pytest.raises(ValueError, match="finite"):
        dumps_exact({"x": Decimal("NaN")})


@settings(max_examples=80, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=8)
        | st.decimals(allow_nan=False, allow_infinity=False),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_fast_encoding_equals_the_plain_walk(value: Any) -> None:
    assert dumps_exact(value) == _dumps_walk(value)
