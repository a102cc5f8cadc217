"""Where the CPU goes during `scanfill run`: the loader, the simulator and PostgreSQL, in CPU seconds
(2 cores: whoever saturates first bounds the rate). Usage: python benchmarks/cpu_split.py [ROWS]"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from common import drop_db, fresh_db, postgres, table
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.ops import maintenance
from scanfill.sim import LedgerConfig, SimConfig, Simulator


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_procs() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    lines = []
    with (
        postgres() as admin,
        Simulator(SimConfig(ledger=LedgerConfig.for_rows(rows), prerender=True), mode="process") as sim,
    ):
        sim_proc = psutil.Process(sim.pid)
        for prepared in (False, True):
            dsn = fresh_db(admin)
            db = Database(dsn)
            schema.init(db)
            if prepared:
                maintenance.prepare(db, echo=lambda s: None)
            pg0 = {p.pid: cpu_of([p]) for p in postgres_procs()}
            s0 = cpu_of([sim_proc])
            t0 = time.perf_counter()
            p = subprocess.Popen(
                [sys.executable, "-m", "scanfill.cli", "run", "--concurrency", "16", "--no-progress"],
                env={**os.environ, "DATABASE_URL": dsn, "SCAN_URL": sim.url},
                stdout=subprocess.DEVNULL,
            )
            proc = psutil.Process(p.pid)
            loader = 0.0
            pg_seen: dict[int, float] = {}
            while p.poll() is None:
                loader = max(loader, cpu_of([proc]))
                for q in postgres_procs():
                    c = cpu_of([q])
                    pg_seen[q.pid] = max(pg_seen.get(q.pid, 0.0), c)
                time.sleep(0.2)
            wall = time.perf_counter() - t0
            pg = sum(c - pg0.get(pid, 0.0) for pid, c in pg_seen.items())
            simc = cpu_of([sim_proc]) - s0
            lines.append(
                [
                    "prepared (UNLOGGED, no indexes)" if prepared else "logged, indexed",
                    f"{wall:.1f}",
                    f"{loader:.1f} ({loader / wall:.0%})",
                    f"{pg:.1f} ({pg / wall:.0%})",
                    f"{simc:.1f} ({simc / wall:.0%})",
                    f"{rows / wall:,.0f}",
                ]
            )
            drop_db(admin, dsn)
    print(table(["tables", "wall s", "loader CPU s", "PostgreSQL CPU s", "simulator CPU s", "~rows/s"], lines))


if __name__ == "__main__":
    main()
