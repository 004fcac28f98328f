"""Alerts: a short message to a webhook and/or by e-mail when a sync needs a person.

After every `connector sync` (not a dry run) `after_sync` looks at how it ended:

- exit 1: the entries and invoices needing attention that this channel was not told of yet are
  reported, once each; the state store remembers which (ref, reason) were (table `notified`).
  One that is resolved and comes back later is new again.
- exit 2, 4, 5 or 70 (settings or mapping files, unreachable, re-authorisation, a bug): reported
  on every run they happen, except that the same failure (exit code and message) is reported to
  a channel at most once a UTC day, so an hourly schedule does not page every hour. Nightly runs
  fall on different days, so each failed night is reported.
- exit 0 and 3 (another run holds the lock): nothing.

Sending never changes the run's exit code: a dead webhook, a refused connection, a 500, even a
bug here is logged (`notify.failed`, never with the webhook address or a password) and the run
ends as it would have. Each channel has a short timeout. What a channel failed to send is not
recorded as sent, so the next run tries again.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from connector import logs, targets
from connector.errors import ConnectorError, ExitCode

if TYPE_CHECKING:
    from connector.settings import NotifySettings, Settings
    from connector.state import StateStore
    from connector.sync import SyncReport

log = logs.get_logger("connector.notify")

WEBHOOK = "webhook"
EMAIL = "email"
ATTENTION = "attention"
FAILURE = "failure"
# Exit codes reported as failures. 3 (locked) is not: another run is doing the work.
FAILURES = {ExitCode.CONFIG, ExitCode.UNREACHABLE, ExitCode.REAUTH, ExitCode.BUG}
# New attention items listed one by one in a message; the rest are counted.
LISTED = 5
REASON_CHARS = 120

_MEANING = {
    ExitCode.ATTENTION: "done, but entries or invoices need attention",
    ExitCode.CONFIG: "a settings, mapping or state problem stopped it; nothing was sent",
    ExitCode.UNREACHABLE: "the ledger or the accounting system was unreachable",
    ExitCode.REAUTH: "the accounting system needs re-authorisation by a person",
    ExitCode.BUG: "an unexpected error (a bug in the connector)",
}


@dataclass(frozen=True)
class Alert:
    """One message, the same for every channel. `items` are the attention items it reports
    ((ref, reason)); for a failure, one (exit code, message) pair."""

    kind: str
    exit_code: ExitCode
    subject: str
    text: str
    items: tuple[tuple[str, str], ...]


@dataclass
class RunOutcome:
    """How a sync ended, as `after_sync` needs it."""

    exit_code: ExitCode
    error: str | None = None
    # Every item needing attention after a finished run: (ref, reason).
    attention: list[tuple[str, str]] = field(default_factory=list)


def outcome_of(report: SyncReport | None, error: BaseException | None) -> RunOutcome | None:
    """The run's exit code and what it found; None for an outcome that is never reported (an
    interruption)."""
    if error is None:
        if report is None:
            return None
        items = sorted(report.invoice_attention.items())
        items += [(r.ref, r.reason) for r in report.entry_attention()]
        return RunOutcome(report.exit_code, attention=items)
    if isinstance(error, ConnectorError):
        return RunOutcome(error.exit_code, error=str(error))
    if isinstance(error, Exception):
        kind = type(error).__qualname__
        return RunOutcome(ExitCode.BUG, error=f"{kind}: {error}")
    return None  # KeyboardInterrupt, SystemExit: a person stopped it


class SyncWatch:
    """Around the sync command's work: `done(report)` when it finished, and on leaving, the
    alert for however it ended (an exception goes on unchanged)."""

    def __init__(self, settings: Settings, *, dry_run: bool = False) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.report: SyncReport | None = None

    def done(self, report: SyncReport) -> None:
        self.report = report

    def __enter__(self) -> SyncWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A dry run is a person looking at a terminal: they see the outcome themselves.
        if not self.dry_run:
            after_sync(self.settings, self.report, exc)


def watch_sync(settings: Settings, *, dry_run: bool = False) -> SyncWatch:
    return SyncWatch(settings, dry_run=dry_run)


def after_sync(
    settings: Settings,
    report: SyncReport | None,
    error: BaseException | None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> None:
    """Send the alerts a sync's end calls for. Never raises: alerts must not change how the
    run ends."""
    config = settings.notify
    if config.webhook_url is None and not config.recipients():
        return
    try:
        outcome = outcome_of(report, error)
        if outcome is not None:
            _alert(settings, outcome, (clock or (lambda: datetime.now(UTC)))())
    except Exception as exc:  # a bug here must not turn the run's exit code into 70
        log.error("notify.failed", channel=None, error_type=type(exc).__name__, error=str(exc))


def _alert(settings: Settings, outcome: RunOutcome, now: datetime) -> None:
    reported = outcome.exit_code is ExitCode.ATTENTION or outcome.exit_code in FAILURES
    if not reported and outcome.exit_code is not ExitCode.OK:
        return
    with _store(settings) as store:
        if store is not None and outcome.error is None:
            # A finished run left the current attention list: items resolved are forgotten,
            # so that one coming back later is reported again.
            store.forget_resolved_notices(settings.target)
        if not reported:
            return
        waiting = None if store is None else len(store.attention(settings.target))
        for channel, send in _channels(settings.notify):
            alert = _compose(settings, outcome, channel, store, now, waiting)
            if alert is None:
                continue
            try:
                send(alert)
            except Exception as exc:  # every failure to send is only logged
                _log_failure(channel, exc)
                continue
            log.info(
                "notify.sent",
                channel=channel,
                kind=alert.kind,
                exit_code=int(alert.exit_code),
                items=len(alert.items),
            )
            if store is not None:
                store.record_notified(
                    channel,
                    settings.target,
                    alert.kind,
                    alert.items,
                    _stamp(now),
                    replace=alert.kind == FAILURE,
                )


def _stamp(now: datetime) -> str:
    """UTC, so that "the same day" is one day wherever the job runs."""
    return now.astimezone(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _store(settings: Settings) -> Iterator[StateStore | None]:
    """The state store, to remember what was sent; None when it cannot be opened (an alert
    is still sent then, without memory: better twice than never)."""
    from connector.state import StateStore

    try:
        store = StateStore(settings.state_dir)
    except Exception as exc:  # unusable: send all the same
        log.warning("notify.no_state", error_type=type(exc).__name__, error=str(exc))
        yield None
        return
    try:
        yield store
    finally:
        store.close()


def _channels(config: NotifySettings) -> list[tuple[str, Callable[[Alert], None]]]:
    channels: list[tuple[str, Callable[[Alert], None]]] = []
    if config.webhook_url is not None:
        channels.append((WEBHOOK, lambda alert: send_webhook(config, alert)))
    if config.recipients():
        channels.append((EMAIL, lambda alert: send_email(config, alert)))
    return channels


# --- the message ---------------------------------------------------------------------------


def _where(settings: Settings) -> str:
    system = targets.spec(settings.target).profile.display_name
    return f"connector sync on {socket.gethostname()} ({system})"


def next_step(settings: Settings, code: ExitCode) -> str:
    """The command an operator runs next, for each exit code reported."""
    name = settings.target
    system = targets.spec(name).profile.display_name
    if code is ExitCode.ATTENTION:
        return "connector attention (the list, with what to do for each)"
    if code is ExitCode.REAUTH:
        spec = targets.spec(name)
        section = spec.section(settings)
        if spec.oauth.service_account_params is not None and getattr(section, "tenant_id", None):
            return (
                f"connector auth login {name} --service-account (a system administrator "
                "approves the integration again)"
            )
        return f"connector auth login {name}"
    if code is ExitCode.UNREACHABLE:
        return (
            f"nothing if it passes: the next run goes on where this one stopped; if it keeps "
            f"failing, check that the ledger and {system} can be reached, then connector sync"
        )
    if code is ExitCode.CONFIG:
        return "fix what the message names, then connector sync --dry-run"
    return (
        "report the bug with the log's command.crashed line (it holds the traceback); "
        "pending work is kept and the next run checks the accounting system first"
    )


def _short(text: str, limit: int = REASON_CHARS) -> str:
    text = " ".join(logs.redactor.scrub(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compose(
    settings: Settings,
    outcome: RunOutcome,
    channel: str,
    store: StateStore | None,
    now: datetime,
    waiting: int | None,
) -> Alert | None:
    """This channel's message, or None when it was already told."""
    code = outcome.exit_code
    where = _where(settings)
    if code is ExitCode.ATTENTION:
        told = {} if store is None else store.notified(channel, settings.target, ATTENTION)
        new = [item for item in outcome.attention if item not in told]
        if not new:
            return None
        lines = [
            f"{where}: {len(new)} new item(s) need attention, {len(outcome.attention)} in all "
            "(exit 1); the rest went through."
        ]
        lines += [f"- {ref}: {_short(reason)}" for ref, reason in new[:LISTED]]
        if len(new) > LISTED:
            lines.append(f"- and {len(new) - LISTED} more")
        lines.append(f"Next: {next_step(settings, code)}")
        subject = f"{where}: {len(new)} new item(s) need attention"
        return Alert(ATTENTION, code, subject, "\n".join(lines), tuple(new))
    message = _short(outcome.error or "", 400)
    item = (str(int(code)), message)
    if store is not None:
        told = store.notified(channel, settings.target, FAILURE)
        when = told.get(item)
        if when is not None and when[:10] == _stamp(now)[:10]:
            log.info("notify.repeat_skipped", channel=channel, exit_code=int(code), since=when)
            return None
    lines = [f"{where} failed (exit {int(code)}: {_MEANING[code]}): {message}"]
    if waiting:
        lines.append(f"{waiting} item(s) still need attention from earlier runs.")
    lines.append(f"Next: {next_step(settings, code)}")
    subject = f"{where} failed: {_MEANING[code]} (exit {int(code)})"
    return Alert(FAILURE, code, subject, "\n".join(lines), (item,))


# --- the channels ----------------------------------------------------------------------------


class SendError(Exception):
    """A channel answered, but not with success."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions; these three must be escaped in "text".
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def send_webhook(config: NotifySettings, alert: Alert) -> None:
    assert config.webhook_url is not None
    with httpx.Client(timeout=config.timeout_seconds, follow_redirects=False) as http:
        answer = http.post(
            config.webhook_url.get_secret_value(), json={"text": _slack_escape(alert.text)}
        )
    if not answer.is_success:
        # The status only: an answer's body may quote the address, and so its token.
        raise SendError(f"the webhook answered HTTP {answer.status_code}", answer.status_code)


def send_email(config: NotifySettings, alert: Alert) -> None:
    assert config.smtp_host is not None
    assert config.email_from is not None
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = config.email_from
    message["To"] = ", ".join(config.recipients())
    message.set_content(alert.text + "\n")
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_seconds) as smtp:
        if config.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.smtp_username:
            password = config.smtp_password
            smtp.login(config.smtp_username, password.get_secret_value() if password else "")
        smtp.send_message(message)


def _log_failure(channel: str, exc: BaseException) -> None:
    details: dict[str, Any] = {"channel": channel, "error_type": type(exc).__name__}
    if isinstance(exc, SendError) and exc.status is not None:
        details["status"] = exc.status
    # The redactor removes every known secret (the webhook address, the SMTP password) by
    # value; httpx's own messages do not quote the address.
    details["error"] = str(exc)
    log.warning("notify.failed", **details)
