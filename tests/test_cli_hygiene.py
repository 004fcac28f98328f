"""The CLI's hygiene: exit codes for bugs, usage errors and interruptions, --version and --help,
crash reports without secrets or local variables, unknown variables, quiet terminal logs."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

import connector
from connector.cli import app
from connector.errors import ExitCode
from connector.locations import default_state_dir
from connector.sandbox.server import SandboxServer
from tests.conftest import MAPPINGS_DIR, REPO, connector_env
from tests.harness import TARGETS

LEDGER_SECRET = "ledger-secret-1a2b3c4d5e"
# Held only in a local variable of the crashing function: it must never be printed.
TOKEN_IN_LOCAL = "tok-local-5e6f7a8b9c0d"


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=stdin)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for commands that never reach the network (their work is patched out)."""
    values = {
        "CONNECTOR_LEDGER__URL": "http://127.0.0.1:9/ledger/v1",
        "CONNECTOR_LEDGER__TOKEN": LEDGER_SECRET,
        "CONNECTOR_STATE_DIR": str(tmp_path / "state"),
        "CONNECTOR_MAPPINGS_DIR": str(MAPPINGS_DIR),
        "CONNECTOR_LOG_FORMAT": "json",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _crashing(*args: object, **kwargs: object) -> object:
    token = TOKEN_IN_LOCAL
    headers = {"Authorization": f"Bearer {token}"}
    raise RuntimeError(f"cannot parse the answer ({len(headers)} header, token {LEDGER_SECRET})")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN_IN_LOCAL not in text
        assert LEDGER_SECRET not in text


# --- 1. bugs exit 70 ----------------------------------------------------------------------


def test_a_bug_exits_70_with_one_json_event(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connector.sync.run_plan", _crashing)
    result = run("plan")
    assert result.exit_code == 70 == int(ExitCode.BUG)
    assert result.stdout == ""
    lines = json_lines(result.stderr)  # under cron every line stays one JSON object
    [crash] = [line for line in lines if line["event"] == "command.crashed"]
    assert crash["level"] == "error" and crash["exit_code"] == 70
    assert crash["error_type"] == "RuntimeError"
    assert crash["error"] == "cannot parse the answer (1 header, token [redacted])"
    assert crash["exception"].startswith("Traceback (most recent call last):")
    assert "in _crashing" in crash["exception"]
    assert crash["exception"].endswith(
        "RuntimeError: cannot parse the answer (1 header, token [redacted])"
    )
    assert_no_secret(result.stdout, result.stderr)


def test_a_bug_on_the_console_prints_one_short_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_LOG_FORMAT", "console")
    monkeypatch.setattr("connector.sync.run_plan", _crashing)
    result = run("plan")
    assert result.exit_code == 70
    assert result.stderr.count("command.crashed") == 1
    assert "Traceback (most recent call last):" in result.stderr
    *_, last = result.stderr.rstrip().splitlines()
    assert last == (
        "error: unexpected error (a bug): RuntimeError: cannot parse the answer (1 header, token"
        " [redacted]); the traceback is in the log above. Please report it."
    )
    assert_no_secret(result.stdout, result.stderr)


def test_a_bug_before_logging_was_configured(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`mappings validate --dir` never loads settings: the crash report configures logging."""
    monkeypatch.setattr("connector.mappings.load_mappings", _crashing)
    result = run("mappings", "validate", "--dir", str(tmp_path))
    assert result.exit_code == 70
    [crash] = json_lines(result.stderr)
    assert crash["event"] == "command.crashed" and crash["error_type"] == "RuntimeError"
    assert_no_secret(result.stdout, result.stderr)


def test_exit_1_is_not_used_for_failures(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr("connector.sync.run_plan", interrupted)
    result = run("plan")
    assert result.exit_code == 130
    assert json_lines(result.stderr)[-1]["event"] == "command.interrupted"

    def abandoned(*args: object, **kwargs: object) -> object:
        raise typer.Abort

    monkeypatch.setattr("connector.sync.run_plan", abandoned)
    assert run("plan").exit_code == 130

    def reader_gone(*args: object, **kwargs: object) -> object:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("connector.sync.run_plan", reader_gone)
    assert run("plan").exit_code == 141


def test_every_typer_app_hides_local_variables() -> None:
    """typer's "pretty exceptions" print every frame's local variables: tokens included."""

    def apps(root: typer.Typer) -> list[typer.Typer]:
        found = [root]
        for group in root.registered_groups:
            assert group.typer_instance is not None
            found += apps(group.typer_instance)
        return found

    for each in apps(app):
        assert each.pretty_exceptions_enable is False
        assert each.pretty_exceptions_show_locals is False


CRASH_OUTSIDE_A_BODY = """
import os
import sys
from typing import Annotated

import typer

from connector import cli


def _check(value: bool) -> bool:
    token = os.environ["HYGIENE_TOKEN"]
    if value and token:
        raise ValueError("callback failed")
    return value


@cli.app.command("boom")
def boom(x: Annotated[bool, typer.Option("--x", callback=_check)] = False) -> None:
    '''Crashes in an option callback, outside any command body.'''


sys.argv = ["connector", "boom", "--x"]
if os.environ.get("HYGIENE_CONTROL"):  # typer's defaults for a developer: locals shown
    cli.app.pretty_exceptions_enable = True
    cli.app.pretty_exceptions_show_locals = True
    cli.app()
else:
    cli.main()
"""


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_crash_outside_a_command_body_shows_no_local_variable(tmp_path: Path, fmt: str) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH_OUTSIDE_A_BODY)
    base = {**os.environ, "HYGIENE_TOKEN": TOKEN_IN_LOCAL, "CONNECTOR_LOG_FORMAT": fmt}

    def crash(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script)],
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # The control: with typer's pretty exceptions and locals, the token is printed.
    control = crash(HYGIENE_CONTROL="1")
    assert control.returncode == 1
    assert TOKEN_IN_LOCAL in control.stderr
    completed = crash()
    assert completed.returncode == 70
    assert TOKEN_IN_LOCAL not in completed.stdout + completed.stderr
    assert "locals" not in completed.stderr
    if fmt == "json":
        [line] = json_lines(completed.stderr)
        assert line["event"] == "command.crashed" and line["error_type"] == "ValueError"
        assert "in _check" in line["exception"]
    else:
        assert (
            completed.stderr.rstrip()
            .splitlines()[-1]
            .startswith("error: unexpected error (a bug): ValueError: callback failed;")
        )


# --- 2. usage errors exit 2 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["mappings"],
        ["auth"],
        ["nosuch"],
        ["plan", "--bogus"],
        ["plan", "--period"],
        ["plan", "--period", "2026-13"],
        ["sandbox", "--port", "eighty"],
        ["sandbox", "--error-rate", "lots"],
        ["auth", "login"],
        ["auth", "login", "visma"],
        ["auth", "import", "sap"],
        ["sync", "--dry-run=yes"],
    ],
)
def test_usage_errors_exit_2(env: dict[str, str], args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output


# --- 3. --version -------------------------------------------------------------------------


def test_version(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"connector {importlib.metadata.version('connector')}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"connector {connector.__version__}\n"


def test_version_from_the_installed_script() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "connector", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0
    assert re.fullmatch(r"connector \d+\.\d+\.\d+\S*\n", completed.stdout)
    assert completed.stderr == ""


# --- 4. --help ----------------------------------------------------------------------------


def test_help_lists_the_exit_codes_and_the_state_directory() -> None:
    result = run("--help")
    assert result.exit_code == 0
    text = result.stdout
    for code, meaning in [
        (0, "everything done"),
        (1, "done, but some entries need attention"),
        (2, "configuration or usage error"),
        (3, "another run holds the lock"),
        (4, "unreachable"),
        (5, "re-authorisation"),
        (70, "unexpected error (a bug)"),
        (130, "interrupted"),
    ]:
        assert re.search(rf"^\s+{code}\s+.*{re.escape(meaning)}", text, re.M), code
    assert "--version" in text
    # The default shown is where the per-user state lives for whoever runs the program (the
    # help text is built at import, before this test points XDG_STATE_HOME elsewhere).
    assert re.search(
        r"State directory \(CONNECTOR_STATE_DIR\) by default:\n\s+/\S+/connector", text
    )


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, group)]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


PLACEHOLDER = re.compile(r"<(bool|str|int|float|path)>|\b(TEXT|INTEGER|FLOAT|BOOLEAN)\b")


def test_help_of_every_command_has_no_misleading_placeholder() -> None:
    commands = _commands(get_command(app))
    assert {" ".join(path) for path, _ in commands} >= {
        "plan",
        "sync",
        "auth login",
        "auth import",
        "mappings validate",
        "sandbox",
        "demo",
    }
    for path, command in commands:
        result = run(*path, "--help")
        assert result.exit_code == 0, path
        text = result.stdout
        # A value option names its value (metavar="YYYY-MM", "PATH", ...), never a bare type.
        assert not PLACEHOLDER.search(text), (path, PLACEHOLDER.search(text), "set a metavar")
        for param in command.params:
            if getattr(param, "is_flag", False):
                # A flag is written alone: no value placeholder after it.
                name = param.opts[0]
                assert re.search(rf"^  {re.escape(name)}(  |\n)", text, re.M), (path, name)
    plan_help = run("plan", "--help").stdout
    assert re.search(r"^  --period YYYY-MM\s", plan_help, re.M)
    assert re.search(r"^  SYSTEM\W+fortnox\W", run("auth", "login", "--help").stdout, re.M)
    assert "--code-from-stdin" in run("auth", "login", "--help").stdout


# --- 5. unknown variables -----------------------------------------------------------------


def test_unknown_variables_are_warned_about_by_name_once_per_command(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONNECTOR_LEDGER__TOKN", "typo-secret-value-987")
    monkeypatch.setenv("CONNECTOR_STATEDIR", "/srv/connector/var")
    (tmp_path / ".env").write_text("CONNECTOR_LEDGER__TOKN=typo-secret-value-987\n")
    for _ in range(2):  # every command warns again, each variable once
        result = run("mappings", "validate")
        assert result.exit_code == 0  # the settings still load
        assert result.stdout.startswith("OK: ")
        warnings = [
            line
            for line in json_lines(result.stderr)
            if line["event"] == "settings.unknown_variable"
        ]
        assert [(w["variable"], w["suggestion"], w["level"]) for w in warnings] == [
            ("CONNECTOR_LEDGER__TOKN", "CONNECTOR_LEDGER__TOKEN", "warning"),
            ("CONNECTOR_STATEDIR", "CONNECTOR_STATE_DIR", "warning"),
        ]
        assert "typo-secret-value-987" not in result.stderr
        assert "/srv/connector/var" not in result.stderr


# --- 6. the state directory -------------------------------------------------------------


def test_a_state_left_in_the_old_default_is_pointed_out(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default was ./var: after an upgrade a state there would silently not be used."""
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "connector.sqlite3").write_bytes(b"")
    result = run("mappings", "validate")
    assert not [e for e in json_lines(result.stderr) if e["event"] == "settings.old_state_dir"]
    monkeypatch.delenv("CONNECTOR_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    result = run("mappings", "validate")
    assert result.exit_code == 0
    [warning] = [e for e in json_lines(result.stderr) if e["event"] == "settings.old_state_dir"]
    assert warning["found"] == str(tmp_path / "var")
    assert warning["state_dir"] == str(default_state_dir())


# --- 7. on a terminal ---------------------------------------------------------------------


def run_on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run with standard error on a pseudo-terminal, as a person at a terminal would; standard
    output is piped. Returns the exit code, standard output and what the terminal showed."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    assert process.stdout is not None
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    shown = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        process.kill()
        os.close(master)
        reader.join(timeout=10)
    return code, b"".join(out).decode(), shown.decode().replace("\r\n", "\n")


@pytest.fixture
def terminal_env(sandbox_server: SandboxServer, tmp_path: Path) -> dict[str, str]:
    values = connector_env(sandbox_server.url, tmp_path / "state")
    del values["CONNECTOR_LOG_FORMAT"]  # auto: the console renderer on a terminal
    return {**os.environ, **values}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_only_warnings_are_shown(terminal_env: dict[str, str]) -> None:
    code, stdout, shown = run_on_terminal(
        [sys.executable, "-m", "connector", "plan"],
        {**terminal_env, "CONNECTOR_LEDGER__TOKN": "typo-secret-value-987"},
    )
    assert code == 1  # the sample needs attention
    assert "total excl. VAT:" in stdout
    assert "ledger.pulled" not in shown  # info: not on a person's screen
    assert "settings.unknown_variable" in shown and "CONNECTOR_LEDGER__TOKN" in shown
    assert "typo-secret-value-987" not in shown
    assert not shown.lstrip().startswith("{")  # the console renderer, not JSON


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_log_level_shows_more_on_a_terminal(terminal_env: dict[str, str]) -> None:
    code, _, shown = run_on_terminal(
        [sys.executable, "-m", "connector", "plan"],
        {**terminal_env, "CONNECTOR_LOG_LEVEL": "info"},
    )
    assert code == 1
    assert "ledger.pulled" in shown


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_bug_on_a_terminal(terminal_env: dict[str, str]) -> None:
    script = (
        "import connector.sync as s\n"
        "def crash(*args, **kwargs):\n"
        "    token = 'tok-' + 'local-5e6f7a8b9c0d'\n"
        "    raise KeyError('no such invoice')\n"
        "s.run_plan = crash\n"
        "from connector.cli import main\n"
        "main()\n"
    )
    code, stdout, shown = run_on_terminal(
        [sys.executable, "-c", script, "plan"], {**terminal_env, "PYTHONPATH": str(REPO)}
    )
    assert code == 70
    assert stdout == ""
    assert shown.count("command.crashed") == 1
    assert shown.rstrip().splitlines()[-1] == (
        "error: unexpected error (a bug): KeyError: 'no such invoice'; the traceback is in the"
        " log above. Please report it."
    )
    assert TOKEN_IN_LOCAL not in shown


def test_help_does_not_import_what_only_running_commands_need() -> None:
    """`connector --help` stays fast (issue 10): structlog, rich, pydantic and the HTTP client
    are imported by the commands that run, not by the command line's definition."""
    import subprocess
    import sys

    code = (
        "import sys, connector.cli; "
        "print(sorted(m for m in ('structlog', 'pydantic', 'pydantic_settings', 'httpx', "
        "'connector.settings', 'connector.sync') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", out


# What a command imports when it runs (issue 10, fast start). `status` reads local files and
# `mappings validate` the mapping files (and the local mirror): no HTTP client, no retry library,
# no structlog unless something is logged, no rich for a JSON document.
HTTP_AND_LOGS = ("structlog", "httpx", "tenacity", "connector.http", "connector.auth")

RUN_AND_LIST_MODULES = """
import contextlib, io, json, sys
watched = ("rich",) + tuple(sys.argv.pop(1).split(","))
from connector.cli import main
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit as exc:
        code = exc.code
found = sorted(m for m in watched if m in sys.modules)
print(json.dumps({"code": code, "stdout": out.getvalue(), "modules": found}))
"""


def run_listing_modules(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, ",".join(HTTP_AND_LOGS), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


@pytest.mark.parametrize("target", TARGETS)
def test_status_and_mappings_validate_import_only_what_they_use(
    env: dict[str, str], target: str
) -> None:
    from connector.state import StateStore

    StateStore(Path(env["CONNECTOR_STATE_DIR"])).close()  # a state directory, still empty
    env = {**env, "CONNECTOR_TARGET": target}

    status = run_listing_modules(["status", "--json"], env)
    assert status["code"] in (0, 1), status
    assert json.loads(status["stdout"])["target"] == target
    assert status["modules"] == []  # rich neither: no table to draw

    table = run_listing_modules(["status"], env)
    assert table["code"] == status["code"] and "State directory" in table["stdout"]
    assert table["modules"] == ["rich"]

    # With a state directory beside them, the mappings are tried on the mirror (the planner).
    validate = run_listing_modules(["mappings", "validate"], env)
    assert validate["code"] == 0 and validate["stdout"].startswith("OK: ")
    assert validate["modules"] == []


def test_structlog_is_imported_when_something_is_logged() -> None:
    """Configured before structlog is imported, logs still follow the configuration: the
    format, the stream and the secrets to redact."""
    code = (
        "import io, json, sys\n"
        "from connector import logs\n"
        "stream = io.StringIO()\n"
        f"logs.configure('json', stream=stream, secrets=[{LEDGER_SECRET!r}])\n"
        "log = logs.get_logger('connector.test')\n"
        "before = 'structlog' in sys.modules\n"
        f"log.warning('test.event', detail='token {LEDGER_SECRET}', refresh_token='x')\n"
        "log.debug('test.hidden')\n"
        "print(json.dumps({'before': before, 'after': 'structlog' in sys.modules,"
        " 'lines': stream.getvalue().splitlines()}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(completed.stdout)
    assert result["before"] is False and result["after"] is True
    [line] = [json.loads(text) for text in result["lines"]]
    assert line["event"] == "test.event" and line["level"] == "warning"
    assert line["detail"] == "token [redacted]" and line["refresh_token"] == "[redacted]"
    assert completed.stderr == ""  # not to standard error: to the configured stream
