"""A local stand-in for the ledger and the accounting systems, for demos and tests."""

from __future__ import annotations

from pathlib import Path

from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import Faults, FortnoxFake
from connector.sandbox.sample import SAMPLE_PATH, load


def build_app(
    ledger_file: Path | None = None,
    *,
    rate_limit: str = "25/5",
    faults: Faults | None = None,
) -> SandboxApp:
    """The sandbox app: the ledger (`ledger_file` as JSON lines, or the sample ledger) and a
    fake Fortnox with Fortnox's own 25-requests-per-5-seconds window by default."""
    app = SandboxApp(ledger_entries=load(ledger_file or SAMPLE_PATH))
    FortnoxFake(app, rate_limit=rate_limit, faults=faults)
    return app


def fortnox_of(app: SandboxApp) -> FortnoxFake:
    fake = app.extensions["fortnox"]
    assert isinstance(fake, FortnoxFake)
    return fake


__all__ = ["Faults", "FortnoxFake", "SandboxApp", "build_app", "fortnox_of"]
