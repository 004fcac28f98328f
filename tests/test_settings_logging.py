"""Settings name the variable to fix; logs are JSON lines with every secret redacted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from connector import logs
from connector.errors import ConfigError, ExitCode
from connector.settings import load_settings

SECRET = "s3cr3t-ledger-token-value"


def test_defaults() -> None:
    settings = load_settings()
    assert settings.state_dir == Path("var")
    assert settings.mappings_dir == Path("mappings")
    assert settings.target == "fortnox"
    assert settings.log_format == "auto"


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
