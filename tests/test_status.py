"""`connector status`, `connector attention` (and `ack`) and `connector auth status`, for every
accounting system: what a sync leaves behind, read back offline; exit codes and JSON shape."""

from __future__ import annotations

import getpass
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector import targets
from connector.attention import acknowledge, attention_document
from connector.auth import TokenFile, TokenSet
from connector.cli import app
from connector.errors import ConfigError, ExitCode, StateError, StateMismatchError
from connector.mappings import Mappings
from connector.sandbox.server import SandboxServer
from connector.state import DB_NAME, StateStore
from connector.status import auth_status, status_document
from tests.conftest import connector_env
from tests.harness import TARGETS, World, make_world


@pytest.fixture(params=TARGETS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> World:
    return make_world(tmp_path, mappings, target=request.param)


def _items(world: World) -> dict[str, dict[str, Any]]:
    return {i["ref"]: i for i in attention_document(world.settings)["items"]}


# --- from the state a sync leaves ----------------------------------------------------------------


def test_status_after_a_sync_shows_runs_invoices_and_attention(world: World) -> None:
    world.sync()
    doc = status_document(world.settings)
    name = world.profile.display_name
    assert doc["target"] == world.target and doc["target_name"] == name
    assert doc["bound"]["system"] == world.target and doc["bound"]["ledger"]
    (run,) = doc["runs"]
    assert run["command"] == "sync" and run["exit_code"] == 1 and run["state"] == "finished"
    assert run["duration_seconds"] is not None and run["did"].startswith("pulled 431, created ")
    assert doc["last_sync"]["id"] == run["id"]
    ledger = doc["ledger"]
    assert ledger["entries"] == 431 and ledger["cursor"]
    assert ledger["cursor_advanced_at"] and ledger["read_to_end_at"] and ledger["newest_change"]
    counts = doc["invoices"]["counts"]
    assert counts["open"] == doc["invoices"]["total"] - counts["not_created"] > 90
    assert counts["refused"] >= 3  # the creates for customer 1042
    attention = doc["attention"]
    invoices = {i["ref"]: i for i in attention["invoices"]}
    missing = invoices["SK-1042-2026-08"]
    assert missing["kind"] == "customer_missing"
    assert missing["what_to_do"].startswith(f"create customer 1042 in {name}")
    assert missing["first_seen"] and missing["acknowledged"] is None
    kinds = {g["kind"]: g for g in attention["entries_by_kind"]}
    assert "E900001" in kinds["unknown_category"]["refs"]
    assert kinds["customer_missing"]["count"] >= 4
    assert attention["open"] == len(attention["invoices"]) + sum(
        g["count"] for g in attention["entries_by_kind"]
    )
    assert doc["auth"]["state"] == "usable"
    assert doc["needs_attention"] == [
        f"{attention['open']} item(s) need attention: connector attention"
    ]
    assert doc["exit_code"] == ExitCode.ATTENTION


def test_attention_lists_each_item_with_what_to_do_and_since_when(world: World) -> None:
    world.sync()
    doc = attention_document(world.settings)
    assert doc["counts"]["acknowledged"] == 0
    assert doc["counts"]["open"] == len(doc["items"]) > 5
    items = {i["ref"]: i for i in doc["items"]}
    assert items["E900001"]["what_to_do"].startswith("add category 'onsite_visit' to the mappings")
    assert items["E000422"]["kind"] == "customer_missing"  # its invoice was not sent: why
    assert items["SK-1042-2026-08"]["scope"] == "invoice"
    assert items["E900002"]["scope"] == "entry"
    assert [i["scope"] for i in doc["items"]] == sorted(
        (i["scope"] for i in doc["items"]), reverse=True
    )  # invoices first


def test_an_ack_takes_an_item_out_of_the_list_and_the_exit_codes(world: World) -> None:
    world.sync()
    done = acknowledge(world.settings, "E900002", "a test entry of the ledger team", who="kim")
    assert done["acknowledged"]["who"] == "kim"
    assert "E900002" not in _items(world)
    everything = attention_document(world.settings, include_acknowledged=True)
    acked = {i["ref"]: i for i in everything["items"]}["E900002"]["acknowledged"]
    assert acked["why"] == "a test entry of the ledger team" and acked["at"]
    assert everything["counts"]["acknowledged"] == 1
    report = world.sync()
    doc = report.to_json()
    assert "E900002" not in {e["ref"] for e in doc["attention"]["entries"]}
    assert [a["ref"] for a in doc["attention"]["acknowledged"]] == ["E900002"]
    assert report.exit_code is ExitCode.ATTENTION  # the others are still there
    # Everything acknowledged: the sync, status and attention all exit 0.
    for item in attention_document(world.settings)["items"]:
        acknowledge(world.settings, item["ref"], "looked at in a test", who="kim")
    assert world.sync().exit_code is ExitCode.OK
    assert status_document(world.settings)["exit_code"] == ExitCode.OK
    assert attention_document(world.settings)["counts"]["open"] == 0


def test_an_ack_holds_for_its_reason_only(world: World) -> None:
    world.sync()
    acknowledge(world.settings, "E900002", "will be fixed next week", who="kim")
    (raw,) = [e for e in world.app.ledger.entries() if isinstance(e, dict) and e["id"] == "E900002"]
    world.post_ledger(
        [{**raw, "revision": raw["revision"] + 1, "hours": "2", "currency": "kronor"}]
    )
    world.sync()
    again = _items(world)["E900002"]  # failing differently now: listed again
    assert again["acknowledged"] is None and "currency" in again["reason"]


def test_a_fixed_item_that_comes_back_is_listed_again(world: World) -> None:
    world.sync()
    acknowledge(world.settings, "E900001", "a category we will add", who="kim")
    world.driver.add_customer("1042", "Nykund AB")  # unrelated: E900001 stays acknowledged
    (raw,) = [e for e in world.app.ledger.entries() if isinstance(e, dict) and e["id"] == "E900001"]
    world.post_ledger([{**raw, "revision": raw["revision"] + 1, "status": "void"}])
    world.sync()
    assert "E900001" not in _items(world)
    time.sleep(1.1)  # first_seen is kept to the second
    world.post_ledger([{**raw, "revision": raw["revision"] + 2}])
    world.sync()
    assert _items(world)["E900001"]["acknowledged"] is None


def test_acks_are_refused_without_a_why_or_for_an_unknown_id(world: World) -> None:
    world.sync()
    with pytest.raises(ConfigError, match="--why"):
        acknowledge(world.settings, "E900002", "   ")
    with pytest.raises(ConfigError, match="'E404' is not in the attention list"):
        acknowledge(world.settings, "E404", "no such item")


def test_a_person_edited_invoice_is_listed_on_every_run(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-09"
    (draft,) = [i for i in world.driver.invoices() if i["key"] == key and i["state"] != "gone"]
    world.driver.edit_text(draft["remote_id"], 0, "Ändrad av ekonomiavdelningen")
    raw = next(
        e for e in world.app.ledger.entries()
        if isinstance(e, dict) and e["customer_number"] == "1004"
        and e["performed_on"].startswith("2026-09") and e["unit_price"]
        and e["category"] in ("business_advisory", "data_maintenance", "project")
    )  # fmt: skip
    world.post_ledger([{**raw, "revision": 7, "hours": "6"}])
    found = world.sync()
    assert "by a person" in found.invoice_attention[key]
    later = world.sync()  # nothing new about it: still listed, with the reason it was found
    assert key not in later.invoice_attention
    assert later.standing[key] == found.invoice_attention[key]
    assert key in {i["key"] for i in later.to_json()["attention"]["invoices"]}
    doc = status_document(world.settings)
    assert doc["invoices"]["counts"]["locked"] == 1
    assert doc["invoices"]["locked"][0]["key"] == key
    listed = {i["ref"]: i for i in doc["attention"]["invoices"]}[key]
    assert listed["kind"] == "locked_by_person" and "attention ack" in listed["what_to_do"]
    # What the locked invoice bills is invoiced: the month's report and audit do not hold its
    # entries back though it stays on the attention list.
    from connector.audit import run_audit
    from connector.ledger import LedgerClient
    from connector.report import run_report

    month = run_report(world.settings, "2026-09")
    assert not [r for r in month.attention.values() if f"its invoice {key} " in r]
    token = world.settings.ledger.token
    assert world.settings.ledger.url is not None and token is not None
    audit = run_audit(
        world.settings,
        "2026-09",
        "1004",
        ledger=LedgerClient(world.settings.ledger.url, token, client=world.client()),
        target=targets.spec(world.target).open(world.settings, http=world.client()),
    )
    assert not [e for e in audit.entries if f"its invoice {key} " in e.reason]
    acknowledge(world.settings, key, "checked with the customer", who="kim")
    assert key not in {i["key"] for i in world.sync().to_json()["attention"]["invoices"]}
    assert key in {
        i["ref"] for i in attention_document(world.settings, include_acknowledged=True)["items"]
    }


def test_invoices_the_state_does_not_know_are_kept_in_the_list(world: World) -> None:
    world.sync()
    state = world.settings.state_dir
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):  # a lost state (the token kept)
        (state / name).unlink(missing_ok=True)
    with pytest.raises(StateMismatchError):
        world.sync()
    doc = status_document(world.settings)
    unknown = [i for i in doc["attention"]["invoices"] if i["kind"] == "unknown_invoice"]
    assert len(unknown) > 90
    assert "connector state rebuild" in unknown[0]["what_to_do"]
    assert doc["last_sync"]["exit_code"] == ExitCode.CONFIG
    assert any("ended with exit code 2" in p for p in doc["needs_attention"])
    with pytest.raises(StateMismatchError):  # still so on the next run, and still listed
        world.sync()
    assert len([i for i in _items(world).values() if i["kind"] == "unknown_invoice"]) == len(
        unknown
    )
    world.rebuild()  # the way out: the list is as a sync finds it again
    world.sync()
    assert not [i for i in _items(world).values() if i["kind"] == "unknown_invoice"]


def test_status_never_creates_a_state_directory(tmp_path: Path, mappings: Mappings) -> None:
    world = make_world(tmp_path, mappings)
    with pytest.raises(StateError, match="does not exist: check CONNECTOR_STATE_DIR"):
        status_document(world.settings)
    assert not world.settings.state_dir.exists()
    world.settings.state_dir.mkdir()
    with pytest.raises(StateError, match=f"holds no {DB_NAME}"):
        attention_document(world.settings)
    assert list(world.settings.state_dir.iterdir()) == []


def test_a_run_killed_midway_is_shown_as_not_finished(world: World) -> None:
    world.sync()
    store = StateStore(world.settings.state_dir)
    store.start_run("sync", world.target)  # never finished: the process was killed
    store.close()
    doc = status_document(world.settings)
    assert doc["runs"][0]["state"] == "did not finish (killed or crashed)"
    assert any("did not finish" in p for p in doc["needs_attention"])


def test_holds_are_shown(world: World) -> None:
    world.sync()
    store = StateStore(world.settings.state_dir)
    store.hold(world.target, "1004", "2026-09", "a row of unknown origin")
    store.close()
    doc = status_document(world.settings)
    assert doc["holds"] == [
        {
            "customer_number": "1004",
            "period": "2026-09",
            "reason": "a row of unknown origin",
            "since": doc["holds"][0]["since"],
        }
    ]
    assert any("held" in p for p in doc["needs_attention"])


# --- auth status ---------------------------------------------------------------------------------


def test_auth_status_with_a_refresh_token(world: World) -> None:
    settings = world.settings
    app_ = targets.spec(world.target).oauth
    if world.target == "fortnox":
        settings.fortnox.tenant_id = None  # type: ignore[attr-defined]
    path = settings.state_dir / app_.token_file
    settings.state_dir.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    before = auth_status(settings, world.target)
    assert before["mode"] == "refresh_token" and before["state"] == "needs_reauthorisation"
    assert before["exit_code"] == ExitCode.REAUTH and app_.login_hint in before["message"]
    secret = "rt-" + "x" * 20
    TokenFile(path).write(TokenSet("at-" + "y" * 20, time.time() + 3600, secret))
    doc = auth_status(settings, world.target)
    assert doc["state"] == "usable" and doc["exit_code"] == ExitCode.OK
    assert doc["refresh_token_stored"] and doc["access_token_valid"]
    assert doc["access_token_valid_until"] and doc["stored_at"]
    assert secret not in json.dumps(doc) and "y" * 20 not in json.dumps(doc)
    if app_.refresh_token_days:  # Fortnox: 45 days; older and the access expired is spent
        TokenFile(path).write(TokenSet("", 0.0, secret))
        old = time.time() - (app_.refresh_token_days + 1) * 86400
        os.utime(path, (old, old))
        expired = auth_status(settings, world.target)
        assert expired["state"] == "needs_reauthorisation" and "has expired" in expired["message"]


def test_auth_status_after_a_refused_run_needs_a_login(world: World) -> None:
    world.sync()
    store = StateStore(world.settings.state_dir)
    run = store.start_run("sync", world.target)
    store.finish_run(run, ExitCode.REAUTH, {"error": "refused"})
    store.close()
    doc = auth_status(world.settings, world.target, datetime.now(UTC) + timedelta(seconds=5))
    assert doc["state"] == "needs_reauthorisation" and doc["last_refused_at"]
    assert status_document(world.settings)["auth"]["state"] == "needs_reauthorisation"


def test_auth_status_not_configured(world: World) -> None:
    section = targets.spec(world.target).section(world.settings)
    section.client_secret = None
    doc = auth_status(world.settings, world.target)
    assert doc["state"] == "not_configured" and doc["exit_code"] == ExitCode.CONFIG
    assert f"CONNECTOR_{world.target.upper()}__CLIENT_SECRET" in doc["message"]


# --- the commands --------------------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(params=TARGETS)
def cli_target(
    request: pytest.FixtureRequest,
    sandbox_server: SandboxServer,
    sandbox_app: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The sandbox on loopback, the connector set to one system and authorised there."""
    from connector.sandbox import fake_module, fortnox_of

    for name, value in connector_env(sandbox_server.url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    target: str = request.param
    fortnox_of(sandbox_app).window.limit = 100000
    monkeypatch.setenv("CONNECTOR_FORTNOX__RATE_LIMIT", "100000/1")
    if target != "fortnox":
        module = fake_module(target)
        monkeypatch.setenv("CONNECTOR_TARGET", target)
        for name, value in module.connector_section(sandbox_server.url).items():
            monkeypatch.setenv(f"CONNECTOR_{target.upper()}__{name.upper()}", value)
        monkeypatch.setenv(f"CONNECTOR_{target.upper()}__SEARCH_SETTLE_SECONDS", "0")
        imported = CliRunner().invoke(
            app, ["auth", "import", target], input=module.SEED_REFRESH_TOKEN + "\n"
        )
        assert imported.exit_code == 0, imported.output
    return target


def test_commands_on_a_missing_state_directory_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "no-such-state"
    monkeypatch.setenv("CONNECTOR_STATE_DIR", str(wrong))
    for args in (["status"], ["attention"], ["attention", "ack", "E1", "--why", "x"]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"the state directory {wrong} does not exist" in result.stderr
    assert not wrong.exists()


def test_status_attention_and_ack_end_to_end(cli_target: str, tmp_path: Path) -> None:
    name = targets.profile(cli_target).display_name
    assert run("sync").exit_code == 1  # customer 1042 and the sample's bad entries

    status = run("status", "--json")
    assert status.exit_code == 1, status.output
    doc = json.loads(status.stdout)
    assert set(doc) >= {
        "state_dir", "target", "bound", "runs", "last_sync", "ledger", "invoices",
        "attention", "holds", "auth", "needs_attention", "exit_code",
    }  # fmt: skip
    assert doc["target"] == cli_target and doc["auth"]["state"] == "usable"
    text = run("status")
    assert text.exit_code == 1
    assert f"invoices to: {name}" in text.stdout and "Last runs" in text.stdout
    assert "SK-1042-2026-08" in text.stdout and "Entries needing attention" in text.stdout

    listed = run("attention", "--json")
    assert listed.exit_code == 1
    items = {i["ref"]: i for i in json.loads(listed.stdout)["items"]}
    assert set(items["E900002"]) >= {"ref", "reason", "kind", "what_to_do", "first_seen"}
    assert items["SK-1042-2026-08"]["what_to_do"].startswith(f"create customer 1042 in {name}")
    assert "create customer 1042 in" in run("attention").stdout

    assert run("attention", "ack", "E900002").exit_code == 2  # --why is required
    blank = run("attention", "ack", "E900002", "--why", " ")
    assert blank.exit_code == 2 and "--why" in blank.stderr
    unknown = run("attention", "ack", "E404", "--why", "gone")
    assert unknown.exit_code == 2 and "'E404'" in unknown.stderr
    acked = run("attention", "ack", "E900002", "--why", "a test entry", "--json")
    assert acked.exit_code == 0, acked.output
    assert json.loads(acked.stdout)["acknowledged"]["who"] == getpass.getuser()
    assert "Acknowledged E900002" in run("attention", "ack", "E900002", "--why", "again").stdout

    after = json.loads(run("attention", "--json").stdout)
    assert "E900002" not in {i["ref"] for i in after["items"]}
    assert after["counts"]["acknowledged"] == 1
    everything = json.loads(run("attention", "--all", "--json").stdout)
    assert "E900002" in {i["ref"] for i in everything["items"]}
    assert "acknowledged by" in run("attention", "--all").stdout

    # Acknowledge the rest: sync, status and attention exit 0.
    for ref in {i["ref"] for i in after["items"]}:
        assert run("attention", "ack", ref, "--why", "seen").exit_code == 0
    assert run("attention").exit_code == 0
    quiet = run("sync")
    assert quiet.exit_code == 0
    assert "acknowledged item(s) not listed (connector attention --all)" in quiet.stdout
    assert run("status").exit_code == 0


def test_auth_status_command(
    cli_target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = run("auth", "status", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["system"] == cli_target
    if cli_target == "fortnox":
        assert doc["mode"] == "client_credentials" and doc["tenant_id"]
    else:
        assert doc["mode"] == "refresh_token" and doc["refresh_token_stored"]
        stored = json.loads((tmp_path / "state" / f"{cli_target}-token.json").read_text())
        assert stored["refresh_token"] not in result.stdout
    assert "way in:" in run("auth", "status", cli_target).stdout
    # The other system, not configured here (its client secret unset): exit 2.
    other = next(t for t in TARGETS if t != cli_target)
    monkeypatch.delenv(f"CONNECTOR_{other.upper()}__CLIENT_SECRET", raising=False)
    assert run("auth", "status", other).exit_code == 2
    if cli_target == "fortnox":  # the refresh-token way, with none stored: exit 5
        monkeypatch.delenv("CONNECTOR_FORTNOX__TENANT_ID")
        nowhere = run("auth", "status")  # and no state directory yet: said, exit 2
        assert nowhere.exit_code == 2 and "check CONNECTOR_STATE_DIR" in nowhere.stdout
        (tmp_path / "state").mkdir()
        refused = run("auth", "status")
        assert refused.exit_code == 5 and "connector auth login fortnox" in refused.stdout


def test_a_ledger_item_without_a_usable_id_can_be_acknowledged(world: World) -> None:
    """The case ack is for: an item the ledger cannot correct, known by its feed position."""
    world.sync()
    world.post_ledger([{"kind": "debit", "hours": "2", "customer_number": "1004"}])
    world.sync()
    (position,) = [ref for ref in _items(world) if ref.startswith("feed ")]
    assert "connector attention ack '" in _items(world)[position]["what_to_do"]  # quoted
    acknowledge(world.settings, position, "ledger ticket 812: cannot be corrected", who="kim")
    report = world.sync()
    assert position not in {e["ref"] for e in report.to_json()["attention"]["entries"]}
    assert status_document(world.settings)["ledger"]["without_id"] == 1


def test_status_reads_the_system_the_state_belongs_to(world: World) -> None:
    """CONNECTOR_TARGET set to the other system: status still shows this state's records, and
    says that a sync set so would be refused."""
    world.sync()
    bound = world.target
    other = next(t for t in TARGETS if t != bound)
    world.settings.target = other
    doc = status_document(world.settings)
    assert doc["target"] == bound and doc["configured_target"] == other
    assert doc["attention"]["open"] > 0
    assert any(f"CONNECTOR_TARGET is {other}" in p for p in doc["needs_attention"])
    assert attention_document(world.settings)["target"] == bound


def test_alerts_leave_out_acknowledged_items_and_keep_standing_ones(world: World) -> None:
    from connector.notify import outcome_of

    world.sync()
    acknowledge(world.settings, "E900002", "a test entry", who="kim")
    outcome = outcome_of(world.sync(), None)
    assert outcome is not None
    refs = {ref for ref, _ in outcome.attention}
    assert "E900002" not in refs and "SK-1042-2026-08" in refs


def test_newest_change_is_the_last_in_feed_order_read_through_the_index(tmp_path: Path) -> None:
    """The feed lists entries in the order they last changed: status takes the newest change
    from the last entry stored (skipping one without a readable time) through the index on the
    feed position, so it does not read the whole mirror (0.4 s at 169,248 entries)."""
    from connector.ledger import FeedItem
    from connector.sandbox.sample import generate
    from connector.status import NEWEST_CHANGE, _ledger_json

    raws = generate(customers=3, specials=False)
    store = StateStore(tmp_path / "state")
    try:
        assert _ledger_json(store)["newest_change"] is None  # nothing mirrored yet
        items = [FeedItem(f"p{n}", r, str(r["id"]), int(r["revision"])) for n, r in enumerate(raws)]
        store.store_page(items[:-1], "c1")
        unreadable = {**raws[0], "id": "LAST", "changed_at": 20261231}
        store.store_page([items[-1], FeedItem("p-last", unreadable, "LAST", 1)], "c2")
        assert _ledger_json(store)["newest_change"] == raws[-1]["changed_at"]
        assert raws[-1]["changed_at"] == max(r["changed_at"] for r in raws)
        [(*_, plan)] = store.db.execute("EXPLAIN QUERY PLAN " + NEWEST_CHANGE).fetchall()
        assert "USING INDEX" in plan, plan
    finally:
        store.close()


def test_invoice_counts_are_those_of_the_records(world: World) -> None:
    """status counts invoices in the database (it reads no invoice's rows): the same figures
    and lists as the records, with every kind present."""
    from connector.planning import InvoiceStatus
    from connector.status import _invoices_json

    world.sync()
    store = StateStore(world.settings.state_dir)
    try:
        keys = [r.key.text for r in store.invoice_records(world.target) if r.remote_id][:3]
        with store.transaction() as db:
            db.execute(
                "UPDATE invoices SET pending = written, pending_since = 'now' WHERE key = ?",
                (keys[0],),
            )
            db.execute("UPDATE invoices SET status = 'locked' WHERE key = ?", (keys[1],))
            db.execute("UPDATE invoices SET status = 'booked' WHERE key = ?", (keys[2],))
        records = store.invoice_records(world.target)
        counted = _invoices_json(store, world.target)
    finally:
        store.close()
    expected: dict[str, int] = {}
    for r in records:
        name = r.status.value
        if r.status is InvoiceStatus.OPEN and r.remote_id is None:
            name = "not_created"
        expected[name] = expected.get(name, 0) + 1
    expected["pending_write"] = sum(1 for r in records if r.pending is not None)
    expected["refused"] = sum(1 for r in records if r.refused_digest is not None)
    assert counted["total"] == len(records)
    assert {k: v for k, v in counted["counts"].items() if v} == expected
    assert all(expected[k] for k in ("open", "not_created", "locked", "booked", "refused"))
    assert counted["pending_write"] == [
        {"key": keys[0], "number": r.display_number or r.remote_id, "since": "now"}
        for r in records
        if r.key.text == keys[0]
    ]
    assert [i["key"] for i in counted["locked"]] == [keys[1]]
    assert [i["key"] for i in counted["refused"]] == [
        r.key.text for r in records if r.refused_digest is not None
    ]
