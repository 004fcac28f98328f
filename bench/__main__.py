"""Planning throughput (validation + plan) and peak memory on generated ledgers.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, nargs="*", default=[40, 400, 4000])
    args = parser.parse_args()
    months = tuple(f"2026-{m:02d}" for m in range(1, 13))
    for customers in args.customers:
        print(bench_plan(customers, months), flush=True)


if __name__ == "__main__":
    main()
