"""Test harness for syncs: an in-process sandbox world for any target, and an oracle that checks
the target's fake against the ledger without trusting the connector's own state.

The oracle sees every fake through one neutral shape (`neutral_invoices()`), and a `Driver` per
target does what a person does in that system (book, send, withdraw, edit a text), so one suite
of guarantee tests runs against every target (tests/test_target_suite.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from connector import targets
from connector.ledger import InvalidEntry, LedgerClient, parse_entry
from connector.mappings import Mappings
from connector.planning import KnownInvoice, Outcome, Plan, entry_rows
from connector.planning import plan as plan_
from connector.rebuild import RebuildReport, rebuild
from connector.sandbox import build_app, fake_module, fortnox_of
from connector.sandbox.app import FakeDriver, SandboxApp
from connector.sandbox.fortnox import Driver as FortnoxDriver
from connector.sandbox.fortnox import FortnoxFake
from connector.sandbox.server import transport
from connector.settings import Settings
from connector.state import StateStore
from connector.sync import SyncReport, current_plan, load_entries, run_sync
from connector.targets.base import TargetProfile, TargetSettings
from connector.targets.fortnox import client as fortnox_client
from connector.targets.fortnox.settings import FortnoxSettings

BASE = "http://sandbox.test"
TARGETS = tuple(targets.TARGETS)


def NIGHT() -> datetime:
    """The night the in-process syncs run, unless a test moves time: invoice dates depend on
    it, and tests must not depend on the day they run."""
    return datetime(2026, 10, 10, 2, 0, tzinfo=UTC)


Net = dict[tuple[str, str, str, Decimal], Decimal]


def fortnox_settings(settings: Settings) -> FortnoxSettings:
    return fortnox_client.section(settings)


def target_settings(settings: Settings) -> TargetSettings:
    return targets.spec(settings.target).section(settings)


# --- drivers: a person at each accounting system ----------------------------------------------

Driver = FakeDriver


def driver_for(app: SandboxApp, target: str) -> Driver:
    """The target's fake, seen through its sandbox module's neutral `Driver`."""
    driver: Driver = fake_module(target).Driver(app)
    return driver


@dataclass
class World:
    """The sandbox app and a connector configured against one of its fakes, all in one
    process."""

    app: SandboxApp
    settings: Settings
    mappings: Mappings
    reports: list[SyncReport] = field(default_factory=list)
    # Invoices a person edited in the fake (remote ids): theirs, so not compared with the plan
    # row by row (the connector notices an edit only when it next needs to change that draft).
    edited: set[str] = field(default_factory=set)

    @property
    def target(self) -> str:
        return self.settings.target

    @property
    def profile(self) -> TargetProfile:
        return targets.spec(self.target).profile

    @property
    def driver(self) -> Driver:
        return driver_for(self.app, self.target)

    @property
    def fake(self) -> FortnoxFake:
        """The fake Fortnox, for tests that are about Fortnox itself."""
        return fortnox_of(self.app)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=transport(self.app), base_url=BASE)

    def sync(
        self,
        *,
        dry_run: bool = False,
        clock: Callable[[], datetime] | None = None,
        everything: bool = False,
    ) -> SyncReport:
        token = self.settings.ledger.token
        assert self.settings.ledger.url is not None and token is not None
        ledger = LedgerClient(self.settings.ledger.url, token, client=self.client())
        target = targets.spec(self.target).open(self.settings, http=self.client())
        report = run_sync(
            self.settings,
            ledger=ledger,
            target=target,
            dry_run=dry_run,
            clock=clock or NIGHT,
            everything=everything,
        )
        self.reports.append(report)
        return report

    def rebuild(self) -> RebuildReport:
        token = self.settings.ledger.token
        assert self.settings.ledger.url is not None and token is not None
        ledger = LedgerClient(self.settings.ledger.url, token, client=self.client())
        target = targets.spec(self.target).open(self.settings, http=self.client())
        return rebuild(self.settings, ledger=ledger, target=target, replace_existing=True)

    def post_ledger(self, entries: list[dict[str, Any]]) -> None:
        with self.client() as client:
            client.post("/_sandbox/ledger", json=entries).raise_for_status()

    def faults(self, **values: Any) -> None:
        with self.client() as client:
            client.post("/_sandbox/faults", json=values).raise_for_status()

    def writes(self) -> int:
        """Write requests the target's fake has received."""
        prefix = self.driver.api_prefix
        return sum(
            n
            for name, n in self.app.requests.items()
            if name.split(" ")[0] in ("POST", "PUT", "DELETE")
            and name.split(" ")[1].startswith(prefix)
        )

    def store(self) -> StateStore:
        return StateStore(self.settings.state_dir)

    def current_plan(self) -> Plan:
        """The plan the connector would make now, from its state directory and the fake's
        article register."""
        store = self.store()
        try:
            invoiced = store.invoiced(self.target)
            entries, rejected = load_entries(store)
            return plan_(
                entries,
                self.mappings,
                self.profile,
                invoiced,
                rejected,
                self.driver.register(),
                prepaid=self.settings.prepaid.policy(),
            )
        finally:
            store.close()

    def pending_plan_changes(self) -> list[str]:
        return [i.key.text for i in self.current_plan().changes]


def make_world(
    tmp_path: Path,
    mappings: Mappings,
    *,
    rate_limit: str = "100000/1",
    target: str = "fortnox",
    ledger_file: Path | None = None,
) -> World:
    """A world on the sample ledger, or on `ledger_file` (JSON lines) instead."""
    from connector.sandbox.demo import sandbox_settings
    from tests.conftest import MAPPINGS_DIR

    app = build_app(ledger_file, rate_limit=rate_limit)
    settings = sandbox_settings(BASE, tmp_path / "state", MAPPINGS_DIR, target)
    section = target_settings(settings)
    section.rate_limit = rate_limit
    # The fake lists new invoices at once unless a test sets a lag.
    section.search_settle_seconds = 0
    return World(app=app, settings=settings, mappings=mappings)


# --- the oracle -------------------------------------------------------------------------------


def live_by_key(driver: Driver) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for invoice in driver.invoices():
        if invoice["state"] != "gone":
            found.setdefault(invoice["key"], []).append(invoice)
    return found


def assert_no_duplicates(driver: Driver) -> None:
    duplicates = {k: len(v) for k, v in live_by_key(driver).items() if len(v) > 1}
    assert not duplicates, f"duplicate live invoices: {duplicates}"


def _plan_facts(found: Plan) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]]]:
    changes = {(i.key.text, i.action.value, i.digest) for i in found.changes}
    attention = {(r.ref, r.reason) for r in found.results if r.outcome is Outcome.ATTENTION}
    return changes, attention


def assert_incremental_agrees(world: World) -> None:
    """The plan of the customers changed since the last complete sync (with the attention of
    the others carried from the state) has the changes and the attention of the full plan."""
    store = world.store()
    try:
        args = (store, world.mappings, world.profile)
        kwargs: dict[str, Any] = {
            "limits": world.settings.limits.limits(),
            "prepaid": world.settings.prepaid.policy(),
        }
        full = current_plan(*args, **kwargs, everything=True)
        part = current_plan(*args, **kwargs, everything=False)
    finally:
        store.close()
    full_changes, full_attention = _plan_facts(full)
    part_changes, part_attention = _plan_facts(part)
    assert part_changes == full_changes, part_changes ^ full_changes
    assert part_attention == full_attention, part_attention ^ full_attention


def assert_no_sent_invoice_modified(driver: Driver) -> None:
    changed = driver.modified_after_closing()
    assert not changed, f"invoices changed after the customer had them: {changed}"


def remote_net(driver: Driver) -> Net:
    """Quantity per (customer, currency, article, price) over every live invoice."""
    net: Net = defaultdict(Decimal)
    for invoice in driver.invoices():
        if invoice["state"] == "gone":
            continue
        assert invoice["vat_included"] is False, invoice["remote_id"]
        for row in invoice["rows"]:
            if not row["article"]:
                continue
            group = (
                invoice["customer_number"],
                invoice["currency"],
                row["article"],
                Decimal(str(row["price"])),
            )
            net[group] += Decimal(str(row["quantity"]))
    return {g: q for g, q in net.items() if q != 0}


def oracle_overdraws(world: World) -> dict[str, Decimal]:
    """Entry id -> prepaid hours it draws beyond the customer's balance, reckoned here from the
    ledger and not by `connector.prepaid`, when the settings invoice overdraws (otherwise they
    bill nothing). Per customer by performed date, top-ups first on a day, then entry id; a
    top-up never covers an earlier draw."""
    if world.settings.prepaid.overdraw != "invoice":
        return {}
    moves: dict[str, list[tuple[str, int, str, Decimal]]] = defaultdict(list)
    for raw in world.app.ledger.entries():
        try:
            entry = parse_entry(raw)
        except InvalidEntry:
            continue
        if entry.status.value != "active":
            continue
        day = entry.performed_on.isoformat()
        if entry.kind.value == "topup":
            moves[entry.customer_number].append((day, 0, entry.id, entry.hours))
        elif entry.prepaid_hours > 0:
            moves[entry.customer_number].append((day, 1, entry.id, -entry.prepaid_hours))
    found: dict[str, Decimal] = {}
    for customer_moves in moves.values():
        left = Decimal(0)
        for _day, _order, entry_id, hours in sorted(customer_moves):
            left += hours
            if left < 0:
                found[entry_id] = -left
                left = Decimal(0)
    return found


def ledger_net(world: World, skip_refs: set[str], kept: Net | None = None) -> Net:
    """What the ledger's current revisions should have billed, per the same groups, with the
    prices the connector must have resolved (entry, mapping, article register). `kept` adds
    what entries needing attention still bill from an earlier revision."""
    net: Net = defaultdict(Decimal)
    for group, quantity in (kept or {}).items():
        net[group] += quantity
    driver = world.driver
    register = driver.register()
    customers = driver.customers()
    over = oracle_overdraws(world)
    for raw in world.app.ledger.entries():
        try:
            entry = parse_entry(raw)
        except InvalidEntry:
            continue
        if entry.id in skip_refs or entry.customer_number not in customers:
            continue
        rows = entry_rows(
            entry,
            world.mappings,
            world.profile,
            register,
            overdraw=over.get(entry.id, Decimal(0)),
        )
        if not isinstance(rows, tuple):
            continue
        for row in rows:
            if row.article is None or row.quantity is None:
                continue
            assert row.price is not None, "with a register every article row has a price"
            net[(entry.customer_number, entry.currency, row.article, row.price)] += row.quantity
    return {g: q for g, q in net.items() if q != 0}


def uninvoiceable(world: World) -> set[str]:
    """Entries whose current revision the ledger and mappings cannot invoice (by the oracle's
    own reckoning): unknown category, no price, beyond a sanity limit..."""
    register = world.driver.register()
    over = oracle_overdraws(world)
    found = set()
    for raw in world.app.ledger.entries():
        try:
            entry = parse_entry(raw)
        except InvalidEntry:
            continue
        rows = entry_rows(
            entry, world.mappings, world.profile, register, overdraw=over.get(entry.id, Decimal(0))
        )
        if not isinstance(rows, tuple):
            found.add(entry.id)
    return found


def written_net(world: World, refs: set[str]) -> Net:
    """Quantity per group that the state records these entries as having on live invoices."""
    return _state_net(world, refs, lambda known: known.status.value != "cancelled")


def billed_net(world: World, refs: set[str]) -> Net:
    """Quantity per group that the state records these entries as having on invoices the
    customer holds (booked, sent, or a person's): what stays billed whatever happens next."""
    return _state_net(world, refs, lambda known: known.status.billed)


def _state_net(world: World, refs: set[str], counts: Callable[[KnownInvoice], bool]) -> Net:
    """Quantity per group the state records these entries as having on the invoices `counts`
    accepts (of those the target holds)."""
    net: Net = defaultdict(Decimal)
    store = world.store()
    try:
        invoiced = store.invoiced(world.target)
    finally:
        store.close()
    for ref in refs:
        for placement in invoiced.placements.get(ref, ()):
            known = invoiced.invoices.get(placement.key)
            if known is None or not known.remote_id or not counts(known):
                continue
            for row in placement.rows:
                if row.article and row.quantity is not None and row.price is not None:
                    group = (
                        placement.key.customer_number,
                        known.currency or "SEK",
                        row.article,
                        row.price,
                    )
                    net[group] += row.quantity
    return dict(net)


def withdrawn_refs(world: World, plan: Plan) -> set[str]:
    """Entries the plan excludes because a person withdrew their invoice."""
    return {
        r.ref
        for r in plan.results
        if r.outcome is Outcome.EXCLUDED and f"was {world.profile.withdrawn}" in r.reason
    }


def oracle_nets(world: World, plan: Plan) -> tuple[Net, Net]:
    """(what the ledger says should be billed, what the fake's live invoices bill), per
    (customer, currency, article, price). What the ledger says is decided here, not taken from
    the connector: an entry the oracle itself finds invoiceable must be billed exactly,
    whatever the connector reports for it. Left out: entries that cannot be invoiced or sit in
    a held month keep what an earlier revision put on live invoices, and entries on an invoice
    a person withdrew keep what invoices the customer holds bill for them (they are not
    invoiced again, on purpose, and an earlier booked invoice stays billed): both taken from
    the state, the one place the oracle trusts it."""
    withdrawn = withdrawn_refs(world, plan)
    stuck = uninvoiceable(world) | {r.ref for r in plan.results if r.reason.startswith("held: ")}
    kept: Net = defaultdict(Decimal)
    for net in (written_net(world, stuck), billed_net(world, withdrawn - stuck)):
        for group, quantity in net.items():
            kept[group] += quantity
    return ledger_net(world, stuck | withdrawn, kept), remote_net(world.driver)


def assert_drafts_equal_plan(world: World, plan: Plan) -> None:
    """Every open draft in the fake holds exactly the planned rows, field by field: text,
    article, quantity, price, unit, and the article's own VAT (never a value inherited from
    another row); text rows carry nothing but their text."""
    driver = world.driver
    drafts = {i["remote_id"]: i for i in driver.invoices() if i["state"] == "open"}
    for invoice in plan.invoices:
        if invoice.remote_id is None or not invoice.rows:
            continue
        stored = drafts.get(invoice.remote_id)
        if stored is None:
            continue  # closed or gone since the plan was made; covered by the money oracle
        if invoice.remote_id in world.edited:
            continue  # a person's now; covered by the money oracle
        assert stored["key"] == invoice.key.text
        assert stored["vat_included"] is False
        rows = stored["rows"]
        assert len(rows) == len(invoice.rows), (invoice.key, rows)
        for number, (theirs, ours) in enumerate(zip(rows, invoice.rows, strict=True)):
            where = (invoice.key.text, ours.description)
            assert theirs["description"] == ours.description, where
            if ours.is_text:
                assert not theirs["article"], where
                assert Decimal(str(theirs["quantity"])) == 0, where
                assert Decimal(str(theirs["price"])) == 0, where
                assert Decimal(str(theirs["vat"])) == 0, where
                continue
            assert theirs["article"] == ours.article, where
            assert Decimal(str(theirs["quantity"])) == ours.quantity, where
            assert Decimal(str(theirs["price"])) == ours.price, where
            if world.profile.row_units:
                assert theirs["unit"] == (ours.unit or ""), where
            assert Decimal(str(theirs["vat"])) == driver.vat(theirs["article"]), where
            if isinstance(driver, FortnoxDriver):  # an account is a row field there too
                raw = driver.fake.invoices[int(invoice.remote_id)]["InvoiceRows"][number]
                assert ours.article is not None
                assert raw["AccountNumber"] == driver.fake.articles[ours.article].account, where


def assert_matches_ledger(world: World, report: SyncReport) -> None:
    """Nothing lost, nothing twice, nothing wrong: after a clean sync, the live invoices in the
    target's fake bill exactly what the ledger says, every open draft holds exactly the
    planned rows, no invoice the customer holds was changed, and every entry has exactly one
    outcome."""
    driver = world.driver
    assert_no_duplicates(driver)
    assert_no_sent_invoice_modified(driver)
    assert report.plan is not None
    # A run that planned only the customers changed since the last one says nothing of the
    # others: the oracle then takes every customer's plan from the state.
    the_plan = report.plan if report.planned_all else world.current_plan()
    # What the ledger says is decided by the oracle, not taken from the connector (oracle_nets).
    withdrawn = withdrawn_refs(world, the_plan)
    # The connector's word that a person withdrew an invoice is checked against the fake: the
    # invoice it names must really be gone there (not merely unlisted, nor closed).
    states: dict[str, set[str]] = defaultdict(set)
    for invoice in driver.invoices():
        states[str(invoice["key"])].add(str(invoice["state"]))
    for r in the_plan.results:
        if r.ref in withdrawn:
            named = r.reason.split("its invoice ", 1)[1].split(" ", 1)[0]
            assert states.get(named, {"gone"}) == {"gone"}, (r.ref, named, states.get(named))
    expected, billed = oracle_nets(world, the_plan)
    assert billed == expected
    assert_drafts_equal_plan(world, the_plan)
    refs = [r.ref for r in the_plan.results]
    assert len(refs) == len(set(refs))
    customers = driver.customers()
    unknown = [k for k in world.pending_plan_changes() if k.split("-")[1] not in customers]
    assert world.pending_plan_changes() == unknown, "a clean sync left work undone"


def entries_of(app: SandboxApp) -> Iterator[dict[str, Any]]:
    for raw in app.ledger.entries():
        if isinstance(raw, dict):
            yield raw
