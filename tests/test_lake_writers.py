"""The lake with more than one writer, and a lake that cannot be written (issue 29, items 1 and 7):
real PostgreSQL, the simulator over HTTP, `scanfill` as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs import finish, scanfill
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


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Path]:
    """A directory on a small tmpfs of its own (tests run as root), remountable read-only."""
    mnt = tmp_path / "lake"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt: Path, how: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{how}", str(mnt)], check=True)


@pytest.mark.parametrize(("spoil", "mend", "why"), [("ro", "rw", "Read-only file system"),
                                                    ("size=256k", "size=64m", "No space left on device")],
                         ids=["read-only", "full"])  # fmt: skip
def test_run_into_a_lake_that_cannot_be_written_stops_with_one_line_and_resumes_exactly(
        db: str, small_mount: Path, spoil: str, mend: str, why: str) -> None:  # fmt: skip
    """Item 7: `run --lake` into a lake that cannot be written (a read-only mount; a tmpfs of 256 KiB,
    less than the ledger's files) stops with one line naming the lake, the reason and what to do, no
    traceback; made writable or given room, the same command completes it exactly once (files of
    the failed commits are never published)."""
    root = str(small_mount)
    args = ("run", "--no-progress", "--concurrency", "3", "--lake", root, "--page-size", "50")
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        _remount(small_mount, spoil)
        p = scanfill(*args, dsn=db, urls=sim.urls)
        out = finish(p, 180, db)
        assert p.returncode == 1 and "Traceback" not in out and "panicked" not in out, out
        said = [ln for ln in out.splitlines() if "ERROR" in ln]
        assert len(said) == 1 and f"the lake at {root} cannot be written ({why})" in said[0], out
        _remount(small_mount, mend)
        p = scanfill(*args, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0 and "history complete" in out, out
        _assert_exact(db, sim.urls, root)


def test_run_into_a_bucket_that_refuses_writes_stops_with_one_line_and_resumes_exactly(db: str, tmp_path: Path) -> None:
    """Item 7 on object storage (moto's S3 server over HTTP): a lake in a bucket that does not
    exist (a wiped or mistyped bucket; a bucket denying PUTs is refused alike) stops `run --lake`
    with one line naming the lake, no traceback; with the bucket there, the same command completes
    it exactly once."""
    from servers import moto_s3

    root = "s3://ledger-lake/canton"
    args = ("run", "--no-progress", "--concurrency", "3", "--lake", root, "--page-size", "50")
    with moto_s3(tmp_path), Simulator(SimConfig(ledger=SMALL)) as sim:
        p = scanfill(*args, dsn=db, urls=sim.urls)
        out = finish(p, 180, db)
        assert p.returncode != 0 and "Traceback" not in out and "panicked" not in out, out
        said = [ln for ln in out.splitlines() if "cannot be written" in ln]
        assert len(said) == 1 and f"the lake at {root} cannot be written (NoSuchBucket" in said[0], out
        import boto3

        boto3.client("s3").create_bucket(Bucket="ledger-lake")
        p = scanfill(*args, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0 and "history complete" in out, out
        _assert_exact(db, sim.urls, root)


def _assert_exact(db: str, urls: list[str], root: str) -> None:
    """The lake holds the simulator's ledger exactly once, and `verify --lake` agrees."""
    want = sorted((h.update_id, h.migration_id) for h in Ledger(SMALL).expected_all())
    got = sorted(_lake_ids(root))
    assert got == want, f"{len(got)} rows in the lake, {len(want)} in the ledger"
    v = subprocess.run([sys.executable, "-m", "scanfill.cli", "verify", "--lake", root, "--json"],
                       env={**os.environ, "DATABASE_URL": db, "SCAN_URL": ",".join(urls)},
                       capture_output=True, timeout=120)  # fmt: skip
    checks = json.loads(v.stdout)
    assert v.returncode == 0 and all(c["ok"] for c in checks), checks


def test_a_follower_waits_out_a_read_only_lake_and_resumes_exactly(db: str, small_mount: Path) -> None:
    """Item 7: the lake turns read-only under `follow --lake` (its tables exist, the ledger grows):
    the follower says so in one line, keeps running (no panic, no traceback) and, the lake
    writable again, stores what grew meanwhile: every update exactly once."""
    from procs import lines_of, wait_for

    root = str(small_mount)
    total = Ledger(SMALL).total_updates()
    with Simulator(SimConfig(ledger=SMALL, grow=50, grow_updates=60)) as sim:
        p = scanfill("run", "--no-progress", "--concurrency", "3", "--lake", root, dsn=db, urls=sim.urls)
        assert p.returncode == 0 if finish(p, 240, db) is not None else False
        _remount(small_mount, "ro")
        f = scanfill("follow", "--lake", root, "--poll", "0.2", "--lease", "4", dsn=db, urls=sim.urls)
        said = lines_of(f)
        try:
            wait_for(lambda: any("cannot be written (Read-only file system)" in ln for ln in said), timeout=60,
                     what="the follower to say the lake cannot be written")  # fmt: skip
            assert f.poll() is None, "".join(said)  # still following
            _remount(small_mount, "rw")

            def caught_up() -> bool:
                import psycopg

                with psycopg.connect(db) as conn:
                    row = conn.execute("SELECT coalesce(sum(updates), 0) FROM completeness").fetchone()
                return bool(sim.stats()["grown"]) and row is not None and int(row[0]) == total

            wait_for(caught_up, timeout=120, what="the follower to store the grown ledger")
        finally:
            _remount(small_mount, "rw")
            f.terminate()
            rc = f.wait(timeout=120)
        out = "".join(said)
        assert rc == 0 and "Traceback" not in out and "panicked" not in out, out
        _assert_exact(db, sim.urls, root)
