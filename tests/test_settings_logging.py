"""Settings name the variable to fix; logs are JSON lines with every secret redacted."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import platformdirs
import pytest
from pydantic import BaseModel, SecretStr

from connector import logs
from connector.errors import ConfigError, ExitCode
from connector.settings import (
    OTHER_VARIABLES,
    Settings,
    known_variables,
    load_settings,
    unknown_variables,
)

SECRET = "s3cr3t-ledger-token-value"


def test_defaults() -> None:
    settings = load_settings()
    # The state lives in the per-user state folder, whatever the working directory.
    assert settings.state_dir == platformdirs.user_state_path("connector")
    assert settings.state_dir.is_absolute()
    assert settings.mappings_dir == Path("mappings")
    assert settings.target == "fortnox"
    assert settings.log_format == "auto"
    assert settings.log_level is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is Linux's convention")
def test_default_state_dir_follows_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert load_settings().state_dir == tmp_path / "xdg" / "connector"
    monkeypatch.setenv("CONNECTOR_STATE_DIR", str(tmp_path / "mine"))
    assert load_settings().state_dir == tmp_path / "mine"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_LEDGER__URL", "https://ledger.example/api/")
    monkeypatch.setenv("CONNECTOR_LEDGER__TOKEN", SECRET)
    monkeypatch.setenv("CONNECTOR_TARGET", "visma")
    settings = load_settings()
    url, token = settings.require_ledger()
    assert url == "https://ledger.example/api"
    assert token.get_secret_value() == SECRET
    assert settings.target == "visma"
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"CONNECTOR_LEDGER__URL=http://127.0.0.1:1/ledger\nCONNECTOR_LEDGER__TOKEN={SECRET}\n"
    )
    assert load_settings().require_ledger()[0] == "http://127.0.0.1:1/ledger"


def test_missing_ledger_names_the_variables() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings().require_ledger()
    assert "CONNECTOR_LEDGER__URL and CONNECTOR_LEDGER__TOKEN" in str(info.value)
    assert info.value.exit_code is ExitCode.CONFIG


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CONNECTOR_TARGET", "sap", "CONNECTOR_TARGET"),
        ("CONNECTOR_LOG_FORMAT", "xml", "CONNECTOR_LOG_FORMAT"),
        ("CONNECTOR_LEDGER__URL", "ftp://x", "CONNECTOR_LEDGER__URL"),
        ("CONNECTOR_LEDGER__PAGE_SIZE", "5000", "CONNECTOR_LEDGER__PAGE_SIZE"),
        ("CONNECTOR_LOG_LEVEL", "verbose", "CONNECTOR_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONNECTOR_LEDGER__TOKEN", SECRET)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)
    assert SECRET not in str(info.value)


def capture(fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(fmt, stream=stream, secrets=[SECRET])  # type: ignore[arg-type]
    return stream


def test_json_lines_with_secrets_redacted() -> None:
    stream = capture()
    log = logs.get_logger("test")
    log.info("token.refreshed", access_token=SECRET, refresh_token="other-secret-1")
    log.info("request", headers={"Authorization": f"Bearer {SECRET}", "Accept": "json"})
    log.warning("failed", detail=f"server said token {SECRET} is invalid")
    log.error("wire", detail="Authorization: Bearer abc.def.ghi rejected")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 4
    assert lines[0]["access_token"] == logs.REDACTED
    assert lines[0]["refresh_token"] == logs.REDACTED
    assert lines[1]["headers"] == {"Authorization": logs.REDACTED, "Accept": "json"}
    assert lines[2]["detail"] == f"server said token {logs.REDACTED} is invalid"
    assert "abc.def.ghi" not in lines[3]["detail"]
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert SECRET not in stream.getvalue()


def test_exceptions_in_logs_are_scrubbed() -> None:
    stream = capture("console")
    logs.get_logger("test").error("boom", error=RuntimeError(f"bad {SECRET}"))
    assert SECRET not in stream.getvalue()
    assert "RuntimeError: bad [redacted]" in stream.getvalue()


def test_log_level_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_LOG_LEVEL", " DEBUG ")
    assert load_settings().log_level == "debug"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log_three() -> None:
    log = logs.get_logger("test")
    log.debug("step.debug")
    log.info("step.info")
    log.warning("step.warning")


def test_terminal_logs_are_console_at_warning() -> None:
    """A person at a terminal sees what needs them, not a screen of progress lines."""
    terminal = _Terminal()
    logs.configure("auto", stream=terminal)
    _log_three()
    assert logs.active_format == "console"
    assert "step.info" not in terminal.getvalue()
    assert "step.warning" in terminal.getvalue()
    assert not terminal.getvalue().lstrip().startswith("{")


@pytest.mark.parametrize(
    ("fmt", "terminal"), [("auto", False), ("json", True), ("json", False), ("console", False)]
)
def test_logs_are_complete_at_info_otherwise(fmt: str, *, terminal: bool) -> None:
    """Under cron (not a terminal) or with JSON asked for, the logs stay complete."""
    stream = _Terminal() if terminal else io.StringIO()
    logs.configure(fmt, stream=stream)  # type: ignore[arg-type]
    _log_three()
    assert "step.info" in stream.getvalue() and "step.warning" in stream.getvalue()
    assert "step.debug" not in stream.getvalue()


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", {"step.debug", "step.info", "step.warning"}),
        ("info", {"step.info", "step.warning"}),
        ("warning", {"step.warning"}),
        ("error", set()),
    ],
)
def test_log_level_overrides_the_default(level: str, shown: set[str]) -> None:
    for stream in (_Terminal(), io.StringIO()):
        logs.configure("auto", stream=stream, level=level)
        _log_three()
        assert {
            e for e in ("step.debug", "step.info", "step.warning") if e in stream.getvalue()
        } == (shown)
    assert logs.LEVELS[level] == getattr(logging, level.upper())


def test_console_logs_never_print_local_variables() -> None:
    """structlog's console renderer would format exc_info with rich and show locals."""
    stream = capture("console")

    def crash() -> None:
        hidden = "local-value-never-shown"  # noqa: F841
        raise RuntimeError("boom")

    try:
        crash()
    except RuntimeError:
        logs.get_logger("test").exception("crashed")
    assert "RuntimeError: boom" in stream.getvalue()
    assert "local-value-never-shown" not in stream.getvalue()


# --- unknown variables ---------------------------------------------------------------------


def test_known_variables_are_derived_from_the_models() -> None:
    known = known_variables()
    assert {
        "CONNECTOR_LEDGER__TOKEN",
        "CONNECTOR_LEDGER",
        "CONNECTOR_FORTNOX__SEARCH_SETTLE_SECONDS",
        "CONNECTOR_INVOICE__DATE",
        "CONNECTOR_STATE_DIR",
        "CONNECTOR_LOG_LEVEL",
    } <= known
    # Every field of every section, so a new field needs no list to be updated.
    for section in ("ledger", "fortnox", "invoice"):
        model = type(getattr(Settings(), section))
        for name in model.model_fields:
            assert f"CONNECTOR_{section.upper()}__{name.upper()}" in known


def test_new_settings_are_known_without_a_list(tmp_path: Path) -> None:
    class Visma(BaseModel):
        client_secret: SecretStr | None = None

    class Deeper(BaseModel):
        visma: Visma = Visma()

    class Later(Settings):
        visma: Visma | None = None
        targets: Deeper = Deeper()
        retention_days: int = 30

    known = known_variables(Later)
    assert {
        "CONNECTOR_VISMA__CLIENT_SECRET",
        "CONNECTOR_TARGETS__VISMA__CLIENT_SECRET",
        "CONNECTOR_RETENTION_DAYS",
    } <= known
    environ = {"CONNECTOR_VISMA__CLIENT_SECRET": SECRET, "CONNECTOR_RETENTION_DAY": "3"}
    [unknown] = unknown_variables(environ, tmp_path / "none.env", model=Later)
    assert (unknown.name, unknown.suggestion) == (
        "CONNECTOR_RETENTION_DAY",
        "CONNECTOR_RETENTION_DAYS",
    )


def test_unknown_variables_name_the_closest_known_one(tmp_path: Path) -> None:
    environ = {
        "CONNECTOR_LEDGER__TOKN": SECRET,
        "CONNECTOR_STATEDIR": "/srv/state",
        "connector_log_levl": "debug",
        "CONNECTOR_LEDGER__URL": "http://x",
        "CONNECTOR_FAILPOINT": "after_put",
        "CONNECTOR_ZZZQQQ": "1",
        "PATH": "/usr/bin",
        "LEDGER__TOKN": "x",
    }
    found = {u.name: u for u in unknown_variables(environ, tmp_path / "no.env")}
    assert set(found) == {
        "CONNECTOR_LEDGER__TOKN",
        "CONNECTOR_STATEDIR",
        "connector_log_levl",
        "CONNECTOR_ZZZQQQ",
    }
    assert found["CONNECTOR_LEDGER__TOKN"].suggestion == "CONNECTOR_LEDGER__TOKEN"
    assert found["CONNECTOR_STATEDIR"].suggestion == "CONNECTOR_STATE_DIR"
    assert found["connector_log_levl"].suggestion == "CONNECTOR_LOG_LEVEL"
    assert found["CONNECTOR_ZZZQQQ"].suggestion is None
    assert all(u.source == "environment" for u in found.values())
    assert SECRET not in repr(list(found.values()))
    assert "CONNECTOR_FAILPOINT" in OTHER_VARIABLES


def test_unknown_variables_in_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        f"CONNECTOR_LEDGER__URL=http://127.0.0.1:1/ledger\nCONNECTOR_LEDGER__TOKN={SECRET}\n"
        "CONNECTOR_STATEDIR=/srv\n"
    )
    monkeypatch.setenv("CONNECTOR_STATEDIR", "/srv")  # in both: reported once
    found = unknown_variables()
    assert [(u.name, u.source, u.suggestion) for u in found] == [
        ("CONNECTOR_LEDGER__TOKN", ".env", "CONNECTOR_LEDGER__TOKEN"),
        ("CONNECTOR_STATEDIR", "environment", "CONNECTOR_STATE_DIR"),
    ]
    # The settings still load; the typo is ignored, so the token is reported as missing.
    settings = load_settings()
    assert settings.ledger.url == "http://127.0.0.1:1/ledger"
    with pytest.raises(ConfigError, match="CONNECTOR_LEDGER__TOKEN"):
        settings.require_ledger()


def test_a_terminal_is_not_told_twice_what_the_output_lists() -> None:
    """The sync's summary lists every invoice needing attention: on a terminal the log does
    not repeat them; JSON logs and an explicit level keep them."""
    for fmt, level, shown in (("console", None, False), ("json", None, True),
                              ("console", "info", True)):  # fmt: skip
        stream = _Terminal()
        logs.configure(fmt, stream=stream, level=level)  # type: ignore[arg-type]
        logs.get_logger("test").warning("invoice.attention", key="SK-1", reason="r")
        logs.get_logger("test").warning("state.company_unverified", target="t")
        assert ("SK-1" in stream.getvalue()) is shown, (fmt, level)
        assert "state.company_unverified" in stream.getvalue()
