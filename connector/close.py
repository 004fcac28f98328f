"""Month end: `connector close` books the connector's open drafts of one month, each once, and
with --send sends them the way the accounting system sends invoices (docs/operations.md, Month
end).

It refuses while the audit finds differences between the ledger and the books for the month,
unless forced with a reason (recorded with who and when). Every step is recorded in the state
before and after it is taken (dated, booking, booked, sending, sent), so a close killed at any
point is finished by the next one, never repeated: a booking or sending whose outcome is unknown
is settled by reading the invoice, and where the system cannot show whether an invoice went out
(Visma), it is listed for a person rather than sent a second time.
"""

from __future__ import annotations

import calendar
import contextlib
import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from connector import sync as _sync
from connector import targets
from connector.errors import (
    ConfigError,
    ConnectorError,
    ExitCode,
    OutcomeUnknownError,
    TargetRefusal,
)
from connector.logs import get_logger
from connector.planning import InvoiceKey, InvoiceStatus, invoice_date
from connector.settings import Settings
from connector.state import Closing, InvoiceRecord, StateStore
from connector.targets.base import Delivery, RemoteInvoice, RemoteState, Target

log = get_logger(__name__)

# The audit: (period, customer or None) -> the differences between the ledger and the books for
# that month, in plain words; empty when they agree.
Audit = Callable[[str, str | None], list[str]]
# Asked once, with the invoices about to be closed: True to go on.
Confirm = Callable[["CloseReport"], bool]

BOOK_ATTEMPTS = 2  # a booking whose answer was lost and that did not land is sent once more


def audit_with(settings: Settings) -> Callable[[str, str | None], list[str]]:
    """The month's audit (connector audit) as the list of what stands in the way of closing:
    each difference, duplicate, unprovable invoice and entry not invoiced, in plain words."""

    def audit(period: str, customer: str | None) -> list[str]:
        from connector.audit import run_audit

        report = run_audit(settings, period, customer)
        found = [
            f"customer {line.customer}, article {line.article} at {line.price} "
            f"{line.currency}: {line.invoiced} h invoiced, {line.expected} h expected"
            for line in report.differences
        ]
        found += [
            f"key {key} is on several live invoices ({', '.join(numbers)})"
            for key, numbers in sorted(report.duplicates.items())
        ]
        found += report.problems
        found += [
            f"entry {e.ref} (customer {e.customer}) is not invoiced: {e.reason}"
            for e in report.listed("not_invoiced")
        ]
        return found

    return audit


def failpoint(name: str) -> None:
    # Through the sync module, so the crash tests' monkeypatch reaches close's points too.
    _sync.failpoint(name)


@dataclass(frozen=True)
class CloseRequest:
    period: str
    customer: str | None = None
    invoice_date: date | None = None
    send: bool = False
    # --force --why TEXT: close despite the audit's differences, for this reason.
    force_why: str | None = None


@dataclass
class ClosingLine:
    """One invoice of the close: what it is, the date it gets, and what happened to it."""

    key: InvoiceKey
    remote_id: str
    number: str | None
    currency: str | None
    amount: Decimal | None  # excluding VAT
    invoice_date: date
    due_date: date | None = None
    booked: bool = False
    sent: str | None = None  # a Delivery value, "already", "unknown"
    # "to close" (preview), "booked", "booked and sent", "skipped", "unchanged"
    outcome: str = "to close"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key.text,
            "customer_number": self.key.customer_number,
            "remote_id": self.remote_id,
            "number": self.number,
            "currency": self.currency,
            "amount_excl_vat": None if self.amount is None else str(self.amount),
            "invoice_date": self.invoice_date.isoformat(),
            "due_date": None if self.due_date is None else self.due_date.isoformat(),
            "booked": self.booked,
            "sent": self.sent,
            "outcome": self.outcome,
        }


@dataclass
class CloseReport:
    target: str
    period: str
    customer: str | None
    send: bool
    # The audit's differences when the close was refused for them (nothing was done).
    refused: list[str] = field(default_factory=list)
    forced: dict[str, Any] | None = None
    # False when a person answered no: nothing was done.
    confirmed: bool = True
    invoices: list[ClosingLine] = field(default_factory=list)
    # Invoices a person must send (paper, no address, or the system cannot tell if it went).
    by_hand: dict[str, str] = field(default_factory=dict)
    attention: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def exit_code(self) -> ExitCode:
        if self.refused or self.attention or self.by_hand:
            return ExitCode.ATTENTION
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "period": self.period,
            "customer": self.customer,
            "send": self.send,
            "refused": bool(self.refused),
            "differences": self.refused,
            "forced": self.forced,
            "confirmed": self.confirmed,
            "invoices": [line.to_json() for line in self.invoices],
            "by_hand": [{"key": k, "reason": r} for k, r in sorted(self.by_hand.items())],
            "attention": [{"key": k, "reason": r} for k, r in sorted(self.attention.items())],
            "notes": self.notes,
            "requests": self.requests,
            "exit_code": int(self.exit_code),
        }


def month_end(period: str) -> date:
    year, month = (int(part) for part in period.split("-"))
    return date(year, month, calendar.monthrange(year, month)[1])


def check_request(request: CloseRequest, today: date) -> None:
    """Usage errors, before anything is read: exit 2."""
    last = month_end(request.period)
    if today <= last:
        raise ConfigError(
            f"{request.period} is not over yet (it ends {last}): hours may still be added to it; "
            "close a month after its last day"
        )
    wanted = request.invoice_date
    if wanted is not None and wanted > today:
        raise ConfigError(f"--invoice-date {wanted} is in the future; a booked invoice cannot be")
    if wanted is not None and wanted < last.replace(day=1):
        raise ConfigError(f"--invoice-date {wanted} is before the month {request.period} began")
    if request.force_why is not None and not request.force_why.strip():
        raise ConfigError("--force needs --why with the reason, for the record")


def amount_of(remote: RemoteInvoice | None, record: InvoiceRecord) -> Decimal | None:
    """The invoice's total excluding VAT, from its rows as read (else as written)."""
    if remote is not None and remote.rows is not None:
        total = Decimal(0)
        for row in remote.rows:
            if row.article and row.quantity is not None and row.price is not None:
                total += row.quantity * row.price
        return total.quantize(Decimal("0.01"))
    if record.written is not None:
        amounts = [r.amount for r in record.written.rows if r.amount is not None]
        return sum(amounts, Decimal(0)).quantize(Decimal("0.01"))
    return None


class _Close:
    """One close run against one target, in an order that survives a kill at any point."""

    def __init__(
        self,
        store: StateStore,
        target: Target,
        settings: Settings,
        request: CloseRequest,
        report: CloseReport,
        today: date,
    ) -> None:
        self.store = store
        self.target = target
        self.name = target.profile.name
        self.where = target.profile.display_name
        self.settings = settings
        self.request = request
        self.report = report
        self.today = today
        self._locked: tuple[date | None] | None = None

    # --- which invoices, and their dates --------------------------------------------------------

    def locked_through(self) -> date | None:
        if self._locked is None:
            self._locked = (self.target.locked_through(),)
        return self._locked[0]

    def date_for(self, key: InvoiceKey, closing: Closing | None) -> date:
        """The invoice date: as chosen by an earlier close of it, else --invoice-date, else the
        policy the sync dates drafts by; out of any locked period, as the sync does."""
        if closing is not None and closing.invoice_date is not None:
            return date.fromisoformat(closing.invoice_date)
        locked = self.locked_through()
        wanted = self.request.invoice_date
        if wanted is None:
            chosen, moved = invoice_date(key.period, self.settings.invoice.date, locked, self.today)
        else:
            chosen, moved = wanted, locked is not None and wanted <= locked
            if moved:
                assert locked is not None
                chosen = locked + timedelta(days=1)
        if moved:
            self.report.notes.append(
                f"{key}: dated {chosen} because {self.where} has locked the period through {locked}"
            )
        return chosen

    def candidates(self) -> list[tuple[InvoiceRecord, Closing | None]]:
        """The connector's open drafts of the month (and customer), and invoices an earlier
        close left half-way."""
        period, customer = self.request.period, self.request.customer
        found: list[tuple[InvoiceRecord, Closing | None]] = []
        for record in self.store.invoice_records(self.name):
            key = record.key
            if key.period != period or (customer is not None and key.customer_number != customer):
                continue
            closing = self.store.closing(self.name, key)
            if closing is not None and (closing.booked or closing.booking_since is not None):
                # Booked by a close, or a booking to settle first: finish what is left.
                if self.unfinished(closing):
                    found.append((record, closing))
                continue
            # Not booked yet (or an earlier close stopped before booking it): a draft of ours.
            if record.status is InvoiceStatus.LOCKED and record.remote_id:
                self.person_edited(record)
                continue
            if record.status is not InvoiceStatus.OPEN or not record.remote_id:
                continue
            if record.pending is not None:
                self.report.attention[key.text] = (
                    f"{key} has a write a sync left unfinished: run connector sync first; "
                    "it is not closed"
                )
                continue
            found.append((record, closing))
        return found

    def unfinished(self, closing: Closing) -> bool:
        if not closing.booked or closing.sending_since is not None:
            return True
        return closing.sent is None and (self.request.send or closing.send_wanted)

    def person_edited(self, record: InvoiceRecord) -> None:
        assert record.remote_id is not None
        remote = self.target.get(record.remote_id)
        if remote.state is RemoteState.OPEN:
            self.report.attention[record.key.text] = (
                f"draft {remote.label} ({record.key}) was changed by a person, so the connector "
                f"does not book it: check it and book it in {self.where} by hand"
            )

    def preview(self) -> list[tuple[ClosingLine, InvoiceRecord, Closing | None]]:
        lines = []
        for record, closing in self.candidates():
            assert record.remote_id is not None
            key = record.key
            remote = self.target.get(record.remote_id)
            unbooked = closing is None or not (closing.booked or closing.booking_since is not None)
            if unbooked and remote.state is RemoteState.GONE and not remote.vanished:
                # A person cancelled it since the last sync: record what the accounting
                # system shows, as the sync would.
                self.store.set_status(self.name, key, InvoiceStatus.CANCELLED, record.remote_id)
                self.report.notes.append(
                    f"{key} ({remote.label}) was {self.target.profile.withdrawn} in "
                    f"{self.where} by a person: recorded, not closed; its entries are not "
                    "invoiced again (connector resync --reinvoice-cancelled does it on purpose)"
                )
                continue
            if unbooked:
                problem = self.not_closable(record, remote)
                if problem is not None:
                    self.report.attention[key.text] = problem
                    continue
            line = ClosingLine(
                key=key,
                remote_id=record.remote_id,
                number=remote.number or record.display_number,
                currency=remote.currency,
                amount=amount_of(remote if remote.state is not RemoteState.GONE else None, record),
                invoice_date=self.date_for(key, closing),
                due_date=remote.due_date,
                booked=closing is not None and closing.booked,
                sent=closing.sent if closing is not None else None,
            )
            lines.append((line, record, closing))
        self.still_open()
        return lines

    def still_open(self) -> None:
        """What of the month still needs attention (and is not acknowledged): the month
        closes without it, so the close says so and exits 1."""
        period, customer = self.request.period, self.request.customer
        for stored in self.store.attention_items(self.name):
            item = stored.item
            if stored.ack is not None or item.period != period:
                continue
            if customer is not None and item.customer_number != customer:
                continue
            self.report.attention.setdefault(
                item.ref, f"not closed with the month, still needs attention: {item.reason}"
            )

    def not_closable(self, record: InvoiceRecord, remote: RemoteInvoice) -> str | None:
        key = record.key
        if remote.state is RemoteState.GONE:
            return (
                f"{key} ({remote.label}) is not found in {self.where} now (a person may have "
                f"{self.target.profile.withdrawn} or converted it): check it there; it is not "
                "closed, and a later close looks again"
            )
        if remote.state is RemoteState.OPEN:
            written = record.written
            if written is None or not written.holds(remote.rows or ()):
                return (
                    f"draft {remote.label} ({key}) is not what the connector last wrote (a "
                    "person's change since the last sync): run connector sync first, or book "
                    f"it in {self.where} by hand; it is not closed"
                )
        return None

    # --- the steps ------------------------------------------------------------------------------

    def close_one(self, line: ClosingLine, closing: Closing | None) -> None:
        key = line.key
        self.store.start_closing(self.name, key, line.remote_id, self.request.send)
        closing = self.store.closing(self.name, key)
        assert closing is not None
        if not closing.booked and not self.book(line, closing):
            line.outcome = "skipped"
            return
        line.booked = True
        line.outcome = "booked"
        closing = self.store.closing(self.name, key)
        assert closing is not None
        if closing.sending_since is not None or (
            closing.sent is None and (self.request.send or closing.send_wanted)
        ):
            self.send(line, closing)
        closing = self.store.closing(self.name, key)
        assert closing is not None
        line.sent = closing.sent
        if closing.sent not in (None, Delivery.BY_HAND.value, "unknown", "already"):
            line.outcome = "booked and sent"

    def book(self, line: ClosingLine, closing: Closing) -> bool:
        """Date and book the draft once; True when it is booked (now or before)."""
        key = line.key
        if closing.booking_since is not None:
            # A booking was sent and its outcome never recorded: look before anything else.
            log.info("close.settling_booking", key=key.text)
            settled = self.settle_booking(line)
            if settled is not None:
                return settled
        remote = self.target.get(line.remote_id)
        if remote.state is RemoteState.CLOSED:
            # Booked already: by a person, or by a close whose answer was lost.
            self.booked(line, remote, by="found")
            return True
        if remote.state is RemoteState.GONE:
            self.report.attention[key.text] = (
                f"{key} ({remote.label}) is not found, or {self.target.profile.withdrawn}, in "
                f"{self.where}; it is not closed"
            )
            return False
        if closing.held is not None:
            self.report.attention[key.text] = (
                f"{closing.held}; the connector does not book it: correct it and book it in "
                f"{self.where} by hand (the next close records it booked)"
            )
            return False
        moved = False
        for _ in range(BOOK_ATTEMPTS + 1):
            if not self.set_date(line, remote):
                return False
            self.store.mark_booking(self.name, key)
            failpoint("close_before_book")
            try:
                answer = self.target.book(line.remote_id)
            except OutcomeUnknownError as exc:
                log.warning("close.booking_unknown", key=key.text, detail=str(exc))
                settled = self.settle_booking(line)
                if settled is not None:
                    return settled
                remote = self.target.get(line.remote_id)
                continue  # it did not land: book again
            except TargetRefusal as refusal:
                self.store.clear_booking(self.name, key)
                if not moved and self.target.refuses_date(refusal):
                    self._locked = None  # locked since it was read: read it again
                    locked = self.locked_through()
                    if locked is not None and locked >= line.invoice_date:
                        moved = True
                        line.invoice_date = locked + timedelta(days=1)
                        self.report.notes.append(
                            f"{key}: re-dated {line.invoice_date} because {self.where} has "
                            f"locked the period through {locked}"
                        )
                        remote = self.target.get(line.remote_id)
                        continue
                self.report.attention[key.text] = (
                    f"{self.where} refused to book {key} ({line.number or line.remote_id}): "
                    f"{refusal}"
                )
                return False
            failpoint("close_after_book")
            self.booked(line, answer, by="connector")
            return True
        self.report.attention[key.text] = (
            f"booking {key} had an unknown outcome {BOOK_ATTEMPTS} times; the next close looks "
            "first"
        )
        return False

    def set_date(self, line: ClosingLine, remote: RemoteInvoice) -> bool:
        """Give the draft its invoice date (no due date: the system derives it from the
        customer's terms) and check the answer. False, with the reason, if it is not right."""
        key = line.key
        answer = remote
        if remote.invoice_date != line.invoice_date:
            failpoint("close_before_redate")
            try:
                answer = self.target.redate(line.remote_id, line.invoice_date)
            except OutcomeUnknownError:
                answer = self.target.get(line.remote_id)  # setting a date twice is harmless
            except TargetRefusal as refusal:
                self.report.attention[key.text] = (
                    f"{self.where} refused the invoice date {line.invoice_date} for {key}: "
                    f"{refusal}; it is not closed"
                )
                return False
        problem = self.date_problem(remote, answer, line.invoice_date)
        if problem is not None:
            reason = f"{key} ({answer.label}): {problem}"
            if answer.state is RemoteState.OPEN and answer.invoice_date == line.invoice_date:
                # Dated, but not as it must be: kept, or the next close would see the date
                # right and miss the due date that did not follow it.
                self.store.hold_closing(self.name, key, reason)
            self.report.attention[key.text] = f"{reason}; it is not closed"
            return False
        line.due_date = answer.due_date
        self.store.mark_dated(self.name, key, line.invoice_date.isoformat())
        return True

    @staticmethod
    def date_problem(before: RemoteInvoice, after: RemoteInvoice, wanted: date) -> str | None:
        """The answer must carry the date, and a due date the system derived from the terms:
        not before the invoice date, and as many days after it as before the re-dating (the
        draft's due date came from the customer's terms when it was created)."""
        if after.state is not RemoteState.OPEN:
            return "it was booked or withdrawn while it was being dated"
        if after.invoice_date != wanted:
            return f"the invoice date is {after.invoice_date}, not {wanted}"
        due = after.due_date
        if due is None:
            return "it has no due date: check the customer's terms of payment"
        if due < wanted:
            return f"its due date {due} is before its invoice date {wanted}"
        if (
            before.invoice_date is not None
            and before.due_date is not None
            and before.invoice_date != wanted
            and (due - wanted) != (before.due_date - before.invoice_date)
        ):
            return (
                f"its due date {due} did not follow the new invoice date by the terms of "
                f"payment ({(before.due_date - before.invoice_date).days} days before)"
            )
        return None

    def settle_booking(self, line: ClosingLine) -> bool | None:
        """After a booking whose outcome is unknown: True if it is booked (recorded now), None
        if it is still a draft (book it), False if it cannot be told yet."""
        key = line.key
        now = self.target.get(line.remote_id)
        if now.state is RemoteState.CLOSED:
            self.booked(line, now, by="connector")
            return True
        if now.state is RemoteState.OPEN:
            self.store.clear_booking(self.name, key)
            return None
        # Visma: a converted draft leaves the drafts before the invoice is listed. Booking it
        # again is impossible (the draft is gone); the next close looks again.
        self.report.attention[key.text] = (
            f"booking {key} had an unknown outcome and {self.where} does not show the invoice "
            "yet; the next close looks again (nothing is booked twice)"
        )
        return False

    def booked(self, line: ClosingLine, remote: RemoteInvoice, *, by: str) -> None:
        self.store.record_booked(
            self.name,
            line.key,
            by=by,
            booked_id=remote.booked_id,
            number=remote.number,
            remote_id=line.remote_id,
        )
        line.number = remote.number or line.number
        line.due_date = remote.due_date or line.due_date
        if remote.invoice_date is not None and remote.invoice_date != line.invoice_date:
            if by == "connector":
                self.report.attention[line.key.text] = (
                    f"{line.key} was booked as invoice {remote.label} dated {remote.invoice_date}, "
                    f"not {line.invoice_date}: check it in {self.where}"
                )
            line.invoice_date = remote.invoice_date
        log.info("close.booked", key=line.key.text, number=remote.label, by=by)

    def send(self, line: ClosingLine, closing: Closing) -> None:
        key = line.key
        label = line.number or line.remote_id
        remote = self.target.get(line.remote_id)
        if closing.sending_since is not None:
            # A sending whose outcome was never recorded: the invoice tells, if it can.
            if remote.sent is None:
                self.unknown_send(line, "its sending had an unknown outcome")
                return
            if remote.sent:
                self.store.record_sent(self.name, key, "sent", "")
                return
            self.store.clear_sending(self.name, key)  # it did not go: send it below
        elif remote.sent:
            self.store.record_sent(self.name, key, "already", "sent before this close")
            return
        elif remote.sent is None and not (closing.booked_by == "connector" and closing.send_wanted):
            # The system cannot show whether a person sent it since it was booked.
            self.unknown_send(line, "it was booked without --send")
            return
        self.store.mark_sending(self.name, key)
        failpoint("close_before_send")
        try:
            outcome = self.target.send(line.remote_id)
        except OutcomeUnknownError as exc:
            log.warning("close.sending_unknown", key=key.text, detail=str(exc))
            now = self.target.get(line.remote_id)
            if now.sent is None:
                self.unknown_send(line, "its sending had an unknown outcome")
            elif now.sent:
                self.store.record_sent(self.name, key, "sent", "")
            else:
                self.store.clear_sending(self.name, key)
                self.report.attention[key.text] = (
                    f"sending invoice {label} ({key}) had an unknown outcome and it is not "
                    "marked sent; the next close --send sends it"
                )
            return
        except TargetRefusal as refusal:
            self.store.clear_sending(self.name, key)
            self.report.attention[key.text] = (
                f"{self.where} refused to send invoice {label} ({key}): {refusal}"
            )
            return
        failpoint("close_after_send")
        self.store.record_sent(self.name, key, outcome.how.value, outcome.detail)
        if outcome.how is Delivery.BY_HAND:
            self.report.by_hand[key.text] = f"invoice {label}: to send by hand: {outcome.detail}"
        log.info("close.sent", key=key.text, number=label, how=outcome.how.value)

    def unknown_send(self, line: ClosingLine, why: str) -> None:
        label = line.number or line.remote_id
        self.store.record_sent(self.name, line.key, "unknown", why)
        self.report.by_hand[line.key.text] = (
            f"invoice {label}: {why}, and {self.where} does not show whether an invoice was "
            "sent: check it there and send it by hand if it was not (the connector does not "
            "send it, so it never goes twice)"
        )


def run_close(
    settings: Settings,
    request: CloseRequest,
    *,
    audit: Audit,
    confirm: Confirm,
    target: Target | None = None,
    clock: Callable[[], datetime] | None = None,
    who: str | None = None,
) -> CloseReport:
    """`connector close`: audit, show, confirm, then date, book (and send) each open draft of
    the month once, under the sync's lock."""
    now = (clock or (lambda: datetime.now(UTC)))()
    check_request(request, now.date())
    name = settings.target
    report = CloseReport(
        target=name, period=request.period, customer=request.customer, send=request.send
    )
    if target is None:
        _sync.require_target(settings)
    # The audit runs before the lock: it may read the ledger and the books as a sync does.
    differences = audit(request.period, request.customer)
    if differences and request.force_why is None:
        report.refused = list(differences)
        return report
    if differences:
        report.forced = {
            "who": who or _user(),
            "at": now.isoformat(timespec="seconds"),
            "why": request.force_why,
            "differences": list(differences),
        }
    with contextlib.ExitStack() as resources:
        target = target or _sync.open_target(settings)
        resources.callback(target.close)
        store = StateStore(settings.state_dir)
        resources.callback(store.close)
        resources.enter_context(store.lock())
        _sync.bind_system(store, target.profile.name, record=False)
        _sync.bind_target(store, target, record=False)
        run_id = store.start_run("close", target.profile.name)
        work = _Close(store, target, settings, request, report, now.date())
        try:
            lines = work.preview()
            report.invoices = [line for line, _, _ in lines]
            if lines and not confirm(report):
                report.confirmed = False
                report.requests = target.stats.requests
                store.finish_run(run_id, report.exit_code, report.to_json())
                return report
            if report.forced is not None:
                store.record_override(
                    name,
                    request.period,
                    request.customer,
                    report.forced["who"],
                    report.forced["why"],
                    report.forced["differences"],
                )
            for line, _, closing in lines:
                work.close_one(line, closing)
        except ConnectorError as exc:
            report.requests = target.stats.requests
            store.finish_run(run_id, exc.exit_code, {**report.to_json(), "error": str(exc)})
            raise
        report.requests = target.stats.requests
        store.finish_run(run_id, report.exit_code, report.to_json())
    log.info(
        "close.done",
        period=request.period,
        invoices=len(report.invoices),
        booked=sum(1 for line in report.invoices if line.booked),
        by_hand=len(report.by_hand),
        attention=len(report.attention),
        exit_code=int(report.exit_code),
    )
    return report


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name known to the system
        return "unknown"


def display_name(target: str) -> str:
    return targets.profile(target).display_name


__all__: Sequence[str] = (
    "Audit",
    "CloseReport",
    "CloseRequest",
    "ClosingLine",
    "audit_with",
    "run_close",
)
