"""Structured logging: JSON lines for cron, readable lines on a terminal, secrets never printed.

Logs go to standard error so that standard output carries only a command's result (a plan, a
summary, a JSON document) and can be piped.

structlog (and through it rich and asyncio, tens of milliseconds) is imported when something
is first logged, not by `configure()` or `get_logger()`: a command that logs nothing (`status`,
`mappings validate` without a warning) starts without it. Until then the configuration waits.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    import structlog

REDACTED = "[redacted]"
# Keys whose values are secret whatever they hold.
_SECRET_KEY = re.compile(
    r"(token|secret|password|authorization|api[_-]?key|refresh|code_verifier|^code$)", re.I
)
# Bearer/Basic credentials embedded in free text (an exception message quoting a header).
_CREDENTIAL_IN_TEXT = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.I)


class Redactor:
    """structlog processor that removes secrets by key name and by known value."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, values: Iterable[str]) -> None:
        # Very short values would redact ordinary words; real secrets are long.
        self._values.update(v for v in values if len(v) >= 6)

    def scrub(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return _CREDENTIAL_IN_TEXT.sub(lambda m: f"{m.group(1)} {REDACTED}", text)

    def _clean(self, key: str, value: Any) -> Any:
        if _SECRET_KEY.search(key) and value not in (None, "", 0):
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._clean(key, event_dict[key])
        return event_dict


redactor = Redactor()
# The format chosen by configure(): None until a command configured logging.
active_format: str | None = None

# CONNECTOR_LOG_LEVEL's values.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed or detached
        return False


# Events a command's own output lists in full (its "Needs attention" section): a person at a
# terminal would read each twice. JSON logs, and an explicit CONNECTOR_LOG_LEVEL, keep them.
SHOWN_IN_OUTPUT = frozenset({"invoice.attention"})


def _drop_shown_in_output(_logger: Any, _method: str, event: Any) -> Any:
    if event.get("event") in SHOWN_IN_OUTPUT:
        import structlog

        raise structlog.DropEvent
    return event


# The configuration chosen by configure() before structlog was imported: applied on import.
_pending: Callable[[ModuleType], None] | None = None


def _structlog() -> ModuleType:
    """structlog, configured: the configuration waiting for it, else (nothing configured yet)
    logs to standard error, never to standard output, which carries results (JSON documents,
    plans) that other programs read."""
    global _pending
    import structlog

    if _pending is not None:
        apply, _pending = _pending, None
        apply(structlog)
    elif not structlog.is_configured():
        structlog.configure(logger_factory=_StderrLoggerFactory())
    return structlog


def configure(
    fmt: Literal["json", "console", "auto"] = "auto",
    *,
    stream: TextIO | None = None,
    level: int | str | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Log to `stream` (standard error). `auto` is the console renderer on a terminal and JSON
    lines otherwise. Without a level: warning on a terminal with the console renderer (a person
    sees what needs them, not every step), info otherwise (cron keeps complete logs)."""
    global active_format, _pending
    stream = stream or sys.stderr
    redactor.add(secrets)
    tty = _isatty(stream)
    if fmt == "auto":
        fmt = "console" if tty else "json"
    active_format = fmt
    quiet = fmt == "console" and level is None
    if level is None:
        level = logging.WARNING if fmt == "console" and tty else logging.INFO
    elif isinstance(level, str):
        level = LEVELS[level.lower()]
    json_lines = fmt == "json"
    filter_level = level

    def apply(structlog: ModuleType) -> None:
        renderer: Any = (
            structlog.processors.JSONRenderer(sort_keys=False)
            if json_lines
            else structlog.dev.ConsoleRenderer(
                # structlog's default formatter is rich's, which prints local variables: secrets.
                colors=False,
                exception_formatter=structlog.dev.plain_traceback,
            )
        )
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                *([_drop_shown_in_output] if quiet else []),
                redactor,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(filter_level),
            logger_factory=structlog.PrintLoggerFactory(file=stream),
            cache_logger_on_first_use=False,
        )

    _pending = apply
    if "structlog" in sys.modules:  # loggers may exist already: they follow at once
        _structlog()


class _Logger:
    """A module's logger, made at import: structlog is imported when it first logs, so that
    importing a module (the sync, for `mappings validate`) does not import structlog."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(_structlog().get_logger(self._name), attribute)


def get_logger(name: str) -> Any:
    return _Logger(name)


class _StderrLoggerFactory:
    """Resolves sys.stderr at each call, so redirected streams are honoured."""

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        import structlog

        return structlog.PrintLogger(sys.stderr)


if "structlog" in sys.modules:
    _structlog()  # imported already (by a test, say): never to standard output from now on
