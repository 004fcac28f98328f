"""A lost state directory rebuilt from the accounting system and the ledger: afterwards a sync
sends only what is really missing, and no hour is on two live invoices."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.errors import ConfigError, StateMismatchError
from connector.mappings import Mappings
from connector.planning import InvoiceKey, InvoiceStatus
from tests.harness import World, assert_matches_ledger, assert_no_duplicates, entries_of, make_world


@pytest.fixture
def world(tmp_path: Path, mappings: Mappings, sleeps: list[float]) -> World:
    return make_world(tmp_path, mappings)


def draft(world: World, key: str) -> dict[str, Any]:
    (invoice,) = world.fake.live_by_key()[key]
    return invoice


def lived_history(world: World) -> None:
    """A few months of real life: drafts, bookings, a sent invoice, a person's cancellation with
    a live supplement after it, ledger revisions after booking (corrections), a person's edit."""
    world.sync()
    world.fake.bookkeep(int(draft(world, "SK-1004-2026-08")["DocumentNumber"]))
    world.fake.mark_sent(int(draft(world, "SK-1005-2026-09")["DocumentNumber"]))
    world.fake.cancel(int(draft(world, "SK-1006-2026-09")["DocumentNumber"]))
    revised = [
        {**e, "revision": 20, "hours": "7"}
        for e in entries_of(world.app)
        if e["customer_number"] in ("1004", "1005")
        and e["category"] in ("installation", "training", "project", "configuration")
        and e["prepaid_hours"] == "0"
    ][:3]
    late = {**revised[0], "id": "LATE-1", "customer_number": "1006", "performed_on": "2026-09-28",
            "revision": 1, "hours": "1.5"}  # fmt: skip
    world.post_ledger([*revised, late])
    world.sync()
    number = int(draft(world, "SK-1008-2026-10")["DocumentNumber"])
    world.fake.edit_row(number, 0, Description="Ändrad av ekonomi")
    world.edited.add(str(number))


def test_a_rebuilt_state_sends_only_what_is_missing(world: World) -> None:
    lived_history(world)
    assert draft(world, "SK-1006-2026-09-2")  # the live supplement after a cancelled original
    world.post_ledger([{**next(e for e in entries_of(world.app) if e["customer_number"] == "1009"),
                        "id": "NEW-AFTER-LOSS", "hours": "2", "revision": 1}])  # fmt: skip
    shutil.rmtree(world.settings.state_dir)
    with pytest.raises(StateMismatchError):
        world.sync()  # nothing is written from an empty state
    invoices_before = {n: dict(i) for n, i in world.fake.invoices.items()}
    report = world.rebuild()
    assert report.held == [] and report.entries_placed > 200
    assert report.invoices["booked"] == 1 and report.invoices["sent"] == 1
    assert report.invoices["cancelled"] == 1
    assert report.locked == ["SK-1008-2026-10"]  # a person's text: that draft is left to them
    writes = world.writes()
    after = world.sync()
    assert_no_duplicates(world.driver)
    assert_matches_ledger(world, after)
    # Only what is really missing went out: the entry that arrived after the loss.
    changed = [k for k in (*after.created, *after.updated)]
    assert len(changed) == 1 and changed[0].startswith("SK-1009-")
    assert world.writes() - writes <= len(changed) + 3  # plus 1042's refused creates
    for number, before in invoices_before.items():
        if before["Booked"] or before["Sent"] or before["Cancelled"]:
            assert world.fake.invoices[number]["InvoiceRows"] == before["InvoiceRows"]


def test_a_row_that_cannot_be_tied_back_holds_its_month(world: World) -> None:
    world.sync()
    key = "SK-1007-2026-08"
    invoice = draft(world, key)
    world.fake.bookkeep(int(invoice["DocumentNumber"]))
    invoice["InvoiceRows"][1]["Description"] = "Något ingen känner igen"  # a person's text
    shutil.rmtree(world.settings.state_dir)
    report = world.rebuild()
    ((customer, period, reason),) = report.held
    assert (customer, period) == ("1007", "2026-08") and "could not tie" in reason
    after = world.sync()
    assert after.plan is not None
    held = [r for r in after.plan.results if r.customer_number == "1007" and r.period == "2026-08"]
    assert held and all(r.reason.startswith("held: ") for r in held)
    assert not [k for k in after.created if k.startswith("SK-1007-2026-08")]
    store = world.store()
    assert store.release("fortnox", "1007", "2026-08")
    store.close()
    assert world.sync().plan is not None


def test_rebuild_refuses_a_state_that_is_not_empty_without_yes(world: World) -> None:
    world.sync()
    from connector.rebuild import rebuild

    with pytest.raises(ConfigError, match="not empty"):
        rebuild(world.settings, ledger=None, target=None)


def test_rebuild_over_a_wrong_state_keeps_a_copy(world: World) -> None:
    world.sync()
    report = world.rebuild()
    assert report.backup is not None and Path(report.backup).is_file()
    assert Path(report.backup).stat().st_mode & 0o777 == 0o600
    assert world.sync().created == []
    store = world.store()
    statuses = {r.status for r in store.invoice_records("fortnox")}
    store.close()
    assert InvoiceStatus.OPEN in statuses
    assert InvoiceKey.parse("SK-1004-2026-08")


def test_a_rebuild_keeps_the_prices_rows_were_billed_at(world: World) -> None:
    """Rows booked at an older register price stand as billed after a rebuild: no correction
    appears because the register's price changed in between."""
    world.sync()
    for invoice in list(world.fake.invoices.values()):
        world.fake.bookkeep(int(invoice["DocumentNumber"]))
    world.fake.articles["SK-UTB"].sales_price = Decimal("2100.00")
    shutil.rmtree(world.settings.state_dir)
    world.rebuild()
    after = world.sync()
    assert after.created == [] and after.updated == []


def test_a_price_corrected_in_the_ledger_while_the_state_was_lost_is_billed(world: World) -> None:
    world.sync()
    report = world.reports[-1]
    assert report.plan is not None
    on = {r.ref for r in report.plan.results if r.reason == "on invoice"}
    entry = next(
        e for e in entries_of(world.app)
        if e["id"] in on and e["unit_price"] == "1150.00" and e["prepaid_hours"] == "0"
    )  # fmt: skip
    shutil.rmtree(world.settings.state_dir)
    world.post_ledger([{**entry, "revision": 9, "unit_price": "1500.00"}])
    world.rebuild()
    assert_matches_ledger(world, world.sync())


def test_identical_texts_on_two_booked_invoices_tie_to_two_entries(world: World) -> None:
    """Two entries with the same text, the second on a supplementary invoice after the first was
    booked: each row ties to its own entry, so no needless correction appears after a rebuild."""
    base = next(
        e for e in entries_of(world.app)
        if e["customer_number"] == "1004" and e["unit_price"] and e["category"] == "project"
    )  # fmt: skip
    twin = {**base, "id": "TWIN-1", "performed_on": "2026-07-10", "revision": 1,
            "prepaid_hours": "0"}  # fmt: skip
    world.post_ledger([twin])
    world.sync()
    world.fake.bookkeep(int(draft(world, "SK-1004-2026-07")["DocumentNumber"]))
    world.post_ledger([{**twin, "id": "TWIN-2"}])
    world.sync()
    world.fake.bookkeep(int(draft(world, "SK-1004-2026-07-2")["DocumentNumber"]))
    shutil.rmtree(world.settings.state_dir)
    world.rebuild()
    after = world.sync()
    assert after.created == [] and after.updated == []
