"""The lake attacked as a user would (issue 29, items 3, 6 and 10): a reader polling through an
export killed between its two commits, a lake wiped or partly lost after an export, and one lake
named in many spellings. Real PostgreSQL, the simulator over HTTP, `scanfill` as processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from procs import finish, scanfill, wait_for
from scanfill.db import Database
from scanfill.lake.layout import Lake, canonical
from scanfill.lake.read import exists, partition_rows, table
from scanfill.sim import Ledger, SimConfig, Simulator
from shared import DAYS, drop_database, new_database

RUN = ("--no-progress", "--concurrency", "3")


@pytest.fixture(scope="module")
def loaded(pg_admin_dsn: str) -> Iterator[str]:
    """A database holding DAYS (several UTC days, two migrations) in its ledger tables, shared by
    the tests that export it: each exports to its own lake, so their records never meet."""
    dsn = new_database(pg_admin_dsn, "lakeatk")
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        p = scanfill("run", *RUN, dsn=dsn, urls=sim.urls)
        out = finish(p, 240, dsn)
        assert p.returncode == 0, out
    yield dsn
    drop_database(pg_admin_dsn, dsn)


def pg_rows(db: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    with psycopg.connect(db) as conn:
        u = conn.execute("SELECT update_id, migration_id, (extract(epoch FROM record_time) * 1e6)::bigint, "
                         "event_count FROM ledger_updates").fetchall()  # fmt: skip
        e = conn.execute("SELECT event_id, update_id, migration_id, contract_id FROM ledger_events").fetchall()
    return set(u), set(e)


def lake_rows(root: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    con.register("e", table(Lake(root), "events").to_pyarrow_dataset())
    u = con.execute("SELECT update_id, migration_id, epoch_us(record_time), event_count FROM u").fetchall()
    e = con.execute("SELECT event_id, update_id, migration_id, contract_id FROM e").fetchall()
    return u, e


def assert_lake_equals_db(db: str, root: str) -> None:
    want_u, want_e = pg_rows(db)
    got_u, got_e = lake_rows(root)
    assert len(got_u) == len(want_u) > 0 and set(got_u) == want_u
    assert len(got_e) == len(want_e) > 0 and set(got_e) == want_e


def partial_updates(root: str) -> list[str]:
    """What a reader following the Delta log finds wrong right now, reading updates first and then
    events (the order that exposes events published late): updates twice or without all their events."""
    import duckdb

    if not (exists(Lake(root), "updates") and exists(Lake(root), "events")):
        return []
    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    ups = con.execute("SELECT update_id, migration_id, event_count FROM u").fetchall()
    con.register("e", table(Lake(root), "events").to_pyarrow_dataset())
    evs = dict(((u, m), n) for u, m, n in con.execute("SELECT update_id, migration_id, count(*) FROM e GROUP BY 1, 2"
                                                        ).fetchall())  # fmt: skip
    wrong = [f"{u} (migration {m}): {evs.get((u, m), 0)} of {n} events" for u, m, n in ups if evs.get((u, m), 0) != n]
    if len(ups) != len({(u, m) for u, m, _ in ups}):
        wrong.append(f"an update twice among {len(ups)}")
    return wrong


def verified(db: str, urls: list[str], root: str) -> tuple[int, list[dict[str, Any]]]:
    v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=urls)
    checks = json.loads(finish(v, 120, db))
    return int(v.returncode), checks


def exported(db: str, urls: list[str], root: str, cwd: Path | None = None) -> tuple[int, str]:
    p = scanfill("export", "--to", root, dsn=db, urls=urls) if cwd is None else _in(cwd, "export", "--to", root,
                                                                                    dsn=db, urls=urls)  # fmt: skip
    out = finish(p, 240, db)
    return int(p.returncode), out


def _in(cwd: Path, *args: str, dsn: str, urls: list[str]) -> subprocess.Popen[bytes]:
    """`scanfill` run from another working directory (a relative lake name means something else there)."""
    env = {**os.environ, "DATABASE_URL": dsn, "SCAN_URL": ",".join(urls)}
    err = subprocess.PIPE if "--json" in args else subprocess.STDOUT  # what it logs stays out of its JSON
    return subprocess.Popen([sys.executable, "-m", "scanfill.cli", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=err)  # fmt: skip


# ----- item 3: events before updates, at every instant, also across a killed export -----------------


KILLED_AT = """
import os, signal, sys
from scanfill.db import Database
from scanfill.lake.export import export

commits = [0]

def committed(table, m, day):  # the process dies right after this Delta commit, as a SIGKILL would end it
    commits[0] += 1
    print(table, m, day, flush=True)
    if commits[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

export(Database(sys.argv[1]), sys.argv[2], committed=committed)
"""


def test_a_reader_never_sees_an_update_without_its_events_during_an_export_or_after_one_killed_between_commits(
        loaded: str, tmp_path: Path) -> None:  # fmt: skip
    from scanfill.lake.export import export

    # every instant of an export: the reader looks after each Delta commit (the only moments the lake changes)
    root = str(tmp_path / "lake")
    order: list[tuple[str, int, str]] = []
    seen: list[str] = []

    def look(t: str, m: int, day: Any) -> None:
        order.append((t, m, day.isoformat()))
        seen.extend(f"after the {t} commit of {m}/{day}: {w}" for w in partial_updates(root)[:3])

    report = export(Database(loaded), root, committed=look)
    assert report.partitions >= 3 and len(order) == 2 * report.partitions
    assert not seen, seen[:5]
    assert [t for t, _, _ in order[:2]] == ["events", "updates"], order  # each partition: events first
    assert_lake_equals_db(loaded, root)

    # killed (SIGKILL) right after the first commit of the second partition, then exported again
    killed = str(tmp_path / "killed")
    p = subprocess.run([sys.executable, "-c", KILLED_AT, loaded, killed, "3"], capture_output=True, timeout=240)
    assert p.returncode == -signal.SIGKILL, p.stdout.decode() + p.stderr.decode()
    first, second = (ln.split()[1:] for ln in p.stdout.decode().splitlines()[::2][:2])
    assert not partial_updates(killed), partial_updates(killed)[:3]
    parts = {t: set(partition_rows(Lake(killed), t)) for t in ("updates", "events")}
    key = (int(second[0]), date.fromisoformat(second[1]))
    assert key in parts["events"] and key not in parts["updates"]  # what the kill left: events, no updates yet
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        rc, out = exported(loaded, sim.urls, killed)
        assert rc == 0 and "exported" in out, out
        assert not partial_updates(killed)
        rc, checks = verified(loaded, sim.urls, killed)
    assert rc == 0 and all(c["ok"] for c in checks), checks
    assert_lake_equals_db(loaded, killed)
    assert first != second


# `scanfill export ARGS...` whose database session ends (as a restart ends it) while delta-rs reads
# the rows of the third table it writes (events of the second partition), after one batch of them.
ENDED_AT = """
import sys, psycopg
import scanfill.lake.export as ex

calls, stream, dsn = [0], ex._stream, sys.argv[1]

def _stream(conn, *args, **kwargs):
    calls[0] += 1
    for k, batch in enumerate(stream(conn, *args, **kwargs)):
        yield batch
        if k == 0 and calls[0] == 3:
            with psycopg.connect(dsn, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

ex._stream = _stream
sys.argv = ["scanfill", *sys.argv[2:]]
from scanfill.cli import main
main()
"""


def test_an_export_whose_database_restarts_says_so_in_one_line_and_the_next_export_completes_it(
        loaded: str, tmp_path: Path) -> None:  # fmt: skip
    """Item 7: delta-rs pulls the rows, so the database's error came back as a DeltaError around it
    (a 45-line traceback). Now one line naming the lake, what failed and what to do; nothing partial
    is visible, and the same export run again completes the lake."""
    root = str(tmp_path / "lake")
    env = {**os.environ, "DATABASE_URL": loaded}
    p = subprocess.run([sys.executable, "-c", ENDED_AT, loaded, "export", "--to", root], env=env, capture_output=True,
                       timeout=240)  # fmt: skip
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 2 and "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "stopped: the database failed" in errors[0], out
    assert "terminating connection" in errors[0] and "`scanfill export` again" in errors[0], errors
    assert exists(Lake(root), "events") and not partial_updates(root)
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        rc, out = exported(loaded, sim.urls, root)
        assert rc == 0 and "exported" in out, out
        rc, checks = verified(loaded, sim.urls, root)
    assert rc == 0 and all(c["ok"] for c in checks), checks
    assert_lake_equals_db(loaded, root)


def test_an_export_into_a_read_only_lake_says_so_in_one_line_and_completes_once_writable(
        loaded: str, tmp_path: Path) -> None:  # fmt: skip
    """Item 7: a lake that cannot be written (a read-only mount here; a full disk and a bucket
    denying PUTs are the same error) is one line naming it and what to do, and nothing is recorded
    as exported: made writable, the same export writes everything."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with Simulator(SimConfig(ledger=DAYS)) as sim:
            rc, out = exported(loaded, sim.urls, str(mnt))
            assert rc == 2 and "Traceback" not in out and "panicked" not in out, out
            said = [ln for ln in out.splitlines() if ln.startswith("error:")]
            assert len(said) == 1 and f"the lake at {mnt} cannot be written (Read-only file system)" in said[0], out
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
            rc, out = exported(loaded, sim.urls, str(mnt))
            assert rc == 0 and "exported" in out, out
            rc, checks = verified(loaded, sim.urls, str(mnt))
        assert rc == 0 and all(c["ok"] for c in checks), checks
        assert_lake_equals_db(loaded, str(mnt))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# `scanfill export ARGS...` that stops itself (SIGSTOP) right after its first Delta commit, holding
# the export lock, and goes no further until the test sends SIGCONT.
FROZEN_EXPORT = """
import os, signal, sys, time
import scanfill.lake.export as ex

calls, manifest = [0], ex.write_manifest

def write_manifest(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(0.5)  # another thread may take the stop first: this one goes no further before it
    return manifest(*args, **kwargs)

ex.write_manifest = write_manifest
sys.argv = ["scanfill", *sys.argv[1:]]
from scanfill.cli import main
main()
"""


def test_an_export_frozen_holding_its_lock_costs_seconds_and_writes_nothing_more_when_it_resumes(
        loaded: str, tmp_path: Path) -> None:  # fmt: skip
    """'Every lock bounded': an export frozen (SIGSTOP) after its first Delta commit held the
    export lock (a session lock) until its TCP connection died, and every other export of that
    lake was refused meanwhile. Now another export finishes the lake within seconds while it stays
    frozen; resumed, the frozen one writes nothing more and says why in one line."""
    root = str(tmp_path / "lake")
    env = {**os.environ, "DATABASE_URL": loaded}
    frozen = subprocess.Popen([sys.executable, "-c", FROZEN_EXPORT, "export", "--to", root], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        def stopped() -> bool:
            with open(f"/proc/{frozen.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        wait_for(lambda: frozen.poll() is not None or stopped(), 120, "the export to stop itself after a commit")
        assert frozen.poll() is None, frozen.communicate()[0].decode()[-3000:]
        outs: list[str] = []
        t0 = time.monotonic()
        with Simulator(SimConfig(ledger=DAYS)) as sim:
            def another() -> bool:
                rc, out = exported(loaded, sim.urls, root)
                outs.append(out)
                assert rc == 0 or "another `scanfill export`" in out, out
                return rc == 0

            wait_for(another, 90, "another export to take the lake over")
            took = time.monotonic() - t0
            assert stopped() and took < 60, (took, outs)
            assert "exported" in outs[-1], outs
            frozen.send_signal(signal.SIGCONT)
            out = frozen.communicate(timeout=120)[0].decode()
            assert frozen.returncode == 2 and "Traceback" not in out, out
            assert "lost it, perhaps to another export: it wrote nothing more" in out, out
            rc, checks = verified(loaded, sim.urls, root)
        assert rc == 0 and all(c["ok"] for c in checks), checks
        assert not partial_updates(root)
        assert_lake_equals_db(loaded, root)
    finally:
        if frozen.poll() is None:
            frozen.kill()
            frozen.communicate()


# ----- item 6: a lost or replaced lake is exported again ------------------------------------------------


def test_a_wiped_or_partly_lost_lake_is_exported_again_and_verify_names_the_repair(loaded: str, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        rc, out = exported(loaded, sim.urls, root)
        assert rc == 0 and "exported" in out, out
        # recorded as an older release did, under the spelling it was given: still this lake's exports
        old = os.path.relpath(root) + "/"
        with psycopg.connect(loaded, autocommit=True) as conn:
            conn.execute("UPDATE lake_exports SET target = %s WHERE target = %s", (old, canonical(root)))
            conn.execute("UPDATE scanfill_meta SET key = %s WHERE key = %s",
                         (f"lake_export_contracts {old}", f"lake_export_contracts {canonical(root)}"))  # fmt: skip
        rc, out = exported(loaded, sim.urls, root)
        assert rc == 0 and "nothing changed" in out, out
        shutil.rmtree(root)  # a new bucket, a wiped directory
        rc, out = exported(loaded, sim.urls, root)
        assert rc == 0 and "writing them again" in out and "nothing changed" not in out, out
        assert_lake_equals_db(loaded, root)
        assert exists(Lake(root), "contracts") and exists(Lake(root), "amulet_transfers")
        rc, checks = verified(loaded, sim.urls, root)
        assert rc == 0 and all(c["ok"] for c in checks), checks
        # one partition lost (a restored backup, a foreign delete): verify names the repair, export does it
        parts = sorted(partition_rows(Lake(root), "updates"))
        m, day = parts[len(parts) // 2]
        for t in ("updates", "events"):
            DeltaTable(Lake(root).uri(t)).delete(f"migration_id = {m} AND record_date = '{day.isoformat()}'")
        rc, checks = verified(loaded, sim.urls, root)
        bad = next(c for c in checks if c["name"].startswith("every lake partition"))
        assert rc == 1 and not bad["ok"] and f"`scanfill export --to {canonical(root)}` writes them again" in bad[
            "detail"], checks  # fmt: skip
        rc, out = exported(loaded, sim.urls, root)
        assert rc == 0 and "exported 1 partition(s)" in out, out
        rc, checks = verified(loaded, sim.urls, root)
    assert rc == 0 and all(c["ok"] for c in checks), checks
    assert_lake_equals_db(loaded, root)


# ----- item 10: one lake, one name -----------------------------------------------------------------------


def test_every_spelling_of_a_lake_is_one_canonical_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    want = str((tmp_path / "real" / "lake").resolve())
    spellings = ["real/lake", "./real/lake", "real/lake/", "real//lake", f"{tmp_path}/real/lake/", "link/lake",
                 f"file://{tmp_path}/real/lake", "other/../real/lake", "./real/./lake/."]  # fmt: skip
    assert {s: canonical(s) for s in spellings} == {s: want for s in spellings}
    assert Lake("real/lake/").uri("updates") == f"{want}/updates"
    s3 = ["s3://bucket/canton", "s3://bucket/canton/", "s3://bucket//canton", "S3://bucket/canton",
          "s3a://bucket/canton/", "s3://bucket/./canton"]  # fmt: skip
    assert {s: canonical(s) for s in s3} == {s: "s3://bucket/canton" for s in s3}
    assert canonical("s3://bucket/") == "s3://bucket" and canonical("s3://bucket/a") != canonical("s3://bucket/b")
    from scanfill.lake.sink import LakeWriter

    # one publisher lock per lake: the writers of two spellings key their bookkeeping alike
    assert LakeWriter(Database("postgresql:///x"), "real/lake/").target == LakeWriter(
        Database("postgresql:///x"), f"{tmp_path}/link/lake").target == want  # fmt: skip


def test_a_run_lake_lake_in_any_spelling_is_never_called_an_export_target_nor_emptied(db: str, tmp_path: Path) -> None:
    """`run --lake lake` from one directory; `verify --lake` and `export --to` with other spellings
    (trailing slash, ./, absolute, relative from elsewhere) see the same lake; and a lake whose
    bookkeeping is under a name this database does not know is refused, not overwritten with the
    empty ledger tables."""
    from procs import count_of

    work = tmp_path / "work"
    (work / "elsewhere").mkdir(parents=True)
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        p = _in(work, "run", *RUN, "--lake", "lake", dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0 and "history complete" in out, out
        total = sum(partition_rows(Lake(str(work / "lake")), "updates").values())
        assert total == Ledger(DAYS).total_updates()
        spellings = ((work, "lake/"), (work, "./lake"), (work / "elsewhere", "../lake"), (tmp_path, f"{work}/lake/"))
        for cwd, name in spellings:
            v = _in(cwd, "verify", "--lake", name, "--json", dsn=db, urls=sim.urls)
            checks = json.loads(finish(v, 120, db))
            assert v.returncode == 0 and all(c["ok"] for c in checks), (name, checks)
            assert not any("scanfill export" in c["detail"] for c in checks), (name, checks)
        rc, out = exported(db, sim.urls, "./lake/", cwd=work)
        assert rc == 0 and "contract state only" in out, out
        assert sum(partition_rows(Lake(str(work / "lake")), "updates").values()) == total
        # recorded as an older release did, under the spelling `run --lake lake` was given in work/: the
        # next command there with any spelling moves it to the canonical name and knows the lake
        files = count_of(db, "lake_files")
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE lake_files SET target = 'lake'")
        v = _in(work, "verify", "--lake", "./lake/", "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
        assert v.returncode == 0 and all(c["ok"] for c in checks), checks
        assert count_of(db, "lake_files", f"target = '{canonical(str(work / 'lake'))}'") == files > 0
        # its bookkeeping under a name that is not a spelling of this lake (another database's lake):
        # the ledger tables are empty, so the export refuses in one line and writes nothing
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE lake_files SET target = 'lake-as-spelled-before'")
        version = table(Lake(str(work / "lake")), "updates").version()
        rc, out = exported(db, sim.urls, str(work / "lake"))
        assert rc != 0 and "refusing to export" in out and "ledger tables are empty" in out, out
        assert "Traceback" not in out and len(out.strip().splitlines()) <= 2, out
    assert table(Lake(str(work / "lake")), "updates").version() == version
    assert sum(partition_rows(Lake(str(work / "lake")), "updates").values()) == total
    assert count_of(db, "lake_exports") == 0
