"""Benchmark 3 of issue 10, scale: the connector run as a process against a generated ledger
served by the sandbox over loopback, as cron would run it.

For each size: the first `connector plan` (the whole feed pulled, then planned), a night with
nothing new (`plan` again), and a night with 1,000 changed entries (revisions appended to the
sandbox's feed, then `plan`). Each run is a fresh `python -m connector plan --json` with no
accounting-system credentials (the plan from the ledger and the state alone), its output
written to a file. Reported per run: wall time, exit code, peak memory (the child's own
maximum resident set, from wait4) and the time the sandbox spent answering (so a slow fake
shows as such). Then how each figure grows from one size to the next (the exponent k of
time ~ entries^k: 1 is linear, 0 is flat).

Whatever the command line does is what is measured: the harness reads only exit codes, times
and memory, so it runs unchanged when planning becomes incremental.

Run: `python -m bench.scale` (10k and 100k entries), `python -m bench.scale --max-entries
1000000` (adds 1M: a few minutes for the first pull alone, and about 1 GiB in this process
for the sandbox's ledger).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN, Ledger, Request, Response, SandboxApp
from connector.sandbox.sample import generate
from connector.sandbox.server import running

REPO = Path(__file__).resolve().parent.parent
MAPPINGS = REPO / "mappings"
MONTHS = tuple(f"2026-{m:02d}" for m in range(1, 13))
SIZES = (10_000, 100_000, 1_000_000)
# The generator's yield over 12 months (2 to 5 entries a month, a top-up for every fourth
# customer): about 42 entries per customer, so 20,000 customers make about 845,000.
ENTRIES_PER_CUSTOMER = 42.2
CHANGES = 1_000
RUN_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    cpu_seconds: float  # the child's user + system time: steadier than wall time on a shared box
    exit_code: int
    peak_mib: float
    sandbox_seconds: float
    output_bytes: int
    pulled: int | None  # entries the run says it pulled (its log), None if it did not say
    pull_seconds: float | None  # from the process's start to its `ledger.pulled` log line


@dataclass(frozen=True)
class SizeResult:
    customers: int
    entries: int
    runs: tuple[Run, ...]


class TimedApp:
    """The sandbox app with the time spent in its handler added up (the server's threads
    call `handle`; this counts how much of a run the fake itself costs)."""

    def __init__(self, app: SandboxApp) -> None:
        self.app = app
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._real = app.handle
        app.handle = self._handle  # type: ignore[method-assign]

    def _handle(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            return self._real(request)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - started

    def take(self) -> float:
        with self._lock:
            seconds, self.seconds = self.seconds, 0.0
        return seconds


def child_env(server_url: str, state_dir: Path) -> dict[str, str]:
    """The connector's settings for the sandbox ledger only: no accounting-system credentials,
    so `plan` is the offline plan (the ledger and the state alone). Inherited CONNECTOR_*
    variables are dropped so nothing from the caller's shell changes what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_TARGET": "fortnox",
            "CONNECTOR_LEDGER__URL": server_url + LEDGER_PREFIX,
            "CONNECTOR_LEDGER__TOKEN": LEDGER_TOKEN,
            "CONNECTOR_LEDGER__PAGE_SIZE": "1000",
            "CONNECTOR_STATE_DIR": str(state_dir),
            "CONNECTOR_MAPPINGS_DIR": str(MAPPINGS),
            "CONNECTOR_LOG_FORMAT": "json",
        }
    )
    return env


def run_connector(
    name: str, args: list[str], env: dict[str, str], folder: Path, timed: TimedApp
) -> Run:
    """One connector process; its own peak RSS from wait4 (RUSAGE_CHILDREN would give the
    largest child so far, not this one). Output goes to files: a pipe left unread would
    stall a large `--json` document."""
    out_path, err_path = folder / f"{name}.out", folder / f"{name}.err"  # name: size and run
    timed.take()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started, started_at = time.perf_counter(), time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", *args], env=env, stdout=out, stderr=err, cwd=REPO
        )
        deadline = started + RUN_TIMEOUT
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, high_water_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    code = proc.returncode
    if code not in (0, 1):  # 1: entries needing attention, expected in a generated ledger
        tail = err_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"connector {' '.join(args)} ({name}) exited {code}:\n{tail}")
    # ru_maxrss is in KiB on Linux, in bytes on macOS. On Linux it survives exec, so a child
    # of this (large) process starts at this process's size: the child's own high-water mark
    # (VmHWM, reset by exec), read while it runs, is the figure where there is one.
    rss = (peak_kib * 1024 or usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)) / 2**20
    size = out_path.stat().st_size
    entries, pulled_at = pulled(err_path)
    pull_seconds = None if pulled_at is None else pulled_at - started_at
    cpu = usage.ru_utime + usage.ru_stime
    return Run(name, seconds, cpu, code, rss, timed.take(), size, entries, pull_seconds)


def high_water_kib(pid: int) -> int:
    """The process's peak resident memory so far (Linux /proc; 0 where there is none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pulled(log_path: Path) -> tuple[int | None, float | None]:
    """The entries pulled and when the pull ended (epoch seconds), from the run's
    `ledger.pulled` log line (JSON lines on stderr); None for what it does not say."""
    for line in log_path.read_text(errors="replace").splitlines():
        if '"ledger.pulled"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        entries = record.get("entries")
        try:
            at = datetime.fromisoformat(str(record.get("timestamp"))).timestamp()
        except ValueError:
            at = None
        return (entries if isinstance(entries, int) else None), at
    return None, None


def changes(entries: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` revisions of entries spread over the whole ledger (many customers and months,
    as a night's corrections would be): one more revision each, a quarter hour more."""
    step = max(1, len(entries) // count)
    chosen = entries[::step][:count]
    return [
        {
            **e,
            "revision": int(e["revision"]) + 1,
            "hours": str(Decimal(e["hours"]) + Decimal("0.25")),
            "changed_at": "2026-12-01T06:00:00Z",
        }
        for e in chosen
    ]


def bench_size(target_entries: int, keep_dir: Path | None = None) -> SizeResult:
    customers = max(1, round(target_entries / ENTRIES_PER_CUSTOMER))
    raw = generate(customers=customers, months=MONTHS, specials=False)
    app = SandboxApp()
    app.ledger = Ledger(raw)
    timed = TimedApp(app)
    with tempfile.TemporaryDirectory(prefix="connector-scale-") as tmp, running(app) as server:
        folder = keep_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        env = child_env(server.url, folder / f"state-{len(raw)}")
        plan = ["plan", "--json"]
        size = len(raw)
        runs = [run_connector(f"{size}-first", plan, env, folder, timed)]
        runs.append(run_connector(f"{size}-quiet", plan, env, folder, timed))
        with app.lock:
            app.ledger.append(changes(raw, CHANGES))
        runs.append(run_connector(f"{size}-changes", plan, env, folder, timed))
    return SizeResult(customers, len(raw), tuple(runs))


NIGHTLY_ENTRIES = 10_000


def sync_env(server_url: str, state_dir: Path) -> dict[str, str]:
    """`child_env` with the sandbox's Fortnox (its public test credentials, the window
    lifted): the nightly `sync` itself, writing what it plans."""
    env = child_env(server_url, state_dir)
    api = server_url + "/fortnox"
    env.update(
        {
            "CONNECTOR_FORTNOX__API_URL": api + "/3",
            "CONNECTOR_FORTNOX__AUTH_URL": api + "/oauth-v1",
            "CONNECTOR_FORTNOX__CLIENT_ID": "sandbox",
            "CONNECTOR_FORTNOX__CLIENT_SECRET": "sandbox",
            "CONNECTOR_FORTNOX__TENANT_ID": "1234567",
            "CONNECTOR_FORTNOX__RATE_LIMIT": "100000/1",
            "CONNECTOR_FORTNOX__SEARCH_SETTLE_SECONDS": "0",
        }
    )
    return env


def bench_nightly(target_entries: int = NIGHTLY_ENTRIES) -> list[str]:
    """The nightly command itself, incremental planning at work: a first `sync` that writes
    every invoice, a night with nothing new, a night with one entry in a thousand revised.
    (The offline `plan` above never settles a customer, so it plans everything every time.)"""
    from connector.sandbox import build_app, fake_module

    customers = max(1, round(target_entries / ENTRIES_PER_CUSTOMER))
    raw = generate(customers=customers, months=MONTHS, specials=False)
    app = build_app(rate_limit="100000/1")
    app.ledger = Ledger(raw)
    fortnox = fake_module("fortnox").Driver(app)
    for number in sorted({str(e["customer_number"]) for e in raw} - fortnox.customers()):
        fortnox.add_customer(number, f"Kund {number}")  # every customer exists there
    timed = TimedApp(app)
    lines = []
    with tempfile.TemporaryDirectory(prefix="connector-nightly-") as tmp, running(app) as server:
        folder = Path(tmp)
        env = sync_env(server.url, folder / "state")
        nights = [("first", 0), ("quiet", 0), ("changes", max(1, len(raw) // 1000))]
        for name, count in nights:
            if count:
                with app.lock:
                    app.ledger.append(changes(raw, count))
            run = run_connector(f"nightly-{name}", ["sync", "--json"], env, folder, timed)
            report = json.loads((folder / f"nightly-{name}.out").read_text())
            invoices = report["invoices"]
            lines.append(
                f"sync entries={len(raw):,} {name:<8} changed={count:<4} {_wall_cpu(run)}  "
                f"peak {run.peak_mib:5.0f} MiB  planned {report['planned']['customers']:>4} "
                f"of {customers} customers  created {len(invoices['created']):>5}  "
                f"updated {len(invoices['updated']):>4}  requests {report['requests']:>5}"
            )
            print(lines[-1], flush=True)
    return lines


def _exponent(small: float, large: float, n_small: int, n_large: int) -> str:
    if small <= 0 or large <= 0:
        return "-"
    return f"{math.log(large / small) / math.log(n_large / n_small):.2f}"


def table(results: list[SizeResult]) -> Iterator[str]:
    yield "Wall time (the child's CPU time in brackets):"
    yield ""
    yield (
        "| entries | customers | first plan (pull + plan) | of which start + pull | quiet night "
        "| 1,000 changes | peak memory (largest run) | sandbox time (first) |"
    )
    yield "|---|---|---|---|---|---|---|---|"
    for r in results:
        first, quiet, changed = r.runs
        peak = max(run.peak_mib for run in r.runs)
        yield (
            f"| {r.entries:,} | {r.customers:,} | {_wall_cpu(first)} "
            f"| {_secs(first.pull_seconds)} | {_wall_cpu(quiet)} "
            f"| {_wall_cpu(changed)} | {peak:,.0f} MiB | {first.sandbox_seconds:.2f} s |"
        )
    if len(results) > 1:
        yield ""
        yield "Growth (k in CPU time ~ entries^k between consecutive sizes; 1 linear, 0 flat):"
        yield ""
        yield "| from -> to | first plan | quiet night | 1,000 changes | peak memory |"
        yield "|---|---|---|---|---|"
        for a, b in itertools.pairwise(results):
            cells = [
                _exponent(x.cpu_seconds, y.cpu_seconds, a.entries, b.entries)
                for x, y in zip(a.runs, b.runs, strict=True)
            ]
            memory = _exponent(
                max(x.peak_mib for x in a.runs),
                max(y.peak_mib for y in b.runs),
                a.entries,
                b.entries,
            )
            yield f"| {a.entries:,} -> {b.entries:,} | {' | '.join(cells)} | {memory} |"


def _wall_cpu(run: Run) -> str:
    return f"{run.seconds:.2f} s ({run.cpu_seconds:.2f} s)"


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def per_run(results: list[SizeResult]) -> Iterator[str]:
    for r in results:
        for run in r.runs:
            yield (
                f"scale entries={r.entries:>9,} {run.name.split('-')[-1]:<8} {run.seconds:8.2f} s  "
                f"cpu {run.cpu_seconds:8.2f} s  "
                f"exit {run.exit_code}  peak {run.peak_mib:7.0f} MiB  "
                f"sandbox {run.sandbox_seconds:6.2f} s  pulled {_count(run.pulled):>9} "
                f"in {_secs(run.pull_seconds):>9}  "
                f"output {run.output_bytes / 2**20:7.1f} MiB"
            )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-entries",
        type=int,
        default=100_000,
        help="largest ledger to run (sizes 10k, 100k, 1M up to this; default 100,000)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep state and outputs in this folder"
    )
    args = parser.parse_args(argv)
    sizes = [n for n in SIZES if n <= args.max_entries] or [args.max_entries]
    results: list[SizeResult] = []
    print(
        f"scale: {machine()}, sizes {', '.join(f'{n:,}' for n in sizes)}, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )
    for size in sizes:
        result = bench_size(size, args.keep)
        results.append(result)
        for line in per_run([result]):
            print(line, flush=True)
    # The machine is shared: the load says how much of the time was waiting for a core.
    print(f"scale: load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    for line in table(results):
        print(line)
    print()
    bench_nightly()


if __name__ == "__main__":
    main()
