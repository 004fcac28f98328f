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


class FortnoxSettings(BaseModel):
    api_url: str = "https://api.fortnox.se/3"
    auth_url: str = "https://apps.fortnox.se/oauth-v1"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # Set for the client-credentials flow (service account); empty for the refresh-token flow.
    tenant_id: str | None = None
    redirect_uri: str = "http://localhost:8790/fortnox/callback"
    rate_limit: str = "24/5"
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Whether Fortnox's search lists a new invoice at once is undocumented: after a lost create
    # answer, "not found" is trusted only this long after the create (docs/fortnox.md).
    search_settle_seconds: float = Field(default=600.0, ge=0)

    @field_validator("api_url", "auth_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        count, _, seconds = value.partition("/")
        try:
            ok = int(count) >= 1 and float(seconds) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("must be REQUESTS/SECONDS, e.g. 24/5")
        return value


class InvoiceSettings(BaseModel):
    """How new invoices look, whatever the target (docs/planning.md, Invoice date)."""

    # month_end: the last day of the service month; next_month_start: the first day after it.
    # Either way moved to the first open day when that date lies in a locked period.
    date: Literal["month_end", "next_month_start"] = "month_end"
    # The invoice's remarks text. Unset: the customer card's own remark applies, untouched.
    remarks: str | None = Field(default=None, max_length=1024)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    fortnox: FortnoxSettings = Field(default_factory=FortnoxSettings)
    invoice: InvoiceSettings = Field(default_factory=InvoiceSettings)
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

    def require_fortnox(self) -> tuple[str, SecretStr]:
        """Fortnox client id and secret, or a ConfigError naming the variable to set."""
        missing = []
        if not self.fortnox.client_id:
            missing.append(env_name(("fortnox", "client_id")))
        secret = self.fortnox.client_secret
        if secret is None or not secret.get_secret_value():
            missing.append(env_name(("fortnox", "client_secret")))
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} (see README, Configuration)")
        assert self.fortnox.client_id is not None
        assert secret is not None
        return self.fortnox.client_id, secret

    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction processor."""
        values = [self.ledger.token, self.fortnox.client_secret]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


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
