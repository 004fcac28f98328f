"""One rate window per account across processes: the client-side limiter's recent send times
kept in a small file in the state directory.

The remote counts requests per client and company (Fortnox: 25 per 5 s per client id and
tenant), not per process, so two commands run back to back or at once must share the window,
or the second meets 429s the first caused. Every acquire and release takes an exclusive
`flock` on the window file, reads it, decides, and writes it back in one `pwrite` (no rename:
renaming over a file costs a disk flush on ext4, and this happens twice per request), so a
process killed at any moment leaves the old window or the new one. A file that is unreadable
or garbage is an empty window, never an error. Times are wall-clock seconds (`time.time`), the
one clock every process shares.

The file holds only times. Its name is the target's name and a digest of the API address,
the client id and the tenant: never a secret, and a new client or company starts its own.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import fcntl
import hashlib
import math
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from connector import http
from connector.http import RateLimiter, admit, moved
from connector.logs import get_logger

log = get_logger(__name__)

PREFIX = "rate-window-"
# The file: MAGIC, the number of times (uint32), then the times (float64), little-endian. Binary
# because it is read and written twice per request: JSON's floats cost a millisecond at 500.
MAGIC = b"CRW1"
_HEADER = struct.Struct("<4sI")
MAX_SIZE = 1 << 22  # far beyond any window (a million times); a larger file is garbage


def wall_clock() -> float:
    """Seconds since the epoch: comparable between processes, unlike a monotonic clock.
    Tests replace it."""
    return time.time()


def window_path(
    state_dir: Path, target: str, api_url: str, client_id: str | None, tenant: str | None = None
) -> Path:
    """The window file of one account: `<state dir>/rate-window-<target>-<digest>`."""
    account = "\n".join((target, api_url, client_id or "", tenant or ""))
    digest = hashlib.sha256(account.encode()).hexdigest()[:16]
    return state_dir / f"{PREFIX}{target}-{digest}"


def parse_window(raw: bytes) -> list[float]:
    """The send times in a window file's content, ascending; anything unexpected (a file cut
    short, garbage, another version) is an empty window."""
    if len(raw) < _HEADER.size:
        return []
    magic, count = _HEADER.unpack_from(raw)
    end = _HEADER.size + 8 * count
    if magic != MAGIC or end > len(raw):
        return []
    times = array.array("d")
    times.frombytes(raw[_HEADER.size : end])
    if sys.byteorder != "little":  # pragma: no cover - the file is little-endian everywhere
        times.byteswap()
    sent = times.tolist()
    if not all(map(math.isfinite, sent)):
        sent = [t for t in sent if math.isfinite(t)]
    sent.sort()
    return sent


def render_window(sent: list[float]) -> bytes:
    """A window file's content: the magic, the count, the times as little-endian doubles."""
    times = array.array("d", sent)
    if sys.byteorder != "little":  # pragma: no cover
        times.byteswap()
    return _HEADER.pack(MAGIC, len(sent)) + times.tobytes()


class SharedRateLimiter(RateLimiter):
    """`RateLimiter` whose window lives in the file `path`, shared by every process using it.
    Falls back to the in-process window (with one warning) if the file cannot be opened: a
    read-only state directory must not stop a command that would otherwise work."""

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        path: Path,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(limit, period, clock=clock, sleep=sleep)
        self.path = path
        self._local = False  # True once the file could not be used
        self._made = False  # the folder exists

    def now(self) -> float:
        return (self._clock or wall_clock)()

    def acquire(self) -> float:
        while True:
            with self._window() as window:
                if window is None:
                    return super().acquire()
                now = self.now()
                window.sent, wait = admit(window.sent, now, self.limit, self.period)
            if wait is None:
                return now
            self.waited += wait
            (self._sleep or http.pause)(wait)  # looked up now: tests replace it

    def release(self, ticket: float) -> None:
        with self._window() as window:
            if window is None:
                super().release(ticket)
                return
            now = self.now()
            # Times older than a period decide nothing: keep the file small.
            kept = moved(window.sent, ticket, now)
            window.sent = kept[bisect.bisect_right(kept, now - self.period) :]

    @contextlib.contextmanager
    def _window(self) -> Iterator[_Open | None]:
        """The window, read under an exclusive lock on its file held for the whole block and
        written back at its end; None when the file cannot be used (the in-process window
        stands in)."""
        if self._local:
            yield None
            return
        try:
            if not self._made:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._made = True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._fall_back(exc)
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size > MAX_SIZE:
                    os.ftruncate(fd, 0)
                    size = 0
                raw = os.pread(fd, size, 0) if size else b""
            except OSError as exc:
                self._fall_back(exc)
                yield None
                return
            window = _Open(parse_window(raw))
            yield window
            data = render_window(window.sent)
            try:
                # One write over the whole old content (what follows the count is ignored):
                # a process killed at any moment leaves the old window or the new one.
                if os.pwrite(fd, data.ljust(size, b"\0"), 0) < max(size, len(data)):
                    os.ftruncate(fd, 0)  # a short write (disk full): an empty window
                elif size > len(data):
                    os.ftruncate(fd, len(data))
            except OSError as exc:
                self._fall_back(exc)
        finally:
            os.close(fd)  # closing releases the lock

    def _fall_back(self, exc: OSError) -> None:
        log.warning(
            "rate_window.local_only",
            path=str(self.path),
            reason=type(exc).__name__,
            detail="this process keeps its own rate window; others may add to the remote's",
        )
        self._local = True


@dataclass
class _Open:
    """The window read from the file, for the block holding its lock to change."""

    sent: list[float]


def shared_limiter(
    state_dir: Path,
    target: str,
    rate_limit: str,
    *,
    api_url: str,
    client_id: str | None,
    tenant: str | None = None,
    sleep: Callable[[float], None] | None = None,
) -> SharedRateLimiter:
    """The limiter of one account (`rate_limit` as REQUESTS/SECONDS), shared through
    `state_dir` by every command that uses that account."""
    path = window_path(state_dir, target, api_url, client_id, tenant)
    return SharedRateLimiter.parse(rate_limit, path=path, sleep=sleep)
