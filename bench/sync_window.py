"""Benchmarks 1 and 2 of issue 10: the sync against each system's real rate window, and the
requests it spends per new invoice, per updated invoice and on a night with nothing new.

The real CLI (`python -m connector sync --json`, one process per run, as cron starts it) runs
against the sandbox served on loopback, with 30 ms added to every API answer and each fake's
own window (Fortnox 25 requests per 5 s per client and tenant; Visma 600 per minute per client
and endpoint), on a generated ledger of a few hundred (customer, month) groups. Three runs per
target share one state directory: the first creates every invoice; a ledger change that
updates some invoices, and the second run starts right after the first ends (back to back, so
the remote's window still holds the first run's requests); then a third run with nothing new.

The floor of a run is the least time its requests can take. Under the remote's window, `n`
requests in windows of `L` per `P` seconds need (ceil(n / L) - 1) * P (the first window is
empty, so its L go at once; Visma counts per endpoint, so its n is the busiest endpoint's).
Sent one after the other, they also need n * 30 ms. The floor is the larger of the two.

Run: `python -m bench.sync_window` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector import targets
from connector.sandbox import Faults, build_app, fake_module, fake_of
from connector.sandbox.app import LEDGER_PREFIX, LEDGER_TOKEN, Request, Response, SandboxApp
from connector.sandbox.demo import sandbox_settings
from connector.sandbox.sample import generate
from connector.sandbox.server import running

REPO = Path(__file__).resolve().parent.parent
MAPPINGS = REPO / "mappings"
LATENCY_MS = 30
CUSTOMERS = 39  # the fakes know customers 1003..1041
# Fortnox: 8 months, about 300 invoices, a dozen of its windows. Visma: 16 months, about 600
# invoices, so that the drafts endpoint passes its 600 per minute and the window counts.
MONTHS = {
    "fortnox": tuple(f"2026-{m:02d}" for m in range(3, 11)),
    "visma": tuple(f"2025-{m:02d}" for m in range(7, 13))
    + tuple(f"2026-{m:02d}" for m in range(1, 11)),
}
UPDATES = 30  # invoices the ledger change touches
# The remote's own window, as the fakes keep it: (requests, seconds, counted per endpoint).
WINDOWS = {"fortnox": (25, 5.0, False), "visma": (600, 60.0, True)}
API_PREFIX = {"fortnox": "/fortnox/3", "visma": "/visma/v2"}


@dataclass
class Run:
    """One CLI run: its wall time, its JSON report and the requests the sandbox saw."""

    name: str
    seconds: float
    report: dict[str, Any]
    requests: Counter[str] = field(default_factory=Counter)  # "METHOD /path" -> count
    # Seconds from the process's start to the target's first request, and from its last
    # request's answer to the process's end: start-up, pull and planning; closing.
    before_first: float = 0.0
    after_last: float = 0.0
    # Mean seconds the sandbox spent answering (its 30 ms included), and the median seconds
    # from one answer to the next request's arrival, of those under 0.1 s (not a wait for the
    # window): the connector's own time per request, and the wire's.
    serving: float = 0.0
    between: float = 0.0

    @property
    def api_span(self) -> float:
        return self.seconds - self.before_first - self.after_last

    def api(self, target: str) -> Counter[str]:
        prefix = API_PREFIX[target]
        return Counter(
            {k: v for k, v in self.requests.items() if k.split(" ")[1].startswith(prefix)}
        )

    def api_count(self, target: str) -> int:
        return sum(self.api(target).values())

    def writes(self, target: str) -> int:
        return sum(v for k, v in self.api(target).items() if not k.startswith("GET "))

    def ledger_requests(self) -> int:
        return sum(v for k, v in self.requests.items() if LEDGER_PREFIX in k)

    def busiest(self, target: str) -> int:
        """Requests in the busiest window: all, or the busiest endpoint's (Visma)."""
        if not WINDOWS[target][2]:
            return self.api_count(target)
        per: Counter[str] = Counter()
        prefix = API_PREFIX[target]
        for key, count in self.api(target).items():
            path = key.split(" ")[1][len(prefix) :].strip("/")
            per[path.split("/")[0].lower()] += count
        return max(per.values(), default=0)


def floor_seconds(target: str, busiest: int, total: int) -> float:
    limit, period, _ = WINDOWS[target]
    by_window = max(0, math.ceil(busiest / limit) - 1) * period
    return max(by_window, total * LATENCY_MS / 1000)


def cli_env(url: str, state_dir: Path, target: str) -> dict[str, str]:
    spec = targets.spec(target)
    section = fake_module(target).connector_section(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_TARGET": target,
            "CONNECTOR_LEDGER__URL": url + LEDGER_PREFIX,
            "CONNECTOR_LEDGER__TOKEN": LEDGER_TOKEN,
            "CONNECTOR_STATE_DIR": str(state_dir),
            "CONNECTOR_MAPPINGS_DIR": str(MAPPINGS),
            "CONNECTOR_LOG_FORMAT": "json",
            spec.env("search_settle_seconds"): "0",
            **{spec.env(name): value for name, value in section.items()},
        }
    )
    return env


def timed(app: SandboxApp, target: str) -> list[tuple[float, float]]:
    """Record (arrival, answer) of every request to the target's API, in order."""
    spans: list[tuple[float, float]] = []
    handle = app.handle
    prefix = API_PREFIX[target]

    def recording(request: Request) -> Response:
        arrived = time.perf_counter()
        response = handle(request)
        if request.path.startswith(prefix):
            spans.append((arrived, time.perf_counter()))
        return response

    app.handle = recording  # type: ignore[method-assign]
    return spans


def run_cli(
    name: str, app: SandboxApp, env: dict[str, str], spans: list[tuple[float, float]]
) -> Run:
    before = Counter(app.requests)
    spans.clear()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "sync", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    ended = time.perf_counter()
    seconds = ended - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    run = Run(name, seconds, report, Counter(app.requests) - before)
    if spans:
        run.before_first = spans[0][0] - started
        run.after_last = ended - spans[-1][1]
        run.serving = sum(b - a for a, b in spans) / len(spans)
        gaps = [n[0] - p[1] for p, n in itertools.pairwise(spans)]
        quick = sorted(g for g in gaps if g < 0.1)  # longer: mostly a wait for the window
        run.between = quick[len(quick) // 2] if quick else 0.0
    return run


def ledger_change(raw: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """A new revision, more hours, of one billable entry in each of `count` groups."""
    seen: set[tuple[str, str]] = set()
    changed = []
    for entry in raw:
        group = (entry["customer_number"], entry["performed_on"][:7])
        if group in seen or entry["prepaid_hours"] != "0" or entry["kind"] != "debit":
            continue
        if entry["category"] in ("guidance", "product_fault", "partner_api_update"):
            continue
        seen.add(group)
        changed.append({**entry, "revision": entry["revision"] + 1, "hours": "7.5"})
        if len(changed) == count:
            break
    return changed


def bench_target(target: str) -> dict[str, Any]:
    raw = generate(customers=CUSTOMERS, months=MONTHS[target], specials=False)
    with tempfile.TemporaryDirectory(prefix="bench-window-") as folder:
        ledger_file = Path(folder) / "ledger.jsonl"
        ledger_file.write_text("\n".join(json.dumps(e) for e in raw) + "\n", encoding="utf-8")
        app = build_app(ledger_file, faults=Faults(latency_ms=LATENCY_MS))
        state_dir = Path(folder) / "state"
        with running(app) as server:
            # Stores the seed refresh token where the target authorises by one.
            sandbox_settings(server.url, state_dir, MAPPINGS, target)
            env = cli_env(server.url, state_dir, target)
            spans = timed(app, target)
            first = run_cli("new", app, env, spans)
            app.ledger.append(ledger_change(raw, UPDATES))
            second = run_cli("updated", app, env, spans)  # right after: the window is full
            quiet = run_cli("quiet", app, env, spans)
        rate_limited = fake_of(app, target).rate_limited
    return {"first": first, "second": second, "quiet": quiet, "fake_429": rate_limited}


def report(target: str, result: dict[str, Any]) -> list[str]:
    first: Run = result["first"]
    second: Run = result["second"]
    quiet: Run = result["quiet"]
    limit, period, per_endpoint = WINDOWS[target]
    lines = [f"{target}: window {limit}/{period:g} s{' per endpoint' if per_endpoint else ''}"]
    for run in (first, second, quiet):
        n = run.api_count(target)
        floor = floor_seconds(target, run.busiest(target), n)
        ratio = run.seconds / floor if floor else float("nan")
        lines.append(
            f"  {run.name:<8} requests {n:>4} (busiest window {run.busiest(target):>4})  "
            f"floor {floor:6.2f} s  wall {run.seconds:6.2f} s  ratio {ratio:5.3f}  "
            f"429s {run.report['rate_limited']}  created {len(run.report['invoices']['created'])}"
            f"  updated {len(run.report['invoices']['updated'])}"
        )
        lines.append(
            f"           first request after {run.before_first:5.2f} s, requests over "
            f"{run.api_span:6.2f} s (ratio {run.api_span / floor if floor else math.nan:5.3f}), "
            f"end {run.after_last:4.2f} s after the last answer; per request: sandbox "
            f"{run.serving * 1000:4.1f} ms, connector and wire {run.between * 1000:4.1f} ms"
        )
    both = first.api_count(target) + second.api_count(target)
    busiest = first.busiest(target) + second.busiest(target)
    floor = floor_seconds(target, busiest, both)
    wall = first.seconds + second.seconds
    lines.append(
        f"  back to back (new, then updated): requests {both}  floor {floor:6.2f} s  "
        f"wall {wall:6.2f} s  ratio {wall / floor:5.3f}  429s seen by the fake "
        f"{result['fake_429']}"
    )
    created = len(first.report["invoices"]["created"])
    updated = len(second.report["invoices"]["updated"])
    base = quiet.api_count(target)
    lines.append(
        f"  per new invoice {first.api_count(target) / created:.3f} "
        f"({(first.api_count(target) - base) / created:.3f} beyond a quiet night's reads)"
    )
    lines.append(
        f"  per updated invoice {second.api_count(target) / updated:.3f} "
        f"({(second.api_count(target) - base) / updated:.3f} beyond a quiet night's reads)"
    )
    reads = quiet.api_count(target) - quiet.writes(target)
    lines.append(
        f"  quiet night: writes {quiet.writes(target)}, ledger requests "
        f"{quiet.ledger_requests()}, reads {reads} for {len(MONTHS[target])} open months "
        f"({reads / len(MONTHS[target]):.2f} per month): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(quiet.api(target).items()))
    )
    return lines


def run(names: list[str] | None = None) -> None:
    """Both benchmarks for each target (all by default), printed as they finish."""
    for target in names or list(targets.names()):
        for line in report(target, bench_target(target)):
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", nargs="*", default=list(targets.names()))
    run(parser.parse_args().targets)


if __name__ == "__main__":
    main()
