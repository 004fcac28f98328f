"""A state directory written by an earlier version keeps working: migrated, not reset."""

from __future__ import annotations

import contextlib
import gzip
import sqlite3
from pathlib import Path

from connector.mappings import load_mappings
from connector.planning import InvoiceStatus
from connector.state import DB_NAME, MIGRATIONS
from tests.conftest import MAPPINGS_DIR
from tests.harness import make_world
from tests.legacy_scenario import two_nights

# Left by commit 79d08e6 (the version before the target seam, schema v2) after
# tests/legacy_scenario.py's two nights against the sandbox; made with that version's harness
# and stored as SQL text (sqlite3 iterdump), gzipped.
FIXTURE = Path(__file__).parent / "fixtures" / "state-v2.sql.gz"


def test_a_state_from_before_the_target_seam_migrates_and_syncs_on_with_no_writes(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path, load_mappings(MAPPINGS_DIR))
    two_nights(world)  # the same fake Fortnox that version left behind
    state = world.settings.state_dir
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            (state / name).unlink()
    old = sqlite3.connect(state / DB_NAME)
    old.executescript(gzip.decompress(FIXTURE.read_bytes()).decode())
    assert old.execute("PRAGMA user_version").fetchone()[0] == 2
    old.close()

    writes = world.writes()
    report = world.sync()
    assert world.writes() == writes, "the migrated state must see nothing to change"
    assert report.created == [] and report.updated == [] and report.cancelled == []

    store = world.store()
    assert store.schema_version == len(MIGRATIONS) >= 3
    # Every invoice Fortnox has, under its document number (the refused ones have none).
    records = [r for r in store.invoice_records("fortnox") if r.remote_id is not None]
    assert len(records) == len(world.fake.invoices)
    for record in records:
        assert record.remote_id is not None and record.display_number == record.remote_id
        invoice = world.fake.invoices[int(record.remote_id)]
        assert invoice["ExternalInvoiceReference1"] == record.key.text
    booked = [r for r in records if r.status is InvoiceStatus.BOOKED]
    assert booked and all(r.key.customer_number == "1004" for r in booked)
    # The supplementary invoice's header names the booked invoice by its display number:
    # the same text as before, so nothing is rewritten.
    supplement = next(r for r in records if r.key.sequence == 2)
    header = world.fake.invoices[int(supplement.remote_id or 0)]["InvoiceRows"][0]
    assert header["Description"].startswith("Tilläggsfaktura till faktura ")
