"""One worker process: many slices in flight at once, each paged backwards and committed in order.

Per slice the pipeline is fetch -> decode/validate -> commit; the next page of a slice is fetched
while the previous one commits, and commits of one slice never overtake each other. Database work
runs on a small pool of connections in threads (psycopg's COPY releases the GIL while it waits
for the server), HTTP and decoding on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import psycopg

from scanfill.coord.slices import Claim, Leases, Partition
from scanfill.coord.store import Lease, WorkerState
from scanfill.db import Conn, Database, DbPool
from scanfill.errors import DatabaseUnavailable, Fenced, MalformedPage, ScanError, UnloggedLost, db_error_kind
from scanfill.lake.errors import LakeUnwritable
from scanfill.load.budget import DEFAULT_MB, ByteBudget
from scanfill.load.decode import Batch
from scanfill.load.pipeline import Pipeline, PipelineReport
from scanfill.load.sink import Sink, finish_lake
from scanfill.scan import endpoints as ep
from scanfill.scan.client import ScanClient, ScanConfig, redact_url

log = logging.getLogger("scanfill.load.worker")
T = TypeVar("T")
PER_UPDATE_BYTES = 200  # an Update tuple and its objects, beside its framed rows
FIRST_GUESS_BYTES = 20_000  # what an update weighs before any page said (MainNet's average is ~10-20 KB)
ROLLBACK_LIMIT = 5  # commits of one slice rolled back at the same cursor before the slice is given up on



@dataclass(frozen=True)
class WorkerSettings:
    db: Database
    scan: ScanConfig
    concurrency: int = 16  # slices in flight in this process
    page_size: int = 1000
    page_mb: float = 32.0  # pages are sized to about this much JSON, whatever an update weighs
    batch_rows: int = 10_000  # commit when a slice has at least this many rows pending
    db_connections: int = 3
    lease_s: float = 60.0
    partition: Partition = field(default_factory=Partition)
    migrations: tuple[int, ...] = ()
    min_split_us: int = 120_000_000
    poll_s: float = 1.0
    sample_s: float = 1.0  # progress samples: fine enough for the report to show a stall
    complete_urls: dict[int, frozenset[str]] = field(default_factory=dict)
    worker_id: str = ""
    metrics_port: int = 0  # serve Prometheus metrics on this port (0 = off)
    metrics_addr: str = "127.0.0.1"  # loopback unless the user exposes it (a pod sets 0.0.0.0)
    db_retry_s: float = 300.0  # ride out a database restart or failover this long
    agree: int = 1  # a page is used only when this many scans served the same content
    rescan_s: float = 0.0  # look for newly listed scans in /v0/scans this often (0: never)
    imports: bool = False  # also load import updates (skipped by default: they repeat earlier contracts)
    update_json: str = "full"  # "envelope": store updates without events_by_id (events are in ledger_events)
    memory_mb: int = DEFAULT_MB  # bytes of pages in flight (fetching, decoded, waiting to commit) stay under this
    contract_state: bool = True  # keep `contracts` with each commit (off only to measure what it costs)
    lake: str | None = None  # run --lake: rows as Parquet files in this lake instead of the ledger tables


@dataclass
class WorkerReport:
    worker_id: str
    updates: int = 0
    events: int = 0
    pages: int = 0
    bytes: int = 0
    commits: int = 0
    slices_done: int = 0
    takeovers: int = 0
    splits: int = 0
    fenced: int = 0
    failures: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)  # "url: request: n updates differ"
    requests: int = 0  # to scans, retries and hedges included
    retries: int = 0
    hedges: int = 0  # requests also sent to a second scan because the first was slow
    hedges_won: int = 0  # ... and the second answered first
    memory_peak: int = 0  # most page bytes held in flight at once (the --memory budget)
    memory_waits: int = 0  # pages that waited for the budget
    malformed: int = 0  # pages refused as malformed and asked again (as the follower counts them)
    seconds: float = 0.0
    stopped: bool = False

    @property
    def rows(self) -> int:
        return self.updates + self.events


class Worker:
    def __init__(self, settings: WorkerSettings, hooks: Any = None) -> None:
        self.s = settings
        self.id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.report = WorkerReport(self.id)
        self.hooks = hooks  # optional metrics sink with on_commit / on_request / on_takeover
        self.leases = Leases(settings.db, self.id, settings.lease_s, settings.partition, settings.min_split_us,
                             settings.migrations)  # fmt: skip
        self.complete_urls = {m: set(u) for m, u in settings.complete_urls.items()}  # grows when scans join
        self.sink = Sink(settings.db, settings.contract_state, settings.agree, settings.lake)
        self.store = self.sink.store
        self.stop = asyncio.Event()
        self.pool = DbPool(settings.db, settings.db_connections, f"scanfill worker {self.id}", settings.db_retry_s,
                           after_outage=self.store.refuse_if_emptied, stop=self.stop)  # fmt: skip
        # the heartbeat's own connection: commits waiting on a frozen loader's locks must not starve
        # the beat that renews this worker's leases and ends that loader's commit
        self.beat_pool = DbPool(settings.db, 1, f"scanfill worker {self.id} (heartbeat)", settings.db_retry_s,
                                stop=self.stop)  # fmt: skip
        self._failed: list[str] = []
        self._rollbacks: dict[tuple[str, str], int] = {}  # (slice, cursor) -> commits rolled back there
        self._dead: list[str] = []
        self._bytes_per_item: float | None = None  # running estimate over every page of this process
        self._held_per_item: float | None = None  # what an item weighs decoded (rows, contract facts)
        self.budget = ByteBudget(settings.memory_mb * 1024 * 1024)

    # ----- database plumbing --------------------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.pool.call(fn, *args)  # type: ignore[no-any-return]

    # ----- main loop ----------------------------------------------------------------------------

    async def run(self) -> WorkerReport:
        t0 = time.monotonic()
        await self.pool.open()
        await self.beat_pool.open()
        await self.db(self._register)
        self._dead = await self.db(self.store.mark_dead_local_workers, self.id)
        bg = [asyncio.create_task(self._heartbeat())]
        if self.s.rescan_s > 0:
            bg.append(asyncio.create_task(self._rescan()))
        try:
            async with ScanClient(self.s.scan, on_request=getattr(self.hooks, "on_request", None)) as client:
                self.client = client
                record = partial(self.db, self.store.record_disagreement)  # (scan, request, ids) -> stored
                self.pipeline = Pipeline(client, self.s.agree, record, self.hooks,
                                         PipelineReport(disagreements=self.report.disagreements),
                                         facts=self.s.contract_state)
                tasks = [self._guarded_slot(k) for k in range(self.s.concurrency)]
                if self.s.imports:
                    tasks.append(self._guarded(self._imports, "import updates"))
                try:
                    await asyncio.gather(*tasks)
                finally:
                    st, r = client.stats, self.report
                    r.requests, r.retries, r.hedges, r.hedges_won = st.requests, st.retries, st.hedges, st.hedges_won
                    r.memory_peak, r.memory_waits = self.budget.stats.peak, self.budget.stats.waits
                    r.malformed = self.pipeline.report.malformed
        finally:
            for task in bg:
                task.cancel()
            await finish_lake(self.sink)
            self.report.seconds = time.monotonic() - t0
            self.report.stopped = self.stop.is_set()
            try:
                await self.db(self._unregister)
            except (psycopg.Error, DatabaseUnavailable) as exc:
                log.warning("could not record the worker's stop: %s", exc)
            self.pool.close()
            self.beat_pool.close()
        return self.report

    async def _guarded_slot(self, k: int) -> None:
        await self._guarded(lambda: self._slot(k), f"slot {k}")

    async def _guarded(self, fn: Callable[[], Any], what: str) -> None:
        """An unexpected error stops this worker gracefully: other slots finish their commits."""
        try:
            await fn()
        except (DatabaseUnavailable, UnloggedLost) as exc:
            log.error("%s", exc)
            self.report.failures.append(str(exc))
            self.stop.set()
        except LakeUnwritable as exc:  # one line, once: every slot meets the same lake
            if str(exc) not in self.report.failures:
                log.error("%s", exc)
                self.report.failures.append(str(exc))
            self.stop.set()
        except Exception as exc:
            log.exception("worker %s failed", what)
            self.report.failures.append(f"unexpected error in {what}: {type(exc).__name__}: {exc}")
            self.stop.set()

    async def _imports(self) -> None:
        """Import updates, one migration at a time, paged by update id with the same leases and
        commit-with-cursor transactions as the time slices."""
        store = self.store
        while not self.stop.is_set():
            got = await self.db(store.claim_import, self.id, self.s.lease_s, self.leases.share)
            if got is None:
                if await self.db(store.imports_open) == 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=self.s.poll_s)
                continue
            lease, after = got
            m = int(lease.key)
            urls = self.complete_urls.get(m)
            try:
                while not self.stop.is_set():
                    batch = await self.pipeline.imports(m, after, self.s.page_size, set(urls) if urls else None)
                    done = not batch.updates
                    after = await self.db(self.sink.commit_imports, lease, after, batch, done, self.s.lease_s)
                    self.report.updates += len(batch.updates)
                    self.report.events += batch.events
                    self.report.bytes += batch.nbytes
                    if done:
                        break
            except (ScanError, MalformedPage, Fenced) as exc:
                msg = f"import updates of migration {m} (after {after!r}): {exc}"
                log.error("%s", msg)
                if not isinstance(exc, Fenced):
                    self.report.failures.append(msg)
                    return
            finally:
                await self.db(store.release, lease)

    async def _slot(self, k: int) -> None:
        while not self.stop.is_set():
            claim = await self.db(self.leases.claim, self._failed, self._dead)
            if claim is None:
                claim = await self.db(self.leases.split, self._failed)
                if claim is not None:
                    self.report.splits += 1
            if claim is None:
                open_slices, soonest = await self.db(self.leases.remaining)
                if open_slices == 0 or open_slices <= len(self._failed):
                    return
                # other workers hold the rest: wait for a lease to expire or a slice to become splittable
                idle = min(self.s.poll_s, max(0.05, soonest or self.s.poll_s))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=idle)
                continue
            if claim.taken_over_from:
                self.report.takeovers += 1
                log.warning("took over %s from %s", claim.cursor_name, claim.taken_over_from)
                if self.hooks is not None:
                    self.hooks.on_takeover()
            try:
                await self._load_slice(claim)
            except Fenced as exc:
                self.report.fenced += 1
                log.warning("%s", exc)
            except psycopg.errors.UniqueViolation as exc:
                # the page holds an id already stored: the scan reuses ids (or overlaps windows).
                # Retrying cannot help and storing it would overwrite history: the slice stops here.
                await self._slice_failed(claim, f"the scan served an update or event id that is already stored "
                                          f"({str(exc).strip().splitlines()[-1]}): a scan reusing ids with other "
                                          "content. Nothing of that page was stored; check the scan "
                                          "(`scanfill verify --against-scan`, `run --agree 2`)")  # fmt: skip
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if db_error_kind(exc) != "resource":
                    # an error of the moment (the sink turns what recurs into Unstorable): the commit's
                    # transaction was rolled back (e.g. the server ended it after this worker froze
                    # mid-commit), nothing of it is stored, the slice goes back to the pool. The same
                    # page rolled back again and again is given up on all the same: never without end.
                    self.report.fenced += 1
                    key = (claim.cursor_name, claim.last_before)
                    self._rollbacks[key] = self._rollbacks.get(key, 0) + 1
                    if self._rollbacks[key] >= ROLLBACK_LIMIT:
                        await self._slice_failed(claim, f"the database rolled back the commit after cursor (before) "
                                                        f"{claim.last_before} {ROLLBACK_LIMIT} times in a row "
                                                        f"(SQLSTATE {exc.sqlstate}: {first}); nothing of that page "
                                                        "was stored. Check the server's log for why; run the same "
                                                        "command again to resume the slice")  # fmt: skip
                        continue
                    log.warning("slice %s: commit rolled back by the database (%s); it will be resumed",
                                claim.cursor_name, first)  # fmt: skip
                    continue
                # disk full, out of memory: retrying now only fails again
                msg = (f"the database server ran out of a resource ({type(exc).__name__}: "
                       f"{first}) while committing slice {claim.cursor_name}; nothing of "
                       "that commit was stored. Free the resource (disk space, memory; or mend the permissions of the "
                       "server's files it names) and run the same command "
                       "again: it resumes from the last committed page")  # fmt: skip
                log.error("%s", msg)
                self.report.failures.append(msg)
                self.stop.set()
            except (ScanError, MalformedPage) as exc:
                await self._slice_failed(claim, str(exc))
            finally:
                try:
                    await self.db(self.leases.release, claim)
                except psycopg.Error as exc:
                    log.warning("could not release %s (it expires by itself): %s", claim.cursor_name, exc)

    async def _slice_failed(self, claim: Claim, why: str) -> None:
        """A slice that retrying cannot help: said, reported, recorded (its days are a gap, with why,
        until a commit on it), and not claimed again by this worker."""
        msg = f"slice {claim.cursor_name} (migration {claim.migration_id}, {claim.synchronizer_id}): {why}"
        log.error("%s", msg)
        self.report.failures.append(msg)
        self._failed.append(claim.cursor_name)
        try:
            await self.db(self.store.slice_failed, claim.cursor_name, why)
        except (psycopg.Error, DatabaseUnavailable) as exc:
            log.warning("could not record that %s failed: %s", claim.cursor_name, exc)

    async def _fetch(self, claim: Claim, before: str, lo_us: int, count: list[int]) -> Batch:
        """One page of the slice through the pipeline (retries, shrinking, agreement, checks)."""
        urls = self.complete_urls.get(claim.migration_id)
        return await self.pipeline.backward(claim.migration_id, claim.synchronizer_id, before, lo_us, count,
                                            set(urls) if urls else None, lean=self.s.update_json == "envelope")  # fmt: skip

    def _page_count(self) -> int:
        """Items per request: the configured page size, fewer when updates are heavy, so that a page
        weighs at most `page_mb` and every slice's three pages fit the memory budget together."""
        weight = min(self.s.page_mb * 1e6, self.budget.page_share(self.s.concurrency))
        if self._bytes_per_item is None:  # no estimate yet: a modest first page
            return max(1, min(self.s.page_size, 100, int(weight // FIRST_GUESS_BYTES)))
        fit = int(2 * weight / max(1.0, self._bytes_per_item + (self._held_per_item or self._bytes_per_item)))
        return max(1, min(self.s.page_size, fit))

    def _page_bytes(self, count: int) -> int:
        """What the next page of `count` items is expected to weigh (reserved before asking): its
        body and its decoded rows (with their contract facts) exist at once while it is decoded."""
        body = self._bytes_per_item or FIRST_GUESS_BYTES
        return int(count * (body + (self._held_per_item or body)))

    def _observe(self, batch: Batch) -> None:
        if batch.items:
            bpi = batch.nbytes / batch.items
            old = self._bytes_per_item
            self._bytes_per_item = bpi if old is None else 0.7 * old + 0.3 * bpi
            held = (batch.framed_bytes + PER_UPDATE_BYTES * batch.items) / batch.items
            was = self._held_per_item
            self._held_per_item = held if was is None else 0.7 * was + 0.3 * held

    async def _load_slice(self, claim: Claim) -> None:
        """Page one slice backwards from its cursor to its lower bound.

        Invariant: `committed` is the cursor the database holds (or will hold once the commit in
        flight lands), `before` is where the next request starts, and every update in
        [before, committed) is in `pending` or in the commit in flight, exactly once. So at most
        one commit is in flight per slice, each commit moves the cursor from `committed` to the
        oldest update of its batch (checked under the row lock, see Sink.commit), and a split that
        raised the lower bound meanwhile is honoured by the commit (it drops older rows and ends
        the slice). Leaving early (stop, error) loses nothing: pending rows are simply fetched again
        by whoever resumes the slice from the database's cursor.
        """
        lease = claim.lease(self.id)
        committed = claim.last_before  # what the database holds
        before = claim.last_before  # where the next request starts
        lo = claim.lo_us
        count = [self._page_count()]
        pending = Batch()
        pages = 0
        inflight: asyncio.Task[Any] | None = None
        held = 0  # budget bytes held by `pending` (a commit in flight gives its own back when it ends)
        try:
            while True:
                if self.stop.is_set():
                    break
                reserved = await self.budget.acquire(self._page_bytes(count[0]))
                try:
                    batch = await self._fetch(claim, before, lo, count)
                except BaseException:
                    self.budget.release(reserved)
                    raise
                held += self.budget.resize(reserved, batch.framed_bytes + PER_UPDATE_BYTES * batch.items)
                self._observe(batch)
                reached_end = batch.items == 0 or batch.oldest_us == lo
                pending.extend(batch)
                pages += 1
                if batch.oldest is not None:
                    before = batch.oldest
                count[0] = min(self._page_count(), count[0] * 2)  # follow the size estimate; recover after a 503
                if pending.rows < self.s.batch_rows and not reached_end and self.budget.fits(self._page_bytes(count[0])):
                    continue  # else commit now: rows held while waiting for the budget would hold it forever
                if inflight is not None:
                    res = await inflight
                    committed = res.last_before
                    lo = res.lo_us
                    if res.complete:
                        inflight = None
                        self.report.slices_done += 1
                        return
                inflight = asyncio.create_task(self._commit(lease, committed, pending, pages, reached_end, held))
                held = 0
                committed = pending.oldest or committed
                pending, pages = Batch(), 0
                if reached_end:
                    res = await inflight
                    inflight = None
                    if res.complete:
                        self.report.slices_done += 1
                    return
            if inflight is not None:
                await inflight
        finally:
            if inflight is not None and not inflight.done():
                # leaving on an error: let the commit in flight finish (or fail) before the lease goes
                with contextlib.suppress(Exception):
                    await inflight
            self.budget.release(held)

    async def _commit(self, lease: Lease, expected: str, batch: Batch, pages: int, end: bool, held: int) -> Any:
        """Commit a batch; the budget bytes it `held` are given back when the commit ends, either way."""
        t0 = time.monotonic()
        try:
            res = await self.db(self.sink.commit, lease, expected, batch, pages, end, self.s.lease_s)
        finally:
            self.budget.release(held)
        r = self.report
        r.updates += len(batch.updates)
        r.events += batch.events
        r.pages += pages
        r.bytes += batch.nbytes
        r.commits += 1
        if self.hooks is not None:
            self.hooks.on_commit(str(lease.key), batch, pages, time.monotonic() - t0, res)
        return res

    # ----- bookkeeping --------------------------------------------------------------------------

    def _register(self, conn: Conn) -> None:
        with self.store.transaction(conn):
            self.store.worker_register(conn, self.id)
            self._sample(conn)  # a zero point, so even a short run has a rate

    def _unregister(self, conn: Conn) -> None:
        r = self.report
        state = WorkerState.FAILED if r.failures else WorkerState.STOPPED if self.stop.is_set() else WorkerState.DONE
        with self.store.transaction(conn):
            self.store.worker_stopped(conn, self.id, state, r.rows)
            self._sample(conn)

    def _sample(self, conn: Conn) -> None:
        r = self.report
        self.store.progress_sample(conn, self.id, r.updates, r.events, r.bytes, r.pages)

    def _beat(self, conn: Conn) -> bool:
        """Renew every lease (slices and import cursors), record progress, and say whether an
        operator asked every worker to stop."""
        self.leases.renew(conn)
        for frozen in self.store.reap_frozen_commits(conn, self.s.lease_s):
            log.warning("ended the commit of a frozen loader, %s: its slice can be taken over", frozen)
        with self.store.transaction(conn):
            self.store.worker_heartbeat(conn, self.id, self.report.rows)
            self._sample(conn)
            return self.store.stop_requested(conn)

    async def _rescan(self) -> None:
        """Long runs outlive the scan list: read `/v0/scans` again now and then and use new scans
        (probed first; they serve only migrations they report complete, like the others)."""
        from scanfill.coord.scans import discover_scans

        while True:
            await asyncio.sleep(self.s.rescan_s)
            try:
                usable, _ = await discover_scans(self.s.scan)
            except Exception as exc:  # a failed refresh keeps the scans in use
                log.warning("refreshing the scan list failed (keeping the current one): %s", exc)
                continue
            client = getattr(self, "client", None)
            if client is None:
                continue
            new = client.add(usable)
            if new:
                log.warning("new scans listed in /v0/scans: %s", ", ".join(map(redact_url, new)))
                await self._admit(client, new)

    async def _admit(self, client: ScanClient, urls: list[str]) -> None:
        """A new scan serves a migration's pages once its own migration-info reports that
        migration complete, like the scans found at the start."""
        import orjson

        for url in urls:
            for m, complete in self.complete_urls.items():
                try:
                    data, _ = await client.request("POST", ep.MIGRATION_INFO, ep.migration_info(m), only={url},
                                                   what=f"migration-info({m}) at {redact_url(url)}")  # fmt: skip
                except ScanError:
                    continue
                if orjson.loads(data).get("complete"):
                    complete.add(url)

    async def _heartbeat(self) -> None:
        interval = max(0.2, min(self.s.sample_s, self.s.lease_s / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.beat_pool.call(self._beat):
                    log.warning("stop requested through the database (scanfill abort): stopping")
                    self.stop.set()
            except psycopg.Error as exc:
                log.warning("heartbeat failed (will retry): %s", exc)

