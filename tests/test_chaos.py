"""Kill the loader at random moments and restart it: the end state must be exact."""

from __future__ import annotations

import random
import signal

import pytest

from dbcheck import assert_db_matches
from procs import drop_unique_keys, loaded, scanfill, wait_for
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from shared import SMALL

RUN = ("run", "--concurrency", "4", "--page-size", "40", "--batch-rows", "100", "--lease", "5", "--no-progress")


def kill_restart_cycles(db: str, cycles: int, seed: int) -> None:
    rnd = random.Random(seed)
    total = Ledger(SMALL).total_updates()
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=10, jitter_ms=10))) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait() == 0
        drop_unique_keys(db)
        for k in range(cycles):
            start = loaded(db)
            proc = scanfill(*RUN, dsn=db, urls=sim.urls)
            target = start + rnd.randint(1, max(2, (total - start) // (cycles - k + 1)))
            wait_for(lambda t=target, p=proc: loaded(db) >= t or p.poll() is not None, what=f"{target} updates loaded")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        final = scanfill(*RUN, dsn=db, urls=sim.urls)
        out = final.communicate(timeout=300)[0].decode()
        assert final.returncode == 0, out
        assert "history complete" in out
    assert_db_matches(db, Ledger(SMALL))


def test_sigkill_at_random_moments_then_exact(db: str) -> None:
    kill_restart_cycles(db, cycles=4, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_many_times(db: str, seed: int) -> None:
    kill_restart_cycles(db, cycles=12, seed=100 + seed)
