"""What agreement across scans costs, measured side by side in one run:

python benchmarks/agree.py --rows 150000 --latency-ms 100

Three simulated scans (one process, pre-rendered, each with the same latency per page); the same
load with --agree 1, 2 and 3; rows/s, the loader's CPU seconds per row (this process: HTTP,
decoding, hashing, COPY framing), and the bytes fetched from the scans per stored byte.
"""

from __future__ import annotations

import argparse
import resource

from common import Timer, drop_db, fresh_db, postgres, table
from scanfill.db import Database
from scanfill.load.run import RunOptions, run
from scanfill.load.worker import WorkerSettings
from scanfill.scan.client import ScanConfig
from scanfill.sim import FaultConfig, InstanceConfig, LedgerConfig, SimConfig, Simulator


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    config = SimConfig(
        ledger=LedgerConfig.for_rows(a.rows, ids=(0,)),
        instances=tuple(InstanceConfig(f"sv-{k}") for k in range(1, 4)),
        faults=FaultConfig(latency_ms=a.latency_ms, gzip=False),
        prerender=True,
    )
    out = []
    with postgres() as admin, Simulator(config, mode="process") as sim:
        for rep in range(a.reps):
            base_rate = base_cpu = None
            for k in (1, 2, 3):
                dsn = fresh_db(admin)
                before = [sim.stats(i)["bytes"] for i in range(3)]
                ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(sim.urls)), concurrency=16)
                c0 = cpu()
                with Timer() as t:
                    s = run(RunOptions(worker=ws, progress=False, agree=str(k)))
                c1 = cpu()
                fetched = sum(sim.stats(i)["bytes"] for i in range(3)) - sum(before)
                drop_db(admin, dsn)
                assert s.complete, s.failures
                rate, us_row = s.rows / t.seconds, (c1 - c0) / s.rows * 1e6
                base_rate, base_cpu = (rate, us_row) if k == 1 else (base_rate, base_cpu)
                assert base_rate is not None and base_cpu is not None
                out.append([str(rep + 1), str(k), f"{s.rows:,}", f"{rate:,.0f}", f"{rate / base_rate:.2f}",
                            f"{us_row:.1f}", f"{us_row / base_cpu:.2f}", f"{fetched / max(1, s.bytes):.2f}"])  # fmt: skip
                print(out[-1], flush=True)
    print(table(["rep", "--agree", "rows", "rows/s", "vs agree 1", "loader CPU us/row", "vs agree 1",
                 "bytes fetched / bytes stored"], out))  # fmt: skip


if __name__ == "__main__":
    main()
