"""State store: migrations, the page-and-cursor transaction, revisions, the run lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connector import state
from connector.errors import ExitCode, LockHeldError, StateError
from connector.ledger import FeedItem
from connector.planning import EntryResult, Outcome
from connector.state import DB_NAME, LOCK_NAME, MIGRATIONS, StateStore


def item(raw: dict[str, Any] | object, position: str = "feed start, item 1") -> FeedItem:
    entry_id = raw.get("id") if isinstance(raw, dict) else None
    revision = raw.get("revision") if isinstance(raw, dict) else None
    return FeedItem(position, raw, entry_id, revision)


def test_fresh_store_is_migrated_and_reopens(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again = StateStore(tmp_path)
    assert again.schema_version == len(MIGRATIONS)
    assert (os.stat(tmp_path / DB_NAME).st_mode & 0o777) == 0o600
    private = StateStore(tmp_path / "new" / "state")
    assert (os.stat(tmp_path / "new" / "state").st_mode & 0o777) == 0o700
    private.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StateError, match="newer than this program"):
        StateStore(tmp_path)


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="unusable"):
        StateStore(tmp_path)


def test_page_and_cursor_commit_together(
    tmp_path: Path, raw_entry: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.store_page([item(raw_entry(id="A")), item(raw_entry(id="B"))], "c1")
    assert store.cursor() == "c1" and store.entry_count() == 2
    # A failure in the middle of a page leaves neither its entries nor its cursor.
    real = state._dumps

    def failing(value: Any) -> str:
        if isinstance(value, dict) and value.get("id") == "D":
            raise OSError("disk full")
        return real(value)

    monkeypatch.setattr(state, "_dumps", failing)
    with pytest.raises(OSError, match="disk full"):
        store.store_page([item(raw_entry(id="C")), item(raw_entry(id="D"))], "c2")
    assert store.cursor() == "c1"
    assert store.entry_count() == 2
    assert store.raw_entry("C") is None


def test_a_batch_of_pages_commits_whole_or_not_at_all(
    tmp_path: Path, raw_entry: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.store_pages([([item(raw_entry(id="A"))], "c1"), ([item(raw_entry(id="B"))], "c2")])
    assert store.cursor() == "c2" and store.entry_count() == 2
    real = state._dumps

    def failing(value: Any) -> str:
        if isinstance(value, dict) and value.get("id") == "E":
            raise OSError("disk full")
        return real(value)

    monkeypatch.setattr(state, "_dumps", failing)
    pages = [([item(raw_entry(id="C"))], "c3"), ([item(raw_entry(id="D"))], "c4"),
             ([item(raw_entry(id="E"))], "c5")]  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        store.store_pages(pages)
    # The third page failed: the two before it, stored in the same batch, went with it.
    assert store.cursor() == "c2" and store.entry_count() == 2
    assert store.raw_entry("C") is None and not store.db.in_transaction
    monkeypatch.setattr(state, "_dumps", real)
    store.store_pages(pages)
    assert store.cursor() == "c5" and store.entry_count() == 5


def test_a_transaction_inside_another_is_undone_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path)

    def failing_inner() -> None:
        with store.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('undone', '1')")
            raise RuntimeError("inner failure")

    with store.transaction():
        store.set_meta("kept", "1")
        with pytest.raises(RuntimeError):
            failing_inner()
    assert store.meta("kept") == "1" and store.meta("undone") is None


def test_newest_revision_wins(tmp_path: Path, raw_entry: Callable[..., dict[str, Any]]) -> None:
    store = StateStore(tmp_path)
    store.store_page([item(raw_entry(revision=2, hours="4"))], "c1")
    store.store_page([item(raw_entry(revision=1, hours="1"))], None)  # a late window re-read
    assert store.raw_entry("E1")["hours"] == "4"
    store.store_page([item(raw_entry(revision=3, hours="5"))], "c2")
    assert store.raw_entry("E1")["hours"] == "5"
    assert store.cursor() == "c2"


def test_entries_without_id_are_kept_by_position(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.store_page([item({"hours": "1"}, "feed cursor v1.9, item 3")], "c")
    assert store.feed_rejects() == [("feed cursor v1.9, item 3", {"hours": "1"})]


def test_lock_excludes_a_second_run(tmp_path: Path) -> None:
    first, second = StateStore(tmp_path), StateStore(tmp_path)
    with first.lock():
        with pytest.raises(LockHeldError) as info, second.lock():
            pass  # pragma: no cover
        assert info.value.exit_code is ExitCode.LOCKED
        assert str(os.getpid()) in str(info.value)
    with second.lock():  # released on exit
        pass


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; from connector.state import StateStore\n"
        "s = StateStore(Path(sys.argv[1]))\n"
        "with s.lock():\n    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError), StateStore(tmp_path).lock():
            pass  # pragma: no cover
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 5
        while True:
            try:
                with StateStore(tmp_path).lock():
                    break
            except LockHeldError:  # pragma: no cover - kernel releases at once in practice
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()


def test_attention_list_is_replaced_keeping_first_seen(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    a = EntryResult("A", Outcome.ATTENTION, "unknown category 'x'", (), "1001", "2026-09")
    b = EntryResult("B", Outcome.ATTENTION, "malformed entry: hours", (), None, None)
    store.replace_attention("fortnox", [a, b])
    first = {r["ref"]: r for r in store.attention("fortnox")}
    store.replace_attention("fortnox", [a])
    (only,) = store.attention("fortnox")
    assert only["ref"] == "A" and only["first_seen"] == first["A"]["first_seen"]
    assert store.attention("visma") == []


def test_runs_are_recorded(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    run = store.start_run("plan", "fortnox")
    store.finish_run(run, 1, {"attention": 2})
    (record,) = store.runs()
    assert (record.command, record.exit_code, record.summary) == ("plan", 1, {"attention": 2})
    assert record.finished_at is not None


def test_two_processes_creating_the_state_directory_at_once_both_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the overlapping-syncs crash test: both saw no directory, one created it first,
    and the other died with FileExistsError (exit 70)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)  # the other process was first
    monkeypatch.setattr(Path, "exists", lambda self: False)  # ... after this one had looked
    store = StateStore(state_dir)
    assert store.schema_version >= 1
    store.close()
