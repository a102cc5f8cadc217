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
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import orjson
import psycopg

from scanfill.coord.discovery import current_migration
from scanfill.coord.store import FollowLease, Store
from scanfill.db import Database, DbPool
from scanfill.errors import DatabaseUnavailable, Fenced, MalformedPage, ScanError, ScanHTTPError, UnloggedLost
from scanfill.load.agree import agreed_prefix
from scanfill.load.decode import decode_stream_page
from scanfill.load.sink import Sink
from scanfill.load.source import ScanClient, ScanConfig, redact_url
from scanfill.timeutil import format_us, parse_us, us_to_dt

log = logging.getLogger("scanfill.follow")
T = TypeVar("T")
STREAMS = ("updates", "events")


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


class Follower:
    def __init__(self, settings: FollowSettings, hooks: Any = None) -> None:
        self.s = settings
        self.id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.report = FollowReport(self.id)
        self.hooks = hooks
        self.sink = Sink(settings.db)
        self.store: Store = self.sink.store
        self.stop = asyncio.Event()
        self.caught_up = {name: False for name in STREAMS}
        self.pool = DbPool(settings.db, 2, f"scanfill follow {self.id}", settings.db_retry_s,
                           after_outage=self.store.refuse_if_emptied)  # fmt: skip
        self.lease: FollowLease | None = None

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.pool.call(fn, *args)  # type: ignore[no-any-return]

    async def run(self) -> FollowReport:
        await self.pool.open()
        try:
            async with ScanClient(self.s.scan) as client:
                self.client = client
                if not await self._become_leader():
                    return self.report
                beat = asyncio.create_task(self._heartbeat())
                try:
                    tasks = [self._guarded(self._updates, "updates")]
                    if self.s.events:
                        tasks.append(self._guarded(self._events, "events"))
                    await asyncio.gather(*tasks)
                finally:
                    beat.cancel()
                    if self.lease is not None:
                        with contextlib.suppress(psycopg.Error):
                            await self.db(self.store.follow_release, self.lease)
        finally:
            self.report.stopped = self.stop.is_set()
            self.pool.close()
        return self.report

    async def _guarded(self, fn: Callable[[], Any], what: str) -> None:
        try:
            await fn()
        except Fenced as exc:
            log.warning("follower lost its lease (%s): another follower carries on", exc)
            self.stop.set()
        except (ScanError, MalformedPage, DatabaseUnavailable, UnloggedLost) as exc:
            msg = f"follow {what}: {exc}"
            log.error("%s", msg)
            self.report.failures.append(msg)
            self.stop.set()

    # ----- the lease: one active follower, the others wait as hot standbys ----------------------

    async def _become_leader(self) -> bool:
        waited = False
        while not self.stop.is_set():
            dead = await self.db(self.store.dead_local_followers, socket.gethostname(), self.id)
            got = await self.db(self.store.follow_claim, self.id, socket.gethostname(), os.getpid(),
                                self.s.lease_s, dead)  # fmt: skip
            if got is not None:
                self.lease, previous = got
                self.report.took_over = previous is not None and previous != self.id
                if waited or self.report.took_over:
                    log.warning("follower %s is now active (took over from %s)", self.id, previous)
                return True
            if not waited:
                log.info("another follower is active: %s waits as a hot standby", self.id)
                waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=min(1.0, self.s.lease_s / 5))
        return False

    async def _heartbeat(self) -> None:
        assert self.lease is not None
        while True:
            await asyncio.sleep(max(0.2, self.s.lease_s / 4))
            try:
                if not await self.db(self.store.follow_renew, self.lease, self.s.lease_s, self.report.updates,
                                     self.report.events):  # fmt: skip
                    log.warning("follower lease lost: stopping")
                    self.stop.set()
                    return
            except psycopg.Error as exc:
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
        info = await self.client.post_json("/v0/backfilling/migration-info", {"migration_id": m})
        tops = [parse_us(r["max"]) for r in info.get("record_time_range") or []]
        return (m, max(tops)) if tops else (m, 0)

    async def _page(self, path: str, after: tuple[int, int] | None, size: int, agree: bool = False) -> bytes:
        body: dict[str, Any] = {"page_size": size, "daml_value_encoding": "protobuf_json"}
        if after is not None:
            # re-read the boundary microsecond: another synchronizer's update may share it
            body["after"] = {"after_migration_id": after[0], "after_record_time": format_us(after[1] - 1)}
        what = f"POST {path} after {after}"
        if not agree or self.s.agree <= 1:
            data, _ = await self.client.request("POST", path, body, what=what)
            return data

        async def one(url: str) -> bytes:
            data, _ = await self.client.request("POST", path, body, only={url}, what=what)
            return data

        got = await agreed_prefix(one, self.client.urls, self.s.agree, what)
        for d in got.disagreements:
            msg = f"{redact_url(d.url)} served other updates for {what} (e.g. {', '.join(d.differing_ids[:3])})"
            log.warning("%s; benched", msg)
            self.report.disagreements.append(msg)
            self.client.bench(d.url, self.s.scan.forbidden_cooldown_s)
        return got.body

    async def _updates(self) -> None:
        """Page k+1 is fetched and decoded while page k commits: its `after` is known as soon as
        page k is decoded, so a catch-up keeps both the scan and the database busy."""
        pos = await self._start_position("updates")
        lean = self.s.update_json == "envelope"
        size = self.s.page_size

        async def fetch(after: tuple[int, int] | None, n: int) -> Any:
            return decode_stream_page(await self._page("/v2/updates", after, n, agree=True), after, lean=lean)

        ahead: asyncio.Task[Any] | None = None
        try:
            while not self.stop.is_set():
                batch = await (ahead if ahead is not None else fetch(pos, size))
                ahead = None
                if batch.items == size and batch.last_position == pos:
                    size = min(1000, size * 2)  # a full page inside the re-read microsecond: get past it
                    continue
                full = batch.items == size
                size = self.s.page_size
                if full:
                    ahead = asyncio.create_task(fetch(batch.last_position, size))
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
                body = await self._page("/v0/events", pos, size)
            except ScanHTTPError as exc:
                if exc.status == 404:
                    log.warning("this scan has no /v0/events (an older release): verdicts are not kept")
                    return
                raise
            rows, last, served = decode_events_page(body, pos)
            if served == size and last == pos:
                size = min(1000, size * 2)
                continue
            size = self.s.page_size
            assert self.lease is not None
            if served:
                self.report.scan_events += await self.db(self.store.commit_scan_events, self.lease, last, rows,
                                                         self.s.lease_s)  # fmt: skip
                pos = last
            if served < size:
                self.caught_up["events"] = True
                if self.s.once:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=self.s.poll_s)


_ABSENT = msgspec.Raw(b"")


class _EventItem(msgspec.Struct):
    update: msgspec.Raw = _ABSENT  # `null` arrives as the raw bytes b"null"
    verdict: msgspec.Raw = _ABSENT
    traffic_summary: msgspec.Raw = _ABSENT
    app_activity_records: msgspec.Raw = _ABSENT


class _EventsPage(msgspec.Struct):
    events: list[_EventItem]


class _Where(msgspec.Struct):
    update_id: str
    record_time: str
    migration_id: int | None = None
    synchronizer_id: str | None = None
    domain_id: str | None = None
    event: dict[str, Any] | None = None


_events_decoder = msgspec.json.Decoder(_EventsPage)
_where_decoder = msgspec.json.Decoder(_Where)


def _raw(v: msgspec.Raw) -> bytes | None:
    b = bytes(v)
    return None if not b or b == b"null" else b


def decode_events_page(
    body: bytes, after: tuple[int, int] | None
) -> tuple[list[tuple[Any, ...]], tuple[int, int], int]:
    """`scan_events` rows of a /v0/events page, the position of its last item, and how many items it had."""
    try:
        page = _events_decoder.decode(body)
        rows: list[tuple[Any, ...]] = []
        last = after or (-1, 0)
        for item in page.events:
            src = item.verdict if _raw(item.verdict) else item.update
            if not _raw(src):
                raise MalformedPage("an events item with neither an update nor a verdict")
            w = _where_decoder.decode(src)
            m = w.migration_id if w.migration_id is not None else int((w.event or {}).get("migration_id", -1))
            t = parse_us(w.record_time)
            if (m, t) < last:
                raise MalformedPage(f"events item {w.update_id} at {w.record_time} breaks ascending order")
            last = (m, t)
            if not (_raw(item.verdict) or _raw(item.traffic_summary) or _raw(item.app_activity_records)):
                continue  # a reassignment: nothing beyond the update, which the updates stream stores
            rows.append((w.update_id, m, w.domain_id or w.synchronizer_id, us_to_dt(t), _raw(item.verdict),
                         _raw(item.traffic_summary), _raw(item.app_activity_records)))  # fmt: skip
        return rows, last, len(page.events)
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise MalformedPage(f"not a valid /v0/events page: {exc}") from None


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
        return await follower.run()

    return asyncio.run(main())

