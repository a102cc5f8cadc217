"""The completeness ledger: what keeping it costs a backfill, and what asking it costs.

python benchmarks/completeness.py load --rows 300000   # rows/s with and without the day upkeep, alternating
python benchmarks/completeness.py query --slices 64 1000 10000  # completeness_days(), complete_through(), status
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import psycopg

from common import alternating, drop_db, fresh_db, postgres, table
from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.load.run import RunOptions, run
from scanfill.load.worker import WorkerSettings
from scanfill.ops import monitor
from scanfill.scan.client import ScanConfig
from scanfill.sim import LedgerConfig, MigrationSpec, SimConfig, Simulator


def _load(dsn: str, urls: list[str], upkeep: bool) -> tuple[float, int, str]:
    """One in-process backfill; without `upkeep` the day rows are not written (measuring only)."""
    original = Store.days_add
    if not upkeep:
        Store.days_add = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(urls)), concurrency=16)
        s = run(RunOptions(worker=ws, progress=False))
    finally:
        Store.days_add = original  # type: ignore[method-assign]
    assert s.complete and not s.failures, s.failures
    with psycopg.connect(dsn) as conn:
        days = conn.execute("SELECT count(*) FROM completeness").fetchone()
    return s.seconds, s.rows, f"{days[0] if days else 0:,}"


def bench_load(rows: int) -> str:
    # a history over many days (an update every 10 minutes), so commits touch several day rows
    return alternating(LedgerConfig.for_rows(rows, gap_us=600_000_000), _load, "day ledger", "day rows")


def _timed(fn: Any, n: int = 7) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times)


def bench_query(slices: list[int]) -> str:
    """Planned (not loaded) histories of a year on four synchronizers cut into N slices: what the
    day functions cost grows with the slices and days, never with the ledger's rows."""
    cfg = LedgerConfig(seed=3, migrations=(
        MigrationSpec(0, "2025-01-01T00:00:00Z", 2000, synchronizers=2, gap_us=7_800_000_000),
        MigrationSpec(1, "2025-07-01T00:00:00Z", 2000, synchronizers=2, gap_us=7_800_000_000)))  # fmt: skip
    lines = []
    with postgres() as admin, Simulator(SimConfig(ledger=cfg)) as sim:
        for n in slices:
            dsn = fresh_db(admin)
            db = Database(dsn)
            ws = WorkerSettings(db=db, scan=ScanConfig(urls=tuple(sim.urls)))
            run(RunOptions(worker=ws, progress=False, plan_only=True, slices=n))
            store = Store(db)
            with db.connect(autocommit=True) as conn:
                planned = conn.execute("SELECT count(*) FROM backfill_cursors").fetchone()
                days_n = len(store.days(conn))
                d50, d_max = _timed(lambda: store.days(conn))  # noqa: B023
                w50, w_max = _timed(lambda: store.complete_through(conn))  # noqa: B023
            s50, s_max = _timed(lambda: monitor.status(db))  # noqa: B023
            drop_db(admin, dsn)
            assert planned is not None
            lines.append([f"{planned[0]:,}", f"{days_n:,}", f"{d50 * 1000:,.0f} / {d_max * 1000:,.0f}",
                          f"{w50 * 1000:,.0f} / {w_max * 1000:,.0f}", f"{s50 * 1000:,.0f} / {s_max * 1000:,.0f}"])  # fmt: skip
    return table(["slices", "day rows", "completeness_days() ms p50/max", "complete_through() ms",
                  "status ms"], lines)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--rows", type=int, default=300_000)
    q = sub.add_parser("query")
    q.add_argument("--slices", type=int, nargs="+", default=[64, 1000, 10000])
    a = ap.parse_args()
    print(bench_load(a.rows) if a.cmd == "load" else bench_query(a.slices))


if __name__ == "__main__":
    main()
