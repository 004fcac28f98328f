"""Settings from the environment (prefix CONNECTOR_, nested delimiter __) or a `.env` file.

Sections are optional in the model and required by the commands that use them, so
`connector mappings validate` runs without ledger credentials while `connector plan` names the
exact variable that is missing.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.errors import ConfigError
from connector.locations import default_state_dir

if TYPE_CHECKING:
    from connector.planning import Limits
    from connector.prepaid import Prepaid

ENV_PREFIX = "CONNECTOR_"
LogLevel = Literal["debug", "info", "warning", "error"]
# CONNECTOR_* variables read outside the Settings model, so that they are not reported as
# unknown. Prefer a settings field; list a variable here only when it cannot be one.
OTHER_VARIABLES = frozenset({"CONNECTOR_FAILPOINT"})  # crash tests' kill points (sync.py)


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


class InvoiceSettings(BaseModel):
    """How new invoices look, whatever the target (docs/planning.md, Invoice date)."""

    # month_end: the last day of the service month; next_month_start: the first day after it.
    # Either way moved to the first open day when that date lies in a locked period.
    date: Literal["month_end", "next_month_start"] = "month_end"
    # The invoice's remarks text. Unset: the customer card's own remark applies, untouched.
    remarks: str | None = Field(default=None, max_length=1024)


class LimitsSettings(BaseModel):
    """Sanity limits per ledger entry (docs/planning.md, Sanity limits): beyond one, an entry
    needs attention and is not invoiced until confirmed."""

    max_hours: Decimal = Field(default=Decimal(200), gt=0)
    max_unit_price: Decimal = Field(default=Decimal(5000), gt=0)
    max_amount: Decimal = Field(default=Decimal(250000), gt=0)
    # Entries a person checked: comma-separated "ID@REVISION" (that revision) or "ID" (every).
    confirmed: str = ""

    def limits(self) -> Limits:
        from connector.planning import Limits

        return Limits(
            max_hours=self.max_hours,
            max_unit_price=self.max_unit_price,
            max_amount=self.max_amount,
            confirmed=frozenset(p.strip() for p in self.confirmed.split(",") if p.strip()),
        )


class NotifySettings(BaseModel):
    """Alerts when a sync needs a person (connector/notify.py; docs/operations.md, Alerts).
    Both channels are optional and may be used together."""

    # A Slack-compatible incoming webhook (`{"text": ...}`). A secret: Slack's carries a token.
    webhook_url: SecretStr | None = None
    # Comma-separated addresses; e-mail needs smtp_host and email_from too.
    email_to: str | None = None
    email_from: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    # Per channel and step (connect, each read): a dead webhook or mail server cannot hold up
    # the nightly job for longer than a few of these.
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")  # never echo the value
        return SecretStr(url)

    @field_validator("email_to", "email_from", "smtp_host", "smtp_username")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _email_complete(self) -> NotifySettings:
        if self.email_to is None:
            return self
        missing = [
            env_name(("notify", name))
            for name in ("smtp_host", "email_from")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(f"CONNECTOR_NOTIFY__EMAIL_TO needs {' and '.join(missing)} as well")
        for address in [*self.recipients(), self.email_from or ""]:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an e-mail address")
        return self

    def recipients(self) -> list[str]:
        return [a.strip() for a in (self.email_to or "").split(",") if a.strip()]


class PrepaidSettings(BaseModel):
    """The prepaid hours balance (docs/planning.md, Prepaid hours)."""

    # attention: prepaid hours drawn beyond the balance need attention and are not invoiced;
    # invoice: they are invoiced as ordinary hours of the entry's category.
    overdraw: Literal["attention", "invoice"] = "attention"
    # Each invoice of a customer with prepaid hours ends with a text row: the balance at the
    # end of its month.
    balance_row: bool = False

    def policy(self) -> Prepaid:
        from connector.prepaid import Prepaid

        return Prepaid(overdraw=self.overdraw, balance_row=self.balance_row)


class CommonSettings(BaseSettings):
    """Every setting but the accounting systems' own sections, which `Settings` adds from the
    target registry (one `CONNECTOR_<NAME>__*` section per system)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    invoice: InvoiceSettings = Field(default_factory=InvoiceSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    prepaid: PrepaidSettings = Field(default_factory=PrepaidSettings)
    state_dir: Path = Field(default_factory=default_state_dir)
    mappings_dir: Path = Path("./mappings")
    # Which accounting system `sync` writes to: a name in the target registry.
    target: str = "fortnox"
    log_format: Literal["json", "console", "auto"] = "auto"
    # Unset: warning on a terminal (a short screen), info otherwise (complete logs under cron).
    log_level: LogLevel | None = None

    @field_validator("target", mode="before")
    @classmethod
    def _known_target(cls, value: object) -> object:
        from connector import targets

        if isinstance(value, str):
            value = value.strip().lower()
            if value not in targets.TARGETS:
                raise ValueError(f"must be one of {', '.join(targets.TARGETS)}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

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

    def section(self, name: str) -> BaseModel:
        """One accounting system's settings section (`CONNECTOR_<NAME>__*`)."""
        section = getattr(self, name)
        assert isinstance(section, BaseModel)
        return section

    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction processor."""
        values: list[object] = [self.ledger.token]
        for name in type(self).model_fields:
            section = getattr(self, name)
            if isinstance(section, BaseModel):
                values.extend(getattr(section, field) for field in type(section).model_fields)
        if self.notify.webhook_url is not None:
            # A webhook's token is in its path (Slack) or query: redacted on their own too, in
            # case a message quotes the address in another form.
            parts = urlsplit(self.notify.webhook_url.get_secret_value())
            values += [SecretStr(parts.path.rstrip("/")), SecretStr(parts.query)]
        return [
            v.get_secret_value()
            for v in values
            if isinstance(v, SecretStr) and v.get_secret_value()
        ]


def _settings_model() -> type[CommonSettings]:
    """CommonSettings plus one section per registered accounting system."""
    from connector import targets

    sections: dict[str, Any] = {
        spec.name: (spec.settings, Field(default_factory=spec.settings)) for spec in targets.specs()
    }
    model: type[CommonSettings] = create_model(
        "Settings", __base__=CommonSettings, __module__=__name__, **sections
    )
    return model


if TYPE_CHECKING:
    Settings = CommonSettings
else:
    Settings = _settings_model()


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
            message = str(err["msg"]).removeprefix("Value error, ")  # pydantic's wording
            lines.append(f"{env_name(loc)}: {message}")
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None


# --- unknown variables ---------------------------------------------------------------------


@dataclass(frozen=True)
class UnknownVariable:
    """A CONNECTOR_* name that no setting reads: a typo, or a setting that no longer exists.
    Holds the name only, never the value (it may be a secret)."""

    name: str
    source: str  # "environment" or the .env file's path
    suggestion: str | None  # the closest known variable, if any is close


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models in a field's annotation (`Section`, `Section | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models_in(arg)


def known_variables(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> frozenset[str]:
    """Every variable name the settings model reads, derived from its fields: a nested section
    gives its own name (a JSON object) and one `SECTION__FIELD` name per field, at any depth.
    New settings fields are picked up without a list to update."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        if alias is None:
            name = prefix + field_name.upper()
        else:  # pydantic-settings reads a top-level alias as the whole variable name
            name = alias.upper() if prefix == ENV_PREFIX else prefix + alias.upper()
        names.add(name)
        for section in _models_in(field.annotation):
            names |= known_variables(section, name + "__")
    return frozenset(names)


def unknown_variables(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    model: type[BaseModel] = Settings,
) -> list[UnknownVariable]:
    """CONNECTOR_* variables in the environment or the `.env` file that no setting reads, each
    once, with the closest known name. Settings load all the same (they are ignored)."""
    environ = os.environ if environ is None else environ
    if env_file is None:
        configured = Settings.model_config.get("env_file")
        env_file = Path(configured) if isinstance(configured, str | Path) else None
    sources: list[tuple[str, list[str]]] = [("environment", list(environ))]
    if env_file is not None and env_file.is_file():
        # Only the names are used; the values are never looked at, let alone kept.
        sources.append((str(env_file), [k for k in dotenv_values(env_file) if k]))
    known = known_variables(model) | OTHER_VARIABLES
    tails = {name.removeprefix(ENV_PREFIX): name for name in known}
    found: dict[str, UnknownVariable] = {}
    for source, names in sources:
        for raw in names:
            name = raw.upper()  # settings are read case-insensitively
            if not name.startswith(ENV_PREFIX) or name in known or name in found:
                continue
            # Compare without the common prefix, which would make every name look alike.
            close = difflib.get_close_matches(
                name.removeprefix(ENV_PREFIX), list(tails), n=1, cutoff=0.6
            )
            found[name] = UnknownVariable(raw, source, tails[close[0]] if close else None)
    return sorted(found.values(), key=lambda v: v.name)
