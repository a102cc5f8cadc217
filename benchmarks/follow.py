"""Following, measured side by side in one run:

python benchmarks/follow.py catchup --updates 30000   # follow --once after an outage vs backfilling the same rows
python benchmarks/follow.py lag --seconds 60         # lag (p50, p99) at MainNet's rate and at 100x

Lag is sampled every 50 ms as (updates the simulator has made visible - updates stored) / rate:
how long ago the newest unstored update appeared. MainNet's rate: ~10 updates/s with ~15 events
each (scan-api.md section 7.4).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psycopg

from common import Timer, drop_db, fresh_db, postgres, table
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.load.follow import FollowSettings, follow
from scanfill.load.run import RunOptions, run
from scanfill.load.worker import WorkerSettings
from scanfill.scan.client import ScanConfig
from scanfill.sim import LedgerConfig, MigrationSpec, SimConfig, Simulator


def _ledger(updates: int) -> LedgerConfig:
    return LedgerConfig(seed=3, migrations=(MigrationSpec(0, "2025-12-10T16:23:00Z", updates),), events_mean=15.0)


def catchup(updates: int, reps: int) -> None:
    """After an outage of `updates` updates: `follow --once` from where it stopped vs a backfill."""
    config = SimConfig(ledger=_ledger(updates), prerender=True)
    rows_table = []
    with postgres() as admin, Simulator(config, mode="process") as sim:
        scan = ScanConfig(urls=tuple(sim.urls))
        for rep in range(reps):
            dsn = fresh_db(admin)
            db = Database(dsn)
            with Timer() as tb:
                s = run(RunOptions(worker=WorkerSettings(db=db, scan=scan, concurrency=16), progress=False))
            b_rate = s.rows / tb.seconds
            drop_db(admin, dsn)
            dsn = fresh_db(admin)
            db = Database(dsn)
            schema.init(db)
            with Timer() as tf:
                r = follow(FollowSettings(db=db, scan=scan, once=True, start="beginning", events=False))
            f_rate = (r.updates + r.events) / tf.seconds
            drop_db(admin, dsn)
            rows_table.append([str(rep + 1), f"{s.rows:,}", f"{b_rate:,.0f}", f"{f_rate:,.0f}", f"{f_rate / b_rate:.2f}"])
            print(rows_table[-1], flush=True)
    print(table(["rep", "rows", "backfill rows/s (concurrency 16)", "follow --once rows/s", "follow / backfill"],
                rows_table))  # fmt: skip


def lag(seconds: float, rates: list[float]) -> None:
    out = []
    with postgres() as admin:
        for rate in rates:
            grow = int(rate * seconds)
            base = _ledger(200)
            config = SimConfig(ledger=base.with_growth(grow), grow=rate, grow_updates=grow, prerender=True)
            dsn = fresh_db(admin)
            db = Database(dsn)
            with Simulator(config) as sim:
                scan = ScanConfig(urls=tuple(sim.urls))
                run(RunOptions(worker=WorkerSettings(db=db, scan=scan, concurrency=4), progress=False))
                settings = FollowSettings(db=db, scan=scan, poll_s=0.25, events=True)
                from scanfill.load.follow import Follower

                follower = Follower(settings)
                import asyncio

                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_until_complete, args=(follower.run(),), daemon=True)
                t.start()
                samples = []
                simulation = sim.simulation
                assert simulation is not None
                with psycopg.connect(dsn, autocommit=True) as conn:
                    while not simulation.grown():
                        visible = simulation.count(0, 0)
                        got = conn.execute("SELECT count(*) FROM ledger_updates").fetchone()
                        assert got is not None
                        samples.append(max(0, visible - int(got[0])) / rate)
                        time.sleep(0.05)
                loop.call_soon_threadsafe(follower.stop.set)
                t.join(timeout=60)
            drop_db(admin, dsn)
            samples.sort()
            p50 = statistics.median(samples)
            p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
            out.append([f"{rate:g}", f"{rate * 16:,.0f}", f"{len(samples)}", f"{p50:.2f}", f"{p99:.2f}"])
            print(out[-1], flush=True)
    print(table(["updates/s", "rows/s", "samples", "lag p50 (s)", "lag p99 (s)"], out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["catchup", "lag"])
    ap.add_argument("--updates", type=int, default=30_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rates", default="10,1000", help="updates/s to grow at, comma-separated")
    a = ap.parse_args()
    if a.what == "catchup":
        catchup(a.updates, a.reps)
    else:
        lag(a.seconds, [float(r) for r in a.rates.split(",")])


if __name__ == "__main__":
    main()
