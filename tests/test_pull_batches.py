"""A pull commits its pages in batches (by count or by time), each page with its cursor: a
failure anywhere leaves the stored cursor exactly at the end of what is stored, and the next
pull reads on from there without losing or repeating an entry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connector import state
from connector.errors import LedgerUnavailableError
from connector.ledger import LedgerClient, Page
from connector.sandbox.app import LEDGER_TOKEN, SandboxApp
from connector.sandbox.server import transport
from connector.state import StateStore
from connector.sync import pull

ENTRIES = 95  # 19 pages of 5: batches of 4 pages are 4 + 4 + 4 + 4 + 3


def feed_app() -> SandboxApp:
    return SandboxApp(
        [{"id": f"E{n:03d}", "revision": 1, "hours": "1.50"} for n in range(1, ENTRIES + 1)]
    )


def ledger_for(app: SandboxApp) -> LedgerClient:
    client = httpx.Client(transport=transport(app), base_url="http://sandbox")
    return LedgerClient("http://sandbox/ledger/v1", SecretStr(LEDGER_TOKEN), client=client,
                        page_size=5)  # fmt: skip


def stored_ids(store: StateStore) -> list[str]:
    return [entry_id for entry_id, _ in store.raw_entries()]


def assert_cursor_matches_entries(store: StateStore) -> int:
    """The stored cursor (the sandbox's "v1.N": after feed position N) covers exactly the
    stored entries: none beyond it, none missing before it. Returns N."""
    cursor = store.cursor()
    position = 0 if cursor is None else int(cursor.removeprefix("v1."))
    assert stored_ids(store) == [f"E{n:03d}" for n in range(1, position + 1)]
    return position


def count_batches(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of pages in each committed batch."""
    sizes: list[int] = []
    real = store.store_pages

    def counting(pages: Any) -> None:
        real(pages)
        sizes.append(len(pages))

    monkeypatch.setattr(store, "store_pages", counting)
    return sizes


def test_pages_commit_in_batches_of_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    sizes = count_batches(store, monkeypatch)
    summary = pull(store, ledger_for(feed_app()), batch_pages=4, clock=lambda: 0.0)
    assert (summary.pages, summary.items) == (19, ENTRIES)
    assert sizes == [4, 4, 4, 4, 3]
    assert assert_cursor_matches_entries(store) == ENTRIES
    assert pull(store, ledger_for(feed_app())).items == 0  # nothing read twice


def test_pages_commit_after_a_time_whatever_their_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    sizes = count_batches(store, monkeypatch)
    ticks = iter(float(n) * 0.4 for n in range(1000))  # 0.4 s between two looks at the clock
    pull(store, ledger_for(feed_app()), batch_pages=100, batch_seconds=1.0,
         clock=lambda: next(ticks))  # fmt: skip
    assert sum(sizes) == 19 and max(sizes) < 19 and len(sizes) > 3
    assert assert_cursor_matches_entries(store) == ENTRIES


def test_a_storage_failure_mid_batch_keeps_the_batches_before_and_none_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    real = state._dumps

    def failing(value: Any) -> str:
        if isinstance(value, dict) and value.get("id") == "E027":  # page 6: batch 2's 2nd page
            raise OSError("disk full")
        return real(value)

    monkeypatch.setattr(state, "_dumps", failing)
    with pytest.raises(OSError, match="disk full"):
        pull(store, ledger_for(feed_app()), batch_pages=4, clock=lambda: 0.0)
    assert assert_cursor_matches_entries(store) == 20  # batch 1 whole; batch 2 not at all
    monkeypatch.setattr(state, "_dumps", real)
    assert pull(store, ledger_for(feed_app())).items == ENTRIES - 20
    assert assert_cursor_matches_entries(store) == ENTRIES


def test_a_ledger_failure_mid_batch_keeps_the_pages_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    ledger = ledger_for(feed_app())
    real: Callable[[str | None], Iterator[Page]] = ledger.feed

    def failing(cursor: str | None) -> Iterator[Page]:
        for n, page in enumerate(real(cursor)):
            if n == 6:
                raise LedgerUnavailableError("ledger unreachable")
            yield page

    monkeypatch.setattr(ledger, "feed", failing)
    with pytest.raises(LedgerUnavailableError):
        pull(store, ledger, batch_pages=4, clock=lambda: 0.0)
    # Six pages were read whole: batch 1 committed, the two of batch 2 too, on the way out.
    assert assert_cursor_matches_entries(store) == 30
    assert pull(store, ledger_for(feed_app())).items == ENTRIES - 30
    assert assert_cursor_matches_entries(store) == ENTRIES
