"""What framing rows in the decoder bought, side by side in one process (loader CPU per row):

python benchmarks/framing_ab.py --rows 150000 --reps 5

A: the decoder before it (commit 3efc226, read from this repository's history): named rows
   (NamedTuple, datetime) sent with psycopg's `Copy.write_row` and binary dumpers.
B: today's decoder: each update's rows COPY-framed from the decoded structs, sent as one buffer.
Both COPY the same pages into the same tables of one embedded PostgreSQL (a fresh database per
repetition and side); only this process's CPU is counted. Min and median over repetitions.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import drop_db, fresh_db, postgres, raw_pages, table
from scanfill.coord import schema
from scanfill.coord.schema import EVENT_TYPES, UPDATE_TYPES
from scanfill.db import Database
from scanfill.load.decode import decode_page
from scanfill.load.sink import Sink
from scanfill.sim import Ledger, LedgerConfig, SimConfig, Simulator

OLD = "3efc226"


def old_decoder() -> Any:
    """`scanfill.load.decode` as it was at OLD, loaded under another name."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{OLD}:src/scanfill/load/decode.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    path = Path("/tmp/scanfill_old_decode.py")
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("scanfill_old_decode", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # msgspec resolves the structs' annotations through it
    spec.loader.exec_module(mod)
    return mod


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    old = old_decoder()
    cfg = LedgerConfig.for_rows(a.rows, ids=(0,))
    res: dict[str, list[float]] = {}
    with postgres() as admin, Simulator(SimConfig(ledger=cfg, prerender=True)) as sim:
        raw = [(m, sid, data) for m, sid, _lo, _before, data in raw_pages(sim.urls[0], Ledger(cfg))]

        def side_a(dsn: str) -> int:
            db, rows = Database(dsn), 0
            sink = Sink(db)
            with db.connect(autocommit=True) as conn:
                for m, sid, data in raw:
                    b = old.decode_page(data, m, sid)
                    with conn.transaction():
                        for stmt, types, batch_rows in ((sink.copy_updates, UPDATE_TYPES, b.updates),
                                                        (sink.copy_events, EVENT_TYPES, b.events)):  # fmt: skip
                            with conn.cursor().copy(stmt) as cp:
                                cp.set_types(list(types))
                                for r in batch_rows:
                                    cp.write_row(r)
                    rows += b.rows
            return rows

        def side_b(dsn: str) -> int:
            db, rows = Database(dsn), 0
            sink = Sink(db)
            with db.connect(autocommit=True) as conn:
                for m, sid, data in raw:
                    b = decode_page(data, m, sid)
                    with conn.transaction():
                        sink.copy_rows(conn, b)
                    rows += b.rows
            return rows

        def decode_a() -> int:
            return sum(old.decode_page(data, m, sid).rows for m, sid, data in raw)

        def decode_b() -> int:
            return sum(decode_page(data, m, sid).rows for m, sid, data in raw)

        for _ in range(a.reps):
            for name, fn in (("A decode (named rows)", decode_a), ("B decode (framed rows)", decode_b)):
                t = cpu()
                n = fn()
                res.setdefault(name, []).append((cpu() - t) / n * 1e6)
            for name, side in (("A decode + write_row COPY", side_a), ("B decode + framed COPY", side_b)):
                dsn = fresh_db(admin)
                schema.init(Database(dsn))
                t = cpu()
                n = side(dsn)
                res.setdefault(name, []).append((cpu() - t) / n * 1e6)
                drop_db(admin, dsn)
            print({k: round(v[-1], 1) for k, v in res.items()}, flush=True)
    print(f"{n:,} rows per side and repetition")
    print(table(["loader CPU", "us/row min", "median"],
                [[k, f"{min(v):.1f}", f"{statistics.median(v):.1f}"] for k, v in res.items()]))  # fmt: skip
    ratio = min(res["A decode + write_row COPY"]) / min(res["B decode + framed COPY"])
    print(f"decode + COPY: B needs {1 / ratio:.2f}x A's loader CPU per row")


if __name__ == "__main__":
    sys.exit(main())
