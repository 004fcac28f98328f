"""Two nights of a sync, written against the harness's stable surface only, so the version
before the target seam (commit 79d08e6) can run it too: `tests/fixtures/state-v2.sql` is the
state directory that version left after it (see test_state_migration.py)."""

from __future__ import annotations

from typing import Any


def two_nights(world: Any) -> None:
    """Night one invoices the sample ledger; a person books customer 1004's invoices and
    e-mails 1005's; an entry on a booked invoice gets one hour more; night two sends the
    correction on a supplementary invoice (its header names the booked invoice's number)."""
    world.sync()
    for number, invoice in sorted(world.fake.invoices.items()):
        if invoice["CustomerNumber"] == "1004":
            world.fake.bookkeep(number)
        elif invoice["CustomerNumber"] == "1005":
            world.fake.mark_sent(number)
    entry = next(
        raw
        for raw in world.app.ledger.entries()
        if raw["customer_number"] == "1004"
        and raw["unit_price"]
        and raw["category"] in ("business_advisory", "data_maintenance", "configuration_change")
    )
    hours = str(float(entry["hours"]) + 1)  # a ledger string, as the feed sends it
    world.post_ledger([{**entry, "revision": entry["revision"] + 1, "hours": hours}])
    world.sync()
