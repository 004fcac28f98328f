"""What `make bench` writes into BENCHMARKS.md: the machine it ran on and every part's own
report, between two markers. The text around the markers (the goals, how each stands, why a
goal is missed) is written by hand and kept as it is."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
START = "<!-- make bench: figures start (written by `python -m bench`; do not edit) -->"
END = "<!-- make bench: figures end -->"


class _Tee(io.TextIOBase):
    """Standard output that is also kept: a part prints as it goes and is recorded."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        self.out.write(text)
        return len(text)

    def flush(self) -> None:
        self.out.flush()


@dataclass
class Record:
    parts: list[tuple[str, str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def part(self, title: str) -> Iterator[None]:
        """Run one benchmark, its output recorded under `title`."""
        print(f"\n== {title}", flush=True)
        tee = _Tee(sys.stdout)
        began = time.perf_counter()
        with contextlib.redirect_stdout(tee):
            yield
        self.parts.append((title, tee.kept.getvalue().strip("\n"), time.perf_counter() - began))

    def run(self, title: str, body: Callable[[], object]) -> None:
        with self.part(title):
            body()

    def markdown(self) -> str:
        load = os.getloadavg()
        lines = [
            START,
            "",
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, load average at "
            f"the end {load[0]:.1f}; the whole run took "
            f"{(time.perf_counter() - self.started) / 60:.1f} min.",
        ]
        for title, text, seconds in self.parts:
            lines += ["", f"### {title} ({seconds:.0f} s)", "", "```", text, "```"]
        lines += ["", END]
        return "\n".join(lines)

    def write(self, path: Path = FILE) -> None:
        """Replace the figures between the markers (appended when there are none yet)."""
        text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
        figures = self.markdown()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            text = head + figures + tail
        else:
            text = text.rstrip("\n") + "\n\n" + figures + "\n"
        path.write_text(text, encoding="utf-8")
        print(f"\nwrote {path}", flush=True)


def machine() -> str:
    """Cores, processor and Python, as the figures depend on them."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"
