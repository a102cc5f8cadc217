"""prepare / restore / abort / tune against real PostgreSQL (embedded 16 and Debian's 15)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbcheck import assert_db_matches
from procs import loaded, scanfill, wait_for
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.errors import Refused
from scanfill.load.run import run
from scanfill.ops import maintenance
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from servers import debian_pg15, kill_postmaster
from shared import SMALL, options


@pytest.fixture(params=["embedded-16", pytest.param("debian-15", marks=pytest.mark.needs("postgresql-15"))])
def anydb(request: pytest.FixtureRequest, db: str, tmp_path: Path) -> Iterator[str]:
    if request.param == "embedded-16":
        yield db
        return
    with debian_pg15(tmp_path) as admin:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE t15")
        yield admin.replace("/postgres?", "/t15?")


def loaded_db(dsn: str) -> Database:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert run(options(dsn, sim.urls, concurrency=4)).complete
    return Database(dsn)


def test_prepare_restore_round_trips_the_catalog(anydb: str) -> None:
    db = loaded_db(anydb)
    with db.connect() as conn:
        conn.execute("ALTER TABLE ledger_events SET (fillfactor = 90)")  # a reloption that must survive
        conn.commit()
        before = maintenance.catalog_snapshot(db, conn)
    done = maintenance.prepare(db, echo=lambda s: None)
    assert any("UNLOGGED" in d for d in done)
    with db.connect() as conn:
        mid = maintenance.catalog_snapshot(db, conn)
    assert all(mid[t]["persistence"] == "u" for t in mid)
    # every index goes but the key the contract-state merge upserts on
    assert {t: [i[0] for i in mid[t]["indexes"]] for t in mid} == {
        "ledger_updates": [], "ledger_events": [], "contracts": ["contracts_key"]}
    assert "autovacuum_enabled=false" in mid["ledger_events"]["reloptions"]
    assert maintenance.prepare(db, echo=lambda s: None) == [
        "autovacuum off for ledger_updates (and its toast table)",
        "autovacuum off for ledger_events (and its toast table)",
        "autovacuum off for contracts (and its toast table)",
    ]  # idempotent: only the (harmless) reloption statements again
    report = maintenance.restore(db, echo=lambda s: None)
    assert report["duplicates"] == {"ledger_updates_pkey": 0, "ledger_events_pkey": 0}
    with db.connect() as conn:
        assert maintenance.catalog_snapshot(db, conn) == before
    assert_db_matches(anydb, Ledger(SMALL))


@pytest.mark.parametrize("step", ["dedupe", "logged", "indexes"])
def test_restore_interrupted_at_each_step_then_rerun(db: str, step: str) -> None:
    d = loaded_db(db)
    with d.connect() as conn:
        before = maintenance.catalog_snapshot(d, conn)
    maintenance.prepare(d, echo=lambda s: None)
    maintenance.restore(d, echo=lambda s: None, stop_after=step)
    assert maintenance.phase(d) == "restoring"
    maintenance.restore(d, echo=lambda s: None)
    assert maintenance.phase(d) is None
    with d.connect() as conn:
        assert maintenance.catalog_snapshot(d, conn) == before


def test_duplicates_before_restore_are_reported_and_removed(db: str) -> None:
    d = loaded_db(db)
    maintenance.prepare(d, echo=lambda s: None)
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO ledger_updates SELECT * FROM ledger_updates ORDER BY update_id LIMIT 7")
        conn.execute("INSERT INTO ledger_events SELECT * FROM ledger_events ORDER BY event_id LIMIT 3")
    report = maintenance.restore(d, echo=lambda s: None)
    assert report["duplicates"] == {"ledger_updates_pkey": 7, "ledger_events_pkey": 3}
    assert_db_matches(db, Ledger(SMALL))


def test_prepare_refuses_while_another_session_writes(db: str) -> None:
    d = Database(db)
    schema.init(d)
    with psycopg.connect(db) as other:
        other.execute("INSERT INTO ledger_updates (update_id, migration_id, synchronizer_id, record_time, kind, "
                      "event_count, update_json) VALUES ('x', 0, 's', now(), 'transaction', 0, '{}')")  # fmt: skip
        with pytest.raises(Refused, match="RowExclusiveLock"):
            maintenance.prepare(d, echo=lambda s: None)
        other.rollback()
    assert maintenance.prepare(d, dry_run=True, echo=lambda s: None)  # says what it would do ...
    with d.connect() as conn:
        assert maintenance.catalog_snapshot(d, conn)["ledger_updates"]["persistence"] == "p"  # ... does nothing


def test_server_crash_during_unlogged_load_is_detected_and_reloaded(tmp_path: Path) -> None:
    from scanfill.embedded import start_embedded

    h = start_embedded(tmp_path / "crashy")
    dsn = h.dsn
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=10))) as sim:
        assert scanfill("prepare", dsn=dsn, urls=sim.urls).wait() == 0
        proc = scanfill("run", "--concurrency", "3", "--page-size", "40", "--no-progress", dsn=dsn, urls=sim.urls)
        wait_for(lambda: loaded(dsn) >= Ledger(SMALL).total_updates() // 3, what="a third loaded")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the (logged) cursors are durable; UNLOGGED tables never are
        for child in _children(h.datadir / "pgdata"):
            subprocess.run(["kill", "-9", str(child)], check=False)
        kill_postmaster(h.datadir / "pgdata")
        with contextlib.suppress(Exception):
            h.stop()  # forget the dead server's handle
        h = start_embedded(tmp_path / "crashy")  # crash recovery empties the UNLOGGED tables
        # the running loader rides out the outage, then sees the emptied tables and stops, not going
        # on from its cursors (which would leave a hole)
        first = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 1 and "restarted uncleanly while the ledger tables were UNLOGGED" in first, first
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM ledger_updates").fetchone() == (0,)
            assert conn.execute("SELECT sum(updates_loaded) > 0 FROM backfill_cursors").fetchone() == (True,)
        again = scanfill("run", "--no-progress", "--restore", dsn=dsn, urls=sim.urls)
        out = again.communicate(timeout=300)[0].decode()
        assert again.returncode == 0, out
        assert "crashed or restarted uncleanly" in out and "history complete" in out
    assert_db_matches(dsn, Ledger(SMALL))
    h.stop()


def _children(datadir: Path) -> list[int]:
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(") ")[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def test_abort_stops_workers_restores_and_truncates(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=40))) as sim:
        assert scanfill("prepare", dsn=db, urls=sim.urls).wait() == 0
        worker = scanfill("run", "--concurrency", "2", "--page-size", "20", "--no-progress", dsn=db, urls=sim.urls)
        wait_for(lambda: loaded(db) > 0, what="first commit")
        ab = scanfill("abort", "--truncate", "--yes", dsn=db, urls=sim.urls)
        out = ab.communicate(timeout=300)[0].decode()
        assert ab.returncode == 0, out
        assert worker.wait(timeout=60) == 0  # stopped gracefully through the database
    assert "restored" in out or "LOGGED" in out
    d = Database(db)
    assert maintenance.phase(d) is None
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_updates").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM backfill_control").fetchone() == (0,)
        assert conn.execute("SELECT relpersistence FROM pg_class WHERE relname = 'ledger_events'").fetchone() == ("p",)


@pytest.mark.needs("postgresql-15")
def test_tune_reports_and_applies(tmp_path: Path) -> None:
    from scanfill.ops.tune import advise, apply

    with debian_pg15(tmp_path) as admin:
        d = Database(admin)
        advice, _ram = advise(d, memory=16 * 1024**3)
        by = {a.name: a for a in advice}
        assert by["shared_buffers"].suggested == "4GB" and by["shared_buffers"].needs_restart
        assert by["synchronous_commit"].current == "on" and by["synchronous_commit"].changes
        restart = apply(d, advice)
        assert "shared_buffers" in restart
        with psycopg.connect(admin) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)  # reloaded, no restart needed
        assert uuid.uuid4()  # keep the import used


@pytest.mark.needs("postgresql-15")
def test_json_columns_use_lz4_where_the_server_has_it(db: str, tmp_path: Path) -> None:
    query = ("SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'ledger_updates'::regclass "
             "AND attname = 'update_json'")  # fmt: skip
    with debian_pg15(tmp_path) as admin:  # built with lz4
        schema.init(Database(admin))
        with psycopg.connect(admin) as conn:
            assert conn.execute(query).fetchone() == ("update_json", "l")
    schema.init(Database(db))  # the embedded server has no lz4: pglz (the default), and no error
    with psycopg.connect(db) as conn:
        assert conn.execute(query).fetchone() == ("update_json", "")


def test_abort_truncate_declined_does_nothing_and_leaves_no_stop_behind(db: str) -> None:
    """The confirmation comes before anything is stopped; a "no" (or no terminal to answer) changes
    nothing, and a later run is not stopped by a leftover request (it was)."""
    import os
    import sys

    with Simulator(SimConfig(ledger=SMALL)) as sim:
        env = {**os.environ, "DATABASE_URL": db, "SCAN_URL": ",".join(sim.urls)}
        assert subprocess.run([sys.executable, "-m", "scanfill.cli", "init"], env=env).returncode == 0
        for answer in ("n\n", ""):  # declined, and stdin at its end (a cron job, a pipe)
            res = subprocess.run([sys.executable, "-m", "scanfill.cli", "abort", "--truncate"], env=env, input=answer,
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
            assert "nothing done" in res.stdout or "Aborted" in res.stderr, res
            assert "stop requested" not in res.stdout
            with psycopg.connect(db) as conn:
                assert conn.execute("SELECT count(*) FROM backfill_control WHERE key = 'stop'").fetchone() == (0,)
        res = subprocess.run([sys.executable, "-m", "scanfill.cli", "run", "--no-progress"], env=env,
                             capture_output=True, text=True, timeout=240)  # fmt: skip
    assert res.returncode == 0 and "history complete" in res.stdout, res
