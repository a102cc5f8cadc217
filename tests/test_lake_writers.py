"""The lake with more than one writer, and a lake that cannot be written (issue 29, items 1 and 7):
real PostgreSQL, the simulator over HTTP, `scanfill` as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from procs import finish
from scanfill.lake.layout import Lake
from scanfill.lake.read import add_actions, table
from scanfill.sim import Ledger, SimConfig, Simulator
from shared import SMALL

# `scanfill` whose first compaction waits at a gate until the other process is there too, or is
# waiting for the lake's lock (then the two cannot compact together): the two processes stop
# together every time, deterministically, whichever finishes its share first.
AT_THE_GATE = """
import pathlib, sys, time
import psycopg
from deltalake.table import TableOptimizer

dsn, gate, me = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
compact, arrived = TableOptimizer.compact, []

def other_there() -> bool:
    if len(list(gate.glob("at-*"))) >= 2:
        return True
    with psycopg.connect(dsn, autocommit=True) as conn:  # the other one waits for the lock this one holds
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    return bool(row and row[0])

def gated(self, *args, **kw):
    if not arrived:
        arrived.append(1)
        (gate / f"at-{me}").touch()
        while not other_there():
            time.sleep(0.01)  # polling what the other process does, not waiting a guessed time
    return compact(self, *args, **kw)

TableOptimizer.compact = gated
sys.argv = ["scanfill", *sys.argv[4:]]
from scanfill.cli import main
main()
"""


def _gated(dsn: str, urls: list[str], gate: Path, me: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": dsn, "SCAN_URL": ",".join(urls)}
    return subprocess.Popen([sys.executable, "-c", AT_THE_GATE, dsn, str(gate), me, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _lake_ids(root: str) -> list[tuple[str, int]]:
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    return [(str(u), int(m)) for u, m in con.execute("SELECT update_id, migration_id FROM u").fetchall()]


def test_two_loaders_stopping_together_compact_one_after_the_other_and_the_lake_holds_each_row_once(
        pg_admin_dsn: str, tmp_path: Path) -> None:  # fmt: skip
    """Item 1: two `run --lake` processes (what `--workers 2` starts) stop together and both compact
    the same partitions, three times over (each on a new database and lake): every time the lake
    holds every update of the simulator's ledger exactly once and `verify --lake` passes."""
    from shared import drop_database, new_database

    ledger = Ledger(SMALL)
    want = sorted((h.update_id, h.migration_id) for h in ledger.expected_all())
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        for rnd in range(3):
            db, root, gate = new_database(pg_admin_dsn), str(tmp_path / f"lake{rnd}"), tmp_path / f"gate{rnd}"
            gate.mkdir()
            try:
                args = ("run", "--no-progress", "--concurrency", "2", "--lake", root, "--page-size", "50")
                a, b = (_gated(db, sim.urls, gate, me, *args) for me in "ab")
                outs = [finish(a, 240, db), finish(b, 240, db)]
                assert a.returncode == 0 and b.returncode == 0, outs
                assert list(gate.glob("at-*")), outs  # a compaction really ran
                got = sorted(_lake_ids(root))
                assert got == want, f"round {rnd}: {len(got)} rows in the lake, {len(want)} in the ledger"
                v = subprocess.run([sys.executable, "-m", "scanfill.cli", "verify", "--lake", root, "--json"],
                                   env={**os.environ, "DATABASE_URL": db, "SCAN_URL": ",".join(sim.urls)},
                                   capture_output=True, timeout=120)  # fmt: skip
                checks = json.loads(v.stdout)
                assert v.returncode == 0 and all(c["ok"] for c in checks), (rnd, checks)
                files = add_actions(table(Lake(root), "updates"))["path"]
                assert len(files) == len({p.rsplit("/", 1)[0] for p in files}), files  # one file per partition
            finally:
                drop_database(pg_admin_dsn, db)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
