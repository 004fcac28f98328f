"""The standard suite every accounting system target must pass (like singer-sdk's standard
target tests): the connector's guarantees, run against each target's strict fake through the
neutral view of the oracle. A new target in the registry is picked up here without an edit.

Nothing twice (crash between create and record, lost answers, overlapping runs), nothing lost
(the oracle against the ledger), an idempotent rerun writes nothing, closed invoices are never
touched, a person's changes are respected, tokens survive runs; and the month end's operations
(re-date with the due date from the terms, book once, send once, lost answers settled by
reading). Target-specific behaviour is
tested in test_<target>_client.py and test_sync.py."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector import sync as sync_module
from connector import targets
from connector.auth import TokenFile
from connector.errors import ExitCode, OutcomeUnknownError, RemoteUnavailableError, TargetRefusal
from connector.mappings import Mappings
from connector.planning import InvoiceKey, InvoiceStatus
from connector.targets.base import Delivery, RemoteState
from tests.harness import (
    NIGHT,
    TARGETS,
    World,
    assert_matches_ledger,
    assert_no_duplicates,
    entries_of,
    make_world,
    target_settings,
)


@pytest.fixture(params=TARGETS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> World:
    return make_world(tmp_path, mappings, target=request.param)


class Crash(BaseException):
    """A process death, simulated in-process: nothing after it runs."""


@contextlib.contextmanager
def crash_at(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[None]:
    left = [1]

    def failpoint(point: str) -> None:
        if point == name and left[0] > 0:
            left[0] -= 1
            raise Crash(point)

    monkeypatch.setattr(sync_module, "failpoint", failpoint)
    with pytest.raises(Crash):
        yield
    monkeypatch.setattr(sync_module, "failpoint", lambda point: None)


def an_entry(world: World, **changes: Any) -> dict[str, Any]:
    """A priced, billable sample entry of customer 1004, with changes."""
    for raw in entries_of(world.app):
        billable = raw["category"] in ("business_advisory", "data_maintenance", "project")
        if raw["customer_number"] == "1004" and raw["unit_price"] and billable:
            return {**raw, **changes}
    raise AssertionError("no such sample entry")


def key_of(entry: dict[str, Any]) -> str:
    return f"SK-1004-{entry['performed_on'][:7]}"


def live(world: World, key: str) -> list[dict[str, Any]]:
    return [i for i in world.driver.invoices() if i["key"] == key and i["state"] != "gone"]


def refused_customers(world: World) -> set[str]:
    """Customers of the ledger the target cannot invoice (not there, or refused on purpose)."""
    return {e["customer_number"] for e in entries_of(world.app)} - world.driver.customers()


# --- the normal course --------------------------------------------------------------------------


def test_first_sync_matches_the_ledger_and_a_rerun_writes_nothing(world: World) -> None:
    report = world.sync()
    assert report.exit_code is ExitCode.ATTENTION  # 1042 and the sample's bad entries
    assert report.created and not report.updated
    refused = {k.split("-")[1] for k in report.invoice_attention}
    assert refused == refused_customers(world)
    assert_matches_ledger(world, report)
    writes = world.writes()
    again = world.sync()
    assert world.writes() == writes  # idempotent: no write request at all
    assert again.created == again.updated == []
    assert again.unchanged == len(report.created)
    assert_matches_ledger(world, again)


def test_a_dry_run_sends_no_write_and_keeps_no_invoice(world: World) -> None:
    report = world.sync(dry_run=True)
    assert world.writes() == 0
    assert report.would and {w[0] for w in report.would} == {"create"}
    store = world.store()
    assert store.invoice_records(world.target) == []
    assert store.runs() == []


def test_a_ledger_change_updates_the_open_draft_exactly(world: World) -> None:
    world.sync()
    entry = an_entry(world, revision=2, hours="6")
    world.post_ledger([entry])
    report = world.sync()
    assert report.updated == [key_of(entry)] and report.created == []
    assert_matches_ledger(world, report)
    (invoice,) = live(world, key_of(entry))
    assert Decimal(6) in [row["quantity"] for row in invoice["rows"]]


def test_a_closed_invoice_is_never_touched_and_changes_go_to_a_supplement(world: World) -> None:
    world.sync()
    entry = an_entry(world, revision=2, hours="6")
    key = key_of(entry)
    (draft,) = live(world, key)
    world.driver.close(draft["remote_id"])
    (closed,) = live(world, key)
    world.post_ledger([entry])
    report = world.sync()
    assert report.created == [f"{key}-2"]
    assert live(world, key) == [closed]  # not a row changed
    (supplement,) = live(world, f"{key}-2")
    assert supplement["rows"][0]["description"].startswith(
        f"Tilläggsfaktura till faktura {closed['number']}."
    )
    assert_matches_ledger(world, report)


def test_a_person_edited_draft_is_never_overwritten(world: World) -> None:
    world.sync()
    entry = an_entry(world, revision=2, hours="6")
    key = key_of(entry)
    (draft,) = live(world, key)
    world.driver.edit_text(draft["remote_id"], 0, "Ändrad av ekonomiavdelningen")
    world.edited.add(str(draft["remote_id"]))
    (edited,) = live(world, key)
    world.post_ledger([entry])
    report = world.sync()
    assert [i["rows"] for i in live(world, key)] == [edited["rows"]]
    assert "by a person" in report.invoice_attention[key]
    assert report.created == [f"{key}-2"]  # the change went to a supplementary invoice
    assert_no_duplicates(world.driver)
    assert_matches_ledger(world, world.sync())


def test_a_draft_a_person_withdraws_is_not_invoiced_again(world: World) -> None:
    world.sync()
    entry = an_entry(world)
    key = key_of(entry)
    (draft,) = live(world, key)
    world.driver.withdraw(draft["remote_id"])
    world.post_ledger([an_entry(world, revision=2, hours="6")])
    report = world.sync()
    assert live(world, key) == [] and not [k for k in report.created if k.startswith(key)]
    result = next(r for r in report.plan.results if r.ref == entry["id"]) if report.plan else None
    assert result is not None and f"was {world.profile.withdrawn}" in result.reason
    assert_matches_ledger(world, report)


def test_a_draft_a_person_withdraws_is_noticed_without_a_ledger_change(world: World) -> None:
    """Found by a tester: the sync also looks at open drafts it has nothing to write to (one
    listing per month), so the state, status, report and close know what a person did."""
    now = [NIGHT()]
    world.driver.set_clock(lambda: now[0].timestamp())
    target_settings(world.settings).search_settle_seconds = 600
    world.sync(clock=lambda: now[0])
    key = key_of(an_entry(world))
    (draft,) = live(world, key)
    world.driver.withdraw(draft["remote_id"])
    report = world.sync(clock=lambda: now[0])
    now[0] += timedelta(hours=1)  # past the settle time of a deleted draft
    report = world.sync(clock=lambda: now[0])
    store = world.store()
    try:
        status = store.invoiced(world.target).status(InvoiceKey.parse(key))
    finally:
        store.close()
    assert status is InvoiceStatus.CANCELLED
    assert report.created == [] and report.updated == []
    assert_matches_ledger(world, report)


def test_voided_entries_empty_a_draft_which_is_withdrawn(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-08"
    voided = [
        {**raw, "revision": 9, "status": "void"}
        for raw in entries_of(world.app)
        if raw["customer_number"] == "1004" and raw["performed_on"].startswith("2026-08")
    ]
    world.post_ledger(voided)
    report = world.sync()
    assert report.cancelled == [key]
    assert live(world, key) == []
    assert_matches_ledger(world, report)
    assert world.sync().cancelled == []


def test_an_invoice_closed_while_the_listing_lags_is_never_taken_as_withdrawn(
    world: World,
) -> None:
    """Visma: a converted draft leaves the draft list at once but reaches the invoice list
    later. Until the settle time has passed, "not found" is not taken as a person's deletion
    (which would leave the state saying cancelled for an invoice the customer holds)."""
    now = [NIGHT()]
    world.driver.set_clock(lambda: now[0].timestamp())
    target_settings(world.settings).search_settle_seconds = 600
    world.sync(clock=lambda: now[0])
    entry = an_entry(world, revision=2, hours="6")
    key = key_of(entry)
    (draft,) = live(world, key)
    world.driver.faults(search_lag_seconds=300)
    world.driver.close(draft["remote_id"])
    world.post_ledger([entry])
    world.sync(clock=lambda: now[0])
    now[0] += timedelta(hours=1)  # the listing has caught up
    report = world.sync(clock=lambda: now[0])
    (closed,) = live(world, key)
    assert closed["state"] == "closed"
    (supplement,) = live(world, f"{key}-2")
    assert supplement["rows"][0]["description"].startswith(
        f"Tilläggsfaktura till faktura {closed['number']}."
    )
    assert_matches_ledger(world, report)


def test_a_draft_closed_before_our_withdrawal_is_not_taken_as_withdrawn_by_us(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run dies just before withdrawing an emptied draft; a person then books (converts) it
    while the listing lags. The next run must not take "not found" as its own withdrawal: the
    voided hours are on an invoice the customer holds and need a credit."""
    now = [NIGHT()]
    world.driver.set_clock(lambda: now[0].timestamp())
    target_settings(world.settings).search_settle_seconds = 600
    world.sync(clock=lambda: now[0])
    key = "SK-1004-2026-08"
    voided = [
        {**raw, "revision": 9, "status": "void"}
        for raw in entries_of(world.app)
        if raw["customer_number"] == "1004" and raw["performed_on"].startswith("2026-08")
    ]
    world.post_ledger(voided)
    with crash_at(monkeypatch, "before_cancel"):
        world.sync(clock=lambda: now[0])
    (draft,) = live(world, key)
    world.driver.faults(search_lag_seconds=300)
    world.driver.close(draft["remote_id"])
    report = world.sync(clock=lambda: now[0])
    assert report.cancelled == []
    now[0] += timedelta(hours=1)  # the listing has caught up
    report = world.sync(clock=lambda: now[0])
    (closed,) = live(world, key)
    assert closed["state"] == "closed"
    (credit,) = live(world, f"{key}-2")
    assert sum(Decimal(str(r["quantity"])) for r in credit["rows"] if r["article"]) < 0
    assert_matches_ledger(world, report)


def test_a_write_that_landed_before_a_person_closed_the_draft_is_not_lost_in_recovery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the state machine (Visma): an update lands, the run dies before recording
    it, a person converts the draft, and the next run cannot find it yet. The pending rows
    must be kept until it is found, or the month is held for rows the connector did write."""
    now = [NIGHT()]
    world.driver.set_clock(lambda: now[0].timestamp())
    target_settings(world.settings).search_settle_seconds = 600
    world.sync(clock=lambda: now[0])
    entry = an_entry(world, revision=2, hours="6")
    key = key_of(entry)
    world.post_ledger([entry])
    with crash_at(monkeypatch, "after_put"):
        world.sync(clock=lambda: now[0])
    (draft,) = live(world, key)
    world.driver.faults(search_lag_seconds=300)
    world.driver.close(draft["remote_id"])
    world.sync(clock=lambda: now[0])
    now[0] += timedelta(hours=1)  # the listing has caught up
    report = world.sync(clock=lambda: now[0])
    assert not [
        r for r in report.invoice_attention.values() if "held" in r or "until released" in r
    ]
    (closed,) = live(world, key)
    assert closed["state"] == "closed"
    assert_matches_ledger(world, report)
    assert world.sync(clock=lambda: now[0]).created == []


# --- faults -------------------------------------------------------------------------------------


def test_lost_create_answers_are_reconciled_without_duplicates(world: World) -> None:
    world.faults(lost_create_rate=1.0)
    report = world.sync()
    assert report.created and len(report.recovered) == len(report.created)
    assert_no_duplicates(world.driver)
    world.faults(lost_create_rate=0)
    assert_matches_ledger(world, world.sync())


def test_lost_update_answers_are_settled_by_reading(world: World) -> None:
    world.sync()
    world.post_ledger([an_entry(world, revision=2, hours="6")])
    world.faults(lost_update_rate=1.0)
    with contextlib.suppress(RemoteUnavailableError):
        world.sync()
    assert_no_duplicates(world.driver)
    world.faults(lost_update_rate=0)
    assert_matches_ledger(world, world.sync())


def test_5xx_answers_never_make_a_duplicate(world: World) -> None:
    world.faults(error_rate=0.3, seed=7)
    for _ in range(10):  # a run that meets two unknown outcomes in a row stops with exit 4
        with contextlib.suppress(RemoteUnavailableError):
            world.sync()
            break
        assert_no_duplicates(world.driver)
    world.faults(error_rate=0)
    assert_matches_ledger(world, world.sync())


@pytest.mark.parametrize("point", ["after_pull", "before_post", "after_post"])
def test_a_crash_around_a_create_loses_nothing_and_duplicates_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    with crash_at(monkeypatch, point):
        world.sync()
    report = world.sync()
    assert_matches_ledger(world, report)
    if point == "after_post":
        assert len(report.recovered) == 1  # the invoice the crash hid was found, not re-sent


@pytest.mark.parametrize("point", ["before_put", "after_put"])
def test_a_crash_around_an_update_is_recovered(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    world.sync()
    world.post_ledger([an_entry(world, revision=2, hours="6")])
    with crash_at(monkeypatch, point):
        world.sync()
    report = world.sync()
    assert_matches_ledger(world, report)
    assert world.sync().updated == []


def test_rate_limited_requests_wait_and_go_through(world: World, sleeps: list[float]) -> None:
    world.faults(force_429=3)
    report = world.sync()
    assert report.rate_limited == 3
    assert len(sleeps) >= 3 and min(sleeps) > 0  # waited each time before asking again
    assert_matches_ledger(world, report)


# --- credentials --------------------------------------------------------------------------------


def test_tokens_survive_runs_and_expiry(world: World) -> None:
    world.sync()
    app = targets.spec(world.target).oauth
    path = world.settings.state_dir / app.token_file
    first = TokenFile(path).read()
    assert first is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    world.faults(expire_tokens=True)  # every access token the fake issued is now refused
    world.post_ledger([an_entry(world, revision=2, hours="6")])
    report = world.sync()
    assert len(report.updated) == 1
    second = TokenFile(path).read()
    assert second is not None and second.access_token != first.access_token
    assert world.sync().exit_code is ExitCode.ATTENTION  # and the next run still gets in


def test_a_lost_state_is_rebuilt_without_billing_twice(world: World) -> None:
    world.sync()
    entry = an_entry(world)
    (draft,) = live(world, key_of(entry))
    world.driver.close(draft["remote_id"])
    world.sync()
    world.rebuild()
    report = world.sync()
    # Only the refused creates are tried again (the refusals were not kept): nothing is written.
    assert report.created == report.updated == report.cancelled == []
    assert_matches_ledger(world, report)


# --- month end: the close operations (redate, book, send) ---------------------------------------


def draft_of(world: World, key: str) -> tuple[Any, str]:
    """The target's client and the remote id of the open draft with this key."""
    (draft,) = live(world, key)
    assert draft["state"] == "open"
    return targets.spec(world.target).open(world.settings, http=world.client()), str(
        draft["remote_id"]
    )


def never_made(remote_id: str) -> str:
    """An id of the same form as `remote_id` that the target never gave out."""
    return "987654321" if remote_id.isdigit() else str(uuid.uuid4())


def test_a_draft_is_redated_with_the_due_date_from_the_terms_then_booked_once(
    world: World,
) -> None:
    world.sync()
    target, remote_id = draft_of(world, "SK-1004-2026-09")
    dated = target.redate(remote_id, date(2026, 10, 1))
    assert dated.state is RemoteState.OPEN and dated.invoice_date == date(2026, 10, 1)
    assert dated.due_date == date(2026, 10, 31)  # the customer's 30 days, not sent by us
    booked = target.book(remote_id)
    assert booked.state is RemoteState.CLOSED and booked.status is InvoiceStatus.BOOKED
    assert booked.number and booked.invoice_date == date(2026, 10, 1)
    read = target.get(remote_id)  # still addressed by the id the state knows
    assert read.state is RemoteState.CLOSED and read.number == booked.number
    with pytest.raises(TargetRefusal):
        target.book(remote_id)  # booking twice is refused, never a second invoice
    with pytest.raises(TargetRefusal):
        target.book(never_made(remote_id))
    assert [i["state"] for i in live(world, "SK-1004-2026-09")] == ["closed"]


def test_a_lost_booking_answer_is_settled_by_reading(world: World) -> None:
    world.sync()
    target, remote_id = draft_of(world, "SK-1004-2026-09")
    world.faults(lost_action_rate=1.0)
    with pytest.raises(OutcomeUnknownError):
        target.book(remote_id)
    world.faults(lost_action_rate=0)
    assert target.get(remote_id).state is RemoteState.CLOSED


def test_booking_in_a_locked_period_is_a_date_refusal(world: World) -> None:
    world.sync()
    target, remote_id = draft_of(world, "SK-1004-2026-09")
    if not world.driver.lock_through(date(2026, 9, 30)):
        pytest.skip("this target's fake has no period lock")
    with pytest.raises(TargetRefusal) as refused:
        target.book(remote_id)
    assert target.refuses_date(refused.value)
    assert target.get(remote_id).state is RemoteState.OPEN


def test_a_booked_invoice_is_sent_once_the_way_its_customer_gets_invoices(
    world: World,
) -> None:
    world.sync()
    target, remote_id = draft_of(world, "SK-1004-2026-09")
    target.book(remote_id)
    outcome = target.send(remote_id)
    assert outcome.sent and outcome.how is Delivery.EMAIL
    read = target.get(remote_id)
    assert read.sent in (True, None)  # None: the target cannot show it (Visma)
    fake = world.app.extensions[world.target]
    assert len(fake.deliveries) == 1
    key = next(
        str(i["key"])
        for i in world.driver.invoices()
        if i["state"] == "open" and str(i["key"]).endswith("-2026-09")
    )
    other, second = draft_of(world, key)
    other.book(second)
    world.faults(lost_action_rate=1.0)
    with pytest.raises(OutcomeUnknownError):
        other.send(second)  # a lost answer is never resent by the client itself
    assert len(fake.deliveries) == 2
