"""No lake lock a frozen process can hold forever, and no vacuum that deletes what a commit staged
(issue 29, items 2 and 9): `scanfill` processes stopped with SIGSTOP at a chosen point (a hook in the
process stops itself there, so the point is exact), real PostgreSQL, the simulator over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from procs import finish, scanfill, wait_for
from scanfill.lake.layout import Lake
from scanfill.lake.read import add_actions, table
from scanfill.sim import Ledger, SimConfig, Simulator
from shared import SMALL, drop_database, new_database

# `scanfill ARGS...` that stops itself (SIGSTOP) at HOOK's first call: what it holds then, it holds
# until the test sends SIGCONT.
FROZEN_AT = """
import os, signal, sys
from scanfill.coord.store import Store
from scanfill.lake.sink import LakeWriter

hook, calls = sys.argv[1], []

def lake_unpublished(self, conn, target, table):
    files = unpublished(self, conn, target, table)
    if files and table == "events" and not calls:  # the writer lock held, its publish numbered, the log read
        calls.append(1)
        os.kill(os.getpid(), signal.SIGSTOP)
    return files

def stage(self, conn, batch):
    staged(self, conn, batch)
    calls.append(1)
    if len(calls) == 3:  # a commit's files written and recorded, the commit not yet committed
        os.kill(os.getpid(), signal.SIGSTOP)

unpublished, staged = Store.lake_unpublished, LakeWriter.stage
if hook == "publish":
    Store.lake_unpublished = lake_unpublished
else:
    LakeWriter.stage = stage
sys.argv = ["scanfill", *sys.argv[2:]]
from scanfill.cli import main
main()
"""

RUN = ("run", "--no-progress", "--concurrency", "1", "--page-size", "50", "--lease", "2")


def _frozen_at(hook: str, dsn: str, urls: list[str], *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": dsn, "SCAN_URL": ",".join(urls)}
    return subprocess.Popen([sys.executable, "-c", FROZEN_AT, hook, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


def _stopped(p: subprocess.Popen[bytes]) -> bool:
    with open(f"/proc/{p.pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _wait_stopped(p: subprocess.Popen[bytes]) -> None:
    wait_for(lambda: p.poll() is not None or _stopped(p), 90, "the process to stop itself at its hook")
    assert p.poll() is None, p.communicate()[0].decode()[-3000:]


def _lake_ids(root: str) -> list[tuple[str, int]]:
    """The lake's update ids; its events are each there once."""
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    con.register("e", table(Lake(root), "events").to_pyarrow_dataset())
    n, distinct = con.execute("SELECT count(*), count(DISTINCT (event_id, migration_id)) FROM e").fetchone() or (0, 0)
    assert n == distinct > 0, f"{n} events, {distinct} distinct"
    return [(str(u), int(m)) for u, m in con.execute("SELECT update_id, migration_id FROM u WHERE kind <> 'import'"
                                                     ).fetchall()]  # fmt: skip


def _want() -> list[tuple[str, int]]:
    return sorted((h.update_id, h.migration_id) for h in Ledger(SMALL).expected_all())


def _exact(db: str, urls: list[str], root: str) -> None:
    """The lake holds every update of the simulator once, every file the log adds exists, and
    `verify --lake` passes."""
    got = sorted(_lake_ids(root))
    assert got == _want(), f"{len(got)} rows in the lake, {len(_want())} in the ledger"
    for t in ("updates", "events"):
        for path in add_actions(table(Lake(root), t))["path"]:
            assert (Path(root) / t / path).exists(), f"{t}/{path}: in the Delta log, not on disk"
    v = subprocess.run([sys.executable, "-m", "scanfill.cli", "verify", "--lake", root, "--json"],
                       env={**os.environ, "DATABASE_URL": db, "SCAN_URL": ",".join(urls)},
                       capture_output=True, timeout=120)  # fmt: skip
    checks = json.loads(v.stdout)
    assert v.returncode == 0 and all(c["ok"] for c in checks), checks


@pytest.fixture
def fresh(pg_admin_dsn: str) -> Iterator[str]:
    dsn = new_database(pg_admin_dsn, "locks")
    yield dsn
    drop_database(pg_admin_dsn, dsn)


def test_a_loader_frozen_holding_the_publisher_lock_costs_seconds_and_nothing_is_doubled_when_it_resumes(
        fresh: str, tmp_path: Path) -> None:  # fmt: skip
    """Item 2: a `run --lake` stops (SIGSTOP) inside a publish, holding the lake's writer lock, its
    files numbered and the log read. Another `run --lake` still loads and publishes everything within
    a bound (the server ends the frozen holder's transaction), while the first stays frozen; resumed,
    the first one's stale Delta commit is refused and nothing is added twice."""
    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        a = _frozen_at("publish", fresh, sim.urls, *RUN, "--lake", root)
        _wait_stopped(a)
        with psycopg.connect(fresh, autocommit=True) as conn:  # it really holds the lock
            held = conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) WHERE "
                                "l.locktype = 'advisory' AND l.granted AND s.application_name = "
                                "'scanfill lake writer lock'").fetchone()  # fmt: skip
        assert held == (1,)
        t0 = time.monotonic()
        b = scanfill(*RUN, "--lake", root, dsn=fresh, urls=sim.urls)
        out_b = finish(b, 120, fresh)
        took = time.monotonic() - t0
        assert b.returncode == 0, out_b
        assert _stopped(a)  # all of it done while the holder is still frozen
        assert took < 60, f"the second loader took {took:.0f} s"
        _exact(fresh, sim.urls, root)
        a.send_signal(signal.SIGCONT)
        out_a = finish(a, 120, fresh)
        assert "Traceback" not in out_a, out_a[-5000:]
        _exact(fresh, sim.urls, root)
    print(f"second loader done in {took:.1f} s with the first frozen holding the writer lock")


def test_vacuum_while_a_commit_has_staged_its_files_deletes_none_of_them(fresh: str, tmp_path: Path) -> None:
    """Item 9: `run --lake` stops (SIGSTOP) in a commit that has written and recorded its files and
    not yet committed. `export --vacuum 0` waits for that commit (it lists, then waits out every
    commit that was staging, under the writer lock); resumed, the loader commits and publishes, and
    every file the Delta log adds is on disk: the lake equals the simulator."""
    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        a = _frozen_at("stage", fresh, sim.urls, *RUN[:-1], "15", "--lake", root)  # its commit guard: 60 s
        _wait_stopped(a)
        x = scanfill("export", "--to", root, "--vacuum", "0", dsn=fresh, urls=sim.urls)

        def vacuum_waits() -> bool:
            with psycopg.connect(fresh, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) WHERE "
                                   "l.locktype = 'advisory' AND NOT l.granted AND s.application_name = "
                                   "'scanfill vacuum'").fetchone()  # fmt: skip
            return bool(row and row[0])

        # the vacuum waits for the frozen commit (on main it deleted its files and finished)
        wait_for(lambda: x.poll() is not None or vacuum_waits(), 90, "the vacuum to wait for the staging commit")
        a.send_signal(signal.SIGCONT)
        out_x = finish(x, 120, fresh)
        assert x.returncode == 0 and "vacuum:" in out_x, out_x
        out_a = finish(a, 180, fresh)
        assert a.returncode == 0, out_a[-5000:]
        _exact(fresh, sim.urls, root)
