"""Crash tests: the real CLI in a subprocess against a real sandbox server, killed with
SIGKILL at named points and at random moments, and run twice at once, against every target.
After any of it, one clean sync leaves the target exactly as the ledger says: no duplicate,
nothing lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from connector import targets
from connector.errors import ExitCode
from connector.mappings import Mappings
from connector.sandbox import build_app, fake_module
from connector.sandbox.app import SandboxApp
from connector.sandbox.server import SandboxServer
from connector.sync import SyncReport
from tests.conftest import MAPPINGS_DIR, REPO, connector_env
from tests.harness import TARGETS, World, assert_matches_ledger, assert_no_duplicates, driver_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sandbox_app() -> SandboxApp:
    return build_app(rate_limit="100000/1")


@pytest.fixture
def env(
    sandbox_server: SandboxServer, sandbox_app: SandboxApp, tmp_path: Path, target: str
) -> dict[str, str]:
    from connector.sandbox.demo import sandbox_settings

    # Stores the fake's seed refresh token in the state directory where the target needs one.
    sandbox_settings(sandbox_server.url, tmp_path / "state", MAPPINGS_DIR, target)
    spec = targets.spec(target)
    section = fake_module(target).connector_section(sandbox_server.url)
    return {
        **os.environ,
        **connector_env(sandbox_server.url, tmp_path / "state"),
        **{spec.env(name): value for name, value in section.items()},
        spec.env("rate_limit"): "100000/1",
        spec.env("search_settle_seconds"): "0",
        "CONNECTOR_TARGET": target,
    }


def start(env: dict[str, str], **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "sync", "--json"],
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def clean_sync_matches(
    env: dict[str, str], app: SandboxApp, mappings: Mappings, tmp_path: Path
) -> None:
    """One clean sync after whatever happened, then the oracle, through the same state."""
    from connector.sandbox.demo import sandbox_settings

    code, _, err = finish(start(env))
    assert code == 1, err  # 1: customer 1042 and the sample's bad entries need attention
    # Rebuild the final plan in-process from the same state directory for the oracle.
    target = env["CONNECTOR_TARGET"]
    settings = sandbox_settings("http://unused", tmp_path / "state", MAPPINGS_DIR, target)
    world = World(app=app, settings=settings, mappings=mappings)
    report = SyncReport(dry_run=False, plan=world.current_plan())
    assert_matches_ledger(world, report)
    writes_before = world.writes()
    code, _, err = finish(start(env))
    assert code == 1, err
    assert world.writes() == writes_before  # and a sync after that writes nothing


@pytest.mark.parametrize("point", ["after_pull", "before_post", "after_post"])
def test_kill_at_named_points(
    env: dict[str, str], sandbox_app: SandboxApp, mappings: Mappings, tmp_path: Path, point: str
) -> None:
    code, _, _ = finish(start(env, CONNECTOR_FAILPOINT=point))
    assert code == -signal.SIGKILL
    assert_no_duplicates(driver_for(sandbox_app, env["CONNECTOR_TARGET"]))
    clean_sync_matches(env, sandbox_app, mappings, tmp_path)


def test_kill_after_put(
    env: dict[str, str], sandbox_app: SandboxApp, mappings: Mappings, tmp_path: Path
) -> None:
    assert finish(start(env))[0] == 1
    entry: dict[str, Any] = next(
        e
        for e in sandbox_app.ledger.entries()
        if isinstance(e, dict) and e["category"] == "installation" and e["unit_price"]
    )
    sandbox_app.ledger.append([{**entry, "revision": 7, "hours": "9"}])
    code, _, _ = finish(start(env, CONNECTOR_FAILPOINT="after_put"))
    assert code == -signal.SIGKILL
    clean_sync_matches(env, sandbox_app, mappings, tmp_path)


def test_kill_at_random_moments(
    env: dict[str, str], sandbox_app: SandboxApp, mappings: Mappings, tmp_path: Path
) -> None:
    driver = driver_for(sandbox_app, env["CONNECTOR_TARGET"])
    # Slow enough that every run outlasts the kill window below, however fast the machine.
    driver.faults(latency_ms=25, lost_create_rate=0.1, seed=3)
    rng = random.Random(11)
    entries = [
        e
        for e in sandbox_app.ledger.entries()
        if isinstance(e, dict) and e["category"] in ("installation", "training", "project")
    ]
    killed = 0
    for round_ in range(5):
        if round_:  # new work for every run: revisions of a dozen entries
            sandbox_app.ledger.append(
                [{**e, "revision": 10 + round_, "hours": str(round_ + 1)} for e in
                 rng.sample(entries, 12)]
            )  # fmt: skip
        proc = start(env)
        time.sleep(rng.uniform(0.5, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        finish(proc)
        assert_no_duplicates(driver)
    assert killed >= 3
    driver.faults(latency_ms=0, lost_create_rate=0)
    clean_sync_matches(env, sandbox_app, mappings, tmp_path)


def test_two_overlapping_syncs(
    env: dict[str, str], sandbox_app: SandboxApp, mappings: Mappings, tmp_path: Path
) -> None:
    driver = driver_for(sandbox_app, env["CONNECTOR_TARGET"])
    driver.faults(latency_ms=3)
    first, second = start(env), start(env)
    results = [finish(first), finish(second)]
    codes = sorted(code for code, _, _ in results)
    assert ExitCode.BUG not in codes, [err[-3000:] for code, _, err in results if code == 70]
    # Either the second found the lock held (3), or it ran after the first finished (1).
    assert codes in ([1, 1], [1, 3]), [
        err[-2000:] for code, _, err in results if code not in (1, 3)
    ]
    assert_no_duplicates(driver)
    driver.faults(latency_ms=0)
    clean_sync_matches(env, sandbox_app, mappings, tmp_path)


def test_kill_in_the_middle_of_a_pull_batch(
    env: dict[str, str], sandbox_app: SandboxApp, mappings: Mappings, tmp_path: Path
) -> None:
    """Killed with one batch of pages committed and the next half read: the stored cursor is
    exactly the end of the stored entries, and the next run reads on from there."""
    small_pages = {"CONNECTOR_LEDGER__PAGE_SIZE": "10"}
    code, _, _ = finish(start(env, CONNECTOR_FAILPOINT="pull_mid_batch", **small_pages))
    assert code == -signal.SIGKILL
    from connector.state import StateStore

    store = StateStore(tmp_path / "state")
    try:
        cursor = store.cursor()
        assert cursor is not None and cursor.startswith("v1.")
        feed = sandbox_app.ledger.entries()
        stored = {entry_id for entry_id, _ in store.raw_entries()}
    finally:
        store.close()

    # The sandbox's cursor "v1.N" is after feed position N: the stored entries are exactly
    # the feed up to there, and some of the feed (the half-read batch and after) is not.
    def ids(entries: list[object]) -> set[str]:
        return {e["id"] for e in entries if isinstance(e, dict)}

    after, _, _ = sandbox_app.ledger.page(int(cursor.removeprefix("v1.")), 1000)
    assert after and stored == ids(feed) - ids(after)
    clean_sync_matches({**env, **small_pages}, sandbox_app, mappings, tmp_path)
