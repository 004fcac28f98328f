"""Command line. Thin by design: parse arguments, call one function, print, exit with its code.

The only module that imports typer. Results go to standard output; logs and errors to standard
error. Exit codes are documented in the README and defined in `connector.errors.ExitCode`.

Unlike the other modules, no `from __future__ import annotations`: typer reads every command's
parameters each time the program starts, and string annotations would be evaluated again
(twice per command, making every typer.Option anew), a third of the start-up of the command
line itself. Name a type imported only for type checking in quotes ("Settings").
"""

import contextlib
import datetime
import enum
import functools
import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

import connector
from connector import targets
from connector.errors import (
    ConfigError,
    ConnectorError,
    ExitCode,
    MappingError,
    RemoteUnavailableError,
)
from connector.locations import default_state_dir


class _OnFirstUse:
    """A module imported when first used: `connector --help` then does not pay for structlog,
    rich and pydantic, which only commands that run need."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


if TYPE_CHECKING:
    from connector import logs
    from connector.settings import Settings, load_settings, unknown_variables
else:
    logs = _OnFirstUse("connector.logs")

    def load_settings() -> Any:
        from connector.settings import load_settings as load

        return load()

    def unknown_variables() -> Any:
        from connector.settings import unknown_variables as unknown

        return unknown()


# Not ExitCode members: no connector error maps to them; they say how the run was stopped.
INTERRUPTED = 130  # Ctrl-C, or a prompt abandoned (128 + SIGINT)
PIPE_CLOSED = 141  # the reader of standard output went away (128 + SIGPIPE)

EPILOG = f"""\b
Exit codes:
  0    everything done
  1    done, but some entries need attention (listed); the rest went through
  2    configuration or usage error (settings, mappings, options); nothing sent
  3    another run holds the lock
  4    ledger or accounting system unreachable; pending work kept for next run
  5    the accounting system needs re-authorisation by a person
  70   unexpected error (a bug); the traceback is in the log: please report it
  130  interrupted (141: standard output closed early); the next run goes on

\b
Settings: CONNECTOR_* environment variables or a .env file (see the README).
State directory (CONNECTOR_STATE_DIR) by default:
  {default_state_dir()}
"""


def _typer(**options: Any) -> typer.Typer:
    """Every Typer app of the CLI: plain help (no value placeholder on flags) and no "pretty"
    exceptions, whose tracebacks print local variables, and so secrets."""
    options.setdefault("no_args_is_help", True)
    return typer.Typer(
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        **options,
    )


app = _typer(
    help="Turns billable service-account hours into invoice drafts in Fortnox or Visma.",
    epilog=EPILOG,
)
mappings_app = _typer(help="Check, show and change the mapping files.")
app.add_typer(mappings_app, name="mappings")
auth_app = _typer(help="Authorise the connector in an accounting system.")
app.add_typer(auth_app, name="auth")
state_app = _typer(help="Look after the state directory: rebuild it, rebind it, release months.")
app.add_typer(state_app, name="state")
attention_app = _typer(
    help="List what needs a person, and what to do; acknowledge what cannot be fixed.",
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(attention_app, name="attention")

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


_unknown_reported = False
# `plan --all`, `sync --all`: incremental planning switched off for one run.
_PlanAll = Annotated[
    bool,
    typer.Option(
        "--all", help="Plan every customer, not only those changed since the last complete sync."
    ),
]


def version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("connector")
    except importlib.metadata.PackageNotFoundError:
        return connector.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"connector {version()}")
        raise typer.Exit(int(ExitCode.OK))


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    pass


def _settings() -> "Settings":
    global _unknown_reported
    settings = load_settings()
    logs.configure(settings.log_format, level=settings.log_level, secrets=settings.secrets())
    if not _unknown_reported:  # once per command, however often a command loads settings
        _unknown_reported = True
        log = logs.get_logger("connector.settings")
        for unknown in unknown_variables():
            # The name only: the value may be a secret (a mistyped token is one).
            log.warning(
                "settings.unknown_variable",
                variable=unknown.name,
                source=unknown.source,
                suggestion=unknown.suggestion,
            )
        _warn_old_state_dir(settings)
    return settings


def _warn_old_state_dir(settings: "Settings") -> None:
    """The state directory's default was `./var`: a state left there is not used any more."""
    from connector.state import DB_NAME

    old = Path("var") / DB_NAME
    if "state_dir" not in settings.model_fields_set and old.is_file():
        logs.get_logger("connector.settings").warning(
            "settings.old_state_dir",
            found=str(old.parent.resolve()),
            state_dir=str(settings.state_dir),
            hint="set CONNECTOR_STATE_DIR to the old folder, or move its files to the new one",
        )


def _fail(exc: ConnectorError) -> NoReturn:
    problems = exc.problems if isinstance(exc, MappingError) else []
    if logs.active_format == "json":
        # Under cron every line of standard error stays one JSON object.
        logs.get_logger("connector.cli").error(
            "command.failed", error=str(exc), exit_code=int(exc.exit_code), problems=problems
        )
    else:
        typer.echo(f"error: {logs.redactor.scrub(str(exc))}", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
    raise typer.Exit(int(exc.exit_code))


def _configure_fallback_logging() -> None:
    """Logging for a crash before a command configured it: the settings' format and secrets if
    they load, else the defaults."""
    fmt: Any = "auto"
    level: str | None = None
    secrets: list[str] = []
    with contextlib.suppress(Exception):
        settings = load_settings()
        fmt, level, secrets = settings.log_format, settings.log_level, settings.secrets()
    logs.configure(fmt, level=level, secrets=secrets)


def _report_crash(exc: BaseException) -> None:
    """Log one `command.crashed` event with the traceback (never local variables) and, unless
    standard error carries JSON lines, print one short line under it."""
    if logs.active_format is None:
        _configure_fallback_logging()
    kind = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):
        kind = f"{type(exc).__module__}.{kind}"
    logs.get_logger("connector.cli").error(
        "command.crashed",
        error_type=kind,
        error=str(exc),
        exit_code=int(ExitCode.BUG),
        exception="".join(traceback.format_exception(exc)).rstrip(),
    )
    if logs.active_format != "json":
        message = logs.redactor.scrub(str(exc)).strip().splitlines()
        first = message[0][:200] if message else ""
        typer.echo(
            f"error: unexpected error (a bug): {kind}: {first}; the traceback is in the log"
            " above. Please report it.",
            err=True,
        )


def _guard(body: Callable[[], int]) -> None:
    """Run a command's body and turn its outcome into the documented exit code."""
    global _unknown_reported
    _unknown_reported = False
    try:
        with _pull_bar():
            code = body()
    except ConnectorError as exc:
        _fail(exc)
    except (typer.Exit, typer.TyperException):
        raise  # an exit code chosen on purpose; click's usage errors exit 2
    except (KeyboardInterrupt, typer.Abort):
        if logs.active_format == "json":
            logs.get_logger("connector.cli").warning("command.interrupted", exit_code=INTERRUPTED)
        else:
            typer.echo("error: interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except BrokenPipeError:
        # `connector plan | head`: not a bug. Point standard output at /dev/null so that the
        # final flush at exit does not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(PIPE_CLOSED) from None
    except Exception as exc:
        _report_crash(exc)
        raise typer.Exit(int(ExitCode.BUG)) from None
    raise typer.Exit(code)


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


@app.command(short_help="Show the invoices a sync would create or change; sends nothing.")
def plan(
    period: Annotated[
        str | None, typer.Option(metavar="YYYY-MM", help="Only show this month.")
    ] = None,
    customer: Annotated[
        str | None, typer.Option(metavar="NUMBER", help="Only show this customer number.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    everything: _PlanAll = False,
) -> None:
    """Pull new ledger changes and show the invoices that would be created or changed.

    Sends nothing to any accounting system. Plans the customers whose entries, invoices or
    holds changed since the last complete sync (all of them after a mapping, price or setting
    change); the entries needing attention of the others are listed as they were found.
    """

    def body() -> int:
        if period is not None:
            _check_period(period)
        from connector.render import plan_document, plan_text, write_json
        from connector.sync import run_plan

        view = run_plan(_settings(), everything=everything)
        document = plan_document(view, period=period, customer=customer)
        if as_json:
            write_json(document, sys.stdout.write)  # invoice by invoice, never held whole
        else:
            typer.echo(plan_text(document, terminal=_stdout_is_terminal()))
        # The exit code speaks of what was shown: a filtered view without problems exits 0.
        counts = document["counts"]
        troubled = counts["attention"] or counts["invoices_need_attention"]
        return int(ExitCode.ATTENTION if troubled else ExitCode.OK)

    _guard(body)


@app.command(short_help="Prove a month's invoices against the ledger; sends nothing.")
def audit(
    period: Annotated[
        str, typer.Option(metavar="YYYY-MM", help="The month to prove (required).")
    ] = "",
    customer: Annotated[
        str | None, typer.Option(metavar="NUMBER", help="Only this customer number.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check, before closing a month, that the invoices in the accounting system bill exactly
    what the ledger says.

    Reads the month's invoices from the accounting system itself (drafts, booked, sent;
    cancelled or deleted ones bill nothing), nets them per customer, article and price, and
    compares them with what the ledger's entries should bill, with the mapping files and the
    article register. Lists every difference, every key on two live invoices, every entry not
    invoiced; entries excluded on purpose (included in the monthly fee, prepaid, withdrawn by a
    person) and entries needing attention are listed apart. Pulls new ledger changes; sends no
    write request to the accounting system.

    \b
    Exit codes:
      0  the books and the ledger agree (entries needing attention may be listed)
      1  they do not: a difference, a key on two live invoices, an entry not invoiced
      2  bad options or settings
      3  another run holds the lock
      4  the ledger or the accounting system is unreachable
      5  the accounting system needs re-authorisation
    What each finding means: docs/finance.md.
    """

    def body() -> int:
        settings = _settings()
        _check_period(period)
        from connector.audit import audit_text, run_audit

        report = run_audit(settings, period, customer)
        document = report.to_json()
        if as_json:
            _print_json(document)
        else:
            typer.echo(audit_text(document, width=_width()))
        return int(report.exit_code)

    _guard(body)


class ReportFormat(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command(short_help="What was invoiced for a month, per customer (table, CSV, JSON).")
def report(
    period: Annotated[
        str, typer.Option(metavar="YYYY-MM", help="The month to report (required).")
    ] = "",
    fmt: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            help="table (for reading), csv (opens in a Swedish Excel by double-click: "
            "semicolons, decimal comma, UTF-8) or json.",
        ),
    ] = ReportFormat.table,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            metavar="FILE",
            help="Write to this file (replaced whole, never half-written) instead of "
            "standard output.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (as --format json).")
    ] = False,
) -> None:
    """What was invoiced for a month, per customer: each invoice's number, state, hours per
    category and amounts excluding VAT; and the month's hours not invoiced, by reason
    (included in the monthly fee, drawn from prepaid hours, needing attention, ...), so
    finance can reconcile against the ledger.

    Reads the state directory only, as the last sync recorded it, and the plan made from the
    ledger as last pulled: no network. `connector audit` checks the accounting system itself.

    \b
    Exit codes:
      0  the report was written
      2  bad options or settings, or no state directory yet
    """

    def body() -> int:
        settings = _settings()
        _check_period(period)
        from connector.report import render, run_report, write_atomically

        if as_json and fmt not in (ReportFormat.table, ReportFormat.json):
            raise ConfigError(f"--json and --format {fmt.value} contradict each other")
        month = run_report(settings, period)
        text = render(month, "json" if as_json else fmt.value, width=_width())
        if output is not None:
            write_atomically(output, text)
            typer.echo(f"Wrote {output}")
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        return int(ExitCode.OK)

    _guard(body)


def _check_period(period: str) -> None:
    """A `--period` is one month: YYYY-MM, month 01 to 12 (exit 2 otherwise)."""
    if not period:
        raise ConfigError("--period YYYY-MM is required: the month to look at")
    if not _PERIOD.match(period):
        raise ConfigError(f"--period must be YYYY-MM with a month from 01 to 12, got {period!r}")


def _width() -> int:
    """Tables as wide as the terminal; 120 columns when standard output is not one."""
    import shutil

    if sys.stdout.isatty():
        return max(80, shutil.get_terminal_size((120, 24)).columns)
    return 120


@app.command(short_help="Nightly job: bring the invoice drafts in line with the ledger.")
def sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Look, but send no write request.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    everything: _PlanAll = False,
) -> None:
    """The nightly job: finish unfinished work, pull the ledger, bring the invoice drafts in line.

    Safe to kill at any moment and to run again; a second run with no ledger change sends no
    write request. Plans only the customers changed since the last complete sync (every one
    after a mapping, price or setting change, or with --all). With CONNECTOR_NOTIFY__* set, a
    run that needs a person sends an alert (webhook or e-mail).
    """

    def body() -> int:
        from connector.notify import watch_sync
        from connector.render import sync_text
        from connector.sync import run_sync

        settings = _settings()
        # Alerts (CONNECTOR_NOTIFY__*) for however the run ends; never change its exit code.
        with watch_sync(settings, dry_run=dry_run) as watch, _progress("Writing invoices") as bar:
            report = run_sync(settings, dry_run=dry_run, progress=bar, everything=everything)
            watch.done(report)
        document = report.to_json()
        if as_json:
            _print_json(document)
        else:
            typer.echo(sync_text(document))
        return int(report.exit_code)

    _guard(body)


@app.command(short_help="Re-read one month from the ledger and bring its invoices in line.")
def resync(
    period: Annotated[str, typer.Option(metavar="YYYY-MM", help="The month to re-sync.")],
    customer: Annotated[
        str | None,
        typer.Option(metavar="NUMBER", help="Only this customer (default: every customer)."),
    ] = None,
    entry: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Only the invoice(s) holding this ledger entry (its id)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; send nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask; needed when not run at a terminal.")
    ] = False,
    reinvoice_cancelled: Annotated[
        bool,
        typer.Option(
            "--reinvoice-cancelled",
            help="Also invoice again, on a new supplementary invoice, the entries of "
            "invoices a person cancelled (deleted in Visma) in that month.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Read one month again from the ledger (one customer, or all of them) and, after you
    confirm what will change, bring its invoices in the accounting system in line with it.

    Unlike the nightly sync, it gives drafts that a person edited the planned rows back
    (rows deleted there come back), shown row by row first. Booked or sent invoices are
    never changed: differences go on a supplementary invoice. Entries of a cancelled
    invoice are invoiced again only with --reinvoice-cancelled. A month already right
    sends nothing.
    """

    def body() -> int:
        settings = _settings()
        _check_period(period)
        if not (dry_run or yes or _stdin_is_terminal()):
            raise ConfigError(
                "resync changes invoices only once a person confirms, and standard input is "
                "not a terminal: add --yes to confirm (or --dry-run to only look)"
            )
        from connector.render import resync_json, resync_text
        from connector.resync import ResyncReport, run_resync

        shown: list[bool] = []

        def ask(report: "ResyncReport") -> bool:
            if yes:
                return True
            # The plan goes where the prompt goes: standard error when standard output
            # carries the JSON document.
            typer.echo(resync_text(resync_json(report), outcome=False), err=as_json)
            shown.append(True)
            name = targets.profile(report.target).display_name
            return typer.confirm(f"Send these changes to {name}?", default=False, err=as_json)

        report = run_resync(
            settings,
            period=period,
            customer=customer,
            entry=entry,
            dry_run=dry_run,
            reinvoice_cancelled=reinvoice_cancelled,
            confirm=ask,
        )
        document = resync_json(report)
        if as_json:
            _print_json(document)
        else:
            typer.echo(resync_text(document, preview=not shown))
        return int(report.exit_code)

    _guard(body)


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@app.command(short_help="Month end: book (and send) a month's invoice drafts, each once.")
def close(
    period: Annotated[str, typer.Option(metavar="YYYY-MM", help="The month to close.")],
    customer: Annotated[
        str | None, typer.Option(metavar="NUMBER", help="Only this customer number.")
    ] = None,
    invoice_date: Annotated[
        str | None,
        typer.Option(
            "--invoice-date",
            metavar="YYYY-MM-DD",
            help="Date the invoices this day (default: as the sync dates them, "
            "CONNECTOR_INVOICE__DATE); never inside a locked period.",
        ),
    ] = None,
    send: Annotated[
        bool,
        typer.Option(
            "--send",
            help="Also send them as the accounting system does (e-mail, e-invoice); "
            "paper is listed to print by hand.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Close although the audit finds differences (needs --why)."),
    ] = False,
    why: Annotated[
        str | None,
        typer.Option(metavar="REASON", help="Why --force: recorded with your name and the time."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Month end: book the connector's open invoice drafts of a month in the accounting system,
    each once, dated and falling due by the customer's terms of payment.

    Refused while the audit finds differences between the ledger and the books for the month
    (unless --force --why). Shows the invoices and asks before doing anything (--yes to skip
    the question; without a terminal, --yes is required). Safe to stop and to run again: the
    next close finishes what was left, and never books or sends an invoice twice.
    """

    def body() -> int:
        _check_period(period)
        dated = None
        if invoice_date is not None:
            try:
                if not _DAY.match(invoice_date):
                    raise ValueError
                dated = datetime.date.fromisoformat(invoice_date)
            except ValueError:
                raise ConfigError(
                    f"--invoice-date must be YYYY-MM-DD, got {invoice_date!r}"
                ) from None
        if force != (why is not None):
            raise ConfigError('--force and --why go together: --force --why "the reason"')
        from connector.close import CloseReport, CloseRequest, audit_with, run_close
        from connector.render import close_preview_text, close_text

        def confirm(preview: "CloseReport") -> bool:
            if yes:
                return True
            if not _stdin_is_terminal():
                raise ConfigError(
                    f"closing {period} needs confirmation. Standard input is not a terminal: "
                    "pass --yes to confirm"
                )
            typer.echo(close_preview_text(preview.to_json()), err=True)
            return typer.confirm("Go on?", default=False, err=True)

        request = CloseRequest(
            period=period,
            customer=customer,
            invoice_date=dated,
            send=send,
            force_why=why if force else None,
        )
        settings = _settings()
        report = run_close(settings, request, audit=audit_with(settings), confirm=confirm)
        document = report.to_json()
        if as_json:
            _print_json(document)
        else:
            typer.echo(close_text(document))
        return int(report.exit_code)

    _guard(body)


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on standard error when a person watches a terminal; nothing under cron
    (the JSON logs say it all there)."""
    if logs.active_format == "json" or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=None) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class _PullBar:
    """The ledger pull's progress on a terminal: shown from the first page of a pull, gone when
    the pull ends (before any question is asked); nothing under cron or with JSON logs."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, stored: int, finished: bool) -> None:
        if finished:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            return
        if self._bar is None:
            if logs.active_format == "json" or not sys.stderr.isatty():
                return
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task("Reading the ledger", total=None)
        self._bar.update(self._task, description=f"Reading the ledger: {stored} entries")


@contextlib.contextmanager
def _pull_bar() -> Iterator[None]:
    from connector.progress import pull_progress

    bar = _PullBar()
    token = pull_progress.set(bar)
    try:
        yield
    finally:
        pull_progress.reset(token)
        bar(0, True)


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed, or replaced by something without isatty
        return False


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # no standard input at all, or closed
        return False


_SYSTEM_HELP = "The accounting system."

# The registry's names as a choice typer checks before anything runs (exit 2 naming them).
if TYPE_CHECKING:
    System = str
else:
    System = enum.StrEnum("System", {name: name for name in targets.TARGETS})


@auth_app.command("login", short_help="Authorise with a person's login.")
def auth_login(
    system: Annotated[System, typer.Argument(metavar="SYSTEM", help=_SYSTEM_HELP)],
    service_account: Annotated[
        bool,
        typer.Option(
            "--service-account",
            help="Fortnox: create the service-account consent (a Fortnox system administrator "
            "logs in) and print the tenant id for CONNECTOR_FORTNOX__TENANT_ID; no token is "
            "stored.",
        ),
    ] = False,
    code_from_stdin: Annotated[
        bool,
        typer.Option(
            "--code-from-stdin",
            help="Read the code from standard input (one line) instead of asking a person at "
            "the terminal; for when standard input is not a terminal.",
        ),
    ] = False,
) -> None:
    """Authorise with a person's login: prints the URL to open, then asks for the code.

    Needs a person at a terminal; with --code-from-stdin the code is read from standard input.
    """

    def body() -> int:
        import httpx

        from connector.auth import TokenFile, authorization_url, exchange_code, new_state

        spec = targets.spec(system)
        app_ = spec.oauth
        settings = _settings()
        if service_account and app_.service_account_params is None:
            raise ConfigError(f"--service-account: {app_.system} has no service accounts")
        if not code_from_stdin and not _stdin_is_terminal():
            raise ConfigError(
                "auth login needs a person to paste a code, but standard input is not a "
                "terminal: run it in a terminal, or pass --code-from-stdin to read the code "
                "from standard input"
            )
        client_id, _ = spec.require(settings)
        section = spec.section(settings)
        url = authorization_url(
            app_,
            section.auth_url,
            client_id,
            section.redirect_uri,
            new_state(),
            service_account=service_account,
        )
        who = f"{app_.who} (a system administrator)" if service_account else app_.who
        typer.echo(f"Open this address, log in as {who} and allow access:")
        typer.echo(f"  {url}")
        if code_from_stdin:
            code = sys.stdin.readline()
            if not code.strip():
                raise ConfigError("--code-from-stdin: no code on standard input")
        else:
            code = typer.prompt(
                "Then paste the address you are sent to (or just its code)", hide_input=True
            )
        code = _code_of(code)
        path = settings.state_dir / app_.token_file
        store = None if service_account else TokenFile(path, app_.login_hint)
        with httpx.Client(timeout=section.timeout_seconds) as http:
            endpoint = spec.token_endpoint(settings, http)
            tokens = exchange_code(endpoint, store, code.strip(), section.redirect_uri)
        if service_account:
            for line in spec.after_service_consent(settings, tokens.access_token):
                typer.echo(line)
            return int(ExitCode.OK)
        typer.echo(f"Authorised: the connector can now reach {app_.system}.")
        return int(ExitCode.OK)

    _guard(body)


def _code_of(pasted: str) -> str:
    """The authorisation code, from the code alone or from the whole redirect address a person
    copies from the browser (`...?code=XYZ&state=...`)."""
    pasted = pasted.strip()
    if "code=" in pasted:
        from urllib.parse import parse_qs, urlsplit

        query = urlsplit(pasted).query or pasted.split("?", 1)[-1]
        found = parse_qs(query).get("code")
        if found and found[0]:
            return found[0]
    return pasted


@auth_app.command("import", short_help="Store a refresh token read from standard input.")
def auth_import(
    system: Annotated[System, typer.Argument(metavar="SYSTEM", help=_SYSTEM_HELP)],
) -> None:
    """Store a refresh token read from standard input (never from an argument)."""

    def body() -> int:
        import httpx

        from connector.auth import TokenFile, import_refresh_token

        spec = targets.spec(system)
        app_ = spec.oauth
        settings = _settings()
        spec.require(settings)  # the exchange needs the client id and secret
        store = TokenFile(settings.state_dir / app_.token_file, app_.login_hint)
        with httpx.Client(timeout=spec.section(settings).timeout_seconds) as http:
            endpoint = spec.token_endpoint(settings, http)
            try:
                import_refresh_token(store, sys.stdin.readline(), endpoint)
            except RemoteUnavailableError as exc:
                raise RemoteUnavailableError(
                    f"the refresh token is stored but could not be checked ({exc.message}); "
                    "the next sync exchanges it"
                ) from None
        typer.echo(f"Refresh token stored and accepted by {app_.system}.")
        return int(ExitCode.OK)

    _guard(body)


def _confirm(question: str, yes: bool) -> None:
    """Ask a person at a terminal; without one, only --yes goes on."""
    if yes:
        return
    if not _stdin_is_terminal():
        raise ConfigError(f"{question} Standard input is not a terminal: pass --yes to confirm")
    if not typer.confirm(question, default=False):
        raise typer.Exit(int(ExitCode.OK))


@state_app.command("rebuild", short_help="Rebuild a lost state from the accounting system.")
def state_rebuild(
    yes: Annotated[
        bool, typer.Option("--yes", help="Replace a state directory that is not empty.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Reconstruct the state directory from the invoices this connector made in the accounting
    system and from the ledger, so a lost state is recovered without invoicing anything twice.

    Every row is tied back to the ledger entry whose text it carries; a customer's month with a
    row that cannot be tied back is held (nothing is sent for it) until released with `connector
    state release`. A state that is not empty is copied aside first. Sends nothing.
    """

    def body() -> int:
        from connector.rebuild import rebuild

        settings = _settings()
        settings.require_ledger()
        from connector.state import DB_NAME

        if (settings.state_dir / DB_NAME).exists():
            _confirm(
                f"Rebuild the state in {settings.state_dir}, replacing what it holds (a copy is "
                "kept beside it)?",
                yes,
            )
        report = rebuild(settings, replace_existing=True)
        document = report.to_json()
        if as_json:
            _print_json(document)
        else:
            counts = ", ".join(f"{n} {s}" for s, n in document["invoices"].items()) or "none"
            typer.echo(f"Invoices found: {counts}; entries tied to them: {report.entries_placed}")
            if report.backup:
                typer.echo(f"The previous state is kept in {report.backup}")
            for key in report.locked:
                typer.echo(f"  {key}: has rows of unknown origin; left to a person (locked)")
            for customer, period, reason in report.held:
                typer.echo(f"  held {customer} {period}: {reason}")
            typer.echo("Next: connector sync --dry-run shows what a sync would send.")
        return int(ExitCode.ATTENTION if report.held or report.locked else ExitCode.OK)

    _guard(body)


@state_app.command("rebind", short_help="Bind the state to the current ledger and company.")
def state_rebind(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Record the current ledger address and accounting company as the ones this state
    directory belongs to, after a real move (a new ledger address). Refused runs say when
    this is needed; never use it to point one state at another company's books."""

    def body() -> int:
        from connector.state import BOUND_LEDGER, BOUND_TARGET, StateStore
        from connector.sync import ledger_identity, open_target

        settings = _settings()
        ledger = ledger_identity(settings)
        target = open_target(settings)
        try:
            company = target.identity()
        finally:
            target.close()
        store = StateStore(settings.state_dir)
        try:
            with store.lock():
                before = store.meta(BOUND_LEDGER), store.meta(BOUND_TARGET + target.profile.name)
                _confirm(
                    f"Bind {settings.state_dir} to the ledger {ledger} (was {before[0]}) and "
                    f"the company {company} (was {before[1]})?",
                    yes,
                )
                store.set_meta(BOUND_LEDGER, ledger)
                if company is not None:
                    store.set_meta(BOUND_TARGET + target.profile.name, company)
        finally:
            store.close()
        typer.echo(f"Bound to the ledger {ledger} and the company {company}.")
        return int(ExitCode.OK)

    _guard(body)


@state_app.command("release", short_help="Release a month held after a rebuild.")
def state_release(
    customer: Annotated[str, typer.Option(metavar="NUMBER", help="The customer number.")],
    period: Annotated[str, typer.Option(metavar="YYYY-MM", help="The month.")],
) -> None:
    """Let the connector invoice a customer's month again after a person has checked it in the
    accounting system (a rebuild holds months it could not account for in full)."""

    def body() -> int:
        _check_period(period)
        from connector.state import StateStore

        settings = _settings()
        store = StateStore(settings.state_dir)
        try:
            # Under the run lock: a release landing in a sync's last moments would otherwise
            # have its mark cleared with the run's own, and the month never planned again.
            with store.lock():
                released = store.release(settings.target, customer, period)
        finally:
            store.close()
        if not released:
            raise ConfigError(f"customer {customer} {period} is not held")
        typer.echo(f"Released customer {customer} {period}: the next sync plans it again.")
        return int(ExitCode.OK)

    _guard(body)


@mappings_app.command("validate")
def mappings_validate(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", metavar="PATH", help="Mappings folder (default: CONNECTOR_MAPPINGS_DIR)."
        ),
    ] = None,
) -> None:
    """Check every *.toml mapping file; print OK or every problem with file and line."""

    def body() -> int:
        from connector.mappings import load_mappings
        from connector.sync import mapping_warnings

        settings = _settings()
        folder = directory if directory is not None else settings.mappings_dir
        mappings = load_mappings(folder)
        typer.echo(
            f"OK: {len(mappings.categories)} categories ({mappings.billable_count} billable)"
        )
        # What the files would do to the books, from the ledger as last pulled: warnings only.
        for warning in mapping_warnings(settings, mappings):
            typer.echo(f"warning: {warning}")
        return int(ExitCode.OK)

    _guard(body)


class Slug(str):
    """A category as the ledger writes it; named so that --help shows what to type, not `str`."""

    __slots__ = ()


_DIR_OPTION = typer.Option(
    "--dir", metavar="PATH", help="Mappings folder (default: CONNECTOR_MAPPINGS_DIR)."
)


@mappings_app.command("show", short_help="Show each category's article, unit and prices.")
def mappings_show(
    target: Annotated[
        System | None,
        typer.Option(
            "--target", metavar="SYSTEM", help="Only this accounting system (default: each)."
        ),
    ] = None,
    directory: Annotated[Path | None, _DIR_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the mapping as it takes effect, per accounting system: for every category whether
    it is billable or included in the monthly fee, its article, unit and price (with the date
    each price change applies from), whether its hours may go out free, and the file and line
    that define it. Reads the files only."""

    def body() -> int:
        from connector.mapping_check import show_document
        from connector.mappings import load_mappings
        from connector.render_mappings import show_text

        settings = _settings()
        mappings = load_mappings(directory if directory is not None else settings.mappings_dir)
        names = [str(target)] if target is not None else list(targets.names())
        document = show_document(mappings, names)
        if as_json:
            _print_json(document)
        else:
            typer.echo(show_text(document))
        return int(ExitCode.OK)

    _guard(body)


@mappings_app.command(
    "check", short_help="Check the mappings against the accounting system; changes nothing."
)
def mappings_check(
    directory: Annotated[Path | None, _DIR_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Validate the mapping files, then ask the accounting system (CONNECTOR_TARGET) whether
    every mapped article exists and is active, whether each unit fits, and whether each
    category has a price (else its hours would be invoiced at 0); and list categories the
    ledger uses that no file maps. Only reads; sends no change anywhere.

    Exit 0 when all is well, 1 when a problem was found (each names the file and line).
    """

    def body() -> int:
        from connector.mapping_check import run_check
        from connector.mappings import load_mappings
        from connector.render_mappings import check_text

        settings = _settings()
        mappings = load_mappings(directory if directory is not None else settings.mappings_dir)
        document = run_check(settings, mappings)
        if as_json:
            _print_json(document)
        else:
            typer.echo(check_text(document))
        return int(ExitCode.OK if document["ok"] else ExitCode.ATTENTION)

    _guard(body)


@mappings_app.command("set", short_help="Set a category's article or price in the files.")
def mappings_set(
    category: Annotated[
        Slug,
        typer.Argument(
            metavar="CATEGORY", parser=Slug, help="The ledger's category, e.g. installation."
        ),
    ],
    article: Annotated[
        str | None, typer.Option(metavar="NUMBER", help="The article number to invoice with.")
    ] = None,
    price: Annotated[
        str | None,
        typer.Option(metavar="PRICE", help="Price per hour excl. VAT, e.g. 1250.00."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="YYYY-MM-DD",
            help="First day of work the new price applies to; required when the category "
            "already has a price. Rows already on invoices keep theirs.",
        ),
    ] = None,
    target: Annotated[
        System | None,
        typer.Option(
            "--target",
            metavar="SYSTEM",
            help="Set the article for this accounting system only (an override).",
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="NAME.toml",
            help="For a new category: the mapping file to add it to (needed when there are "
            "several).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Readable name (Swedish: it shows on invoices)."),
    ] = None,
    directory: Annotated[Path | None, _DIR_OPTION] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the change, but do not write it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Set a category's article or price in the mapping file that defines it, keeping every
    comment, and only if all the files still validate (else nothing is written, exit 2).

    A price change on a category that already has a price needs --from: work performed from
    that day gets the new price, rows already on invoices keep theirs. Prints what changed.
    """

    def body() -> int:
        from datetime import date

        from connector.mapping_edit import Change, set_mapping
        from connector.render_mappings import set_text
        from connector.sync import mapping_warnings

        settings = _settings()
        folder = directory if directory is not None else settings.mappings_dir
        change = Change(
            category=str(category),
            article=article,
            price=price,
            since=since,
            target=None if target is None else str(target),
            file=file,
            name=name,
        )
        outcome = set_mapping(folder, change, today=date.today(), dry_run=dry_run)
        if outcome.written:
            # What the files now do to the books, from the ledger as last pulled.
            outcome.notes.extend(mapping_warnings(settings, outcome.mappings))
        document = outcome.to_json()
        if as_json:
            _print_json(document)
        else:
            typer.echo(set_text(document))
        return int(ExitCode.OK)

    _guard(body)


@app.command(short_help="Serve a fake ledger and fake accounting systems on loopback.")
def sandbox(
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8790,
    ledger: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.jsonl", help="JSON-lines ledger to serve (default: sample ledger)."
        ),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option(
            metavar="REQUESTS/SECONDS",
            help="Every fake's rate-limit window (default: each system's own: Fortnox 25/5, "
            "Visma 600/60).",
        ),
    ] = None,
    latency_ms: Annotated[
        int, typer.Option(metavar="MS", help="Added to every accounting-system answer.")
    ] = 0,
    error_rate: Annotated[
        float,
        typer.Option(
            metavar="SHARE", help="Share (0-1) of accounting-system requests answered 503."
        ),
    ] = 0,
    lost_create_rate: Annotated[
        float,
        typer.Option(
            metavar="SHARE", help="Share (0-1) of invoice creates stored but whose answer is lost."
        ),
    ] = 0,
    rate_429: Annotated[
        float,
        typer.Option(
            metavar="SHARE", help="Share (0-1) of accounting-system requests answered 429."
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed for the fault switches.")] = 0,
) -> None:
    """Serve a fake ledger and a fake of every accounting system (Fortnox, Visma eAccounting)
    on loopback, with fault switches."""

    def body() -> int:
        from connector.sandbox import Faults, build_app, fake_module
        from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN
        from connector.sandbox.server import SandboxServer

        if ledger is not None and not ledger.is_file():
            raise ConfigError(f"--ledger: no such file {ledger}")
        try:
            faults = Faults(
                latency_ms=latency_ms,
                error_rate=error_rate,
                lost_create_rate=lost_create_rate,
                rate_429=rate_429,
                seed=seed,
            )
            app_ = build_app(ledger, rate_limit=rate_limit, faults=faults)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            server = SandboxServer(app_, host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        say = functools.partial(typer.echo, err=True)
        # Shell lines to paste: the ledger, then each system (its own CONNECTOR_TARGET).
        say(f"# sandbox listening on {server.url}; the values are public test credentials")
        say(f"export CONNECTOR_LEDGER__URL={server.url}{LEDGER_PREFIX}")
        say(f"export CONNECTOR_LEDGER__TOKEN={LEDGER_TOKEN}")
        for name in targets.names():
            spec = targets.spec(name)
            module = fake_module(name)
            say(f"# {spec.profile.display_name} (to write there: export CONNECTOR_TARGET={name})")
            for field, value in module.connector_section(server.url).items():
                say(f"export {spec.env(field)}={value}")
            seed_token = getattr(module, "SEED_REFRESH_TOKEN", None)
            if seed_token:
                say(f"echo {seed_token} | connector auth import {name}  # once")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        return int(ExitCode.OK)

    _guard(body)


@app.command(short_help="Run a full sync against the built-in sandbox; show the result.")
def demo(
    target: Annotated[
        System | None,
        typer.Option(
            "--target",
            metavar="SYSTEM",
            help="The accounting system to fill (default: CONNECTOR_TARGET, else fortnox).",
        ),
    ] = None,
) -> None:
    """Start the sandbox in-process, run a full sync against it, and show the result."""

    def body() -> int:
        from connector.render import sync_text
        from connector.sandbox.demo import invoice_table, run_demo

        settings = _settings()
        name = str(target) if target is not None else settings.target
        report, invoices = run_demo(settings.mappings_dir, name)
        typer.echo(sync_text(report.to_json()))
        typer.echo("")
        typer.echo(invoice_table(targets.spec(name).profile.display_name, invoices))
        return int(ExitCode.OK)

    _guard(body)


@app.command(short_help="Show the last runs, the invoices, what needs attention; offline.")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show what the state directory knows: the last runs (when, how long, what they did, exit
    code), how far the ledger has been read, the invoices per state, what needs attention,
    held months, which accounting system it invoices to, and whether the login still holds.

    Reads local files only (works while the ledger or the accounting system is down). Exits
    1 when something needs attention, 2 when the state directory is missing or unusable.
    """

    def body() -> int:
        from connector.status import status_document

        document = status_document(_settings())
        if as_json:
            _print_json(document)
        else:
            from connector.render_status import status_text  # rich: for the table only

            typer.echo(status_text(document))
        return int(document["exit_code"])

    _guard(body)


@attention_app.callback()
def attention(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list the acknowledged items, with who and why.")
    ] = False,
) -> None:
    """List every entry and invoice that needs attention: what is wrong, since when, and what
    to do. Exits 1 when the list is not empty.

    Reads the state directory only: the list is as the last sync left it.
    """
    if ctx.invoked_subcommand is not None:
        return

    def body() -> int:
        from connector.attention import attention_document
        from connector.render_status import attention_text

        document = attention_document(_settings(), include_acknowledged=show_all)
        if as_json:
            _print_json(document)
        else:
            typer.echo(attention_text(document))
        return int(ExitCode.ATTENTION if document["counts"]["open"] else ExitCode.OK)

    _guard(body)


class EntryOrInvoice(str):
    """What an attention item is known by: a ledger entry id, a feed position (an item without
    a usable id) or an invoice key. Its own type so that help names it, not `<str>`."""

    __slots__ = ()


@attention_app.command("ack", short_help="Acknowledge an item that cannot be fixed at its source.")
def attention_ack(
    item: Annotated[
        EntryOrInvoice,
        typer.Argument(
            metavar="ID",
            parser=EntryOrInvoice,
            help="The ledger entry id, feed position or invoice, as `connector attention` lists "
            "it (quote one with spaces).",
        ),
    ],
    why: Annotated[
        str,
        typer.Option(metavar="REASON", help="Why it is acknowledged (kept with your user name)."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Acknowledge an item that cannot be fixed at its source (a ledger item without a usable
    id, an invoice a person changed on purpose): it leaves the list and no longer makes
    `sync`, `status` or `attention` exit 1. It is kept in the record with who, when and why
    (`connector attention --all`), and listed again if its reason changes.
    """

    def body() -> int:
        from connector.attention import acknowledge
        from connector.render_status import ack_text

        done = acknowledge(_settings(), str(item), why)
        if as_json:
            _print_json(done)
        else:
            typer.echo(ack_text(done))
        return int(ExitCode.OK)

    _guard(body)


@auth_app.command("status", short_help="Show how the connector logs in and whether it can.")
def auth_status(
    system: Annotated[
        System | None,
        typer.Argument(
            metavar="[SYSTEM]", help="The accounting system (default: CONNECTOR_TARGET)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the way the connector logs in (service account, or a person's refresh token), until
    when the access token is valid, and whether a refresh token is stored and since when. No
    secret is shown, and nothing is asked over the network.

    Exits 0 when usable, 5 when a person must authorise again, 2 when not configured.
    """

    def body() -> int:
        from connector.render_status import auth_text
        from connector.status import auth_status as read_status

        document = read_status(_settings(), None if system is None else str(system))
        if as_json:
            _print_json(document)
        else:
            typer.echo(auth_text(document))
        return int(document["exit_code"])

    _guard(body)


@app.command(short_help="Show each customer's prepaid hours: bought, drawn, left.")
def balance(
    customer: Annotated[
        str | None,
        typer.Option(
            metavar="NUMBER", help="Only this customer, with the entries behind each figure."
        ),
    ] = None,
    no_pull: Annotated[
        bool,
        typer.Option(
            "--no-pull",
            help="Read the ledger as last pulled, without asking the ledger (and without its "
            "settings).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document, with every entry.")
    ] = False,
) -> None:
    """Show each customer's prepaid hours (the timbank): hours bought with top-ups, hours drawn
    by work, and what is left.

    Pulls new ledger changes first, as `plan` does. A draw beyond what was left that day is an
    overdraw: those hours are not invoiced unless CONNECTOR_PREPAID__OVERDRAW=invoice, so it is
    listed as needing attention (exit 1). Sends nothing to any accounting system.
    """

    def body() -> int:
        from connector.balance import run_balance
        from connector.render import balance_text

        report = run_balance(_settings(), pull_first=not no_pull)
        document = report.to_json(customer)
        if as_json:
            _print_json(document)
        else:
            typer.echo(balance_text(document))
        return int(report.exit_code(customer))

    _guard(body)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:  # a bug outside a command's body (an option callback, typer)
        _report_crash(exc)
        sys.exit(int(ExitCode.BUG))
