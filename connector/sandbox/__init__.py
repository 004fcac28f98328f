"""A local stand-in for the ledger and the accounting systems, for demos and tests."""

from __future__ import annotations

from pathlib import Path

from connector.sandbox.app import SandboxApp
from connector.sandbox.sample import SAMPLE_PATH, load


def build_app(ledger_file: Path | None = None) -> SandboxApp:
    """The sandbox app serving `ledger_file` (JSON lines), or the sample ledger."""
    return SandboxApp(ledger_entries=load(ledger_file or SAMPLE_PATH))


__all__ = ["SandboxApp", "build_app"]
