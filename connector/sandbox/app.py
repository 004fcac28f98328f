"""The sandbox: a stateful fake of the ledger (and, later, the accounting systems).

The app is independent of any transport. `server.py` serves it over real HTTP on loopback (for
the CLI, the demo and crash tests) and as an httpx transport in-process (for fast tests). It
serves ledger entries exactly as given, without validating them, so the connector can be tested
against malformed data.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from connector.http import dumps_exact

LEDGER_TOKEN = "sandbox"  # noqa: S105 - the public test token of a local fake
LEDGER_PREFIX = "/ledger/v1"
_CURSOR_PREFIX = "v1."


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        query_string: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> Request:
        return cls(
            method=method.upper(),
            path=path,
            query=parse_qs(query_string, keep_blank_values=True),
            headers={k.lower(): v for k, v in headers},
            body=body,
        )

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body or b"null", parse_float=Decimal)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class DropConnection(Exception):
    """Close the connection without answering (the request may already have had its effect)."""


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = dumps_exact(payload).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


Handler = Callable[[Request], Response]


class Ledger:
    """The ledger's change feed: entries in the order they were created or last changed.

    A page costs time proportional to the page, not to the feed (the benchmarks must measure
    the connector, not the fake): positions are kept in one ascending list, found by bisection.
    A replaced entry leaves its old position behind as a gap, skipped when read and dropped
    when gaps outnumber live entries. A window (one customer) reads that customer's positions.
    """

    def __init__(self, entries: Iterable[object] = ()) -> None:
        self._seq = 0
        self._feed: dict[int, object] = {}
        self._by_id: dict[str, int] = {}
        # Every position ever given, ascending (appends only grow it), and per customer.
        self._order: list[int] = []
        self._by_customer: dict[object, list[int]] = {}
        self.append(entries)

    def append(self, entries: Iterable[object]) -> int:
        """Append entries; one whose id exists replaces it and moves to the end of the feed."""
        count = 0
        for raw in entries:
            self._seq += 1
            entry_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(entry_id, str) and entry_id in self._by_id:
                del self._feed[self._by_id[entry_id]]
            if isinstance(entry_id, str):
                self._by_id[entry_id] = self._seq
            self._feed[self._seq] = raw
            self._order.append(self._seq)
            customer = raw.get("customer_number") if isinstance(raw, dict) else None
            if isinstance(customer, str):
                self._by_customer.setdefault(customer, []).append(self._seq)
            count += 1
        if len(self._order) > 2 * len(self._feed) + 1024:
            self._compact()
        return count

    def _compact(self) -> None:
        # A position's entry never changes, so a live position is still in the right lists.
        self._order = [s for s in self._order if s in self._feed]
        for customer, seqs in self._by_customer.items():
            self._by_customer[customer] = [s for s in seqs if s in self._feed]

    def __len__(self) -> int:
        return len(self._feed)

    def entries(self) -> list[object]:
        return [self._feed[s] for s in self._order if s in self._feed]

    def page(
        self,
        after: int,
        limit: int,
        keep: Callable[[object], bool] | None = None,
        customer: str | None = None,
    ) -> tuple[list[object], int, bool]:
        """Up to `limit` entries after position `after` (those `keep` accepts), the position
        of the last one, and whether more follow. `customer` narrows the read to the positions
        of that customer's entries (`keep` still decides)."""
        order = self._order if customer is None else self._by_customer.get(customer, [])
        chosen: list[int] = []
        more = False
        for index in range(bisect.bisect_right(order, after), len(order)):
            seq = order[index]
            raw = self._feed.get(seq, _GONE)
            if raw is _GONE or (keep is not None and not keep(raw)):
                continue
            if len(chosen) == limit:
                more = True
                break
            chosen.append(seq)
        last = chosen[-1] if chosen else after
        return [self._feed[s] for s in chosen], last, more


_GONE = object()


def _in_window(customer: str, start: str, end: str) -> Callable[[object], bool]:
    def keep(raw: object) -> bool:
        if not isinstance(raw, dict) or raw.get("customer_number") != customer:
            return False
        performed = raw.get("performed_on")
        return isinstance(performed, str) and start <= performed <= end

    return keep


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class SandboxApp:
    def __init__(self, ledger_entries: Iterable[object] = ()) -> None:
        self.lock = threading.RLock()
        self.ledger = Ledger(ledger_entries)
        self.requests: Counter[str] = Counter()
        # Fakes of the accounting systems register here (name -> object with state/reset/faults).
        self.extensions: dict[str, Any] = {}
        self._routes: list[tuple[str, str, Handler]] = [
            ("GET", f"{LEDGER_PREFIX}/entries", self._ledger_entries),
            ("GET", "/_sandbox/state", self._state),
            ("POST", "/_sandbox/ledger", self._post_ledger),
            ("POST", "/_sandbox/reset", self._reset),
            ("POST", "/_sandbox/faults", self._faults),
        ]

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self._routes.append((method, path, handler))

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests[f"{request.method} {request.path}"] += 1
            for method, path, handler in self._routes:
                if path.endswith("*"):
                    matched = request.path.startswith(path[:-1])
                else:
                    matched = request.path == path
                if matched and method == request.method:
                    return handler(request)
            return _error(404, f"no route for {request.method} {request.path}")

    # --- ledger ---------------------------------------------------------------------------

    def _ledger_entries(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {LEDGER_TOKEN}":
            return _error(401, "missing or wrong bearer token")
        try:
            limit = int(request.arg("limit") or "100")
        except ValueError:
            return _error(400, "limit must be an integer")
        if not 1 <= limit <= 1000:
            return _error(400, "limit must be between 1 and 1000")
        cursor = request.arg("cursor")
        after = 0
        if cursor is not None:
            if not cursor.startswith(_CURSOR_PREFIX) or not cursor[len(_CURSOR_PREFIX) :].isdigit():
                return _error(400, "unknown cursor")
            after = int(cursor[len(_CURSOR_PREFIX) :])
        window = [request.arg(n) for n in ("customer_number", "performed_from", "performed_to")]
        if any(window):
            if not all(window):
                return _error(400, "customer_number, performed_from and performed_to go together")
            customer, start, end = (w or "" for w in window)
            keep = _in_window(customer, start, end)
            entries, last, more = self.ledger.page(after, limit, keep, customer)
        else:
            entries, last, more = self.ledger.page(after, limit)
        return json_response(
            200, {"entries": entries, "next_cursor": f"{_CURSOR_PREFIX}{last}", "has_more": more}
        )

    def _post_ledger(self, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            return _error(400, "body must be a JSON list of entries")
        if not isinstance(payload, list):
            return _error(400, "body must be a JSON list of entries")
        count = self.ledger.append(payload)
        return json_response(200, {"appended": count, "feed_length": len(self.ledger)})

    # --- introspection --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "ledger": {"entries": len(self.ledger)},
            **{name: ext.state() for name, ext in self.extensions.items()},
            "requests": dict(sorted(self.requests.items())),
        }

    def _reset(self, request: Request) -> Response:
        """Clear invoices and request counts (the ledger stays)."""
        self.requests.clear()
        for ext in self.extensions.values():
            ext.reset()
        return json_response(200, self.state())

    def _faults(self, request: Request) -> Response:
        """Set fault switches at run time, e.g. {"lost_create_rate": 0.5, "latency_ms": 200}.
        {"expire_tokens": true} makes every issued access token invalid at once."""
        try:
            values = request.json()
        except ValueError:
            return _error(400, "body must be a JSON object")
        if not isinstance(values, dict):
            return _error(400, "body must be a JSON object")
        for ext in self.extensions.values():
            if values.get("expire_tokens"):
                ext.expire_tokens()
            try:
                ext.faults.update({k: v for k, v in values.items() if k != "expire_tokens"})
            except (TypeError, ValueError) as exc:
                return _error(400, f"bad fault value: {exc}")
        return json_response(200, {n: e.faults.public() for n, e in self.extensions.items()})

    def _state(self, request: Request) -> Response:
        return json_response(200, self.state())


class FakeDriver:
    """One target's fake seen the same way whatever the target: what the test oracle reads
    (invoices in the neutral shape, the article register) and what a person does there (book,
    send, withdraw, edit a text). Each sandbox module subclasses it as `Driver`."""

    name: str
    api_prefix: str

    def __init__(self, app: SandboxApp) -> None:
        self.app = app

    def invoices(self) -> list[dict[str, Any]]:
        """Every invoice in the neutral shape (number, remote_id, key, customer_number,
        currency, state open/closed/gone, vat_included, rows)."""
        raise NotImplementedError

    def register(self) -> dict[str, Decimal | None]:
        """Active articles and the price the connector reads for each (None: unpriced)."""
        raise NotImplementedError

    def customers(self) -> set[str]:
        """The customers the connector can invoice there."""
        raise NotImplementedError

    def vat(self, article: str) -> Decimal:
        raise NotImplementedError

    def add_customer(self, number: str, name: str) -> None:
        raise NotImplementedError

    def close(self, remote_id: str) -> None:
        """A person books it (Fortnox) or converts it to an invoice (Visma)."""
        raise NotImplementedError

    def send(self, remote_id: str) -> None:
        """A person sends it to the customer (Visma: only an invoice is sent, so converts)."""
        raise NotImplementedError

    def withdraw(self, remote_id: str) -> None:
        """A person cancels (Fortnox) or deletes (Visma) it."""
        raise NotImplementedError

    def edit_text(self, remote_id: str, index: int, text: str) -> None:
        raise NotImplementedError

    def delete_row(self, remote_id: str, index: int) -> None:
        """A person deletes row `index` (from 0) of an open draft and saves it."""
        raise NotImplementedError

    def edit_quantity(self, remote_id: str, index: int, quantity: Decimal) -> None:
        """A person changes the quantity of row `index` (from 0) of a draft and saves."""
        raise NotImplementedError

    def set_sales_price(self, article: str, price: Decimal) -> None:
        """A person changes an article's sales price in the register."""
        raise NotImplementedError

    def modified_after_closing(self) -> list[Any]:
        """Invoices changed after the customer had them: must stay empty."""
        raise NotImplementedError

    def set_clock(self, clock: Callable[[], float]) -> None:
        raise NotImplementedError

    def faults(self, **values: Any) -> None:
        raise NotImplementedError

    def lock_through(self, day: date | None) -> bool:
        """Lock the books through `day`; False when the target's fake has no such lock."""
        return False

    def open_ids(self) -> list[str]:
        return sorted(i["remote_id"] for i in self.invoices() if i["state"] == "open")
