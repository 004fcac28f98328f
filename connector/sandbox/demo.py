"""`connector demo`: the sandbox in-process on a free loopback port, and a full sync against it."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from connector import targets
from connector.auth import TokenFile, import_refresh_token
from connector.sandbox import build_app, fake_module, fake_of
from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN
from connector.sandbox.server import running
from connector.settings import LedgerSettings, Settings
from connector.sync import SyncReport, run_sync

# Fortnox's own window in the fake, and the connector's default limiter: the demo shows the
# real pace (about 20 s for the sample ledger against Fortnox). Tests lower both.
CONNECTOR_RATE_LIMITS = {"fortnox": "25/5"}
SANDBOX_RATE_LIMIT: str | None = None  # None: each fake's own window


def sandbox_settings(
    base_url: str, state_dir: Path, mappings_dir: Path, target: str = "fortnox"
) -> Settings:
    """Settings pointing at the sandbox served at `base_url`, writing to `target`'s fake. A
    fake that authorises by refresh token has its standing seed token stored in `state_dir`."""
    spec = targets.spec(target)
    module = fake_module(target)
    values: dict[str, Any] = dict(module.connector_section(base_url))
    values["client_secret"] = SecretStr(values["client_secret"])
    if target in CONNECTOR_RATE_LIMITS:
        values["rate_limit"] = CONNECTOR_RATE_LIMITS[target]
    sections: dict[str, Any] = {target: spec.settings(**values)}
    seed = getattr(module, "SEED_REFRESH_TOKEN", None)
    store = TokenFile(state_dir / spec.oauth.token_file, spec.oauth.login_hint)
    if seed and store.read() is None:
        import_refresh_token(store, seed)
    return Settings(
        ledger=LedgerSettings(url=base_url + LEDGER_PREFIX, token=SecretStr(LEDGER_TOKEN)),
        **sections,
        target=target,
        state_dir=state_dir,
        mappings_dir=mappings_dir,
    )


def run_demo(
    mappings_dir: Path, target: str = "fortnox"
) -> tuple[SyncReport, list[dict[str, Any]]]:
    """A full sync of the sample ledger into the target's fake, at the system's real pace."""
    app = build_app(rate_limit=SANDBOX_RATE_LIMIT)
    with (
        tempfile.TemporaryDirectory(prefix="connector-demo-") as state_dir,
        running(app) as server,
    ):
        settings = sandbox_settings(server.url, Path(state_dir), mappings_dir, target)
        report = run_sync(settings)
        return report, fake_of(app, target).neutral_invoices()


def invoice_table(system: str, invoices: list[dict[str, Any]], limit: int = 20) -> str:
    """The fake's live invoices (neutral shape), as a short table."""
    live = [i for i in invoices if i["state"] != "gone"]
    lines = [
        f"Invoices now in the sandbox's {system}: {len(live)}",
        f"  {'number':>8}  {'reference':<22} {'customer':<10} {'state':<7} {'total excl. VAT':>16}",
    ]
    for inv in live[:limit]:
        amount = sum(
            (Decimal(r["quantity"]) * Decimal(r["price"]) for r in inv["rows"] if r["article"]),
            Decimal(0),
        )
        total = f"{amount.quantize(Decimal('0.01')):,.2f}".replace(",", " ")
        # A Visma draft has no number of its own (only a GUID) until it is converted.
        number = inv["number"] if inv["number"] and len(inv["number"]) <= 8 else "draft"
        lines.append(
            f"  {number:>8}  {inv['key']:<22} {inv['customer_number']:<10} {inv['state']:<7} "
            f"{total:>12} {inv['currency']}"
        )
    if len(live) > limit:
        lines.append(f"  ... and {len(live) - limit} more")
    return "\n".join(lines)
