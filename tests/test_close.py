"""`connector close`, the month end, against every target's strict fake: each open draft of the
month is dated and booked once, and with --send sent once, whatever is killed or lost on the
way; the audit's differences refuse it unless forced with a reason; after it, a sync treats the
booked invoices as closed and the money oracle still holds."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from connector import logs, targets
from connector.cli import app
from connector.close import CloseReport, CloseRequest, run_close
from connector.errors import ConfigError, ExitCode, RemoteUnavailableError
from connector.mappings import Mappings
from connector.planning import InvoiceKey, InvoiceStatus
from connector.sandbox import fortnox_of
from connector.sandbox.app import Ledger, SandboxApp
from connector.sandbox.fortnox import FortnoxFake
from connector.sandbox.server import SandboxServer
from connector.sandbox.visma import VismaFake
from tests.conftest import connector_env
from tests.harness import (
    NIGHT,
    TARGETS,
    World,
    assert_matches_ledger,
    driver_for,
    entries_of,
    make_world,
)
from tests.test_target_suite import Crash, crash_at

PERIOD = "2026-09"
POINTS = (
    "close_before_redate",
    "close_before_book",
    "close_after_book",
    "close_before_send",
    "close_after_send",
)


# A few customers of the sample ledger, to keep the many runs here quick.
CUSTOMERS = {"1003", "1004", "1005", "1006", "1007", "1008"}


def small_world(tmp_path: Path, mappings: Mappings, target: str) -> World:
    world = make_world(tmp_path, mappings, target=target)
    kept = [e for e in entries_of(world.app) if e.get("customer_number") in CUSTOMERS]
    world.app.ledger = Ledger(kept)
    return world


@pytest.fixture(params=TARGETS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> World:
    return small_world(tmp_path, mappings, request.param)


def agree(period: str, customer: str | None) -> list[str]:
    return []


def close(
    world: World,
    *,
    send: bool = False,
    customer: str | None = None,
    invoice_date: date | None = None,
    audit: Callable[[str, str | None], list[str]] = agree,
    force_why: str | None = None,
    confirm: Callable[[CloseReport], bool] = lambda report: True,
    clock: Callable[[], datetime] = NIGHT,
    period: str = PERIOD,
) -> CloseReport:
    target = targets.spec(world.target).open(world.settings, http=world.client())
    request = CloseRequest(
        period=period,
        customer=customer,
        invoice_date=invoice_date,
        send=send,
        force_why=force_why,
    )
    return run_close(
        world.settings,
        request,
        audit=audit,
        confirm=confirm,
        target=target,
        clock=clock,
        who="tester",
    )


def month(world: World, period: str = PERIOD) -> list[dict[str, Any]]:
    """The connector's invoices of the month in the fake, live ones."""
    return [
        i
        for i in world.driver.invoices()
        if i["state"] != "gone" and str(i["key"]).split("-")[2:4] == period.split("-")
    ]


def deliveries(world: World) -> Counter[str]:
    fake = world.app.extensions[world.target]
    assert isinstance(fake, FortnoxFake | VismaFake)
    return Counter(str(n) for n, _ in fake.deliveries)


def by_hand_customers(world: World) -> set[str]:
    """Customers the fake has no way to send to (Fortnox: PRINT; Visma: no address)."""
    fake = world.app.extensions[world.target]
    if isinstance(fake, FortnoxFake):
        return {n for n, c in fake.customers.items() if c.invoice_delivery == "PRINT"}
    assert isinstance(fake, VismaFake)
    return {c.number for c in fake.customers.values() if not (c.email or c.electronic_address)}


def prepare(world: World) -> None:
    """Sync, and make one customer of the month one the target cannot send to: paper in
    Fortnox, no address in Visma."""
    world.sync()
    customers = sorted({str(i["customer_number"]) for i in month(world)} - {"1004"})
    paper = customers[0]
    fake = world.app.extensions[world.target]
    if isinstance(fake, VismaFake):
        fake.customer_by_number(paper).email = None
    else:
        assert isinstance(fake, FortnoxFake)
        for number, customer in fake.customers.items():
            customer.invoice_delivery = "PRINT" if number == paper else "EMAIL"


# --- the normal course --------------------------------------------------------------------------


def test_close_books_every_open_draft_of_the_month_once(world: World) -> None:
    prepare(world)
    drafts = [i for i in month(world) if i["state"] == "open"]
    assert drafts
    shown: list[CloseReport] = []

    def look(report: CloseReport) -> bool:
        shown.append(report)
        return True

    report = close(world, confirm=look)
    assert shown and {line.key.text for line in shown[0].invoices} == {d["key"] for d in drafts}
    assert all(line.amount is not None and line.amount > 0 for line in shown[0].invoices)
    assert {line.invoice_date for line in shown[0].invoices} == {date(2026, 9, 30)}
    # The month's entries that still need attention (a customer the system lacks, a price
    # missing) are not closed with it: listed, exit 1; everything else is booked.
    assert report.attention and report.exit_code is ExitCode.ATTENTION, report.to_json()
    assert all(r.startswith("not closed with the month") for r in report.attention.values())
    assert all(line.booked and line.outcome == "booked" for line in report.invoices)
    assert all(i["state"] == "closed" for i in month(world))
    assert deliveries(world) == Counter()  # nothing sent without --send
    other = [i for i in world.driver.invoices() if PERIOD not in str(i["key"])]
    assert all(i["state"] == "open" for i in other)  # other months untouched
    # Again: nothing left to close, no write at all.
    writes = world.writes()
    again = close(world)
    assert again.invoices == [] and world.writes() == writes
    # The state knows them booked: a sync puts later ledger changes on supplements.
    report_sync = world.sync()
    assert_matches_ledger(world, report_sync)


def test_close_with_send_sends_each_invoice_once_the_way_the_system_does(world: World) -> None:
    prepare(world)
    report = close(world, send=True)
    paper = by_hand_customers(world)
    keys = {line.key.text: line for line in report.invoices}
    manual = {k for k in keys if k.split("-")[1] in paper}
    assert manual, "the sample month has a customer the target cannot send to"
    assert set(report.by_hand) == manual
    assert report.exit_code is ExitCode.ATTENTION  # a person must send those
    sent = deliveries(world)
    assert all(n == 1 for n in sent.values())
    assert len(sent) == len(keys) - len(manual)
    for key, line in keys.items():
        assert line.sent == ("by hand" if key in manual else line.sent)
        if key not in manual:
            assert line.outcome == "booked and sent"
    again = close(world, send=True)
    assert again.invoices == [] and deliveries(world) == sent


def test_close_then_send_later(world: World) -> None:
    prepare(world)
    close(world)
    report = close(world, send=True)
    if world.target == "fortnox":
        # Fortnox shows Sent on the invoice: a later --send sends what was not sent.
        assert len(deliveries(world)) == len(report.invoices) - len(report.by_hand)
    else:
        # Visma cannot show whether a person sent it since: never sent by the connector.
        assert deliveries(world) == Counter()
        assert set(report.by_hand) == {line.key.text for line in report.invoices}


def test_a_ledger_change_after_close_goes_to_a_supplement(world: World) -> None:
    prepare(world)
    close(world)
    entry = next(
        e
        for e in entries_of(world.app)
        if e["customer_number"] == "1004"
        and e["performed_on"].startswith(PERIOD)
        and e["unit_price"]
        and e["category"] in ("business_advisory", "data_maintenance", "project")
    )
    world.post_ledger([{**entry, "revision": entry["revision"] + 1, "hours": "9"}])
    report = world.sync()
    assert report.created == ["SK-1004-2026-09-2"]
    assert_matches_ledger(world, report)


def test_a_draft_a_person_withdrew_is_never_booked(world: World) -> None:
    """A draft a person cancelled since the last sync may still be open in the state. Close
    reads it: a visible cancellation (Fortnox) is recorded as the sync would; a draft not
    found (Visma deletes) is listed."""
    prepare(world)
    first = month(world)[0]
    world.driver.withdraw(str(first["remote_id"]))
    report = close(world)
    key = str(first["key"])
    assert key not in {line.key.text for line in report.invoices}
    store = world.store()
    try:
        status = store.invoiced(world.target).status(InvoiceKey.parse(key))
    finally:
        store.close()
    if world.profile.deletable:
        # Not recorded before the settle time (a converted draft may not be listed yet).
        assert "is not found in" in report.attention[key]
    else:
        assert status is InvoiceStatus.CANCELLED
        assert any(note.startswith(f"{key} ") and "recorded" in note for note in report.notes)
        assert_matches_ledger(world, world.sync())


def test_a_draft_a_person_booked_is_recorded_not_booked_again(world: World) -> None:
    prepare(world)
    first = month(world)[0]
    world.driver.close(str(first["remote_id"]))
    report = close(world)
    assert all(r.startswith("not closed with the month") for r in report.attention.values())
    assert all(i["state"] == "closed" for i in month(world))


def test_an_explicit_invoice_date_and_the_due_date_from_the_terms(world: World) -> None:
    prepare(world)
    report = close(world, customer="1004", invoice_date=date(2026, 10, 1))
    assert [line.key.text for line in report.invoices] == ["SK-1004-2026-09"]
    line = report.invoices[0]
    assert line.invoice_date == date(2026, 10, 1)
    assert line.due_date == date(2026, 10, 31)  # 30 days, the customer's terms
    others = [i for i in month(world) if i["key"] != "SK-1004-2026-09"]
    assert others and all(i["state"] == "open" for i in others)


def test_a_locked_period_moves_the_date_as_sync_does(world: World) -> None:
    prepare(world)
    assert world.driver.lock_through(date(2026, 9, 30))
    report = close(world, customer="1004")
    line = report.invoices[0]
    assert line.booked and line.invoice_date == date(2026, 10, 1)
    assert any("locked" in n for n in report.notes)


def test_a_period_locked_after_the_preview_is_dated_around(world: World) -> None:
    prepare(world)

    def lock_then_yes(report: CloseReport) -> bool:
        assert world.driver.lock_through(date(2026, 9, 30))
        return True

    report = close(world, customer="1004", confirm=lock_then_yes)
    line = report.invoices[0]
    if not line.booked:
        # Visma's company settings are read once per run: the refusal is listed, and the
        # next close dates around the lock. Never booked in the locked period.
        assert world.target == "visma"
        assert "refused to book" in report.attention["SK-1004-2026-09"]
        report = close(world, customer="1004")
        line = report.invoices[0]
    assert line.booked and line.invoice_date == date(2026, 10, 1), report.to_json()


# --- refusals ---------------------------------------------------------------------------------


def test_differences_found_by_the_audit_refuse_the_close(world: World) -> None:
    prepare(world)
    asked: list[tuple[str, str | None]] = []

    def audit(period: str, customer: str | None) -> list[str]:
        asked.append((period, customer))
        return ["SK-1004-2026-09: the ledger bills 2 h more than the invoice"]

    writes = world.writes()
    report = close(world, audit=audit, customer="1004")
    assert asked == [(PERIOD, "1004")]
    assert report.refused and report.exit_code is ExitCode.ATTENTION
    assert report.to_json()["refused"] is True and report.invoices == []
    assert world.writes() == writes
    forced = close(world, audit=audit, customer="1004", force_why="credited by hand")
    assert forced.forced is not None and forced.forced["why"] == "credited by hand"
    assert forced.forced["who"] == "tester"
    assert forced.invoices[0].booked
    store = world.store()
    try:
        (override,) = store.overrides(world.target)
    finally:
        store.close()
    assert override["who"] == "tester" and override["why"] == "credited by hand"
    assert override["differences"] == audit(PERIOD, "1004")


def test_a_month_not_over_and_bad_dates_are_usage_errors(world: World) -> None:
    prepare(world)
    with pytest.raises(ConfigError, match="not over"):
        close(world, period="2026-10")
    with pytest.raises(ConfigError, match="future"):
        close(world, invoice_date=date(2026, 10, 11))
    with pytest.raises(ConfigError, match="before the month"):
        close(world, invoice_date=date(2026, 8, 31))
    with pytest.raises(ConfigError, match="--why"):
        close(world, force_why=" ")


def test_answering_no_closes_nothing(world: World) -> None:
    prepare(world)
    writes = world.writes()
    report = close(world, confirm=lambda r: False)
    assert not report.confirmed and report.invoices
    assert world.writes() == writes
    assert all(i["state"] == "open" for i in month(world))


def test_a_draft_a_person_changed_since_the_sync_is_left_alone(world: World) -> None:
    prepare(world)
    draft = next(i for i in month(world) if i["key"] == "SK-1004-2026-09")
    world.driver.edit_text(str(draft["remote_id"]), 0, "Ändrad av en person")
    report = close(world)
    assert "SK-1004-2026-09" in report.attention
    still = next(i for i in month(world) if i["key"] == "SK-1004-2026-09")
    assert still["state"] == "open"


def test_close_and_sync_share_the_lock(world: World) -> None:
    prepare(world)
    store = world.store()
    try:
        with store.lock(), pytest.raises(Exception, match="lock"):
            close(world)
    finally:
        store.close()


# --- kills and lost answers -------------------------------------------------------------------


def assert_closed_once(world: World, send: bool) -> None:
    """Every invoice of the month booked, one live invoice per key, and each sent at most once:
    exactly once where the state records it sent, never where it records "by hand", and at most
    once where the target could not tell (recorded "unknown", left to a person)."""
    invoices = month(world)
    assert invoices and all(i["state"] == "closed" for i in invoices)
    keys = Counter(str(i["key"]) for i in invoices)
    assert all(n == 1 for n in keys.values())
    sent = deliveries(world)
    assert all(n == 1 for n in sent.values()), sent
    if not send:
        assert not sent
        return
    store = world.store()
    try:
        closings = store.closings(world.target, PERIOD)
    finally:
        store.close()
    assert {c.key.text for c in closings} == set(keys)
    for closing in closings:
        address = closing.booked_id if world.target == "visma" else closing.remote_id
        assert address is not None
        assert closing.booked and closing.sending_since is None, closing
        if closing.sent in ("e-mail", "e-invoice", "print service", "sent", "already"):
            assert sent[address] == 1, closing
        elif closing.sent == "by hand":
            assert sent[address] == 0, closing
        else:
            assert closing.sent == "unknown" and world.target == "visma", closing


@pytest.mark.parametrize("point", POINTS)
def test_a_close_killed_anywhere_is_finished_by_the_next_once(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    prepare(world)
    with crash_at(monkeypatch, point):
        close(world, send=True, invoice_date=date(2026, 10, 2))
    report = close(world, send=True, invoice_date=date(2026, 10, 2))
    assert_closed_once(world, send=True)
    assert all(line.invoice_date == date(2026, 10, 2) for line in report.invoices)
    paper = by_hand_customers(world)
    expected = sum(1 for i in month(world) if i["customer_number"] not in paper)
    if world.target == "fortnox" or point != "close_after_send":
        # Every invoice to be sent went out exactly once.
        assert len(deliveries(world)) == expected
    else:
        # Visma cannot show whether the one killed after its sending went: it is left to a
        # person, never sent twice.
        assert len(deliveries(world)) == expected
        assert any("does not show whether" in r for r in report.by_hand.values())
    assert_matches_ledger(world, world.sync())


@pytest.mark.parametrize("target", TARGETS)
@hsettings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kills=st.lists(st.sampled_from(POINTS), max_size=3),
    lost=st.sampled_from([0.0, 0.3, 0.6]),
    seed=st.integers(0, 1000),
)
def test_kills_and_lost_answers_never_book_or_send_twice(
    tmp_path_factory: pytest.TempPathFactory,
    mappings: Mappings,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    kills: list[str],
    lost: float,
    seed: int,
) -> None:
    world = small_world(tmp_path_factory.mktemp("close"), mappings, target)
    prepare(world)
    world.faults(lost_action_rate=lost, seed=seed)
    for point in kills:
        with crash_at(monkeypatch, point):
            try:
                close(world, send=True)
            except RemoteUnavailableError:
                raise Crash(point) from None
            raise Crash("not reached")  # every close that was not killed counts as one
    world.faults(lost_action_rate=0)
    for _ in range(3):
        try:
            close(world, send=True)
            break
        except RemoteUnavailableError:
            continue
    assert_closed_once(world, send=True)
    assert_matches_ledger(world, world.sync())


# --- the command line -------------------------------------------------------------------------


def test_json_shape(world: World) -> None:
    prepare(world)
    document = close(world, send=True, customer="1004").to_json()
    assert set(document) == {
        "target", "period", "customer", "send", "refused", "differences", "forced",
        "confirmed", "invoices", "by_hand", "attention", "notes", "requests", "exit_code",
    }  # fmt: skip
    (invoice,) = document["invoices"]
    assert set(invoice) == {
        "key", "customer_number", "remote_id", "number", "currency", "amount_excl_vat",
        "invoice_date", "due_date", "booked", "sent", "outcome",
    }  # fmt: skip
    assert invoice["booked"] is True and invoice["sent"] == "e-mail"
    assert invoice["invoice_date"] == "2026-09-30" and invoice["currency"] == "SEK"
    json.dumps(document)  # plain JSON
    assert datetime(2026, 10, 10, tzinfo=UTC) <= NIGHT()


@pytest.fixture
def cli_env(
    request: pytest.FixtureRequest,
    sandbox_server: SandboxServer,
    sandbox_app: SandboxApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The CLI pointed at the loopback sandbox, for the target in `request.param`, synced."""
    target = str(request.param)
    for name, value in connector_env(sandbox_server.url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONNECTOR_FORTNOX__RATE_LIMIT", "100000/1")
    fortnox_of(sandbox_app).window.limit = 100000
    sandbox_app.ledger = Ledger(
        [e for e in entries_of(sandbox_app) if e.get("customer_number") in CUSTOMERS]
    )
    if target == "visma":
        from connector.sandbox.visma import SEED_REFRESH_TOKEN, connector_section

        monkeypatch.setenv("CONNECTOR_TARGET", "visma")
        for name, value in connector_section(sandbox_server.url).items():
            monkeypatch.setenv(f"CONNECTOR_VISMA__{name.upper()}", value)
        monkeypatch.setenv("CONNECTOR_VISMA__SEARCH_SETTLE_SECONDS", "0")
        imported = CliRunner().invoke(
            app, ["auth", "import", "visma"], input=SEED_REFRESH_TOKEN + "\n"
        )
        assert imported.exit_code == 0, imported.output
    assert CliRunner().invoke(app, ["sync"]).exit_code in (0, 1)
    return target


def cli(*args: str, stdin: str | None = None) -> Any:
    # Each invocation configures logging to its own captured stream: start afresh.
    logs.active_format = None
    structlog.reset_defaults()
    return CliRunner().invoke(app, ["close", *args], input=stdin)


@pytest.mark.parametrize("cli_env", TARGETS, indirect=True)
def test_cli_close_json_exit_codes_and_confirmation(cli_env: str, sandbox_app: SandboxApp) -> None:
    # No terminal and no --yes: a usage error, nothing done.
    refused = cli("--period", PERIOD, "--customer", "1004")
    assert refused.exit_code == 2
    assert "pass --yes" in refused.stderr
    assert cli("--period", "2026-9", "--yes").exit_code == 2
    assert cli("--period", PERIOD, "--invoice-date", "1 Oct", "--yes").exit_code == 2
    assert cli("--period", PERIOD, "--force", "--yes").exit_code == 2  # --force needs --why
    done = cli("--period", PERIOD, "--customer", "1004", "--send", "--yes", "--json")
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["target"] == cli_env and document["refused"] is False
    (invoice,) = document["invoices"]
    assert invoice["key"] == "SK-1004-2026-09" and invoice["booked"] is True
    assert invoice["outcome"] == "booked and sent" and invoice["sent"] == "e-mail"
    # Text, the rest of the month: listed with what was done; a rerun has nothing left.
    # The rest of the month holds entries needing attention: closed without them, exit 1.
    text = cli("--period", PERIOD, "--yes")
    assert text.exit_code == 1, text.output
    assert "invoice(s) booked" in text.stdout and "SK-1004-2026-09" not in text.stdout
    assert "still needs attention" in text.stdout
    again = cli("--period", PERIOD, "--yes")
    assert again.exit_code == 1
    assert "no open draft of the connector to close" in again.stdout


@pytest.mark.parametrize("cli_env", TARGETS, indirect=True)
def test_cli_close_refuses_while_the_audit_finds_a_difference(
    cli_env: str, sandbox_app: SandboxApp
) -> None:
    """The command wires the real audit: a row changed by hand in the accounting system
    stops the close (exit 1, named)."""
    driver = driver_for(sandbox_app, cli_env)
    invoice = next(
        i for i in driver.invoices() if i["state"] == "open" and i["key"] == "SK-1004-2026-09"
    )
    index = next(n for n, row in enumerate(invoice["rows"]) if row["article"])
    driver.edit_quantity(invoice["remote_id"], index, Decimal("99"))
    refused = cli("--period", PERIOD, "--customer", "1004", "--yes", "--json")
    assert refused.exit_code == 1, refused.output
    document = json.loads(refused.stdout)
    assert document["refused"] is True
    assert "customer 1004" in json.dumps(document)
    assert [i for i in driver.invoices() if i["state"] == "closed"] == []
    # Forced past the audit, a draft a person changed is still never booked by the connector.
    forced = cli("--period", PERIOD, "--customer", "1004", "--yes", "--force", "--why", "agreed")
    assert forced.exit_code == 1, forced.output
    assert "a person's change since the last sync" in forced.stdout
    assert [i for i in driver.invoices() if i["state"] == "closed"] == []


@pytest.mark.parametrize("cli_env", TARGETS, indirect=True)
def test_cli_close_on_a_terminal_asks_first(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from connector import cli as cli_module

    monkeypatch.setattr(cli_module, "_stdin_is_terminal", lambda: True)
    result = cli("--period", PERIOD, "--customer", "1004", stdin="n\n")
    assert result.exit_code == 0, result.output
    assert "about to book 1 invoice(s) of 2026-09" in result.stderr
    assert "SK-1004-2026-09" in result.stderr
    assert "nothing was closed" in result.stdout
    yes = CliRunner().invoke(app, ["close", "--period", PERIOD, "--customer", "1004"], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "1 invoice(s) booked" in yes.stdout


def test_a_due_date_that_does_not_follow_the_new_date_stops_the_booking(
    tmp_path: Path, mappings: Mappings
) -> None:
    """The harsher reading of Fortnox's re-dating (the old due date stays): the close sees it
    in the answer and leaves the invoice unbooked for a person, never booked wrongly."""
    world = small_world(tmp_path, mappings, "fortnox")
    prepare(world)
    world.fake.redate_moves_due_date = False
    report = close(world, customer="1004", invoice_date=date(2026, 10, 5))
    assert "did not follow the new invoice date" in report.attention["SK-1004-2026-09"]
    assert not report.invoices[0].booked
    assert all(i["state"] == "open" for i in month(world) if i["customer_number"] == "1004")
    again = close(world, customer="1004", invoice_date=date(2026, 10, 5))
    assert "book it in Fortnox by hand" in again.attention["SK-1004-2026-09"]
    (draft,) = [i for i in month(world) if i["customer_number"] == "1004"]
    world.driver.close(str(draft["remote_id"]))  # a person corrects and books it
    done = close(world, customer="1004")
    assert done.invoices[0].booked and done.exit_code is ExitCode.OK


def test_a_draft_a_person_changes_after_a_killed_close_is_left_alone(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(world)
    with crash_at(monkeypatch, "close_before_redate"):
        close(world, customer="1004", invoice_date=date(2026, 10, 2))
    draft = next(i for i in month(world) if i["key"] == "SK-1004-2026-09")
    world.driver.edit_text(str(draft["remote_id"]), 0, "Ändrad av en person")
    report = close(world, customer="1004", invoice_date=date(2026, 10, 2))
    assert "not what the connector last wrote" in report.attention["SK-1004-2026-09"]
    assert [i["state"] for i in month(world) if i["key"] == "SK-1004-2026-09"] == ["open"]
