"""Settings from the environment (prefix CONNECTOR_, nested delimiter __) or a `.env` file.

Sections are optional in the model and required by the commands that use them, so
`connector mappings validate` runs without ledger credentials while `connector plan` names the
exact variable that is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.errors import ConfigError

ENV_PREFIX = "CONNECTOR_"
TargetName = Literal["fortnox", "visma"]


class LedgerSettings(BaseModel):
    url: str | None = None
    token: SecretStr | None = None
    page_size: int = Field(default=500, ge=1, le=1000)
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    state_dir: Path = Path("./var")
    mappings_dir: Path = Path("./mappings")
    target: TargetName = "fortnox"
    log_format: Literal["json", "console", "auto"] = "auto"

    def require_ledger(self) -> tuple[str, SecretStr]:
        """The ledger URL and token, or a ConfigError naming the variable to set."""
        missing = [
            env_name(("ledger", name))
            for name, value in (("url", self.ledger.url), ("token", self.ledger.token))
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value())
        ]
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} (see README, Configuration)")
        assert self.ledger.url is not None
        assert self.ledger.token is not None
        return self.ledger.url, self.ledger.token

    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction processor."""
        token = self.ledger.token.get_secret_value() if self.ledger.token else ""
        return [token] if token else []


def env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's errors into one message per variable to fix."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(part for part in err["loc"] if isinstance(part, str | int))
            # Never echo the offending value: it may be a secret.
            lines.append(f"{env_name(loc)}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None
