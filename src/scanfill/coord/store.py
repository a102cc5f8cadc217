"""The one owner of scanfill's coordination tables: every statement is in `queries.sql`, run here.

What each rule means is written once: a lease (claim, renew, release, fence) is the same for time
slices and import cursors (`LeaseKind`); "complete" is `Progress.complete`; resetting after the
ledger tables were emptied resets every kind of cursor. Callers hold no SQL of these tables.
"""

from __future__ import annotations

import enum
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from scanfill import host
from scanfill.coord.records import (
    CommittedVsStored,
    DayCount,
    DayFinding,
    DayStatus,
    Exported,
    ExportPartition,
    FailedSlice,
    FollowState,
    LiveWorker,
    OpenSlice,
    RangeBounds,
    RangeCoverage,
    RangeProgress,
    RangeSlice,
    RateWindow,
    Sample,
    ScanDisagreements,
    SliceCompleted,
    Watermark,
)
from scanfill.coord.schema import LOCK_KEY
from scanfill.db import Conn, Database
from scanfill.errors import Fenced, UnloggedLost
from scanfill.state.facts import position
from scanfill.state.rebuild import rederived
from scanfill.timeutil import dt_to_us, format_us, parse_us, us_to_dt


@cache
def statements() -> dict[str, str]:
    text = resources.files("scanfill.coord").joinpath("queries.sql").read_text()
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.startswith("--")]
        out[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return out


R = TypeVar("R")


class LeaseKind(enum.Enum):
    """What a lease is on: a time slice (keyed by cursor name) or a migration's import cursor."""

    SLICE = "slice"
    IMPORT = "import"


class WorkerState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"
    DEAD = "dead"




@dataclass(frozen=True)
class Lease:
    kind: LeaseKind
    key: str | int  # cursor name of a slice, migration id of an import cursor
    owner: str
    epoch: int


@dataclass(frozen=True)
class FollowLease:
    owner: str
    epoch: int


@dataclass(frozen=True)
class Share:
    """Which slices a worker may take: a static WORKER_ID/WORKER_COUNT partition and/or migrations."""

    index: int = 0
    count: int = 1
    migrations: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "migrations": list(self.migrations)}


@dataclass(frozen=True)
class Progress:
    slices: int
    slices_done: int
    ranges: int
    ranges_unproven: int
    imports_open: int
    updates: int
    events: int
    bytes: int
    span_s: float
    covered_s: float

    @property
    def complete(self) -> bool:
        """Every slice complete, every range vouched for by a scan reporting a complete history,
        every import cursor complete: the one meaning of "complete" in scanfill."""
        return self.slices > 0 and self.slices == self.slices_done and self.ranges_unproven == 0 and not self.imports_open

    @property
    def fraction(self) -> float:
        return self.covered_s / self.span_s if self.span_s else 1.0


CRASH_RESET = ("The PostgreSQL server crashed or restarted uncleanly while the ledger tables were UNLOGGED, so it "
               "emptied them. Every cursor was reset: the next `scanfill run` loads the history again.")  # fmt: skip


IDLE_GUARD = "10s"  # how long any other coordination transaction may sit idle (see idle_guard)
WRITER_IDLE_S = 10.0  # how long a lake writer lock's holder may be silent before the server ends its hold


def guard_timeout(lease_s: float) -> str:
    """How long a commit's transaction may take: a frozen committer must not hold its row forever."""
    return f"{int(max(4 * lease_s, 10.0) * 1000)}ms"


def _lock_key(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"scanfill export {name}".encode()).digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class HeldLock:
    """What `Store.export_lock` / `lake_writer_lock` yield: whether the lock is held, and an event
    set once the server took it away (the holder was frozen past the idle guard)."""

    held: bool
    lost: threading.Event


class Store:
    """Runs the named statements of queries.sql against one schema; a connection is passed in
    (the worker keeps a pool of them), and a method never commits more than its own work."""

    def __init__(self, db: Database) -> None:
        self.db = db
        schema = sql.Identifier(db.schema)
        self._q = {name: sql.SQL(text.replace("{s}", "{schema}")).format(schema=schema)
                   for name, text in statements().items()}  # fmt: skip


    @contextmanager
    def transaction(self, conn: Conn, idle: str = IDLE_GUARD) -> Iterator[None]:
        """A transaction the server ends if this process freezes inside it (idle_guard); every
        transaction of the coordination tables is one, except commits, which set a guard of their own."""
        with conn.transaction():
            self.run(conn, "idle_guard", idle=idle)
            yield

    def _rows(self, conn: Conn, query: str, cls: type[R], /, **params: Any) -> list[R]:
        """A read statement's rows as `cls` (a NamedTuple in the statement's column order)."""
        cur = conn.cursor(row_factory=args_row(cls))
        return cur.execute(self._q[query], params or None).fetchall()

    def run(self, conn: Conn, query: str, /, **params: Any) -> psycopg.Cursor[Any]:
        return conn.execute(self._q[query], params or None)

    def one(self, conn: Conn, query: str, /, **params: Any) -> Any:
        return self.run(conn, query, **params).fetchone()

    def all(self, conn: Conn, query: str, /, **params: Any) -> list[Any]:
        return self.run(conn, query, **params).fetchall()

    # ----- what status, report and verify read -------------------------------------------------

    def ranges(self, conn: Conn) -> list[RangeBounds]:
        return self._rows(conn, "ranges_all", RangeBounds)

    def range_progress(self, conn: Conn) -> list[RangeProgress]:
        return self._rows(conn, "range_progress", RangeProgress)

    def rates(self, conn: Conn, window_s: float) -> list[RateWindow]:
        return self._rows(conn, "rates", RateWindow, window_s=window_s)

    def live_workers(self, conn: Conn, stale_s: float = 120.0) -> list[LiveWorker]:
        return self._rows(conn, "workers_live", LiveWorker, stale_s=stale_s)

    def disagreements_by_scan(self, conn: Conn) -> list[ScanDisagreements]:
        return self._rows(conn, "disagreements_by_scan", ScanDisagreements)

    def samples(self, conn: Conn) -> list[Sample]:
        return self._rows(conn, "samples_all", Sample)

    def slices_completed(self, conn: Conn) -> list[SliceCompleted]:
        return self._rows(conn, "slices_completed", SliceCompleted)

    def planned_span_s(self, conn: Conn) -> float:
        return float(self.one(conn, "planned_span")[0] or 0.0)

    def open_slices(self, conn: Conn) -> list[OpenSlice]:
        return self._rows(conn, "open_slices", OpenSlice)

    def committed_vs_stored(self, conn: Conn) -> CommittedVsStored:
        return self._rows(conn, "committed_vs_stored", CommittedVsStored)[0]

    def ranges_coverage(self, conn: Conn) -> list[RangeCoverage]:
        return self._rows(conn, "ranges_coverage", RangeCoverage)

    def range_slices(self, conn: Conn, m: int, sync: str) -> list[RangeSlice]:
        return self._rows(conn, "range_slices", RangeSlice, m=m, sync=sync)

    # ----- operator requests and worker bookkeeping ---------------------------------------------

    def request_stop(self, conn: Conn) -> None:
        self.run(conn, "stop_request")

    def clear_stop(self, conn: Conn) -> None:
        self.run(conn, "stop_clear")

    def worker_stopped(self, conn: Conn, worker_id: str, state: WorkerState, rows: int) -> None:
        self.run(conn, "worker_stopped", state=state.value, rows=rows, id=worker_id)

    def worker_heartbeat(self, conn: Conn, worker_id: str, rows: int) -> None:
        self.run(conn, "worker_heartbeat", rows=rows, id=worker_id)

    def follow_sample(self, conn: Conn, follower: str, updates: int, events: int) -> None:
        self.run(conn, "follow_sample", id=f"follow {follower}", updates=updates, events=events)

    def lag_samples(self, conn: Conn) -> list[tuple[datetime, float]]:
        return [(at, float(lag)) for at, lag in self.all(conn, "lag_samples")]

    def disagreements(self, conn: Conn) -> list[tuple[datetime, str, str, int]]:
        return [tuple(r) for r in self.all(conn, "disagreements_all")]  # type: ignore[misc]

    def progress_sample(self, conn: Conn, worker_id: str, updates: int, events: int, nbytes: int, pages: int) -> None:
        self.run(conn, "progress_sample", id=worker_id, updates=updates, events=events, bytes=nbytes, pages=pages)

    # ----- the completeness ledger ---------------------------------------------------------------

    def days_add(self, conn: Conn, days: list[DayCount], source: str, agreed: int) -> None:
        """Inside a commit: its updates per day (`days` sorted by key), last, so held briefly."""
        if days:
            cols = list(zip(*days, strict=True))
            self.run(conn, "days_add", m=list(cols[0]), sync=list(cols[1]), day=list(cols[2]), u=list(cols[3]),
                     e=list(cols[4]), first=list(cols[5]), last=list(cols[6]), source=source, agreed=agreed)  # fmt: skip

    def days_recount(self, conn: Conn, m: int | None = None, sync: str | None = None, lo_us: int | None = None,
                     hi_us: int | None = None, repaired: bool = True) -> None:  # fmt: skip
        """Inside the caller's transaction: the days touching [lo_us, hi_us) of migration m and
        synchronizer sync (each bound optional) counted again from the ledger tables, after a
        repair removed rows. `repaired`: the caller reloads [lo_us, hi_us), so what `verify` found
        on the days it covers whole no longer holds (a dedupe or verify itself passes False)."""
        lo = None if lo_us is None else us_to_dt(lo_us).date()
        hi = None if hi_us is None else us_to_dt(max(lo_us or hi_us - 1, hi_us - 1)).date()
        key = {"m": m, "sync": sync, "lo": lo, "hi": hi}
        self.run(conn, "days_zero", **key)
        self.run(conn, "days_count", source="counted", **key)
        if repaired:
            self.run(conn, "days_repaired", m=m, sync=sync, lo=None if lo_us is None else us_to_dt(lo_us),
                     hi=None if hi_us is None else us_to_dt(hi_us))  # fmt: skip

    def day_found(self, conn: Conn, m: int, sync: str, day: date, finding: str, repair: str,
                  expected: tuple[int, int] | None = None) -> None:  # fmt: skip
        """What `verify` proved wrong about a day, and the repair: the day is a gap until repaired.
        `expected`: the (updates, events) the loaders committed, for a finding about counts."""
        self.run(conn, "days_found", m=m, sync=sync, day=day, finding=finding[:2000], repair=repair,
                 eu=None if expected is None else expected[0], ee=None if expected is None else expected[1])  # fmt: skip

    def days_settled(self, conn: Conn, counted: dict[tuple[int, str, date], tuple[int, int]]) -> None:
        """Clear the counts findings of days whose tables hold again what the loaders had committed."""
        if counted:
            keys = sorted(counted)
            self.run(conn, "days_settled", m=[k[0] for k in keys], sync=[k[1] for k in keys], day=[k[2] for k in keys],
                     u=[counted[k][0] for k in keys], e=[counted[k][1] for k in keys])  # fmt: skip

    def day_vouched(self, conn: Conn, m: int, sync: str, day: date) -> None:
        """A scan serves exactly the stored copy of the day: what verify found on it no longer holds."""
        self.run(conn, "days_vouched", m=m, sync=sync, day=day)

    def day_findings(self, conn: Conn) -> list[DayFinding]:
        return self._rows(conn, "days_findings", DayFinding)

    def days(self, conn: Conn, from_day: date | None = None, to_day: date | None = None) -> list[DayStatus]:
        return self._rows(conn, "days", DayStatus, from_day=from_day, to_day=to_day)

    def complete_through(self, conn: Conn) -> Watermark | None:
        got = self._rows(conn, "complete_through", Watermark)
        return got[0] if got else None

    def days_ledger(self, conn: Conn) -> dict[tuple[int, str, date], tuple[int, int]]:
        return {(int(m), s, d): (int(u), int(e)) for m, s, d, u, e in self.all(conn, "days_ledger")}

    def days_counted(self, conn: Conn) -> dict[tuple[int, str, date], tuple[int, int]]:
        return {(int(m), s, d): (int(u), int(e)) for m, s, d, u, e in self.all(conn, "days_counted")}

    def day_verified(self, conn: Conn, m: int, sync: str, day: date, by: list[str], digest: str, updates: int) -> None:
        key = {"m": m, "sync": sync, "day": day, "by": by, "digest": digest, "updates": updates}
        if not self.run(conn, "days_verified", **key).rowcount:
            self.run(conn, "days_verified_new", **key)

    def slice_failed(self, conn: Conn, key: str, why: str) -> None:
        self.run(conn, "slice_failed", key=key, why=why[:2000])

    def failed_slices(self, conn: Conn) -> list[FailedSlice]:
        return self._rows(conn, "failed_slices", FailedSlice)

    # ----- exports to a lake ----------------------------------------------------------------------

    @contextmanager
    def export_lock(self, target: str) -> Iterator[HeldLock]:
        """One exporter per target, not waited for (`held` False: another export runs), bounded
        like the writer lock: an exporter frozen holding it loses it within seconds, and `lost`
        tells it so when it resumes, before it writes anything more."""
        with self._held_lock(target, "scanfill export lock", wait=False) as got:
            yield got

    @contextmanager
    def lake_writer_lock(self, name: str) -> Iterator[HeldLock]:
        """A lake's writer lock (publish, compaction, vacuum), waited for. A frozen holder that
        resumes has lost the lock: what it then writes must be refused by the Delta log itself
        (publishes carry an app transaction, which delta-rs lets only one commit per version add)."""
        with self._held_lock(name, "scanfill lake writer lock", wait=True) as got:
            yield got

    @contextmanager
    def _held_lock(self, name: str, application: str, wait: bool) -> Iterator[HeldLock]:
        """An advisory lock held by a transaction on a connection of its own that the server ends
        when it sits idle for WRITER_IDLE_S: a process frozen while holding it costs seconds, not
        every other process's progress forever (a session lock has no such bound). A thread keeps a
        live holder's transaction from going idle, and sets `lost` when the server ended it."""
        conn = self.db.connect(application=application)
        try:
            self.run(conn, "idle_guard", idle=f"{int(WRITER_IDLE_S * 1000)}ms")
            if wait:
                self.run(conn, "publish_lock", key=_lock_key(name))
            elif not self.one(conn, "export_lock", key=_lock_key(name))[0]:
                yield HeldLock(False, threading.Event())
                return
            stop, lost = threading.Event(), threading.Event()

            def keep() -> None:
                while not stop.wait(WRITER_IDLE_S / 4):
                    try:
                        self.run(conn, "lock_alive")
                    except psycopg.Error:
                        lost.set()  # ended by the server (this process was frozen) or a restart: lock gone
                        return

            beat = threading.Thread(target=keep, name=application, daemon=True)
            beat.start()
            try:
                yield HeldLock(True, lost)
            finally:
                stop.set()
                beat.join()
                with suppress(psycopg.Error):
                    conn.rollback()  # gives the lock back
        finally:
            with suppress(psycopg.Error):
                conn.close()

    def export_partitions(self, conn: Conn, target: str) -> list[ExportPartition]:
        return self._rows(conn, "export_partitions", ExportPartition, target=target)

    def export_source(self, conn: Conn) -> dict[tuple[int, date], tuple[int, int]]:
        return {(int(m), d): (int(u), int(e)) for m, d, u, e in self.all(conn, "export_source")}

    def export_gone(self, conn: Conn, target: str) -> list[tuple[int, date]]:
        return [(int(m), d) for m, d in self.all(conn, "export_gone", target=target)]

    def export_done(self, conn: Conn, target: str, p: ExportPartition, version: int | None) -> None:
        self.run(conn, "export_done", target=target, m=p.migration_id, day=p.day, mark=p.mark, u=p.updates,
                 e=p.events, version=version)  # fmt: skip

    def export_forget(self, conn: Conn, target: str, m: int, day: date) -> None:
        self.run(conn, "export_forget", target=target, m=m, day=day)

    def contracts_changed(self, conn: Conn, target: str) -> str | None:
        """The contract-state mark when it differs from what was last exported to `target`."""
        now = str(self.one(conn, "contracts_mark")[0])
        was = self.one(conn, "export_contracts_mark", target=target)
        return None if was is not None and was[0] == now else now

    def export_contracts_done(self, conn: Conn, target: str, mark: str) -> None:
        self.run(conn, "export_contracts_done", target=target, mark=mark)

    def export_state(self, conn: Conn, target: str) -> list[Exported]:
        return self._rows(conn, "export_state", Exported, target=target)

    def ledger_tables_empty(self, conn: Conn) -> bool:
        return bool(self.one(conn, "ledger_tables_empty")[0])

    def export_contracts_forget(self, conn: Conn, target: str) -> None:
        self.run(conn, "export_contracts_forget", target=target)

    def lake_names(self, conn: Conn) -> list[str]:
        return [str(r[0]) for r in self.all(conn, "lake_names")]

    def lake_rename(self, conn: Conn, old: str, new: str) -> int:
        """Move a lake's bookkeeping from `old` to `new`; returns the rows moved."""
        return int(self.one(conn, "lake_rename", old=old, new=new)[0])

    def lake_ledger(self, conn: Conn) -> list[tuple[str, int, int]]:
        """(lake, updates, events) committed there by `run --lake` / `follow --lake`."""
        return [(str(t), int(u), int(e)) for t, u, e in self.all(conn, "lake_ledger")]

    def lake_forget(self, conn: Conn, target: str) -> int:
        """Forget a removed lake: its files, exports and contract-state mark; returns the rows deleted."""
        return int(self.one(conn, "lake_forget", target=target)[0])

    # ----- run --lake ------------------------------------------------------------------------------

    def lake_staging(self, conn: Conn, target: str) -> None:
        """Inside a commit that writes files to this lake: vacuum waits for the commit to end."""
        self.run(conn, "lake_stage_shared", key=_lock_key(f"stage {target}"))

    def lake_staging_drain(self, target: str) -> None:
        """Wait until every commit writing files to this lake now has ended (bounded by their
        commit guards: a frozen one's transaction is ended by the server)."""
        with self.db.connect(application="scanfill vacuum") as conn:
            self.run(conn, "idle_guard", idle=IDLE_GUARD)
            self.run(conn, "lake_stage_drain", key=_lock_key(f"stage {target}"))
            conn.rollback()

    def lake_unpublished_paths(self, conn: Conn, target: str) -> set[tuple[str, str]]:
        return {(str(t), str(p)) for t, p in self.all(conn, "lake_unpublished_paths", target=target)}

    def lake_files_add(self, conn: Conn, target: str, files: list[tuple[Any, ...]]) -> None:
        """(table, path, migration, day, rows, bytes, first time, last time) of each file a commit wrote."""
        if files:
            c = list(zip(*files, strict=True))
            self.run(conn, "lake_files_add", target=target, tables=list(c[0]), paths=list(c[1]), ms=list(c[2]),
                     days=list(c[3]), rows=list(c[4]), bytes=list(c[5]), firsts=list(c[6]), lasts=list(c[7]))  # fmt: skip

    def lake_publish_next(self, conn: Conn, target: str) -> int | None:
        row = self.one(conn, "lake_publish_next", target=target)
        return None if row is None else int(row[0])

    def lake_published_upto(self, conn: Conn, target: str, table: str, upto: int) -> None:
        self.run(conn, "lake_published_upto", target=target, table=table, upto=upto)

    def lake_unpublished(self, conn: Conn, target: str, table: str) -> list[tuple[str, int, date, int, int, int]]:
        return [tuple(r) for r in self.all(conn, "lake_unpublished", target=target, table=table)]  # type: ignore[misc]

    def lake_partitions(self, conn: Conn, target: str) -> dict[tuple[int, date], int]:
        """(migration, day) -> files committed there but not yet published."""
        return {(int(m), d): int(n) for m, d, n in self.all(conn, "lake_partitions", target=target)}

    def lake_partition_span(self, conn: Conn, target: str, table: str, m: int, day: date) -> list[Any]:
        row = self.one(conn, "lake_partition_span", target=target, table=table, m=m, day=day)
        return [] if row is None or row[0] is None else [row[0], row[1]]

    def lake_partitions_touched(self, conn: Conn, target: str, table: str) -> list[tuple[int, date]]:
        return [(int(m), d) for m, d in self.all(conn, "lake_partitions_touched", target=target, table=table)]

    def lake_described(self, conn: Conn, target: str, table: str, m: int, day: date) -> None:
        self.run(conn, "lake_described", target=target, table=table, m=m, day=day)

    # ----- the cursor moves of a commit (inside the sink's transaction) -------------------------

    def slice_advance(self, conn: Conn, lease: Lease, last_before: str, done: bool, updates: int, events: int,
                      pages: int, nbytes: int, lease_s: float) -> None:  # fmt: skip
        self.run(conn, "slice_advance", key=lease.key, last_before=last_before, done=done, updates=updates,
                 events=events, pages=pages, bytes=nbytes, lease_s=lease_s)  # fmt: skip

    def import_advance(self, conn: Conn, lease: Lease, last: str, done: bool, updates: int, events: int,
                       lease_s: float) -> None:  # fmt: skip
        self.run(conn, "import_advance", key=lease.key, last=last, done=done, updates=updates, events=events,
                 lease_s=lease_s)  # fmt: skip

    # ----- leases, the same for both kinds ------------------------------------------------------

    def claim_slice(self, conn: Conn, owner: str, lease_s: float, share: Share, exclude: list[str],
                    dead: list[str]) -> Any:  # fmt: skip
        with self.transaction(conn):
            return self.one(conn, "slice_claim", owner=owner, lease_s=lease_s, exclude=exclude, dead=dead,
                            **share.params())  # fmt: skip

    def claim_import(self, conn: Conn, owner: str, lease_s: float, share: Share) -> tuple[Lease, str] | None:
        """An import cursor's lease and the update id it stands after."""
        with self.transaction(conn):
            row = self.one(conn, "import_claim", owner=owner, lease_s=lease_s, migrations=list(share.migrations))
        return None if row is None else (Lease(LeaseKind.IMPORT, int(row[0]), owner, int(row[2])), str(row[1]))

    def imports_open(self, conn: Conn) -> int:
        return int(self.one(conn, "imports_open")[0])

    def renew(self, conn: Conn, owner: str, lease_s: float) -> int:
        """Heartbeat: every lease this worker holds, of every kind, lives on."""
        with self.transaction(conn):
            n = self.run(conn, "slices_renew", owner=owner, lease_s=lease_s).rowcount
            return n + self.run(conn, "imports_renew", owner=owner, lease_s=lease_s).rowcount

    def release(self, conn: Conn, lease: Lease) -> None:
        name = "slice_release" if lease.kind is LeaseKind.SLICE else "import_release"
        with self.transaction(conn):
            self.run(conn, name, key=lease.key, owner=lease.owner, epoch=lease.epoch)

    def lock_for_commit(self, conn: Conn, lease: Lease, lease_s: float, expected: str) -> int | None:
        """Inside the caller's transaction: lock the cursor row, set the guard, check the fence.
        Returns a slice's lower bound as the database holds it now (a split may have raised it)."""
        kind = "slice" if lease.kind is LeaseKind.SLICE else "import"
        self.one(conn, "commit_guard", guard=guard_timeout(lease_s))
        row = self.one(conn, f"{kind}_lock", key=lease.key)
        if row is None:
            raise Fenced(f"{kind} {lease.key} no longer exists")
        position, owner, epoch, complete = (row[1], row[2], row[3], row[4]) if kind == "slice" else row[:4]
        if owner != lease.owner or epoch != lease.epoch:
            raise Fenced(f"{kind} {lease.key}: lease now held by {owner} (epoch {epoch})")
        if complete or position != expected:
            raise Fenced(f"{kind} {lease.key} moved to {position!r} under this worker")
        return dt_to_us(row[0]) if kind == "slice" else None

    # ----- state and the crash reset ------------------------------------------------------------

    def progress(self, conn: Conn) -> Progress:
        row = self.one(conn, "progress")
        assert row is not None
        slices, done, ranges, unproven, imp, upd, ev, nbytes, span, covered = row
        return Progress(int(slices), int(done), int(ranges), int(unproven), int(imp), int(upd), int(ev), int(nbytes),
                        float(span), float(covered))  # fmt: skip

    def reset_cursors(self, conn: Conn) -> None:
        """Inside the caller's transaction: the ledger tables were emptied, so every cursor of
        every kind starts over (never "complete" over rows that are gone): slices, import cursors,
        and the follower's part of every range."""
        self.run(conn, "slices_lock_all")
        self.run(conn, "slices_reset")
        self.run(conn, "imports_reset")
        self.run(conn, "follow_reset")
        self.run(conn, "ranges_unfollow")

    def unlogged_rows_lost(self, conn: Conn) -> bool:
        """The server restarted uncleanly while the ledger tables were UNLOGGED: it emptied them
        (and the canary with them). Cursors survived, so loading on from them would leave a hole."""
        q = self.db.qualified
        armed = self.one(conn, "unlogged_armed", canary=q("scanfill_unlogged_canary"), updates=q("ledger_updates"),
                         events=q("ledger_events"))  # fmt: skip
        if not armed or not armed[0] or not armed[1]:
            return False
        return int(self.one(conn, "canary_rows")[0]) == 0

    def reset_if_emptied(self, conn: Conn) -> bool:
        """The one crash-canary check, run by every command that writes before its first write:
        when the server emptied the UNLOGGED ledger tables, every cursor of every kind is reset
        (slices, import cursors, the follower's part of every range) and the canary re-armed, so
        nothing is ever reported complete over rows that are gone. True when it reset."""
        if not self.unlogged_rows_lost(conn):
            return False
        with self.transaction(conn):
            self.run(conn, "slices_lock_all")  # one process resets; the others then see the canary armed
            if int(self.one(conn, "canary_rows")[0]):
                return False
            self.reset_cursors(conn)
            # always: crash recovery empties only the UNLOGGED tables; the day ledger and the
            # transfer facts are logged and still count what is gone, so the reload would double them
            self.run(conn, "ledger_truncate")
            self.run(conn, "canary_arm")
        return True

    def record_disagreement(self, conn: Conn, url: str, request: str, ids: list[str]) -> None:
        self.run(conn, "disagreement_insert", url=url, request=request, ids=ids)

    def refuse_if_emptied(self, conn: Conn) -> None:
        """After riding out an outage: refuse to go on if the server emptied the UNLOGGED tables."""
        if self.unlogged_rows_lost(conn):
            raise UnloggedLost(
                "the PostgreSQL server restarted uncleanly while the ledger tables were UNLOGGED and emptied them; "
                "stopping rather than leaving a hole. Run the same command again: it detects this and reloads."
            )

    def reap_frozen_commits(self, conn: Conn, lease_s: float) -> list[str]:
        """Terminate COPYs of frozen loaders older than the guard timeout (see queries.sql)."""
        guard_s = max(4 * lease_s, 10.0) + 5.0
        return [f"{app} (pid {pid})" for pid, app, _ in self.all(conn, "reap_frozen_commits", guard_s=guard_s)]

    def truncate_all(self, conn: Conn) -> None:
        """The ledger and every cursor over it; never `scan_events` (Scan prunes them: no refetch)."""
        with self.transaction(conn):
            self.run(conn, "truncate_all")
            self.run(conn, "follow_forget_updates")

    # ----- workers ------------------------------------------------------------------------------

    def worker_register(self, conn: Conn, worker_id: str) -> None:
        self.run(conn, "worker_register", id=worker_id, host=host.hostname(), pid=os.getpid(),
                 pidns=host.pid_namespace())  # fmt: skip

    def mark_dead_local_workers(self, conn: Conn, me: str) -> list[str]:
        """Workers recorded as running on this host, in this PID namespace, whose process is gone
        (killed, crashed): marked dead, so their leases can be taken at once instead of after expiry."""
        with self.transaction(conn):
            rows = self.all(conn, "workers_running_here", host=host.hostname(), id=me)
            dead = [wid for wid, pid, pidns in rows if host.known_dead(int(pid), pidns)]
            if dead:
                self.run(conn, "workers_mark_dead", ids=dead)
        return dead

    def stop_requested(self, conn: Conn) -> bool:
        """Whether an operator asked every loader to stop (`scanfill abort`)."""
        return self.one(conn, "stop_requested") is not None

    # ----- the follower -------------------------------------------------------------------------

    def follow_claim(self, conn: Conn, owner: str, lease_s: float,
                     dead: list[str]) -> tuple[FollowLease, str | None] | None:  # fmt: skip
        """The follower lease, and who held it before; None while another live follower holds it
        (or while a frozen commit holds its row)."""
        with self.transaction(conn):
            row = self.one(conn, "follow_claim", owner=owner, host=host.hostname(), pid=os.getpid(),
                           pidns=host.pid_namespace(), lease_s=lease_s, dead=dead)  # fmt: skip
        return None if row is None else (FollowLease(owner, int(row[0])), row[1])

    def follow_renew(self, conn: Conn, lease: FollowLease, lease_s: float, updates: int, events: int,
                     problems: int = 0, last_problem: str | None = None) -> bool:  # fmt: skip
        with self.transaction(conn):
            return self.run(conn, "follow_renew", owner=lease.owner, epoch=lease.epoch, lease_s=lease_s,
                            problems=problems, last_problem=last_problem,
                            updates=updates, events=events).rowcount == 1  # fmt: skip

    def follow_failed(self, conn: Conn, lease: FollowLease, why: str) -> None:
        """The follower stopped on a page it can neither store nor skip: recorded for status."""
        with self.transaction(conn):
            self.run(conn, "follow_failed", owner=lease.owner, epoch=lease.epoch, why=why[:2000])

    def follow_release(self, conn: Conn, lease: FollowLease) -> None:
        with self.transaction(conn):
            self.run(conn, "follow_release", owner=lease.owner, epoch=lease.epoch)

    def dead_local_followers(self, conn: Conn, me: str) -> list[str]:
        """The active follower, if it ran on this host in this PID namespace and its pid is gone."""
        rows = self.all(conn, "follow_leader_here", host=host.hostname(), id=me)
        return [owner for owner, pid, pidns in rows if host.known_dead(int(pid), pidns)]

    def follow_fence(self, conn: Conn, lease: FollowLease, lease_s: float) -> None:
        """Inside a follower's commit: fail unless this follower still holds the lease."""
        self.one(conn, "commit_guard", guard=guard_timeout(lease_s))
        row = self.one(conn, "follow_fence")
        if row is None or row[0] != lease.owner or int(row[1]) != lease.epoch:
            raise Fenced(f"follower lease now held by {row[0] if row else None} (epoch {row[1] if row else None})")

    def follow_position(self, conn: Conn, stream: str) -> tuple[int, int] | None:
        row = self.one(conn, "follow_position", stream=stream)
        return None if row is None else (int(row[0]), parse_us(row[1]))

    def set_follow_position(self, conn: Conn, stream: str, pos: tuple[int, int], items: int, events: int = 0) -> None:
        self.run(conn, "follow_position_set", stream=stream, m=pos[0], text=format_us(pos[1]), time=us_to_dt(pos[1]),
                 items=items, events=events)  # fmt: skip

    def backfill_frontier(self, conn: Conn) -> tuple[int, int] | None:
        row = self.one(conn, "backfill_frontier")
        return None if row is None else (int(row[0]), parse_us(row[1]))

    def follow_create_ranges(self, conn: Conn, lease: FollowLease, lease_s: float,
                             firsts: dict[tuple[int, str], int]) -> None:  # fmt: skip
        """Before a follower's commit, in a short transaction of its own: the ranges its page is the
        first to reach, created as the follower's from their first item. Creating a range takes the
        planning lock; inside the page's commit it would be held through the COPY, which the server
        never times out, and a follower frozen there would stop every `run`, `init` and standby."""
        keys = list(firsts)
        if not int(self.one(conn, "ranges_missing", ms=[m for m, _ in keys], syncs=[s for _, s in keys])[0]):
            return
        with self.transaction(conn):  # its idle guard bounds a follower frozen here to seconds
            self.follow_fence(conn, lease, lease_s)
            self.run(conn, "plan_lock", key=LOCK_KEY)  # serialised with planning, which creates ranges too
            for m, sync in sorted(keys):
                if self.one(conn, "range_lock_follow", m=m, sync=sync) is None:
                    first = firsts[(m, sync)]
                    self.run(conn, "range_insert_pending", m=m, sync=sync, min_time=us_to_dt(first),
                             min_text=format_us(first), before_min=format_us(first - 1))  # fmt: skip

    def follow_range_tops(self, conn: Conn, keys: list[tuple[int, str]], firsts: dict[tuple[int, str], int]
                          ) -> dict[tuple[int, str], int]:  # fmt: skip
        """Inside a follower's commit: each range's top, locked. The ranges are created before the
        commit (`follow_create_ranges`); one removed since (a rewind) is created here alike."""
        tops = {}
        if int(self.one(conn, "ranges_missing", ms=[m for m, _ in keys], syncs=[s for _, s in keys])[0]):
            # taken before any range row is locked here, so this and planning cannot deadlock
            self.run(conn, "plan_lock", key=LOCK_KEY)
        for m, sync in sorted(keys):
            row = self.one(conn, "range_lock_follow", m=m, sync=sync)
            if row is None:
                first = firsts[(m, sync)]
                self.run(conn, "range_insert_followed", m=m, sync=sync, min_time=us_to_dt(first),
                         min_text=format_us(first), before_min=format_us(first - 1))  # fmt: skip
                tops[(m, sync)] = first - 1
            else:
                tops[(m, sync)] = parse_us(row[0])
        return tops

    def follow_range_to(self, conn: Conn, m: int, sync: str, top_us: int) -> None:
        self.run(conn, "range_follow_to", m=m, sync=sync, max_text=format_us(top_us), max_time=us_to_dt(top_us))

    def commit_scan_events(self, conn: Conn, lease: FollowLease, last: tuple[int, int], rows: list[tuple[Any, ...]],
                           lease_s: float) -> int:  # fmt: skip
        """A /v0/events page and the events cursor in one transaction; items already stored (the
        re-read boundary microsecond) are dropped. Returns how many rows were stored."""
        with self.transaction(conn):
            self.follow_fence(conn, lease, lease_s)
            known = {r[0] for r in self.all(conn, "scan_events_known", ids=[r[0] for r in rows])}
            fresh = [r for r in rows if r[0] not in known]
            if fresh:
                cols = ("update_id", "migration_id", "domain_id", "record_time", "verdict", "traffic_summary",
                        "app_activity_records")  # fmt: skip
                stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    self.db.t("scan_events"), sql.SQL(", ").join(map(sql.Identifier, cols)))
                with conn.cursor().copy(stmt) as cp:
                    cp.set_types(["text", "int8", "text", "timestamptz", "bytea", "bytea", "bytea"])
                    for r in fresh:
                        cp.write_row(r)
            self.set_follow_position(conn, "events", last, len(fresh))
        return len(fresh)

    def follower_active(self, conn: Conn) -> str | None:
        """Who follows now (an unexpired follower lease), or None."""
        row = self.one(conn, "follower_active")
        return None if row is None else str(row[0])

    def scan_events_vs_committed(self, conn: Conn) -> tuple[int, int]:
        """(rows the events stream committed, rows `scan_events` holds): equal unless one was lost or doubled."""
        row = self.one(conn, "scan_events_vs_committed")
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def follow_positions(self, conn: Conn) -> dict[str, tuple[int, int]]:
        return {str(r[0]): (int(r[1]), parse_us(r[2])) for r in self.all(conn, "follow_positions")}

    def range_migrations(self, conn: Conn) -> list[int]:
        return [int(r[0]) for r in self.all(conn, "range_migrations")]

    def rewind(self, conn: Conn, cut: dict[int, int | None]) -> tuple[int, int]:
        """Remove what lies where no scan can serve it (`cut`: migration -> the newest record time
        scans announce, None for a migration none announces), end the followed ranges at what is
        left, and move both follower cursors back onto stored positions. Returns (updates, events)
        removed. An earlier release could store such rows from one corrupted page."""
        removed_u = removed_e = 0
        with self.transaction(conn, idle="60s"):  # it derives contracts again between statements
            self.run(conn, "slices_lock_all")
            for m, head in sorted(cut.items()):
                after = "-infinity" if head is None else us_to_dt(head)
                u, e = self.one(conn, "rewind_count", m=m, after=after)
                removed_u, removed_e = removed_u + int(u), removed_e + int(e)
                if u:
                    self.run(conn, "follow_uncount", updates=u, events=e)
                lo = position(m, head + 1) if head is not None else position(m, 0)
                with rederived(self.db, conn, lo, position(m + 1, 0)):
                    self.run(conn, "rewind_events", m=m, after=after)
                    self.run(conn, "rewind_updates", m=m, after=after)
                    self.run(conn, "transfers_forget", lo=lo, hi=position(m + 1, 0), sync=None)
                self.days_recount(conn, m, lo_us=None if head is None else head + 1)
                gone = self.run(conn, "rewind_scan_events", m=m, after=after).rowcount
                if gone > 0:
                    self.run(conn, "follow_uncount_scan_events", n=gone)
                if head is None:
                    self.run(conn, "rewind_drop_migration", m=m)
                else:
                    self.run(conn, "rewind_ranges", m=m, after=after)
            top = self.one(conn, "ranges_top")
            if top is not None:
                pos = (int(top[0]), parse_us(top[1]))
                self.set_follow_position(conn, "updates", pos, 0)
                ev = self.one(conn, "scan_events_top")
                self.set_follow_position(conn, "events", (int(ev[0]), dt_to_us(ev[1])) if ev else pos, 0)
        return removed_u, removed_e

    def contracts_stale(self, reason: str) -> None:
        """Record that a load leaves contract state behind the ledger (until `rebuild-state`)."""
        with self.db.connect(autocommit=True) as conn:
            self.run(conn, "contracts_stale", reason=reason)

    def follow_state(self, conn: Conn) -> FollowState | None:
        got = self._rows(conn, "follow_state", FollowState)
        return got[0] if got else None
