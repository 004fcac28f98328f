"""The rate window shared through the state directory: limiters on one file, in threads and in
processes, never exceed the window; a garbage file is an empty window; the file holds no secret;
two clients opened one after the other (two commands) share the remote's window."""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
from pathlib import Path

import pytest

from connector import http, rate_window, targets
from connector.http import RateLimiter, admit, moved
from connector.mappings import Mappings
from connector.rate_window import (
    MAGIC,
    SharedRateLimiter,
    parse_window,
    render_window,
    window_path,
)
from connector.sandbox import fake_of
from tests.harness import TARGETS, World, make_world, target_settings

LIMIT, PERIOD = 5, 0.3  # a short window: the tests wait for real, but briefly


def use(limiter: RateLimiter, count: int, seed: int) -> list[tuple[float, float]]:
    """`count` requests through `limiter`, each in flight for up to 3 ms: (start, end) each."""
    rng = random.Random(seed)
    spans = []
    for _ in range(count):
        ticket = limiter.acquire()
        start = time.time()
        time.sleep(rng.uniform(0, 0.003))
        end = time.time()
        limiter.release(ticket)
        spans.append((start, end))
    return spans


def assert_within_window(spans: list[tuple[float, float]]) -> None:
    """However the remote dates each request within its flight (its start, its end, anything
    between), no `PERIOD` holds more than `LIMIT` of them. The busiest period a remote could
    see begins at the end of some request: count the flights that reach into it."""
    for _, end in spans:
        reaching = [s for s, e in spans if e >= end and s < end + PERIOD - 1e-6]
        assert len(reaching) <= LIMIT, (end, sorted(reaching))


def test_two_limiters_in_threads_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "window"
    results: list[list[tuple[float, float]]] = [[], []]

    def worker(n: int) -> None:
        results[n] = use(SharedRateLimiter(LIMIT, PERIOD, path=path), 12, n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    spans = results[0] + results[1]
    assert len(spans) == 24
    assert_within_window(spans)


def _process(path: str, start_at: float, seed: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    time.sleep(max(0.0, start_at - time.time()))
    out.put(use(SharedRateLimiter(LIMIT, PERIOD, path=Path(path)), 12, seed))


@pytest.mark.slow
def test_two_processes_share_one_window(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 1.5  # both start together, after their imports
    workers = [
        context.Process(target=_process, args=(str(tmp_path / "window"), start_at, n, out))
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    spans = out.get(timeout=60) + out.get(timeout=60)
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    assert len(spans) == 24
    assert_within_window(spans)


def test_the_window_counts_from_each_answer() -> None:
    """A request counts from its end: the remote may date it anywhere in its flight."""
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2, 5.0, clock=lambda: now[0], sleep=sleep)
    first = limiter.acquire()
    now[0] = 1.0  # its answer came a second later
    limiter.release(first)
    limiter.acquire()
    limiter.acquire()  # waits until 5 s after the first one's answer, not its start
    assert waits == [5.0] and now[0] == 6.0


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage that is not a window at all",
        b'{"sent": [1, 2, 3]}',
        MAGIC + (10**6).to_bytes(4, "little"),  # counts more times than it holds: cut short
        render_window([float("nan"), float("inf")] * 3),
    ],
)
def test_a_garbage_file_is_an_empty_window(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "window"
    path.write_bytes(content)
    waits: list[float] = []
    limiter = SharedRateLimiter(3, 60.0, path=path, sleep=waits.append)
    for _ in range(3):
        limiter.release(limiter.acquire())
    assert waits == []  # three places free: the garbage counted for nothing
    assert len(parse_window(path.read_bytes())) == 3


def test_a_write_cut_short_leaves_the_old_window_or_the_new() -> None:
    """A newer, shorter window written over an older one: what follows its count is ignored."""
    old = render_window([1.0, 2.0, 3.0, 4.0])
    new = render_window([5.0])
    assert parse_window(new + old[len(new) :]) == [5.0]
    assert parse_window(old[:-3]) == []  # a torn file (never written so) is empty


def test_a_clock_set_back_never_waits_more_than_a_period() -> None:
    kept, wait = admit([100.0, 101.0], 50.0, 2, 5.0)
    assert kept == [50.0, 50.0] and wait == 5.0
    assert moved([1.0, 2.0], 2.0, 4.0) == [1.0, 4.0]


def test_an_unusable_state_directory_falls_back_to_the_process_window(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the folder should be")
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = SharedRateLimiter(2, 60.0, path=blocker / "window", clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.release(limiter.acquire())
    assert waits == [60.0]  # no error: the window held, in this process


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_window_file_holds_no_secret(tmp_path: Path, mappings: Mappings, target: str) -> None:
    world = make_world(tmp_path, mappings, target=target)
    world.sync()
    section = target_settings(world.settings)
    files = list(world.settings.state_dir.glob(f"{rate_window.PREFIX}*"))
    assert files == [
        window_path(
            world.settings.state_dir,
            target,
            section.api_url,
            section.client_id,
            getattr(section, "tenant_id", None),
        )
    ]
    content = files[0].read_bytes()
    assert len(parse_window(content)) > 0  # the run's requests are in it
    token_file = world.settings.state_dir / targets.spec(target).oauth.token_file
    tokens = json.loads(token_file.read_text())
    assert section.client_secret is not None and section.client_id
    secrets = [section.client_secret.get_secret_value(), section.client_id]
    secrets += [tokens[k] for k in ("access_token", "refresh_token") if tokens.get(k)]
    for secret in secrets:
        assert secret.encode() not in content
        assert secret not in files[0].name
    assert files[0].stat().st_mode & 0o077 == 0


def test_two_commands_one_after_the_other_share_the_remotes_window(
    tmp_path: Path, mappings: Mappings, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Two clients opened one after the other on one state directory (as two commands are)
    against the fake's real window, on one clock that moves only when the connector waits:
    the second never meets a 429 the first caused."""
    world: World = make_world(tmp_path, mappings, target=target)
    module_limit = {"fortnox": "25/5", "visma": "6/60"}[target]
    limit, period = (float(p) for p in module_limit.split("/"))
    now = [0.0]
    fake = fake_of(world.app, target)
    if target == "fortnox":
        fake.window = type(fake.window)(int(limit), period, lambda: now[0])
    else:
        fake.rate_limit = (int(limit), period)
        fake.clock = lambda: now[0] + 10**6  # tokens stay valid on this clock
        fake.windows.clear()
    monkeypatch.setattr(http, "pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    monkeypatch.setattr(rate_window, "wall_clock", lambda: now[0])
    # The connector's window is the remote's own: counted from each answer, it needs no margin.
    target_settings(world.settings).rate_limit = module_limit
    runs = [world.sync(dry_run=True), world.sync(), world.sync(dry_run=True)]
    # Without the shared window a run starts with an empty one while the remote's still holds
    # the last run's requests: a plan after a plan after a sync would meet 429s.
    assert sum(r.requests for r in runs) > 2 * limit
    assert [r.rate_limited for r in runs] == [0, 0, 0]
    assert fake.rate_limited == 0
