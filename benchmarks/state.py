"""Contract state: what keeping it costs a backfill, and what asking it costs.

python benchmarks/state.py load --rows 500000 [--prepared]  # rows/s with and without contract state, alternating
python benchmarks/state.py query --rows 1000000 10000000  # active() p50/p95 and holdings at past positions
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import psycopg

from common import Timer, drop_db, fresh_db, postgres, table
from scanfill.db import Database
from scanfill.load.run import RunOptions, run
from scanfill.load.worker import WorkerSettings
from scanfill.ops import state
from scanfill.scan.client import ScanConfig
from scanfill.sim import Ledger, LedgerConfig, SimConfig, Simulator
from scanfill.timeutil import format_us


def _load(dsn: str, urls: list[str], contract_state: bool, **kw: object) -> tuple[float, int]:
    ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(urls)), concurrency=16,
                        contract_state=contract_state, **kw)  # type: ignore[arg-type]  # fmt: skip
    s = run(RunOptions(worker=ws, progress=False))
    assert s.complete and not s.failures, s.failures
    return s.seconds, s.rows


def bench_load(rows: int, prepared: bool = False) -> str:
    """Alternating runs; `prepared`: each into tables `scanfill prepare` made UNLOGGED and index-free."""
    from scanfill.coord import schema
    from scanfill.ops import maintenance

    cfg = LedgerConfig.for_rows(rows)
    lines, rates = [], {True: [], False: []}  # type: ignore[var-annotated]
    with postgres() as admin, Simulator(SimConfig(ledger=cfg, prerender=True), mode="process") as sim:
        for on in (True, False, True, False):
            dsn = fresh_db(admin)
            if prepared:
                schema.init(Database(dsn))
                maintenance.prepare(Database(dsn), echo=lambda _: None)
            secs, n = _load(dsn, sim.urls, on)
            with psycopg.connect(dsn) as conn:
                size = conn.execute("SELECT pg_total_relation_size('contracts'), (SELECT count(*) FROM contracts), "
                                    "pg_total_relation_size('ledger_updates') + pg_total_relation_size('ledger_events')"
                                    ).fetchone()  # fmt: skip
            assert size is not None
            drop_db(admin, dsn)
            rates[on].append(n / secs)
            lines.append(["kept" if on else "off (--no-contract-state)", f"{n:,}", f"{secs:.1f}", f"{n / secs:,.0f}",
                          f"{size[1]:,}", f"{size[0] / 1e6:,.0f}", f"{size[2] / 1e6:,.0f}"])  # fmt: skip
    ratio = [a / b for a, b in zip(rates[True], rates[False], strict=True)]
    return (table(["contract state", "rows", "s", "rows/s", "contracts", "contracts MB", "ledger MB"], lines)
            + f"\n\nrows/s with state / without, pairwise: {', '.join(f'{r:.2f}' for r in ratio)}")  # fmt: skip


def bench_query(sizes: list[int], samples: int = 25) -> str:
    lines = []
    rng = random.Random(5)
    with postgres() as admin:
        for rows in sizes:
            cfg = LedgerConfig.for_rows(rows)
            ledger = Ledger(cfg)
            dsn = fresh_db(admin)
            with Simulator(SimConfig(ledger=cfg), mode="process") as sim, Timer() as t:
                _, n = _load(dsn, sim.urls, True, update_json="envelope")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE contracts")
                total = conn.execute("SELECT count(*) FROM contracts").fetchone()[0]  # type: ignore[index]
            db = Database(dsn)
            migs = ledger.migration_ids()
            points = []
            for _ in range(samples):
                m = rng.choice(migs)
                lo, hi = ledger.specs[m].start_us, ledger.migration_end_us(m)
                points.append((m, rng.randrange(lo, hi)))
            for template in ("Splice.Amulet:Amulet", "Splice.ValidatorLicense:ValidatorLicense",
                             "Splice.Amulet:FeaturedAppActivityMarker"):  # fmt: skip
                times, found = [], []
                for m, at in points:
                    t0 = time.perf_counter()
                    got = state.active(db, state.Position(m, at), template)
                    times.append(time.perf_counter() - t0)
                    found.append(len(got))
                times.sort()
                lines.append([f"{n:,}", f"{total:,}", f"active('{template}')", f"{statistics.median(found):,.0f}",
                              f"{statistics.median(times) * 1000:,.1f}", f"{times[int(len(times) * 0.95) - 1] * 1000:,.1f}"])  # fmt: skip
            times = []
            for m, at in points[:9]:
                t0 = time.perf_counter()
                got = state.per_owner(state.holdings(db, state.Position(m, at)))
                times.append(time.perf_counter() - t0)
            lines.append([f"{n:,}", f"{total:,}", "holdings, every owner", f"{len(got)} owners",
                          f"{statistics.median(times) * 1000:,.1f}", f"{max(times) * 1000:,.1f}"])  # fmt: skip
            print(f"loaded {n:,} rows in {t.seconds:.0f} s", flush=True)
            drop_db(admin, dsn)
    return table(["ledger rows", "contracts", "query at a random past position", "rows returned (median)",
                  "p50 ms", "p95 ms (max for holdings)"], lines)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["load", "query"])
    ap.add_argument("--rows", type=int, nargs="+", default=[600_000])
    ap.add_argument("--prepared", action="store_true", help="load: into prepared (UNLOGGED, index-free) tables")
    a = ap.parse_args()
    print(bench_load(a.rows[0], a.prepared) if a.what == "load" else bench_query(a.rows), flush=True)
    print(f"(at {format_us(int(time.time() * 1e6))})")


if __name__ == "__main__":
    main()
