"""The prepaid hours balance (the "timbank"): `connector balance`, overdraws in the plan and the
sync (attention, or invoiced as ordinary hours), and the balance row. Expected figures are
computed by hand in the comments, never by the code under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.errors import ExitCode
from connector.ledger import Entry, parse_entry
from connector.mappings import Mappings
from connector.planning import Outcome, RowRole, plan
from connector.prepaid import Prepaid, accounts
from connector.sandbox import build_app
from connector.sandbox.app import SandboxApp
from connector.sandbox.server import running
from connector.targets import profile
from tests.conftest import _raw, connector_env
from tests.harness import TARGETS, World, assert_matches_ledger, make_world

FORTNOX = profile("fortnox")
CUSTOMER = "1004"  # no prepaid hours in the sample ledger: only the entries below count


def entry(entry_id: str, day: str, **fields: Any) -> dict[str, Any]:
    return _raw(
        id=entry_id,
        customer_number=CUSTOMER,
        performed_on=day,
        description=f"Arbete {entry_id}",
        reference=None,
        changed_at="2026-10-30T12:00:00Z",
        **fields,
    )


def topup(entry_id: str, day: str, hours: str) -> dict[str, Any]:
    return entry(
        entry_id, day, kind="topup", category="prepaid_hours", hours=hours, unit_price="1000.00"
    )


def draw(entry_id: str, day: str, hours: str, prepaid: str) -> dict[str, Any]:
    return entry(entry_id, day, hours=hours, prepaid_hours=prepaid, unit_price="1150.00")


# Customer 1004's account, walked by hand (date order; a top-up counts before draws that day):
#   2026-10-02  P-T1 top-up   +4     left 4
#   2026-10-03  P-D1 draw   2.5      left 1.5   (3 h worked, 0.5 h invoiced as usual)
#   2026-10-14  P-D2 draw     4      only 1.5 left: overdraw 2.5, left 0
#   2026-10-20  P-T2 top-up  +10     left 10    (later: does not cover P-D2)
#   2026-10-25  P-D3 draw   1.5      left 8.5   (2 h worked, 0.5 h invoiced as usual)
# bought 4 + 10 = 14, drawn 2.5 + 4 + 1.5 = 8, overdrawn 2.5, remaining 14 - (8 - 2.5) = 8.5
LEDGER = [
    topup("P-T1", "2026-10-02", "4"),
    draw("P-D1", "2026-10-03", "3", "2.5"),
    draw("P-D2", "2026-10-14", "4", "4"),
    topup("P-T2", "2026-10-20", "10"),
    draw("P-D3", "2026-10-25", "2", "1.5"),
]
OVERDRAW_REASON = "customer 1004 drew 2,5 h more prepaid hours than bought on 2026-10-14"


def parsed(raws: list[dict[str, Any]]) -> list[Entry]:
    return [parse_entry(r) for r in raws]


# --- the account ------------------------------------------------------------------------------


def test_account_figures_match_the_hand_computed_ones() -> None:
    (account,) = accounts(parsed(LEDGER)).values()
    assert account.customer_number == CUSTOMER
    assert account.bought == Decimal("14")
    assert account.drawn == Decimal("8")
    assert account.overdrawn == Decimal("2.5")
    assert account.remaining == Decimal("8.5")
    assert [(m.entry_id, m.overdraw) for m in account.overdraws] == [("P-D2", Decimal("2.5"))]
    assert [m.balance_after for m in account.movements] == [
        Decimal(v) for v in ("4", "1.5", "0", "10", "8.5")
    ]
    # End of September: no account yet; end of October: 8.5 left.
    assert account.balance_at_month_end("2026-09") == 0
    assert account.balance_at_month_end("2026-10") == Decimal("8.5")


def test_a_topup_on_the_same_day_covers_that_days_draws_whatever_the_ids() -> None:
    # "A-1" sorts before "Z-9", but a package bought that day counts first: 3 - 2 = 1 left.
    (account,) = accounts(
        parsed([draw("A-1", "2026-10-05", "2", "2"), topup("Z-9", "2026-10-05", "3")])
    ).values()
    assert account.overdraws == [] and account.remaining == Decimal("1")


def test_draws_on_the_same_day_go_by_entry_id() -> None:
    # 1 h left: "B" (id order after "A") draws the last 0.5 and overdraws 0.5.
    (account,) = accounts(
        parsed(
            [
                topup("T", "2026-10-01", "1"),
                draw("B", "2026-10-05", "1", "1"),
                draw("A", "2026-10-05", "0.5", "0.5"),
            ]
        )
    ).values()
    assert [(m.entry_id, m.overdraw) for m in account.overdraws] == [("B", Decimal("0.5"))]


def test_a_backdated_topup_covers_later_draws_and_a_void_one_counts_nothing() -> None:
    # P-T0 (3 h on 2026-10-01) arrives later but is dated first:
    # 3, +4 = 7, -2.5 = 4.5, -4 = 0.5 (no overdraw), +10 = 10.5, -1.5 = 9.
    (account,) = accounts(parsed([*LEDGER, topup("P-T0", "2026-10-01", "3")])).values()
    assert account.overdraws == []
    assert (account.bought, account.remaining) == (Decimal("17"), Decimal("9"))
    # P-T1 voided: P-D1 draws 2.5 from nothing (overdraw 2.5), P-D2 4 (overdraw 4),
    # then 10 - 1.5 = 8.5.
    voided = [dict(r, revision=2, status="void") if r["id"] == "P-T1" else r for r in LEDGER]
    (account,) = accounts(parsed(voided)).values()
    assert [(m.entry_id, m.overdraw) for m in account.overdraws] == [
        ("P-D1", Decimal("2.5")),
        ("P-D2", Decimal("4")),
    ]
    assert (account.bought, account.remaining) == (Decimal("10"), Decimal("8.5"))


def test_customers_without_prepaid_hours_have_no_account() -> None:
    assert accounts(parsed([_raw(id="X", customer_number="1005")])) == {}


# --- the plan ---------------------------------------------------------------------------------


def rows_of(result: Any, key: str) -> list[Any]:
    (found,) = [i for i in result.invoices if i.key.text == key]
    return list(found.rows)


def outcome(result: Any, ref: str) -> tuple[Outcome, str]:
    (found,) = [r for r in result.results if r.ref == ref]
    return found.outcome, found.reason


def test_an_overdraw_needs_attention_and_the_rest_is_invoiced_as_usual(
    mappings: Mappings,
) -> None:
    result = plan(parsed(LEDGER), mappings, FORTNOX)
    state, reason = outcome(result, "P-D2")
    assert state is Outcome.ATTENTION
    assert reason.startswith(OVERDRAW_REASON + ": those hours are not invoiced")
    assert "CONNECTOR_PREPAID__OVERDRAW=invoice" in reason
    for ref in ("P-T1", "P-D1", "P-T2", "P-D3"):
        assert outcome(result, ref)[0] is Outcome.INVOICED
    billed = [(r.entry_id, r.quantity) for r in rows_of(result, "SK-1004-2026-10") if r.article]
    # Top-ups and the hours beyond prepaid: 3 - 2.5 and 2 - 1.5; nothing for P-D2's overdraw.
    assert billed == [
        ("P-T1", Decimal("4")),
        ("P-D1", Decimal("0.50")),
        ("P-T2", Decimal("10")),
        ("P-D3", Decimal("0.50")),
    ]
    # P-D2's note row still says what the ledger drew.
    notes = [r.description for r in rows_of(result, "SK-1004-2026-10") if r.entry_id == "P-D2"]
    assert notes == ["2026-10-14: 4 tim avräknade mot förbetalda timmar (Installation)"]


def test_with_the_invoice_setting_an_overdraw_is_invoiced_as_ordinary_hours(
    mappings: Mappings,
) -> None:
    result = plan(parsed(LEDGER), mappings, FORTNOX, prepaid=Prepaid(overdraw="invoice"))
    assert outcome(result, "P-D2") == (Outcome.INVOICED, "on invoice")
    mine = [r for r in rows_of(result, "SK-1004-2026-10") if r.entry_id == "P-D2"]
    assert [(r.role, r.article, r.quantity, r.price, r.description) for r in mine] == [
        (
            RowRole.PREPAID_NOTE,
            None,
            None,
            None,
            "2026-10-14: 4 tim avräknade mot förbetalda timmar (Installation)",
        ),
        (
            RowRole.OVERDRAW,
            "SK-INST",
            Decimal("2.50"),
            Decimal("1150.00"),
            "2026-10-14: 2,5 tim saknades i timbanken och debiteras som vanliga timmar "
            "(Installation)",
        ),
    ]


def test_an_overdraw_the_category_cannot_invoice_still_needs_attention(
    mappings: Mappings,
) -> None:
    # Guidance is included in the monthly fee: it has no article to invoice the hours with.
    raws = [draw("G", "2026-10-14", "1", "1") | {"category": "guidance"}]
    result = plan(parsed(raws), mappings, FORTNOX, prepaid=Prepaid(overdraw="invoice"))
    state, reason = outcome(result, "G")
    assert state is Outcome.ATTENTION and "its category cannot invoice them" in reason
    assert "drew 1 h more prepaid hours than bought on 2026-10-14" in reason


def test_the_balance_row_ends_each_invoice_of_a_customer_with_prepaid_hours(
    mappings: Mappings,
) -> None:
    others = _raw(id="O", customer_number="1005", performed_on="2026-10-03")
    result = plan(parsed([*LEDGER, others]), mappings, FORTNOX, prepaid=Prepaid(balance_row=True))
    last = rows_of(result, "SK-1004-2026-10")[-1]
    assert (last.role, last.description, last.article) == (
        RowRole.BALANCE,
        "Kvar i timbanken: 8,5 tim",
        None,
    )
    assert all(r.role is not RowRole.BALANCE for r in rows_of(result, "SK-1005-2026-10"))
    # Off by default.
    plain = plan(parsed(LEDGER), mappings, FORTNOX)
    assert all(r.role is not RowRole.BALANCE for r in rows_of(plain, "SK-1004-2026-10"))


# --- the sync, for every target -----------------------------------------------------------------


def ledger_file(tmp_path: Path, raws: list[dict[str, Any]], *, sample: bool = False) -> Path:
    from connector.sandbox.sample import SAMPLE_PATH

    path = tmp_path / "ledger.jsonl"
    head = SAMPLE_PATH.read_text(encoding="utf-8") if sample else ""
    path.write_text(head + "".join(json.dumps(r) + "\n" for r in raws), encoding="utf-8")
    return path


@pytest.fixture(params=TARGETS)
def world(request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings) -> World:
    return make_world(
        tmp_path, mappings, target=request.param, ledger_file=ledger_file(tmp_path, LEDGER)
    )


def invoice_rows(world: World, key: str) -> list[dict[str, Any]]:
    (found,) = [i for i in world.driver.invoices() if i["key"] == key and i["state"] != "gone"]
    rows: list[dict[str, Any]] = found["rows"]
    return rows


def remote_id(world: World, key: str) -> str:
    (found,) = [i for i in world.driver.invoices() if i["key"] == key]
    return str(found["remote_id"])


def billed(world: World, key: str) -> list[tuple[str, Decimal, Decimal]]:
    return [
        (r["article"], Decimal(str(r["quantity"])), Decimal(str(r["price"])))
        for r in invoice_rows(world, key)
        if r["article"]
    ]


def test_sync_reports_an_overdraw_as_needing_attention_and_exits_1(world: World) -> None:
    report = world.sync()
    assert report.exit_code is ExitCode.ATTENTION
    document = report.to_json()
    assert document["attention"]["entries"] == [
        {"ref": "P-D2", "reason": outcome(report.plan, "P-D2")[1]}
    ]
    assert document["attention"]["entries"][0]["reason"].startswith(OVERDRAW_REASON)
    assert billed(world, "SK-1004-2026-10") == [
        ("SK-FORBET", Decimal("4"), Decimal("1000")),
        ("SK-INST", Decimal("0.5"), Decimal("1150")),
        ("SK-FORBET", Decimal("10"), Decimal("1000")),
        ("SK-INST", Decimal("0.5"), Decimal("1150")),
    ]
    assert_matches_ledger(world, report)
    writes = world.writes()
    again = world.sync()
    assert world.writes() == writes and again.exit_code is ExitCode.ATTENTION


def test_with_the_invoice_setting_the_overdraw_is_invoiced_and_a_backdated_topup_credits_it(
    world: World,
) -> None:
    world.settings.prepaid.overdraw = "invoice"
    report = world.sync()
    assert report.exit_code is ExitCode.OK
    assert ("SK-INST", Decimal("2.5"), Decimal("1150")) in billed(world, "SK-1004-2026-10")
    texts = [r["description"] for r in invoice_rows(world, "SK-1004-2026-10")]
    assert (
        "2026-10-14: 2,5 tim saknades i timbanken och debiteras som vanliga timmar (Installation)"
        in texts
    )
    assert_matches_ledger(world, report)
    writes = world.writes()
    assert world.sync().exit_code is ExitCode.OK and world.writes() == writes
    # The customer gets the invoice; then a top-up dated before the overdraw is recorded:
    # the 2.5 hours were covered after all, and are credited on a supplementary invoice.
    world.driver.send(remote_id(world, "SK-1004-2026-10"))
    world.post_ledger([topup("P-T0", "2026-10-01", "3")])
    report = world.sync()
    assert report.exit_code is ExitCode.OK
    assert billed(world, "SK-1004-2026-10-2") == [
        ("SK-FORBET", Decimal("3"), Decimal("1000")),
        ("SK-INST", Decimal("-2.5"), Decimal("1150")),
    ]
    assert_matches_ledger(world, report)
    writes = world.writes()
    world.sync()
    assert world.writes() == writes


def test_the_balance_row_is_written_once_and_never_changes_a_closed_invoice(
    world: World,
) -> None:
    world.settings.prepaid.balance_row = True
    report = world.sync()
    assert invoice_rows(world, "SK-1004-2026-10")[-1]["description"] == (
        "Kvar i timbanken: 8,5 tim"
    )
    assert_matches_ledger(world, report)
    writes = world.writes()
    world.sync()
    assert world.writes() == writes, "a quiet re-run writes nothing"
    # Booked, then P-D3 draws 0.5 h more (2 of 2 h): the booked invoice keeps its rows and
    # balance; the supplementary invoice carries the correction and the new balance, 8.
    world.driver.close(remote_id(world, "SK-1004-2026-10"))
    world.post_ledger([draw("P-D3", "2026-10-25", "2", "2") | {"revision": 2}])
    report = world.sync()
    assert invoice_rows(world, "SK-1004-2026-10")[-1]["description"] == (
        "Kvar i timbanken: 8,5 tim"
    )
    assert invoice_rows(world, "SK-1004-2026-10-2")[-1]["description"] == (
        "Kvar i timbanken: 8 tim"
    )
    assert_matches_ledger(world, report)  # no invoice the customer holds was changed
    writes = world.writes()
    world.sync()
    assert world.writes() == writes


# --- the command, for every target --------------------------------------------------------------


@pytest.fixture(params=TARGETS)
def served(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxApp]:
    """The sample ledger and the entries above, served on loopback; the connector's settings
    point at it, with each target in turn (the balance is the ledger's, whatever the target)."""
    sandbox = build_app(ledger_file(tmp_path, LEDGER, sample=True))
    with running(sandbox) as server:
        for name, value in connector_env(server.url, tmp_path / "state").items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("CONNECTOR_TARGET", request.param)
        yield sandbox


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_balance_command_json_and_exit_codes(
    served: SandboxApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run("balance", "--json")
    assert result.exit_code == 1, result.stderr  # an overdraw needs attention
    doc = json.loads(result.stdout)
    assert doc["pulled"] > 400 and doc["overdraw_policy"] == "attention"
    by_customer = {c["customer_number"]: c for c in doc["customers"]}
    # Sample customer 1003, by hand from the sample ledger: E000001 tops up 10 h, then
    # E000002 0.5, E000003 4.5, E000008 0.5, E000009 4.0, E000006 0.5 = 10 drawn.
    assert {k: by_customer["1003"][k] for k in ("bought", "drawn", "remaining")} == {
        "bought": "10",
        "drawn": "10",
        "remaining": "0",
    }
    mine = by_customer[CUSTOMER]
    assert {k: mine[k] for k in ("bought", "drawn", "overdrawn", "remaining")} == {
        "bought": "14",
        "drawn": "8",
        "overdrawn": "2.5",
        "remaining": "8.5",
    }
    assert mine["topups"] == [
        {"entry_id": "P-T1", "date": "2026-10-02", "hours": "4", "balance_after": "4"},
        {"entry_id": "P-T2", "date": "2026-10-20", "hours": "10", "balance_after": "10"},
    ]
    assert [(d["entry_id"], d["date"], d["hours"], d["overdrawn"]) for d in mine["draws"]] == [
        ("P-D1", "2026-10-03", "2.5", "0"),
        ("P-D2", "2026-10-14", "4", "2.5"),
        ("P-D3", "2026-10-25", "1.5", "0"),
    ]
    assert doc["attention"] == [
        {
            "ref": "P-D2",
            "customer_number": CUSTOMER,
            "date": "2026-10-14",
            "hours": "2.5",
            "reason": OVERDRAW_REASON,
        }
    ]
    assert doc["counts"] == {"customers": 11, "overdraws": 1, "malformed_entries": 1}
    # One customer without an overdraw, from the mirror as pulled: exit 0.
    result = run("balance", "--customer", "1003", "--no-pull", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["pulled"] is None and [c["customer_number"] for c in doc["customers"]] == ["1003"]
    # The invoice setting: the overdraw is listed, but the sync invoices it (exit 0).
    monkeypatch.setenv("CONNECTOR_PREPAID__OVERDRAW", "invoice")
    result = run("balance", "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0
    assert doc["attention"] == [] and [o["ref"] for o in doc["overdraws"]] == ["P-D2"]


def test_balance_command_text(served: SandboxApp) -> None:
    result = run("balance")
    assert result.exit_code == 1
    assert "11 customer(s), 1 overdraw(s)" in result.stdout
    assert f"P-D2: {OVERDRAW_REASON}" in result.stdout
    assert "P-T1" not in result.stdout  # the entries only with --customer
    result = run("balance", "--customer", CUSTOMER, "--no-pull")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "P-D2" in line and "draw" in line)
    assert row.split() == ["2026-10-14", "P-D2", "draw", "-4", "2.5", "0"]
    assert any(line.split()[:2] == ["2026-10-02", "P-T1"] for line in lines)
    result = run("balance", "--customer", "1005", "--no-pull")
    assert result.exit_code == 0 and "Customer 1005 has no prepaid hours." in result.stdout


@pytest.mark.parametrize("target", TARGETS)
def test_balance_without_a_mirror_or_ledger_settings_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.setenv("CONNECTOR_STATE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CONNECTOR_TARGET", target)
    result = run("balance", "--no-pull")
    assert result.exit_code == 2 and "no ledger mirror" in result.stderr
    result = run("balance")
    assert result.exit_code == 2
    assert "CONNECTOR_LEDGER__URL and CONNECTOR_LEDGER__TOKEN" in result.stderr


def test_a_rebuild_ties_the_balance_row_to_no_entry(world: World) -> None:
    world.settings.prepaid.balance_row = True
    world.sync()
    report = world.rebuild()
    assert (report.held, report.locked) == ([], [])
    writes = world.writes()
    after = world.sync()
    assert world.writes() == writes, "the rebuilt state knows every row, the balance row too"
    assert_matches_ledger(world, after)


def test_a_rebuild_holds_a_month_with_an_overdraw_row_for_a_person(world: World) -> None:
    world.settings.prepaid.overdraw = "invoice"
    world.sync()
    report = world.rebuild()
    assert [(c, p) for c, p, _ in report.held] == [(CUSTOMER, "2026-10")]
    assert "tim saknades i timbanken" in report.held[0][2]
    assert report.locked == ["SK-1004-2026-10"]
    writes = world.writes()
    world.sync()
    assert world.writes() == writes, "nothing is sent for a month the rebuild could not tie"


@pytest.mark.parametrize("overdraw", ["attention", "invoice"])
def test_the_month_end_audit_agrees_with_the_books_either_way(world: World, overdraw: str) -> None:
    from connector.audit import run_audit
    from connector.ledger import LedgerClient
    from connector.targets import spec

    world.settings.prepaid.overdraw = overdraw  # type: ignore[assignment]
    world.settings.prepaid.balance_row = True
    world.sync()
    token = world.settings.ledger.token
    assert world.settings.ledger.url is not None and token is not None
    ledger = LedgerClient(world.settings.ledger.url, token, client=world.client())
    target = spec(world.target).open(world.settings, http=world.client())
    report = run_audit(world.settings, "2026-10", ledger=ledger, target=target)
    assert report.differences == [] and report.agrees
    listed = {f.ref: f.outcome for f in report.entries}
    assert listed["P-D2"] == ("attention" if overdraw == "attention" else "invoiced")


@pytest.mark.parametrize("overdraw", ["attention", "invoice"])
def test_the_month_report_counts_an_invoiced_overdraw_as_invoiced(
    world: World, overdraw: str
) -> None:
    from connector.report import PREPAID, run_report

    world.settings.prepaid.overdraw = overdraw  # type: ignore[assignment]
    world.sync()
    report = run_report(world.settings, "2026-10")
    prepaid = report.not_invoiced.get((CUSTOMER, PREPAID, "installation"))
    if overdraw == "invoice":
        # Drawn 2.5 + 4 + 1.5 = 8, of which 2.5 overdrawn and invoiced: 5.5 prepaid.
        assert prepaid == Decimal("5.5")
        assert "P-D2" not in report.attention
    else:
        # P-D2 needs attention (all its 4 h listed there): 2.5 + 1.5 prepaid.
        assert prepaid == Decimal("4.0")
        assert report.attention["P-D2"].startswith(OVERDRAW_REASON)
