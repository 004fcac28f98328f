"""The read before an update, for every target (docs/sync.md, "The read before an update").

Neither accounting system shows that a draft is unchanged since the connector wrote it: Fortnox's
`lastmodified` filter cannot tell a person's save in the second (or minute) of the connector's
write from that write alone (tests/test_fortnox_fake.py), and a Visma draft carries no
modification stamp at all (tests/test_visma_fake.py). So every update reads its draft right
before its PUT, once, and a person's edit made just after the connector's write, in the same
second, is caught there and never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector import sync as sync_module
from connector.mappings import Mappings
from connector.sandbox.app import Request, Response
from tests.harness import (
    TARGETS,
    World,
    assert_matches_ledger,
    assert_no_duplicates,
    entries_of,
    make_world,
)

# The listing requests of each target: Fortnox lists invoices per month (one request per
# month of 500 or fewer), Visma lists every draft and every invoice (one request each here).
LISTINGS = {
    "fortnox": ("/fortnox/3/invoices",),
    "visma": ("/visma/v2/customerinvoicedrafts", "/visma/v2/customerinvoices"),
}


@pytest.fixture(params=TARGETS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> World:
    return make_world(tmp_path, mappings, target=request.param)


def changed_entries(world: World, customers: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Invoice key -> one billable entry of that key with one more hour (a new revision)."""
    found: dict[str, dict[str, Any]] = {}
    for raw in entries_of(world.app):
        billable = raw["category"] in ("business_advisory", "data_maintenance", "project")
        if raw["customer_number"] not in customers or not raw["unit_price"] or not billable:
            continue
        key = f"SK-{raw['customer_number']}-{raw['performed_on'][:7]}"
        found.setdefault(
            key,
            {
                **raw,
                "revision": int(raw["revision"]) + 1,
                "hours": str(Decimal(str(raw["hours"])) + 1),
            },
        )
    return found


def record_requests(world: World, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every request the sandbox answers from now on, in order: (method, path)."""
    log: list[tuple[str, str]] = []
    handle: Callable[[Request], Response] = world.app.handle

    def recording(request: Request) -> Response:
        log.append((request.method, request.path))
        return handle(request)

    monkeypatch.setattr(world.app, "handle", recording)
    return log


def test_each_update_reads_its_draft_once_and_each_month_is_listed_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sync()
    changes = changed_entries(world, ("1003", "1004"))
    assert len(changes) >= 2
    world.post_ledger(list(changes.values()))
    log = record_requests(world, monkeypatch)
    report = world.sync()
    assert sorted(report.updated) == sorted(changes)
    prefix = world.driver.api_prefix
    api = [(method, path) for method, path in log if path.startswith(prefix)]
    puts = [i for i, (method, _) in enumerate(api) if method == "PUT"]
    assert len(puts) == len(changes)
    for index in puts:
        # That very draft was read after the previous write (nothing written in between: a
        # register may be read there once per run).
        since = max((i for i in range(index) if api[i][0] != "GET"), default=-1)
        assert ("GET", api[index][1]) in api[since + 1 : index]
    reads = [(m, p) for m, p in api if m == "GET" and p in {api[i][1] for i in puts}]
    assert len(reads) == len(puts)  # once each: no other read of an updated draft
    # The watch of open drafts and the look before writing need the same months moments
    # apart, before anything is written: one listing serves both.
    listed = [i for i, (m, p) in enumerate(api) if m == "GET" and p in LISTINGS[world.target]]
    if world.target == "fortnox":
        assert len(listed) == 3  # the sample's three months, once each
    else:
        assert sorted(api[i][1] for i in listed) == sorted(LISTINGS["visma"])
    assert max(listed) < min(puts)
    assert_matches_ledger(world, report)


def edit_once_after(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str, key: str
) -> dict[str, Any]:
    """At the failpoint `point` right after the connector's write of `key`, a person edits
    that draft's first row text, in the same second (nothing else happens in between). Returns
    what the person left there, once done."""
    done: dict[str, Any] = {}

    def failpoint(name: str) -> None:
        if name != point or done:
            return
        drafts = [i for i in world.driver.invoices() if i["key"] == key and i["state"] == "open"]
        if not drafts:
            return  # another invoice's write
        (draft,) = drafts
        world.driver.edit_text(draft["remote_id"], 0, "Ändrad av ekonomiavdelningen")
        world.edited.add(str(draft["remote_id"]))
        (done["draft"],) = [
            i for i in world.driver.invoices() if i["remote_id"] == draft["remote_id"]
        ]

    monkeypatch.setattr(sync_module, "failpoint", failpoint)
    return done


@pytest.mark.parametrize("point", ["after_post", "after_put"])
def test_a_persons_edit_in_the_second_of_our_write_is_never_overwritten(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """A person saves the draft in the very second the connector wrote it (right after its
    create, or right after an update): the next update finds it by reading, locks the draft and
    sends the change to a supplementary invoice."""
    if world.target == "fortnox":
        # One frozen wall second for the fake's modification times: the write and the edit
        # cannot be told apart by any lastmodified query.
        second = datetime(2026, 10, 10, 2, 0, 1, tzinfo=UTC)
        world.fake.wall = lambda: second
    changes = changed_entries(world, ("1004",))
    key = min(changes)
    if point == "after_put":
        world.sync()
        world.post_ledger([changes[key]])
        changes = {
            key: {
                **changes[key],
                "revision": changes[key]["revision"] + 1,
                "hours": str(Decimal(changes[key]["hours"]) + 1),
            }
        }
    done = edit_once_after(world, monkeypatch, point, key)
    first = world.sync()
    assert done, "the person's edit did not happen"
    assert key in (first.updated if point == "after_put" else first.created)
    monkeypatch.setattr(sync_module, "failpoint", lambda name: None)
    world.post_ledger([changes[key]])
    report = world.sync()
    live = [i for i in world.driver.invoices() if i["key"] == key and i["state"] != "gone"]
    assert [i["rows"] for i in live] == [done["draft"]["rows"]]  # not overwritten
    assert "by a person" in report.invoice_attention[key]
    assert report.created == [f"{key}-2"]
    assert_no_duplicates(world.driver)
    assert_matches_ledger(world, world.sync())


def test_a_month_is_listed_again_once_the_run_has_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One draft a person edited is locked and another updated in the first round; the locked
    one's change goes to a supplementary invoice in a second round, whose look before writing
    lists the month again after the first round's write rather than trust the listing from
    before it."""
    world.sync()
    changes = changed_entries(world, ("1004",))
    key, other = sorted(changes)[:2]
    (draft,) = [i for i in world.driver.invoices() if i["key"] == key and i["state"] == "open"]
    world.driver.edit_text(draft["remote_id"], 0, "Ändrad av ekonomiavdelningen")
    world.edited.add(str(draft["remote_id"]))
    world.post_ledger([changes[key], changes[other]])
    log = record_requests(world, monkeypatch)
    report = world.sync()
    assert report.updated == [other]
    assert report.created == [f"{key}-2"]
    paths = LISTINGS[world.target]
    put = min(i for i, (m, _) in enumerate(log) if m == "PUT")
    create = max(i for i, (m, _) in enumerate(log) if m == "POST")
    assert put < create
    assert any(m == "GET" and p in paths for m, p in log[put:create]), (
        "the second round wrote on a listing from before the run's writes"
    )
    assert_no_duplicates(world.driver)
