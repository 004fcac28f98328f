"""Progress hooks: how long work tells a terminal how far it is, without importing a display.

The command line sets a hook for a person at a terminal; under cron none is set and the JSON
logs say it all. Kept apart so that commands which never pull do not import the sync to set it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

# Told (entries stored so far, finished) after each page of a ledger pull.
PullProgress = Callable[[int, bool], None]
pull_progress: ContextVar[PullProgress | None] = ContextVar("pull_progress", default=None)
