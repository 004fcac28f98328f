"""Alerts after a sync (connector/notify.py): to a webhook receiver and an SMTP server, both
started here on loopback, for both accounting systems. A new attention item is reported once;
a failure each run, an unchanged one at most once a day; a failure to notify never changes the
run's exit code and never puts the webhook address or a password in the logs."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr
from typer.testing import CliRunner

from connector import logs, notify
from connector.cli import app
from connector.errors import LedgerUnavailableError, ReauthRequiredError
from connector.mappings import Mappings
from connector.sandbox import build_app
from connector.sandbox.app import SandboxApp
from connector.sandbox.server import SandboxServer
from connector.settings import NotifySettings, Settings, load_settings, unknown_variables
from connector.state import StateStore
from tests.conftest import REPO, connector_env
from tests.harness import TARGETS, World, make_world

# What Slack's addresses look like: the path is the secret.
HOOK_TOKEN = "T0SANDBOX/B0SANDBOX/xoxsecretHookToken42"
SMTP_USER = "connector"
SMTP_PASSWORD = "smtp-Pa55word-never-logged"
DAY = datetime(2026, 10, 10, 2, 15, tzinfo=UTC)


# --- a webhook receiver and an SMTP server on loopback -------------------------------------


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps what is posted to it and answers `status`."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(json.loads(body))
                receiver.paths.append(self.path)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/{HOOK_TOKEN}"

    @property
    def texts(self) -> list[str]:
        return [str(p["text"]) for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


class Mailbox:
    """aiosmtpd's handler: keeps every message delivered."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append((envelope, message_from_bytes(content)))
        return "250 Message accepted for delivery"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535


class _LoopbackController(Controller):
    """aiosmtpd on a free port: the port the system chose is read back before the
    controller's first connection to it."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = _LoopbackController(
        box,
        hostname="127.0.0.1",
        port=0,
        authenticator=_authenticate,
        auth_require_tls=False,  # loopback in a test; production uses STARTTLS (the default)
    )
    controller.start()
    yield box, controller.port
    controller.stop()


def _free_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections (the kernel does, from the backlog) but never answers: a hung
    webhook."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/services/{HOOK_TOKEN}"


def email_settings(port: int, password: str = SMTP_PASSWORD) -> dict[str, Any]:
    return {
        "email_to": "ekonomi@example.se, drift@example.se",
        "email_from": "connector@example.se",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_username": SMTP_USER,
        "smtp_password": SecretStr(password),
        "smtp_starttls": False,
    }


@pytest.fixture
def log_stream() -> io.StringIO:
    return io.StringIO()


def configure_logs(stream: io.StringIO, settings: Settings) -> None:
    logs.configure("json", stream=stream, level="debug", secrets=settings.secrets())


def events(stream: io.StringIO | str) -> list[dict[str, Any]]:
    text = stream if isinstance(stream, str) else stream.getvalue()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- settings -------------------------------------------------------------------------------


def test_the_notify_settings_are_read_and_their_secrets_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"https://hooks.example.test/services/{HOOK_TOKEN}"
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", url)
    monkeypatch.setenv("CONNECTOR_NOTIFY__EMAIL_TO", "a@example.se,b@example.se")
    monkeypatch.setenv("CONNECTOR_NOTIFY__EMAIL_FROM", "connector@example.se")
    monkeypatch.setenv("CONNECTOR_NOTIFY__SMTP_HOST", "smtp.example.se")
    monkeypatch.setenv("CONNECTOR_NOTIFY__SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("CONNECTOR_NOTIFY__SMTP_STARTTLS", "false")
    settings = load_settings()
    assert settings.notify.recipients() == ["a@example.se", "b@example.se"]
    assert settings.notify.smtp_port == 587 and settings.notify.smtp_starttls is False
    assert url in settings.secrets() and SMTP_PASSWORD in settings.secrets()
    assert f"/services/{HOOK_TOKEN}" in settings.secrets()  # the token, however quoted
    logs.configure("json", stream=(stream := io.StringIO()), secrets=settings.secrets())
    logs.get_logger("test").warning(
        "quoted", error=f"POST https://HOOKS.example.test/services/{HOOK_TOKEN} failed"
    )
    assert HOOK_TOKEN not in stream.getvalue() and "[redacted]" in stream.getvalue()
    assert url not in repr(settings)
    assert unknown_variables() == []  # every CONNECTOR_NOTIFY__* name above is known


def test_incomplete_email_settings_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_NOTIFY__EMAIL_TO", "ekonomi@example.se")
    with pytest.raises(Exception, match="CONNECTOR_NOTIFY__SMTP_HOST and CONNECTOR_NOTIFY__EMAIL"):
        load_settings()


def test_a_bad_webhook_address_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", f"hooks.example.test/{HOOK_TOKEN}")
    with pytest.raises(Exception, match="CONNECTOR_NOTIFY__WEBHOOK_URL: must start") as raised:
        load_settings()
    assert HOOK_TOKEN not in str(raised.value)


# --- after a sync: the once-only memory, per target ------------------------------------------


@pytest.fixture(params=TARGETS)
def world(request: pytest.FixtureRequest, tmp_path: Path, mappings: Mappings) -> World:
    return make_world(tmp_path, mappings, target=request.param)


def test_new_attention_is_reported_once_to_both_channels(
    world: World,
    webhook: Webhook,
    mailbox: tuple[Mailbox, int],
    log_stream: io.StringIO,
) -> None:
    box, port = mailbox
    world.settings.notify = NotifySettings(
        webhook_url=SecretStr(webhook.url), **email_settings(port)
    )
    configure_logs(log_stream, world.settings)
    report = world.sync()
    assert int(report.exit_code) == 1
    waiting = len(report.invoice_attention) + len(report.entry_attention())
    notify.after_sync(world.settings, report, None, clock=lambda: DAY)

    assert len(webhook.posts) == 1 and webhook.paths == [f"/services/{HOOK_TOKEN}"]
    text = webhook.texts[0]
    assert f"{waiting} new item(s) need attention, {waiting} in all (exit 1)" in text
    assert f"({world.profile.display_name})" in text
    assert "SK-1042-2026-08: customer 1042 does not exist in" in text
    assert f"- and {waiting - notify.LISTED} more" in text
    assert text.endswith("Next: connector attention (the list, with what to do for each)")
    assert len(box.messages) == 1
    envelope, mail = box.messages[0]
    assert envelope.rcpt_tos == ["ekonomi@example.se", "drift@example.se"]
    assert mail["From"] == "connector@example.se"
    assert f"{waiting} new item(s) need attention" in str(mail["Subject"])
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert body.decode().splitlines() == text.splitlines()  # the same message on both channels
    sent = [e for e in events(log_stream) if e["event"] == "notify.sent"]
    assert {e["channel"] for e in sent} == {"webhook", "email"}

    # The next nights: the same items, nothing new, nothing sent.
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY + timedelta(days=1))
    assert len(webhook.posts) == 1 and len(box.messages) == 1

    # A new item: only it is reported.
    entry = {
        "id": "E990001",
        "revision": 1,
        "kind": "debit",
        "status": "active",
        "customer_number": "1003",
        "category": "telepathy",
        "hours": "1",
        "prepaid_hours": "0",
        "unit_price": None,
        "currency": "SEK",
        "performed_on": "2026-10-16",
        "description": "Tankeläsning",
        "reference": None,
        "changed_at": "2026-10-16T17:00:00Z",
    }
    world.post_ledger([entry])
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY + timedelta(days=2))
    assert len(webhook.posts) == 2 and len(box.messages) == 2
    second = webhook.texts[1]
    assert f"1 new item(s) need attention, {waiting + 1} in all" in second
    assert "- E990001: unknown category 'telepathy'" in second
    assert "SK-1042" not in second

    # Resolved (voided in the ledger), then back: reported again.
    world.post_ledger([{**entry, "revision": 2, "status": "void"}])
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY + timedelta(days=3))
    assert len(webhook.posts) == 2
    world.post_ledger([{**entry, "revision": 3}])
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY + timedelta(days=4))
    assert len(webhook.posts) == 3 and "- E990001: unknown category" in webhook.texts[2]


def test_a_failure_is_reported_each_day_and_an_unchanged_one_once_a_day(
    world: World, webhook: Webhook
) -> None:
    world.settings.notify = NotifySettings(webhook_url=SecretStr(webhook.url))
    name = world.target
    refused = ReauthRequiredError(
        f"the refresh token is no longer valid; run: connector auth {name}"
    )

    notify.after_sync(world.settings, None, refused, clock=lambda: DAY)
    assert len(webhook.posts) == 1
    text = webhook.texts[0]
    assert "failed (exit 5: the accounting system needs re-authorisation by a person)" in text
    assert "the refresh token is no longer valid" in text
    login = (
        "connector auth login fortnox --service-account"
        if name == "fortnox"
        else ("connector auth login visma")
    )
    assert f"Next: {login}" in text

    notify.after_sync(world.settings, None, refused, clock=lambda: DAY + timedelta(hours=1))
    assert len(webhook.posts) == 1, "the same failure, the same day: not again"
    unreachable = LedgerUnavailableError("ledger unreachable after 5 attempts")
    notify.after_sync(world.settings, None, unreachable, clock=lambda: DAY + timedelta(hours=2))
    assert len(webhook.posts) == 2, "another failure the same day is reported"
    assert (
        "failed (exit 4: the ledger or the accounting system was unreachable)" in (webhook.texts[1])
    )
    notify.after_sync(world.settings, None, unreachable, clock=lambda: DAY + timedelta(days=1))
    assert len(webhook.posts) == 3, "the next night it is reported again"


def test_a_crash_is_reported_with_its_error(world: World, webhook: Webhook) -> None:
    world.settings.notify = NotifySettings(webhook_url=SecretStr(webhook.url))
    notify.after_sync(world.settings, None, RuntimeError("boom <at> row 3"), clock=lambda: DAY)
    (text,) = webhook.texts
    assert "failed (exit 70: an unexpected error (a bug in the connector)): RuntimeError:" in text
    assert "boom &lt;at&gt; row 3" in text  # Slack's escaping of < and >
    assert "Next: report the bug with the log's command.crashed line" in text


def test_nothing_is_sent_for_exit_0_3_or_an_interruption(world: World, webhook: Webhook) -> None:
    from connector.errors import LockHeldError
    from connector.sync import SyncReport

    world.settings.notify = NotifySettings(webhook_url=SecretStr(webhook.url))
    notify.after_sync(world.settings, SyncReport(dry_run=False), None)
    notify.after_sync(world.settings, None, LockHeldError("another run holds the lock"))
    notify.after_sync(world.settings, None, KeyboardInterrupt())
    assert webhook.posts == []


def test_what_a_channel_failed_to_send_is_sent_by_the_next_run(
    world: World, webhook: Webhook, log_stream: io.StringIO
) -> None:
    world.settings.notify = NotifySettings(webhook_url=SecretStr(webhook.url))
    configure_logs(log_stream, world.settings)
    webhook.status = 500
    report = world.sync()
    notify.after_sync(world.settings, report, None, clock=lambda: DAY)
    (failed,) = [e for e in events(log_stream) if e["event"] == "notify.failed"]
    assert failed["channel"] == "webhook" and failed["status"] == 500
    assert HOOK_TOKEN not in log_stream.getvalue()
    webhook.status = 200
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY + timedelta(days=1))
    assert len(webhook.posts) == 2 and "new item(s) need attention" in webhook.texts[1]
    store = StateStore(world.settings.state_dir)
    try:
        assert len(store.notified("webhook", world.target, "attention")) == len(
            store.attention(world.target)
        )
    finally:
        store.close()


def test_a_wrong_smtp_password_is_logged_without_it(
    world: World, mailbox: tuple[Mailbox, int], log_stream: io.StringIO
) -> None:
    box, port = mailbox
    world.settings.notify = NotifySettings(
        **email_settings(port, password="wrong-" + SMTP_PASSWORD)
    )
    configure_logs(log_stream, world.settings)
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY)
    assert box.messages == []
    (failed,) = [e for e in events(log_stream) if e["event"] == "notify.failed"]
    assert failed["channel"] == "email" and failed["error_type"] == "SMTPAuthenticationError"
    assert SMTP_PASSWORD not in log_stream.getvalue()


def test_starttls_is_required_by_default(
    world: World, mailbox: tuple[Mailbox, int], log_stream: io.StringIO
) -> None:
    """With STARTTLS on (the default) a server without it gets neither password nor mail."""
    box, port = mailbox
    world.settings.notify = NotifySettings(**{**email_settings(port), "smtp_starttls": True})
    configure_logs(log_stream, world.settings)
    notify.after_sync(world.settings, world.sync(), None, clock=lambda: DAY)
    assert box.messages == []
    (failed,) = [e for e in events(log_stream) if e["event"] == "notify.failed"]
    assert failed["error_type"] == "SMTPNotSupportedError"


def test_a_bug_in_notifying_never_escapes(
    world: World, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    world.settings.notify = NotifySettings(webhook_url=SecretStr(webhook.url))
    configure_logs(log_stream, world.settings)

    def broken(*args: Any) -> None:
        raise ValueError("a bug in composing")

    monkeypatch.setattr(notify, "_compose", broken)
    notify.after_sync(world.settings, world.sync(), None)  # returns, does not raise
    assert [e["error"] for e in events(log_stream) if e["event"] == "notify.failed"] == [
        "a bug in composing"
    ]


# --- the sync command, end to end ------------------------------------------------------------


@pytest.fixture
def sandbox_app(tmp_path: Path) -> SandboxApp:
    """A small ledger (three customers, one unknown to both systems, one entry of an unknown
    category): a CLI sync takes a moment."""
    small = tmp_path / "small-ledger.jsonl"
    lines = (REPO / "connector/sandbox/data/sample-ledger.jsonl").read_text().splitlines()
    small.write_text(
        "\n".join(
            line
            for line in lines
            if json.loads(line)["customer_number"] in ("1003", "1008", "1042")
        )
        + "\n"
    )
    return build_app(small, rate_limit="100000/1")


@pytest.fixture(params=TARGETS)
def cli(
    request: pytest.FixtureRequest,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The sync command's settings against the sandbox, for each target (Visma authorised)."""
    target: str = request.param
    for name, value in connector_env(sandbox_server.url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONNECTOR_FORTNOX__RATE_LIMIT", "100000/1")
    monkeypatch.setenv("CONNECTOR_NOTIFY__TIMEOUT_SECONDS", "0.5")
    if target == "visma":
        from connector.sandbox.visma import SEED_REFRESH_TOKEN, connector_section

        monkeypatch.setenv("CONNECTOR_TARGET", "visma")
        for name, value in connector_section(sandbox_server.url).items():
            monkeypatch.setenv(f"CONNECTOR_VISMA__{name.upper()}", value)
        monkeypatch.setenv("CONNECTOR_VISMA__SEARCH_SETTLE_SECONDS", "0")
        monkeypatch.setenv("CONNECTOR_VISMA__RATE_LIMIT", "100000/1")
        imported = CliRunner().invoke(
            app, ["auth", "import", "visma"], input=SEED_REFRESH_TOKEN + "\n"
        )
        assert imported.exit_code == 0, imported.output
    return target


def sync(*args: str) -> Any:
    return CliRunner().invoke(app, ["sync", *args])


def test_the_sync_command_alerts_once(
    cli: str,
    webhook: Webhook,
    mailbox: tuple[Mailbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box, port = mailbox
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", webhook.url)
    for name, value in {
        "EMAIL_TO": "ekonomi@example.se",
        "EMAIL_FROM": "connector@example.se",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "SMTP_STARTTLS": "false",
    }.items():
        monkeypatch.setenv(f"CONNECTOR_NOTIFY__{name}", value)

    assert sync("--dry-run").exit_code == 1
    assert webhook.posts == [] and box.messages == [], "a dry run is a person looking"
    first = sync("--json")
    assert first.exit_code == 1
    document = json.loads(first.stdout)  # standard output is still one JSON document
    waiting = len(document["attention"]["invoices"]) + len(document["attention"]["entries"])
    assert len(webhook.posts) == 1 and len(box.messages) == 1
    assert f"{waiting} new item(s) need attention, {waiting} in all (exit 1)" in webhook.texts[0]
    assert "- SK-1042-2026-08: customer 1042 does not exist in" in webhook.texts[0]
    assert [e["channel"] for e in events(first.stderr) if e["event"] == "notify.sent"] == [
        "webhook",
        "email",
    ]
    again = sync()
    assert again.exit_code == 1
    assert len(webhook.posts) == 1 and len(box.messages) == 1, "reported once, not every night"
    for result in (first, again):
        assert HOOK_TOKEN not in result.stderr and SMTP_PASSWORD not in result.stderr


@pytest.mark.parametrize("dead", ["refused", "500", "hangs"])
def test_a_dead_webhook_leaves_the_exit_code_and_the_secret_alone(
    cli: str,
    webhook: Webhook,
    silent_server: str,
    monkeypatch: pytest.MonkeyPatch,
    dead: str,
) -> None:
    url = {
        "refused": f"http://127.0.0.1:{_free_port()}/services/{HOOK_TOKEN}",
        "500": webhook.url,
        "hangs": silent_server,
    }[dead]
    webhook.status = 500
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", url)
    started = time.monotonic()
    result = sync()
    assert result.exit_code == 1
    assert time.monotonic() - started < 20  # the 0.5 s timeout, not a hang
    failed = [e for e in events(result.stderr) if e["event"] == "notify.failed"]
    assert len(failed) == 1 and failed[0]["channel"] == "webhook"
    assert (
        failed[0]["error_type"]
        == {
            "refused": "ConnectError",
            "500": "SendError",
            "hangs": "ReadTimeout",
        }[dead]
    )
    assert HOOK_TOKEN not in result.stderr and url not in result.stderr
    # The run ended as usual; the alert's failure is logged after its last figures.
    assert [e["event"] for e in events(result.stderr)][-2:] == ["sync.done", "notify.failed"]


def test_reauthorisation_is_reported_with_the_login_command(
    cli: str, webhook: Webhook, sandbox_app: SandboxApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", webhook.url)
    if cli == "fortnox":
        from connector.sandbox import fortnox_of

        fortnox_of(sandbox_app).consents.clear()  # the service account's approval withdrawn
        login = "connector auth login fortnox --service-account"
    else:
        (Path(load_settings().state_dir) / "visma-token.json").unlink()
        login = "connector auth login visma"
    result = sync()
    assert result.exit_code == 5
    (text,) = webhook.texts
    assert "failed (exit 5: the accounting system needs re-authorisation by a person)" in text
    assert text.endswith(
        f"Next: {login}"
        + (" (a system administrator approves the integration again)" if cli == "fortnox" else "")
    )
    assert sync().exit_code == 5
    assert len(webhook.posts) == 1, "the same failure the same day: reported once"


def test_an_unreachable_ledger_is_reported(
    cli: str, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", f"http://127.0.0.1:{_free_port()}/ledger/v1")
    result = sync()
    assert result.exit_code == 4
    (text,) = webhook.texts
    assert "failed (exit 4: the ledger or the accounting system was unreachable)" in text
    assert "the next run goes on where this one stopped" in text


def test_a_crash_is_reported_and_still_exits_70(
    cli: str, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector import sync as sync_module

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug in the sync")

    monkeypatch.setattr(sync_module, "run_sync", crash)
    monkeypatch.setenv("CONNECTOR_NOTIFY__WEBHOOK_URL", webhook.url)
    result = sync()
    assert result.exit_code == 70
    (text,) = webhook.texts
    assert "(exit 70: an unexpected error (a bug in the connector)): ZeroDivisionError: a bug" in (
        text
    )
    assert events(result.stderr)[-1]["event"] == "command.crashed"  # still the last line
