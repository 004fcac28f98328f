"""`connector balance`: each customer's prepaid hours (the "timbank"), from the ledger mirror.

The arithmetic is `connector.prepaid`'s, the same the planner uses, so what this shows is what
the invoices are planned from. It asks no accounting system: the balance is the ledger's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connector.errors import ConfigError, ConnectorError, ExitCode
from connector.ledger import Kind, LedgerClient
from connector.prepaid import Account, Movement, OverdrawPolicy, accounts, overdraw_reason
from connector.settings import Settings
from connector.state import DB_NAME, StateStore


@dataclass(frozen=True)
class BalanceReport:
    accounts: dict[str, Account]
    pulled: int | None  # ledger changes pulled first; None with --no-pull
    rejected: int  # ledger entries that break the contract (not counted; `plan` lists them)
    # CONNECTOR_PREPAID__OVERDRAW: an overdraw needs attention, or is invoiced as ordinary hours.
    overdraw: OverdrawPolicy = "attention"

    def to_json(self, customer: str | None = None) -> dict[str, Any]:
        chosen = [a for c, a in sorted(self.accounts.items()) if customer in (None, c)]
        overdraws = [
            {
                "ref": m.entry_id,
                "customer_number": a.customer_number,
                "date": m.performed_on.isoformat(),
                "hours": hours(m.overdraw),
                "reason": overdraw_reason(a.customer_number, m),
            }
            for a in chosen
            for m in a.overdraws
        ]
        return {
            "filter": {"customer": customer},
            "pulled": self.pulled,
            "overdraw_policy": self.overdraw,
            "customers": [_account_json(a) for a in chosen],
            "overdraws": overdraws,
            # What needs a person: overdraws, unless the setting invoices them.
            "attention": overdraws if self.overdraw == "attention" else [],
            "counts": {
                "customers": len(chosen),
                "overdraws": len(overdraws),
                "malformed_entries": self.rejected,
            },
        }

    def exit_code(self, customer: str | None = None) -> ExitCode:
        """1 when what is shown includes an overdraw that nobody pays for yet (with
        CONNECTOR_PREPAID__OVERDRAW=invoice the sync invoices it)."""
        shown = [a for c, a in self.accounts.items() if customer in (None, c)]
        troubled = self.overdraw == "attention" and any(a.overdraws for a in shown)
        return ExitCode.ATTENTION if troubled else ExitCode.OK


def hours(value: Decimal) -> str:
    """Hours as an exact decimal string without trailing zeros: 10.0 -> "10", 0.50 -> "0.5"."""
    return format(value.normalize(), "f")


def _movement_json(movement: Movement) -> dict[str, Any]:
    found: dict[str, Any] = {
        "entry_id": movement.entry_id,
        "date": movement.performed_on.isoformat(),
        "hours": hours(movement.hours),
        "balance_after": hours(movement.balance_after),
    }
    if movement.kind is Kind.DEBIT:
        found["overdrawn"] = hours(movement.overdraw)
    return found


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "customer_number": account.customer_number,
        "bought": hours(account.bought),
        "drawn": hours(account.drawn),
        "overdrawn": hours(account.overdrawn),
        "remaining": hours(account.remaining),
        "topups": [_movement_json(m) for m in account.topups],
        "draws": [_movement_json(m) for m in account.draws],
    }


def run_balance(
    settings: Settings, *, ledger: LedgerClient | None = None, pull_first: bool = True
) -> BalanceReport:
    """Every customer's prepaid account. Pulls new ledger changes first (as `plan` does), so
    the figures are today's; `pull_first=False` reads the mirror as last pulled, without the
    ledger's settings or the run lock."""
    from connector.sync import load_entries, mirror_opened, pull

    if not pull_first:
        if not (settings.state_dir / DB_NAME).is_file():
            raise ConfigError(
                f"no ledger mirror in {settings.state_dir} (CONNECTOR_STATE_DIR): run "
                "connector balance without --no-pull, or connector sync, first"
            )
        store = StateStore(settings.state_dir)
        try:
            entries, rejected = load_entries(store)
        finally:
            store.close()
        return BalanceReport(accounts(entries), None, len(rejected), settings.prepaid.overdraw)
    if ledger is None:
        settings.require_ledger()  # settings first: they name the variable to set
    with mirror_opened(settings, ledger) as (ledger, store):
        run_id = store.start_run("balance", settings.target)
        try:
            pulled = pull(store, ledger)
            entries, rejected = load_entries(store)
            report = BalanceReport(
                accounts(entries), pulled.items, len(rejected), settings.prepaid.overdraw
            )
        except ConnectorError as exc:
            store.finish_run(run_id, exc.exit_code, {"error": str(exc)})
            raise
        store.finish_run(
            run_id, report.exit_code(), {"pulled": pulled.items, **report.to_json()["counts"]}
        )
    return report
