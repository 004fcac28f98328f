"""`connector plan` at scale: `--json` streams one document, invoice by invoice, identical to the
document built whole; on a terminal a large plan is summarised. For every accounting system."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector import targets
from connector.cli import app
from connector.ledger import Entry, InvalidEntry, parse_entry
from connector.mappings import Mappings
from connector.planning import PlanView, clean, plan
from connector.render import (
    SUMMARY_ABOVE,
    SUMMARY_SHOWN,
    Items,
    plan_document,
    plan_json,
    plan_text,
    write_json,
)
from connector.sandbox.sample import generate
from tests.conftest import MAPPINGS_DIR
from tests.harness import TARGETS

# A note with what JSON must escape: a line break, quotes, a backslash, and Swedish letters.
NOTE = 'line one\nline two: "quoted" \\ back-slashed, två öre'


def sample_view(target: str, mappings: Mappings) -> PlanView:
    """The generated sample ledger (malformed and unknown entries included) planned for
    `target`: about eighty invoices; one of them blocked as a refused create would be."""
    entries: list[Entry] = []
    rejected: list[tuple[str, str]] = []
    for raw in generate(customers=30):
        try:
            entries.append(parse_entry(raw))
        except InvalidEntry as exc:
            rejected.append((str(raw["id"]), exc.reason))
    result = plan(entries, mappings, targets.profile(target), rejected=rejected)
    assert len(result.invoices) > SUMMARY_ABOVE
    refused = result.invoices[3].key.text
    return PlanView(result, True, {refused: "customer does not exist\nin the system"}, (NOTE,))


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def whole_text(view: PlanView, **filters: str) -> str:
    """The document as it was printed before streaming: built whole, dumped at once."""
    return json.dumps(plan_json(view, **filters), ensure_ascii=False, indent=2) + "\n"


@pytest.mark.parametrize(
    "filters",
    [{}, {"period": "2026-09"}, {"customer": "1003"}, {"customer": "nobody"}],
    ids=["all", "period", "customer", "empty"],
)
def test_streamed_json_is_the_document_built_whole(
    target: str, mappings: Mappings, filters: dict[str, str]
) -> None:
    view = sample_view(target, mappings)
    chunks: list[str] = []
    write_json(plan_document(view, **filters), chunks.append)
    streamed = "".join(chunks)
    assert streamed == whole_text(view, **filters)  # the same text, byte for byte
    parsed = json.loads(streamed)
    assert parsed == plan_json(view, **filters)
    if not filters:
        assert parsed["notes"] == [clean(NOTE)] and '\\"quoted\\" \\\\ back' in streamed
        assert parsed["counts"]["blocked"] == 1 and parsed["counts"]["attention"] >= 2
        # Written invoice by invoice, not as one string.
        listed = ("invoices", "excluded", "attention")
        assert len(chunks) > sum(parsed["counts"][name] for name in listed)
    if filters.get("customer") == "nobody":
        assert parsed["invoices"] == [] and '"invoices": [],' in streamed


def test_the_long_lists_are_made_when_written(target: str, mappings: Mappings) -> None:
    view = sample_view(target, mappings)
    document = plan_document(view)
    made: list[str] = []
    invoices = document["invoices"]
    assert isinstance(invoices, Items) and len(invoices) == len(view.plan.invoices)

    def counted() -> Iterator[Any]:
        for invoice in invoices:
            made.append(invoice["key"])
            yield invoice

    document["invoices"] = Items(invoices.count, counted)
    seen_before_made: list[int] = []

    def write(text: str) -> None:
        seen_before_made.append(len(made))

    write_json(document, write)
    assert len(made) == len(view.plan.invoices)
    # The first invoice was written before the second was made.
    assert seen_before_made.index(1) < seen_before_made.index(2)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """Settings that load; the plan itself is patched in (no ledger, no network)."""
    monkeypatch.setenv("CONNECTOR_TARGET", target)
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "http://127.0.0.1:9/ledger/v1")
    monkeypatch.setenv("CONNECTOR_LEDGER__TOKEN", "not-used-here")
    monkeypatch.setenv("CONNECTOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CONNECTOR_MAPPINGS_DIR", str(MAPPINGS_DIR))
    monkeypatch.setenv("CONNECTOR_LOG_FORMAT", "json")


def planned(monkeypatch: pytest.MonkeyPatch, view: PlanView) -> None:
    def run_plan(settings: Any, *, everything: bool = False) -> PlanView:
        return view

    monkeypatch.setattr("connector.sync.run_plan", run_plan)


def refused(view: PlanView) -> set[str]:
    return set(view.invoice_attention)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_plan_json_command_streams_the_same_document(
    env: None, target: str, mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = sample_view(target, mappings)
    planned(monkeypatch, view)
    result = run("plan", "--json")
    assert result.exit_code == 1  # entries need attention
    assert result.stdout == whole_text(view)
    assert json.loads(result.stdout)["target"] == target
    # A view without problems exits 0, as before.
    troubled = {r.customer_number for r in view.plan.results if r.outcome.value == "attention"}
    troubled |= {i.key.customer_number for i in view.plan.invoices if i.key.text in refused(view)}
    customer = next(
        i.key.customer_number for i in view.plan.invoices if i.key.customer_number not in troubled
    )
    result = run("plan", "--json", "--customer", customer)
    assert result.exit_code == 0
    assert result.stdout == whole_text(view, customer=customer)


def test_a_large_plan_on_a_terminal_is_summarised(
    env: None, target: str, mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = sample_view(target, mappings)
    planned(monkeypatch, view)
    heading = "    article      quantity      price       amount  text"
    keys = [i.key.text for i in view.plan.invoices]

    # Piped (as CliRunner is) or written to a file: every invoice and row, as before.
    full = run("plan")
    assert full.exit_code == 1
    assert heading in full.stdout and all(f"{k}  [" in full.stdout for k in keys)

    monkeypatch.setattr("connector.cli._stdout_is_terminal", lambda: True)
    result = run("plan")
    assert result.exit_code == 1
    text = result.stdout
    assert heading not in text  # no rows
    changes = sum(1 for i in view.plan.invoices if i.action.value != "unchanged")
    assert "Invoices by action:" in text
    assert f"Invoices that would change (the first {SUMMARY_SHOWN} of {changes}):" in text
    shown = [k for k in keys if f"    {k}  [" in text or f"    {k} (#" in text]
    assert shown == keys[:SUMMARY_SHOWN]
    assert f"... and {changes - SUMMARY_SHOWN} more: connector plan --json" in text
    assert f"    {keys[3]}  [blocked]" in text
    # The headline, totals and the attention sections stay.
    assert text.startswith(f"Plan for {targets.profile(target).display_name}: {len(keys)} ")
    assert "Total excl. VAT:" in text and "Invoices that need attention (1):" in text
    assert "Entries that need attention (" in text and "Excluded (" in text

    # A view small enough to read is listed in full on a terminal too.
    small = run("plan", "--customer", view.plan.invoices[0].key.customer_number)
    assert heading in small.stdout and "Invoices by action:" not in small.stdout


def test_summary_lists_the_first_entries_needing_attention(target: str, mappings: Mappings) -> None:
    many = tuple((f"E{n:06d}X", "malformed entry: hours: missing") for n in range(45))
    entries = [parse_entry(r) for r in generate(customers=30, specials=False)]
    result = plan(entries, mappings, targets.profile(target), rejected=many)
    view = PlanView(result, False)
    text = plan_text(plan_document(view), terminal=True)
    assert text.startswith("Not checked against")
    assert "Entries that need attention (45):" in text
    assert sum(1 for line in text.splitlines() if line.endswith("hours: missing")) == (
        SUMMARY_SHOWN
    )
    assert f"    ... and {45 - SUMMARY_SHOWN} more: connector plan --json" in text
    assert plan_text(plan_document(view)) == plan_text(plan_json(view))  # not on a terminal
