"""Sync orchestration: pull the ledger into the state store, then plan (and, later, send).

Everything here is glue between the layers; the decisions live in `planning` (what to invoice)
and `http` (when to retry).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from connector import targets
from connector.errors import (
    ConfigError,
    ConnectorError,
    ExitCode,
    OutcomeUnknownError,
    ReauthRequiredError,
    RemoteUnavailableError,
    StateMismatchError,
    TargetRefusal,
)
from connector.ledger import Entry, FeedItem, InvalidEntry, LedgerClient, parse_entry
from connector.logs import get_logger
from connector.mappings import Mappings, load_mappings
from connector.planning import (
    Action,
    EntryResult,
    Invoiced,
    InvoiceKey,
    InvoiceStatus,
    KnownInvoice,
    Limits,
    Outcome,
    Plan,
    PlannedInvoice,
    PlanView,
    Row,
    RowRole,
    clean,
    invoice_date,
    plan,
)
from connector.prepaid import Prepaid
from connector.progress import pull_progress
from connector.settings import InvoiceSettings, Settings
from connector.state import (
    BOUND_LEDGER,
    BOUND_SYSTEM,
    BOUND_TARGET,
    DB_NAME,
    FEED_READ_AT,
    PLAN_CONTEXT,
    AttentionItem,
    InvoiceRecord,
    StateStore,
    stable_reason,
)
from connector.targets.base import (
    RemoteInvoice,
    RemoteRow,
    RemoteState,
    Target,
    TargetProfile,
    row_differences,
    rows_match,
)

if TYPE_CHECKING:  # `mappings validate` imports this module: no HTTP client at import
    from connector.http import Stats

log = get_logger(__name__)


@dataclass(frozen=True)
class PullSummary:
    pages: int
    items: int
    without_id: int


# A pull commits fetched pages in batches: one disk sync per batch instead of one per page.
# A kill loses at most the batch not yet committed (about a second of reading), which the
# next run reads again from the stored cursor.
PULL_BATCH_PAGES = 20
PULL_BATCH_SECONDS = 1.0


def pull(
    store: StateStore,
    ledger: LedgerClient,
    *,
    batch_pages: int = PULL_BATCH_PAGES,
    batch_seconds: float = PULL_BATCH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> PullSummary:
    """Fetch the change feed from the stored cursor. Fetched pages are stored together, each
    with its cursor, in one transaction per `batch_pages` pages or `batch_seconds` seconds
    (whichever comes first), so the stored cursor never runs ahead of the stored entries. A
    page fetched whole is stored even when a later fetch fails."""
    pages = items = without_id = 0
    progress = pull_progress.get()
    batch: list[tuple[Sequence[FeedItem], str | None]] = []
    batch_started = clock()

    def commit() -> None:
        nonlocal batch
        # Emptied first: a batch whose storing failed is not tried again on the way out.
        pending, batch = batch, []
        if pending:
            store.store_pages(pending)

    try:
        for page in ledger.feed(store.cursor()):
            if not batch:
                batch_started = clock()
            batch.append((page.items, page.next_cursor))
            pages += 1
            items += len(page.items)
            without_id += sum(1 for i in page.items if i.entry_id is None)
            if len(batch) > 1 and pages > len(batch):
                failpoint("pull_mid_batch")  # a batch committed, the next one half fetched
            if len(batch) >= batch_pages or clock() - batch_started >= batch_seconds:
                commit()
            if progress is not None:
                progress(items, False)
    finally:
        try:
            commit()
        finally:
            if progress is not None:
                progress(items, True)
    # Read to its end: what `connector status` shows as the last time the mirror caught up.
    store.set_meta(FEED_READ_AT, datetime.now(UTC).isoformat(timespec="seconds"))
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


def current_plan(
    store: StateStore,
    mappings: Mappings,
    profile: TargetProfile,
    limits: Limits | None = None,
    prepaid: Prepaid | None = None,
    *,
    everything: bool = True,
) -> Plan:
    """The plan from the state alone, with the article register as last read. With
    `everything` False, only the customers changed since the last complete sync are planned
    (when the mappings, prices and policy are still those it planned with), and the entries
    needing attention of the others are carried from the state."""
    return scoped_plan(store, mappings, profile, limits, prepaid, everything=everything)[0]


def scoped_plan(
    store: StateStore,
    mappings: Mappings,
    profile: TargetProfile,
    limits: Limits | None = None,
    prepaid: Prepaid | None = None,
    *,
    everything: bool = True,
) -> tuple[Plan, set[str] | None]:
    """`current_plan`, and the customers it planned (None: every one)."""
    register = store.register(profile.name)
    context = plan_context(mappings, profile, register, limits, prepaid)
    scope = None if everything else settled_scope(store, profile.name, context)

    def part(
        entries: list[Entry], rejected: list[tuple[str, str]], invoiced: Invoiced, _: set[str]
    ) -> Plan:
        return plan(entries, mappings, profile, invoiced, rejected, register, limits, prepaid)

    result = plan_in_parts(store, profile.name, scope, part)
    if scope is None:
        return result, None
    return with_carried(result, store, profile.name, scope), scope


def scope_note(store: StateStore, target: str, planned: int) -> str:
    """What a plan of some customers says of the others."""
    others = len(store.customers(target)) - planned
    return (
        f"planned the {planned} customer(s) changed since the last complete sync; the other "
        f"{others} are as it left them (connector plan --all plans every one)"
    )


def settled_scope(store: StateStore, target: str, context: str) -> set[str] | None:
    """The customers to plan when the last complete sync planned with `context`: those
    changed since, with every customer tied to them. None (plan everyone) otherwise."""
    if store.meta(PLAN_CONTEXT) != context:
        return None
    return store.closure(target, store.dirty_customers())


def planning_inputs(
    store: StateStore, target: str, scope: set[str]
) -> tuple[list[Entry], list[tuple[str, str]], Invoiced]:
    """Entries, rejected entries and what was invoiced, of the customers in `scope` (closed
    under `StateStore.closure`)."""
    return store.scope_entries(scope), store.rejected(), store.invoiced(target, scope)


# Customers planned together when every customer is planned: memory follows a part, not the
# whole history (the plan itself is still whole).
PLAN_PART_CUSTOMERS = 500

PlanPart = Callable[[list[Entry], list[tuple[str, str]], Invoiced, set[str]], Plan]


def plan_in_parts(store: StateStore, target: str, scope: set[str] | None, part: PlanPart) -> Plan:
    """`part` over the customers in `scope`, or over every customer a few hundred at a time
    (each part closed under `StateStore.closure`, so customers tied by an entry are planned
    together), merged in the planner's own order. The same plan as one call over everything:
    the planner is local to tied customers (tests/test_incremental.py proves it)."""
    if scope is not None:
        entries, rejected, invoiced = planning_inputs(store, target, scope)
        return part(entries, rejected, invoiced, scope)
    customers = sorted(store.customers(target))
    rejected = store.rejected()
    if not customers:
        return part([], rejected, store.invoiced(target, ()), set())
    done: set[str] = set()
    invoices: list[PlannedInvoice] = []
    results: list[EntryResult] = []
    found: Plan | None = None
    for start in range(0, len(customers), PLAN_PART_CUSTOMERS):
        chunk = set(customers[start : start + PLAN_PART_CUSTOMERS]) - done
        if not chunk:
            continue
        tied = store.closure(target, chunk)
        done |= tied
        entries, _, invoiced = planning_inputs(store, target, tied)
        found = part(entries, rejected, invoiced, tied)
        rejected = []  # planned once, with the first part
        invoices.extend(found.invoices)
        results.extend(found.results)
    assert found is not None
    return replace(
        found,
        invoices=tuple(sorted(invoices, key=lambda i: i.key)),
        results=tuple(sorted(results, key=lambda r: r.ref)),
    )


def with_carried(result: Plan, store: StateStore, target: str, scope: set[str]) -> Plan:
    """A plan of some customers, with the entries of the others that needed attention when
    they were last planned (nothing of theirs changed since, so neither did that)."""
    planned = {r.ref for r in result.results}
    carried = [
        EntryResult(
            s.item.ref, Outcome.ATTENTION, s.item.reason, (), s.item.customer_number,
            s.item.period,
        )
        for s in store.attention_items(target)
        if s.item.scope == "entry"
        and s.item.customer_number is not None
        and s.item.customer_number not in scope
        and s.item.ref not in planned
    ]  # fmt: skip
    if not carried:
        return result
    results = sorted((*result.results, *carried), key=lambda r: r.ref)
    return replace(result, results=tuple(results))


# Raised whenever the planner's rules change, so that a new version plans every customer
# again rather than trusting what an older one left settled.
PLANNER_VERSION = "2026-11-27.2"


def _canonical(value: Any) -> Any:
    """A JSON-able form with one spelling per value (sets sorted, decimals as written)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda i: str(i[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, re.Pattern):
        return value.pattern
    return str(value)  # Decimal, date, enum members, paths


def plan_context(
    mappings: Mappings,
    profile: TargetProfile,
    register: dict[str, Decimal | None] | None,
    limits: Limits | None,
    prepaid: Prepaid | None,
) -> str:
    """The digest of everything besides the ledger and the state that a plan depends on. A
    customer left settled by a sync stays so only while this is unchanged: any other mapping,
    price, limit or policy plans every customer again."""
    document = [PLANNER_VERSION, mappings, profile, register, limits, prepaid]
    text = json.dumps(_canonical(document), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def require_known_customer(store: StateStore, target: str, customer: str | None) -> None:
    """A `--customer` that neither the ledger mirror nor the state has ever seen is most likely
    a typo: refused (exit 2) rather than answered with an empty "all well"."""
    if customer is None:
        return
    if any(r.key.customer_number == customer for r in store.invoice_records(target)):
        return
    for _ref, raw in store.raw_entries():
        if isinstance(raw, dict) and str(raw.get("customer_number", "")).strip() == customer:
            return
    raise ConfigError(
        f"customer {customer} has no entry in the ledger and no invoice of the connector: "
        "check the number given to --customer"
    )


def open_ledger(settings: Settings) -> LedgerClient:
    url, token = settings.require_ledger()
    return LedgerClient(
        url,
        token,
        page_size=settings.ledger.page_size,
        timeout_seconds=settings.ledger.timeout_seconds,
    )


def ledger_identity(settings: Settings) -> str:
    """The ledger a state mirrors: its address, without case or trailing slash differences."""
    url, _ = settings.require_ledger()
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def bind_ledger(store: StateStore, settings: Settings, *, record: bool = True) -> None:
    store.bind(BOUND_LEDGER, ledger_identity(settings), "the ledger", record=record)


def bind_target(store: StateStore, target: Target, *, record: bool = True) -> None:
    """Check (and on first use record) which accounting company the state writes to."""
    identity = target.identity()
    if identity is None:
        log.warning("state.company_unverified", target=target.profile.name)
        return
    where = f"the {target.profile.display_name} company"
    store.bind(BOUND_TARGET + target.profile.name, identity, where, record=record)


def bound_system(store: StateStore) -> str | None:
    """The accounting system the state writes to: as recorded, or (a state from before that
    was recorded) the one system it has invoices for."""
    bound = store.meta(BOUND_SYSTEM)
    if bound is not None:
        return bound
    used = sorted(store.systems_invoiced())
    return used[0] if len(used) == 1 else None


def bind_system(store: StateStore, name: str, *, record: bool = True) -> None:
    """A state directory writes to one accounting system. Pointed at another, it would plan
    every month the ledger holds afresh there, and invoice in the second system the hours the
    first already holds: refused before anything is read or sent."""
    bound = bound_system(store)
    if bound is None or bound == name:
        if record and store.meta(BOUND_SYSTEM) is None:
            store.set_meta(BOUND_SYSTEM, name)
        return
    first, other = targets.profile(bound).display_name, targets.profile(name).display_name
    raise StateMismatchError(
        f"the state directory {store.dir} invoices to {first} (CONNECTOR_TARGET={bound}), but "
        f"this run is set to write to {other} (CONNECTOR_TARGET={name}): the hours already "
        f"invoiced in {first} would be invoiced again in {other}, so nothing was read or sent. "
        f"If you meant {first}, set CONNECTOR_TARGET={bound}. Moving invoicing to another "
        "system needs its own state directory and a decision on the months already invoiced "
        "(docs/operations.md, Moving to another accounting system)"
    )


def require_target(settings: Settings) -> None:
    """The chosen system's credentials, or a ConfigError naming them, with a hint when another
    system's credentials are the ones set (CONNECTOR_TARGET forgotten)."""
    spec = targets.spec(settings.target)
    if spec.configured(settings):
        return
    others = [s.name for s in targets.specs() if s.name != spec.name and s.configured(settings)]
    try:
        spec.require(settings)
    except ConfigError as exc:
        if not others:
            raise
        raise ConfigError(
            f"{exc.message}; the {others[0].upper()} credentials are set: did you mean "
            f"CONNECTOR_TARGET={others[0]}? (CONNECTOR_TARGET is {settings.target})"
        ) from None


def target_configured(settings: Settings) -> bool:
    return targets.spec(settings.target).configured(settings)


def run_plan(
    settings: Settings,
    ledger: LedgerClient | None = None,
    target: Target | None = None,
    *,
    everything: bool = False,
) -> PlanView:
    """`connector plan`: what `sync` would do now, without sending anything. With the
    accounting system's credentials set, it is a dry-run sync (reads only: remote statuses,
    prices from the article register, refusals a create would meet); without them, the plan
    from the ledger and the state alone."""
    if target is not None or target_configured(settings):
        report = run_sync(
            settings, ledger=ledger, target=target, dry_run=True, everything=everything
        )
        assert report.plan is not None
        notes = list(report.notes)
        store = StateStore(settings.state_dir)
        try:  # a plan is a run worth recording, though it changes nothing else
            run_id = store.start_run("plan", settings.target)
            store.finish_run(run_id, report.exit_code, report.to_json())
            if not report.planned_all:
                notes.append(scope_note(store, report.target or "", report.planned_customers))
        finally:
            store.close()
        return PlanView(report.plan, True, dict(report.invoice_attention), tuple(notes))
    plan_only, _, notes = run_offline_plan(settings, ledger, everything=everything)
    return PlanView(plan_only, False, notes=tuple(notes))


@contextlib.contextmanager
def mirror_opened(
    settings: Settings, ledger: LedgerClient | None = None
) -> Iterator[tuple[LedgerClient, StateStore]]:
    """The ledger and the locked state bound to it, for the commands that pull and ask no
    accounting system (offline `plan`, `balance`); both closed whatever happens."""
    with contextlib.ExitStack() as resources:
        ledger = ledger or open_ledger(settings)
        resources.callback(ledger.close)
        store = StateStore(settings.state_dir)
        resources.callback(store.close)
        resources.enter_context(store.lock())
        bind_ledger(store, settings)
        yield ledger, store


def run_offline_plan(
    settings: Settings, ledger: LedgerClient | None = None, *, everything: bool = False
) -> tuple[Plan, ExitCode, list[str]]:
    """Pull new ledger changes and plan from the state alone; asks no accounting system."""
    if ledger is None:
        settings.require_ledger()  # settings first: they name the variable to set
    mappings = load_mappings(settings.mappings_dir)
    profile = targets.profile(settings.target)
    with mirror_opened(settings, ledger) as (ledger, store):
        bind_system(store, profile.name, record=False)
        run_id = store.start_run("plan", profile.name)
        try:
            pulled = pull(store, ledger)
            result, scope = scoped_plan(
                store,
                mappings,
                profile,
                settings.limits.limits(),
                settings.prepaid.policy(),
                everything=everything,
            )
            notes = [] if scope is None else [scope_note(store, profile.name, len(scope))]
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
    return result, code, notes


def mapping_warnings(settings: Settings, mappings: Mappings, limit: int = 10) -> list[str]:
    """What these mappings would do with the ledger as last pulled into the state directory
    (if there is one): categories in use that no file maps, entries that would need
    attention, and the invoices the next sync would create or change. Reads only."""
    if not (settings.state_dir / DB_NAME).is_file():
        return []
    store = StateStore(settings.state_dir)
    try:
        profile = targets.profile(settings.target)
        bound = bound_system(store)
        if bound is not None and bound != profile.name:
            return [
                f"the state directory {settings.state_dir} invoices to "
                f"{targets.profile(bound).display_name}, not {profile.display_name} "
                f"(CONNECTOR_TARGET={settings.target}): set CONNECTOR_TARGET={bound} to see "
                "what the files would do there"
            ]
        entries, rejected = load_entries(store)
        register = store.register(profile.name)
        result = plan(
            entries,
            mappings,
            profile,
            store.invoiced(profile.name),
            rejected,
            register,
            settings.limits.limits(),
            settings.prepaid.policy(),
        )
    finally:
        store.close()
    warnings: list[str] = []
    used = Counter(e.category for e in entries if e.category not in mappings.categories)
    for category, count in sorted(used.items()):
        warnings.append(
            f"category '{clean(category)}' is used by {count} ledger entr"
            f"{'y' if count == 1 else 'ies'} but no mapping file maps it"
        )
    trouble = Counter(
        r.reason.split(":")[0] for r in result.by_outcome(Outcome.ATTENTION)
        if not r.reason.startswith("malformed entry")
    )  # fmt: skip
    for reason, count in trouble.most_common(limit):
        warnings.append(
            f"{count} entr{'y' if count == 1 else 'ies'} would need attention: {reason}"
        )
    changes = result.changes
    if changes:
        shown = ", ".join(
            f"{i.key} ({'cancel' if not i.rows else i.action.value})" for i in changes[:limit]
        )
        more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
        warnings.append(
            f"the next sync would create or change {len(changes)} invoice(s): {shown}{more}"
            + ("" if register is not None else " (prices from the article register not known)")
        )
    return warnings


def failpoint(name: str) -> None:
    """Named crash points for the crash tests: CONNECTOR_FAILPOINT=name kills the process
    there with SIGKILL, exactly as a power cut or an OOM kill would."""
    if os.environ.get("CONNECTOR_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class SyncReport:
    dry_run: bool
    # The accounting system written to (its registry name).
    target: str | None = None
    pulled: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    would: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    invoice_attention: dict[str, str] = field(default_factory=dict)
    # Things done differently from the usual course, worth a look but needing nothing.
    notes: list[str] = field(default_factory=list)
    plan: Plan | None = None
    requests: int = 0
    rate_limited: int = 0
    # Invoices needing attention found by earlier runs and still so (a draft a person edited,
    # an invoice the state does not know): listed on every run until a person acts.
    standing: dict[str, str] = field(default_factory=dict)
    # Those of them that stay listed by their own record (not by an invoice status).
    standing_kept: set[str] = field(default_factory=set)
    # ref -> reason of items a person has acknowledged (connector attention ack): listed
    # apart, and not counted in the exit code while their reason stays the same.
    acknowledged: dict[str, str] = field(default_factory=dict)
    # Customers planned (incremental planning): those changed since the last complete sync,
    # or every one (`planned_all`).
    planned_customers: int = 0
    planned_all: bool = True

    def count_requests(self, stats: Stats) -> None:
        self.requests = stats.requests
        self.rate_limited = stats.rate_limited

    def entry_attention(self) -> list[EntryResult]:
        return self.plan.by_outcome(Outcome.ATTENTION) if self.plan else []

    def _acked(self, ref: str, reason: str) -> bool:
        acked = self.acknowledged.get(ref)
        return acked is not None and stable_reason(acked) == stable_reason(reason)

    def open_invoice_attention(self) -> dict[str, str]:
        """This run's invoice findings and the standing ones, without the acknowledged."""
        merged = {**self.standing, **self.invoice_attention}
        return {k: r for k, r in sorted(merged.items()) if not self._acked(k, r)}

    def open_entry_attention(self) -> list[EntryResult]:
        return [r for r in self.entry_attention() if not self._acked(r.ref, r.reason)]

    def acknowledged_items(self) -> list[tuple[str, str]]:
        merged = {**self.standing, **self.invoice_attention}
        found = [(k, r) for k, r in merged.items() if self._acked(k, r)]
        found += [(r.ref, r.reason) for r in self.entry_attention() if self._acked(r.ref, r.reason)]
        return sorted(found)

    @property
    def exit_code(self) -> ExitCode:
        if self.open_invoice_attention() or self.open_entry_attention():
            return ExitCode.ATTENTION
        return ExitCode.OK

    def counts(self) -> dict[str, int]:
        """The figures of the run, for the log line cron keeps."""
        results = self.plan.results if self.plan else ()
        return {
            "pulled": self.pulled,
            "created": len(self.created),
            "updated": len(self.updated),
            "cancelled_empty": len(self.cancelled),
            "recovered": len(self.recovered),
            "unchanged": self.unchanged,
            "customers_planned": self.planned_customers,
            "invoices_need_attention": len(self.invoice_attention),
            **{f"entries_{o.value}": sum(1 for r in results if r.outcome is o) for o in Outcome},
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "exit_code": int(self.exit_code),
        }

    def to_json(self) -> dict[str, Any]:
        results = self.plan.results if self.plan else ()
        return {
            "target": self.target,
            "dry_run": self.dry_run,
            "pulled": self.pulled,
            "invoices": {
                "created": self.created,
                "updated": self.updated,
                "cancelled_empty": self.cancelled,
                "unchanged": self.unchanged,
                "recovered": self.recovered,
                "would": [{"action": a, "key": k} for a, k in self.would],
            },
            "entries": {o.value: sum(1 for r in results if r.outcome is o) for o in Outcome},
            "attention": {
                "invoices": [
                    {"key": k, "reason": r} for k, r in self.open_invoice_attention().items()
                ],
                "entries": [
                    {"ref": r.ref, "reason": r.reason} for r in self.open_entry_attention()
                ],
                "acknowledged": [{"ref": ref, "reason": r} for ref, r in self.acknowledged_items()],
            },
            "excluded": dict(
                sorted(Counter(r.reason for r in results if r.outcome is Outcome.EXCLUDED).items())
            ),
            "notes": self.notes,
            "planned": {"customers": self.planned_customers, "all": self.planned_all},
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "exit_code": int(self.exit_code),
        }


class _Duplicate(Exception):
    def __init__(self, numbers: list[str]) -> None:
        super().__init__(", ".join(numbers))
        self.numbers = numbers


def bills_as(remote: Sequence[RemoteRow], rows: Sequence[Row]) -> bool:
    """Whether the target's rows bill what `rows` bill (texts aside)."""
    return not row_differences(remote, rows, texts=False)


def _period(remote: RemoteInvoice) -> str | None:
    """The service month of a listed invoice's key, or None when it is not the connector's."""
    try:
        return InvoiceKey.parse(remote.key or "").period
    except ValueError:
        return None


def remote_status(remote: RemoteInvoice) -> InvoiceStatus | None:
    """The closed status a remote invoice has reached, or None while it is an open draft."""
    if remote.state is RemoteState.OPEN:
        return None
    if remote.state is RemoteState.GONE:
        return InvoiceStatus.CANCELLED
    return remote.status or InvoiceStatus.BOOKED


class _Sync:
    """One sync run's work against one target. Decisions come from the planner; this class
    only looks at the remote, writes, and records what happened, in an order that survives a
    crash at any point."""

    MAX_ROUNDS = 6
    UPDATE_ATTEMPTS = 3

    def __init__(
        self,
        store: StateStore,
        target: Target,
        mappings: Mappings,
        report: SyncReport,
        invoice_settings: InvoiceSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        limits: Limits | None = None,
        prepaid: Prepaid | None = None,
    ) -> None:
        self.store = store
        self.target = target
        self.name = target.profile.name
        self.where = target.profile.display_name
        self.mappings = mappings
        self.report = report
        self.dry_run = report.dry_run
        self.invoice_settings = invoice_settings or InvoiceSettings()
        self.limits = limits or Limits()
        self.prepaid = prepaid or Prepaid()
        # Called as (invoices done, invoices to write) while writing: a terminal's progress bar.
        self.progress: Callable[[int, int], None] | None = None
        self.clock = clock or (lambda: datetime.now(UTC))
        # Statuses learnt during a dry run, which must not be stored.
        self.overrides: dict[InvoiceKey, KnownInvoice] = {}
        # Months held during this run (stored too, unless a dry run).
        self.held: dict[tuple[str, str], str] = {}
        self.skip: set[InvoiceKey] = set()
        self._register: dict[str, Decimal | None] | None = None
        self._locked: tuple[date | None] | None = None
        # Incremental planning: plan every customer (plan --all, or mappings, prices or
        # policy changed since the last complete sync), or only `scope`, the customers changed
        # since (growing during the run as statuses are learnt and invoices written).
        self.everything = False
        self.scope: set[str] | None = None
        self.context: str | None = None
        self.marks_read: set[str] = set()
        # The months listed since this run last wrote, and what the listing showed: the look
        # before writing reuses the watch's listing of the same months moments earlier rather
        # than list them again. Any write makes it stale (apply clears it).
        self._listed: tuple[frozenset[str], list[RemoteInvoice]] | None = None

    # --- planning ---------------------------------------------------------------------------

    def register(self) -> dict[str, Decimal | None]:
        """The target's active articles and prices, read once per run."""
        if self._register is None:
            self._register = self.target.article_prices()
            if not self.dry_run:  # kept for offline checks (mappings validate)
                self.store.set_register(self.name, self._register)
        return self._register

    def plan(self) -> Plan:
        # The marks this plan answers for: `settle` clears these and no later one.
        self.marks_read = self.store.dirty_customers()
        if self.context is None:
            self.context = plan_context(
                self.mappings, self.target.profile, self.register(), self.limits, self.prepaid
            )
            if not self.everything:
                self.scope = settled_scope(self.store, self.name, self.context)
        if self.scope is not None:
            # Statuses learnt in a dry run are not stored (so mark nothing): their customers
            # join by hand.
            learnt = {k.customer_number for k in self.overrides} | {c for c, _ in self.held}
            self.scope = self.store.closure(self.name, self.scope | self.marks_read | learnt)

        def part(
            entries: list[Entry],
            rejected: list[tuple[str, str]],
            invoiced: Invoiced,
            customers: set[str],
        ) -> Plan:
            if self.overrides or self.held:
                invoiced = replace(
                    invoiced,
                    invoices={
                        **invoiced.invoices,
                        **{
                            k: v
                            for k, v in self.overrides.items()
                            if k.customer_number in customers
                        },
                    },
                    holds={
                        **invoiced.holds,
                        **{m: r for m, r in self.held.items() if m[0] in customers},
                    },
                )
            return self.plan_of(entries, rejected, invoiced)

        found = plan_in_parts(self.store, self.name, self.scope, part)
        return (
            found if self.scope is None else with_carried(found, self.store, self.name, self.scope)
        )

    def settle(self, final: Plan) -> None:
        """After a complete run: every customer planned is settled, except those with changes
        still unsent (refused, skipped, held back), which the next run plans again; and the
        context planned with is recorded."""
        if self.context is None:
            return
        keep = {c.key.customer_number for c in final.changes}
        for text in self.report.invoice_attention:
            with contextlib.suppress(ValueError):
                keep.add(InvoiceKey.parse(text).customer_number)
        self.store.settle_dirty(keep, self.marks_read)
        self.store.set_meta(PLAN_CONTEXT, self.context)

    def plan_of(
        self, entries: list[Entry], rejected: list[tuple[str, str]], invoiced: Invoiced
    ) -> Plan:
        """The planner with this run's mappings, register, limits and prepaid policy: one
        place, so that a re-sync never plans with other rules than the sync."""
        return plan(
            entries,
            self.mappings,
            self.target.profile,
            invoiced,
            rejected,
            self.register(),
            self.limits,
            self.prepaid,
        )

    def attention(self, key: InvoiceKey, reason: str) -> None:
        log.warning("invoice.attention", key=key.text, reason=reason)
        self.report.invoice_attention[key.text] = reason
        self.skip.add(key)

    def set_status(
        self,
        key: InvoiceKey,
        status: InvoiceStatus,
        remote_id: str | None,
        number: str | None = None,
    ) -> None:
        log.info("invoice.status", key=key.text, status=status.value, number=number or remote_id)
        if self.dry_run:
            self.overrides[key] = KnownInvoice(key, status, None, remote_id, None, number)
        else:
            self.store.set_status(self.name, key, status, remote_id, number)

    def invoice_date(self, key: InvoiceKey) -> date:
        """The date of a new invoice (planning.invoice_date), out of any locked period."""
        if self._locked is None:
            self._locked = (self.target.locked_through(),)
        (locked,) = self._locked
        chosen, moved = invoice_date(
            key.period, self.invoice_settings.date, locked, self.clock().date()
        )
        if moved:
            note = (
                f"{key}: dated {chosen} because {self.where} has locked the period through {locked}"
            )
            log.warning("invoice.date_moved", key=key.text, date=str(chosen), locked=str(locked))
            self.report.notes.append(note)
        return chosen

    # --- looking at the remote ------------------------------------------------------------

    def find_live(self, key: InvoiceKey) -> RemoteInvoice | None:
        """The one live remote invoice with exactly this key; several are a duplicate to flag."""
        live = [r for r in self.target.find([key.text]) if r.key == key.text and r.live]
        if len(live) > 1:
            raise _Duplicate(sorted(r.label for r in live))
        return live[0] if live else None

    def lookup(self, invoices: list[PlannedInvoice]) -> dict[str, list[RemoteInvoice]]:
        """Remote invoices for these keys, listed per month, not read one per key. Every
        invoice of the connector's key form in those months must be one the state knows."""
        wanted = {i.key.text for i in invoices}
        found: dict[str, list[RemoteInvoice]] = defaultdict(list)
        seen = self.months({i.key.period for i in invoices})
        for remote in seen:
            if remote.key in wanted:
                found[remote.key].append(remote)
        self.check_known(seen)
        return found

    def months(self, periods: Iterable[str]) -> list[RemoteInvoice]:
        """The target's invoices of the connector's key form in these months. Months listed
        since the run last wrote are not listed again: nothing of the connector's has changed
        there since, and a person's change is no likelier to show seconds later."""
        wanted = frozenset(periods)
        listed, shown = self._listed or (frozenset(), [])
        kept = [r for r in shown if _period(r) in wanted]
        missing = wanted - listed
        if missing:
            fresh = self.target.find_all(sorted(missing))
            kept += [r for r in fresh if _period(r) in missing]
            self._listed = (listed | missing, [*shown, *fresh])
        return kept

    def check_known(self, remotes: Iterable[RemoteInvoice]) -> None:
        """Refuse to write when the target holds invoices of the connector's key form that the
        state does not know, live or not, any suffix: the state is not the one that made them
        (lost, replaced, an old backup), and writing could invoice the same hours again."""
        ours: list[tuple[RemoteInvoice, InvoiceKey]] = []
        for remote in remotes:
            with contextlib.suppress(ValueError):  # not the connector's otherwise
                ours.append((remote, InvoiceKey.parse(remote.key or "")))
        periods = {key.period for _, key in ours}
        records = {r.key.text: r for r in self.store.invoice_records(self.name, periods=periods)}
        unknown: list[tuple[RemoteInvoice, InvoiceKey]] = []
        for remote, key in ours:
            record = records.get(key.text)
            if record is not None and (
                record.remote_id == remote.remote_id
                or (record.remote_id is None and record.pending is not None)
                # A cancelled twin of a key the state knows (a copy someone cancelled) bills
                # nothing: it must not stop every later run.
                or not remote.live
            ):
                continue
            unknown.append((remote, key))
        if not unknown:
            return
        unknown.sort(key=lambda u: u[1])
        if not self.dry_run:
            self.store.add_attention(self.name, [self._unknown_item(r, k) for r, k in unknown])
        listed = ", ".join(
            f"{key} (#{r.label}, {'live' if r.live else self.target.profile.withdrawn})"
            for r, key in unknown[:6]
        )
        more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        raise StateMismatchError(
            f"{self.where} holds invoices this connector made that the state directory "
            f"{self.store.dir} does not know: {listed}{more}. It is not the state that made "
            "them (lost, replaced, an old backup, or CONNECTOR_STATE_DIR points elsewhere), "
            "and writing could invoice the same hours twice, so nothing was sent. Restore the "
            "right state directory, or rebuild this one from "
            f"{self.where} and the ledger: connector state rebuild"
        )

    def _unknown_item(self, remote: RemoteInvoice, key: InvoiceKey) -> AttentionItem:
        """An invoice of the connector's form the state does not know: listed by every later
        run until a person has restored or rebuilt the state (or acknowledged it)."""
        state = "live" if remote.live else self.target.profile.withdrawn
        return AttentionItem(
            key.text,
            f"{self.where} holds invoice #{remote.label} ({key}, {state}) that the state "
            f"directory {self.store.dir} does not know: it is not the state that made it (lost, "
            "replaced, an old backup, or CONNECTOR_STATE_DIR points elsewhere), so nothing is "
            "sent where it could be billed twice; restore the right state directory, or "
            "rebuild this one: connector state rebuild",
            "invoice",
            key.customer_number,
            key.period,
            standing=True,
        )

    def check_fresh_state(self) -> None:
        """A state that has never written to this target checks the whole target first: its
        months may hold the connector's invoices although this run plans none there."""
        if self.store.has_invoices(self.name):
            return
        self.check_known(self.target.find_all())

    def refresh_statuses(
        self, changes: list[PlannedInvoice], remote: dict[str, list[RemoteInvoice]]
    ) -> bool:
        """Learn what happened remotely (booked, sent, cancelled, unknown invoices); True when
        a status changed, so the plan must be made again."""
        changed = False
        for invoice in changes:
            key = invoice.key
            candidates = remote.get(key.text, [])
            number = invoice.remote_id
            if number:
                mine = [c for c in candidates if c.remote_id == number]
                # A listing may miss an invoice (freshness is not promised): read it directly
                # before calling it gone.
                current = mine[0] if mine else self.target.get(number)
                status = remote_status(current)
                if status is not None:
                    self._closed(key, number, status, current)
                    changed = True
                continue
        return changed

    def watch_open(self, planned: set[InvoiceKey]) -> bool:
        """Open drafts this run will not write are looked at too, one listing per month: a
        person may have booked, sent, cancelled or deleted one, and the state must know it
        before the month is planned, reported or closed. So are drafts a person edited
        (locked): one they withdraw bills nothing, and corrections must not be netted against
        it (the soak found a credit for hours never billed). True when a status changed."""
        records = [
            r
            # A locked draft (a person's) too: withdrawn, it no longer bills its rows.
            for watched in (InvoiceStatus.OPEN, InvoiceStatus.LOCKED)
            for r in self.store.invoice_records(self.name, watched)
            if r.status is watched
            and r.remote_id
            and r.pending is None
            and r.key not in planned
            and r.key not in self.skip
        ]
        if not records:
            return False
        listed: dict[str, RemoteInvoice] = {}
        for remote in self.months({r.key.period for r in records}):
            listed.setdefault(remote.remote_id, remote)
        changed = False
        for record in records:
            assert record.remote_id is not None
            # A listing may miss a fresh invoice: read it before calling it gone.
            remote = listed.get(record.remote_id) or self.target.get(record.remote_id)
            status = remote_status(remote)
            if record.status is InvoiceStatus.LOCKED and status is not InvoiceStatus.CANCELLED:
                # Booked or sent, a locked draft bills what it did while locked (it counts as
                # billed already); only its withdrawal changes that.
                continue
            if status is not None:
                self._closed(record.key, record.remote_id, status, remote)
                changed = True
        return changed

    def _closed(
        self, key: InvoiceKey, number: str, status: InvoiceStatus, remote: RemoteInvoice
    ) -> None:
        """A known invoice is now closed. Before its rows count as billed (later changes are
        netted against them), check they are the rows the state recorded: if what it bills
        differs (an old state directory restored, or a person's change of amounts before
        booking), corrections would be computed from the wrong rows, so the month is held. One
        the target no longer has at all counts as withdrawn by a person, and is flagged."""
        if remote.vanished:
            if not self._gone_for_good(key, number):
                return
            self.attention(
                key,
                f"invoice {number} ({key}) is no longer in {self.where}: taken as "
                f"{self.target.profile.withdrawn} by a person, so its entries are not invoiced "
                "again (if that was a mistake, check the invoices in "
                f"{self.where} and the state directory)",
            )
        if status is not InvoiceStatus.CANCELLED:
            rows = remote.rows
            if rows is None:  # a list item: read the invoice
                full = self.target.get(number)
                rows = None if full.state is RemoteState.GONE else full.rows
            record = self.store.invoice_record(self.name, key)
            written = record.written if record else None
            stale = (
                rows is not None
                and written is not None
                and not written.holds(rows)
                and not bills_as(rows, written.rows)
            )
            if stale:
                self._hold(
                    key,
                    f"invoice {number} ({key}) bills other amounts than the connector "
                    "recorded for it (an older state directory, or a person's change of "
                    "amounts)",
                )
        self.set_status(key, status, number, remote.number)

    def _gone_for_good(self, key: InvoiceKey, number: str) -> bool:
        """Whether an invoice the target no longer has may count as gone. Not on a target
        where invoices cannot disappear, and not before the settle time: a draft a person has
        just converted may not be listed yet, and counting it gone would drop what it bills.
        Otherwise it needs attention and nothing is sent for it."""
        profile = self.target.profile
        if not profile.deletable:
            self.attention(
                key,
                f"invoice {number} ({key}) is not found in {self.where}, where invoices "
                "cannot be deleted: check that the connector is set to the right company "
                "and address; nothing is sent for it until it is found again",
            )
            return False
        if not self._vanished_long_enough(key):
            self.attention(
                key,
                f"invoice {number} ({key}) is not found in {self.where} now: if a person "
                "converted or booked it, the listing may not show it yet. Nothing is sent "
                "for it until it is found again, or until "
                f"{self.target.search_settle_seconds:g} s have passed, after which it counts "
                f"as {profile.withdrawn}",
            )
            return False
        return True

    def _vanished_long_enough(self, key: InvoiceKey) -> bool:
        """Whether an invoice the target no longer lists has been missing for longer than the
        target's settle time (first noticed now, unless a run noticed it before)."""
        now = self.clock()
        since = now.isoformat()
        if not self.dry_run:
            since = self.store.mark_vanished(self.name, key, since)
        age = now - datetime.fromisoformat(since)
        return age.total_seconds() >= self.target.search_settle_seconds

    def _hold(self, key: InvoiceKey, why: str) -> None:
        """Hold a customer's month: nothing more is planned for it until a person has looked
        (connector state release)."""
        if not self.dry_run:
            self.store.hold(self.name, key.customer_number, key.period, why)
        self.held[(key.customer_number, key.period)] = why
        self.attention(
            key,
            f"{why}; nothing more is sent for customer {key.customer_number} {key.period} "
            f"until released: check it in {self.where}, then connector state release "
            f"--customer {key.customer_number} --period {key.period}",
        )

    # --- recovery ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish what a crashed or cut-off run left: writes whose outcome is unknown are
        looked up before anything new is sent. A refused read flags that invoice only."""
        for record in self.store.invoice_records(self.name, pending=True):
            if record.pending is None:  # not after the query above; for the type checker
                continue
            log.info("recovery.pending", key=record.key.text, number=record.remote_id)
            pending = record.pending.as_planned(record.key, record.remote_id)
            try:
                if record.remote_id:
                    self._recover_update(record, pending)
                else:
                    self._recover_create(record, pending)
            except _Duplicate as dup:
                self._duplicate(record.key, dup)
            except TargetRefusal as refusal:
                self.attention(
                    record.key,
                    f"cannot check what became of the last write to {record.key} "
                    f"({self.where} refused the read: {refusal}); nothing is sent for it",
                )

    def _settled(self, since: str | None) -> bool:
        """Whether the target's search has had time to list an invoice created at `since`."""
        settle = self.target.search_settle_seconds
        if settle <= 0 or since is None:
            return True
        age = self.clock() - datetime.fromisoformat(since)
        return age.total_seconds() >= settle

    def _recover_create(self, record: InvoiceRecord, pending: PlannedInvoice) -> None:
        found = self.find_live(pending.key)
        if found is not None:
            self._adopt(pending, found.remote_id)
            return
        if not self._settled(record.pending_since):
            self._wait_for_search(pending.key)
            return
        self.store.clear_pending(self.name, pending.key)  # never created: the plan sends it

    def _wait_for_search(self, key: InvoiceKey) -> None:
        self.attention(
            key,
            f"creating {key} had an unknown outcome and {self.where}'s search does not list "
            f"it yet; nothing more is sent for it until a later run has looked again (after "
            f"{self.target.search_settle_seconds:g} s)",
        )

    def _recover_update(self, record: InvoiceRecord, pending: PlannedInvoice) -> None:
        assert record.remote_id is not None
        remote = self.target.get(record.remote_id)
        rows = remote.rows or ()
        if not pending.rows:  # a discard of an emptied draft
            if remote.vanished and not self._gone_for_good(pending.key, record.remote_id):
                return  # ours, or converted and not listed yet: the pending mark waits
            if remote.state is RemoteState.GONE:
                self._record_cancel(pending)
                self.report.recovered.append(pending.key.text)
            else:
                self.store.clear_pending(self.name, pending.key)
            return
        if remote.state is RemoteState.GONE:
            if remote.vanished and not self._gone_for_good(pending.key, record.remote_id):
                # Converted, maybe, and not listed yet: the pending rows are kept, to tell
                # once it is found whether the write landed before the conversion.
                return
            self.store.clear_pending(self.name, pending.key)
            self._closed(pending.key, record.remote_id, InvoiceStatus.CANCELLED, remote)
            return
        if rows_match(rows, pending.rows):
            self.store.confirm_write(self.name, pending, record.remote_id, rows)
            self.report.recovered.append(pending.key.text)
        elif record.written is not None and record.written.holds(rows):
            self.store.clear_pending(self.name, pending.key)
        elif bills_as(rows, pending.rows):
            # The write landed and a person has changed a text since: what it bills is ours.
            self.store.confirm_write(self.name, pending, record.remote_id, rows)
            self._locked_by_person(pending.key, record.remote_id)
        else:
            self.store.clear_pending(self.name, pending.key)
            self._locked_by_person(pending.key, record.remote_id)

    def _adopt(self, invoice: PlannedInvoice, number: str) -> None:
        """A create whose answer was lost did happen: record it. If a person has changed it
        since, it is still recorded as created with our rows (what it bills is ours, as for
        any draft a person edits), and left to them."""
        remote = self.target.get(number)
        rows = None if remote.vanished else tuple(remote.rows or ())
        self.store.confirm_write(self.name, invoice, number, rows, remote.number)
        if rows is not None and rows_match(rows, invoice.rows):
            self.report.recovered.append(invoice.key.text)
            log.info("invoice.recovered", key=invoice.key.text, number=number)
        else:
            self._locked_by_person(invoice.key, number)

    def _locked_by_person(self, key: InvoiceKey, number: str) -> None:
        self._lock(
            key,
            number,
            f"invoice {number} ({key}) was changed in {self.where} by a person; the connector "
            "no longer changes it and sends later changes on a supplementary invoice",
        )

    def _lock(self, key: InvoiceKey, number: str, reason: str) -> None:
        self.set_status(key, InvoiceStatus.LOCKED, number)
        self.attention(key, reason)

    def _duplicate(self, key: InvoiceKey, dup: _Duplicate) -> None:
        self.attention(
            key,
            f"{self.where} has several live invoices with reference {key} "
            f"({', '.join(dup.numbers)}): cancel all but one; nothing is sent for it meanwhile",
        )

    # --- writing ----------------------------------------------------------------------------

    def run(self) -> Plan:
        current = self.plan()
        if current.changes:
            self.check_fresh_state()
        if self.watch_open({c.key for c in current.changes}):
            current = self.plan()
        for _ in range(self.MAX_ROUNDS):
            changes = [c for c in current.changes if c.key not in self.skip]
            if not changes:
                break
            remote = self.lookup(changes)
            if self.refresh_statuses(changes, remote):
                current = self.plan()
                continue
            if not self.apply([c for c in changes if c.key not in self.skip]):
                break
            current = self.plan()
        report = self.report
        written = {*report.created, *report.updated, *report.cancelled, *report.recovered}
        if written and not self.dry_run:
            current = self.plan()
        report.unchanged = sum(
            1
            for i in current.invoices
            if i.action is Action.UNCHANGED and i.key.text not in written
        )
        if self.scope is not None:  # the open drafts of the customers not planned
            report.unchanged += self.store.count_written_open(self.name, excluding=self.scope)
            report.planned_customers, report.planned_all = len(self.scope), False
        else:
            report.planned_customers = len({r.customer_number for r in current.results} - {None})
        current = self.truthful(current)
        if not self.dry_run:
            self.store.advance_placements(
                self.name,
                (
                    (r.ref, r.revision)
                    for r in current.results
                    if r.reason == "already invoiced" and r.revision is not None
                ),
            )
        return current

    def truthful(self, plan: Plan) -> Plan:
        """Outcomes as they are in the target: an entry counts as invoiced only when its
        invoices are there (in a dry run: would be sent). An entry on an invoice that was
        refused, skipped or left unwritten needs attention, with that invoice's reason."""
        unwritten = set() if self.dry_run else {i.key for i in plan.changes}
        existing = {
            key for key, known in self.store.invoiced(self.name, self.scope).invoices.items()
            if known.remote_id
        }  # fmt: skip
        refused = {
            key for key in (InvoiceKey.parse(k) for k in self.report.invoice_attention)
            if key not in existing
        }  # fmt: skip
        results = []
        for result in plan.results:
            if result.outcome is Outcome.INVOICED:
                blocked = [k for k in result.keys if k in refused or k in unwritten]
                if blocked:
                    key = blocked[0]
                    why = self.report.invoice_attention.get(key.text, "it was not written")
                    verb = "would not be sent" if self.dry_run else "was not sent"
                    result = replace(
                        result,
                        outcome=Outcome.ATTENTION,
                        reason=f"its invoice {key} {verb}: {why}",
                    )
            results.append(result)
        return replace(plan, results=tuple(results))

    def apply(self, changes: list[PlannedInvoice]) -> bool:
        """Write each change; True when a status changed on the way (plan again)."""
        self._listed = None  # what is written from here on makes any listing stale
        changed = False
        for done, invoice in enumerate(changes):
            if self.progress is not None:
                self.progress(done, len(changes))
            record = self.store.invoice_record(self.name, invoice.key)
            try:
                if record is not None and record.refused_digest == invoice.digest:
                    # Sent before and refused, unchanged since: send again only once a read
                    # shows the cause is gone, so a quiet night sends no write request.
                    reason = self.target.still_refused(record.refused_code, invoice)
                    if reason is not None:
                        self.attention(invoice.key, reason)
                        continue
                if invoice.action is Action.CREATE:
                    self.create(invoice)
                elif not invoice.rows:
                    changed |= self.cancel_empty(invoice)
                else:
                    changed |= self.update(invoice)
            except TargetRefusal as refusal:
                if not self.dry_run:
                    self.store.record_refusal(self.name, invoice, refusal.code)
                self.attention(invoice.key, self.target.explain(refusal, invoice))
            except _Duplicate as dup:
                self._duplicate(invoice.key, dup)
        return changed

    def _confirm(self, invoice: PlannedInvoice, number: str, answer: RemoteInvoice) -> bool:
        """Record a write, and compare the target's answer with the plan: anything it stored
        differently (a price, a row, VAT included) locks the invoice for a person to check."""
        self.store.confirm_write(self.name, invoice, number, answer.rows, answer.number)
        problems = row_differences(answer.rows or (), invoice.rows, texts=False)
        if answer.vat_included:
            problems.append("prices are marked as including VAT")
        if answer.state is not RemoteState.OPEN:
            # Sent or booked between our read and our write: the customer may hold the old one.
            problems.append("it was sent or booked while the connector wrote to it")
        if answer.currency and answer.currency != invoice.currency:
            problems.append(f"currency {answer.currency} instead of {invoice.currency}")
        if not problems:
            return True
        self._lock(
            invoice.key,
            number,
            f"{self.where} stored invoice {number} ({invoice.key}) differently from what was "
            f"sent: {'; '.join(problems[:3])}; the connector no longer changes it: check it in "
            f"{self.where}",
        )
        return False

    def create(self, invoice: PlannedInvoice) -> None:
        if self.dry_run:
            # A dry run sends nothing, so it asks what a create would meet (a customer the
            # target does not have): it shows what the sync would really do.
            reason = self.target.precheck(invoice)
            if reason is not None:
                self.attention(invoice.key, reason)
                return
            self.report.would.append(("create", invoice.key.text))
            return
        dated = self.invoice_date(invoice.key)
        for _ in range(2):
            self.store.mark_pending(self.name, invoice)
            failpoint("before_post")
            try:
                created = self.target.create(invoice, dated)
            except OutcomeUnknownError as exc:
                log.warning("invoice.outcome_unknown", key=invoice.key.text, detail=str(exc))
                found = self.find_live(invoice.key)
                if found is not None:
                    self._adopt(invoice, found.remote_id)
                    self.report.created.append(invoice.key.text)
                    return
                if self.target.search_settle_seconds > 0:
                    # The search may not list a fresh invoice yet: sending again could make a
                    # second one. The pending mark stays for a later run to look again.
                    self._wait_for_search(invoice.key)
                    return
                self.store.clear_pending(self.name, invoice.key)
                continue  # looked, and it is not there: sending again is safe
            except (TargetRefusal, RemoteUnavailableError, ReauthRequiredError):
                # Refused or never sent: nothing exists remotely.
                self.store.clear_pending(self.name, invoice.key)
                raise
            failpoint("after_post")
            self._confirm(invoice, created.remote_id, created)
            self.report.created.append(invoice.key.text)
            log.info("invoice.created", key=invoice.key.text, number=created.label)
            return
        # Twice unknown and twice not found: leave it pending for the next run to look again.
        self.store.mark_pending(self.name, invoice)
        raise RemoteUnavailableError(
            f"creating {invoice.key} had an unknown outcome twice; the next run checks first"
        )

    def _check_ours(self, invoice: PlannedInvoice) -> RemoteInvoice | None:
        """The remote draft, if it is still what the connector last wrote; else None (and the
        invoice is locked or re-statused)."""
        assert invoice.remote_id is not None
        remote = self.target.get(invoice.remote_id)
        status = remote_status(remote)
        if status is not None:
            self._closed(invoice.key, invoice.remote_id, status, remote)
            return None
        record = self.store.invoice_record(self.name, invoice.key)
        known = [w for w in (record.written, record.pending) if w] if record else []
        rows = remote.rows or ()
        if not any(w.holds(rows) for w in known):
            if not any(bills_as(rows, w.rows) for w in known):
                # Other amounts than any the connector wrote: later corrections cannot be
                # computed against it.
                self._hold(
                    invoice.key,
                    f"draft {invoice.remote_id} ({invoice.key}) bills other amounts than "
                    "the connector wrote (a person's change of amounts, or an older state "
                    "directory)",
                )
            self._locked_by_person(invoice.key, invoice.remote_id)
            return None
        return remote

    def update(self, invoice: PlannedInvoice) -> bool:
        assert invoice.remote_id is not None
        current = self._check_ours(invoice)
        if current is None:
            return True
        if self.dry_run:
            self.report.would.append(("update", invoice.key.text))
            return False
        if not self.target.can_update(invoice, current):
            # A draft written by an earlier version, without the header row, that shares no
            # row with the plan: first add the header alone, keeping every row, and record it
            # (a crash between the two writes then finds a state it knows).
            step = self._with_header(invoice)
            answer = self._put(step, current, header_only=True)
            if answer is None:
                return True
            failpoint("after_header_step")
            self.store.confirm_write(self.name, step, invoice.remote_id, answer.rows)
            current = answer
        answer = self._put(invoice, current)
        if answer is None:
            return True
        failpoint("after_put")
        if self._confirm(invoice, invoice.remote_id, answer):
            self.report.updated.append(invoice.key.text)
            log.info("invoice.updated", key=invoice.key.text, number=invoice.remote_id)
            return False
        return True

    def _with_header(self, invoice: PlannedInvoice) -> PlannedInvoice:
        record = self.store.invoice_record(self.name, invoice.key)
        assert record is not None
        assert record.written is not None
        header = [r for r in invoice.rows if r.role is RowRole.HEADER]
        return record.written.as_planned(invoice.key, invoice.remote_id, prefix=header)

    def _put(
        self, invoice: PlannedInvoice, current: RemoteInvoice, *, header_only: bool = False
    ) -> RemoteInvoice | None:
        """Write the rows; a lost answer is settled by reading the draft, never by sending the
        same row ids again (they change with every update). None when the draft turned out to
        be someone else's, closed or gone; raises RemoteUnavailableError after repeated
        unknowns."""
        assert invoice.remote_id is not None
        number = invoice.remote_id
        dated: date | None = None
        for _ in range(self.UPDATE_ATTEMPTS):
            self.store.mark_pending(self.name, invoice)
            failpoint("before_put")
            try:
                answer = self.target.update(
                    number, invoice, current, header_only=header_only, invoice_date=dated
                )
            except OutcomeUnknownError as exc:
                log.warning("invoice.outcome_unknown", key=invoice.key.text, detail=str(exc))
                landed, now = self._settle(invoice, current, header_only=header_only)
                if landed or now is None:
                    return now
                current = now  # it did not land: send again with the fresh row ids
                continue
            except TargetRefusal as refusal:
                if dated is None and self.target.refuses_date(refusal):
                    # A draft dated in a period locked since it was created: only the date
                    # stands in the way, so it moves to the first open day.
                    dated = self._first_open_day(invoice.key)
                    if dated is not None:
                        continue
                self.store.clear_pending(self.name, invoice.key)
                # Ids refused because a person saved the draft meanwhile: that is an edit.
                now = self.target.get(number)
                if now.state is RemoteState.OPEN and tuple(now.rows or ()) != tuple(
                    current.rows or ()
                ):
                    self._locked_by_person(invoice.key, number)
                    return None
                raise
            return answer
        raise RemoteUnavailableError(
            f"updating {invoice.key} had an unknown outcome {self.UPDATE_ATTEMPTS} times; the "
            "next run checks first"
        )

    def _settle(
        self, invoice: PlannedInvoice, before: RemoteInvoice, *, header_only: bool = False
    ) -> tuple[bool, RemoteInvoice | None]:
        """After a PUT whose answer was lost, read the draft: (True, draft) if the write
        landed, (False, draft) if it did not and may be sent again, (False, None) when the
        draft turned out to be gone, closed or edited by a person."""
        assert invoice.remote_id is not None
        number = invoice.remote_id
        now = self.target.get(number)
        rows = tuple(now.rows or ())
        landed = now.state is not RemoteState.GONE and (
            rows_match(rows, invoice.rows)
            or (header_only and rows[1:] == tuple(before.rows or ()) and rows_match(
                rows[:1], invoice.rows[:1]
            ))
        )  # fmt: skip
        status = remote_status(now)
        if landed and status is None:
            return True, now
        if now.vanished and not self._gone_for_good(invoice.key, number):
            return False, None  # the pending mark stays until it is found or has settled
        if landed:
            # Landed, then booked or sent before we looked: record what it bills first, or the
            # change would be billed a second time on a supplementary invoice.
            self.store.confirm_write(self.name, invoice, number, rows, now.number)
            self.set_status(invoice.key, status or InvoiceStatus.BOOKED, number, now.number)
            return False, None
        self.store.clear_pending(self.name, invoice.key)
        if status is not None:
            self._closed(invoice.key, number, status, now)
            return False, None
        if rows == tuple(before.rows or ()):
            return False, now
        if bills_as(rows, invoice.rows):
            # Landed, and a person changed a text right after: what it bills is ours.
            self.store.confirm_write(self.name, invoice, number, rows)
        self._locked_by_person(invoice.key, number)
        return False, None

    def _first_open_day(self, key: InvoiceKey) -> date | None:
        if self._locked is None:
            self._locked = (self.target.locked_through(),)
        (locked,) = self._locked
        if locked is None:
            return None
        moved = locked + timedelta(days=1)
        self.report.notes.append(
            f"{key}: re-dated {moved} because {self.where} has locked the period through {locked}"
        )
        return moved

    def cancel_empty(self, invoice: PlannedInvoice) -> bool:
        """A draft of ours left with nothing to bill is cancelled rather than left empty. The
        cancel is marked pending first: a crash right after it must not read as a person's
        cancellation, which would exclude the entries that left the draft."""
        assert invoice.remote_id is not None
        if self._check_ours(invoice) is None:
            return True
        if self.dry_run:
            self.report.would.append(("cancel", invoice.key.text))
            return False
        self.store.mark_pending(self.name, invoice)
        failpoint("before_cancel")
        try:
            self.target.discard(invoice.remote_id)
        except (OutcomeUnknownError, TargetRefusal) as exc:
            # A lost answer, or a repeat refused: what counts is whether it is gone now.
            now = self.target.get(invoice.remote_id)
            if now.vanished and not self._gone_for_good(invoice.key, invoice.remote_id):
                return True  # deleted, or converted and not listed yet: a later run decides
            if now.state is not RemoteState.GONE:
                self.store.clear_pending(self.name, invoice.key)
                if isinstance(exc, TargetRefusal):
                    raise
                raise RemoteUnavailableError(
                    f"withdrawing {invoice.key} had an unknown outcome and it is still there; "
                    "the next run looks again"
                ) from None
        failpoint("after_cancel")
        self._record_cancel(invoice)
        self.report.cancelled.append(invoice.key.text)
        log.info("invoice.cancelled_empty", key=invoice.key.text, number=invoice.remote_id)
        return True

    def _record_cancel(self, invoice: PlannedInvoice) -> None:
        assert invoice.remote_id is not None
        self.store.confirm_write(self.name, invoice, invoice.remote_id)
        self.store.set_status(self.name, invoice.key, InvoiceStatus.CANCELLED)


def standing_attention(
    store: StateStore, profile: TargetProfile, found: dict[str, str]
) -> tuple[dict[str, str], set[str]]:
    """Invoices that still need attention though this run found nothing new about them: every
    invoice a person edited (locked: the connector no longer changes it), and every standing
    item (an invoice the state does not know), with the reason recorded when it was found."""
    stored = {s.item.ref: s.item for s in store.attention_items(profile.name)}
    standing: dict[str, str] = {}
    for record in store.invoice_records(profile.name, InvoiceStatus.LOCKED):
        key = record.key.text
        if key in found:
            continue
        before = stored.get(key)
        number = record.display_number or record.remote_id
        standing[key] = (
            before.reason
            if before is not None and before.scope == "invoice"
            else f"invoice {number} ({key}) is locked: a person changed it in "
            f"{profile.display_name}, or it holds rows the connector did not write; the "
            "connector no longer changes it and sends later changes on a supplementary invoice"
        )
    kept = set()
    for ref, item in stored.items():
        if item.standing and ref not in found and ref not in standing:
            standing[ref] = item.reason
            kept.add(ref)
    return standing, kept


def attention_items(report: SyncReport) -> list[AttentionItem]:
    """What a run leaves in the state's attention list: its entries and invoices needing
    attention, and the standing invoices (kept from run to run)."""
    items = [
        AttentionItem(r.ref, r.reason, "entry", r.customer_number, r.period)
        for r in report.entry_attention()
    ]
    for text, reason in {**report.standing, **report.invoice_attention}.items():
        try:
            key: InvoiceKey | None = InvoiceKey.parse(text)
        except ValueError:
            key = None
        items.append(
            AttentionItem(
                text,
                reason,
                "invoice",
                key.customer_number if key else None,
                key.period if key else None,
                # A locked invoice needs no flag: its status keeps it listed.
                standing=text in report.standing_kept and text not in report.invoice_attention,
            )
        )
    return items


def open_target(settings: Settings) -> Target:
    """The configured accounting system's client (CONNECTOR_TARGET)."""
    return targets.spec(settings.target).open(settings)


@dataclass(frozen=True)
class Opened:
    """What one command works with: the ledger, the accounting system, the locked state."""

    ledger: LedgerClient
    target: Target
    store: StateStore


@contextlib.contextmanager
def opened(
    settings: Settings,
    *,
    ledger: LedgerClient | None = None,
    target: Target | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[tuple[Opened, Mappings]]:
    """Open what a command that reads the ledger and the accounting system needs, under the
    run lock, and close it all whatever happens. The settings are checked first (their
    messages name the variable to set), then the mapping files, before anything is opened."""
    if ledger is None:
        settings.require_ledger()
    if target is None:
        require_target(settings)
    loaded = load_mappings(settings.mappings_dir)
    with contextlib.ExitStack() as resources:
        ledger = ledger or open_ledger(settings)
        resources.callback(ledger.close)
        target = target or open_target(settings)
        resources.callback(target.close)
        store = StateStore(settings.state_dir)
        resources.callback(store.close)
        resources.enter_context(store.lock())
        if clock is not None:
            store.clock = clock
        yield Opened(ledger, target, store), loaded


def run_sync(
    settings: Settings,
    *,
    ledger: LedgerClient | None = None,
    target: Target | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] | None = None,
    progress: Callable[[int, int], None] | None = None,
    everything: bool = False,
) -> SyncReport:
    """`connector sync`: finish unfinished work, pull, plan, and bring the target in line.

    Only the customers changed since the last complete sync are planned, unless `everything`
    (or the mappings, prices or policy changed since): docs/sync.md, Incremental planning."""
    report = SyncReport(dry_run=dry_run)
    with opened(settings, ledger=ledger, target=target, clock=clock) as (run, mappings):
        ledger, target, store = run.ledger, run.target, run.store
        report.target = target.profile.name
        run_id = None if dry_run else store.start_run("sync", target.profile.name)
        sync = _Sync(
            store,
            target,
            mappings,
            report,
            settings.invoice,
            clock,
            settings.limits.limits(),
            settings.prepaid.policy(),
        )
        sync.progress = progress
        sync.everything = everything
        try:
            bind_ledger(store, settings, record=not dry_run)
            bind_system(store, target.profile.name, record=not dry_run)
            bind_target(store, target, record=not dry_run)
            if not dry_run:
                sync.recover()
            report.pulled = pull(store, ledger).items
            failpoint("after_pull")
            report.plan = sync.run()
        except ConnectorError as exc:
            report.count_requests(target.stats)
            if run_id is not None:
                store.finish_run(run_id, exc.exit_code, {**report.to_json(), "error": str(exc)})
            raise
        report.count_requests(target.stats)
        report.standing, report.standing_kept = standing_attention(
            store, target.profile, report.invoice_attention
        )
        if run_id is not None:
            store.replace_attention_items(target.profile.name, attention_items(report))
            # Only now: a kill before this leaves the customers to be planned again, never
            # settled with an attention list of an earlier run.
            sync.settle(report.plan)
        report.acknowledged = store.acknowledged(target.profile.name)
        if run_id is not None:
            store.finish_run(run_id, report.exit_code, report.to_json())
        log.info("sync.done", **report.counts())
    return report
