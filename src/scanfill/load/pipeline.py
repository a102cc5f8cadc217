"""The one page pipeline both directions drive: ask, check, decode.

The backfill (`load.worker`) and the follower (`load.follow`) only decide which window to ask for
next and commit what comes back (`load.sink`). Everything between a request and a committed batch
is here, written once:

* **ask**: one scan (with the client's retries, failover and hedging), or K scans that must agree
  (`load.agree`); a 503 from a scan under agreement is asked again before it counts against it.
* **shrink**: a 503 is Scan's own timeout for a page too large: ask for half as many.
* **check and decode** against the request (migration, synchronizer, window, order: `load.decode`)
  *and* against what the scans know (`Known`): an item of a migration no scan announces, of a
  synchronizer none reports for it, or past the newest record time any scan reports refuses the
  page whole, so a cursor never moves to a position no scan can serve.
* **garbage** (HTML with 200, truncated JSON, a page that breaks the checks): the scan that served
  it is benched and the page is asked again, of another scan where there is one; only a page that
  keeps coming back malformed is an error.
* **disagreements**: named, benched, recorded in `scan_disagreements`, reported.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scanfill.errors import MalformedPage, ScanError, ScanHTTPError
from scanfill.load.agree import Agreed, agreed_page, agreed_prefix
from scanfill.load.decode import Batch, EventsPage, decode_events_page, decode_items, decode_page, decode_stream_page
from scanfill.scan import endpoints as ep
from scanfill.scan.client import ScanClient, redact_url
from scanfill.timeutil import format_us, parse_us

log = logging.getLogger("scanfill.load.pipeline")
T = TypeVar("T")
MALFORMED_ATTEMPTS = 3  # a page malformed this many times in a row (each from another scan, if any) is an error

Position = tuple[str, int, str | None, int]  # update id, migration, synchronizer (None: not said), record time us
Recorder = Callable[[str, str, list[str]], Awaitable[None]]  # (scan, request, differing ids) -> stored


class Known:
    """What the scans have announced: each migration's synchronizers and newest record time, read
    from every scan's migration-info and read again only when a page goes beyond it."""

    def __init__(self, client: ScanClient) -> None:
        self.client = client
        self.synchronizers: dict[int, set[str]] = {}
        self.heads: dict[int, int] = {}
        self._lock = asyncio.Lock()

    def _covers(self, m: int, syncs: set[str], top: int) -> bool:
        return m in self.heads and syncs <= self.synchronizers[m] and top <= self.heads[m]

    async def refresh(self, m: int) -> None:
        infos = await self.client.migration_info_all(m)
        answered = False
        for got in infos.values():
            if isinstance(got, ScanHTTPError) and got.status == 404:
                answered = True  # "no data for migration m": an answer
            if not isinstance(got, dict):
                continue
            answered = True
            for r in got.get("record_time_range") or []:
                try:
                    top = parse_us(str(r["max"]))
                    sync = str(r["synchronizer_id"])
                except (KeyError, ValueError, TypeError):
                    continue
                self.synchronizers.setdefault(m, set()).add(sync)
                self.heads[m] = max(self.heads.get(m, top), top)
        if not answered:
            errors = "; ".join(f"{redact_url(u)}: {str(e)[:120]}" for u, e in infos.items())
            raise ScanError(f"no scan answered migration-info({m}), so a page reaching it cannot be checked: {errors}")

    async def check(self, positions: list[Position], what: str) -> None:
        """Refuse (MalformedPage) a page holding a position no scan can serve."""
        by_m: dict[int, tuple[set[str], int, str]] = {}
        for uid, m, sync, t in positions:
            syncs, top, _ = by_m.setdefault(m, (set(), t, uid))
            if sync is not None:
                syncs.add(sync)
            if t >= top:
                by_m[m] = (syncs, t, uid)
        for m, (syncs, top, uid) in sorted(by_m.items()):
            if self._covers(m, syncs, top):
                continue
            async with self._lock:
                if not self._covers(m, syncs, top):
                    await self.refresh(m)
            if m not in self.heads:
                raise MalformedPage(f"{what}: update {uid} is in migration {m}, which no scan announces "
                                    "(migration-info has no data for it)")  # fmt: skip
            unknown = sorted(syncs - self.synchronizers[m])
            if unknown:
                raise MalformedPage(f"{what}: an update of migration {m} names synchronizer {unknown[0]}, which no "
                                    f"scan reports for that migration")  # fmt: skip
            if top > self.heads[m]:
                raise MalformedPage(f"{what}: update {uid} at {format_us(top)} lies beyond the newest record time "
                                    f"any scan reports for migration {m} ({format_us(self.heads[m])})")  # fmt: skip


@dataclass
class Ask:
    """One request through the pipeline: where, what body for a given count, how K scans agree on
    it (`page`: the whole page; `prefix`: the longest common run of a forward page, under the lowest
    head), and whether a 503 may shrink it."""

    path: str
    body: Callable[[int], dict[str, Any]]
    count: list[int]  # shared with the driver: a shrink is remembered for its next request
    what: str
    agreement: str = "page"  # "page" | "prefix"
    key: str = "transactions"  # the item list of a forward page, for prefix agreement
    only: set[str] | None = None
    shrinkable: bool = True
    cursor: str = ""  # where the driver stands, as the user reads it in an error ("cursor (before) ...")


@dataclass
class PipelineReport:
    pages: int = 0
    malformed: int = 0  # pages refused and asked again
    shrinks: int = 0
    disagreements: list[str] = field(default_factory=list)


class Pipeline:
    def __init__(self, client: ScanClient, agree: int = 1, record: Recorder | None = None, hooks: Any = None,
                 report: PipelineReport | None = None, facts: bool = True) -> None:  # fmt: skip
        self.client = client
        self.facts = facts  # decode what pages say about contracts (contract state is kept)
        self.agree = agree
        self.record = record
        self.hooks = hooks
        self.known = Known(client)
        self.report = report or PipelineReport()

    # ----- the four kinds of page -----------------------------------------------------------------

    async def backward(self, m: int, sync: str, before: str, lo_us: int, count: list[int], urls: set[str] | None,
                       lean: bool = False) -> Batch:  # fmt: skip
        """An updates-before page of one slice: [lo, before), newest first."""
        ask = Ask(ep.UPDATES_BEFORE, lambda n: ep.updates_before(m, sync, before, lo_us, n), count,
                  f"updates-before(migration {m}, {sync}, before {before}, at_or_after {format_us(lo_us)})",
                  only=urls, cursor=f"cursor (before) {before}")  # fmt: skip
        before_us = parse_us(before)
        return await self._page(ask, lambda body: decode_page(body, m, sync, before_us, lo_us, lean=lean,
                                                                facts=self.facts))

    async def scan_items(self, m: int, sync: str, before_us: int, lo_us: int, url: str) -> list[dict[str, Any]]:
        """An updates-before page of one scan as it serves it (items, not rows): what `verify`
        compares with the stored copy, scan by scan."""
        before = format_us(before_us)
        ask = Ask(ep.UPDATES_BEFORE, lambda n: ep.updates_before(m, sync, before, lo_us, n), [1000],
                  f"updates-before(migration {m}, {sync}, before {before}) at {redact_url(url)}", only={url})  # fmt: skip
        return await self._page(ask, decode_items)

    async def imports(self, m: int, after: str, limit: int, urls: set[str] | None) -> Batch:
        """An import-updates page of one migration, by update id, ascending."""
        ask = Ask(ep.IMPORT_UPDATES, lambda n: ep.import_updates(m, after, n), [limit],
                  f"import-updates(migration {m}, after {after!r})", only=urls, shrinkable=False,
                  cursor=f"cursor (after update id) {after!r}")  # fmt: skip

        def decode(body: bytes) -> Batch:
            batch = decode_page(body, m, "", imports=True)
            ids = [u.update_id for u in batch.updates]
            if any(a >= b for a, b in zip([after, *ids], ids, strict=False)):
                raise MalformedPage(f"import updates of migration {m} after {after!r} are not ascending")
            return batch

        return await self._page(ask, decode)

    async def forward(self, after: tuple[int, int] | None, size: int, lean: bool = False) -> Batch:
        """A `/v2/updates` page after (migration, record time), checked against what the scans know."""
        ask = Ask(ep.UPDATES_V2, lambda n: ep.forward(after, n), [size], f"POST {ep.UPDATES_V2} after {after}",
                  agreement="prefix", shrinkable=False)  # fmt: skip

        async def check(batch: Batch) -> None:
            await self.known.check([(u.update_id, u.migration_id, u.synchronizer_id, u.t_us) for u in batch.updates],
                                   ask.what)  # fmt: skip

        return await self._page(ask, lambda body: decode_stream_page(body, after, lean=lean, facts=self.facts),
                                check)

    async def events(self, after: tuple[int, int] | None, size: int) -> EventsPage:
        """A `/v0/events` page (verdicts, traffic summaries, app activity), checked like updates."""
        ask = Ask(ep.EVENTS, lambda n: ep.forward(after, n), [size], f"POST {ep.EVENTS} after {after}",
                  agreement="prefix", key="events", shrinkable=False)  # fmt: skip

        async def check(page: EventsPage) -> None:
            await self.known.check(page.positions, ask.what)

        return await self._page(ask, lambda body: decode_events_page(body, after), check)

    # ----- the steps ----------------------------------------------------------------------------

    async def _page(self, ask: Ask, decode: Callable[[bytes], T],
                    check: Callable[[T], Awaitable[None]] | None = None) -> T:  # fmt: skip
        malformed = 0
        for _ in range(self.client.config.max_attempts):
            try:
                body, url = await self._ask(ask)
            except ScanHTTPError as exc:
                if exc.status != 503 or not ask.shrinkable:
                    raise
                ask.count[0] = max(1, ask.count[0] // 2)
                self.report.shrinks += 1
                log.info("503 from scan: %s now asks for %d", ask.what, ask.count[0])
                continue
            try:
                got = decode(body)
                if check is not None:
                    await check(got)
                self.report.pages += 1
                return got
            except MalformedPage as exc:
                malformed += 1
                self.report.malformed += 1
                if url is not None:
                    self.client.bench(url, self.client.config.failure_cooldown_s)
                if self.hooks is not None and hasattr(self.hooks, "on_refused"):
                    self.hooks.on_refused(redact_url(url) if url else "agreed")
                where = f" from {redact_url(url)}" if url else " agreed by the scans"
                if malformed >= MALFORMED_ATTEMPTS:
                    raise type(exc)(f"{ask.cursor or ask.what}, count {ask.count[0]}: malformed page{where}, "
                                        f"{malformed} times in a row: {exc}; nothing of it was stored") from None  # fmt: skip
                log.warning("malformed page%s for %s (%s); asking again", where, ask.what, exc)
                cap = self.client.config.backoff_base_s * 2**malformed
                await asyncio.sleep(random.uniform(0, cap))
        raise ScanError(f"scan kept answering 503 for {ask.what}, even at count {ask.count[0]}")

    async def _ask(self, ask: Ask) -> tuple[bytes, str | None]:
        """The page's bytes and the scan that served them (None: several agreed)."""
        body = ask.body(ask.count[0])
        if self.agree <= 1:
            return await self.client.request("POST", ask.path, body, only=ask.only, what=ask.what,
                                             raise_503=ask.shrinkable)  # fmt: skip

        async def one(url: str) -> bytes:
            data, _ = await self.client.request("POST", ask.path, body, only={url}, what=ask.what, raise_503=True)
            return data

        urls = sorted(ask.only or self.client.urls)
        got: Agreed
        if ask.agreement == "prefix":
            got = await agreed_prefix(one, urls, self.agree, ask.what, key=ask.key)
        else:
            got = await agreed_page(one, urls, self.agree, ask.what)
        await self._disagreed(got, ask.what)
        return got.body, None

    async def _disagreed(self, got: Agreed, request: str) -> None:
        for d in got.disagreements:
            url = redact_url(d.url)
            msg = (f"{url} served a different page for {request}: {len(d.differing_ids)} update(s) differ (e.g. "
                   f"{', '.join(d.differing_ids[:3])}); benched, the page of {len(got.urls)} agreeing scans is used")  # fmt: skip
            log.warning("%s", msg)
            self.report.disagreements.append(msg)
            self.client.bench(d.url, self.client.config.forbidden_cooldown_s)
            if self.record is not None:
                await self.record(url, request, list(d.differing_ids))
            if self.hooks is not None and hasattr(self.hooks, "on_disagreement"):
                self.hooks.on_disagreement(url)
