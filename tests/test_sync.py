"""The Fortnox sync against the stateful sandbox, in-process: behaviour under each fault."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector import http, rate_window
from connector import sync as sync_module
from connector.errors import (
    ConfigError,
    ExitCode,
    ReauthRequiredError,
    RemoteUnavailableError,
    StateMismatchError,
    TargetRefusal,
)
from connector.mappings import Mappings, load_mappings
from connector.planning import InvoiceKey, InvoiceStatus, Outcome, Plan
from connector.sandbox.app import DropConnection, Ledger, json_response
from connector.sandbox.fortnox import FortnoxFake
from connector.sandbox.sample import load
from tests.harness import (
    BASE,
    World,
    assert_matches_ledger,
    assert_no_duplicates,
    entries_of,
    fortnox_settings,
    make_world,
)


@pytest.fixture
def world(tmp_path: Path, mappings: Mappings, sleeps: list[float]) -> World:
    return make_world(tmp_path, mappings)


def sample_entry(**changes: Any) -> dict[str, Any]:
    """A copy of a sample entry of customer 1004 with changes."""
    for raw in Ledger(load()).entries():
        assert isinstance(raw, dict)
        billable = raw["category"] not in ("guidance", "product_fault", "partner_api_update")
        if raw["customer_number"] == "1004" and raw["unit_price"] and billable:
            return {**raw, **changes}
    raise AssertionError("no such sample entry")


class Crash(BaseException):
    """A process death, simulated in-process: nothing after it runs."""


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str, times: int = 1) -> None:
    left = [times]

    def failpoint(point: str) -> None:
        if point == name and left[0] > 0:
            left[0] -= 1
            raise Crash(point)

    monkeypatch.setattr(sync_module, "failpoint", failpoint)


# --- the normal course --------------------------------------------------------------------------


def test_first_sync_creates_the_plan_and_second_sync_writes_nothing(world: World) -> None:
    report = world.sync()
    assert report.exit_code is ExitCode.ATTENTION  # customer 1042 and the bad entries
    assert len(report.created) == 98
    assert report.invoice_attention == {
        f"SK-1042-2026-{m}": "customer 1042 does not exist in Fortnox" for m in ("08", "09", "10")
    }
    assert_matches_ledger(world, report)
    writes = world.writes()
    again = world.sync()
    assert world.writes() == writes  # idempotent: no write request at all
    assert again.created == again.updated == []
    assert again.unchanged == 98
    assert_matches_ledger(world, again)


def test_dry_run_sends_no_write_and_keeps_no_state(world: World) -> None:
    report = world.sync(dry_run=True)
    assert world.writes() == 0
    assert len([w for w in report.would if w[0] == "create"]) == 98
    # What the real sync would meet, a dry run says too: 1042 is not a Fortnox customer.
    assert report.invoice_attention == {
        f"SK-1042-2026-{m}": "customer 1042 does not exist in Fortnox" for m in ("08", "09", "10")
    }
    store = world.store()
    assert store.invoice_records("fortnox") == []
    assert store.runs() == [] and store.attention("fortnox") == []
    assert store.entry_count() > 400  # the ledger mirror is the one thing kept
    methods = {name.split(" ")[0] for name in world.app.requests if "/fortnox/3" in name}
    assert methods == {"GET"}


def test_dry_run_after_a_sync_reports_pending_changes(world: World) -> None:
    world.sync()
    world.post_ledger([sample_entry(revision=5, hours="7")])
    writes = world.writes()
    report = world.sync(dry_run=True)
    assert world.writes() == writes
    assert report.would == [("update", "SK-1004-" + sample_entry()["performed_on"][:7])]


def test_ledger_change_updates_the_open_draft(world: World) -> None:
    world.sync()
    entry = sample_entry(revision=2, hours="6")
    world.post_ledger([entry])
    report = world.sync()
    key = f"SK-1004-{entry['performed_on'][:7]}"
    assert report.updated == [key] and report.created == []
    assert_matches_ledger(world, report)
    (invoice,) = world.fake.live_by_key()[key]
    assert Decimal(6) in [Decimal(row["DeliveredQuantity"]) for row in invoice["InvoiceRows"]]


def test_booked_invoice_is_never_touched_changes_go_to_supplementary(world: World) -> None:
    world.sync()
    entry = sample_entry(revision=2, hours="6")
    key = f"SK-1004-{entry['performed_on'][:7]}"
    (invoice,) = world.fake.live_by_key()[key]
    world.fake.bookkeep(int(invoice["DocumentNumber"]))
    before = [dict(r) for r in invoice["InvoiceRows"]]
    world.post_ledger([entry])
    report = world.sync()
    assert report.created == [f"{key}-2"]
    assert invoice["InvoiceRows"] == before
    (supplement,) = world.fake.live_by_key()[f"{key}-2"]
    descriptions = [r["Description"] for r in supplement["InvoiceRows"]]
    assert descriptions[0].startswith(f"Tilläggsfaktura till faktura {invoice['DocumentNumber']}.")
    assert descriptions[1].startswith(f"Korrigering av faktura {key}:")
    assert_matches_ledger(world, report)
    assert (
        world.store()
        .invoiced("fortnox")
        .status(__import__("connector.planning").planning.InvoiceKey.parse(key))
        is InvoiceStatus.BOOKED
    )


def test_person_edited_draft_is_never_overwritten(world: World) -> None:
    world.sync()
    entry = sample_entry(revision=2, hours="6")
    key = f"SK-1004-{entry['performed_on'][:7]}"
    (invoice,) = world.fake.live_by_key()[key]
    invoice["InvoiceRows"][0]["Description"] = "Ändrad av ekonomiavdelningen"
    edited = [dict(r) for r in invoice["InvoiceRows"]]
    world.post_ledger([entry])
    report = world.sync()
    assert invoice["InvoiceRows"] == edited
    assert "was changed in Fortnox by a person" in report.invoice_attention[key]
    assert report.exit_code is ExitCode.ATTENTION
    assert report.created == [f"{key}-2"]  # the change went to a supplementary invoice
    assert_no_duplicates(world.driver)


def test_voided_entries_empty_a_draft_which_is_cancelled(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-08"
    ids = [
        raw["id"]
        for raw in Ledger(load()).entries()
        if isinstance(raw, dict)
        and raw["customer_number"] == "1004"
        and raw["performed_on"].startswith("2026-08")
    ]
    world.post_ledger(
        [{**raw, "revision": 9, "status": "void"} for raw in Ledger(load()).entries()
         if isinstance(raw, dict) and raw["id"] in ids]
    )  # fmt: skip
    report = world.sync()
    assert report.cancelled == [key]
    assert key not in world.fake.live_by_key()
    assert_matches_ledger(world, report)
    assert world.sync().cancelled == []


def test_entry_moved_off_a_draft_that_is_then_cancelled_stays_invoiced(world: World) -> None:
    """Found by the state machine: the only entry of a draft moves to another customer; the
    emptied draft is cancelled, and the moved entry must stay on its new invoice."""
    world.sync()
    key = "SK-1004-2026-08"
    assert len(world.fake.live_by_key()[key]) == 1
    moved = [
        {**raw, "revision": 9, "customer_number": "1005"}
        for raw in Ledger(load()).entries()
        if isinstance(raw, dict)
        and raw["customer_number"] == "1004"
        and raw["performed_on"].startswith("2026-08")
    ]
    world.post_ledger(moved)
    report = world.sync()
    assert report.cancelled == [key]
    assert_matches_ledger(world, report)
    assert world.sync().updated == []


def test_target_normalising_rows_is_not_taken_for_a_person_edit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fortnox may store rows in its own normal form; only a real edit locks a draft."""
    original = FortnoxFake._set_fields

    def normalising(row: dict[str, Any], sent: dict[str, Any]) -> None:
        original(row, sent)
        row["Description"] = row["Description"].replace("(ref. ", "(Ref: ")

    monkeypatch.setattr(FortnoxFake, "_set_fields", staticmethod(normalising))
    world.sync()
    for hours in ("6", "7"):
        world.post_ledger([sample_entry(revision=int(hours), hours=hours)])
        report = world.sync()
        assert len(report.updated) == 1, report.invoice_attention
        assert not [r for r in report.invoice_attention.values() if "1042" not in r]


# --- faults -----------------------------------------------------------------------------------


def test_lost_create_answer_is_reconciled_without_duplicate(world: World) -> None:
    world.faults(lost_create_rate=1.0)
    report = world.sync()
    assert len(report.recovered) == 98 and len(report.created) == 98
    assert_no_duplicates(world.driver)
    world.faults(lost_create_rate=0)
    assert_matches_ledger(world, world.sync())


def test_5xx_on_create_is_looked_up_before_sending_again(world: World) -> None:
    world.faults(error_rate=0.3, seed=7)
    for _ in range(10):  # a run that meets two unknown outcomes in a row stops with exit 4
        with contextlib.suppress(RemoteUnavailableError):
            world.sync()
            break
        assert_no_duplicates(world.driver)
    world.faults(error_rate=0)
    final = world.sync()
    assert_matches_ledger(world, final)
    assert len(world.fake.invoices) == 98


@pytest.mark.parametrize("point", ["before_post", "after_post", "after_pull"])
def test_crash_then_rerun_loses_nothing_and_duplicates_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    crash_at(monkeypatch, point)
    with pytest.raises(Crash):
        world.sync()
    monkeypatch.setattr(sync_module, "failpoint", lambda name: None)
    report = world.sync()
    assert_matches_ledger(world, report)
    if point == "after_post":
        assert len(report.recovered) == 1  # the invoice the crash hid was found, not re-sent


def test_crash_after_put_is_recovered(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.sync()
    world.post_ledger([sample_entry(revision=2, hours="6")])
    crash_at(monkeypatch, "after_put")
    with pytest.raises(Crash):
        world.sync()
    monkeypatch.setattr(sync_module, "failpoint", lambda name: None)
    report = world.sync()
    assert len(report.recovered) == 1 and report.updated == []
    assert_matches_ledger(world, report)


def test_rate_limited_requests_wait_and_go_through(world: World, sleeps: list[float]) -> None:
    world.faults(force_429=3)
    report = world.sync()
    assert report.rate_limited == 3
    assert sleeps.count(max(sleeps)) >= 1 and max(sleeps) >= 1  # waited a window each time
    assert_matches_ledger(world, report)


def test_sandbox_window_answers_429_and_the_connector_waits_it_out(
    tmp_path: Path, mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = make_world(tmp_path, mappings, rate_limit="100000/1")
    now = [0.0]  # the sandbox's clock moves only when the connector waits
    strict.fake.window = type(strict.fake.window)(25, 5.0, lambda: now[0])
    monkeypatch.setattr(http, "pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    report = strict.sync()  # the connector's own limiter is off (100000/1): it meets 429s
    assert report.rate_limited > 0
    assert_matches_ledger(strict, report)


def test_client_limiter_keeps_under_the_window(
    tmp_path: Path, mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(tmp_path, mappings)
    now = [0.0]
    world.fake.window = type(world.fake.window)(25, 5.0, lambda: now[0])
    monkeypatch.setattr(http, "pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(rate_window, "wall_clock", lambda: now[0])  # the shared window's clock
    fortnox_settings(world.settings).rate_limit = "24/5"
    report = world.sync()
    assert report.rate_limited == 0
    assert now[0] >= 5 * (report.requests // 24 - 1)  # it waited instead of being refused


def test_expired_token_is_refreshed_once(world: World) -> None:
    world.sync()
    world.faults(expire_tokens=True)
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    assert len(report.updated) == 1
    assert world.fake.token_grants["client_credentials"] == 2


def test_unknown_article_needs_attention_and_others_go_on(world: World, tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    text = (Path(world.settings.mappings_dir) / "service-categories.toml").read_text()
    (maps / "m.toml").write_text(text.replace('"SK-KONF"', '"SK-KONF2"'))
    world.settings.mappings_dir = maps
    world.mappings = load_mappings(maps)
    report = world.sync()
    assert report.plan is not None
    reasons = {r.reason for r in report.plan.results if "SK-KONF2" in r.reason}
    # Known from the article register before anything is sent: the entries of that category
    # need attention, and the rest of their invoices go out.
    assert reasons == {
        "article SK-KONF2 (category 'configuration') does not exist or is inactive in "
        "Fortnox: create or activate it there, or change the mapping"
    }
    assert len(report.created) > 90


def test_lost_state_with_a_cancelled_original_and_a_live_supplement_writes_nothing(
    world: World,
) -> None:
    """Found by a tester: a sync from a fresh state directory created a second live invoice for
    hours already on a live supplementary invoice, because the month's original invoice had
    been cancelled. Any invoice of the connector's form the state does not know, live or not,
    any suffix, now stops the sync before it writes (exit 2)."""
    import shutil

    world.sync()
    key = "SK-1004-2026-09"
    world.fake.cancel(int(draft_of(world, key)["DocumentNumber"]))
    world.post_ledger([sample_entry(id="LATE-1", performed_on="2026-09-29", hours="2")])
    assert world.sync().created == [f"{key}-2"]
    shutil.rmtree(world.settings.state_dir)  # the state directory is lost
    writes = world.writes()
    with pytest.raises(StateMismatchError) as info:
        world.sync()
    assert info.value.exit_code is ExitCode.CONFIG
    message = str(info.value)
    assert f"{key} (#" in message and "cancelled" in message and f"{key}-2 (#" in message
    assert "connector state rebuild" in message
    assert world.writes() == writes
    assert_no_duplicates(world.driver)


def test_a_state_directory_of_another_company_or_ledger_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sync()
    writes = world.writes()
    from connector.sandbox import fortnox as fake_module

    monkeypatch.setattr(fake_module, "DATABASE_NUMBER", 7654321)  # another Fortnox company
    with pytest.raises(StateMismatchError, match="tenant 1234567, not tenant 7654321"):
        world.sync()
    monkeypatch.undo()
    world.settings.ledger.url = "http://other-ledger.test/api/v1"
    with pytest.raises(StateMismatchError, match="belongs to the ledger"):
        world.sync()
    assert world.writes() == writes


def test_unreachable_fortnox_exits_4(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fortnox_settings(world.settings).api_url = "http://127.0.0.1:9/fortnox/3"
    from connector.ledger import LedgerClient
    from connector.targets.fortnox import client as fortnox_client

    token = world.settings.ledger.token
    assert token is not None and world.settings.ledger.url
    ledger = LedgerClient(world.settings.ledger.url, token, client=world.client())
    target = fortnox_client.build(world.settings, http=world.client())
    import httpx

    target.api.http = httpx.Client()  # API calls go to a closed port; tokens still come
    with pytest.raises(RemoteUnavailableError) as info:
        sync_module.run_sync(world.settings, ledger=ledger, target=target)
    assert info.value.exit_code is ExitCode.UNREACHABLE
    store = world.store()
    assert all(r.pending is None for r in store.invoice_records("fortnox"))
    (run,) = store.runs()
    assert run.exit_code == 4


def test_wrong_client_secret_is_a_config_error(world: World) -> None:
    from pydantic import SecretStr

    fortnox_settings(world.settings).client_secret = SecretStr("wrong")
    with pytest.raises(ConfigError, match="CONNECTOR_FORTNOX__CLIENT_SECRET"):
        world.sync()


def test_refresh_token_mode_without_login_exits_5(world: World) -> None:
    fortnox_settings(world.settings).tenant_id = None
    with pytest.raises(ReauthRequiredError, match="connector auth login fortnox") as info:
        world.sync()
    assert info.value.exit_code is ExitCode.REAUTH


def test_an_unknown_target_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.settings import load_settings

    monkeypatch.setenv("CONNECTOR_TARGET", "sage")
    with pytest.raises(ConfigError, match=r"CONNECTOR_TARGET: .*fortnox, visma"):
        load_settings()


# --- Fortnox as it really is (issue 6): rows that shift, sent invoices, prices, dates --------


def draft_of(world: World, key: str) -> dict[str, Any]:
    (invoice,) = world.fake.live_by_key()[key]
    return invoice


def last_plan(world: World) -> Plan:
    report = world.reports[-1]
    assert report.plan is not None
    return report.plan


def test_a_back_dated_entry_shifts_rows_and_the_update_lands_exactly(world: World) -> None:
    """A new entry dated before every row of a draft sorts first: sent by position, each row
    would land on its neighbour and keep its price and VAT. The draft must equal the plan."""
    world.sync()
    first = sample_entry()
    key = f"SK-1004-{first['performed_on'][:7]}"
    early = sample_entry(
        id="BACK-1", performed_on=first["performed_on"][:8] + "01", category="training",
        unit_price=None, hours="1.25", prepaid_hours="0",
    )  # fmt: skip
    world.post_ledger([early])
    report = world.sync()
    assert report.updated == [key]
    assert draft_of(world, key)["InvoiceRows"][1]["Description"].startswith(early["performed_on"])
    assert_matches_ledger(world, report)


def test_prepaid_text_rows_appear_and_disappear(world: World) -> None:
    world.sync()
    entry = sample_entry()
    key = f"SK-1004-{entry['performed_on'][:7]}"
    half = str(Decimal(entry["hours"]) / 2)
    world.post_ledger([{**entry, "revision": 5, "prepaid_hours": half}])
    report = world.sync()
    assert report.updated == [key]
    assert any("förbetalda" in r["Description"] for r in draft_of(world, key)["InvoiceRows"])
    assert_matches_ledger(world, report)
    world.post_ledger([{**entry, "revision": 6, "prepaid_hours": "0"}])
    report = world.sync()
    assert report.updated == [key]
    assert not any("förbetalda" in r["Description"] for r in draft_of(world, key)["InvoiceRows"])
    assert_matches_ledger(world, report)


def test_a_sent_invoice_is_never_changed_again(world: World) -> None:
    """Fortnox accepts a PUT on an invoice that was e-mailed but not booked; the customer holds
    it, so the connector must not: changes go to a supplementary invoice."""
    world.sync()
    entry = sample_entry(revision=2, hours="6")
    key = f"SK-1004-{entry['performed_on'][:7]}"
    invoice = draft_of(world, key)
    world.fake.mark_sent(int(invoice["DocumentNumber"]))
    before = [dict(r) for r in invoice["InvoiceRows"]]
    world.post_ledger([entry])
    report = world.sync()
    assert report.created == [f"{key}-2"] and report.updated == []
    assert invoice["InvoiceRows"] == before
    assert world.fake.modified_while_sent == []
    supplement = draft_of(world, f"{key}-2")
    assert supplement["InvoiceRows"][0]["Description"].startswith(
        f"Tilläggsfaktura till faktura {invoice['DocumentNumber']}."
    )
    assert_matches_ledger(world, report)
    store = world.store()
    status = store.invoiced("fortnox").status(InvoiceKey.parse(key))
    store.close()
    assert status is InvoiceStatus.SENT


def test_sent_invoice_with_emptied_rows_is_not_cancelled(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-08"
    invoice = draft_of(world, key)
    world.fake.mark_sent(int(invoice["DocumentNumber"]))
    world.post_ledger(
        [{**e, "revision": 9, "status": "void"} for e in entries_of(world.app)
         if e["customer_number"] == "1004" and e["performed_on"].startswith("2026-08")]
    )  # fmt: skip
    report = world.sync()
    assert report.cancelled == [] and not invoice["Cancelled"]
    assert report.created == [f"{key}-2"]  # a credit for what the sent invoice billed
    assert world.fake.modified_while_sent == []
    assert_matches_ledger(world, report)


def test_every_row_carries_an_explicit_price(world: World) -> None:
    """Rows the ledger and the mappings leave unpriced get the article register's price; an
    article without one (SK-PL) would go out at 0, so those entries need attention instead."""
    report = world.sync()
    for invoice in world.fake.invoices.values():
        for row in invoice["InvoiceRows"]:
            if row["ArticleNumber"]:
                assert Decimal(str(row["Price"])) > 0, invoice["DocumentNumber"]
    assert report.plan is not None
    zero = [r for r in report.plan.results if "would be invoiced at price 0" in r.reason]
    assert zero and all("SK-PL" in r.reason or "SK-DATA" in r.reason for r in zero)
    assert_matches_ledger(world, report)


def test_customer_card_defaults_do_not_change_the_money(world: World) -> None:
    """Customer 1005 shows prices including VAT by default and 1004 has a predefined remark:
    the connector sends VATIncluded false, and leaves the remark alone."""
    world.sync()
    for invoice in world.fake.invoices.values():
        assert invoice["VATIncluded"] is False
    remark = world.fake.customers["1004"].invoice_remark
    assert remark
    assert all(
        i["Remarks"] == remark
        for i in world.fake.invoices.values()
        if i["CustomerNumber"] == "1004"
    )


def test_a_remarks_setting_overrides_the_card(world: World) -> None:
    world.settings.invoice.remarks = "Tack för att ni anlitar oss."
    world.sync()
    assert {i["Remarks"] for i in world.fake.invoices.values()} == {"Tack för att ni anlitar oss."}


def test_invoices_are_dated_by_the_policy_and_out_of_locked_periods(world: World) -> None:
    """The night is 2026-10-10: September's invoices get September's last day; August's, made
    after September ended, the day they are made; October's the month's end. A locked period
    moves a date to the first open day."""
    world.fake.locked_through = date(2026, 9, 20)
    report = world.sync()
    dates = {
        i["ExternalInvoiceReference1"][-7:]: i["InvoiceDate"] for i in world.fake.invoices.values()
    }
    assert dates == {"2026-08": "2026-10-10", "2026-09": "2026-09-30", "2026-10": "2026-10-31"}
    assert not report.notes
    due = {i["DueDate"] for i in world.fake.invoices.values() if i["InvoiceDate"] == "2026-09-30"}
    assert "2026-10-30" in due  # the customer's terms (30 days) apply
    world.fake.reset()
    shutil.rmtree(world.settings.state_dir)
    world.fake.locked_through = date(2026, 9, 30)
    report = world.sync()
    dates = {
        i["ExternalInvoiceReference1"][-7:]: i["InvoiceDate"] for i in world.fake.invoices.values()
    }
    assert dates["2026-09"] == "2026-10-01"
    assert any("locked the period through 2026-09-30" in n for n in report.notes)


def test_a_locked_period_refusal_names_the_cause(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connector did not know the lock (no scope for it): Fortnox's refusal is explained."""
    world.fake.locked_through = date(2026, 9, 30)
    from connector.targets.fortnox.client import FortnoxClient

    monkeypatch.setattr(FortnoxClient, "locked_through", lambda self: None)
    report = world.sync()
    reasons = [
        r
        for k, r in report.invoice_attention.items()
        if ("2026-09" in k or "2026-08" in k) and "1042" not in k
    ]
    assert reasons and all(r.startswith("Fortnox refuses the invoice date") for r in reasons)
    assert any("2026-10" in k for k in report.created)


def test_fortnox_storing_something_else_locks_the_invoice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After every write the answer is compared with the plan: a price Fortnox stored
    differently is flagged and the invoice left for a person, never silently."""
    original = FortnoxFake._create

    def cheaper(self: FortnoxFake, request: Any) -> Any:
        response = original(self, request)
        newest = self.invoices[max(self.invoices)]
        if newest["CustomerNumber"] == "1007":
            for row in newest["InvoiceRows"]:
                if row["ArticleNumber"]:
                    row["Price"] = Decimal("1.00")
            response = json_response(201, {"Invoice": newest})
        return response

    monkeypatch.setattr(FortnoxFake, "_create", cheaper)
    report = world.sync()
    flagged = {k: r for k, r in report.invoice_attention.items() if k.startswith("SK-1007-")}
    assert flagged and all("stored invoice" in r and "price 1.00" in r for r in flagged.values())
    store = world.store()
    statuses = {store.invoiced("fortnox").status(InvoiceKey.parse(k)) for k in flagged}
    store.close()
    assert statuses == {InvoiceStatus.LOCKED}


def test_a_draft_missing_from_the_search_is_read_directly(world: World) -> None:
    """Fortnox's search may not list an invoice yet: the connector reads it by number before
    calling it missing."""
    world.sync()
    world.faults(search_lag_seconds=3600)  # every invoice made above is hidden from the search
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    assert len(report.updated) == 1
    assert not [r for r in report.invoice_attention.values() if "not found" in r]


def test_an_invoice_fortnox_no_longer_has_never_counts_as_cancelled(world: World) -> None:
    """Fortnox cannot delete an invoice (a cancelled one stays): one that answers "not found"
    means another company or address, and is flagged on every run, however long it lasts,
    never taken as cancelled (which would leave its hours uninvoiced)."""
    fortnox_settings(world.settings).search_settle_seconds = 600
    now = [datetime(2026, 11, 1, 2, 0, tzinfo=UTC)]
    world.sync(clock=lambda: now[0])
    entry = sample_entry(revision=2, hours="6")
    key = f"SK-{entry['customer_number']}-{entry['performed_on'][:7]}"
    number = next(
        n for n, i in world.fake.invoices.items() if i["ExternalInvoiceReference1"] == key
    )
    missing = world.fake.invoices.pop(number)
    world.post_ledger([entry])
    for _ in range(2):
        report = world.sync(clock=lambda: now[0])
        assert "where invoices cannot be deleted" in report.invoice_attention[key]
        assert report.created == [] and report.cancelled == []
        now[0] += timedelta(days=1)
    assert world.store().invoiced("fortnox").status(InvoiceKey.parse(key)) is InvoiceStatus.OPEN
    world.fake.invoices[number] = missing  # found again: the update goes through
    report = world.sync(clock=lambda: now[0])
    assert report.updated == [key]
    assert_matches_ledger(world, report)


def test_a_lost_create_is_not_sent_again_before_the_search_has_settled(
    world: World,
) -> None:
    """If the search lags, a lost create that the search does not list yet may still exist:
    it is looked up again once the search has settled, and only then sent."""
    fortnox_settings(world.settings).search_settle_seconds = 600
    world.faults(search_lag_seconds=300, lost_create_rate=1.0)
    now = [datetime(2026, 11, 1, 2, 0, tzinfo=UTC)]
    world.fake.clock = lambda: now[0].timestamp()  # the fake's search lag runs on this clock
    report = world.sync(clock=lambda: now[0])
    assert report.created == []
    waiting = [r for r in report.invoice_attention.values() if "does not list it yet" in r]
    assert len(waiting) == len(world.fake.invoices) == 98  # each waits; none is sent twice
    world.faults(lost_create_rate=0)
    now[0] += timedelta(minutes=5)
    report = world.sync(clock=lambda: now[0])  # listed by now: adopted, not sent again
    assert len(report.recovered) == 98 and report.created == []
    assert len(world.fake.invoices) == 98
    assert_matches_ledger(world, report)


def test_a_put_whose_answer_is_lost_is_settled_by_reading(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sync()
    original = FortnoxFake._update
    drops = [1]

    def dropping(self: FortnoxFake, number: int, invoice: dict[str, Any], request: Any) -> Any:
        response = original(self, number, invoice, request)
        if drops[0]:
            drops[0] -= 1
            raise DropConnection  # the update happened; its answer never arrives
        return response

    monkeypatch.setattr(FortnoxFake, "_update", dropping)
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    assert len(report.updated) == 1 and drops == [0]
    assert_matches_ledger(world, report)


def test_puts_refused_with_5xx_are_sent_again_with_fresh_row_ids(world: World) -> None:
    world.sync()
    world.post_ledger(
        [sample_entry(revision=2, hours="6"), sample_entry(id="NEW-9", hours="1", revision=1)]
    )
    world.faults(error_rate=0.4, seed=5)
    for _ in range(10):
        with contextlib.suppress(RemoteUnavailableError):
            world.sync()
            break
    world.faults(error_rate=0)
    assert_matches_ledger(world, world.sync())


def test_a_refused_read_during_recovery_flags_only_that_invoice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sync()
    world.post_ledger([sample_entry(revision=2, hours="6")])
    crash_at(monkeypatch, "after_put")
    with pytest.raises(Crash):
        world.sync()
    monkeypatch.setattr(sync_module, "failpoint", lambda name: None)
    from connector.targets.fortnox.client import FortnoxClient

    original = FortnoxClient.get
    refused = [1]

    def refusing(self: FortnoxClient, number: str) -> Any:
        if refused[0]:
            refused[0] -= 1
            raise TargetRefusal("Nej", code="2000588", status=400)
        return original(self, number)

    monkeypatch.setattr(FortnoxClient, "get", refusing)
    report = world.sync()
    assert any("cannot check what became of" in r for r in report.invoice_attention.values())
    assert report.exit_code is ExitCode.ATTENTION
    later = world.sync()  # the next run is not blocked
    assert later.recovered and not later.invoice_attention.keys() - {
        k for k in later.invoice_attention if "1042" in k
    }


# --- people and files that are wrong (issue 7) --------------------------------------------------


def mappings_with(world: World, tmp_path: Path, old: str, new: str) -> None:
    """Point the world at a copy of the shipped mappings with one edit."""
    folder = tmp_path / "edited-maps"
    folder.mkdir(exist_ok=True)
    text = (Path(world.settings.mappings_dir) / "service-categories.toml").read_text()
    assert old in text
    (folder / "service-categories.toml").write_text(text.replace(old, new))
    world.settings.mappings_dir = folder
    world.mappings = load_mappings(folder)


def snapshot(world: World) -> dict[int, Any]:
    return {
        n: (dict(i), [dict(r) for r in i["InvoiceRows"]]) for n, i in world.fake.invoices.items()
    }


def test_a_category_typo_then_a_sync_leaves_every_invoice_unchanged(
    world: World, tmp_path: Path
) -> None:
    """Found by a tester: a one-letter typo renaming a category withdrew the invoiced entries
    of that category and cancelled two drafts; after the fix they came back on supplementary
    invoices. Now the entries stay where they are and need attention."""
    world.sync()
    before = snapshot(world)
    mappings_with(world, tmp_path, "[categories.installation]", "[categories.instalation]")
    report = world.sync()
    assert snapshot(world) == before
    assert report.cancelled == [] and report.updated == [] and report.created == []
    assert report.plan is not None
    stuck = [r for r in report.plan.results if "unknown category 'installation'" in r.reason]
    invoiced = [r for r in stuck if r.keys]  # the ones already on an invoice
    assert invoiced and all("stays on invoice" in r.reason for r in invoiced)
    mappings_with(world, tmp_path, "[categories.instalation]", "[categories.installation]")
    fixed = world.sync()
    assert snapshot(world) == before and fixed.created == []  # nothing to repair
    assert_matches_ledger(world, fixed)


def test_a_price_change_leaves_existing_rows_unchanged(world: World, tmp_path: Path) -> None:
    world.sync()
    before, writes = snapshot(world), world.writes()
    mappings_with(
        world,
        tmp_path,
        'article = "SK-DATA"\nprice = "995.00"',
        'article = "SK-DATA"\nprice = "1095.00"',
    )
    report = world.sync()
    assert world.writes() == writes and snapshot(world) == before
    assert report.exit_code is ExitCode.ATTENTION  # only the sample's usual items
    new = sample_entry(
        id="NEW-DATA",
        category="data_maintenance",
        unit_price=None,
        hours="2",
        customer_number="1003",
    )

    def data_prices() -> list[Decimal]:
        rows = [r for i in world.fake.invoices.values() for r in i["InvoiceRows"]]
        return [Decimal(str(r["Price"])) for r in rows if r["ArticleNumber"] == "SK-DATA"]

    old_rows, agreed = data_prices().count(Decimal(995)), data_prices().count(Decimal(1095))
    assert old_rows > 0
    world.post_ledger([new])
    world.sync()
    assert data_prices().count(Decimal(995)) == old_rows  # rows on invoices keep their price
    assert data_prices().count(Decimal(1095)) == agreed + 1  # the new work gets the new price


def test_an_absurd_ledger_value_is_not_invoiced_and_the_rest_goes_through(world: World) -> None:
    world.post_ledger([sample_entry(id="HUGE-1", hours="4000", revision=1)])
    report = world.sync()
    assert report.plan is not None
    (huge,) = [r for r in report.plan.results if r.ref == "HUGE-1"]
    assert huge.outcome is Outcome.ATTENTION and "CONNECTOR_LIMITS__MAX_HOURS" in huge.reason
    assert len(report.created) == 98
    assert not any("HUGE" in r["Description"] for i in world.fake.invoices.values()
                   for r in i["InvoiceRows"])  # fmt: skip


# --- found by review: lost answers, crash windows, legacy rows, races with a person ----------


def test_a_register_price_change_never_re_bills_closed_months(world: World) -> None:
    """An entry priced from the article register and booked keeps what it billed when the
    register's price changes later: no correction, no supplementary invoice."""
    world.sync()
    for invoice in list(world.fake.invoices.values()):
        world.fake.bookkeep(int(invoice["DocumentNumber"]))
    before = snapshot(world)
    world.fake.articles["SK-UTB"].sales_price = Decimal("1200.00")
    report = world.sync()
    assert report.created == [] and report.updated == [] and snapshot(world) == before


def test_a_put_that_landed_then_was_booked_before_the_reread_is_not_billed_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sync()
    original = FortnoxFake._update

    def landed_then_booked(self: FortnoxFake, number: int, invoice: Any, request: Any) -> Any:
        original(self, number, invoice, request)
        invoice["Booked"] = True  # a person books it within the lost answer's window
        raise DropConnection

    monkeypatch.setattr(FortnoxFake, "_update", landed_then_booked)
    world.post_ledger([sample_entry(revision=2, hours="6")])
    world.sync()
    monkeypatch.setattr(FortnoxFake, "_update", original)
    report = world.sync()
    assert report.created == []  # no correction of a change that did land
    assert_matches_ledger(world, report)


def one_row_legacy_draft(world: World) -> tuple[str, dict[str, Any]]:
    """A draft as an earlier version wrote it: no header row, and a single entry whose change
    leaves no row in common, so no update of it can name a RowId."""
    entry = sample_entry(id="SOLO-1", customer_number="1010", performed_on="2026-07-15", hours="2")
    world.post_ledger([entry])
    world.sync()
    key = "SK-1010-2026-07"
    invoice = draft_of(world, key)
    del invoice["InvoiceRows"][0]
    store = world.store()
    record = store.invoice_record("fortnox", InvoiceKey.parse(key))
    assert record is not None and record.written is not None
    legacy = replace(record.written, rows=record.written.rows[1:], remote=None)
    store.db.execute("UPDATE invoices SET written = ? WHERE key = ?", (legacy.to_json(), key))
    store.close()
    world.post_ledger([{**entry, "revision": 2, "hours": "3"}])
    return key, invoice


def test_a_draft_written_without_a_header_is_stepped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing on the draft pairs with the plan, so the connector first adds the header alone
    (keeping every row), records that, then makes the change."""
    key, invoice = one_row_legacy_draft(world)
    steps: list[str] = []
    crash_at(monkeypatch, "after_header_step")
    original = sync_module.failpoint

    def spy(name: str) -> None:
        steps.append(name)
        original(name)

    monkeypatch.setattr(sync_module, "failpoint", spy)
    with pytest.raises(Crash):
        world.sync()  # killed between the two writes
    assert "after_header_step" in steps
    assert invoice["InvoiceRows"][0]["Description"].startswith("Servicekonto:")
    monkeypatch.setattr(sync_module, "failpoint", lambda name: None)
    report = world.sync()
    assert report.updated == [key] and not report.invoice_attention.keys() - {
        k for k in report.invoice_attention if "1042" in k
    }
    assert_matches_ledger(world, report)


def test_a_crash_between_cancelling_and_recording_loses_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """August's entries move to another customer: the emptied draft is cancelled, and the run
    dies before recording it. The next run must see its own cancel, not a person's."""
    world.sync()
    moved = [
        {**raw, "revision": 9, "customer_number": "1005"}
        for raw in entries_of(world.app)
        if raw["customer_number"] == "1004" and raw["performed_on"].startswith("2026-08")
    ]
    world.post_ledger(moved)
    crash_at(monkeypatch, "after_cancel")
    with pytest.raises(Crash):
        world.sync()
    monkeypatch.setattr(sync_module, "failpoint", lambda name: None)
    report = world.sync()
    assert "SK-1004-2026-08" in report.recovered
    assert_matches_ledger(world, report)


def test_a_draft_dated_in_a_period_locked_later_is_re_dated(world: World) -> None:
    world.sync()
    world.fake.locked_through = date(2026, 10, 12)  # locked after the drafts were made
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    assert len(report.updated) == 1
    (invoice,) = world.fake.live_by_key()[report.updated[0]]
    assert invoice["InvoiceDate"] == "2026-10-13"
    assert any("re-dated 2026-10-13" in n for n in report.notes)


def test_an_invoice_sent_between_our_read_and_our_write_is_flagged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sync()
    from connector.targets.fortnox.client import FortnoxClient

    original = FortnoxClient.get

    def read_then_sent(self: FortnoxClient, number: str) -> Any:
        found = original(self, number)
        world.fake.mark_sent(int(number))  # a person e-mails it right after our read
        return found

    monkeypatch.setattr(FortnoxClient, "get", read_then_sent)
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    (reason,) = [r for k, r in report.invoice_attention.items() if "1042" not in k]
    assert "it was sent or booked while the connector wrote to it" in reason


def test_a_person_saving_between_our_read_and_our_write_locks_the_draft(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving renumbers every row, so our PUT names row ids that no longer exist: that is a
    person's edit, not a connector bug."""
    world.sync()
    from connector.targets.fortnox.client import FortnoxClient

    original = FortnoxClient.get
    edited: list[int] = []

    def read_then_edited(self: FortnoxClient, number: str) -> Any:
        found = original(self, number)
        if not edited:
            edited.append(int(number))
            world.fake.edit_row(int(number), 1, Description="Ändrad av ekonomi")
        return found

    monkeypatch.setattr(FortnoxClient, "get", read_then_edited)
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    reasons = [r for k, r in report.invoice_attention.items() if "1042" not in k]
    assert reasons and "by a person" in reasons[0]
    assert "connector bug" not in " ".join(reasons)


def test_lost_put_answers_are_settled_without_duplicates(world: World) -> None:
    world.sync()
    world.post_ledger(
        [sample_entry(revision=2, hours="6"), sample_entry(id="NEW-8", hours="1", revision=1)]
    )
    world.faults(lost_update_rate=1.0)
    report = world.sync()
    assert len(report.updated) == 1
    world.faults(lost_update_rate=0)
    assert_matches_ledger(world, world.sync())


def null_price_of_booked_row(world: World, key: str, *, keep_answer: bool) -> str:
    """Make one booked row look as the first version wrote it: no price on the row."""
    store = world.store()
    (entry_id, raw) = store.db.execute(
        "SELECT entry_id, rows FROM placements WHERE key = ? LIMIT 1", (key,)
    ).fetchone()
    rows = json.loads(raw)
    for row in rows:
        if row["article"]:
            row["price"] = None
    store.db.execute(
        "UPDATE placements SET rows = ? WHERE key = ? AND entry_id = ?",
        (json.dumps(rows), key, entry_id),
    )
    if not keep_answer:
        store.db.execute("UPDATE invoices SET written = NULL WHERE key = ?", (key,))
    store._fill_legacy_prices()
    store.close()
    return str(entry_id)


def test_rows_written_without_a_price_get_the_price_fortnox_answered(world: World) -> None:
    """Found by review: the first version left prices to Fortnox; correcting such a booked row
    built a correction without a price, and the sync crashed every night."""
    world.sync()
    key = "SK-1004-2026-08"
    world.fake.bookkeep(int(draft_of(world, key)["DocumentNumber"]))
    entry_id = null_price_of_booked_row(world, key, keep_answer=True)
    entry = next(e for e in entries_of(world.app) if e["id"] == entry_id)
    world.post_ledger([{**entry, "revision": 7, "hours": "9"}])
    report = world.sync()
    assert report.created == [f"{key}-2"]
    assert_matches_ledger(world, report)


def test_a_correction_of_a_row_of_unknown_price_needs_attention(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-08"
    world.fake.bookkeep(int(draft_of(world, key)["DocumentNumber"]))
    entry_id = null_price_of_booked_row(world, key, keep_answer=False)
    entry = next(e for e in entries_of(world.app) if e["id"] == entry_id)
    world.post_ledger([{**entry, "revision": 7, "hours": "9"}])
    report = world.sync()  # no crash
    assert report.plan is not None
    (result,) = [r for r in report.plan.results if r.ref == entry_id]
    assert result.outcome is Outcome.ATTENTION and "cannot be computed" in result.reason


def test_an_entry_moved_off_a_draft_a_person_just_edited_is_credited_there(world: World) -> None:
    """Found by the state machine: an entry moves to another customer; the new customer's draft
    is written first, then the old draft turns out to be edited by a person (so billed). The
    old row must be credited, though rows for the entry's current revision exist."""
    world.sync()
    report = world.reports[-1]
    assert report.plan is not None
    on_invoices = {r.ref for r in report.plan.results if r.reason == "on invoice"}
    entry = next(
        e for e in entries_of(world.app)
        if e["customer_number"] == "1006" and e["id"] in on_invoices
    )  # fmt: skip
    old_key = f"SK-1006-{entry['performed_on'][:7]}"
    world.post_ledger([{**entry, "revision": 50, "customer_number": "1003", "hours": "0.5"}])
    number = int(draft_of(world, old_key)["DocumentNumber"])
    world.fake.edit_row(number, 0, Description="Ändrad av ekonomi")
    world.edited.add(str(number))
    report = world.sync()
    assert f"{old_key}-2" in report.created  # the credit for the row left on the edited draft
    assert_matches_ledger(world, report)


def test_a_lost_create_a_person_edits_before_it_is_found_is_not_billed_twice(
    world: World,
) -> None:
    """Found by the state machine: a create whose answer was lost is found later, after a
    person changed its text. It is still ours: recorded with its rows, left to the person, and
    its entries are not invoiced again on a supplementary invoice."""
    fortnox_settings(world.settings).search_settle_seconds = 600
    world.faults(search_lag_seconds=300, lost_create_rate=1.0)
    now = [datetime(2026, 10, 10, 2, 0, tzinfo=UTC)]
    world.fake.clock = lambda: now[0].timestamp()
    world.sync(clock=lambda: now[0])
    world.faults(lost_create_rate=0)
    number = min(world.fake.invoices)
    world.fake.edit_row(number, 0, Description="Ändrad av ekonomi")
    world.edited.add(str(number))
    now[0] += timedelta(days=1)
    report = world.sync(clock=lambda: now[0])
    key = world.fake.invoices[number]["ExternalInvoiceReference1"]
    assert "by a person" in report.invoice_attention[key]
    assert not [k for k in report.created if k.startswith(key)]
    assert_matches_ledger(world, report)


def test_bad_input_is_caught_before_it_becomes_money(world: World) -> None:
    """Every bad ledger input of one night at once: an absurd amount, control characters and
    an escape sequence in texts, a malformed entry. Each is named; the good entries go out."""
    bad = [
        sample_entry(id="BAD-HOURS", hours="350", revision=1),
        sample_entry(id="BAD-PRICE", unit_price="99999.00", revision=1),
        sample_entry(
            id="CTRL-1",
            revision=1,
            description="Fel\x00sökning\x1b[2J klar\u202e",
            reference="\x07R",
        ),
        {**sample_entry(id="BROKEN-1", revision=1), "hours": "many"},
    ]
    world.post_ledger(bad)
    report = world.sync()
    assert report.exit_code is ExitCode.ATTENTION
    assert report.plan is not None
    why = {r.ref: r.reason for r in report.plan.results}
    assert "CONNECTOR_LIMITS__MAX_HOURS" in why["BAD-HOURS"]
    assert "CONNECTOR_LIMITS__MAX_UNIT_PRICE" in why["BAD-PRICE"]
    assert why["BROKEN-1"].startswith("malformed entry: hours")
    assert why["CTRL-1"] == "on invoice"
    texts = [r["Description"] for i in world.fake.invoices.values() for r in i["InvoiceRows"]]
    assert not [t for t in texts if any(ord(c) < 32 or c == "\u202e" for c in t)]
    assert any("Fel sökning [2J klar" in t for t in texts)
    assert len(report.created) == 98  # the good entries all went through
    assert_matches_ledger(world, report)


@pytest.mark.parametrize(
    ("setting", "value", "variable"),
    [
        ("api_url", "http://sandbox.test/not-fortnox/3", "CONNECTOR_FORTNOX__API_URL"),
        ("auth_url", "http://sandbox.test/not-oauth", "CONNECTOR_FORTNOX__AUTH_URL"),
    ],
)
def test_a_wrong_accounting_system_address_is_a_config_error(
    world: World, setting: str, value: str, variable: str
) -> None:
    setattr(fortnox_settings(world.settings), setting, value)
    with pytest.raises(ConfigError, match=variable) as info:
        world.sync()
    assert info.value.exit_code is ExitCode.CONFIG
    assert world.writes() == 0
    assert str(info.value).count("HTTP ") <= 1  # the status once, not twice


def test_an_address_in_a_message_keeps_its_port() -> None:
    """Found by a tester: "http://127.0.0.1/visma/v1/..." for an address on port 43935."""
    import httpx

    from connector.targets.api import where

    request = httpx.Request("GET", "http://127.0.0.1:43935/visma/v1/companysettings?$page=1")
    answer = httpx.Response(404, request=request)
    assert where(answer) == "http://127.0.0.1:43935/visma/v1/companysettings"


# --- found by the second review ----------------------------------------------------------------


def booked_entry(world: World, customer: str = "1004") -> tuple[dict[str, Any], str]:
    """A priced entry whose invoice is booked, and that invoice's key."""
    world.sync()
    report = world.reports[-1]
    assert report.plan is not None
    on = {r.ref: r.keys[0].text for r in report.plan.results if r.reason == "on invoice"}
    entry = next(
        e for e in entries_of(world.app)
        if e["customer_number"] == customer and e["id"] in on and e["unit_price"]
    )  # fmt: skip
    key = on[entry["id"]]
    world.fake.bookkeep(int(draft_of(world, key)["DocumentNumber"]))
    return entry, key


def test_a_move_left_half_written_is_finished_later(world: World) -> None:
    """An entry on a booked invoice moves to a customer Fortnox does not have yet: the credit
    is written, the charge refused. Once the customer exists, the charge goes out."""
    entry, key = booked_entry(world)
    world.post_ledger([{**entry, "revision": 30, "customer_number": "1042"}])
    first = world.sync()
    assert f"{key}-2" in first.created
    from connector.sandbox.fortnox import FakeCustomer

    world.fake.customers["1042"] = FakeCustomer("1042", "Ny Kund AB")
    second = world.sync()
    assert any(k.startswith("SK-1042-") for k in second.created)
    assert_matches_ledger(world, second)


def test_an_unwritten_draft_is_not_taken_for_the_entrys_new_revision(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, _ = booked_entry(world)
    hours = entry["hours"]
    world.post_ledger([{**entry, "revision": 31, "hours": str(Decimal(hours) + 1)}])
    world.sync()  # a supplement with the correction
    world.post_ledger([{**entry, "revision": 32, "hours": hours}])  # back to what was booked
    from connector.targets.fortnox.client import FortnoxClient

    original = FortnoxClient.discard
    refused = [1]

    def refusing(self: FortnoxClient, number: str) -> None:
        if refused[0]:
            refused[0] -= 1
            raise TargetRefusal("Nej", code="2000999", status=400)
        original(self, number)

    monkeypatch.setattr(FortnoxClient, "discard", refusing)
    world.sync()  # the emptied supplement cannot be cancelled this time
    monkeypatch.setattr(FortnoxClient, "discard", original)
    assert_matches_ledger(world, world.sync())


def test_an_older_state_restored_holds_the_month_instead_of_billing_twice(
    world: World, tmp_path: Path
) -> None:
    _, key = booked_entry(world, customer="1005")
    # Another month's draft moves on after the backup, and is then booked by a person.
    draft_key = next(k for k in world.fake.live_by_key() if k.startswith("SK-1005-") and k != key)
    moving = next(
        e for e in entries_of(world.app)
        if e["customer_number"] == "1005" and e["performed_on"][:7] == draft_key[8:15]
        and e["category"] not in ("guidance", "product_fault", "partner_api_update",
                                  "account_admin", "project_management")
        and e["prepaid_hours"] == "0"
    )  # fmt: skip
    backup = tmp_path / "backup"
    shutil.copytree(world.settings.state_dir, backup)
    world.post_ledger([{**moving, "revision": 40, "hours": "5.5"}])
    world.sync()
    world.fake.bookkeep(int(draft_of(world, draft_key)["DocumentNumber"]))
    shutil.rmtree(world.settings.state_dir)
    shutil.copytree(backup, world.settings.state_dir)  # an old backup comes back
    world.post_ledger([{**moving, "revision": 41, "hours": "6.5"}])
    report = world.sync()
    assert not [k for k in report.created if k.startswith(draft_key)]
    assert any("bills other amounts than the connector recorded" in r
               for r in report.invoice_attention.values())  # fmt: skip


def test_a_cancelled_copy_of_an_invoice_does_not_stop_the_sync(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-09"
    original = draft_of(world, key)
    copy = max(world.fake.invoices) + 1
    world.fake.invoices[copy] = {**original, "DocumentNumber": str(copy), "Cancelled": True}
    world.post_ledger([sample_entry(revision=2, hours="6")])
    report = world.sync()
    assert report.exit_code is ExitCode.ATTENTION  # only the usual 1042 items
    assert_matches_ledger(world, report)


def test_one_state_directory_never_writes_to_two_accounting_systems(
    world: World, tmp_path: Path
) -> None:
    """Found by a tester: a state directory used with Fortnox, then with Visma, invoiced the
    same hours again in Visma. A state directory writes to one system; another is refused
    before anything is read or sent, also for a state from before that was recorded."""
    from connector.sandbox import visma_of
    from connector.sandbox.demo import sandbox_settings
    from connector.state import BOUND_SYSTEM
    from tests.conftest import MAPPINGS_DIR

    world.sync()
    visma = sandbox_settings(BASE, world.settings.state_dir, MAPPINGS_DIR, "visma")
    other = World(app=world.app, settings=visma, mappings=world.mappings)
    for dry_run in (True, False):
        with pytest.raises(StateMismatchError, match="CONNECTOR_TARGET=fortnox") as info:
            other.sync(dry_run=dry_run)
        assert info.value.exit_code is ExitCode.CONFIG
    assert visma_of(world.app).drafts == {}
    store = world.store()
    store.db.execute("DELETE FROM meta WHERE key = ?", (BOUND_SYSTEM,))  # an older state
    store.close()
    with pytest.raises(StateMismatchError, match="invoices to Fortnox"):
        other.sync()
    with pytest.raises(StateMismatchError):
        other.rebuild()
    assert world.store().entry_count() > 400  # the refused rebuild cleared nothing


def test_credentials_of_the_other_system_hint_at_the_target_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connector.settings import load_settings

    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "http://127.0.0.1:9/ledger/v1")
    monkeypatch.setenv("CONNECTOR_LEDGER__TOKEN", "t")
    monkeypatch.setenv("CONNECTOR_VISMA__CLIENT_ID", "cid")
    monkeypatch.setenv("CONNECTOR_VISMA__CLIENT_SECRET", "s")
    with pytest.raises(ConfigError, match="did you mean CONNECTOR_TARGET=visma"):
        sync_module.run_sync(load_settings())


def test_a_pull_tells_its_progress_page_by_page_and_when_it_ends(world: World) -> None:
    """What a terminal's progress display for a long first pull is fed (connector.progress)."""
    from connector.progress import pull_progress

    told: list[tuple[int, bool]] = []
    token = pull_progress.set(lambda stored, finished: told.append((stored, finished)))
    try:
        world.sync()
    finally:
        pull_progress.reset(token)
    counts = [stored for stored, finished in told if not finished]
    assert counts and counts == sorted(counts) and told[-1] == (counts[-1], True)
    assert [finished for _, finished in told].count(True) == 1
