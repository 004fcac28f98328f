"""A local stand-in for the ledger and the accounting systems, for demos and tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import FakeArticle, FakeCustomer, Faults, FortnoxFake
from connector.sandbox.sample import SAMPLE_PATH, load
from connector.sandbox.visma import VismaFake


def build_app(
    ledger_file: Path | None = None,
    *,
    rate_limit: str = "25/5",
    visma_rate_limit: str = "600/60",
    faults: Faults | None = None,
    today: Callable[[], date] = date.today,
) -> SandboxApp:
    """The sandbox app: the ledger (`ledger_file` as JSON lines, or the sample ledger), a fake
    Fortnox with Fortnox's own 25-requests-per-5-seconds window by default, and a fake Visma
    eAccounting with Visma's 600 requests per minute. `today` is both fakes' date (default
    invoice and due dates, the date a draft converts on). Each fake gets its own copy of
    `faults`, so each draws from its own generator."""
    app = SandboxApp(ledger_entries=load(ledger_file or SAMPLE_PATH))
    FortnoxFake(app, rate_limit=rate_limit, faults=faults, today=today)
    VismaFake(
        app,
        rate_limit=visma_rate_limit,
        faults=None if faults is None else replace(faults),
        today=today,
    )
    return app


def fortnox_of(app: SandboxApp) -> FortnoxFake:
    fake = app.extensions["fortnox"]
    assert isinstance(fake, FortnoxFake)
    return fake


def visma_of(app: SandboxApp) -> VismaFake:
    fake = app.extensions["visma"]
    assert isinstance(fake, VismaFake)
    return fake


__all__ = [
    "FakeArticle",
    "FakeCustomer",
    "Faults",
    "FortnoxFake",
    "SandboxApp",
    "VismaFake",
    "build_app",
    "fortnox_of",
    "visma_of",
]
