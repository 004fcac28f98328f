"""Whole syncs against the fake Visma eAccounting under a reading of the live API that is not
verified (docs/visma.md, "Not verified against the live API"): what the connector does then."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.errors import ExitCode, StateMismatchError
from connector.mappings import Mappings
from connector.sandbox import visma_of
from tests.harness import World, assert_matches_ledger, make_world
from tests.test_target_suite import an_entry, key_of, live


@pytest.fixture
def world(tmp_path: Path, mappings: Mappings, sleeps: list[float]) -> World:
    return make_world(tmp_path, mappings, target="visma")


def test_a_draft_converted_without_created_from_draft_id_stops_the_next_run_safely(
    world: World,
) -> None:
    """A convert that leaves CreatedFromDraftId null, between runs: the next run never saw the
    draft, so it cannot pair the invoice with it; the invoice carries the connector's key under
    an id the state does not know, and a run that would write that month stops (exit 2)
    before sending anything. `connector state rebuild` takes the invoice as billed; the change
    then goes to a supplementary invoice, and nothing is billed twice."""
    world.sync()
    entry = an_entry(world)
    key = key_of(entry)
    (draft,) = live(world, key)
    fake = visma_of(world.app)
    invoice_id = fake.convert(str(draft["remote_id"]), with_draft_id=False)
    world.post_ledger([{**entry, "revision": 2, "hours": "6"}])
    writes = world.writes()
    with pytest.raises(StateMismatchError, match=key) as info:
        world.sync()
    assert info.value.exit_code is ExitCode.CONFIG and world.writes() == writes
    world.rebuild()
    report = world.sync()
    assert report.created == [f"{key}-2"]
    assert fake.invoices[invoice_id]["CreatedFromDraftId"] is None
    assert_matches_ledger(world, report)
