"""The guide's database phases as safe, resumable commands: prepare, restore, abort, and the
detection of a server crash that emptied the UNLOGGED tables.

`prepare` saves every index and constraint definition of the ledger tables in a logged table
before dropping anything, so `restore` recreates them exactly, and each step of both checks the
catalog first, so running either again after an interruption only does what is left.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from scanfill.coord.store import CRASH_RESET, Store
from scanfill.db import Conn, Database
from scanfill.errors import Refused

log = logging.getLogger("scanfill.ops.maintenance")
# the tables a load writes, prepared and restored together: the ledger and the contract state
LEDGER_TABLES = ("ledger_updates", "ledger_events", "contracts")
KEPT = frozenset({"contracts_key"})  # the contract-state merge upserts on it: never dropped
RESTORE_LOCK_KEY = 0x5CA0F112  # advisory-lock key: one restore at a time


@dataclass
class SavedObject:
    table: str
    name: str
    kind: str  # "index" | "constraint"
    index_def: str
    constraint_def: str | None


def table_oid(db: Database, conn: Conn, table: str) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid", (db.qualified(table),)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def catalog_snapshot(db: Database, conn: Conn) -> dict[str, Any]:
    """What prepare/restore must round-trip: index and constraint definitions, persistence, reloptions."""
    out: dict[str, Any] = {}
    for t in LEDGER_TABLES:
        oid = table_oid(db, conn, t)
        if oid is None:
            continue
        idx = conn.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                           "WHERE indrelid = %s ORDER BY 1", (oid,)).fetchall()  # fmt: skip
        cons = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s "
                            "ORDER BY 1", (oid,)).fetchall()  # fmt: skip
        rel = conn.execute("SELECT c.relpersistence, c.reloptions, t.reloptions FROM pg_class c "
                           "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.oid = %s", (oid,)).fetchone()  # fmt: skip
        assert rel is not None
        out[t] = {"indexes": idx, "constraints": cons, "persistence": rel[0], "reloptions": rel[1],
                  "toast_reloptions": rel[2]}  # fmt: skip
    return out


def _objects(db: Database, conn: Conn) -> list[SavedObject]:
    objs: list[SavedObject] = []
    for t in LEDGER_TABLES:
        oid = table_oid(db, conn, t)
        if oid is None:
            raise Refused(f"table {db.schema}.{t} does not exist: run `scanfill init` first")
        for name, cdef, idef in conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), pg_get_indexdef(conindid) FROM pg_constraint "
            "WHERE conrelid = %s AND contype IN ('p', 'u')", (oid,),
        ).fetchall():  # fmt: skip
            if name not in KEPT:
                objs.append(SavedObject(t, name, "constraint", idef, cdef))
        for name, idef in conn.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            (oid,),
        ).fetchall():  # fmt: skip
            short = name.split(".")[-1].strip('"')
            if short not in KEPT:
                objs.append(SavedObject(t, short, "index", idef, None))
    return objs


def _state(db: Database, conn: Conn, key: str) -> str | None:
    row = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = %s").format(db.t("scanfill_meta")), (key,)).fetchone()
    return None if row is None else str(row[0])


def _set_state(db: Database, conn: Conn, key: str, value: str | None) -> None:
    if value is None:
        conn.execute(sql.SQL("DELETE FROM {} WHERE key = %s").format(db.t("scanfill_meta")), (key,))
    else:
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
                     .format(db.t("scanfill_meta")), (key, value))  # fmt: skip


def other_writers(db: Database, conn: Conn) -> list[str]:
    """Other sessions holding write locks on the ledger tables, or busy non-scanfill sessions."""
    oids = [o for t in LEDGER_TABLES if (o := table_oid(db, conn, t)) is not None]
    found = [
        f"pid {pid} ({app or 'no application name'}) holds {mode} on {rel}"
        for pid, app, mode, rel in conn.execute(
            "SELECT l.pid, a.application_name, l.mode, l.relation::regclass::text FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.relation = ANY(%s) AND l.pid <> pg_backend_pid() "
            "AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')",
            (oids,),
        ).fetchall()
    ]  # fmt: skip
    found += [
        f"pid {pid} ({app or 'no application name'}) is {state} in this database: {query[:80]!r}"
        for pid, app, state, query in conn.execute(
            "SELECT pid, application_name, state, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle' "
            "AND application_name NOT LIKE 'scanfill%%'"
        ).fetchall()
    ]  # fmt: skip
    return found


# ----- prepare -----------------------------------------------------------------------------------


def prepare(db: Database, force: bool = False, dry_run: bool = False, echo: Callable[[str], None] = print) -> list[str]:
    """Save and drop indexes and constraints, SET UNLOGGED, autovacuum off; returns the statements."""
    done: list[str] = []
    with db.connect(autocommit=True, application="scanfill prepare") as conn:
        busy = other_writers(db, conn)
        # a loader between two commits holds no lock: its heartbeat says it is there (no tables: no worker)
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            busy += [f"scanfill worker {w} (heartbeat within 2 minutes)" for w in running_workers(db)]
            follower = active_follower(db)
            if follower:
                busy.append(f"scanfill follow {follower} (holds the follower lease)")
        if busy and not force:
            raise Refused("other sessions are using the ledger tables, so this looks like a live database:\n  "
                          + "\n  ".join(busy) + "\nStop them first, or pass --force if you are sure.")  # fmt: skip
        objs = _objects(db, conn)
        steps: list[tuple[str, sql.Composed]] = []
        for o in objs:
            if o.kind == "constraint":
                steps.append((f"drop constraint {o.name} on {o.table}", sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}")
                              .format(db.t(o.table), sql.Identifier(o.name))))  # fmt: skip
        for o in objs:
            if o.kind == "index":
                steps.append((f"drop index {o.name}", sql.SQL("DROP INDEX {}.{}").format(
                    sql.Identifier(db.schema), sql.Identifier(o.name))))  # fmt: skip
        for t in LEDGER_TABLES:
            persistence = conn.execute("SELECT relpersistence FROM pg_class WHERE oid = %s", (table_oid(db, conn, t),)
                                       ).fetchone()  # fmt: skip
            if persistence and persistence[0] != "u":
                steps.append((f"set {t} UNLOGGED", sql.SQL("ALTER TABLE {} SET UNLOGGED").format(db.t(t))))
            steps.append((f"autovacuum off for {t} (and its toast table)",
                          sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")
                          .format(db.t(t))))  # fmt: skip
        if dry_run:
            for o in objs:
                echo(f"would save {o.kind} {o.name}: {o.constraint_def or o.index_def}")
            for what, _ in steps:
                echo(f"would {what}")
            return [w for w, _ in steps]
        with conn.transaction():
            saved = saved_objects(db, conn)
            for o in objs:
                if (o.table, o.name) not in saved:
                    conn.execute(sql.SQL("INSERT INTO {} (table_name, object_name, kind, index_def, constraint_def) "
                                         "VALUES (%s, %s, %s, %s, %s)").format(db.t("scanfill_saved_indexes")),
                                 (o.table, o.name, o.kind, o.index_def, o.constraint_def))  # fmt: skip
                    echo(f"saved {o.kind} {o.name}")
            for what, stmt in steps:
                conn.execute(stmt)
                echo(what)
                done.append(what)
            conn.execute(sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} (armed boolean NOT NULL)").format(
                db.t("scanfill_unlogged_canary")))  # fmt: skip
            conn.execute(sql.SQL("DELETE FROM {}").format(db.t("scanfill_unlogged_canary")))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (true)").format(db.t("scanfill_unlogged_canary")))
            _set_state(db, conn, "phase", "prepared")
    return done


def saved_objects(db: Database, conn: Conn) -> dict[tuple[str, str], SavedObject]:
    rows = conn.execute(sql.SQL("SELECT table_name, object_name, kind, index_def, constraint_def FROM {} "
                                "WHERE restored_at IS NULL ORDER BY saved_at, object_name").format(
        db.t("scanfill_saved_indexes"))).fetchall()  # fmt: skip
    return {(r[0], r[1]): SavedObject(*r) for r in rows}


# ----- crash detection ---------------------------------------------------------------------------


def check_unlogged_crash(db: Database, echo: Callable[[str], None] = print) -> bool:
    """After a crash PostgreSQL empties UNLOGGED tables (our canary with them): `Store.reset_if_emptied`."""
    with db.connect(autocommit=True) as conn:
        if Store(db).reset_if_emptied(conn):
            echo(CRASH_RESET)
            return True
    return False


# ----- restore -----------------------------------------------------------------------------------


@dataclass
class RestorePlan:
    sizes: dict[str, int]
    wal_level: str
    wal_bytes: int
    disk_needed: int
    disk_free: int | None
    duplicates: dict[str, int] = field(default_factory=dict)


def cost_of_set_logged(db: Database, conn: Conn) -> RestorePlan:
    """What SET LOGGED will cost: a full rewrite (about the table size again on disk) and, unless
    wal_level is minimal, the whole table written to WAL."""
    sizes = {}
    for t in LEDGER_TABLES:
        oid = table_oid(db, conn, t)
        row = conn.execute(
            "SELECT relpersistence, pg_table_size(%s) FROM pg_class WHERE oid = %s", (oid, oid)
        ).fetchone()
        if row and row[0] == "u":
            sizes[t] = int(row[1])
    wal_level_row = conn.execute("SHOW wal_level").fetchone()
    wal_level = str(wal_level_row[0]) if wal_level_row else "replica"
    total = sum(sizes.values())
    wal = 0 if wal_level == "minimal" else total
    free = None
    try:
        d = conn.execute("SHOW data_directory").fetchone()
        if (d and conn.info.host.startswith("/")) or conn.info.host in ("localhost", "127.0.0.1", "::1"):
            free = shutil.disk_usage(str(d[0])).free if d else None
    except (psycopg.Error, OSError):
        free = None  # not a superuser, or the server is on another machine: cannot check
    return RestorePlan(sizes, wal_level, wal, total + wal, free)


def restore(db: Database, jobs: int = 2, maintenance_work_mem: str = "512MB", echo: Callable[[str], None] = print,
            progress: Callable[[list[dict[str, Any]]], None] | None = None, stop_after: str | None = None,
            ) -> dict[str, Any]:  # fmt: skip
    """Dedupe, SET LOGGED, rebuild saved indexes/constraints in parallel, autovacuum on, ANALYZE.

    Every step checks the catalog first, so a second run after an interruption finishes the job.
    `stop_after` (a step name) exists for tests that interrupt it on purpose.
    """
    # one restore at a time: a second one (or `abort`'s) waits here, then finds the work done. The
    # lock is held by an open transaction, which a transaction-mode pooler keeps on one connection.
    with db.connect(application="scanfill restore (lock)") as guard:
        got = guard.execute("SELECT pg_try_advisory_xact_lock(%s)", (RESTORE_LOCK_KEY,)).fetchone()
        if not (got and got[0]):
            echo("another restore is running: waiting for it to finish")
            guard.execute("SELECT pg_advisory_xact_lock(%s)", (RESTORE_LOCK_KEY,))
        return _restore(db, jobs, maintenance_work_mem, echo, progress, stop_after)


def _restore(db: Database, jobs: int, maintenance_work_mem: str, echo: Callable[[str], None],
             progress: Callable[[list[dict[str, Any]]], None] | None, stop_after: str | None) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {"duplicates": {}, "built": []}
    check_unlogged_crash(db, echo)
    with db.connect(autocommit=True, application="scanfill restore") as conn:
        with conn.transaction():
            _set_state(db, conn, "phase", "restoring")
        saved = saved_objects(db, conn)
        # 1. duplicates that would block a unique index (zero when scanfill did all the loading)
        for (t, name), o in saved.items():
            if o.kind != "constraint" or _index_exists(db, conn, name):
                continue
            cols = o.index_def[o.index_def.index("(") + 1 : o.index_def.rindex(")")]
            n = _dedupe(db, conn, t, cols)
            report["duplicates"][name] = n
            echo(f"{t}: {n:,} duplicate rows on ({cols}) removed" if n else f"{t}: no duplicates on ({cols})")
        if any(report["duplicates"].values()):  # the completeness ledger counted them: count its days again
            store = Store(db)
            with store.transaction(conn, idle="5min"):
                store.days_recount(conn, repaired=False)  # duplicates gone: nothing reloaded
        if stop_after == "dedupe":
            return report
        # 2. SET LOGGED, after saying what it costs
        plan = cost_of_set_logged(db, conn)
        if plan.sizes:
            gb = 1024**3
            echo(f"SET LOGGED rewrites {', '.join(f'{t} ({s / gb:.2f} GiB)' for t, s in plan.sizes.items())}: "
                 f"about {plan.disk_needed / gb:.2f} GiB of disk "
                 f"({'no WAL at wal_level=minimal' if not plan.wal_bytes else f'{plan.wal_bytes / gb:.2f} GiB of it WAL at wal_level={plan.wal_level}'})"
                 + (f"; {plan.disk_free / gb:.1f} GiB free" if plan.disk_free is not None else
                    "; free disk cannot be checked from here"))  # fmt: skip
            if plan.disk_free is not None and plan.disk_free < plan.disk_needed * 1.1:
                raise Refused(f"not enough free disk for SET LOGGED: need ~{plan.disk_needed / gb:.1f} GiB, "
                              f"{plan.disk_free / gb:.1f} GiB free. Free space, or keep the tables UNLOGGED.")  # fmt: skip
            for t in plan.sizes:
                t0 = time.monotonic()
                conn.execute(sql.SQL("ALTER TABLE {} SET LOGGED").format(db.t(t)))
                echo(f"{t}: LOGGED ({time.monotonic() - t0:.1f} s)")
        if stop_after == "logged":
            return report
        # 3. indexes and constraints, several at once on separate connections
        todo = [o for (t, name), o in saved.items() if not _index_exists(db, conn, name)]
        report["built"] = build_indexes(db, todo, jobs, maintenance_work_mem, echo, progress)
        for (t, name), o in saved.items():
            if o.kind == "constraint" and not _constraint_exists(db, conn, t, name):
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}").format(
                    db.t(t), sql.Identifier(name),
                    sql.SQL("PRIMARY KEY" if o.constraint_def and o.constraint_def.startswith("PRIMARY") else "UNIQUE"),
                    sql.Identifier(name)))  # fmt: skip
                echo(f"constraint {name} on {t} attached")
        if stop_after == "indexes":
            return report
        # 4. autovacuum back on, statistics, bookkeeping
        for t in LEDGER_TABLES:
            conn.execute(sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled, toast.autovacuum_enabled)").format(db.t(t)))
        echo("autovacuum on")
        for t in LEDGER_TABLES:
            t0 = time.monotonic()
            conn.execute(sql.SQL("ANALYZE {}").format(db.t(t)))
            echo(f"ANALYZE {t} ({time.monotonic() - t0:.1f} s)")
        with conn.transaction():
            conn.execute(sql.SQL("UPDATE {} SET restored_at = now() WHERE restored_at IS NULL").format(
                db.t("scanfill_saved_indexes")))  # fmt: skip
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.t("scanfill_unlogged_canary")))
            _set_state(db, conn, "phase", None)
    return report


def _index_exists(db: Database, conn: Conn, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (db.qualified(name),)).fetchone()
    if row is None or row[0] is None:
        return False
    valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                         (db.qualified(name),)).fetchone()  # fmt: skip
    if valid is not None and not valid[0]:  # a build that died half-way leaves an invalid index
        conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(db.schema), sql.Identifier(name)))
        return False
    return True


def _constraint_exists(db: Database, conn: Conn, table: str, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s",
                       (db.qualified(table), name)).fetchone()  # fmt: skip
    return row is not None


def _dedupe(db: Database, conn: Conn, table: str, cols: str) -> int:
    keys = sql.SQL(", ").join(sql.Identifier(c.strip().strip('"')) for c in cols.split(","))
    with conn.transaction():
        cur = conn.execute(sql.SQL(
            "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER (PARTITION BY {k} "
            "ORDER BY ctid) AS n FROM {t}) d WHERE n > 1)").format(t=db.t(table), k=keys))  # fmt: skip
        return cur.rowcount


def build_indexes(db: Database, todo: list[SavedObject], jobs: int, mwm: str, echo: Callable[[str], None],
                   progress: Callable[[list[dict[str, Any]]], None] | None) -> list[dict[str, Any]]:  # fmt: skip
    if not todo:
        return []
    results: list[dict[str, Any]] = []
    done = threading.Event()

    def build(o: SavedObject) -> dict[str, Any]:
        t0 = time.monotonic()
        with db.connect(autocommit=True, application="scanfill restore index") as c, c.transaction():
            c.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(mwm)))
            c.execute("SET LOCAL max_parallel_maintenance_workers = 2")
            # a constraint's unique index is built like any other (SHARE lock, so in parallel with the
            # table's other indexes) and the constraint is attached to it afterwards
            c.execute(o.index_def.encode())
        secs = time.monotonic() - t0
        echo(f"index {o.name} on {o.table} built in {secs:.1f} s")
        return {"name": o.name, "table": o.table, "seconds": secs}

    def watch() -> None:
        with db.connect(autocommit=True, application="scanfill restore progress") as c:
            while not done.wait(1.0):
                rows = c.execute(
                    "SELECT coalesce(nullif(p.index_relid, 0)::regclass::text, substring(a.query FROM 'INDEX\\s+(\\S+)\\s+ON'), '?'), p.relid::regclass::text, p.phase, p.blocks_done, "
                    "p.blocks_total, p.tuples_done, p.tuples_total, now() - a.xact_start FROM "
                    "pg_stat_progress_create_index p JOIN pg_stat_activity a ON a.pid = p.pid "
                    "WHERE p.datname = current_database()").fetchall()  # fmt: skip
                report = []
                for idx, rel, phase, bd, bt, td, tt, elapsed in rows:
                    frac = (td / tt) if tt else (bd / bt) if bt else 0.0
                    secs = elapsed.total_seconds() if elapsed else 0.0
                    eta = secs * (1 - frac) / frac if frac > 0.02 else None
                    report.append({"index": idx, "table": rel, "phase": phase, "percent": 100 * frac,
                                   "elapsed_s": secs, "eta_s": eta})  # fmt: skip
                if progress is not None and report:
                    progress(report)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(build, todo))
    finally:
        done.set()
        watcher.join(timeout=5)
    return results


# ----- abort -------------------------------------------------------------------------------------


def request_stop(db: Database) -> None:
    with db.connect(autocommit=True) as conn:
        Store(db).request_stop(conn)


def clear_stop(db: Database) -> None:
    with db.connect(autocommit=True) as conn:
        Store(db).clear_stop(conn)


def running_workers(db: Database, stale_s: float = 120.0) -> list[str]:
    with db.connect(autocommit=True) as conn:
        return [w.worker_id for w in Store(db).live_workers(conn, stale_s)]


def active_follower(db: Database) -> str | None:
    with db.connect(autocommit=True) as conn:
        return Store(db).follower_active(conn)


def truncate_all(db: Database) -> None:
    """The ledger and every cursor over it (import cursors and the follower's too), so the next run
    starts over; `scan_events` stay (Scan prunes them, they cannot be fetched again)."""
    with db.connect(autocommit=True) as conn:
        Store(db).truncate_all(conn)


def phase(db: Database) -> str | None:
    with db.connect(autocommit=True) as conn:
        return _state(db, conn, "phase")
