"""Planning throughput (validation + plan) and peak memory on generated ledgers, and the
cost of storing a first pull in the state store.

Run: `make bench` (or `python -m bench --customers 2000`). Prints one line per size with
entries per second and the peak memory traced while planning, then one line per size for
storing the feed page by page (each page committed with its cursor, as a pull does).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench import scale, soak, startup, sync_window, updates
from bench.record import Record
from connector.ledger import FeedItem, parse_entry
from connector.mappings import load_mappings
from connector.planning import plan
from connector.sandbox.sample import generate
from connector.state import StateStore
from connector.targets import fortnox

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"


def bench_plan(customers: int, months: tuple[str, ...]) -> str:
    """Time one pass (best of three) and trace memory in a separate pass: tracing slows
    Python several times over, so the two are never measured together."""
    raw = generate(customers=customers, months=months, specials=False)
    mappings = load_mappings(MAPPINGS)

    def once() -> tuple[int, int]:
        entries = [parse_entry(r) for r in raw]
        result = plan(entries, mappings, fortnox.PROFILE)
        return len(entries), len(result.invoices)

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        count, invoices = once()
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    once()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (
        f"plan  customers={customers:>6} entries={count:>7} invoices={invoices:>6}  "
        f"{best:6.2f} s  {count / best:>9,.0f} entries/s  peak {peak / 2**20:6.1f} MiB"
    )


def bench_store(customers: int, months: tuple[str, ...], page_size: int = 500) -> str:
    """A first pull's storage: every page in its own transaction with its cursor. Reports the
    rate over the whole pull and over its last tenth (a rate that falls as the mirror grows
    means a cost per page that grows with history)."""
    raw = generate(customers=customers, months=months, specials=False)
    items = [FeedItem(f"p{n}", r, str(r["id"]), int(r["revision"])) for n, r in enumerate(raw)]
    pages = [items[i : i + page_size] for i in range(0, len(items), page_size)]
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(Path(folder))
        try:
            started = time.perf_counter()
            tail_from = len(pages) - max(1, len(pages) // 10)
            tail_started = started
            for n, page in enumerate(pages):
                if n == tail_from:
                    tail_started = time.perf_counter()
                store.store_page(page, f"cursor-{n}")
            ended = time.perf_counter()
        finally:
            store.close()
    tail = sum(len(p) for p in pages[tail_from:])
    return (
        f"store customers={customers:>6} entries={len(items):>7} pages={len(pages):>5}  "
        f"{ended - started:6.2f} s  {len(items) / (ended - started):>9,.0f} entries/s  "
        f"last tenth {tail / (ended - tail_started):>9,.0f} entries/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, nargs="*", default=[40, 400, 4000])
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is"
    )
    parser.add_argument(
        "--max-entries",
        type=int,
        default=100_000,
        help="scale benchmark: largest ledger (10k, 100k, 1M up to this; 1000000 for all)",
    )
    args = parser.parse_args()
    months = tuple(f"2026-{m:02d}" for m in range(1, 13))
    record = Record()
    with record.part("Planning (validation + plan, best of three; memory traced apart)"):
        for customers in args.customers:
            print(bench_plan(customers, months), flush=True)
    with record.part("Storing a first pull"):
        for customers in args.customers:
            print(bench_store(customers, months), flush=True)
    record.run(
        "Sync against the rate window (bench/sync_window.py, benchmarks 1 and 2)", sync_window.run
    )
    record.run("Requests per updated invoice (bench/updates.py)", updates.main)
    record.run("Start-up and plan output (bench/startup.py, benchmark 4)", startup.run)
    # Benchmark 3: the connector as a process against a sandbox ledger over loopback.
    with record.part("Scale (bench/scale.py, benchmark 3)"):
        scale.main(["--max-entries", str(args.max_entries)])
    # Benchmark 5 of issue 10: the soak, both targets side by side (bench/soak.py).
    with record.part("Soak (bench/soak.py, benchmark 5)"):
        found = soak.main([])
    if not args.no_write:
        record.write()
    if found != 0:
        raise SystemExit("the soak found a defect: see above")


if __name__ == "__main__":
    main()
