"""Writing to PostgreSQL: a batch's rows and its cursor advance commit in one transaction.

The cursor row is locked first and checked (lease epoch, expected position, lower bound), then the
rows go in with binary COPY, then the cursor moves. A crash at any instant leaves the database at a
page boundary; a worker whose lease was taken over cannot commit (its epoch no longer matches); and
nothing depends on unique indexes, so this holds with every index dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from scanfill.db import Database
from scanfill.model import Batch
from scanfill.schema import EVENT_COLUMNS, EVENT_TYPES, UPDATE_COLUMNS, UPDATE_TYPES
from scanfill.timeutil import dt_to_us

# Set with the row lock, for this transaction only (pooler-safe): a worker frozen mid-commit
# (SIGSTOP, a long GC pause, a partition) must not hold its slice's row lock, and so the slice,
# forever; the server ends such a transaction after this long and the slice can be taken over.
GUARD = ("set_config('statement_timeout', %s, true), "
         "set_config('idle_in_transaction_session_timeout', %s, true)")  # fmt: skip


def guard_timeout(lease_s: float) -> str:
    return f"{int(max(4 * lease_s, 10.0) * 1000)}ms"


class Fenced(Exception):
    """This worker no longer owns the slice (lease expired and taken over, or slice changed)."""


@dataclass(frozen=True)
class Lease:
    cursor_name: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class CommitResult:
    last_before: str
    lo_us: int  # the slice's lower bound as the database holds it now (a split may have raised it)
    complete: bool
    rows: int


class Sink:
    """Prepared SQL for one database; `commit` is called from worker threads, one connection each."""

    def __init__(self, db: Database) -> None:
        self.db = db
        cols = sql.SQL(", ").join(map(sql.Identifier, UPDATE_COLUMNS))
        self.copy_updates = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(db.t("ledger_updates"), cols)
        cols = sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS))
        self.copy_events = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(db.t("ledger_events"), cols)
        self.lock = sql.SQL(
            "SELECT min_time, last_before, lease_owner, lease_epoch, complete, "
            + GUARD
            + " FROM {} WHERE cursor_name = %s FOR UPDATE"
        ).format(db.t("backfill_cursors"))
        self.advance = sql.SQL(
            """UPDATE {} SET last_before = %s, complete = %s, updated_at = now(),
                   updates_loaded = updates_loaded + %s, events_loaded = events_loaded + %s,
                   pages_loaded = pages_loaded + %s, bytes_loaded = bytes_loaded + %s,
                   completed_at = CASE WHEN %s THEN now() ELSE NULL END,
                   lease_until = GREATEST(lease_until, now() + make_interval(secs => %s))
               WHERE cursor_name = %s"""
        ).format(db.t("backfill_cursors"))

    def copy_rows(self, conn: psycopg.Connection[tuple], batch: Batch) -> None:  # type: ignore[type-arg]
        """Binary COPY of a batch's rows, inside the caller's transaction."""
        for stmt, types, rows in ((self.copy_updates, UPDATE_TYPES, batch.updates),
                                  (self.copy_events, EVENT_TYPES, batch.events)):  # fmt: skip
            if rows:
                with conn.cursor().copy(stmt) as cp:
                    cp.set_types(list(types))
                    for r in rows:
                        cp.write_row(r)

    def commit(
        self, conn: psycopg.Connection[tuple],  # type: ignore[type-arg]
        lease: Lease, expected_before: str, batch: Batch, pages: int, reached_end: bool, lease_s: float,
    ) -> CommitResult:  # fmt: skip
        """Commit `batch` and move the cursor from `expected_before` to the batch's oldest update.

        `reached_end` says the scan has nothing older in the slice; the slice completes then, or when
        the batch's oldest update sits exactly on the slice's lower bound.
        """
        with conn.transaction():
            limit = guard_timeout(lease_s)
            row = conn.execute(self.lock, (limit, limit, lease.cursor_name)).fetchone()
            if row is None:
                raise Fenced(f"slice {lease.cursor_name} no longer exists")
            min_time, last_before, owner, epoch, complete, _, _ = row
            if owner != lease.owner or epoch != lease.epoch:
                raise Fenced(f"slice {lease.cursor_name}: lease now held by {owner} (epoch {epoch})")
            if complete or last_before != expected_before:
                raise Fenced(f"slice {lease.cursor_name} moved to {last_before} under this worker")
            lo_us = dt_to_us(min_time)
            if batch.oldest_us is not None and batch.oldest_us < lo_us:
                batch.drop_older_than(lo_us)  # a split raised the lower bound since the request
                reached_end = True
            done = reached_end or (batch.oldest_us is not None and batch.oldest_us == lo_us)
            new_last = batch.oldest or last_before
            self.copy_rows(conn, batch)
            conn.execute(
                self.advance,
                (new_last, done, len(batch.updates), len(batch.events), pages, batch.nbytes, done, lease_s,
                 lease.cursor_name),
            )  # fmt: skip
        return CommitResult(new_last, lo_us, done, batch.rows)

    def commit_imports(
        self, conn: psycopg.Connection[tuple],  # type: ignore[type-arg]
        migration_id: int, owner: str, epoch: int, expected_after: str, batch: Batch, done: bool,
    ) -> str:  # fmt: skip
        """Import updates come by update id, ascending: the cursor is the last id committed."""
        t = self.db.t("backfill_import_cursors")
        with conn.transaction():
            limit = guard_timeout(60.0)
            row = conn.execute(sql.SQL("SELECT last_update_id, lease_owner, lease_epoch, complete, " + GUARD + " FROM {} "
                                       "WHERE migration_id = %s FOR UPDATE").format(t), (limit, limit, migration_id)).fetchone()  # fmt: skip
            if row is None or row[1] != owner or row[2] != epoch:
                raise Fenced(f"import updates of migration {migration_id}: lease lost")
            if row[3] or row[0] != expected_after:
                raise Fenced(f"import updates of migration {migration_id} moved to {row[0]!r} under this worker")
            self.copy_rows(conn, batch)
            last = batch.updates[-1][0] if batch.updates else expected_after
            conn.execute(sql.SQL("UPDATE {} SET last_update_id = %s, complete = %s, updated_at = now(), "
                                 "updates_loaded = updates_loaded + %s, events_loaded = events_loaded + %s "
                                 "WHERE migration_id = %s").format(t),
                         (last, done, len(batch.updates), len(batch.events), migration_id))  # fmt: skip
        return str(last)
