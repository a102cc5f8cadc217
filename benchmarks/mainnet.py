"""A backfill from scans shaped like MainNet's, against the database's own ceiling, in one run:

python benchmarks/mainnet.py --rows 2000000 --concurrency 8 32 128

The scans (`scanfill.sim.config.mainnet_shaped`): 10 of them, each taking 1-3 s per 1000-update
page and sending at most 20 MB/s, one limiter of 200 requests/s over all of them (429), one
answering 403 to everything and one that accepts page requests and never answers. The ledger is
pre-rendered by the simulator (its own process).

Ceiling: binary COPY of the same rows from memory (no HTTP, no decoding) with 2 connections, into
the same tables, in a fresh database: what this PostgreSQL can take. Then `scanfill run` at each
concurrency and the guide's recipe (one stream per synchronizer, on one good scan), each as child
processes into a fresh database; their CPU and peak memory come from the kernel (wait4), and every
scanfill run must store exactly the ceiling's rows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg

from common import drop_db, fresh_db, postgres, table
from cost import server_cpu
from run import copy_ceiling, guide_run, prefetch
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.sim import Ledger, LedgerConfig, SimConfig, Simulator
from scanfill.sim.config import mainnet_shaped


def stored_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM ledger_updates) + (SELECT count(*) FROM ledger_events)")
        got = row.fetchone()
    assert got is not None
    return int(got[0])


def scanfill_child(dsn: str, urls: list[str], concurrency: int, log: Path,
                   memory: int | None = None) -> tuple[float, float, int, int]:  # fmt: skip
    """(seconds, loader CPU seconds, peak RSS in MiB, exit status) of `scanfill run` as a child."""
    cmd = [sys.executable, "-m", "scanfill.cli", "run", "--dsn", dsn, "--concurrency", str(concurrency)]
    if memory is not None:
        cmd += ["--memory", str(memory)]
    for u in urls:
        cmd += ["--scan-url", u]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SCAN_URL", "BASE_URL")}
    with log.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        peak = 0  # sampled: ru_maxrss would count the benchmark's own memory, forked before the exec
        watch = psutil.Process(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watch.memory_info().rss)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
    return seconds, usage.ru_utime + usage.ru_stime, peak // 2**20, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--no-guide", action="store_true")
    ap.add_argument("--memory", type=int, nargs="+", default=[0],
                    help="--memory MB of each scanfill case (0: the default; 1048576: no budget, as before it existed)")
    ap.add_argument("--logs", default="/tmp/scanfill-mainnet-bench")
    a = ap.parse_args()
    logs = Path(a.logs)
    logs.mkdir(parents=True, exist_ok=True)
    cfg = LedgerConfig.for_rows(a.rows)
    out: list[list[str]] = []
    with postgres() as admin:
        with Simulator(SimConfig(ledger=cfg)) as plain:  # in this process, no faults: the ceiling's input
            batches = prefetch(plain.url, Ledger(cfg))
        rows = sum(b.rows for b in batches)
        dsn = fresh_db(admin)
        schema.init(Database(dsn))
        time.sleep(0.5)
        s0, l0 = server_cpu(admin), time.process_time()
        ceiling_s = copy_ceiling(dsn, batches, 2)
        ceiling_cores = f"{(time.process_time() - l0) / ceiling_s:.2f} / {(server_cpu(admin) - s0) / ceiling_s:.2f} / -"
        drop_db(admin, dsn)
        del batches
        ceiling = rows / ceiling_s
        print(f"ceiling: {rows:,} rows in {ceiling_s:.1f} s = {ceiling:,.0f} rows/s", flush=True)
        out.append(["database ceiling: binary COPY from memory, 2 connections", f"{ceiling_s:.1f}", f"{rows:,}",
                    f"{ceiling:,.0f}", "100 %", "-", "-", ceiling_cores, "-"])  # fmt: skip
        t0 = time.perf_counter()
        with Simulator(mainnet_shaped(cfg), mode="process") as sim:
            print(f"simulator: 10 scans, pre-rendered in {time.perf_counter() - t0:.0f} s", flush=True)
            sim_proc = psutil.Process(sim.pid)

            def others() -> tuple[float, float]:
                t = sim_proc.cpu_times()
                return server_cpu(admin), t.user + t.system

            def shares(before: tuple[float, float], secs: float) -> str:
                """CPU the database and the simulator used, as cores over the run."""
                after = others()
                return f"{(after[0] - before[0]) / secs:.2f} / {(after[1] - before[1]) / secs:.2f}"

            for c, mem in [(c, m) for c in a.concurrency for m in a.memory]:
                dsn = fresh_db(admin)
                schema.init(Database(dsn))
                time.sleep(0.5)
                o0 = others()
                secs, cpu, rss, code = scanfill_child(dsn, sim.urls, c, logs / f"scanfill-c{c}-m{mem}.log", mem or None)
                cores = shares(o0, secs)
                got = stored_rows(dsn)
                drop_db(admin, dsn)
                exact = "exact" if got == rows and code == 0 else f"EXIT {code}, {got:,} of {rows:,} rows"
                budget = "default --memory" if not mem else "no budget" if mem >= 1 << 20 else f"--memory {mem}"
                print(f"scanfill c={c} {budget}: {secs:.1f} s, {got / secs:,.0f} rows/s, cpu {cpu:.1f} s, rss {rss} MB, {exact}",
                      flush=True)  # fmt: skip
                out.append([f"scanfill, concurrency {c}, {budget} ({exact})", f"{secs:.1f}", f"{got:,}", f"{got / secs:,.0f}",
                            f"{got / secs / ceiling * 100:.0f} %", f"{cpu:.1f}", f"{cpu / max(1, got) * 1e6:.1f}",
                            f"{cpu / secs:.2f} / {cores}", f"{rss:,}"])  # fmt: skip
            if not a.no_guide:
                dsn = fresh_db(admin)
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the guide's loaders are pool processes
                o0 = others()
                secs, got = guide_run(dsn, sim.urls[0])
                cores = shares(o0, secs)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                drop_db(admin, dsn)
                cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
                print(f"guide: {secs:.1f} s, {got / secs:,.0f} rows/s", flush=True)
                out.append(["the guide's recipe (one stream per synchronizer, one scan)", f"{secs:.1f}", f"{got:,}",
                            f"{got / secs:,.0f}", f"{got / secs / ceiling * 100:.0f} %", f"{cpu:.1f}",
                            f"{cpu / max(1, got) * 1e6:.1f}", f"{cpu / secs:.2f} / {cores}", "-"])  # fmt: skip
    print(table(["case", "seconds", "rows", "rows/s", "of ceiling", "loader CPU s", "loader us/row",
                 "cores busy: loader / database / simulator", "peak RSS MiB"], out))  # fmt: skip


if __name__ == "__main__":
    main()
