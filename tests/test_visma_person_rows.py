"""A person's project or cost centre on a row of one of the connector's Visma eAccounting drafts,
through whole syncs against the fake: Visma's PUT replaces every row, so the connector carries
them onto the same row, or, when it cannot tell which row that is, leaves the draft alone until
a person removes them (docs/visma.md, "What a draft carries")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.errors import ExitCode
from connector.mappings import Mappings
from connector.sandbox import visma_of
from connector.sandbox.visma import VismaFake, cost_center_item_id, project_id
from tests.harness import World, assert_matches_ledger, make_world
from tests.test_target_suite import an_entry, key_of, live

PROJECT = project_id("P100")
PLACE = cost_center_item_id("STH")


@pytest.fixture
def world(tmp_path: Path, mappings: Mappings, sleeps: list[float]) -> World:
    return make_world(tmp_path, mappings, target="visma")


def row_of(fake: VismaFake, draft_id: str, entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The index and stored row of the draft that bills `entry`."""
    text = f"{entry['performed_on']}: {entry['description']}"
    rows = fake.drafts[draft_id]["Rows"]
    (index,) = [i for i, r in enumerate(rows) if str(r["Text"]).startswith(text)]
    return index, rows[index]


def tag(world: World, entry: dict[str, Any]) -> tuple[VismaFake, str]:
    """Sync, then a person puts the row of `entry` on a project and a cost centre."""
    world.sync()
    (draft,) = live(world, key_of(entry))
    fake = visma_of(world.app)
    draft_id = str(draft["remote_id"])
    index, _ = row_of(fake, draft_id, entry)
    fake.edit_row(draft_id, index, ProjectId=PROJECT, CostCenterItemId1=PLACE)
    return fake, draft_id


def test_a_project_on_a_row_stays_when_the_connector_changes_the_row(world: World) -> None:
    entry = an_entry(world)
    fake, draft_id = tag(world, entry)
    changed = {**entry, "revision": 2, "hours": "6"}
    world.post_ledger([changed])
    report = world.sync()
    key = key_of(entry)
    assert report.updated == [key] and key not in report.invoice_attention
    _, stored = row_of(fake, draft_id, changed)
    assert (stored["Quantity"], stored["ProjectId"], stored["CostCenterItemId1"]) == (
        6, PROJECT, PLACE,
    )  # fmt: skip
    assert_matches_ledger(world, world.sync())


def test_a_draft_whose_project_row_cannot_be_told_is_left_alone_until_cleared(
    world: World,
) -> None:
    """The entry's text changes in the ledger, so no new row has the tagged row's article and
    text: which row the project belongs to is unknown. Nothing is sent, the invoice needs
    attention on every run (without a write), and once the person removes the project the
    next run writes the draft."""
    entry = an_entry(world)
    fake, draft_id = tag(world, entry)
    before = [dict(r) for r in fake.drafts[draft_id]["Rows"]]
    world.post_ledger([{**entry, "revision": 2, "description": "Bokslutsgenomgång"}])
    key = key_of(entry)
    for _ in range(2):
        writes = world.writes()
        report = world.sync()
        assert world.writes() == writes
        why = report.invoice_attention[key]
        assert "row settings a person made" in why
        assert "a cost centre and a project (ProjectId, CostCenterItemId1)" in why
        assert report.exit_code is ExitCode.ATTENTION
        assert fake.drafts[draft_id]["Rows"] == before
    index, _ = row_of(fake, draft_id, entry)
    fake.edit_row(draft_id, index, ProjectId=None, CostCenterItemId1=None)
    report = world.sync()
    assert report.updated == [key] and key not in report.invoice_attention
    assert [r["Text"] for r in fake.drafts[draft_id]["Rows"] if "Bokslutsgenomgång" in r["Text"]]
    assert_matches_ledger(world, world.sync())
