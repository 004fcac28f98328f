"""Requests per updated invoice, per target, against the in-process sandbox (no latency, its
rate limit lifted): a first sync of the sample ledger, then one more hour on one billable entry
of every invoice that has one, and a second sync, whose requests are counted by kind from the
sandbox's own request counter. Issue 10's goal is at most 1.1 requests per updated invoice;
docs/sync.md ("The read before an update") says why an update still costs a read and a write.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from connector import logs, targets
from connector.ledger import LedgerClient
from connector.sandbox import build_app, fake_module
from connector.sandbox.app import SandboxApp
from connector.sandbox.demo import sandbox_settings
from connector.sandbox.server import transport
from connector.settings import Settings
from connector.sync import SyncReport, run_sync

BASE = "http://sandbox.test"
MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
BILLABLE = ("business_advisory", "data_maintenance", "project")


def _night() -> datetime:
    return datetime(2026, 10, 10, 2, 0, tzinfo=UTC)


@dataclass(frozen=True)
class UpdateCost:
    target: str
    updated: int
    created: int
    requests: Counter[str]  # kind -> count, in the second sync, to the target's API
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def per_update(self) -> float:
        """Requests per updated invoice: every request of the run but the creates'."""
        return (self.total - self.requests["POST"]) / self.updated if self.updated else 0.0

    def line(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.requests.items()))
        return (
            f"updates {self.target:<8} updated={self.updated:>3} created={self.created}  "
            f"requests={self.total:>4} ({kinds})  {self.per_update():.2f} per updated "
            f"invoice (creates left out)  {self.seconds:.1f} s"
        )


def _sync(app: SandboxApp, settings: Settings) -> SyncReport:
    def client() -> httpx.Client:
        return httpx.Client(transport=transport(app), base_url=BASE)

    token = settings.ledger.token
    assert settings.ledger.url is not None
    assert token is not None
    ledger = LedgerClient(settings.ledger.url, token, client=client())
    target = targets.spec(settings.target).open(settings, http=client())
    return run_sync(settings, ledger=ledger, target=target, clock=_night)


def _changes(app: SandboxApp) -> list[dict[str, Any]]:
    """One more hour on the first billable, priced entry of every (customer, month)."""
    seen: set[tuple[str, str]] = set()
    found = []
    for raw in app.ledger.entries():
        if not isinstance(raw, dict) or raw.get("category") not in BILLABLE:
            continue
        group = (str(raw["customer_number"]), str(raw["performed_on"])[:7])
        if not raw.get("unit_price") or group in seen:
            continue
        seen.add(group)
        hours = Decimal(str(raw["hours"])) + 1
        found.append({**raw, "revision": int(raw["revision"]) + 1, "hours": str(hours)})
    return found


def _kind(name: str, prefix: str, updated_paths: set[str]) -> str | None:
    method, _, path = name.partition(" ")
    if not path.startswith(prefix):
        return None
    if method == "GET" and path in updated_paths:
        return "GET draft"
    if method == "GET":
        return "GET list/register"
    return method


def bench_updates(target: str) -> UpdateCost:
    with tempfile.TemporaryDirectory() as folder:
        app = build_app(rate_limit="100000/1")
        settings = sandbox_settings(BASE, Path(folder) / "state", MAPPINGS, target)
        section = targets.spec(target).section(settings)
        section.rate_limit = "100000/1"
        section.search_settle_seconds = 0
        _sync(app, settings)
        app.ledger.append(_changes(app))
        before = Counter(app.requests)
        started = time.perf_counter()
        report = _sync(app, settings)
        seconds = time.perf_counter() - started
        during = Counter(app.requests)
        during.subtract(before)
        prefix = fake_module(target).Driver(app).api_prefix
        written = {name.partition(" ")[2] for name, n in during.items() if n > 0}
        put_paths = {p for p in written if f"PUT {p}" in during and during[f"PUT {p}"] > 0}
        kinds: Counter[str] = Counter()
        for name, n in during.items():
            kind = _kind(name, prefix, put_paths)
            if kind is not None and n > 0:
                kinds[kind] += n
        return UpdateCost(target, len(report.updated), len(report.created), kinds, seconds)


def main() -> None:
    logs.configure("console", level="error")  # the runs' own logs are not the figures
    for target in targets.names():
        print(bench_updates(target).line(), flush=True)


if __name__ == "__main__":
    main()
