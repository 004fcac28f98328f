"""The Fortnox sync against the stateful sandbox, in-process: behaviour under each fault."""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector import http
from connector import sync as sync_module
from connector.errors import ConfigError, ExitCode, ReauthRequiredError, RemoteUnavailableError
from connector.mappings import Mappings, load_mappings
from connector.planning import InvoiceStatus
from connector.sandbox.app import Ledger
from connector.sandbox.fortnox import FortnoxFake
from connector.sandbox.sample import load
from tests.harness import World, assert_matches_ledger, assert_no_duplicates, make_world


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
    assert report.exit_code is ExitCode.ATTENTION  # customer 1042 and two bad entries
    assert len(report.created) == 99
    assert report.invoice_attention == {
        f"SK-1042-2026-{m}": "customer 1042 does not exist in Fortnox" for m in ("08", "09", "10")
    }
    assert_matches_ledger(world, report)
    writes = world.writes()
    again = world.sync()
    assert world.writes() == writes  # idempotent: no write request at all
    assert again.created == again.updated == []
    assert again.unchanged == 99
    assert_matches_ledger(world, again)


def test_dry_run_sends_no_write_and_keeps_no_state(world: World) -> None:
    report = world.sync(dry_run=True)
    assert world.writes() == 0
    assert len([w for w in report.would if w[0] == "create"]) == 102
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
    assert "6.00" in [row["DeliveredQuantity"] for row in invoice["InvoiceRows"]]


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
    assert descriptions[0].startswith(f"Korrigering av faktura {key}:")
    assert supplement["Remarks"].startswith(f"Tilläggsfaktura till {key}.")
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
    assert_no_duplicates(world.fake)


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
    original = FortnoxFake._rows

    def normalising(self: FortnoxFake, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = original(self, rows)
        for row in stored:
            row["Description"] = row["Description"].replace("(ref. ", "(Ref: ")
            row["DeliveredQuantity"] = str(Decimal(row["DeliveredQuantity"]).normalize())
        return stored

    monkeypatch.setattr(FortnoxFake, "_rows", normalising)
    world.sync()
    for hours in ("6", "7"):
        world.post_ledger([sample_entry(revision=int(hours), hours=hours)])
        report = world.sync()
        assert len(report.updated) == 1, report.invoice_attention
        assert not [r for r in report.invoice_attention.values() if "by a person" in r]


# --- faults -----------------------------------------------------------------------------------


def test_lost_create_answer_is_reconciled_without_duplicate(world: World) -> None:
    world.faults(lost_create_rate=1.0)
    report = world.sync()
    assert len(report.recovered) == 99 and len(report.created) == 99
    assert_no_duplicates(world.fake)
    world.faults(lost_create_rate=0)
    assert_matches_ledger(world, world.sync())


def test_5xx_on_create_is_looked_up_before_sending_again(world: World) -> None:
    world.faults(error_rate=0.3, seed=7)
    for _ in range(10):  # a run that meets two unknown outcomes in a row stops with exit 4
        with contextlib.suppress(RemoteUnavailableError):
            world.sync()
            break
        assert_no_duplicates(world.fake)
    world.faults(error_rate=0)
    final = world.sync()
    assert_matches_ledger(world, final)
    assert len(world.fake.invoices) == 99


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
    world.settings.fortnox.rate_limit = "24/5"
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
    reasons = set(report.invoice_attention.values())
    assert "article SK-KONF2 does not exist in Fortnox" in reasons
    assert len(report.created) > 50


def test_unknown_remote_invoice_with_our_key_blocks_that_key(world: World, tmp_path: Path) -> None:
    world.sync()
    # The state directory is lost: the connector must not invoice those months again.
    import shutil

    shutil.rmtree(world.settings.state_dir)
    report = world.sync()
    assert report.created == []
    assert all(
        "has no record of" in r for k, r in report.invoice_attention.items() if "1042" not in k
    )
    assert_no_duplicates(world.fake)


def test_unreachable_fortnox_exits_4(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.settings.fortnox.api_url = "http://127.0.0.1:9/fortnox/3"
    from connector.ledger import LedgerClient
    from connector.targets import fortnox

    token = world.settings.ledger.token
    assert token is not None and world.settings.ledger.url
    ledger = LedgerClient(world.settings.ledger.url, token, client=world.client())
    target = fortnox.build(world.settings.fortnox, world.settings.state_dir, http=world.client())
    import httpx

    target._http = httpx.Client()  # API calls go to a closed port; tokens still come
    with pytest.raises(RemoteUnavailableError) as info:
        sync_module.run_sync(world.settings, ledger=ledger, target=target)
    assert info.value.exit_code is ExitCode.UNREACHABLE
    store = world.store()
    assert all(r.pending is None for r in store.invoice_records("fortnox"))
    (run,) = store.runs()
    assert run.exit_code == 4


def test_wrong_client_secret_is_a_config_error(world: World) -> None:
    from pydantic import SecretStr

    world.settings.fortnox.client_secret = SecretStr("wrong")
    with pytest.raises(ConfigError, match="CONNECTOR_FORTNOX__CLIENT_SECRET"):
        world.sync()


def test_refresh_token_mode_without_login_exits_5(world: World) -> None:
    world.settings.fortnox.tenant_id = None
    with pytest.raises(ReauthRequiredError, match="connector auth login fortnox") as info:
        world.sync()
    assert info.value.exit_code is ExitCode.REAUTH


def test_visma_target_is_refused_clearly(world: World) -> None:
    world.settings.target = "visma"
    world.settings.fortnox.client_secret = None
    with pytest.raises(ConfigError, match="CONNECTOR_TARGET=visma"):
        sync_module.run_sync(world.settings)
