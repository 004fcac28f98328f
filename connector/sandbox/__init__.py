"""A local stand-in for the ledger and the accounting systems, for demos and tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import FakeArticle, FakeCustomer, Faults, FortnoxFake
from connector.sandbox.sample import SAMPLE_PATH, load


def build_app(
    ledger_file: Path | None = None,
    *,
    rate_limit: str = "25/5",
    faults: Faults | None = None,
    today: Callable[[], date] = date.today,
) -> SandboxApp:
    """The sandbox app: the ledger (`ledger_file` as JSON lines, or the sample ledger) and a
    fake Fortnox with Fortnox's own 25-requests-per-5-seconds window by default. `today` is the
    fake Fortnox's date (default invoice dates, due dates)."""
    app = SandboxApp(ledger_entries=load(ledger_file or SAMPLE_PATH))
    FortnoxFake(app, rate_limit=rate_limit, faults=faults, today=today)
    return app


def fortnox_of(app: SandboxApp) -> FortnoxFake:
    fake = app.extensions["fortnox"]
    assert isinstance(fake, FortnoxFake)
    return fake


__all__ = [
    "FakeArticle",
    "FakeCustomer",
    "Faults",
    "FortnoxFake",
    "SandboxApp",
    "build_app",
    "fortnox_of",
]
