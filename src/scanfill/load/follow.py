"""`scanfill follow`: keep the copy current after the backfill, exactly once, with one active
follower at a time (a lease in the database) and any number of hot standbys.

Two streams, each paged forward from its own cursor:

* **updates** (`POST /v2/updates`, protobuf_json) into the same tables as the backfill. Who stores
  an update is decided per (migration, synchronizer) range under its row lock: the backfill owns
  everything up to the range's `followed_after`, the follower everything after it, and the
  follower moves the range's `max` with every commit. An item at or below its range's `max` is
  already stored, so the follower re-reads the boundary microsecond of its cursor on every request
  (`after` = cursor - 1 us) and drops what it already has: updates of two synchronizers that share
  a microsecond across a page boundary are neither skipped nor stored twice.
* **events** (`POST /v0/events`): mediator verdicts, traffic summaries and app activity records,
  which Scan prunes and which cannot be backfilled later, into `scan_events` (one row per update
  id; the update itself is the updates stream's).

Each page and its cursor commit in one transaction, fenced by the follower lease's epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import psycopg

from scanfill import host
from scanfill.coord.discovery import current_migration
from scanfill.coord.store import CRASH_RESET, FollowLease, Store
from scanfill.db import Database, DbPool
from scanfill.errors import (
    DatabaseUnavailable,
    Fenced,
    MalformedPage,
    ScanError,
    ScanHTTPError,
    UnloggedLost,
    Unstorable,
    db_error_kind,
)
from scanfill.lake.errors import LakeUnwritable
from scanfill.load.decode import Batch
from scanfill.load.pipeline import Pipeline, PipelineReport
from scanfill.load.sink import WAY_OUT, Sink, finish_lake
from scanfill.logs import dump_tasks_on_sigusr2
from scanfill.scan.client import ScanClient, ScanConfig

log = logging.getLogger("scanfill.follow")
T = TypeVar("T")
STREAMS = ("updates", "events")
MAX_PAUSE_S = 60.0  # longest wait before asking the scans again after a stream failed
ROLLBACK_LIMIT = 8  # commits of one page rolled back in a row before the follower gives up on it


@dataclass(frozen=True)
class FollowSettings:
    db: Database
    scan: ScanConfig
    page_size: int = 1000
    poll_s: float = 5.0  # wait after a page that says "caught up" (shorter than page_size)
    lease_s: float = 15.0  # a dead follower's standby takes over within this (at once on the same host)
    events: bool = True
    once: bool = False  # catch up to the scans' head, then exit
    update_json: str = "full"
    worker_id: str = ""
    start: str = "auto"  # auto: after the backfill if there is one, else the head; "head"; "beginning"
    db_retry_s: float = 300.0  # ride out a database restart or failover this long
    agree: int = 1  # store a run of updates only when this many scans served it (below their lowest head)
    contract_state: bool = True
    lake: str | None = None  # follow --lake: rows as Parquet files in this lake instead of the ledger tables


@dataclass
class FollowReport:
    follower_id: str
    updates: int = 0
    events: int = 0
    scan_events: int = 0
    pages: int = 0
    skipped: int = 0  # items already stored (the re-read boundary, the hand-off from the backfill)
    took_over: bool = False
    disagreements: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopped: bool = False
    scan_event_pages: int = 0
    problems: int = 0  # pages the scans could not serve well even after the pipeline's retries (waited out)
    last_problem: str = ""
    malformed: int = 0  # pages refused as malformed and asked again


LAKE_COMPACT_S = 600.0


class Follower:
    """The follower driver: it only decides which window to ask for next (after its cursor) and
    commits what the pipeline returns; asking, checking, retrying, agreeing are the pipeline's."""

    def __init__(self, settings: FollowSettings, hooks: Any = None) -> None:
        self.s = settings
        self.id = settings.worker_id or f"{host.hostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.report = FollowReport(self.id)
        self.hooks = hooks
        self.sink = Sink(settings.db, settings.contract_state, settings.agree, settings.lake)
        self.store: Store = self.sink.store
        self.stop = asyncio.Event()
        self.caught_up = {name: False for name in STREAMS}
        self.pool = DbPool(settings.db, 2, f"scanfill follow {self.id}", settings.db_retry_s,
                           after_outage=self.store.refuse_if_emptied, stop=self.stop)  # fmt: skip
        # the heartbeat's own connection: a commit waiting on a lock must not starve the lease's renewal
        self.beat_pool = DbPool(settings.db, 1, f"scanfill follow {self.id} (heartbeat)", settings.db_retry_s,
                                stop=self.stop)  # fmt: skip
        self.lease: FollowLease | None = None
        self.pages = PipelineReport(disagreements=self.report.disagreements)  # what the pipeline saw

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.pool.call(fn, *args)  # type: ignore[no-any-return]

    async def run(self) -> FollowReport:
        await self.pool.open()
        await self.beat_pool.open()
        try:
            # the crash canary, before the first write: a crash that emptied the UNLOGGED tables
            # resets every cursor (the follower's part of each range included) instead of following on
            if await self.db(self.store.reset_if_emptied):
                log.warning("%s The follower goes on from where it took over each range.", CRASH_RESET)
            async with ScanClient(self.s.scan) as client:
                self.client = client
                record = partial(self.db, self.store.record_disagreement)  # (scan, request, ids) -> stored
                self.pipeline = Pipeline(client, self.s.agree, record, self.hooks, self.pages, self.s.contract_state)
                if not await self._become_leader():
                    return self.report
                beat = asyncio.create_task(self._heartbeat())
                compact = asyncio.create_task(self._compact()) if self.sink.lake is not None else None
                try:
                    tasks = [self._guarded(self._updates, "updates")]
                    if self.s.events:
                        tasks.append(self._guarded(self._events, "events"))
                    await asyncio.gather(*tasks)
                finally:
                    beat.cancel()
                    if compact is not None:
                        compact.cancel()
                    if self.lease is not None:
                        with contextlib.suppress(psycopg.Error, DatabaseUnavailable):
                            await self.db(self.store.follow_release, self.lease)
        finally:
            await finish_lake(self.sink)
            self.report.stopped = self.stop.is_set()
            self.report.malformed = self.pages.malformed
            self.pool.close()
            self.beat_pool.close()
        return self.report

    async def _guarded(self, fn: Callable[[], Any], what: str) -> None:
        """A stream runs until stopped. What the scans do wrong (garbage the pipeline could not get
        past, every scan down, no agreement) is said and waited out, with growing pauses: the
        follower is left running for months and `/v0/events` cannot be fetched later. Only losing
        the lease, the database for the whole --db-retry, the ledger rows, or a page no commit can
        take (it cannot be skipped) stops it."""
        failures = 0
        while not self.stop.is_set():
            pages = self.report.pages + self.report.scan_event_pages
            try:
                await fn()
                return
            except Fenced as exc:
                log.warning("follower lost its lease (%s): another follower carries on", exc)
                self.stop.set()
            except (DatabaseUnavailable, UnloggedLost) as exc:
                msg = f"follow {what}: {exc}"
                log.error("%s", msg)
                self.report.failures.append(msg)
                self.stop.set()
            except Unstorable as exc:
                await self._cannot_pass(what, str(exc))
            except psycopg.Error as exc:
                # a commit the database rolled back: nothing of it is stored, the stream resumes from
                # its cursor. One of the moment (a deadlock, a frozen commit ended by the guard) is
                # waited out; one that recurs for the same page cannot be skipped and stops the follower
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failures = 1 if self.report.pages + self.report.scan_event_pages > pages else failures + 1
                if db_error_kind(exc) == "permanent" or failures >= ROLLBACK_LIMIT:
                    again = "every time" if db_error_kind(exc) == "permanent" else f"{failures} times in a row"
                    await self._cannot_pass(what, f"the database refuses this page {again} (SQLSTATE "
                                                  f"{exc.sqlstate}: {first}); {WAY_OUT}")  # fmt: skip
                else:
                    await self._problem(what, f"follow {what}: {first}", failures)
            except LakeUnwritable as exc:  # full or read-only: waited out like a scan outage, the cursor unmoved
                failures = 1 if self.report.pages + self.report.scan_event_pages > pages else failures + 1
                await self._problem(what, f"follow {what}: {exc}", failures)
            except (ScanError, MalformedPage) as exc:
                failures = 1 if self.report.pages + self.report.scan_event_pages > pages else failures + 1
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                await self._problem(what, f"follow {what}: {first}", failures)

    async def _cannot_pass(self, what: str, why: str) -> None:
        """A page that cannot be stored, whichever scan serves it: the follower cannot skip it (its
        cursor is a position), so it stops with one line, recorded for `scanfill status`."""
        msg = f"follow {what}: {why}"
        log.error("%s", msg)
        self.report.failures.append(msg)
        if self.lease is not None:
            with contextlib.suppress(psycopg.Error, DatabaseUnavailable):
                await self.db(self.store.follow_failed, self.lease, msg)
        self.stop.set()

    async def _problem(self, what: str, msg: str, failures: int) -> None:
        """What the scans (or the moment) did wrong, `failures` times in a row: said and waited out,
        with growing pauses (with --once: the follower stops)."""
        if self.s.once:
            log.error("%s", msg)
            self.report.failures.append(msg)
            self.stop.set()
            return
        wait = min(MAX_PAUSE_S, max(1.0, self.s.poll_s) * 2 ** min(failures - 1, 8))
        self.report.problems += 1
        self.report.last_problem = msg
        if self.hooks is not None and hasattr(self.hooks, "on_follow_problem"):
            self.hooks.on_follow_problem(what)
        log.error("%s; asking again in %.0f s (the follower keeps running; nothing of it was stored)", msg, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=wait)

    # ----- the lease: one active follower, the others wait as hot standbys ----------------------

    async def _become_leader(self) -> bool:
        waited = False
        while not self.stop.is_set():
            dead = await self.db(self.store.dead_local_followers, self.id)
            got = await self.db(self.store.follow_claim, self.id, self.s.lease_s, dead)
            if got is not None:
                self.lease, previous = got
                self.report.took_over = previous is not None and previous != self.id
                if waited or self.report.took_over:
                    log.warning("follower %s is now active (took over from %s)", self.id, previous)
                return True
            if not waited:
                log.info("another follower is active: %s waits as a hot standby", self.id)
                waited = True
            # a frozen follower (SIGSTOP, a paused VM) may hold its commit's row lock forever: the
            # server does not end a COPY waiting for data, so the standby ends it (as workers do)
            for frozen in await self.db(self.store.reap_frozen_commits, self.s.lease_s):
                log.warning("ended the commit of a frozen loader, %s: its lease can expire", frozen)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=min(1.0, self.s.lease_s / 5))
        return False

    async def _compact(self) -> None:
        """A follower left running for months writes a small file per commit: every LAKE_COMPACT_S
        its partitions are compacted into ~128 MB files and described (readers see the same rows)."""
        while True:
            await asyncio.sleep(LAKE_COMPACT_S)
            await finish_lake(self.sink)

    async def _heartbeat(self) -> None:
        """Renew the lease and obey `scanfill abort`, on a connection of its own."""
        assert self.lease is not None
        while True:
            await asyncio.sleep(max(0.2, self.s.lease_s / 4))
            try:
                if not await self.beat_pool.call(self.store.follow_renew, self.lease, self.s.lease_s, self.report.updates,
                                                 self.report.events, self.report.problems,
                                                 self.report.last_problem or None):  # fmt: skip
                    log.warning("follower lease lost: stopping")
                    self.stop.set()
                    return
                await self.beat_pool.call(self.store.follow_sample, self.id, self.report.updates, self.report.events)
                if await self.beat_pool.call(self.store.stop_requested):
                    log.warning("stop requested through the database (scanfill abort): stopping")
                    self.stop.set()
                    return
            except (psycopg.Error, DatabaseUnavailable) as exc:
                log.warning("follower heartbeat failed (will retry): %s", exc)

    # ----- the updates stream -------------------------------------------------------------------

    async def _start_position(self, stream: str) -> tuple[int, int] | None:
        got = await self.db(self.store.follow_position, stream)
        if got is not None:
            return got
        if self.s.start == "beginning":
            return None
        handoff = await self.db(self.store.backfill_frontier)
        if handoff is not None and self.s.start == "auto":
            return handoff
        # no backfill here (or --start head): from the scans' current head
        m, _ = await current_migration(self.client)
        await self.pipeline.known.refresh(m)
        return (m, self.pipeline.known.heads.get(m, 0))

    async def _updates(self) -> None:
        """Page k+1 is fetched and decoded while page k commits: its `after` is known as soon as
        page k is decoded, so a catch-up keeps both the scan and the database busy."""
        pos = await self._start_position("updates")
        lean = self.s.update_json == "envelope"
        size = self.s.page_size
        ahead: asyncio.Task[Batch] | None = None
        try:
            while not self.stop.is_set():
                batch = await (ahead if ahead is not None else self.pipeline.forward(pos, size, lean))
                ahead = None
                if batch.items == size and batch.last_position == pos:
                    size = min(1000, size * 2)  # a full page inside the re-read microsecond: get past it
                    continue
                full = batch.items == size
                size = self.s.page_size
                if full:
                    ahead = asyncio.create_task(self.pipeline.forward(batch.last_position, size, lean))
                if batch.items:
                    assert self.lease is not None
                    kept = await self.db(self.sink.commit_followed, self.lease, self.s.lease_s, batch)
                    self.report.updates += len(kept.updates)
                    self.report.events += kept.events
                    self.report.skipped += batch.items - kept.items
                    self.report.pages += 1
                    pos = batch.last_position
                    if self.hooks is not None:
                        self.hooks.on_follow(pos)
                if not full:
                    self.caught_up["updates"] = True
                    if self.s.once:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=self.s.poll_s)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead

    # ----- the events stream (verdicts, traffic summaries, app activity) -----------------------

    async def _events(self) -> None:
        pos = await self._start_position("events")
        size = self.s.page_size
        while not self.stop.is_set():
            try:
                page = await self.pipeline.events(pos, size)
            except ScanHTTPError as exc:
                if exc.status == 404:
                    log.warning("this scan has no /v0/events (an older release): verdicts are not kept")
                    return
                raise
            if page.served == size and page.last == pos:
                size = min(1000, size * 2)
                continue
            size = self.s.page_size
            assert self.lease is not None
            if page.served:
                self.report.scan_events += await self.db(self.store.commit_scan_events, self.lease, page.last,
                                                         page.rows, self.s.lease_s)  # fmt: skip
                self.report.scan_event_pages += 1
                pos = page.last
            if page.served < size:
                self.caught_up["events"] = True
                if self.s.once:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=self.s.poll_s)


# ----- running it --------------------------------------------------------------------------------


def follow(settings: FollowSettings, hooks: Any = None) -> FollowReport:
    """Run a follower in this process until caught up (`once`), stopped by a signal, or failed."""
    import signal

    follower = Follower(settings, hooks)

    async def main() -> FollowReport:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(130)  # a second signal: at once (every commit is atomic, nothing is lost)
            log.warning("stop requested: finishing the page in flight (again to stop at once)")
            follower.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        dump_tasks_on_sigusr2(loop)
        return await follower.run()

    return asyncio.run(main())

