from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings

from connector import http, logs
from connector.mappings import Mappings, load_mappings
from connector.sandbox import build_app
from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import TENANT_ID
from connector.sandbox.server import SandboxServer, running

# HYPOTHESIS_PROFILE=deep for a long hunt; the default keeps `make test` within minutes.
settings.register_profile("default", max_examples=120)
settings.register_profile("deep", max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent
MAPPINGS_DIR = REPO / "mappings"

RawEntry = dict[str, Any]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CONNECTOR_ variable or .env file from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # The default state directory is per user: never the real one from a test.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A command configures logging to the stream it was given; do not leak it to later tests."""
    yield
    logs.active_format = None
    structlog.reset_defaults()
    structlog.configure(logger_factory=logs._StderrLoggerFactory())


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Patch out sleeping between retries; the list records each requested wait."""
    recorded: list[float] = []
    monkeypatch.setattr(http, "pause", recorded.append)
    return recorded


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


@pytest.fixture
def sandbox_app() -> SandboxApp:
    return build_app()


@pytest.fixture
def sandbox_server(sandbox_app: SandboxApp) -> Iterator[SandboxServer]:
    with running(sandbox_app) as server:
        yield server


def _raw(**overrides: Any) -> RawEntry:
    entry: RawEntry = {
        "id": "E1",
        "revision": 1,
        "kind": "debit",
        "status": "active",
        "customer_number": "1001",
        "category": "installation",
        "hours": "2.5",
        "prepaid_hours": "0",
        "unit_price": "1150.00",
        "currency": "SEK",
        "performed_on": "2026-09-14",
        "description": "Installation av integrationen",
        "reference": "ÄR-1234",
        "changed_at": "2026-09-14T16:00:00Z",
    }
    entry.update(overrides)
    return entry


@pytest.fixture
def raw_entry() -> Callable[..., RawEntry]:
    return _raw


def connector_env(server_url: str, state_dir: Path) -> dict[str, str]:
    return {
        "CONNECTOR_LEDGER__URL": server_url + "/ledger/v1",
        "CONNECTOR_LEDGER__TOKEN": "sandbox",
        "CONNECTOR_STATE_DIR": str(state_dir),
        "CONNECTOR_MAPPINGS_DIR": str(MAPPINGS_DIR),
        "CONNECTOR_LOG_FORMAT": "json",
        "CONNECTOR_FORTNOX__API_URL": server_url + "/fortnox/3",
        "CONNECTOR_FORTNOX__AUTH_URL": server_url + "/fortnox/oauth-v1",
        "CONNECTOR_FORTNOX__CLIENT_ID": "sandbox",
        "CONNECTOR_FORTNOX__CLIENT_SECRET": "sandbox",
        "CONNECTOR_FORTNOX__TENANT_ID": TENANT_ID,
        "CONNECTOR_FORTNOX__SEARCH_SETTLE_SECONDS": "0",
    }
