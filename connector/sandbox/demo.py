"""`connector demo`: the sandbox in-process on a free loopback port, and a full sync against it."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from connector.sandbox import build_app, fortnox_of
from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN
from connector.sandbox.fortnox import API, AUTH, CLIENT_ID, CLIENT_SECRET, TENANT_ID
from connector.sandbox.server import running
from connector.settings import LedgerSettings, Settings
from connector.sync import SyncReport, run_sync
from connector.targets.fortnox import FortnoxSettings

# Fortnox's own window in the fake, and the connector's default limiter: the demo shows the
# real pace (about 20 s for the sample ledger). Tests lower both.
SANDBOX_RATE_LIMIT = "25/5"
CONNECTOR_RATE_LIMIT = "24/5"


def sandbox_settings(base_url: str, state_dir: Path, mappings_dir: Path) -> Settings:
    sections: dict[str, Any] = {
        "fortnox": FortnoxSettings(
            api_url=base_url + API,
            auth_url=base_url + AUTH,
            client_id=CLIENT_ID,
            client_secret=SecretStr(CLIENT_SECRET),
            tenant_id=TENANT_ID,
            rate_limit=CONNECTOR_RATE_LIMIT,
        )
    }
    return Settings(
        ledger=LedgerSettings(url=base_url + LEDGER_PREFIX, token=SecretStr(LEDGER_TOKEN)),
        **sections,
        state_dir=state_dir,
        mappings_dir=mappings_dir,
    )


def run_demo(mappings_dir: Path) -> tuple[SyncReport, list[dict[str, Any]]]:
    """A full sync of the sample ledger into the fake Fortnox, with Fortnox's real rate limit."""
    app = build_app(rate_limit=SANDBOX_RATE_LIMIT)
    with (
        tempfile.TemporaryDirectory(prefix="connector-demo-") as state_dir,
        running(app) as server,
    ):
        settings = sandbox_settings(server.url, Path(state_dir), mappings_dir)
        report = run_sync(settings)
        return report, fortnox_of(app).state()["invoices"]


def fortnox_table(invoices: list[dict[str, Any]], limit: int = 20) -> str:
    lines = [
        f"Invoices now in the sandbox's Fortnox: {len(invoices)}",
        f"  {'#':>4}  {'reference':<22} {'customer':<28} {'total excl. VAT':>16}",
    ]
    for inv in invoices[:limit]:
        total = f"{Decimal(str(inv['Total'])):,.2f}".replace(",", " ")
        lines.append(
            f"  {inv['DocumentNumber']:>4}  {inv['ExternalInvoiceReference1']:<22} "
            f"{inv['CustomerName'][:28]:<28} {total:>12} {inv['Currency']}"
        )
    if len(invoices) > limit:
        lines.append(f"  ... and {len(invoices) - limit} more")
    return "\n".join(lines)
