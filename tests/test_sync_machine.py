"""A hypothesis state machine mixing syncs, crashes, faults, bookings and ledger changes.

After every step: at most one live Fortnox invoice per key. At the end: one clean sync leaves
Fortnox billing exactly what the ledger says, and a further sync writes nothing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from connector import http
from connector import sync as sync_module
from connector.errors import RemoteUnavailableError
from connector.mappings import load_mappings
from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import FortnoxFake
from connector.sandbox.sample import generate
from tests.conftest import MAPPINGS_DIR
from tests.harness import World, assert_matches_ledger, assert_no_duplicates

MAPPINGS = load_mappings(MAPPINGS_DIR)
POINTS = ["after_pull", "before_post", "after_post", "after_put"]
CATEGORIES = ["installation", "training", "project", "guidance", "business_advisory"]


class Crash(BaseException):
    pass


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        entries = generate(customers=4, months=("2026-09", "2026-10"), seed=1, specials=False)
        app = SandboxApp(ledger_entries=entries)
        FortnoxFake(app, rate_limit="100000/1")
        from connector.sandbox.demo import sandbox_settings

        settings_ = sandbox_settings("http://sandbox.test", Path(self.tmp.name), MAPPINGS_DIR)
        settings_.fortnox.rate_limit = "100000/1"
        self.world = World(app=app, settings=settings_, mappings=MAPPINGS)
        self.saved: dict[str, Any] = {"pause": http.pause, "failpoint": sync_module.failpoint}
        http.pause = lambda seconds: None
        self.revision = 100

    @property
    def fake(self) -> FortnoxFake:
        return self.world.fake

    def _entries(self) -> list[dict[str, Any]]:
        return [e for e in self.world.app.ledger.entries() if isinstance(e, dict)]

    def _sync(self) -> None:
        with contextlib.suppress(RemoteUnavailableError):  # exit 4: pending work is kept
            self.world.sync()

    @rule(
        picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
        hours=st.sampled_from(["0.5", "1.25", "3", "7.5"]),
        status=st.sampled_from(["active", "active", "void"]),
        category=st.sampled_from(CATEGORIES),
        customer=st.sampled_from(["1003", "1004", "1005"]),
    )
    def revise_entries(
        self, picks: list[int], hours: str, status: str, category: str, customer: str
    ) -> None:
        entries = self._entries()
        changed = []
        for pick in picks:
            self.revision += 1
            entry = dict(entries[pick % len(entries)])
            entry.update(revision=self.revision, hours=hours, status=status, prepaid_hours="0")
            if pick % 3 == 0:
                entry["category"] = category
            if pick % 5 == 0:
                entry["customer_number"] = customer
            if entry["kind"] == "topup":
                entry["category"] = "prepaid_hours"
            changed.append(entry)
        self.world.post_ledger(changed)

    @rule(
        month=st.sampled_from(["2026-09", "2026-10"]),
        customer=st.sampled_from(["1003", "1006"]),
        hours=st.sampled_from(["1", "2.5"]),
    )
    def add_entry(self, month: str, customer: str, hours: str) -> None:
        self.revision += 1
        entry = dict(self._entries()[0])
        entry.update(
            id=f"N{self.revision}", revision=1, kind="debit", status="active",
            customer_number=customer, category="training", hours=hours, prepaid_hours="0",
            performed_on=f"{month}-20", unit_price="1000.00",
        )  # fmt: skip
        self.world.post_ledger([entry])

    @rule(
        lost=st.sampled_from([0.0, 0.3, 1.0]),
        errors=st.sampled_from([0.0, 0.2]),
        forced=st.integers(0, 3),
        seed=st.integers(0, 1000),
    )
    def sync_with_faults(self, lost: float, errors: float, forced: int, seed: int) -> None:
        self.world.faults(lost_create_rate=lost, error_rate=errors, force_429=forced, seed=seed)
        try:
            self._sync()
        finally:
            self.world.faults(lost_create_rate=0, error_rate=0, force_429=0)

    @rule(point=st.sampled_from(POINTS), nth=st.integers(1, 3))
    def crash(self, point: str, nth: int) -> None:
        left = [nth]

        def failpoint(name: str) -> None:
            if name == point:
                left[0] -= 1
                if left[0] == 0:
                    raise Crash(name)

        sync_module.failpoint = failpoint
        try:
            with contextlib.suppress(Crash):
                self._sync()
        finally:
            sync_module.failpoint = self.saved["failpoint"]

    @rule(pick=st.integers(0, 1000))
    def book_an_invoice(self, pick: int) -> None:
        open_ = [n for n, i in self.fake.invoices.items() if not i["Booked"] and not i["Cancelled"]]
        if open_:
            self.fake.bookkeep(sorted(open_)[pick % len(open_)])

    @invariant()
    def one_live_invoice_per_key(self) -> None:
        assert_no_duplicates(self.fake)

    def teardown(self) -> None:
        try:
            report = self.world.sync()
            assert_matches_ledger(self.world, report)
            writes = self.world.writes()
            self.world.sync()
            assert self.world.writes() == writes
        finally:
            http.pause = self.saved["pause"]
            sync_module.failpoint = self.saved["failpoint"]
            self.tmp.cleanup()


SyncMachine.TestCase.settings = settings(
    # MACHINE_EXAMPLES=500 for a long hunt; 30 keeps `make test` within minutes.
    max_examples=int(os.environ.get("MACHINE_EXAMPLES", "30")),
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSyncMachine = SyncMachine.TestCase
