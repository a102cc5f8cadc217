"""A run through pgbouncer in transaction mode (Supabase's pooler works the same way) is identical."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from dbcheck import assert_db_matches
from procs import scanfill
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from servers import debian_pg15, free_port, pgbouncer
from shared import SMALL


@pytest.mark.needs("postgresql-15", "pgbouncer")
def test_backfill_through_pgbouncer_transaction_mode(tmp_path: Path) -> None:
    pg_port = free_port()
    with debian_pg15(tmp_path, tcp_port=pg_port) as admin:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE pooled")
        with pgbouncer(tmp_path, pg_port) as port:
            dsn = f"postgresql://postgres@127.0.0.1:{port}/pooled"
            with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=5))) as sim:
                p = scanfill("run", "--workers", "2", "--concurrency", "3", "--page-size", "40", "--no-progress",
                             "--prepare", "--restore", dsn=dsn, urls=sim.urls)  # fmt: skip
                out = p.communicate(timeout=300)[0].decode()
                assert p.returncode == 0, out
                assert "history complete" in out
                v = scanfill("verify", dsn=dsn, urls=sim.urls)
                vout = v.communicate(timeout=120)[0].decode()
                assert v.returncode == 0, vout
        assert_db_matches(admin.replace("/postgres?", "/pooled?"), Ledger(SMALL))
