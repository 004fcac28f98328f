"""The soak's short variant (bench/soak.py; `make bench` runs 200 rounds per target): a few
rounds of `connector sync` as a real process against a loopback sandbox, killed while writing,
at a failpoint and at a random moment, and once allowed to finish, with faults, ledger changes
and a person's bookings between rounds. No key ever has two live invoices, and after a clean
sync the fake equals the oracle row by row and a further sync writes nothing."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from bench.soak import MODES, run_soak
from connector.mappings import Mappings
from connector.planning import Outcome
from tests.conftest import _raw
from tests.harness import TARGETS, assert_matches_ledger, make_world

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", TARGETS)
def test_short_soak(target: str) -> None:
    # Killed while writing first: the first run creates every invoice, so that kill lands in
    # the middle of the writes.
    modes = ("kill_writing", "failpoint", "kill", "finish")
    assert set(modes) == set(MODES)
    result = run_soak(target, len(modes), seed=7, modes=modes)
    assert result.rounds == len(modes)
    assert result.kills_writing >= 1, result.line()
    assert result.exit_codes[-signal.SIGKILL] >= 1, result.line()
    assert result.duplicates == 0, result.bugs
    assert result.sent_changed == 0, result.line()
    assert (result.rows_lost, result.rows_twice) == (0, 0), result.line()
    assert result.oracle_failure is None, result.oracle_failure
    assert result.final_writes == 0, result.line()
    assert not result.bugs, result.bugs
    assert result.live_invoices > 0


@pytest.mark.parametrize("target", TARGETS)
def test_a_withdrawn_correction_leaves_the_booked_invoice_billed(
    tmp_path: Path, mappings: Mappings, target: str
) -> None:
    """Found by the soak, in the oracle (tests/harness.py), not the connector: an entry whose
    correction invoice a person withdrew is not invoiced again, and what its booked invoice
    bills stays billed. The oracle used to expect nothing billed for such an entry at all."""
    entry = _raw(id="E1", customer_number="1003", hours="2", unit_price="1150.00")
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    world = make_world(tmp_path, mappings, target=target, ledger_file=ledger)
    world.sync()
    (first,) = world.driver.open_ids()
    world.driver.close(first)  # booked with 2 h
    world.post_ledger([{**entry, "revision": 2, "hours": "3"}])
    world.sync()
    (correction,) = world.driver.open_ids()
    world.driver.withdraw(correction)
    report = world.sync()
    assert report.plan is not None
    (result,) = report.plan.results
    assert result.outcome is Outcome.EXCLUDED
    assert "not invoiced again" in result.reason
    assert_matches_ledger(world, report)  # the booked 2 h, nothing more, nothing less


@pytest.mark.parametrize("target", TARGETS)
def test_a_person_withdraws_a_draft_they_edited(
    tmp_path: Path, mappings: Mappings, target: str
) -> None:
    """Found by the soak: a draft a person edited is theirs (locked) and counts as billed, so
    a later revision is corrected on a supplementary invoice (credit 2 h, charge 3 h). When
    the person then withdraws their draft, the connector must learn it: otherwise the credit
    stands against hours nobody billed. Now its entries are excluded like those of any
    withdrawn invoice, and the supplementary invoice is withdrawn with them."""
    entry = _raw(id="E1", customer_number="1003", hours="2", unit_price="1150.00")
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    world = make_world(tmp_path, mappings, target=target, ledger_file=ledger)
    world.sync()
    (first,) = world.driver.open_ids()
    world.driver.edit_text(first, 0, "Ändrad av ekonomi")
    world.edited.add(first)
    world.post_ledger([{**entry, "revision": 2, "hours": "3"}])
    world.sync()
    assert len(world.driver.open_ids()) == 2  # the person's draft and the correction
    world.driver.withdraw(first)
    report = world.sync()  # nothing new in the ledger
    assert report.plan is not None
    (result,) = report.plan.results
    assert result.outcome is Outcome.EXCLUDED, result.reason
    assert world.driver.open_ids() == []
    assert_matches_ledger(world, report)


@pytest.mark.parametrize("target", TARGETS)
def test_a_moved_entry_whose_new_invoice_is_withdrawn_is_not_invoiced_again(
    tmp_path: Path, mappings: Mappings, target: str
) -> None:
    """An entry on a booked invoice moves to another customer: charged on the new customer's
    draft, credited on the old one's supplementary draft. A person withdraws the charge and
    sends the credit. docs/planning.md: "The invoice was cancelled by a person. Its entries
    are not invoiced again." Found by the soak: the next sync charged it again on a new
    supplementary invoice, because the planner decided by the last closed invoice of the
    entry (the credit, written after the charge) rather than by where it was last charged."""
    entry = _raw(id="E1", customer_number="1006", hours="2", unit_price="1150.00")
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    world = make_world(tmp_path, mappings, target=target, ledger_file=ledger)
    world.sync()
    (first,) = world.driver.open_ids()
    world.driver.close(first)
    world.post_ledger([{**entry, "revision": 2, "customer_number": "1003"}])
    world.sync()
    drafts = {i["key"]: i["remote_id"] for i in world.driver.invoices() if i["state"] == "open"}
    world.driver.withdraw(drafts["SK-1003-2026-09"])
    world.driver.send(drafts["SK-1006-2026-09-2"])
    report = world.sync()
    assert report.plan is not None
    (result,) = report.plan.results
    assert result.outcome is Outcome.EXCLUDED, result.reason
    assert world.driver.open_ids() == []
