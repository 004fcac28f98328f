"""The soak's short variant (bench/soak.py; `make bench` runs 200 rounds per target): a few
rounds of `connector sync` as a real process against a loopback sandbox, killed while writing,
at a failpoint and at a random moment, and once allowed to finish, with faults, ledger changes
and a person's bookings between rounds. No key ever has two live invoices, and after a clean
sync the fake equals the oracle row by row and a further sync writes nothing."""

from __future__ import annotations

import signal

import pytest

from bench.soak import MODES, run_soak
from tests.harness import TARGETS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", TARGETS)
def test_short_soak(target: str) -> None:
    # Killed while writing first: the first run creates every invoice, so that kill lands in
    # the middle of the writes.
    modes = ("kill_writing", "failpoint", "kill", "finish")
    assert set(modes) == set(MODES)
    result = run_soak(target, len(modes), seed=7, modes=modes)
    assert result.rounds == len(modes)
    assert result.kills_writing >= 1, result.line()
    assert result.exit_codes[-signal.SIGKILL] >= 1, result.line()
    assert result.duplicates == 0, result.bugs
    assert result.sent_changed == 0, result.line()
    assert (result.rows_lost, result.rows_twice) == (0, 0), result.line()
    assert result.oracle_failure is None, result.oracle_failure
    assert result.final_writes == 0, result.line()
    assert not result.bugs, result.bugs
    assert result.live_invoices > 0
