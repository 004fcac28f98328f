"""`connector report`: what was invoiced for a month, per customer, in a table, JSON, or a CSV a
Swedish Excel opens by double-click; read back with that dialect, the figures are exact."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.mappings import Mappings
from connector.report import CSV_COLUMNS, render, run_report, write_atomically
from tests.harness import TARGETS, World, make_world
from tests.test_audit import cli_env, run, sandbox_app  # noqa: F401  (fixtures)

PERIOD = "2026-09"


@pytest.fixture(params=TARGETS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> World:
    return make_world(tmp_path, mappings, target=request.param)


def excel_rows(data: bytes) -> list[dict[str, str]]:
    """The file as a Swedish Excel reads it: UTF-8 with a byte-order mark, semicolons."""
    assert data.startswith(b"\xef\xbb\xbf"), "no byte-order mark: Excel would not read UTF-8"
    text = data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    header, *rows = list(reader)
    assert tuple(header) == CSV_COLUMNS
    return [dict(zip(header, row, strict=True)) for row in rows]


def swedish_decimal(text: str) -> Decimal:
    """A decimal-comma number, refusing what Excel would misread: a point, a thousands
    separator."""
    assert "." not in text and " " not in text and "\xa0" not in text, text
    return Decimal(text.replace(",", "."))


def books_of_month(world: World, period: str) -> dict[str, Decimal]:
    """Amount excl. VAT per customer over the fake's live invoices of the month."""
    found: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in world.driver.invoices():
        if invoice["state"] == "gone" or f"-{period}" not in invoice["key"]:
            continue
        for row in invoice["rows"]:
            if row["article"]:
                amount = Decimal(str(row["quantity"])) * Decimal(str(row["price"]))
                found[invoice["customer_number"]] += amount
    return dict(found)


def test_the_csv_round_trips_in_the_swedish_excel_dialect(world: World, tmp_path: Path) -> None:
    world.sync()
    month = run_report(world.settings, PERIOD)
    doc = month.to_json()
    path = tmp_path / "rapport.csv"
    write_atomically(path, render(month, "csv"))
    rows = excel_rows(path.read_bytes())
    assert rows
    invoiced: dict[str, Decimal] = defaultdict(Decimal)
    not_invoiced: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        assert date.fromisoformat(row["period_start"]) == date(2026, 9, 1)
        assert date.fromisoformat(row["period_end"]) == date(2026, 9, 30)
        hours = swedish_decimal(row["hours"])
        if row["kind"] == "invoiced":
            assert row["invoice_key"].startswith(f"SK-{row['customer']}-{PERIOD}")
            date.fromisoformat(row["last_written"])
            invoiced[row["customer"]] += swedish_decimal(row["amount_excl_vat"])
        else:
            assert row["kind"] == "not invoiced" and row["reason"]
            assert row["amount_excl_vat"] == ""
            not_invoiced[row["reason"]] += hours
    # The figures read back are exactly the report's, and the accounting system's.
    for customer in doc["customers"]:
        total = sum(
            (Decimal(i["total_excl_vat"]) for i in customer["invoices"] if i["counts"]),
            Decimal(0),
        )
        assert invoiced.get(customer["customer_number"], Decimal(0)) == total
    assert {c: a for c, a in invoiced.items() if a} == books_of_month(world, PERIOD)
    assert sum(invoiced.values()) == Decimal(doc["totals_excl_vat"]["SEK"])
    assert {r: str(h) for r, h in not_invoiced.items()} == {
        r: str(Decimal(h)) for r, h in doc["hours_not_invoiced"].items()
    }
    reasons = set(not_invoiced)
    assert {"included in the monthly fee", "drawn from prepaid hours", "needs attention"} <= (
        reasons
    )


def test_the_report_counts_supplements_and_leaves_withdrawn_invoices_out(world: World) -> None:
    world.sync()
    key = "SK-1004-2026-09"
    (draft,) = [i for i in world.driver.invoices() if i["key"] == key and i["state"] == "open"]
    world.driver.close(draft["remote_id"])
    raw = next(
        e
        for e in world.app.ledger.entries()
        if isinstance(e, dict)
        and e["customer_number"] == "1004"
        and e["performed_on"].startswith(PERIOD)
        and e["category"] == "project"
    )
    world.post_ledger([{**raw, "revision": raw["revision"] + 1, "hours": "3"}])
    world.sync()
    doc = run_report(world.settings, PERIOD).to_json()
    (customer,) = [c for c in doc["customers"] if c["customer_number"] == "1004"]
    states = {i["key"]: i["state"] for i in customer["invoices"]}
    assert states[key] in ("booked", "sent") and states[f"{key}-2"] == "draft"
    hours = Decimal(customer["hours_invoiced"]["project"])
    assert hours == Decimal(3)  # the booked row and its correction net to the new figure
    total = sum((Decimal(i["total_excl_vat"]) for i in customer["invoices"]), Decimal(0))
    assert total == books_of_month(world, PERIOD)["1004"]


def test_hours_waiting_for_the_next_sync_are_shown_apart(world: World) -> None:
    world.sync()
    raw = next(
        e
        for e in world.app.ledger.entries()
        if isinstance(e, dict)
        and e["customer_number"] == "1004"
        and e["category"] == "project"
        and e["unit_price"]
    )
    new = {**raw, "id": "E777002", "revision": 1, "hours": "2", "performed_on": "2026-09-21"}
    world.post_ledger([new])
    world.sync(dry_run=True)  # pulls the ledger into the mirror, writes nothing
    doc = run_report(world.settings, PERIOD).to_json()
    (customer,) = [c for c in doc["customers"] if c["customer_number"] == "1004"]
    (waiting,) = [
        item for item in customer["not_invoiced"] if item["reason"].startswith("not yet sent")
    ]
    assert waiting["entries"] == ["E777002"] and Decimal(waiting["hours"]) == 2
    before = Decimal(customer["hours_invoiced"]["project"])
    world.sync()
    doc = run_report(world.settings, PERIOD).to_json()
    (customer,) = [c for c in doc["customers"] if c["customer_number"] == "1004"]
    assert not [i for i in customer["not_invoiced"] if i["reason"].startswith("not yet sent")]
    assert Decimal(customer["hours_invoiced"]["project"]) == before + 2


# --- the command ---------------------------------------------------------------------------


def test_cli_report_formats(cli_env: str, tmp_path: Path) -> None:  # noqa: F811
    assert run("sync").exit_code == 1
    table = run("report", "--period", PERIOD)
    assert table.exit_code == 0, table.stderr
    assert "Hours not invoiced, by reason" in table.stdout
    assert f"SK-1004-{PERIOD}" in table.stdout
    as_json = run("report", "--period", PERIOD, "--format", "json")
    assert as_json.exit_code == 0
    doc: dict[str, Any] = json.loads(as_json.stdout)
    assert doc["target"] == cli_env and doc["period"] == PERIOD
    assert set(doc) >= {"customers", "totals_excl_vat", "hours_not_invoiced", "attention"}
    invoice = doc["customers"][0]["invoices"][0]
    assert set(invoice) >= {"key", "number", "state", "hours", "amounts_excl_vat"}
    as_csv = run("report", "--period", PERIOD, "--format", "csv")
    assert as_csv.exit_code == 0
    assert excel_rows(as_csv.stdout_bytes)
    # --json as every other command has it; contradicting --format is a usage error.
    flag = run("report", "--period", PERIOD, "--json")
    assert flag.exit_code == 0 and json.loads(flag.stdout) == doc
    assert run("report", "--period", PERIOD, "--json", "--format", "csv").exit_code == 2


def test_cli_report_output_is_atomic_and_never_a_directory(
    cli_env: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert run("sync").exit_code == 1
    target = tmp_path / "out" / "september.csv"
    target.parent.mkdir()
    target.write_text("old content")
    result = run("report", "--period", PERIOD, "--format", "csv", "--output", str(target))
    assert result.exit_code == 0, result.stderr
    assert excel_rows(target.read_bytes())
    assert sorted(p.name for p in target.parent.iterdir()) == ["september.csv"]  # no temp left
    folder = tmp_path / "a-folder"
    folder.mkdir()
    refused = run("report", "--period", PERIOD, "--output", str(folder))
    assert refused.exit_code == 2 and "is a directory" in refused.stderr
    assert list(folder.iterdir()) == []
    missing = run("report", "--period", PERIOD, "--output", str(tmp_path / "nope" / "x.csv"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_cli_report_needs_no_network(
    cli_env: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
) -> None:
    assert run("sync").exit_code == 1
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "http://127.0.0.1:9/ledger/v1")
    for name in ("FORTNOX", "VISMA"):
        monkeypatch.setenv(f"CONNECTOR_{name}__API_URL", "http://127.0.0.1:9/api")
    result = run("report", "--period", PERIOD, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["customers"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2026-9"], "--period must be YYYY-MM"),
        ([], "--period YYYY-MM is required"),
        (["--period", PERIOD, "--format", "xlsx"], "xlsx"),
    ],
)
def test_cli_report_bad_options_exit_2(
    cli_env: str,  # noqa: F811
    args: list[str],
    message: str,
) -> None:
    result = run("report", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_report_without_a_state_directory_exits_2(cli_env: str) -> None:  # noqa: F811
    result = run("report", "--period", PERIOD)
    assert result.exit_code == 2
    assert "run connector sync first" in result.stderr
