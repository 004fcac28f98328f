"""Command line. Thin by design: parse arguments, call one function, print, exit with its code.

The only module that imports typer. Results go to standard output; logs and errors to standard
error. Exit codes are documented in the README and defined in `connector.errors.ExitCode`.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from connector import logs
from connector.errors import ConfigError, ConnectorError, ExitCode, MappingError
from connector.settings import Settings, load_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Turns billable service-account hours into invoice drafts in Fortnox or Visma.",
)
mappings_app = typer.Typer(no_args_is_help=True, help="Check the mapping files.")
app.add_typer(mappings_app, name="mappings")
auth_app = typer.Typer(no_args_is_help=True, help="Authorise the connector in Fortnox.")
app.add_typer(auth_app, name="auth")

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _settings() -> Settings:
    settings = load_settings()
    logs.configure(settings.log_format, secrets=settings.secrets())
    return settings


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


def _guard(body: Callable[[], int]) -> None:
    try:
        code = body()
    except ConnectorError as exc:
        _fail(exc)
    raise typer.Exit(code)


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


@app.command()
def plan(
    period: Annotated[str | None, typer.Option(help="Only show this month, YYYY-MM.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only show this customer number.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Pull new ledger changes and show the invoices that would be created or changed.

    Sends nothing to any accounting system.
    """

    def body() -> int:
        if period is not None and not _PERIOD.match(period):
            raise ConfigError(f"--period must be YYYY-MM, got {period!r}")
        from connector.render import plan_json, plan_text
        from connector.sync import run_plan

        result, _ = run_plan(_settings())
        document = plan_json(result, period=period, customer=customer)
        if as_json:
            _print_json(document)
        else:
            typer.echo(plan_text(document))
        # The exit code speaks of what was shown: a filtered view without problems exits 0.
        return int(ExitCode.ATTENTION if document["attention"] else ExitCode.OK)

    _guard(body)


@app.command()
def sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Look, but send no write request.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """The nightly job: finish unfinished work, pull the ledger, bring the invoice drafts in line.

    Safe to kill at any moment and to run again; a second run with no ledger change sends no
    write request.
    """

    def body() -> int:
        from connector.render import sync_text
        from connector.sync import run_sync

        report = run_sync(_settings(), dry_run=dry_run)
        document = report.to_json()
        if as_json:
            _print_json(document)
        else:
            typer.echo(sync_text(document))
        return int(report.exit_code)

    _guard(body)


def _system(system: str) -> None:
    if system != "fortnox":
        raise ConfigError(f"unknown system {system!r}: only fortnox is supported")


@auth_app.command("login")
def auth_login(
    system: Annotated[str, typer.Argument(help="fortnox")],
    service_account: Annotated[
        bool,
        typer.Option(
            "--service-account",
            help="Create the service-account consent (a Fortnox system administrator logs in) "
            "and print the tenant id for CONNECTOR_FORTNOX__TENANT_ID; no token is stored.",
        ),
    ] = False,
) -> None:
    """Authorise with a person's login: prints the URL to open, then asks for the code."""

    def body() -> int:
        from connector.auth import TokenFile, authorization_url, exchange_code, new_state
        from connector.targets.fortnox import TOKEN_FILE, login_endpoint, tenant_of

        _system(system)
        settings = _settings()
        client_id, _ = settings.require_fortnox()
        url = authorization_url(
            settings.fortnox.auth_url,
            client_id,
            settings.fortnox.redirect_uri,
            new_state(),
            service_account=service_account,
        )
        who = "a Fortnox system administrator" if service_account else "a Fortnox administrator"
        typer.echo(f"Open this address, log in as {who} and allow access:")
        typer.echo(f"  {url}")
        code = typer.prompt("Then paste the code from the address you are sent to", hide_input=True)
        store = None if service_account else TokenFile(settings.state_dir / TOKEN_FILE)
        with login_endpoint(settings.fortnox) as endpoint:
            tokens = exchange_code(endpoint, store, code.strip(), settings.fortnox.redirect_uri)
        if service_account:
            tenant = tenant_of(settings.fortnox, tokens.access_token)
            typer.echo("The service account is approved. Set, with the client id and secret:")
            typer.echo(f"  CONNECTOR_FORTNOX__TENANT_ID={tenant}")
            return int(ExitCode.OK)
        typer.echo("Authorised: the connector can now reach Fortnox.")
        return int(ExitCode.OK)

    _guard(body)


@auth_app.command("import")
def auth_import(
    system: Annotated[str, typer.Argument(help="fortnox")],
) -> None:
    """Store a refresh token read from standard input (never from an argument)."""

    def body() -> int:
        from connector.auth import TokenFile, import_refresh_token
        from connector.targets.fortnox import TOKEN_FILE

        _system(system)
        settings = _settings()
        import_refresh_token(TokenFile(settings.state_dir / TOKEN_FILE), sys.stdin.readline())
        typer.echo("Refresh token stored; the next sync exchanges it.")
        return int(ExitCode.OK)

    _guard(body)


@mappings_app.command("validate")
def mappings_validate(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Mappings folder (default: CONNECTOR_MAPPINGS_DIR)."),
    ] = None,
) -> None:
    """Check every *.toml mapping file; print OK or every problem with file and line."""

    def body() -> int:
        from connector.mappings import load_mappings

        folder = directory if directory is not None else _settings().mappings_dir
        mappings = load_mappings(folder)
        typer.echo(
            f"OK: {len(mappings.categories)} categories ({mappings.billable_count} billable)"
        )
        return int(ExitCode.OK)

    _guard(body)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8790,
    ledger: Annotated[
        Path | None, typer.Option(help="JSON-lines ledger to serve (default: sample ledger).")
    ] = None,
    rate_limit: Annotated[str, typer.Option(help="Fortnox window, REQUESTS/SECONDS.")] = "25/5",
    latency_ms: Annotated[int, typer.Option(help="Added to every Fortnox answer.")] = 0,
    error_rate: Annotated[float, typer.Option(help="Share of Fortnox requests answered 503.")] = 0,
    lost_create_rate: Annotated[
        float, typer.Option(help="Share of invoice creates stored but whose answer is lost.")
    ] = 0,
    rate_429: Annotated[float, typer.Option(help="Share of Fortnox requests answered 429.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed for the fault switches.")] = 0,
) -> None:
    """Serve a fake ledger and a fake Fortnox on loopback, with fault switches."""

    def body() -> int:
        from connector.sandbox import Faults, build_app
        from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN
        from connector.sandbox.fortnox import API, AUTH, CLIENT_ID, CLIENT_SECRET, TENANT_ID
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
        typer.echo(f"sandbox listening on {server.url}", err=True)
        typer.echo(f"  CONNECTOR_LEDGER__URL={server.url}{LEDGER_PREFIX}", err=True)
        typer.echo(
            f"  CONNECTOR_LEDGER__TOKEN={LEDGER_TOKEN}  (the sandbox's public test token)", err=True
        )
        typer.echo(f"  CONNECTOR_FORTNOX__API_URL={server.url}{API}", err=True)
        typer.echo(f"  CONNECTOR_FORTNOX__AUTH_URL={server.url}{AUTH}", err=True)
        typer.echo(
            f"  CONNECTOR_FORTNOX__CLIENT_ID={CLIENT_ID}"
            f" CONNECTOR_FORTNOX__CLIENT_SECRET={CLIENT_SECRET}"
            f" CONNECTOR_FORTNOX__TENANT_ID={TENANT_ID}",
            err=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        return int(ExitCode.OK)

    _guard(body)


@app.command()
def demo() -> None:
    """Start the sandbox in-process, run a full sync against it, and show the result."""

    def body() -> int:
        from connector.render import sync_text
        from connector.sandbox.demo import fortnox_table, run_demo

        settings = _settings()
        report, invoices = run_demo(settings.mappings_dir)
        typer.echo(sync_text(report.to_json()))
        typer.echo("")
        typer.echo(fortnox_table(invoices))
        return int(ExitCode.OK)

    _guard(body)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
