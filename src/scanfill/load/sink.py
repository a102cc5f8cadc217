"""Writing to PostgreSQL: a batch's rows and its cursor advance commit in one transaction.

The cursor row is locked first and checked (lease epoch, expected position, lower bound), then the
rows go in with binary COPY, then the cursor moves. A crash at any instant leaves the database at a
page boundary; a worker whose lease was taken over cannot commit (its epoch no longer matches); and
nothing depends on unique indexes, so this holds with every index dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from scanfill import framing
from scanfill.coord.records import DayCount
from scanfill.coord.schema import EVENT_COLUMNS, UPDATE_COLUMNS
from scanfill.coord.store import FollowLease, Lease, Store
from scanfill.db import Conn, Database
from scanfill.economy.sink import EconomySink
from scanfill.errors import Unstorable, db_error_kind
from scanfill.load.decode import Batch
from scanfill.state.sink import StateSink
from scanfill.timeutil import DAY_US, MIN_US, us_to_dt, utc_day

FIRST_DAY_US = MIN_US + DAY_US  # an import update's record time is 0001-01-01


def day_counts(batch: Batch) -> list[DayCount]:
    """A batch's updates per (migration, synchronizer, UTC day), sorted (import updates belong to no day)."""
    acc: dict[tuple[int, str, date], list[int]] = {}
    for u in batch.updates:
        if u.t_us < FIRST_DAY_US:
            continue
        key = (u.migration_id, u.synchronizer_id, utc_day(u.t_us))
        a = acc.get(key)
        if a is None:
            acc[key] = [1, u.event_count, u.t_us, u.t_us]
        else:
            a[0] += 1
            a[1] += u.event_count
            a[2] = min(a[2], u.t_us)
            a[3] = max(a[3], u.t_us)
    return [DayCount(m, sync, d, n, ev, us_to_dt(first), us_to_dt(last))
            for (m, sync, d), (n, ev, first, last) in sorted(acc.items())]  # fmt: skip


_COPY_LINE = re.compile(r"COPY (\S+), line (\d+)(?:, column (\w+))?")
WAY_OUT = ("nothing of that page was stored and the other slices go on. Report the update id to the scanfill "
           "project; once a release stores it, run the same command again: it resumes from the last committed page")


def _culprit(batch: Batch, context: str) -> str:
    """Which update (and column) a COPY's error context points at: `COPY <table>, line <n>, column
    <c>` numbers the rows the sink sent, in the batch's order."""
    m = _COPY_LINE.search(context or "")
    if m is None:
        return _span(batch)
    table, line, column = m.group(1), int(m.group(2)), m.group(3)
    uid: str | None = None
    if table.endswith("ledger_updates") and line <= len(batch.updates):
        uid = batch.updates[line - 1].update_id
    elif table.endswith("ledger_events"):
        seen = 0
        for u in batch.updates:
            seen += u.event_count
            if line <= seen:
                uid = u.update_id
                break
    elif table.endswith("amulet_transfers"):
        rows = [r for u in batch.updates for r in u.transfers]
        if line <= len(rows):
            uid = f"{rows[line - 1].update_id} (event {rows[line - 1].event_id})"
    col = f", field {table.split('.')[-1]}.{column}" if column else f", table {table.split('.')[-1]}"
    return f"update {uid}{col}" if uid else f"{_span(batch)}{col}"


def _span(batch: Batch) -> str:
    if not batch.updates:
        return "an empty page"
    if len(batch.updates) == 1:
        return f"update {batch.updates[0].update_id}"
    return (f"one of the {len(batch.updates)} updates from {batch.updates[0].update_id} to "
            f"{batch.updates[-1].update_id}")  # fmt: skip


@contextmanager
def refused_for_good(batch: Batch) -> Iterator[None]:
    """A commit the database refuses for what it holds (a data exception, a limit: the same rows fail
    the same way every time) becomes `Unstorable`, naming the update and field: the caller stops that
    slice instead of sending the same page again forever. Errors of the moment (a lost connection, a
    deadlock, the guard's timeout) and a reused id (the worker's own message) pass unchanged."""
    try:
        yield
    except psycopg.errors.UniqueViolation:
        raise
    except psycopg.Error as exc:
        if db_error_kind(exc) != "permanent":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unstorable(f"{_culprit(batch, exc.diag.context or '')}: the database refuses it every time "
                         f"(SQLSTATE {exc.sqlstate}: {first}); {WAY_OUT}") from exc  # fmt: skip


@dataclass(frozen=True)
class CommitResult:
    last_before: str
    lo_us: int  # the slice's lower bound as the database holds it now (a split may have raised it)
    complete: bool
    rows: int


class Sink:
    """Prepared SQL for one database; `commit` is called from worker threads, one connection each."""

    def __init__(self, db: Database, contract_state: bool = True, agree: int = 1, lake: str | None = None) -> None:
        self.db = db
        self.agree = agree  # how many scans agreed on every page this process stores
        self.lake: Any = None  # run --lake: the rows go to the lake's Parquet files, not the ledger tables
        if lake:
            from scanfill.lake.sink import LakeWriter

            self.lake = LakeWriter(db, lake)
        self.state = StateSink(db, contract_state)
        self.economy = EconomySink(db, contract_state)
        cols = sql.SQL(", ").join(map(sql.Identifier, UPDATE_COLUMNS))
        self.copy_updates = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(db.t("ledger_updates"), cols)
        cols = sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS))
        self.copy_events = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(db.t("ledger_events"), cols)
        self.store = Store(db)

    def copy_rows(self, conn: Conn, batch: Batch) -> None:
        """Binary COPY of a batch's rows (framed by the decoder), inside the caller's transaction;
        with a lake, the same rows as Parquet files recorded in the transaction instead."""
        if self.lake is not None:
            self.lake.stage(conn, batch)
            self.derived(conn, batch)
            return
        for stmt, rows in ((self.copy_updates, [u.row for u in batch.updates]),
                           (self.copy_events, [u.event_rows for u in batch.updates if u.event_count])):  # fmt: skip
            if rows:
                with conn.cursor().copy(stmt) as cp:
                    cp.write(memoryview(framing.frame(rows)))  # psycopg sends it in slices: views, not copies
        self.derived(conn, batch)

    def derived(self, conn: Conn, batch: Batch) -> None:
        """What the batch says about contracts and about what was minted and burnt."""
        self.state.write(conn, (f for u in batch.updates for f in u.facts))
        self.economy.write(conn, (r for u in batch.updates for r in u.transfers))

    def commit(self, conn: Conn, lease: Lease, expected_before: str, batch: Batch, pages: int, reached_end: bool,
               lease_s: float) -> CommitResult:  # fmt: skip
        """Commit `batch` and move the slice's cursor from `expected_before` to the batch's oldest update.

        `reached_end` says the scan has nothing older in the slice; the slice completes then, or when
        the batch's oldest update sits exactly on the slice's lower bound.
        """
        with refused_for_good(batch), conn.transaction():
            lo_us = self.store.lock_for_commit(conn, lease, lease_s, expected_before)
            assert lo_us is not None
            if batch.oldest_us is not None and batch.oldest_us < lo_us:
                batch.drop_older_than(lo_us)  # a split raised the lower bound since the request
                reached_end = True
            done = reached_end or (batch.oldest_us is not None and batch.oldest_us == lo_us)
            new_last = batch.oldest or expected_before
            self.copy_rows(conn, batch)
            self.store.slice_advance(conn, lease, new_last, done, len(batch.updates), batch.events, pages,
                                     batch.nbytes, lease_s)  # fmt: skip
            source = "refetch" if str(lease.key).startswith("refetch/") else "backfill"
            self.store.days_add(conn, day_counts(batch), source, self.agree)
        self.published(conn)
        return CommitResult(new_last, lo_us, done, batch.rows)

    def published(self, conn: Conn) -> None:
        """With a lake: the files just committed added to its Delta log (or by whoever publishes
        next, if this fails: they are recorded)."""
        if self.lake is not None:
            from scanfill.lake.errors import writing

            try:
                with writing(self.lake.lake, "publishing"):  # a delta-rs panic too, as one line
                    self.lake.publish(conn)
            except Exception as exc:  # the files stay recorded; the next publish adds them
                logging.getLogger("scanfill.lake").warning("publishing to %s failed (the next commit retries): %s",
                                                           self.lake.lake.shown, exc)  # fmt: skip

    def commit_followed(self, conn: Conn, lease: FollowLease, lease_s: float, batch: Batch) -> Batch:
        """A followed page and the updates cursor in one transaction. Each update is stored only if
        it lies above its range's top (locked): below it the backfill, or this follower on an
        earlier page (the re-read boundary microsecond), already stored it. Returns what was stored."""
        firsts: dict[tuple[int, str], int] = {}
        for u in batch.updates:
            firsts.setdefault((u.migration_id, u.synchronizer_id), u.t_us)
        self.store.follow_create_ranges(conn, lease, lease_s, firsts)
        with refused_for_good(batch), conn.transaction():
            self.store.follow_fence(conn, lease, lease_s)
            tops = self.store.follow_range_tops(conn, list(firsts), firsts)
            new_tops = dict(tops)
            above = []
            for u in batch.updates:
                key = (u.migration_id, u.synchronizer_id)
                if u.t_us > new_tops[key]:
                    new_tops[key] = u.t_us
                    above.append(u)
            kept = batch.keep(above)
            with refused_for_good(kept):  # its rows are what the COPY's line numbers count
                self.copy_rows(conn, kept)
            for (m, sync), top in new_tops.items():
                if top != tops[(m, sync)]:
                    self.store.follow_range_to(conn, m, sync, top)
            assert batch.last_position is not None
            self.store.set_follow_position(conn, "updates", batch.last_position, kept.items, kept.events)
            self.store.days_add(conn, day_counts(kept), "follow", self.agree)
        self.published(conn)
        return kept

    def commit_imports(self, conn: Conn, lease: Lease, expected_after: str, batch: Batch, done: bool,
                       lease_s: float) -> str:  # fmt: skip
        """Import updates come by update id, ascending: the cursor is the last id committed."""
        with refused_for_good(batch), conn.transaction():
            self.store.lock_for_commit(conn, lease, lease_s, expected_after)
            self.copy_rows(conn, batch)
            last = batch.updates[-1].update_id if batch.updates else expected_after
            self.store.import_advance(conn, lease, last, done, len(batch.updates), batch.events, lease_s)
        self.published(conn)
        return last


async def finish_lake(sink: Sink) -> None:
    """With a lake: publish what is left, compact the partitions this process wrote, describe them."""
    if sink.lake is None:
        return
    try:
        await asyncio.get_running_loop().run_in_executor(None, sink.lake.finish)
    except Exception as exc:  # the data is published or recorded either way; compaction can wait
        logging.getLogger("scanfill.lake").warning("finishing the lake at %s (compaction, manifests) failed: %s", sink.lake.lake.shown, exc)
