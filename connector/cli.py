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

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _settings() -> Settings:
    settings = load_settings()
    logs.configure(settings.log_format, secrets=settings.secrets())
    return settings


def _fail(exc: ConnectorError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    if isinstance(exc, MappingError):
        for problem in exc.problems:
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

        result, code = run_plan(_settings())
        document = plan_json(result, period=period, customer=customer)
        if as_json:
            _print_json(document)
        else:
            typer.echo(plan_text(document))
        return int(code)

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
) -> None:
    """Serve a local fake ledger for trying the connector without real systems."""

    def body() -> int:
        from connector.sandbox import build_app
        from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN
        from connector.sandbox.server import SandboxServer

        if ledger is not None and not ledger.is_file():
            raise ConfigError(f"--ledger: no such file {ledger}")
        try:
            app_ = build_app(ledger)
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
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        return int(ExitCode.OK)

    _guard(body)


@app.command()
def demo() -> None:
    """Start the sandbox in-process, run the connector against it, and show the result."""

    def body() -> int:
        from connector.render import plan_json, plan_summary_text
        from connector.sandbox.demo import run_demo

        settings = _settings()
        result = run_demo(settings.mappings_dir)
        typer.echo(plan_summary_text(plan_json(result)))
        return int(ExitCode.OK)

    _guard(body)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
