"""Benchmarks, each measured side by side in one run (the machine is shared and noisy).

python benchmarks/run.py sim       # simulator throughput, generated vs pre-rendered
python benchmarks/run.py backfill  # ceiling vs scanfill vs the guide's recipe, plus 300 ms latency
python benchmarks/run.py workers   # 1, 2, 4 worker processes vs the guide with 8 workers, 300 ms latency
python benchmarks/run.py restore   # parallel vs sequential index rebuilds; prepare-load-restore vs direct
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import threading
import time
from typing import Any

import aiohttp

from common import RawPage, Timer, drop_db, fresh_db, postgres, raw_pages, table
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.load.decode import Batch, decode_page
from scanfill.load.run import RunOptions, run
from scanfill.load.sink import Sink
from scanfill.load.worker import WorkerSettings
from scanfill.scan.client import ScanConfig
from scanfill.sim import FaultConfig, Ledger, LedgerConfig, SimConfig, Simulator
from scanfill.timeutil import format_us

# ----- simulator ---------------------------------------------------------------------------------


async def _drain(url: str, ledger: Ledger, clients: int) -> tuple[int, int, int, float]:
    """Page every range backwards with `clients` concurrent streams; (pages, items, bytes, seconds)."""
    jobs = []
    for m, sid, lo, hi in ledger.ranges():
        cuts = [lo + (hi + 1 - lo) * k // clients for k in range(clients + 1)]
        jobs += [(m, sid, a, b) for a, b in itertools.pairwise(cuts)]
    pages = items = nbytes = 0
    async with aiohttp.ClientSession() as session:

        async def one(m: int, sid: str, a: int, b: int) -> None:
            nonlocal pages, items, nbytes
            before = format_us(b)
            while True:
                body = {"migration_id": m, "synchronizer_id": sid, "before": before, "at_or_after": format_us(a),
                        "count": 1000}  # fmt: skip
                async with session.post(url + "/v0/backfilling/updates-before", json=body) as r:
                    data = await r.read()
                pages += 1
                nbytes += len(data)
                tail = data.rfind(b'"record_time":"')
                if data == b'{"transactions":[]}' or tail < 0:
                    return
                n = data.count(b'"update_id":"') - data.count(b'"unassign_id"') * 0
                items += n
                before = data[tail + 15 : tail + 15 + 27].decode()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(*j) for j in jobs))
        return pages, items, nbytes, time.perf_counter() - t0


def bench_sim(rows: int) -> str:
    ledger_cfg = LedgerConfig.for_rows(rows)
    ledger = Ledger(ledger_cfg)
    out = []
    for prerender in (False, True):
        with Timer() as start, Simulator(SimConfig(ledger=ledger_cfg, prerender=prerender), mode="process") as sim:
            pass
        with Simulator(SimConfig(ledger=ledger_cfg, prerender=prerender), mode="process") as sim:
            pages, items, nbytes, secs = asyncio.run(_drain(sim.url, ledger, 8))
        rows_served = items * (1 + ledger_cfg.events_mean)
        out.append([
            "pre-rendered" if prerender else "generated on demand", f"{start.seconds:.1f}", f"{pages / secs:,.1f}",
            f"{items / secs:,.0f}", f"~{rows_served / secs:,.0f}", f"{nbytes / secs / 1e6:,.1f}",
        ])  # fmt: skip
    return table(["simulator", "start-up s", "pages/s", "updates/s", "rows/s", "MB/s"], out)


# ----- backfill ----------------------------------------------------------------------------------


def prefetch(url: str, ledger: Ledger, lean: bool = False) -> list[Batch]:
    """Every page of the ledger, decoded, in memory: the input of the ceiling measurement."""
    return decode_pages(raw_pages(url, ledger), lean)


def decode_pages(pages: list[RawPage], lean: bool = False) -> list[Batch]:
    return [decode_page(data, m, sid, before, lo, lean=lean) for m, sid, lo, before, data in pages]


def copy_ceiling(dsn: str, batches: list[Batch], connections: int) -> float:
    """Raw binary COPY of the same rows from memory into the same tables (no HTTP, no decode)."""
    db = Database(dsn)
    sink = Sink(db)

    def worker(part: list[Batch]) -> None:
        with db.connect(autocommit=True) as conn:
            for b in part:
                with conn.transaction():
                    sink.copy_rows(conn, b)

    threads = [threading.Thread(target=worker, args=(batches[k::connections],)) for k in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def scanfill_run(dsn: str, urls: list[str], concurrency: int, workers: int = 1, **kw: Any) -> tuple[float, int, int]:
    ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(urls)), concurrency=concurrency, **kw)
    s = run(RunOptions(worker=ws, workers=workers, progress=False))
    assert s.complete and not s.failures, s.failures
    return s.seconds, s.rows, s.bytes


def guide_run(dsn: str, url: str, processes: int | None = None) -> tuple[float, int]:
    from guide_recipe import ranges, run_streams

    schema.init(Database(dsn))
    streams = ranges(url)
    with Timer() as t:
        rows = run_streams(dsn, url, streams, processes or len(streams))
    return t.seconds, rows


def bench_backfill(rows: int) -> str:
    ledger_cfg = LedgerConfig.for_rows(rows)
    ledger = Ledger(ledger_cfg)
    lines = []
    with postgres() as admin:
        with Simulator(SimConfig(ledger=ledger_cfg, prerender=True), mode="process") as sim:
            batches = prefetch(sim.url, ledger)
            nrows = sum(b.rows for b in batches)
            nbytes = sum(b.nbytes for b in batches)
            results: dict[str, tuple[float, int, int]] = {}
            for conns in (1, 2):
                dsn = fresh_db(admin)
                schema.init(Database(dsn))
                results[f"(1) ceiling: binary COPY from memory, {conns} connection(s)"] = (
                    copy_ceiling(dsn, batches, conns),
                    nrows,
                    nbytes,
                )
                drop_db(admin, dsn)
            del batches
            dsn = fresh_db(admin)
            results["(2) scanfill end to end, concurrency 16"] = scanfill_run(dsn, sim.urls, 16)
            drop_db(admin, dsn)
            # the recommended bulk configuration: `scanfill prepare` + `--update-json envelope`,
            # against its own ceiling (the same envelope rows into the same prepared tables)
            from scanfill.ops import maintenance

            lean = prefetch(sim.url, ledger, lean=True)
            dsn = fresh_db(admin)
            schema.init(Database(dsn))
            maintenance.prepare(Database(dsn), echo=lambda s: None)
            results["(1') ceiling: envelope rows into prepared tables, 2 connections"] = (
                copy_ceiling(dsn, lean, 2),
                nrows,
                nbytes,
            )
            drop_db(admin, dsn)
            del lean
            dsn = fresh_db(admin)
            schema.init(Database(dsn))
            maintenance.prepare(Database(dsn), echo=lambda s: None)
            results["(2') scanfill after `scanfill prepare`, --update-json envelope"] = scanfill_run(
                dsn, sim.urls, 16, update_json="envelope"
            )
            drop_db(admin, dsn)
            dsn = fresh_db(admin)
            secs, grows = guide_run(dsn, sim.url)
            results["(3) guide recipe: stream per synchronizer, pages of 500, staging + ON CONFLICT"] = (
                secs,
                grows,
                nbytes,
            )
            drop_db(admin, dsn)
        with Simulator(SimConfig(ledger=ledger_cfg, prerender=True, faults=FaultConfig(latency_ms=300)),
                       mode="process") as sim:  # fmt: skip
            for c in (1, 8, 32):
                dsn = fresh_db(admin)
                results[f"(4) 300 ms latency: scanfill, concurrency {c}"] = scanfill_run(dsn, sim.urls, c)
                drop_db(admin, dsn)
            dsn = fresh_db(admin)
            secs, grows = guide_run(dsn, sim.url)
            results["(4) 300 ms latency: guide recipe"] = (secs, grows, nbytes)
            drop_db(admin, dsn)
    ceiling = max(r / s for s, r, _ in (v for k, v in results.items() if k.startswith("(1)")))
    c1 = results["(1') ceiling: envelope rows into prepared tables, 2 connections"]
    ceiling_prepared = c1[1] / c1[0]
    guide = results["(3) guide recipe: stream per synchronizer, pages of 500, staging + ON CONFLICT"]
    guide_rate = guide[1] / guide[0]
    lat_guide = results["(4) 300 ms latency: guide recipe"]
    lat_guide_rate = lat_guide[1] / lat_guide[0]
    lat_c1 = results["(4) 300 ms latency: scanfill, concurrency 1"]
    lat_c1_rate = lat_c1[1] / lat_c1[0]
    for name, (secs, n, b) in results.items():
        rate = n / secs
        ref = lat_guide_rate if name.startswith("(4)") else guide_rate
        cref = ceiling_prepared if name.startswith(("(1')", "(2')")) else ceiling
        lines.append([name, f"{n:,}", f"{secs:.1f}", f"{rate:,.0f}", f"{b / secs / 1e6:,.1f}",
                      f"{rate / cref:.2f}", f"{rate / ref:.1f}x",
                      f"{rate / lat_c1_rate:.1f}x" if "scanfill" in name and name.startswith("(4)") else ""])  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (table(["variant", "rows", "s", "rows/s", "MB/s", "of ceiling", "vs guide", "vs c=1"], lines)
            + f"\n\nledger: {ledger.total_updates():,} updates, {nrows:,} rows, {nbytes / 1e6:,.0f} MB of JSON "
            f"({nbytes / nrows:,.0f} B/row); peak RSS of the benchmark process {peak:,.0f} MB")  # fmt: skip


def bench_workers(rows: int) -> str:
    from scanfill.sim import MigrationSpec

    # one migration with one synchronizer: the case where the guide's workers idle
    n = max(100, int(rows / 13))
    ledger_cfg = LedgerConfig(migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", n),))
    lines = []
    with (
        postgres() as admin,
        Simulator(
            SimConfig(ledger=ledger_cfg, prerender=True, faults=FaultConfig(latency_ms=300)), mode="process"
        ) as sim,
    ):
        res: dict[str, tuple[float, int]] = {}
        for w in (1, 2, 4):
            dsn = fresh_db(admin)
            secs, nr, _ = scanfill_run(dsn, sim.urls, 16, workers=w)
            res[f"scanfill, {w} worker process(es) x concurrency 16"] = (secs, nr)
            with __import__("psycopg").connect(dsn) as conn:
                fin = conn.execute("SELECT extract(epoch FROM max(stopped_at) - min(stopped_at)) FROM backfill_workers"
                                   ).fetchone()  # fmt: skip
            res[f"scanfill, {w} worker process(es) x concurrency 16"] += (float(fin[0] or 0),)  # type: ignore[assignment,index]
            drop_db(admin, dsn)
        dsn = fresh_db(admin)
        res["guide recipe, 8 workers (one synchronizer: one stream does all the work)"] = guide_run(dsn, sim.url, 8)
        drop_db(admin, dsn)
    base = res["guide recipe, 8 workers (one synchronizer: one stream does all the work)"]
    for name, v in res.items():
        secs, nr = v[0], v[1]
        spread = f"{v[2]:.1f}" if len(v) > 2 else ""  # type: ignore[misc]
        lines.append([name, f"{nr:,}", f"{secs:.1f}", f"{nr / secs:,.0f}", f"{(nr / secs) / (base[1] / base[0]):.1f}x",
                      spread])  # fmt: skip
    return table(["variant (300 ms latency per page)", "rows", "s", "rows/s", "vs guide", "finish spread s"], lines)


def bench_restore(rows: int) -> str:
    """Parallel vs sequential index rebuilds on the same data, and the whole prepare-load-restore
    cycle vs loading straight into logged, indexed tables."""
    from scanfill.ops import maintenance
    from scanfill.ops.maintenance import build_indexes, saved_objects

    ledger_cfg = LedgerConfig.for_rows(rows)
    lines = []
    with postgres() as admin, Simulator(SimConfig(ledger=ledger_cfg, prerender=True), mode="process") as sim:
        # a warm-up load, thrown away: the first load on a fresh server is much slower (measured
        # 63 s vs 78 s depending on which variant went first)
        dsn = fresh_db(admin)
        scanfill_run(dsn, sim.urls, 16)
        drop_db(admin, dsn)
        # straight into logged, indexed tables
        dsn = fresh_db(admin)
        direct_s, nrows2, _ = scanfill_run(dsn, sim.urls, 16)
        drop_db(admin, dsn)
        # the full cycle, bulk-load mode
        dsn = fresh_db(admin)
        db = Database(dsn)
        schema.init(db)
        with Timer() as t_prep:
            maintenance.prepare(db, echo=lambda s: None)
        load_s, nrows, _ = scanfill_run(dsn, sim.urls, 16)
        with Timer() as t_rest:
            maintenance.restore(db, jobs=4, echo=lambda s: None)
        cycle = t_prep.seconds + load_s + t_rest.seconds
        # index builds alone: drop them again and rebuild one after another, then four at once
        maintenance.prepare(db, echo=lambda s: None)
        with db.connect(autocommit=True) as conn:
            for t in ("ledger_updates", "ledger_events"):
                conn.execute(f"ALTER TABLE {t} SET LOGGED")
            todo = list(saved_objects(db, conn).values())
        builds = {}
        for jobs in (1, 4):
            with Timer() as tb:
                build_indexes(db, todo, jobs, "256MB", lambda s: None, None)
            builds[jobs] = tb.seconds
            with db.connect(autocommit=True) as conn:
                for o in todo:
                    conn.execute(f'DROP INDEX "{o.name}"')
        drop_db(admin, dsn)
    lines.append([f"rebuild {len(todo)} indexes one after another", f"{builds[1]:.1f}", "1.00x"])
    lines.append([f"rebuild {len(todo)} indexes, 4 at once (restore --jobs 4)", f"{builds[4]:.1f}",
                  f"{builds[1] / builds[4]:.2f}x"])  # fmt: skip
    lines.append([f"prepare + load + restore ({nrows:,} rows): {t_prep.seconds:.1f} + {load_s:.1f} + {t_rest.seconds:.1f}",
                  f"{cycle:.1f}", f"{direct_s / cycle:.2f}x"])  # fmt: skip
    lines.append([f"load into logged, indexed tables ({nrows2:,} rows)", f"{direct_s:.1f}", "1.00x"])
    return table(["variant", "s", "speed-up"], lines)


def bench_memory(rows: int) -> str:
    """Peak RSS of a `scanfill run` process: ordinary rows vs multi-megabyte updates."""
    import os
    import subprocess
    import sys

    lines = []
    with postgres() as admin:
        for label, cfg in (
            ("ordinary updates (~17 KB)", LedgerConfig.for_rows(rows)),
            (
                "multi-megabyte updates (400 KB per created event)",
                LedgerConfig.for_rows(rows // 40, payload_pad=400_000),
            ),
        ):
            with Simulator(SimConfig(ledger=cfg), mode="process") as sim:
                dsn = fresh_db(admin)
                env = {**os.environ, "DATABASE_URL": dsn, "SCAN_URL": sim.url}
                import psutil

                with Timer() as t:
                    p = subprocess.Popen([sys.executable, "-m", "scanfill.cli", "run", "--concurrency", "16",
                                          "--no-progress"], env=env, stdout=subprocess.DEVNULL)  # fmt: skip
                    proc = psutil.Process(p.pid)
                    peak = 0
                    while p.poll() is None:
                        try:
                            peak = max(peak, proc.memory_info().rss)
                        except psutil.NoSuchProcess:
                            break
                        time.sleep(0.05)
                assert p.returncode == 0
                import psycopg

                with psycopg.connect(dsn) as conn:
                    row = conn.execute("SELECT count(*), max(length(update_json::text)), "
                                       "sum(length(update_json::text)) FROM ledger_updates").fetchone()  # fmt: skip
                assert row is not None
                drop_db(admin, dsn)
                lines.append([label, f"{row[0]:,}", f"{row[1] / 1e6:.2f}", f"{row[2] / 1e6:,.0f}", f"{t.seconds:.1f}",
                              f"{peak / 1e6:,.0f}"])  # fmt: skip
    return table(["ledger", "updates", "largest update MB", "JSON MB", "s", "peak RSS MB (scanfill run)"], lines)


def bench_envelope(rows: int) -> str:
    """`--update-json full` (the update as served) vs `envelope` (without events_by_id), alternating."""
    import psycopg

    cfg = LedgerConfig.for_rows(rows)
    lines = []
    with postgres() as admin, Simulator(SimConfig(ledger=cfg, prerender=True), mode="process") as sim:
        for mode in ("full", "envelope", "full", "envelope"):
            dsn = fresh_db(admin)
            secs, n, _ = scanfill_run(dsn, sim.urls, 16, update_json=mode)
            with psycopg.connect(dsn) as conn:
                size = conn.execute("SELECT pg_total_relation_size('ledger_updates') + "
                                    "pg_total_relation_size('ledger_events')").fetchone()[0]  # type: ignore[index]  # fmt: skip
            drop_db(admin, dsn)
            lines.append([f"scanfill --update-json {mode}", f"{n:,}", f"{secs:.1f}", f"{n / secs:,.0f}",
                          f"{size / 1e6:,.0f}"])  # fmt: skip
    return table(["variant", "rows", "s", "rows/s", "tables MB"], lines)


def bench_best(rows: int) -> str:
    """The recommended bulk configuration (prepare + envelope) with 1 and 2 worker processes, next to
    the guide's recipe, in one run."""
    from scanfill.ops import maintenance

    cfg = LedgerConfig.for_rows(rows)
    res: dict[str, tuple[float, int]] = {}
    with postgres() as admin, Simulator(SimConfig(ledger=cfg, prerender=True), mode="process") as sim:
        for w in (1, 2):
            dsn = fresh_db(admin)
            schema.init(Database(dsn))
            maintenance.prepare(Database(dsn), echo=lambda s: None)
            secs, n, _ = scanfill_run(dsn, sim.urls, 16, workers=w, update_json="envelope")
            res[f"scanfill prepare + --update-json envelope, {w} worker process(es)"] = (secs, n)
            drop_db(admin, dsn)
        dsn = fresh_db(admin)
        res["guide recipe"] = guide_run(dsn, sim.url)
        drop_db(admin, dsn)
    g = res["guide recipe"][1] / res["guide recipe"][0]
    return table(
        ["variant", "rows", "s", "rows/s", "vs guide"],
        [[k, f"{n:,}", f"{s:.1f}", f"{n / s:,.0f}", f"{n / s / g:.1f}x"] for k, (s, n) in res.items()],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["sim", "backfill", "workers", "restore", "memory", "envelope", "best"])
    ap.add_argument("--rows", type=int, default=400_000)
    a = ap.parse_args()
    fn: Any = {
        "sim": bench_sim,
        "backfill": bench_backfill,
        "workers": bench_workers,
        "restore": bench_restore,
        "memory": bench_memory,
        "envelope": bench_envelope,
        "best": bench_best,
    }[a.what]
    print(fn(a.rows))


if __name__ == "__main__":
    main()
