"""The lake tier against PostgreSQL, side by side in one run.

python benchmarks/lake.py --rows 300000   # rows/s into each, bytes per row, events per template per day (DuckDB vs PostgreSQL)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import duckdb
import psycopg

from common import drop_db, fresh_db, postgres, table
from scanfill.db import Database
from scanfill.lake.layout import Lake
from scanfill.lake.read import add_actions
from scanfill.lake.read import table as delta
from scanfill.load.run import RunOptions, run
from scanfill.load.worker import WorkerSettings
from scanfill.scan.client import ScanConfig
from scanfill.sim import LedgerConfig, SimConfig, Simulator

QUERY = ("SELECT template_id, CAST(record_time AS DATE) AS day, count(*) AS n FROM {events} "
         "WHERE template_id IS NOT NULL GROUP BY 1, 2")  # fmt: skip


def _load(dsn: str, urls: list[str], lake: str | None) -> tuple[float, int]:
    ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(urls)), concurrency=16, lake=lake)
    s = run(RunOptions(worker=ws, progress=False))
    assert s.complete and not s.failures, s.failures
    return s.seconds, s.rows


def _median(fn: Any, n: int = 5) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def bench(rows: int) -> str:
    cfg = LedgerConfig.for_rows(rows, gap_us=600_000_000)
    lines, rates = [], {"postgres": [], "lake": []}  # type: ignore[var-annotated]
    sizes: dict[str, float] = {}
    timings: dict[str, float] = {}
    with postgres() as admin, Simulator(SimConfig(ledger=cfg, prerender=True), mode="process") as sim:
        for where in ("postgres", "lake", "postgres", "lake"):
            dsn = fresh_db(admin)
            root = tempfile.mkdtemp(prefix="scanfill-lake-") + "/lake" if where == "lake" else None
            secs, n = _load(dsn, sim.urls, root)
            rates[where].append(n / secs)
            if where == "postgres":
                with psycopg.connect(dsn) as conn:
                    size = conn.execute("SELECT pg_total_relation_size('ledger_updates') + "
                                        "pg_total_relation_size('ledger_events')").fetchone()  # fmt: skip
                    assert size is not None
                    sizes["postgres"] = size[0] / n
                    q = QUERY.format(events="ledger_events")
                    timings["postgres"] = _median(lambda: conn.execute(q).fetchall())  # noqa: B023
            else:
                assert root is not None
                lake = Lake(root)
                b = sum(sum(add_actions(delta(lake, t))["size_bytes"]) for t in ("updates", "events"))
                sizes["lake"] = b / n
                con = duckdb.connect()
                con.register("events", delta(lake, "events").to_pyarrow_dataset())
                timings["lake"] = _median(lambda: con.execute(QUERY.format(events="events")).fetchall())  # noqa: B023
            drop_db(admin, dsn)
            lines.append([where, f"{n:,}", f"{secs:.1f}", f"{n / secs:,.0f}"])
    ratio = [a / b for a, b in zip(rates["lake"], rates["postgres"], strict=True)]
    return (table(["into", "rows", "s", "rows/s"], lines)
            + f"\n\nrows/s lake / postgres, pairwise: {', '.join(f'{r:.2f}' for r in ratio)}\n\n"
            + table(["", "bytes per row", "events per template per day (ms, median of 5)"],
                    [["postgres (tables + indexes)", f"{sizes['postgres']:,.0f}", f"{timings['postgres'] * 1000:,.0f}"],
                     ["lake (Parquet, zstd)", f"{sizes['lake']:,.0f}", f"{timings['lake'] * 1000:,.0f}"]]))  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    print(bench(ap.parse_args().rows))
