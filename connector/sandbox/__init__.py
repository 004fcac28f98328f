"""A local stand-in for the ledger and the accounting systems, for demos and tests.

Every system in the target registry has a fake here, `connector/sandbox/<name>.py`, which
provides: `FAKE` (its class, built as FAKE(app, rate_limit=..., faults=..., today=...) and
registered in `app.extensions[name]`), `RATE_LIMIT` (the system's own window),
`SEED_REFRESH_TOKEN` (a refresh token the fake always accepts, or None) and
`connector_section(base_url)` (the settings that point the connector at it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

from connector import targets
from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import FakeArticle, FakeCustomer, Faults, FortnoxFake
from connector.sandbox.sample import SAMPLE_PATH, load
from connector.sandbox.visma import VismaFake


def fake_module(name: str) -> ModuleType:
    """The sandbox module of one accounting system of the registry."""
    targets.spec(name)  # an unknown name is a ConfigError naming the choices
    return importlib.import_module(f"connector.sandbox.{name}")


def build_app(
    ledger_file: Path | None = None,
    *,
    rate_limit: str | None = None,
    rate_limits: dict[str, str] | None = None,
    faults: Faults | None = None,
    today: Callable[[], date] = date.today,
) -> SandboxApp:
    """The sandbox app: the ledger (`ledger_file` as JSON lines, or the sample ledger) and a
    fake of every registered accounting system, each with its own rate-limit window (Fortnox
    25 per 5 s, Visma 600 per minute) unless `rate_limit` sets one for all or `rate_limits`
    one per system. `today` is every fake's date. Each fake gets its own copy of `faults`, so
    each draws from its own generator."""
    app = SandboxApp(ledger_entries=load(ledger_file or SAMPLE_PATH))
    for name in targets.names():
        module = fake_module(name)
        window = (rate_limits or {}).get(name) or rate_limit or module.RATE_LIMIT
        module.FAKE(
            app, rate_limit=window, faults=None if faults is None else replace(faults), today=today
        )
    return app


def fake_of(app: SandboxApp, name: str) -> Any:
    return app.extensions[name]


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
    "fake_module",
    "fake_of",
    "fortnox_of",
    "visma_of",
]
