"""Test harness for syncs: an in-process sandbox world, and an oracle that checks the fake
Fortnox against the ledger without trusting the connector's own state."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from connector.ledger import InvalidEntry, LedgerClient, parse_entry
from connector.mappings import Mappings
from connector.planning import Outcome, Plan, entry_rows
from connector.planning import plan as plan_
from connector.rebuild import RebuildReport, rebuild
from connector.sandbox import build_app, fortnox_of
from connector.sandbox.app import SandboxApp
from connector.sandbox.fortnox import FortnoxFake
from connector.sandbox.server import transport
from connector.settings import Settings
from connector.state import StateStore
from connector.sync import SyncReport, load_entries, run_sync
from connector.targets import fortnox
from connector.targets.fortnox import client as fortnox_client
from connector.targets.fortnox.settings import FortnoxSettings

BASE = "http://sandbox.test"


def fortnox_settings(settings: Settings) -> FortnoxSettings:
    return fortnox_client.section(settings)


def NIGHT() -> datetime:
    """The night the in-process syncs run, unless a test moves time: invoice dates depend on
    it, and tests must not depend on the day they run."""
    return datetime(2026, 10, 10, 2, 0, tzinfo=UTC)


Net = dict[tuple[str, str, str, Decimal], Decimal]


@dataclass
class World:
    """The sandbox app and a connector configured against it, all in one process."""

    app: SandboxApp
    settings: Settings
    mappings: Mappings
    reports: list[SyncReport] = field(default_factory=list)
    # Invoices a person edited in the fake: theirs, so not compared with the plan row by row
    # (the connector notices an edit only when it next needs to change that draft).
    edited: set[int] = field(default_factory=set)

    @property
    def fake(self) -> FortnoxFake:
        return fortnox_of(self.app)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=transport(self.app), base_url=BASE)

    def sync(
        self, *, dry_run: bool = False, clock: Callable[[], datetime] | None = None
    ) -> SyncReport:
        token = self.settings.ledger.token
        assert self.settings.ledger.url is not None and token is not None
        ledger = LedgerClient(self.settings.ledger.url, token, client=self.client())
        target = fortnox_client.build(self.settings, http=self.client())
        report = run_sync(
            self.settings, ledger=ledger, target=target, dry_run=dry_run, clock=clock or NIGHT
        )
        self.reports.append(report)
        return report

    def rebuild(self) -> RebuildReport:
        token = self.settings.ledger.token
        assert self.settings.ledger.url is not None and token is not None
        ledger = LedgerClient(self.settings.ledger.url, token, client=self.client())
        target = fortnox_client.build(self.settings, http=self.client())
        return rebuild(self.settings, ledger=ledger, target=target, replace_existing=True)

    def post_ledger(self, entries: list[dict[str, Any]]) -> None:
        with self.client() as client:
            client.post("/_sandbox/ledger", json=entries).raise_for_status()

    def faults(self, **values: Any) -> None:
        with self.client() as client:
            client.post("/_sandbox/faults", json=values).raise_for_status()

    def writes(self) -> int:
        """Write requests the fake Fortnox has received."""
        return sum(
            n
            for name, n in self.app.requests.items()
            if name.split(" ")[0] in ("POST", "PUT") and name.split(" ")[1].startswith("/fortnox/3")
        )

    def store(self) -> StateStore:
        return StateStore(self.settings.state_dir)

    def current_plan(self) -> Plan:
        """The plan the connector would make now, from its state directory and the fake's
        article register."""
        store = self.store()
        try:
            invoiced = store.invoiced(fortnox.PROFILE.name)
            entries, rejected = load_entries(store)
            return plan_(
                entries,
                self.mappings,
                fortnox.PROFILE,
                invoiced,
                rejected,
                register_of(self.fake),
            )
        finally:
            store.close()

    def pending_plan_changes(self) -> list[str]:
        return [i.key.text for i in self.current_plan().changes]


def make_world(tmp_path: Path, mappings: Mappings, *, rate_limit: str = "100000/1") -> World:
    from connector.sandbox.demo import sandbox_settings
    from tests.conftest import MAPPINGS_DIR

    app = build_app(rate_limit=rate_limit)
    settings = sandbox_settings(BASE, tmp_path / "state", MAPPINGS_DIR)
    fortnox_settings(settings).rate_limit = rate_limit
    # The fake's search lists new invoices at once unless a test sets a lag.
    fortnox_settings(settings).search_settle_seconds = 0
    return World(app=app, settings=settings, mappings=mappings)


# --- the oracle -------------------------------------------------------------------------------


def register_of(fake: FortnoxFake) -> dict[str, Decimal | None]:
    """The fake's active articles and their sales prices, as the connector reads them."""
    return {n: a.sales_price for n, a in fake.articles.items() if a.active}


def live_by_key(fake: FortnoxFake) -> dict[str, list[dict[str, Any]]]:
    return fake.live_by_key()


def assert_no_duplicates(fake: FortnoxFake) -> None:
    duplicates = {k: len(v) for k, v in live_by_key(fake).items() if len(v) > 1}
    assert not duplicates, f"duplicate live invoices: {duplicates}"


def assert_no_sent_invoice_modified(fake: FortnoxFake) -> None:
    assert not fake.modified_while_sent, (
        f"invoices changed after they were sent: {fake.modified_while_sent}"
    )


def remote_net(fake: FortnoxFake) -> Net:
    """Quantity per (customer, currency, article, price) over every live invoice."""
    net: Net = defaultdict(Decimal)
    for invoice in fake.invoices.values():
        if invoice["Cancelled"]:
            continue
        assert invoice["VATIncluded"] is False, invoice["DocumentNumber"]
        for row in invoice["InvoiceRows"]:
            if not row["ArticleNumber"]:
                continue
            group = (
                invoice["CustomerNumber"],
                invoice["Currency"],
                row["ArticleNumber"],
                Decimal(str(row["Price"])),
            )
            net[group] += Decimal(row["DeliveredQuantity"])
    return {g: q for g, q in net.items() if q != 0}


def ledger_net(
    app: SandboxApp, mappings: Mappings, skip_refs: set[str], kept: Net | None = None
) -> Net:
    """What the ledger's current revisions should have billed, per the same groups, with the
    prices the connector must have resolved (entry, mapping, article register). `kept` adds
    what entries needing attention still bill from an earlier revision."""
    net: Net = defaultdict(Decimal)
    for group, quantity in (kept or {}).items():
        net[group] += quantity
    fake = fortnox_of(app)
    register = register_of(fake)
    for raw in app.ledger.entries():
        try:
            entry = parse_entry(raw)
        except InvalidEntry:
            continue
        if entry.id in skip_refs or entry.customer_number not in fake.customers:
            continue
        rows = entry_rows(entry, mappings, fortnox.PROFILE, register)
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
    register = register_of(world.fake)
    found = set()
    for raw in world.app.ledger.entries():
        try:
            entry = parse_entry(raw)
        except InvalidEntry:
            continue
        if not isinstance(entry_rows(entry, world.mappings, fortnox.PROFILE, register), tuple):
            found.add(entry.id)
    return found


def written_net(world: World, refs: set[str]) -> Net:
    """Quantity per group that the state records these entries as having on live invoices."""
    net: Net = defaultdict(Decimal)
    store = world.store()
    try:
        invoiced = store.invoiced(fortnox.PROFILE.name)
    finally:
        store.close()
    for ref in refs:
        for placement in invoiced.placements.get(ref, ()):
            known = invoiced.invoices.get(placement.key)
            if known is None or known.status.value == "cancelled" or not known.remote_id:
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


def assert_drafts_equal_plan(world: World, plan: Plan) -> None:
    """Every open draft in the fake holds exactly the planned rows, field by field: text,
    article, quantity, price, unit, and the article's own VAT and account (never a value
    inherited from another row); text rows carry nothing but their text."""
    fake = world.fake
    for invoice in plan.invoices:
        if invoice.remote_id is None or not invoice.rows:
            continue
        stored = fake.invoices[int(invoice.remote_id)]
        if stored["Booked"] or stored["Cancelled"] or stored["Sent"]:
            continue  # closed since the plan was made; covered by the money oracle
        if int(invoice.remote_id) in world.edited:
            continue  # a person's now; covered by the money oracle
        assert stored["ExternalInvoiceReference1"] == invoice.key.text
        assert stored["VATIncluded"] is False
        rows = stored["InvoiceRows"]
        assert len(rows) == len(invoice.rows), (invoice.key, rows)
        for theirs, ours in zip(rows, invoice.rows, strict=True):
            where = (invoice.key.text, ours.description)
            assert theirs["Description"] == ours.description, where
            if ours.is_text:
                assert theirs["ArticleNumber"] == "", where
                assert Decimal(theirs["DeliveredQuantity"]) == 0, where
                assert Decimal(str(theirs["Price"])) == 0, where
                assert Decimal(str(theirs["VAT"])) == 0, where
                continue
            article = fake.articles[theirs["ArticleNumber"]]
            assert theirs["ArticleNumber"] == ours.article, where
            assert Decimal(theirs["DeliveredQuantity"]) == ours.quantity, where
            assert Decimal(str(theirs["Price"])) == ours.price, where
            assert theirs["Unit"] == (ours.unit or ""), where
            assert Decimal(str(theirs["VAT"])) == article.vat, where
            assert theirs["AccountNumber"] == article.account, where


def assert_matches_ledger(world: World, report: SyncReport) -> None:
    """Nothing lost, nothing twice, nothing wrong: after a clean sync, the live invoices in the
    fake Fortnox bill exactly what the ledger says, every open draft holds exactly the planned
    rows, no invoice the customer holds was changed, and every entry has exactly one outcome."""
    assert_no_duplicates(world.fake)
    assert_no_sent_invoice_modified(world.fake)
    assert report.plan is not None
    # What the ledger says is decided here, not taken from the connector: an entry the oracle
    # itself finds invoiceable must be billed exactly, whatever the connector reports for it.
    # Left out: entries on an invoice a person cancelled (not invoiced again, on purpose), and
    # entries that cannot be invoiced or sit in a held month: those keep what an earlier
    # revision put on invoices, taken from the state (the one place the oracle trusts it).
    cancelled = {
        r.ref
        for r in report.plan.results
        if r.outcome is Outcome.EXCLUDED and "was cancelled" in r.reason
    }
    stuck = uninvoiceable(world) | {
        r.ref for r in report.plan.results if r.reason.startswith("held: ")
    }
    kept = written_net(world, stuck)
    assert remote_net(world.fake) == ledger_net(world.app, world.mappings, stuck | cancelled, kept)
    assert_drafts_equal_plan(world, report.plan)
    refs = [r.ref for r in report.plan.results]
    assert len(refs) == len(set(refs))
    unknown = [
        k for k in world.pending_plan_changes() if k.split("-")[1] not in world.fake.customers
    ]
    assert world.pending_plan_changes() == unknown, "a clean sync left work undone"


def entries_of(app: SandboxApp) -> Iterator[dict[str, Any]]:
    for raw in app.ledger.entries():
        if isinstance(raw, dict):
            yield raw
