"""Sync orchestration: pull the ledger into the state store, then plan (and, later, send).

Everything here is glue between the layers; the decisions live in `planning` (what to invoice)
and `http` (when to retry).
"""

from __future__ import annotations

from dataclasses import dataclass

from connector import targets
from connector.errors import ConnectorError, ExitCode
from connector.ledger import Entry, InvalidEntry, LedgerClient, parse_entry
from connector.logs import get_logger
from connector.mappings import Mappings, load_mappings
from connector.planning import Outcome, Plan, plan
from connector.settings import Settings
from connector.state import StateStore
from connector.targets.base import TargetProfile

log = get_logger(__name__)


@dataclass(frozen=True)
class PullSummary:
    pages: int
    items: int
    without_id: int


def pull(store: StateStore, ledger: LedgerClient) -> PullSummary:
    """Fetch the change feed from the stored cursor; each page commits with its cursor."""
    pages = items = without_id = 0
    for page in ledger.feed(store.cursor()):
        store.store_page(page.items, page.next_cursor)
        pages += 1
        items += len(page.items)
        without_id += sum(1 for i in page.items if i.entry_id is None)
    log.info("ledger.pulled", pages=pages, entries=items, without_id=without_id)
    return PullSummary(pages=pages, items=items, without_id=without_id)


def load_entries(store: StateStore) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Valid entries of the mirror, and (ref, reason) for each one that breaks the contract."""
    entries: list[Entry] = []
    rejected: list[tuple[str, str]] = []
    for entry_id, raw in store.raw_entries():
        try:
            entries.append(parse_entry(raw))
        except InvalidEntry as exc:
            rejected.append((entry_id, exc.reason))
    for position, raw in store.feed_rejects():
        try:
            parse_entry(raw)
        except InvalidEntry as exc:
            rejected.append((position, exc.reason))
    return entries, rejected


def current_plan(store: StateStore, mappings: Mappings, profile: TargetProfile) -> Plan:
    entries, rejected = load_entries(store)
    result = plan(entries, mappings, profile, store.invoiced(profile.name), rejected)
    store.replace_attention(profile.name, result.by_outcome(Outcome.ATTENTION))
    return result


def open_ledger(settings: Settings) -> LedgerClient:
    url, token = settings.require_ledger()
    return LedgerClient(
        url,
        token,
        page_size=settings.ledger.page_size,
        timeout_seconds=settings.ledger.timeout_seconds,
    )


def run_plan(settings: Settings, ledger: LedgerClient | None = None) -> tuple[Plan, ExitCode]:
    """`connector plan`: pull new ledger changes and plan; sends nothing to a target."""
    ledger = ledger or open_ledger(settings)
    mappings = load_mappings(settings.mappings_dir)
    profile = targets.profile(settings.target)
    store = StateStore(settings.state_dir)
    try:
        with store.lock():
            run_id = store.start_run("plan", profile.name)
            try:
                pulled = pull(store, ledger)
                result = current_plan(store, mappings, profile)
            except ConnectorError as exc:
                store.finish_run(run_id, exc.exit_code, {"error": str(exc)})
                raise
            code = ExitCode.ATTENTION if result.by_outcome(Outcome.ATTENTION) else ExitCode.OK
            store.finish_run(
                run_id,
                code,
                {
                    "pulled": pulled.items,
                    "invoices": len(result.invoices),
                    "changes": len(result.changes),
                    **{o.value: len(result.by_outcome(o)) for o in Outcome},
                },
            )
            return result, code
    finally:
        store.close()
        ledger.close()
