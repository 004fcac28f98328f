"""`connector audit`: the month's invoices in the accounting system proved against the ledger,
for every target, in-process against the sandbox fakes and through the CLI."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector import targets
from connector.audit import AuditReport, audit_text, run_audit
from connector.cli import app
from connector.errors import ExitCode
from connector.ledger import LedgerClient
from connector.mappings import Mappings
from connector.sandbox import build_app, fake_module
from connector.sandbox.app import SandboxApp
from connector.sandbox.server import SandboxServer
from connector.state import StateStore
from tests.conftest import connector_env
from tests.harness import (
    TARGETS,
    World,
    assert_matches_ledger,
    entries_of,
    make_world,
    remote_net,
)

PERIODS = ("2026-08", "2026-09", "2026-10")
FAST = "100000/1"


@pytest.fixture(params=TARGETS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> World:
    return make_world(tmp_path, mappings, target=request.param)


def audit(world: World, period: str, customer: str | None = None) -> AuditReport:
    token = world.settings.ledger.token
    assert world.settings.ledger.url is not None and token is not None
    ledger = LedgerClient(world.settings.ledger.url, token, client=world.client())
    target = targets.spec(world.target).open(world.settings, http=world.client())
    return run_audit(world.settings, period, customer, ledger=ledger, target=target)


def a_draft_row(world: World, customer: str = "1004") -> tuple[dict[str, Any], int]:
    """An open draft of the customer and the index of its first article row."""
    for invoice in world.driver.invoices():
        if invoice["state"] == "open" and invoice["key"].startswith(f"SK-{customer}-"):
            for index, row in enumerate(invoice["rows"]):
                if row["article"]:
                    return invoice, index
    raise AssertionError("no open draft with an article row")


def test_a_synced_month_agrees_and_the_audit_agrees_with_the_oracle(world: World) -> None:
    report = world.sync()
    assert_matches_ledger(world, report)  # the tests' own oracle: the books are right
    writes = world.writes()
    invoiced: dict[tuple[str, str, str, Decimal], Decimal] = defaultdict(Decimal)
    for period in PERIODS:
        result = audit(world, period)
        doc = result.to_json()
        assert result.exit_code is ExitCode.OK, audit_text(doc)
        assert doc["agrees"] and doc["differences"] == [] and doc["not_invoiced"] == []
        assert doc["counts"]["entries"] == sum(
            doc["counts"][k] for k in ("invoiced", "excluded", "attention", "not_invoiced")
        )
        # Entries needing attention are listed, and do not make a difference by themselves.
        assert any(e["customer_number"] == "1042" for e in doc["attention"]) or period != (
            "2026-08"
        )
        reasons = {e["reason"] for e in doc["excluded"]}
        assert any(r.startswith("included in the monthly fee") for r in reasons)
        for line in result.lines:
            invoiced[(line.customer, line.currency, line.article, line.price)] += line.invoiced
        for currency, totals in doc["totals"].items():
            assert totals["invoiced"] == totals["expected"], currency
    # Read independently, the audit's books are the oracle's books, group by group.
    assert {g: q for g, q in invoiced.items() if q} == remote_net(world.driver)
    assert world.writes() == writes  # reads only


def test_a_quantity_changed_by_hand_is_named_with_its_difference(world: World) -> None:
    world.sync()
    invoice, index = a_draft_row(world)
    row = invoice["rows"][index]
    before = Decimal(str(row["quantity"]))
    world.driver.edit_quantity(invoice["remote_id"], index, before + Decimal("1.5"))
    period = invoice["key"].split("-", 2)[2][:7]
    writes = world.writes()
    result = audit(world, period)
    assert world.writes() == writes
    assert result.exit_code is ExitCode.ATTENTION
    (difference,) = result.differences
    price = Decimal(str(row["price"]))
    assert (difference.customer, difference.article) == ("1004", row["article"])
    assert difference.hours_difference == Decimal("1.5")
    assert difference.amount_difference == Decimal("1.5") * price
    doc = result.to_json()
    (shown,) = doc["differences"]
    assert Decimal(shown["hours_invoiced"]) - Decimal(shown["hours_expected"]) == Decimal("1.5")
    assert Decimal(shown["amount_difference"]) == Decimal("1.5") * price
    assert [r["key"] for r in shown["invoice_rows"]] == [invoice["key"]]
    text = audit_text(doc)
    assert "DOES NOT AGREE" in text and row["article"] in text and "1004" in text
    # Other months are untouched by it.
    others = [p for p in PERIODS if p != period]
    assert all(audit(world, p).exit_code is ExitCode.OK for p in others)


def test_a_key_on_two_live_invoices_is_reported(world: World) -> None:
    world.sync()
    plan = world.current_plan()
    invoice = next(i for i in plan.invoices if i.key.text.startswith("SK-1004-2026-09"))
    target = targets.spec(world.target).open(world.settings, http=world.client())
    target.create(invoice, date(2026, 9, 30))  # a second live invoice with the same key
    result = audit(world, "2026-09", "1004")
    assert result.exit_code is ExitCode.ATTENTION
    assert list(result.duplicates) == [invoice.key.text]
    assert len(result.duplicates[invoice.key.text]) == 2
    # Billed twice: every article row of it is a difference of exactly its own amount.
    assert result.differences
    assert sum(d.amount_difference for d in result.differences) == invoice.total
    assert "more than one live invoice" in audit_text(result.to_json())


def test_an_entry_not_yet_invoiced_is_listed_until_the_sync(world: World) -> None:
    world.sync()
    raw = next(
        e
        for e in entries_of(world.app)
        if e["customer_number"] == "1004" and e["category"] == "project" and e["unit_price"]
    )
    new = {**raw, "id": "E777001", "revision": 1, "hours": "2", "performed_on": "2026-09-20"}
    world.post_ledger([new])
    result = audit(world, "2026-09", "1004")
    assert result.exit_code is ExitCode.ATTENTION
    (missing,) = result.listed("not_invoiced")
    assert missing.ref == "E777001" and "next sync" in missing.reason
    (difference,) = result.differences
    assert difference.hours_difference == Decimal(-2)
    assert [e.entry_id for e in difference.entries if e.entry_id == "E777001"]
    world.sync()
    assert audit(world, "2026-09", "1004").exit_code is ExitCode.OK


def test_supplements_corrections_and_withdrawn_invoices_are_netted(world: World) -> None:
    world.sync()
    # A booked invoice corrected on a supplementary one.
    booked, _ = a_draft_row(world, "1004")
    world.driver.close(booked["remote_id"])
    period = booked["key"].split("-", 2)[2][:7]
    raw = next(
        e
        for e in entries_of(world.app)
        if e["customer_number"] == "1004"
        and e["performed_on"].startswith(period)
        and e["category"] in ("business_advisory", "data_maintenance", "project")
    )
    world.post_ledger([{**raw, "revision": raw["revision"] + 1, "hours": "9.5"}])
    # A draft a person withdraws: its entries are excluded, not a difference. (The sync
    # learns of it when it next needs to change that draft: an entry of it is revised.)
    withdrawn = next(i for i in world.driver.invoices() if i["key"] == "SK-1007-2026-08")
    world.driver.withdraw(withdrawn["remote_id"])
    topup = next(e for e in entries_of(world.app) if e["id"] == "E000048")  # on that draft
    world.post_ledger([{**topup, "revision": topup["revision"] + 1, "hours": "12"}])
    report = world.sync()
    assert f"{booked['key']}-2" in report.created
    assert_matches_ledger(world, report)
    result = audit(world, period, "1004")
    assert result.exit_code is ExitCode.OK, audit_text(result.to_json())
    keys = {i.key for i in result.invoices if i.live}
    assert {booked["key"], f"{booked['key']}-2"} <= keys
    gone_period = withdrawn["key"].split("-", 2)[2][:7]
    result = audit(world, gone_period, "1007")
    assert result.exit_code is ExitCode.OK, audit_text(result.to_json())
    assert any(f"was {world.profile.withdrawn}" in e.reason for e in result.listed("excluded"))
    assert [i.live for i in result.invoices if i.key == withdrawn["key"]] in ([False], [])


def test_customer_filter_narrows_everything(world: World) -> None:
    world.sync()
    doc = audit(world, "2026-09", "1004").to_json()
    assert doc["filter"] == {"customer": "1004"}
    assert {i["customer_number"] for i in doc["invoices"]} == {"1004"}
    assert {line["customer_number"] for line in doc["lines"]} == {"1004"}
    for name in ("invoiced", "excluded", "attention", "not_invoiced"):
        assert all(e["customer_number"] in ("1004", None) for e in doc[name])


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def sandbox_app() -> SandboxApp:
    """The sandbox without the systems' real rate limits: these tests sync the whole sample."""
    return build_app(rate_limit=FAST)


@pytest.fixture(params=TARGETS)
def cli_env(
    request: pytest.FixtureRequest,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The CLI set to one target of the sandbox on loopback (a Visma token stored)."""
    for name, value in connector_env(sandbox_server.url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    target: str = request.param
    monkeypatch.setenv(targets.spec(target).env("rate_limit"), FAST)
    if target != "fortnox":
        spec = targets.spec(target)
        module = fake_module(target)
        monkeypatch.setenv("CONNECTOR_TARGET", target)
        for field, value in module.connector_section(sandbox_server.url).items():
            monkeypatch.setenv(spec.env(field), str(value))
        monkeypatch.setenv(spec.env("search_settle_seconds"), "0")
        seed = getattr(module, "SEED_REFRESH_TOKEN", None)
        if seed:
            imported = CliRunner().invoke(app, ["auth", "import", target], input=seed + "\n")
            assert imported.exit_code == 0, imported.stderr
    return target


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def writes_to(app: SandboxApp, target: str) -> int:
    """Write requests the target's fake has received (its request counter)."""
    prefix = fake_module(target).Driver(app).api_prefix
    return sum(
        n
        for name, n in app.requests.items()
        if name.split(" ")[0] in ("POST", "PUT", "PATCH", "DELETE")
        and name.split(" ")[1].startswith(prefix)
    )


def test_cli_audit_exit_codes_and_json(cli_env: str, sandbox_app: SandboxApp) -> None:
    assert run("sync").exit_code == 1  # the sample has entries needing attention
    writes = writes_to(sandbox_app, cli_env)
    assert writes > 0
    result = run("audit", "--period", "2026-09", "--json")
    assert result.exit_code == 0, result.stdout
    assert writes_to(sandbox_app, cli_env) == writes  # reads only
    doc = json.loads(result.stdout)
    assert doc["target"] == cli_env and doc["period"] == "2026-09" and doc["agrees"] is True
    assert set(doc) >= {
        "totals", "customers", "differences", "duplicates", "problems", "not_invoiced",
        "attention", "invoice_attention", "excluded", "invoiced", "invoices", "lines", "counts",
    }  # fmt: skip
    assert doc["lines"] and all(
        set(line) >= {"customer_number", "article", "price", "hours_invoiced", "hours_expected"}
        for line in doc["lines"]
    )
    # Amounts are exact, written with 2 decimals (never "1725.000").
    amounts = [line["amount_invoiced"] for line in doc["lines"]]
    assert all(len(a.split(".")[1]) == 2 for a in amounts), amounts
    assert doc["checked_at"] and doc["requests"] > 0
    text = run("audit", "--period", "2026-09", "--customer", "1004")
    assert text.exit_code == 0
    assert "AGREES" in text.stdout and "Per customer" in text.stdout

    driver = fake_module(cli_env).Driver(sandbox_app)
    invoice = next(
        i for i in driver.invoices() if i["state"] == "open" and i["key"] == "SK-1004-2026-09"
    )
    index = next(n for n, row in enumerate(invoice["rows"]) if row["article"])
    driver.edit_quantity(invoice["remote_id"], index, Decimal("99"))
    changed = run("audit", "--period", "2026-09", "--json")
    assert changed.exit_code == 1
    (difference,) = json.loads(changed.stdout)["differences"]
    assert difference["customer_number"] == "1004"
    assert difference["article"] == invoice["rows"][index]["article"]


@pytest.mark.parametrize("period", ["2026-9", "26-09", "2026-13", ""])
def test_cli_audit_bad_period_is_a_usage_error(cli_env: str, period: str) -> None:
    result = run("audit", "--period", period)
    assert result.exit_code == 2
    assert "--period" in result.stderr


def test_cli_audit_unreachable_exits_4(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "http://127.0.0.1:9/ledger/v1")
    result = run("audit", "--period", "2026-09")
    assert result.exit_code == 4


def test_a_new_register_price_is_no_difference_for_work_already_invoiced(world: World) -> None:
    """Rows keep the price they were written with until their entry changes (planning.md):
    the audit expects that price, not the register's new one. A revised entry takes the new."""
    world.sync()
    register = world.driver.register()
    categories = world.mappings.categories

    def by_register(e: dict[str, Any]) -> bool:
        category = categories.get(e["category"])
        if category is None or not category.billable or category.price is not None:
            return False
        article = category.article_for(world.target)
        return (
            not e["unit_price"]
            and e["status"] == "active"
            and e["kind"] == "debit"
            and Decimal(e["hours"]) > Decimal(e["prepaid_hours"]) + 1
            and e["customer_number"] in world.driver.customers()
            and register.get(article or "") is not None
        )

    raw = next(e for e in entries_of(world.app) if by_register(e))
    customer, period = raw["customer_number"], raw["performed_on"][:7]
    article = categories[raw["category"]].article_for(world.target)
    assert article is not None
    old = register[article]
    assert old is not None
    world.driver.set_sales_price(article, old + 100)
    assert audit(world, period, customer).exit_code is ExitCode.OK
    world.post_ledger([{**raw, "revision": raw["revision"] + 1, "hours": "5"}])
    assert audit(world, period, customer).exit_code is ExitCode.ATTENTION  # not sent yet
    world.sync()
    result = audit(world, period, customer)
    assert result.exit_code is ExitCode.OK, audit_text(result.to_json())
    prices = {line.price for line in result.lines if line.article == article and line.invoiced}
    assert old + 100 in prices


def test_an_invoiced_entry_whose_date_moved_stays_on_its_month(world: World) -> None:
    """The sync does not credit and re-charge an entry whose date moved to another month when
    it bills the same: the audit expects it where it was invoiced, and both months agree."""
    world.sync()
    key = "SK-1004-2026-09"
    (draft,) = [i for i in world.driver.invoices() if i["key"] == key and i["state"] == "open"]
    world.driver.close(draft["remote_id"])
    raw = next(
        e
        for e in entries_of(world.app)
        if e["customer_number"] == "1004"
        and e["performed_on"].startswith("2026-09")
        and e["category"] == "project"
    )
    world.post_ledger([{**raw, "revision": raw["revision"] + 1, "performed_on": "2026-10-05"}])
    assert_matches_ledger(world, world.sync())
    september = audit(world, "2026-09", "1004")
    assert september.exit_code is ExitCode.OK, audit_text(september.to_json())
    (moved,) = [e for e in september.listed("invoiced") if e.ref == raw["id"]]
    assert moved.period == "2026-09"
    assert audit(world, "2026-10", "1004").exit_code is ExitCode.OK


def test_cli_audit_waits_for_no_running_sync(cli_env: str, tmp_path: Path) -> None:
    assert run("sync").exit_code == 1
    with StateStore(tmp_path / "state").lock():
        result = run("audit", "--period", "2026-09")
    assert result.exit_code == 3
    assert "another run holds the lock" in result.stderr


def test_a_lost_state_directory_does_not_change_the_books(world: World, tmp_path: Path) -> None:
    """The audit's books come from the accounting system: with a fresh state directory the
    same month still agrees, and the invoices the state does not know are pointed out."""
    world.sync()
    fresh = tmp_path / "another-state"
    fresh.mkdir(mode=0o700)
    token = world.settings.state_dir / targets.spec(world.target).oauth.token_file
    if token.exists():  # authorisation is kept beside the state (Visma's refresh token)
        shutil.copy2(token, fresh / token.name)
    world.settings.state_dir = fresh
    result = audit(world, "2026-09", "1004")
    assert result.exit_code is ExitCode.OK, audit_text(result.to_json())
    assert "state rebuild" in result.invoice_attention["SK-1004-2026-09"]
    assert result.listed("invoiced")


def test_cli_audit_and_resync_refuse_a_customer_no_one_knows(cli_env: str) -> None:
    """Found by a tester: a mistyped --customer gave an empty "AGREES" (exit 0)."""
    audited = run("audit", "--period", "2026-09", "--customer", "9999")
    assert audited.exit_code == 2, audited.output
    assert "customer 9999 has no entry in the ledger" in audited.stderr
    resynced = run("resync", "--period", "2026-09", "--customer", "9999", "--dry-run")
    assert resynced.exit_code == 2, resynced.output
    assert "check the number given to --customer" in resynced.stderr
    assert run("audit", "--period", "2026-09", "--customer", "1004").exit_code in (0, 1)
