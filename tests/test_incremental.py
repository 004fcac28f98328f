"""Incremental planning (docs/sync.md): only the customers whose planning inputs changed since
the last complete sync are planned, and the result is the one planning everyone gives."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector import sync as sync_module
from connector.errors import ExitCode
from connector.ledger import Entry, FeedItem
from connector.mappings import Mappings
from connector.planning import Invoiced, InvoiceKey, InvoiceStatus, Plan, with_status
from connector.planning import plan as plan_
from connector.prepaid import Prepaid
from connector.sandbox import fake_module
from connector.sandbox.app import SandboxApp
from connector.sandbox.sample import generate
from connector.state import StateStore
from connector.sync import SyncReport
from tests.conftest import MAPPINGS_DIR
from tests.harness import TARGETS, World, assert_incremental_agrees, target_settings
from tests.test_planning import (
    CUSTOMERS,
    FORTNOX,
    PROPERTY,
    PROPERTY_REGISTER,
    histories,
    write_all,
)


def small_world(tmp_path: Path, mappings: Mappings, target: str) -> World:
    """Four customers over two months: fast, and enough to tell customers apart."""
    from connector.sandbox.demo import sandbox_settings

    entries = generate(customers=4, months=("2026-09", "2026-10"), seed=1, specials=False)
    app = SandboxApp(ledger_entries=entries)
    fake_module(target).FAKE(app, rate_limit="100000/1")
    settings = sandbox_settings("http://sandbox.test", tmp_path / "state", MAPPINGS_DIR, target)
    target_settings(settings).rate_limit = "100000/1"
    target_settings(settings).search_settle_seconds = 0
    return World(app=app, settings=settings, mappings=mappings)


def revised(world: World, customer: str, **changes: Any) -> dict[str, Any]:
    """The newest revision of one active debit entry of `customer`, changed."""
    entries = [e for e in world.app.ledger.entries() if isinstance(e, dict)]
    entry = next(
        e
        for e in entries
        if e["customer_number"] == customer and e["kind"] == "debit" and e["status"] == "active"
    )
    return {**entry, "revision": int(entry["revision"]) + 100, **changes}


def unsent_customers(report: SyncReport) -> set[str]:
    """Customers with an invoice refused by the target: planned again every night."""
    return {InvoiceKey.parse(k).customer_number for k in report.invoice_attention}


@pytest.mark.parametrize("target", TARGETS)
def test_a_quiet_night_plans_no_customer_and_reports_the_same(
    tmp_path: Path, mappings: Mappings, target: str
) -> None:
    world = small_world(tmp_path, mappings, target)
    first = world.sync()
    assert first.planned_all and first.planned_customers == 4
    writes = world.writes()

    again = world.sync()

    # Only customers with changes still unsent (refused: Visma's private person) again.
    unsent = unsent_customers(first)
    assert (again.planned_customers, again.planned_all) == (len(unsent), False)
    assert world.writes() == writes
    assert again.unchanged == len(first.created)
    assert again.exit_code is first.exit_code
    assert again.to_json()["attention"] == first.to_json()["attention"]
    assert_incremental_agrees(world)


@pytest.mark.parametrize("target", TARGETS)
def test_a_changed_entry_plans_its_customer_only(
    tmp_path: Path, mappings: Mappings, target: str
) -> None:
    world = small_world(tmp_path, mappings, target)
    unsent = unsent_customers(world.sync())
    world.post_ledger([revised(world, "1004", hours="9.5")])

    report = world.sync()

    assert (report.planned_customers, report.planned_all) == (1 + len(unsent), False)
    assert len(report.updated) == 1 and report.updated[0].startswith("SK-1004-")
    # The full plan agrees: nothing left to do but what the target refuses.
    assert {InvoiceKey.parse(k).customer_number for k in world.pending_plan_changes()} == unsent
    assert world.sync().planned_customers == len(unsent)


@pytest.mark.parametrize("target", TARGETS)
def test_an_entry_moved_to_another_customer_plans_both(
    tmp_path: Path, mappings: Mappings, target: str
) -> None:
    world = small_world(tmp_path, mappings, target)
    unsent = unsent_customers(world.sync())
    world.post_ledger([revised(world, "1004", customer_number="1006")])

    report = world.sync()

    assert report.planned_customers == 2 + len(unsent)
    touched = {k.split("-")[1] for k in report.updated + report.created + report.cancelled}
    assert touched == {"1004", "1006"}
    assert {InvoiceKey.parse(k).customer_number for k in world.pending_plan_changes()} == unsent


def test_a_setting_the_plan_depends_on_plans_everyone(tmp_path: Path, mappings: Mappings) -> None:
    world = small_world(tmp_path, mappings, "fortnox")
    world.sync()
    world.settings.prepaid.balance_row = True  # a policy change is not a ledger change

    report = world.sync()

    assert report.planned_all
    assert world.pending_plan_changes() == []
    assert world.sync().planned_customers == 0


@pytest.mark.parametrize("target", TARGETS)
def test_planning_everyone_in_parts_is_planning_everyone_at_once(
    tmp_path: Path, mappings: Mappings, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = small_world(tmp_path, mappings, target)
    world.sync()
    for invoice in world.driver.invoices():
        if invoice["key"].startswith("SK-1004-"):
            world.driver.close(invoice["remote_id"])  # booked: a move must credit it
    world.sync()
    world.post_ledger(
        [revised(world, "1004", customer_number="1006"), revised(world, "1003", hours="2")]
    )
    world.sync(dry_run=True)  # pulled, not written: the moved entry ties 1004 and 1006
    whole = world.current_plan()
    store = world.store()
    try:
        monkeypatch.setattr(sync_module, "PLAN_PART_CUSTOMERS", 1)
        parts = sync_module.current_plan(
            store, mappings, world.profile, prepaid=world.settings.prepaid.policy()
        )
    finally:
        store.close()
    assert parts.invoices == whole.invoices
    assert parts.results == whole.results
    assert parts.changes  # the comparison covers changes, not only a settled state


def test_plan_all_plans_everyone_without_settling(tmp_path: Path, mappings: Mappings) -> None:
    world = small_world(tmp_path, mappings, "fortnox")
    world.sync()

    report = world.sync(dry_run=True, everything=True)

    assert report.planned_all and report.planned_customers == 4
    assert report.plan is not None and not report.plan.changes
    assert world.sync().planned_customers == 0


def test_a_run_that_stops_settles_nothing(
    tmp_path: Path, mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = small_world(tmp_path, mappings, "fortnox")
    world.sync()
    world.post_ledger([revised(world, "1004", hours="9.5")])

    class Stop(Exception):
        pass

    def failpoint(point: str) -> None:
        if point == "after_put":
            raise Stop

    monkeypatch.setattr(sync_module, "failpoint", failpoint)
    with pytest.raises(Stop):
        world.sync()
    monkeypatch.setattr(sync_module, "failpoint", lambda point: None)
    store = world.store()
    try:
        assert "1004" in store.dirty_customers()
    finally:
        store.close()

    report = world.sync()

    assert report.planned_customers == 1
    assert world.pending_plan_changes() == []


def test_entries_needing_attention_are_carried_until_acknowledged(
    tmp_path: Path, mappings: Mappings
) -> None:
    world = small_world(tmp_path, mappings, "fortnox")
    world.sync()
    world.post_ledger([revised(world, "1006", category="no_such_category")])
    found = world.sync()
    troubled = [r.ref for r in found.entry_attention() if "no_such_category" in r.reason]
    assert len(troubled) == 1 and found.exit_code is ExitCode.ATTENTION

    quiet = world.sync()

    assert quiet.planned_customers == 0
    assert [r.ref for r in quiet.entry_attention() if "no_such_category" in r.reason] == troubled
    assert quiet.exit_code is ExitCode.ATTENTION
    store = world.store()
    try:
        item = next(s.item for s in store.attention_items("fortnox") if s.item.ref == troubled[0])
        store.acknowledge("fortnox", item.ref, item.reason, "tester", "looked at it")
    finally:
        store.close()
    acked = world.sync()
    assert troubled[0] in dict(acked.acknowledged_items())
    assert troubled[0] not in {r.ref for r in acked.open_entry_attention()}
    assert_incremental_agrees(world)


# --- the marks, in the store ------------------------------------------------------------------


def raw_of(entry_id: str, customer: str, revision: int = 1) -> dict[str, Any]:
    raw = generate(customers=1, months=("2026-09",), seed=3, specials=False)[0]
    return {**raw, "id": entry_id, "customer_number": customer, "revision": revision}


def item(entry_id: str, customer: str, revision: int = 1, **changes: Any) -> FeedItem:
    raw = {**raw_of(entry_id, customer, revision), **changes}
    return FeedItem(f"p-{entry_id}-{revision}", raw, entry_id, revision)


def test_every_write_that_changes_a_plan_marks_its_customer(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    try:
        store.store_page([item("E1", "1001"), item("E2", "1002")], "c1")
        assert store.dirty_customers() == {"1001", "1002"}
        store.settle_dirty(keep=[])
        assert store.dirty_customers() == set()

        store.store_page([item("E1", "1003", revision=2)], "c2")  # moved: both customers
        assert store.dirty_customers() == {"1001", "1003"}
        store.settle_dirty(keep=["1003"])
        assert store.dirty_customers() == {"1003"}
        store.settle_dirty(keep=[])

        key = InvoiceKey("1002", "2026-09")
        store.set_status("fortnox", key, InvoiceStatus.OPEN, "7")
        assert store.dirty_customers() == {"1002"}
        store.settle_dirty(keep=[])
        store.set_status("fortnox", key, InvoiceStatus.OPEN, "7")  # nothing changed
        assert store.dirty_customers() == set()
        store.set_status("fortnox", key, InvoiceStatus.BOOKED, "7")
        assert store.dirty_customers() == {"1002"}
        store.settle_dirty(keep=[])

        store.hold("fortnox", "1004", "2026-09", "rebuilt")
        store.settle_dirty(keep=[])
        store.release("fortnox", "1004", "2026-09")
        assert store.dirty_customers() == {"1004"}
    finally:
        store.close()


def test_an_entry_turning_invalid_marks_the_customers_it_was_invoiced_to(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    try:
        store.store_page([item("E1", "1001")], "c1")
        key = InvoiceKey("1005", "2026-09")  # its rows sit on another customer's invoice
        store.set_status("fortnox", key, InvoiceStatus.BOOKED, "9")
        store.db.execute(
            "INSERT INTO placements (target, entry_id, key, revision, rows, seq)"
            " VALUES ('fortnox', 'E1', ?, 1, '[]', 1)",
            (key.text,),
        )
        store.settle_dirty(keep=[])
        broken = item("E1", "1001", revision=2, hours="-1")
        store.store_page([broken], "c2")

        assert store.dirty_customers() == {"1001", "1005"}
        assert store.rejected()[0][0] == "E1"
        assert store.closure("fortnox", {"1005"}) == {"1005"}  # invalid: ties nothing
    finally:
        store.close()


def test_the_closure_follows_entries_across_customers(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    try:
        store.store_page([item("E1", "1002"), item("E2", "1003"), item("E3", "1009")], "c1")
        first = InvoiceKey("1001", "2026-09")
        store.set_status("fortnox", first, InvoiceStatus.BOOKED, "1")
        second = InvoiceKey("1002", "2026-09")
        store.set_status("fortnox", second, InvoiceStatus.OPEN, "2")
        rows = json.dumps([])
        store.db.executemany(
            "INSERT INTO placements (target, entry_id, key, revision, rows, seq)"
            " VALUES ('fortnox', ?, ?, 1, ?, ?)",
            [("E1", first.text, rows, 1), ("E2", second.text, rows, 2)],
        )
        # 1001's invoice holds E1 (now 1002's), 1002's holds E2 (now 1003's): one chain.
        assert store.closure("fortnox", {"1001"}) == {"1001", "1002", "1003"}
        assert store.closure("fortnox", {"1003"}) == {"1001", "1002", "1003"}
        assert store.closure("fortnox", {"1009"}) == {"1009"}
    finally:
        store.close()


def test_a_mirror_from_before_migration_9_is_validated_once(tmp_path: Path) -> None:
    from connector.state import DB_NAME, MIGRATIONS, _statements

    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for script in MIGRATIONS[:8]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version = 8")
    good, bad = raw_of("E1", "1001"), {**raw_of("E2", "1002"), "currency": "kronor"}
    db.executemany(
        "INSERT INTO entries (id, revision, raw, feed_seq, seen_at) VALUES (?, 1, ?, ?, 'x')",
        [("E1", json.dumps(good), 1), ("E2", json.dumps(bad), 2)],
    )
    db.close()

    store = StateStore(tmp_path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert [e.id for e in store.scope_entries({"1001"})] == ["E1"]
        assert [ref for ref, _ in store.rejected()] == ["E2"]
        assert "currency" in store.rejected()[0][1]
    finally:
        store.close()


# --- the planner is local to customers tied by entries (the ground the marks stand on) --------


def tied(customers: set[str], entries: list[Entry], state: Invoiced) -> set[str]:
    """The closure `StateStore.closure` computes, reckoned here from the planner's types."""
    owner = {e.id: e.customer_number for e in entries}
    found = set(customers)
    while True:
        grown = set(found)
        for entry_id, chain in state.placements.items():
            if entry_id not in owner:
                continue
            theirs = {p.key.customer_number for p in chain} | {owner[entry_id]}
            if theirs & found:
                grown |= theirs
        if grown == found:
            return found
        found = grown


def restricted(state: Invoiced, customers: set[str], entries: list[Entry]) -> Invoiced:
    """What `StateStore.invoiced(target, customers)` loads."""
    ids = {e.id for e in entries}
    return Invoiced(
        invoices={k: v for k, v in state.invoices.items() if k.customer_number in customers},
        placements={e: c for e, c in state.placements.items() if e in ids},
        holds={m: r for m, r in state.holds.items() if m[0] in customers},
        reinvoiced=state.reinvoiced,
    )


@PROPERTY
@given(
    history=histories(),
    register=st.sampled_from([None, PROPERTY_REGISTER]),
    prepaid=st.sampled_from([None, Prepaid(overdraw="invoice", balance_row=True)]),
    picks=st.lists(st.sampled_from(CUSTOMERS), min_size=1, max_size=2),
)
def test_planning_some_customers_agrees_with_planning_all(
    history: tuple[list[Entry], list[tuple[list[Entry], list[int]]]],
    register: dict[str, Decimal | None] | None,
    prepaid: Prepaid | None,
    picks: list[str],
    mappings: Mappings,
) -> None:
    """After any history of revisions (customers changed too) and bookings, planning the
    customers tied to a few gives, for them, exactly the invoices and results of planning
    every customer: what incremental planning relies on."""
    first, steps = history

    def planned(entries: Iterable[Entry], state: Invoiced) -> Plan:
        return plan_(
            list(entries), mappings, FORTNOX, state, [("bad", "broken")], register,
            prepaid=prepaid,
        )  # fmt: skip

    current = {e.id: e for e in first}
    state = write_all(Invoiced(), planned(current.values(), Invoiced()))
    for revised, booked_picks in steps:
        open_keys = sorted(k for k, v in state.invoices.items() if v.status is InvoiceStatus.OPEN)
        for pick in booked_picks:
            if open_keys:
                state = with_status(state, open_keys[pick % len(open_keys)], InvoiceStatus.BOOKED)
        current.update({e.id: e for e in revised})
        everything = list(current.values())
        full = planned(everything, state)
        scope = tied(set(picks), everything, state)
        mine = [e for e in everything if e.customer_number in scope]
        part = planned(mine, restricted(state, scope, mine))

        assert part.invoices == tuple(i for i in full.invoices if i.key.customer_number in scope)
        refs = {e.id for e in mine} | {"bad"}
        assert part.results == tuple(r for r in full.results if r.ref in refs)
        # Written only now and then, so later steps also start from unwritten changes.
        if len(revised) % 2 == 0:
            state = write_all(state, full)


def test_a_mark_made_after_the_last_plan_survives_the_settling(
    tmp_path: Path, mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: a hold released in a sync's last moments (after its last plan) had its
    mark cleared with the run's own, so the month was never planned again. `state release`
    now takes the run lock, and a run clears only the marks its last plan read."""
    world = small_world(tmp_path, mappings, "fortnox")
    world.sync()
    store = world.store()
    try:
        store.hold("fortnox", "1004", "2026-09", "rebuilt")
    finally:
        store.close()
    world.sync()
    standing = sync_module.standing_attention

    def late_release(*args: Any, **kwargs: Any) -> Any:
        other = StateStore(world.settings.state_dir)
        try:
            other.release("fortnox", "1004", "2026-09")  # another process, after the last plan
        finally:
            other.close()
        return standing(*args, **kwargs)

    monkeypatch.setattr(sync_module, "standing_attention", late_release)
    world.sync()
    monkeypatch.setattr(sync_module, "standing_attention", standing)

    store = world.store()
    try:
        assert "1004" in store.dirty_customers()
    finally:
        store.close()
    assert world.sync().planned_customers == 1
    assert_incremental_agrees(world)
