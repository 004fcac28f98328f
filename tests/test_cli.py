"""The commands end to end against a real sandbox on loopback: output, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.sandbox.server import SandboxServer
from connector.state import StateStore
from tests.conftest import REPO, connector_env


@pytest.fixture
def env(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    values = connector_env(sandbox_server.url, tmp_path / "state")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def plan_document(*args: str) -> tuple[int, dict[str, Any]]:
    result = run("plan", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_plan_json_against_the_sandbox(env: dict[str, str]) -> None:
    code, doc = plan_document()
    assert code == 1  # the sample has entries that need attention
    counts = doc["counts"]
    assert counts["entries"] == counts["invoiced"] + counts["excluded"] + counts["attention"]
    assert counts["invoices"] == len(doc["invoices"]) > 100
    reasons = {a["ref"]: a["reason"] for a in doc["attention"]}
    assert reasons["E900001"] == "unknown category 'onsite_visit': add it to the mapping files"
    assert reasons["E900002"].startswith("malformed entry: hours: must be a decimal string")
    assert any(e["reason"].startswith("included in the monthly fee") for e in doc["excluded"])
    assert any(e["reason"] == "void in the ledger" for e in doc["excluded"])
    invoice = doc["invoices"][0]
    assert invoice["key"] == f"SK-{invoice['customer_number']}-{invoice['period']}"
    assert invoice["action"] == "create"
    for inv in doc["invoices"]:
        amounts = [row["amount"] for row in inv["rows"] if row["amount"] is not None]
        assert sum(map(__import__("decimal").Decimal, amounts), start=0) == (
            __import__("decimal").Decimal(inv["total"])
        )
        assert inv["rows"][0]["role"] == "header"
        dates = [row["description"][:10] for row in inv["rows"][1:]]
        assert dates == sorted(dates)


def test_revised_entry_is_planned_with_its_latest_revision(env: dict[str, str]) -> None:
    _, doc = plan_document()
    rows = {row["entry_id"]: row for inv in doc["invoices"] for row in inv["rows"]}
    revised = [
        json.loads(line)
        for line in (REPO / "connector/sandbox/data/sample-ledger.jsonl").read_text().splitlines()
    ]
    latest = [e for e in revised if e["revision"] == 2 and e["status"] == "active"]
    assert latest
    for entry in latest:
        assert rows[entry["id"]]["quantity"] == "3.50"


def test_plan_filters(env: dict[str, str]) -> None:
    code, doc = plan_document("--period", "2026-09", "--customer", "1004")
    assert code == 0  # nothing in this view needs attention
    assert [i["key"] for i in doc["invoices"]] == ["SK-1004-2026-09"]
    assert doc["filter"] == {"period": "2026-09", "customer": "1004"}
    assert doc["attention"] == []


def test_second_plan_pulls_only_new_changes(env: dict[str, str], tmp_path: Path) -> None:
    first_code, first = plan_document()
    second_code, second = plan_document()
    assert (first_code, first) == (second_code, second)
    store = StateStore(tmp_path / "state")
    (latest, previous) = store.runs(2)
    assert previous.summary is not None and previous.summary["pulled"] > 400
    assert latest.summary is not None and latest.summary["pulled"] == 0


def test_plan_text_output(env: dict[str, str]) -> None:
    result = run("plan", "--customer", "1004", "--period", "2026-08")
    assert result.exit_code == 0
    assert "SK-1004-2026-08  [create]  customer 1004, 2026-08" in result.stdout
    assert "total excl. VAT:" in result.stdout


def test_bad_period_is_a_usage_error(env: dict[str, str]) -> None:
    result = run("plan", "--period", "2026-9")
    assert result.exit_code == 2
    assert "--period must be YYYY-MM" in result.stderr


def test_missing_settings_name_the_variables(tmp_path: Path) -> None:
    result = run("plan")
    assert result.exit_code == 2
    assert "CONNECTOR_LEDGER__URL and CONNECTOR_LEDGER__TOKEN" in result.stderr


def test_bad_mapping_exits_2_before_anything_is_pulled(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad-maps"
    bad.mkdir()
    (bad / "x.toml").write_text("[categories.installation]\nartcle = 'SK'\n")
    monkeypatch.setenv("CONNECTOR_MAPPINGS_DIR", str(bad))
    result = run("plan")
    assert result.exit_code == 2
    assert f"{bad / 'x.toml'}:2: unknown key 'artcle'" in result.stderr
    assert StateStore(tmp_path / "state").cursor() is None


def test_lock_held_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    with StateStore(tmp_path / "state").lock():
        result = run("plan")
    assert result.exit_code == 3
    assert "another run holds the lock" in result.stderr


def test_unreachable_ledger_exits_4(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "http://127.0.0.1:9/ledger/v1")
    result = run("plan")
    assert result.exit_code == 4
    assert "ledger unreachable" in result.stderr
    # The message says where it tried and which setting holds that address.
    assert "http://127.0.0.1:9/ledger/v1/" in result.stderr
    assert "CONNECTOR_LEDGER__URL" in result.stderr
    assert len(sleeps) == 5  # retried with backoff before giving up


def test_demo_runs_a_full_sync_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.sandbox import demo

    monkeypatch.setattr(demo, "SANDBOX_RATE_LIMIT", "100000/1")
    monkeypatch.setattr(demo, "CONNECTOR_RATE_LIMITS", {"fortnox": "100000/1"})
    os.chdir(REPO)
    result = run("demo")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Fortnox: pulled 431 ledger change(s); invoices: 98 created")
    assert "Invoices now in the sandbox's Fortnox: 98" in result.stdout
    assert "SK-1042-2026-08: customer 1042 does not exist in Fortnox" in result.stdout


def test_module_entry_point_and_json_logs(env: dict[str, str], tmp_path: Path) -> None:
    """As cron runs it: a separate process, JSON logs on stderr, the result on stdout."""
    completed = subprocess.run(
        [sys.executable, "-m", "connector", "plan", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert json.loads(completed.stdout)["target"] == "fortnox"
    log_lines = [json.loads(line) for line in completed.stderr.splitlines()]
    assert any(line["event"] == "ledger.pulled" for line in log_lines)
    assert "Bearer" not in completed.stderr
    assert env["CONNECTOR_LEDGER__TOKEN"] not in completed.stderr.replace("error", "")


# --- sync and auth -------------------------------------------------------------------------


@pytest.fixture
def fast(env: dict[str, str], sandbox_app: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    from connector.sandbox import fortnox_of

    fortnox_of(sandbox_app).window.limit = 100000
    monkeypatch.setenv("CONNECTOR_FORTNOX__RATE_LIMIT", "100000/1")
    return env


def test_sync_json_then_idempotent(fast: dict[str, str], sandbox_app: Any) -> None:
    first = run("sync", "--json")
    assert first.exit_code == 1
    doc = json.loads(first.stdout)
    assert len(doc["invoices"]["created"]) == 98
    assert doc["attention"]["invoices"][0] == {
        "key": "SK-1042-2026-08",
        "reason": "customer 1042 does not exist in Fortnox",
    }
    assert doc["requests"] > 99 and doc["rate_limited"] == 0
    second = run("sync")
    assert second.exit_code == 1
    assert "invoices: 0 created, 0 updated, 98 unchanged" in second.stdout
    assert "SK-1042-2026-08: customer 1042 does not exist in Fortnox" in second.stdout


def test_sync_dry_run_text(fast: dict[str, str]) -> None:
    result = run("sync", "--dry-run")
    assert result.exit_code == 1
    assert result.stdout.startswith("Fortnox: Dry run (nothing sent):")
    assert "    create  SK-1003-2026-08" in result.stdout


def test_sync_needing_login_exits_5(fast: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNECTOR_FORTNOX__TENANT_ID")
    result = run("sync")
    assert result.exit_code == 5
    assert "run: connector auth login fortnox" in result.stderr


def test_sync_without_fortnox_credentials_exits_2(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONNECTOR_FORTNOX__CLIENT_SECRET")
    result = run("sync")
    assert result.exit_code == 2
    assert "CONNECTOR_FORTNOX__CLIENT_SECRET" in result.stderr


def test_auth_login_then_sync_with_the_refresh_token(
    fast: dict[str, str], sandbox_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from connector.sandbox import fortnox_of

    monkeypatch.delenv("CONNECTOR_FORTNOX__TENANT_ID")
    code = fortnox_of(sandbox_app).issue_code()
    login = CliRunner().invoke(
        app, ["auth", "login", "fortnox", "--code-from-stdin"], input=code + "\n"
    )
    assert login.exit_code == 0, login.output
    assert (
        "access_type=offline" in login.stdout and "scope=invoice+article+customer" in login.stdout
    )
    assert code not in login.stdout  # typed hidden, never echoed
    assert run("sync").exit_code == 1
    assert (tmp_path / "state" / "fortnox-token.json").stat().st_mode & 0o777 == 0o600


def test_service_account_login_prints_the_tenant_id(
    fast: dict[str, str], sandbox_app: Any, tmp_path: Path
) -> None:
    """The service-account set-up end to end: the address asks for account_type=service and
    the scope to read the tenant id; the answer is the value for CONNECTOR_FORTNOX__TENANT_ID,
    and the client-credentials flow then works for that tenant."""
    from connector.sandbox import fortnox_of
    from connector.sandbox.fortnox import TENANT_ID

    fake = fortnox_of(sandbox_app)
    fake.consents.clear()  # no consent yet: client credentials are refused
    assert run("sync").exit_code == 5
    redirect = "http://localhost:8790/fortnox/callback"
    code = fake.issue_code(account_type="service", redirect_uri=redirect)
    login = CliRunner().invoke(
        app,
        ["auth", "login", "fortnox", "--service-account", "--code-from-stdin"],
        input=code + "\n",
    )
    assert login.exit_code == 0, login.output
    assert "account_type=service" in login.stdout and "companyinformation" in login.stdout
    assert f"CONNECTOR_FORTNOX__TENANT_ID={TENANT_ID}" in login.stdout
    assert not (tmp_path / "state" / "fortnox-token.json").exists()  # nothing to keep
    assert run("sync").exit_code == 1  # consent given: the sync runs (1: the sample's issues)


def test_sandbox_refuses_a_bad_fault_setting() -> None:
    result = run("sandbox", "--latency-ms", "-5")
    assert result.exit_code == 2
    assert "latency_ms must not be negative" in result.stderr


@pytest.mark.parametrize("command", ["import", "login"])
def test_auth_for_an_unknown_system_is_a_usage_error(env: dict[str, str], command: str) -> None:
    result = run("auth", command, "sap")
    assert result.exit_code == 2
    assert "'sap' is not one of 'fortnox', 'visma'" in result.stderr
    assert result.stdout == ""


def test_auth_login_without_a_terminal_is_a_usage_error(
    fast: dict[str, str], sandbox_app: Any, tmp_path: Path
) -> None:
    """Under cron or in a pipe nobody can paste the code: refused before anything is printed or
    asked, and nothing waits for input that never comes."""
    from connector.sandbox import fortnox_of

    code = fortnox_of(sandbox_app).issue_code()
    login = CliRunner().invoke(app, ["auth", "login", "fortnox"], input=code + "\n")
    assert login.exit_code == 2
    assert "standard input is not a terminal" in login.stderr
    assert "--code-from-stdin" in login.stderr
    assert login.stdout == ""  # no address printed, no prompt
    assert code not in login.output
    assert not (tmp_path / "state" / "fortnox-token.json").exists()


def test_auth_login_code_from_stdin_needs_a_code(fast: dict[str, str], tmp_path: Path) -> None:
    login = CliRunner().invoke(app, ["auth", "login", "fortnox", "--code-from-stdin"], input="")
    assert login.exit_code == 2
    assert "--code-from-stdin: no code on standard input" in login.stderr
    assert not (tmp_path / "state" / "fortnox-token.json").exists()


def test_failures_are_json_lines_under_cron(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "http://127.0.0.1:9/ledger/v1")
    monkeypatch.setenv("CONNECTOR_LEDGER__PAGE_SIZE", "10")
    completed = subprocess.run(
        [sys.executable, "-c", "import connector.http as h; h.pause = lambda s: None;"
         " from connector.cli import main; main()", "plan"],
        env={**os.environ}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 4
    lines = [json.loads(line) for line in completed.stderr.splitlines()]
    assert lines[-1]["event"] == "command.failed" and lines[-1]["exit_code"] == 4
    assert "ledger unreachable" in lines[-1]["error"]


def test_plan_shows_exactly_what_sync_would_do(fast: dict[str, str], sandbox_app: Any) -> None:
    """Found by a tester: plan said "update" for an invoice the sync then handled with a
    supplementary invoice, and listed creates the sync refused. Now plan asks Fortnox first."""
    from connector.sandbox import fortnox_of

    fake = fortnox_of(sandbox_app)
    assert run("sync").exit_code == 1
    (booked,) = fake.live_by_key()["SK-1004-2026-09"]
    fake.bookkeep(int(booked["DocumentNumber"]))
    entry = next(
        e for e in fake.app.ledger.entries()
        if isinstance(e, dict) and e["customer_number"] == "1004"
        and e["performed_on"].startswith("2026-09") and e["category"] == "project"
    )  # fmt: skip
    fake.app.ledger.append([{**entry, "revision": 9, "hours": "5"}])
    code, doc = plan_document("--customer", "1004")
    assert code == 0 and doc["checked_against_target"] is True
    actions = {i["key"]: i["action"] for i in doc["invoices"] if i["action"] != "unchanged"}
    assert actions == {"SK-1004-2026-09-2": "create"}  # a supplement, not an update
    code, everything = plan_document()
    assert {r["key"] for r in everything["invoice_attention"]} == {
        f"SK-1042-2026-{m}" for m in ("08", "09", "10")
    }  # the creates Fortnox would refuse, named
    assert everything["counts"]["invoices_need_attention"] == 3
    # Found by a tester: those were shown as "create" and counted among the changes.
    blocked = [i for i in everything["invoices"] if i["action"] == "blocked"]
    assert {i["key"] for i in blocked} == {f"SK-1042-2026-{m}" for m in ("08", "09", "10")}
    assert all("does not exist in Fortnox" in i["blocked_by"] for i in blocked)
    assert everything["counts"]["changes"] == 1 and everything["counts"]["blocked"] == 3
    text = run("plan").stdout
    assert "1 to create or change (3 more blocked, below)" in text
    assert "SK-1042-2026-08  [blocked: would be refused, see below]" in text
    done = json.loads(run("sync", "--json").stdout)
    assert done["invoices"]["created"] == ["SK-1004-2026-09-2"]


def test_plan_text_has_headings_and_totals_per_currency(fast: dict[str, str]) -> None:
    result = run("plan", "--customer", "1004")
    assert result.exit_code == 0
    out = result.stdout
    assert "    article      quantity      price       amount  text" in out
    assert "Total excl. VAT:" in out and "of which to create or change:" in out
    assert "(register)" not in out  # every row is priced, the register's included


def test_plan_without_accounting_credentials_says_so(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONNECTOR_FORTNOX__CLIENT_SECRET")
    result = run("plan", "--customer", "1004")
    assert result.stdout.startswith("Not checked against Fortnox (its credentials are not set)")


def test_mappings_validate_warns_what_a_change_would_do(
    fast: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a state directory beside it, validate reads the ledger as last pulled: a typo that
    still validates is reported by what it would do (warnings; the exit code stays 0)."""
    assert run("sync").exit_code == 1
    folder = tmp_path / "typo"
    folder.mkdir()
    text = (REPO / "mappings" / "service-categories.toml").read_text(encoding="utf-8")
    (folder / "m.toml").write_text(
        text.replace("[categories.training]", "[categories.traning]"), encoding="utf-8"
    )
    result = run("mappings", "validate", "--dir", str(folder))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK: ")
    assert any(
        line.startswith("warning: category 'training' is used by") and "no mapping file" in line
        for line in lines
    )
    assert any("would need attention: unknown category 'training'" in line for line in lines)
    clean = run("mappings", "validate")
    assert not [line for line in clean.stdout.splitlines() if "category 'training'" in line]


# --- Visma eAccounting ---------------------------------------------------------------------------


@pytest.fixture
def visma(
    env: dict[str, str], sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """CONNECTOR_TARGET=visma with the sandbox's Visma settings (and no token stored yet)."""
    from connector.sandbox.visma import connector_section

    monkeypatch.setenv("CONNECTOR_TARGET", "visma")
    for name, value in connector_section(sandbox_server.url).items():
        monkeypatch.setenv(f"CONNECTOR_VISMA__{name.upper()}", value)
    monkeypatch.setenv("CONNECTOR_VISMA__SEARCH_SETTLE_SECONDS", "0")
    return env


def test_visma_login_with_the_code_flow_then_sync(
    visma: dict[str, str], sandbox_app: Any, tmp_path: Path
) -> None:
    from connector.sandbox import visma_of

    fake = visma_of(sandbox_app)
    assert run("sync").exit_code == 5  # not authorised yet: a person must log in
    code = fake.issue_code(
        ["ea:api", "offline_access", "ea:sales"], "http://localhost:8790/visma/callback"
    )
    login = CliRunner().invoke(
        app, ["auth", "login", "visma", "--code-from-stdin"], input=code + "\n"
    )
    assert login.exit_code == 0, login.output
    assert "/visma/connect/authorize?" in login.stdout
    assert "scope=ea%3Aapi+offline_access+ea%3Asales" in login.stdout
    assert "Visma eAccounting" in login.stdout and code not in login.stdout
    token_file = tmp_path / "state" / "visma-token.json"
    assert token_file.stat().st_mode & 0o777 == 0o600
    first = json.loads(token_file.read_text())["refresh_token"]
    assert run("sync").exit_code == 1  # 1042 and the private person need attention
    fake.expire_tokens()
    assert run("sync").exit_code == 1
    # The refresh token rotated and the new one was stored: the old one is spent.
    assert json.loads(token_file.read_text())["refresh_token"] != first
    assert fake.drafts


def test_visma_service_account_is_refused_as_a_usage_error(visma: dict[str, str]) -> None:
    login = CliRunner().invoke(
        app, ["auth", "login", "visma", "--service-account", "--code-from-stdin"], input="x\n"
    )
    assert login.exit_code == 2
    assert "Visma eAccounting has no service accounts" in login.stderr


def test_visma_import_then_sync(visma: dict[str, str], sandbox_app: Any) -> None:
    from connector.sandbox.visma import SEED_REFRESH_TOKEN

    imported = CliRunner().invoke(app, ["auth", "import", "visma"], input=SEED_REFRESH_TOKEN + "\n")
    assert imported.exit_code == 0, imported.output
    result = run("sync", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["target"] == "visma" and doc["invoices"]["created"]


@pytest.mark.parametrize("how", ["option", "variable"])
def test_demo_fills_the_fake_visma(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from connector.sandbox import demo

    monkeypatch.setattr(demo, "SANDBOX_RATE_LIMIT", "100000/1")
    monkeypatch.setattr(demo, "CONNECTOR_RATE_LIMITS", {"visma": "100000/1"})
    os.chdir(REPO)
    if how == "variable":
        monkeypatch.setenv("CONNECTOR_TARGET", "visma")
        result = run("demo")
    else:
        result = run("demo", "--target", "visma")
    assert result.exit_code == 0, result.output
    assert "Invoices now in the sandbox's Visma eAccounting:" in result.stdout
    assert "SK-1042-2026-08: customer 1042 does not exist in Visma eAccounting" in result.stdout


def test_sandbox_start_up_text_shows_both_targets(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not lines or "auth import visma" not in lines[-1]:  # the last line printed
            line = proc.stderr.readline()
            assert line, "".join(lines)  # ended early
            lines.append(line)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    text = "".join(lines)
    assert "CONNECTOR_FORTNOX__API_URL=" in text and "CONNECTOR_FORTNOX__TENANT_ID=" in text
    assert "CONNECTOR_VISMA__API_URL=" in text and "/visma/v2" in text
    assert "CONNECTOR_TARGET=visma" in text
    assert "echo sandbox | connector auth import visma" in text


def test_visma_login_takes_the_whole_pasted_address(
    visma: dict[str, str], sandbox_app: Any, tmp_path: Path
) -> None:
    """Found by a tester: pasting the address the browser shows (a natural thing to do) was
    refused as an invalid code."""
    from connector.sandbox import visma_of

    redirect = "http://localhost:8790/visma/callback"
    code = visma_of(sandbox_app).issue_code(["ea:api", "offline_access", "ea:sales"], redirect)
    pasted = f"{redirect}?code={code}&state=xyz\n"
    login = CliRunner().invoke(app, ["auth", "login", "visma", "--code-from-stdin"], input=pasted)
    assert login.exit_code == 0, login.output
    assert (tmp_path / "state" / "visma-token.json").exists()


def test_visma_login_without_offline_access_asks_to_authorise_again(
    visma: dict[str, str], sandbox_app: Any, tmp_path: Path
) -> None:
    from connector.sandbox import visma_of

    code = visma_of(sandbox_app).issue_code(
        ["ea:api", "ea:sales"], "http://localhost:8790/visma/callback"
    )
    login = CliRunner().invoke(
        app, ["auth", "login", "visma", "--code-from-stdin"], input=code + "\n"
    )
    assert login.exit_code == 5, login.output
    assert "did not include offline access" in login.stderr
    assert not (tmp_path / "state" / "visma-token.json").exists()
