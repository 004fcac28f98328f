"""Soak: many rounds of `connector sync` as a real process against a loopback sandbox, with
random faults, SIGKILLs at random moments and at named write points, ledger changes and a
person booking, sending and editing invoices between rounds.

After every round: no invoice key has two live invoices in the fake, and no invoice the
customer holds was changed. At the end the faults are cleared, one clean sync runs, and the
fake is compared with the oracle (tests/harness.py) row by row: what the live invoices bill per
customer, article and price against what the ledger says, and every open draft against the
plan. A further sync must write nothing.

Run: `python -m bench.soak --rounds 200 --target fortnox` (both targets without --target);
`make bench` runs it for both. A short variant runs in `make test` (tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector import targets
from connector.mappings import load_mappings
from connector.sandbox import fake_module
from connector.sandbox.app import DropConnection, Request, Response, SandboxApp
from connector.sandbox.demo import sandbox_settings
from connector.sandbox.sample import generate
from connector.sandbox.server import running
from connector.sync import SyncReport
from tests.harness import (
    TARGETS,
    Driver,
    World,
    assert_matches_ledger,
    driver_for,
    live_by_key,
    oracle_nets,
)

REPO = Path(__file__).resolve().parent.parent
MAPPINGS_DIR = REPO / "mappings"
MONTHS = ("2026-09", "2026-10")
# The named points where a sync kills itself (connector/sync.py `failpoint`): every kind of
# write, before and after it reaches the fake.
POINTS = (
    "after_pull", "before_post", "after_post", "before_put", "after_put", "before_cancel",
    "after_cancel", "after_header_step",
)  # fmt: skip
CATEGORIES = (
    "installation", "training", "project", "guidance", "business_advisory", "project_management",
)  # fmt: skip
# The connector's limiter: no limit, and a period of 0.2 s, which is also how long it waits
# after a 429 that names no wait (Fortnox's fake names none): the soak exercises the retry,
# not the window.
CONNECTOR_RATE = "100000/0.2"
ARGV = ["sync", "--json"]
# How a round's run ends: by itself, at a named failpoint, SIGKILL after a random delay, or
# SIGKILL at a random moment around one of its first writes.
MODES = ("finish", "failpoint", "kill", "kill_writing")
FAULT_KNOBS = ("error_rate", "lost_create_rate", "lost_update_rate", "rate_429", "latency_ms")


@dataclass
class SoakResult:
    target: str
    rounds: int = 0
    # Rounds that had each fault switched on, and the 5xx/429 answers the fake gave.
    faults: Counter[str] = field(default_factory=Counter)
    answers_503: int = 0
    answers_429: int = 0
    answers_lost: int = 0  # creates and updates done, then the connection dropped
    kills_writing: int = 0  # kills (either kind) of a run that had written to the fake
    kills_random: int = 0  # SIGKILL from outside after a random delay
    kills_failpoint: int = 0  # SIGKILL at a named point (before/after a write)
    finished: int = 0  # runs that ended by themselves
    exit_codes: Counter[int] = field(default_factory=Counter)
    person: Counter[str] = field(default_factory=Counter)
    ledger_changes: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # keys with two live invoices, summed over every round's check
    sent_changed: int = 0  # invoices changed after the customer had them
    rows_lost: int = 0  # (customer, currency, article, price) groups billed short
    hours_lost: Decimal = Decimal(0)
    rows_twice: int = 0  # groups billed more than the ledger says
    hours_twice: Decimal = Decimal(0)
    differences: list[str] = field(default_factory=list)  # per group, when not equal
    oracle_failure: str | None = None  # the row-by-row oracle's message, if it failed
    final_writes: int = 0  # writes of a sync after the clean one (must be 0)
    live_invoices: int = 0
    writes: int = 0  # write requests the fake received over the whole soak
    bugs: list[str] = field(default_factory=list)  # exit 70 and stderr tails
    wall_seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return (
            self.duplicates == 0
            and self.sent_changed == 0
            and self.rows_lost == 0
            and self.rows_twice == 0
            and self.oracle_failure is None
            and self.final_writes == 0
            and not self.bugs
        )

    def line(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        return (
            f"soak  {self.target:<8} rounds={self.rounds} kills={self.kills_random}+"
            f"{self.kills_failpoint} (random+failpoint) finished={self.finished} "
            f"duplicates={self.duplicates} rows_lost={self.rows_lost} "
            f"billed_twice={self.rows_twice} sent_changed={self.sent_changed} "
            f"final_writes={self.final_writes} "
            f"oracle={'ok' if self.oracle_failure is None else 'FAILED'} "
            f"{self.wall_seconds:.1f} s\n"
            f"      faults (rounds): {faults}; answers: {self.answers_503} x 503, "
            f"{self.answers_429} x 429, {self.answers_lost} answers lost; kills while writing "
            f"{self.kills_writing}; exit codes {dict(sorted(self.exit_codes.items()))}; "
            f"person {dict(sorted(self.person.items()))}; "
            f"ledger {dict(sorted(self.ledger_changes.items()))}; writes {self.writes}; "
            f"live invoices {self.live_invoices}"
        )


def _environment(url: str, state_dir: Path, target: str, prepaid: bool) -> dict[str, str]:
    """The variables a `connector sync` process needs against the sandbox at `url`; nothing
    from the caller's CONNECTOR_ variables leaks in."""
    spec = targets.spec(target)
    section = fake_module(target).connector_section(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_LEDGER__URL": url + "/ledger/v1",
            "CONNECTOR_LEDGER__TOKEN": "sandbox",
            "CONNECTOR_STATE_DIR": str(state_dir),
            "CONNECTOR_MAPPINGS_DIR": str(MAPPINGS_DIR),
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_TARGET": target,
            **{spec.env(name): value for name, value in section.items()},
            spec.env("rate_limit"): CONNECTOR_RATE,
            # The fake lists a new invoice at once: nothing to wait for.
            spec.env("search_settle_seconds"): "0",
        }
    )
    if prepaid:
        env.update(
            {"CONNECTOR_PREPAID__OVERDRAW": "invoice", "CONNECTOR_PREPAID__BALANCE_ROW": "true"}
        )
    return env


@dataclass
class Run:
    code: int  # the exit code, -9 when killed
    killed: bool  # by the soak after a random delay (a failpoint kills the run itself)
    seconds: float
    err: str  # the tail of standard error


class Runner:
    """Runs `connector sync --json` as a new process, killing it (SIGKILL) after `kill_after`
    seconds when given and still running."""

    def __init__(self, folder: Path) -> None:
        self.stderr = folder / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.asked_kill = False

    def run(self, env: dict[str, str], kill_after: float | None) -> Run:
        started = time.perf_counter()
        with self.stderr.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "connector", *ARGV],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
            )
            self.proc, self.asked_kill = proc, False
            killed = False
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)  # our own child, not yet reaped
                killed = True
            proc.wait(timeout=300)
            self.proc = None
        killed = (killed or self.asked_kill) and proc.returncode == -signal.SIGKILL
        return Run(proc.returncode, killed, time.perf_counter() - started, self._tail())

    def kill_now(self) -> None:
        """From another thread, while a run is on: SIGKILL it now."""
        proc = self.proc
        if proc is not None:
            self.asked_kill = True
            proc.send_signal(signal.SIGKILL)  # does nothing once the child is reaped

    def _tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-1500:]

    def close(self) -> None:
        return


class WarmRunner(Runner):
    """The same run forked from a warm interpreter (bench/zygote.py): no 0.4 s of imports per
    run, so the soak's time goes to syncs, faults and kills."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.lock = threading.Lock()
        self.running = False
        self.zygote = subprocess.Popen(
            [sys.executable, "-m", "bench.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def run(self, env: dict[str, str], kill_after: float | None) -> Run:
        assert self.zygote.stdin is not None
        assert self.zygote.stdout is not None
        job = {"argv": ARGV, "env": env, "stderr": str(self.stderr), "kill_after": kill_after}
        with self.lock:
            self.zygote.stdin.write(json.dumps(job) + "\n")
            self.zygote.stdin.flush()
            self.running = True
        line = self.zygote.stdout.readline()
        with self.lock:
            self.running = False
        if not line:
            raise RuntimeError("the zygote ended")
        answer = json.loads(line)
        return Run(int(answer["exit"]), bool(answer["killed"]), answer["seconds"], self._tail())

    def kill_now(self) -> None:
        with self.lock:
            if self.running:
                assert self.zygote.stdin is not None
                self.zygote.stdin.write("kill\n")
                self.zygote.stdin.flush()

    def close(self) -> None:
        assert self.zygote.stdin is not None
        self.zygote.stdin.close()
        self.zygote.wait(timeout=10)


class Soak:
    """One target's soak: the sandbox app served on loopback, a state directory, the oracle's
    world, and a random generator that decides everything (same seed, same rounds)."""

    def __init__(
        self,
        target: str,
        folder: Path,
        seed: int,
        customers: int,
        runner: Runner,
        prepaid: bool = False,
        withdraw: bool = False,
    ) -> None:
        self.target = target
        self.rng = random.Random(seed)
        entries = generate(customers=customers, months=MONTHS, seed=seed, specials=False)
        self.app = SandboxApp(ledger_entries=entries)
        fake_module(target).FAKE(self.app, rate_limit="100000/1")
        self.state_dir = folder / "state"
        # Stores the fake's seed refresh token in the state directory where the target needs
        # one; the same settings serve the oracle.
        settings = sandbox_settings("http://unused", self.state_dir, MAPPINGS_DIR, target)
        self.prepaid = prepaid
        self.actions = ("book", "book", "send", "send", "edit") + (
            ("withdraw",) if withdraw else ()
        )
        if prepaid:  # overdraws invoiced and the balance row: rows that depend on other entries
            settings.prepaid.overdraw = "invoice"
            settings.prepaid.balance_row = True
        self.world = World(app=self.app, settings=settings, mappings=load_mappings(MAPPINGS_DIR))
        self.customers = [str(1003 + n) for n in range(customers)]
        self.revision = 100
        self.result = SoakResult(target)
        self.typical = 0.5  # seconds a run takes to finish (updated from finished runs)
        self.runner: Runner = runner
        self.run_seconds: list[float] = []
        self.run_writes = 0  # writes the fake has received in the current run
        self.run_id = 0
        self.kill_at_write: int | None = None
        self.kill_delay = 0.0
        self.modes: Sequence[str] = ()  # a fixed cycle of modes instead of random ones
        self._count_answers()

    def _count_answers(self) -> None:
        """Count what the fake answered (503s, 429s) and the answers it dropped after doing
        the work (lost creates and updates)."""
        handle = self.app.handle
        prefix = self.driver.api_prefix

        def counted(request: Request) -> Response:
            if request.method in ("POST", "PUT", "DELETE") and request.path.startswith(prefix):
                self.run_writes += 1
                if self.run_writes == self.kill_at_write:
                    # The write reaches the fake; the kill lands while the fake does it, while
                    # its answer is read, or while the run records it, as the delay falls.
                    threading.Timer(self.kill_delay, self._kill, (self.run_id,)).start()
            try:
                response = handle(request)
            except DropConnection:
                self.result.answers_lost += 1
                raise
            if request.path.startswith(prefix):
                if response.status == 503:
                    self.result.answers_503 += 1
                elif response.status == 429:
                    self.result.answers_429 += 1
            return response

        self.app.handle = counted  # type: ignore[method-assign]

    def _kill(self, run_id: int) -> None:
        if run_id == self.run_id:  # never a later run that started meanwhile
            self.runner.kill_now()

    @property
    def driver(self) -> Driver:
        return driver_for(self.app, self.target)

    # --- between rounds ------------------------------------------------------------------

    def _latest(self) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for raw in self.app.ledger.entries():
            if isinstance(raw, dict):
                latest[str(raw["id"])] = raw
        return sorted(latest.values(), key=lambda e: str(e["id"]))

    def change_ledger(self) -> None:
        """A few of what a ledger sees in a day: new entries (back-dated too, so rows shift),
        revisions of hours, voids, an entry moved to another customer or category."""
        changed: list[dict[str, Any]] = []
        latest = self._latest()
        for _ in range(self.rng.choice((0, 1, 2, 3, 4, 6))):
            self.revision += 1
            kinds = ["new", "new", "revise", "revise", "void", "move", "category"]
            if self.prepaid:
                kinds += ["topup", "draw", "topup_change"]
            what = self.rng.choice(kinds)
            self.result.ledger_changes[what] += 1
            if what == "new":
                entry = dict(latest[0])
                entry.update(
                    id=f"N{self.revision}", revision=1, kind="debit", status="active",
                    customer_number=self.rng.choice(self.customers),
                    category=self.rng.choice(("training", "installation", "project")),
                    hours=self.rng.choice(("0.5", "1", "2.5", "4")), prepaid_hours="0",
                    performed_on=f"{self.rng.choice(MONTHS)}-{self.rng.choice(('01', '15', '28'))}",
                    unit_price=self.rng.choice(("1000.00", None)),
                )  # fmt: skip
                changed.append(entry)
                continue
            if what == "topup":
                entry = dict(latest[0])
                entry.update(
                    id=f"T{self.revision}", revision=1, kind="topup", status="active",
                    customer_number=self.rng.choice(self.customers), category="prepaid_hours",
                    hours=self.rng.choice(("1", "4", "10")), prepaid_hours="0",
                    performed_on=f"{self.rng.choice(MONTHS)}-{self.rng.choice(('01', '20'))}",
                    unit_price="1000.00",
                )  # fmt: skip
                changed.append(entry)
                continue
            if what == "topup_change":
                topups = [e for e in latest if e["kind"] == "topup"]
                if topups:
                    entry = dict(self.rng.choice(topups), revision=self.revision)
                    change = self.rng.choice(("void", "0.5", "12"))
                    if change == "void":
                        entry["status"] = "void"
                    else:
                        entry.update(status="active", hours=change)
                    changed.append(entry)
                continue
            entry = dict(self.rng.choice([e for e in latest if e["kind"] == "debit"]))
            entry["revision"] = self.revision
            if what == "draw":  # all or half of its hours from the customer's prepaid hours
                hours = Decimal(entry["hours"])
                entry["prepaid_hours"] = str(hours if self.rng.random() < 0.5 else hours / 2)
            elif what == "revise":
                entry.update(status="active", hours=self.rng.choice(("0.25", "1.5", "3", "7.5")))
                entry["prepaid_hours"] = min(entry["prepaid_hours"], entry["hours"], key=Decimal)
            elif what == "void":
                entry["status"] = "void"
            elif what == "move":
                entry.update(status="active", customer_number=self.rng.choice(self.customers))
            else:
                entry.update(status="active", category=self.rng.choice(CATEGORIES))
            changed.append(entry)
        if changed:
            self.app.ledger.append(changed)

    def person_acts(self) -> None:
        """Finance at the accounting system: books a draft (Visma: converts it), sends one to
        the customer, now and then rewords a row (the draft is theirs from then on); with
        `withdraw`, also withdraws drafts (their hours are then not invoiced again)."""
        driver = self.driver
        for _ in range(self.rng.choice((0, 0, 1, 2))):
            open_ = driver.open_ids()
            if not open_:
                return
            pick = self.rng.choice(open_)
            what = self.rng.choice(self.actions)
            self.result.person[what] += 1
            if what == "book":
                driver.close(pick)
            elif what == "send":
                driver.send(pick)
            elif what == "withdraw":  # Fortnox: cancels it; Visma: deletes the draft
                driver.withdraw(pick)
            else:
                draft = next(i for i in driver.invoices() if i["remote_id"] == pick)
                driver.edit_text(pick, self.rng.randrange(len(draft["rows"])), "Ändrad av ekonomi")
                self.world.edited.add(str(pick))

    def set_faults(self) -> None:
        """Each fault on in about a third of the rounds (fewer for the costly ones), at a
        random strength."""
        rng = self.rng
        chosen: dict[str, Any] = {k: 0 for k in FAULT_KNOBS}
        if rng.random() < 0.3:  # each 503 costs the run a back-off of 0.25 s or more
            chosen["error_rate"] = rng.choice((0.05, 0.1, 0.2))
        if rng.random() < 0.35:
            chosen["lost_create_rate"] = rng.choice((0.2, 0.5, 1.0))
        if rng.random() < 0.35:
            chosen["lost_update_rate"] = rng.choice((0.2, 0.5, 1.0))
        if rng.random() < 0.15:  # each 429 costs a wait (Visma's fake says 1 s): fewer
            chosen["rate_429"] = rng.choice((0.02, 0.05))
        if rng.random() < 0.35:
            chosen["latency_ms"] = rng.choice((2, 5, 10))
        for name, value in chosen.items():
            if value:
                self.result.faults[name] += 1
        self.driver.faults(**chosen, seed=rng.randrange(10**6))

    # --- a round -------------------------------------------------------------------------

    def round(self, env: dict[str, str]) -> None:
        with self.app.lock:  # no request is being served while the world changes
            if self.result.rounds:
                self.person_acts()
                self.change_ledger()
            self.set_faults()
        mode = self.rng.choices(MODES, (5, 4, 5, 6))[0]
        if self.modes:
            mode = self.modes[self.result.rounds % len(self.modes)]
        extra = {"CONNECTOR_FAILPOINT": self.rng.choice(POINTS)} if mode == "failpoint" else {}
        # A random moment of the run: start-up, pull, planning, the writes.
        kill_after = self.rng.uniform(0.02, 1.2 * self.typical) if mode == "kill" else None
        # Or a random moment around the run's first, second or third write.
        self.kill_at_write = self.rng.randint(1, 3) if mode == "kill_writing" else None
        self.kill_delay = self.rng.uniform(0, 0.03)
        self.run_writes = 0
        self.run_id += 1
        run = self.runner.run({**env, **extra}, kill_after)
        self.run_id += 1
        self.kill_at_write = None
        wrote = self.run_writes > 0
        self.result.rounds += 1
        self.result.exit_codes[run.code] += 1
        if run.code == -signal.SIGKILL and wrote:
            self.result.kills_writing += 1
        if run.killed:
            self.result.kills_random += 1
        elif run.code == -signal.SIGKILL:
            self.result.kills_failpoint += 1
        else:
            self.result.finished += 1
            self.run_seconds.append(run.seconds)
            self.typical = 0.8 * self.typical + 0.2 * run.seconds
        if run.code not in (0, 1, 4, -signal.SIGKILL):  # 3: no other run holds the lock
            self.result.bugs.append(f"round {self.result.rounds}: exit {run.code}: {run.err}")
        self.check()

    def check(self) -> None:
        with self.app.lock:
            driver = self.driver
            twice = {k: len(v) for k, v in live_by_key(driver).items() if len(v) > 1}
            self.result.duplicates += len(twice)
            changed = driver.modified_after_closing()
            self.result.sent_changed = len(changed)
            if twice:
                self.result.bugs.append(f"round {self.result.rounds}: duplicates {twice}")

    # --- the end -------------------------------------------------------------------------

    def finish(self, env: dict[str, str]) -> None:
        """Faults cleared, one clean sync, the oracle; then a sync that must write nothing."""
        self.driver.faults(**{k: 0 for k in FAULT_KNOBS})
        code = self._run(env)
        if code not in (0, 1):
            self.result.bugs.append(f"clean sync: exit {code}")
        with self.app.lock:
            self.oracle()
        before = self.world.writes()
        self._run(env)
        self.result.final_writes = self.world.writes() - before
        self.result.writes = self.world.writes()
        self.result.live_invoices = sum(1 for i in self.driver.invoices() if i["state"] != "gone")

    def _run(self, env: dict[str, str]) -> int:
        run = self.runner.run(env, None)
        if run.code not in (0, 1):
            self.result.bugs.append(f"exit {run.code}: {run.err}")
        return run.code

    def oracle(self) -> None:
        """The fake against the ledger, counted per (customer, currency, article, price), then
        the harness's full row-by-row check."""
        world = self.world
        report = SyncReport(dry_run=False, plan=world.current_plan())
        assert report.plan is not None
        expected, actual = oracle_nets(world, report.plan)
        for group in set(expected) | set(actual):
            gap = expected.get(group, Decimal(0)) - actual.get(group, Decimal(0))
            if gap:
                self.result.differences.append(
                    f"{'/'.join(map(str, group))}: ledger {expected.get(group, 0)}, "
                    f"invoiced {actual.get(group, 0)}"
                )
            if gap > 0:
                self.result.rows_lost += 1
                self.result.hours_lost += gap
            elif gap < 0:
                self.result.rows_twice += 1
                self.result.hours_twice -= gap
        try:
            assert_matches_ledger(world, report)
        except AssertionError as exc:
            self.result.oracle_failure = str(exc)[:2000] or repr(exc)


@contextmanager
def _served(soak: Soak) -> Iterator[dict[str, str]]:
    with running(soak.app) as server:
        yield _environment(server.url, soak.state_dir, soak.target, soak.prepaid)


def run_soak(
    target: str,
    rounds: int,
    *,
    seed: int = 1,
    customers: int = 5,
    cold: bool = False,
    modes: Sequence[str] = (),
    prepaid: bool = False,
    withdraw: bool = False,
    progress: Callable[[SoakResult], None] | None = None,
) -> SoakResult:
    """`rounds` rounds against `target`'s fake, then the clean sync and the oracle."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"soak-{target}-") as folder:
        runner = (Runner if cold else WarmRunner)(Path(folder))
        try:
            soak = Soak(target, Path(folder), seed, customers, runner, prepaid, withdraw)
            soak.modes = modes
            with _served(soak) as env:
                for _ in range(rounds):
                    soak.round(env)
                    if progress is not None:
                        progress(soak.result)
                soak.finish(env)
        finally:
            runner.close()
    soak.result.wall_seconds = time.perf_counter() - started
    return soak.result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--target", choices=TARGETS, action="append")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--prepaid",
        action="store_true",
        help="invoice overdraws of prepaid hours and add the balance row; top-ups come and go",
    )
    parser.add_argument(
        "--withdraw",
        action="store_true",
        help="the person also withdraws drafts (see BENCHMARKS.md: known differences)",
    )
    parser.add_argument(
        "--cold", action="store_true", help="start every run as a new interpreter (slower)"
    )
    args = parser.parse_args(argv)
    clean = True
    chosen = args.target or list(TARGETS)
    # The targets side by side: each has its own sandbox, state and zygote, and a run spends
    # most of its time waiting (latency, back-off after a 503 or 429), not computing.
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        results = list(
            pool.map(
                lambda t: run_soak(
                    t,
                    args.rounds,
                    seed=args.seed,
                    cold=args.cold,
                    prepaid=args.prepaid,
                    withdraw=args.withdraw,
                ),
                chosen,
            )
        )
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"soak  {os.cpu_count()} cores, load average {load} (1, 5, 15 min) at the end")
    for result in results:
        print(result.line(), flush=True)
        for bug in result.bugs[:5]:
            print(f"      {bug}", flush=True)
        if result.oracle_failure:
            print(f"      oracle: {result.oracle_failure}", flush=True)
        for difference in result.differences[:10]:
            print(f"      {difference}", flush=True)
        clean = clean and result.clean
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
