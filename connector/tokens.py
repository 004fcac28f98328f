"""Tokens on disk: the token set and the file that holds it (atomic writes, mode 0600, a lock
across processes). Apart from `connector.auth`, which obtains and renews tokens over HTTP, so
that reading what is stored (`connector status`, `auth status`) imports no HTTP client."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from connector.errors import ReauthRequiredError

# Renew this long before expiry, so a token never expires in the middle of a run's request.
EXPIRY_MARGIN_SECONDS = 300.0


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    expires_at: float  # epoch seconds
    refresh_token: str | None = None

    def valid(self, now: float) -> bool:
        return bool(self.access_token) and now < self.expires_at - EXPIRY_MARGIN_SECONDS


class TokenFile:
    """A token set on disk: written atomically (temp file, fsync, rename), mode 0600."""

    def __init__(self, path: Path, login_hint: str = "connector auth login") -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")
        self.login_hint = login_hint

    def read(self) -> TokenSet | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return TokenSet(
                access_token=str(data.get("access_token") or ""),
                expires_at=float(data.get("expires_at") or 0),
                refresh_token=data.get("refresh_token") or None,
            )
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError):
            # Cannot happen through write(); a hand-edited file needs a new login.
            raise ReauthRequiredError(
                f"token file {self.path} is unreadable; run: {self.login_hint}"
            ) from None

    def write(self, tokens: TokenSet) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".token-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(asdict(tokens), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes; waits for a refresh in another process to finish."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
