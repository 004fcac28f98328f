"""`connector demo`: the sandbox in-process on a free loopback port, and a run against it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import SecretStr

from connector.planning import Plan
from connector.sandbox import build_app
from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN
from connector.sandbox.server import running
from connector.settings import LedgerSettings, Settings
from connector.sync import run_plan


def run_demo(mappings_dir: Path) -> Plan:
    with (
        tempfile.TemporaryDirectory(prefix="connector-demo-") as state_dir,
        running(build_app()) as server,
    ):
        settings = Settings(
            ledger=LedgerSettings(url=server.url + LEDGER_PREFIX, token=SecretStr(LEDGER_TOKEN)),
            state_dir=Path(state_dir),
            mappings_dir=mappings_dir,
        )
        plan, _ = run_plan(settings)
        return plan
