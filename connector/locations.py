"""Where the connector keeps its files by default. Kept apart from settings so that the command
line's help can name the folder without importing pydantic."""

from __future__ import annotations

from pathlib import Path

import platformdirs


def default_state_dir() -> Path:
    """The platform's per-user state folder: `$XDG_STATE_HOME/connector` on Linux (normally
    `~/.local/state/connector`), `~/Library/Application Support/connector` on macOS. Never
    relative to the working directory, so cron and a person at a terminal share one state."""
    return platformdirs.user_state_path("connector")
