"""Planning throughput and peak memory on generated ledgers.

Run: `make bench` (or `python -m bench --customers 2000`). Prints one line per size with
entries per second and the peak memory traced while planning.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

from connector.ledger import parse_entry
from connector.mappings import load_mappings
from connector.planning import plan
from connector.sandbox.sample import generate
from connector.targets import fortnox

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"


def bench_plan(customers: int, months: tuple[str, ...]) -> str:
    raw = generate(customers=customers, months=months, specials=False)
    mappings = load_mappings(MAPPINGS)
    tracemalloc.start()
    started = time.perf_counter()
    entries = [parse_entry(r) for r in raw]
    result = plan(entries, mappings, fortnox.PROFILE)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rate = len(entries) / elapsed
    return (
        f"plan  customers={customers:>6} entries={len(entries):>7} "
        f"invoices={len(result.invoices):>6}  {elapsed:6.2f} s  {rate:>9,.0f} entries/s  "
        f"peak {peak / 2**20:6.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, nargs="*", default=[40, 400, 4000])
    args = parser.parse_args()
    months = tuple(f"2026-{m:02d}" for m in range(1, 13))
    for customers in args.customers:
        print(bench_plan(customers, months), flush=True)


if __name__ == "__main__":
    main()
