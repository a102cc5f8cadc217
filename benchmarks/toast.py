"""How the JSON columns are TOASTed changes the server's COPY cost: pglz (the default), lz4, or no
compression (STORAGE EXTERNAL). Debian's PostgreSQL 15 (built with lz4). Usage: python benchmarks/toast.py [ROWS]"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import psycopg

from common import table
from run import copy_ceiling, prefetch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.sim import Ledger, LedgerConfig, SimConfig, Simulator
from servers import debian_pg15

JSON_COLUMNS = {"ledger_updates": ["update_json"], "ledger_events": ["payload", "exercise_result"]}


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    cfg = LedgerConfig.for_rows(rows)
    with Simulator(SimConfig(ledger=cfg, prerender=True), mode="process") as sim:
        batches = prefetch(sim.url, Ledger(cfg))
    n = sum(b.rows for b in batches)
    lines = []
    with tempfile.TemporaryDirectory() as d, debian_pg15(Path(d)) as admin:
        for k, mode in enumerate(["pglz (default)", "lz4", "no compression (EXTERNAL)", "pglz (default)"]):
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f"CREATE DATABASE t{k}")
            dsn = admin.replace("/postgres?", f"/t{k}?")
            schema.init(Database(dsn))
            with psycopg.connect(dsn, autocommit=True) as c:
                for t, cols in JSON_COLUMNS.items():
                    for col in cols:
                        if mode == "lz4":
                            c.execute(f"ALTER TABLE {t} ALTER COLUMN {col} SET COMPRESSION lz4")
                        elif mode.startswith("no"):
                            c.execute(f"ALTER TABLE {t} ALTER COLUMN {col} SET STORAGE EXTERNAL")
            secs = copy_ceiling(dsn, batches, 2)
            with psycopg.connect(dsn) as c:
                size = c.execute(
                    "SELECT pg_total_relation_size('ledger_updates') + pg_total_relation_size('ledger_events')"
                ).fetchone()[0]  # type: ignore[index]
            lines.append([mode, f"{secs:.1f}", f"{n / secs:,.0f}", f"{size / 1e6:,.0f}"])
    print(table(["JSON column TOAST", "s", "rows/s (COPY from memory, 2 connections)", "table size MB"], lines))


if __name__ == "__main__":
    main()
