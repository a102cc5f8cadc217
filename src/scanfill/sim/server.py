"""The simulated Scan HTTP API (aiohttp), several scans over one ledger, with fault injection."""

from __future__ import annotations

import asyncio
import builtins
import gzip
import heapq
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from scanfill.sim import aggregates, corrupt
from scanfill.sim.acs import Invalid, NotFound, Snapshots
from scanfill.sim.config import FaultConfig, InstanceConfig, SimConfig
from scanfill.sim.economy import make_ledger
from scanfill.sim.ledger import Ledger, to_v1, to_v2
from scanfill.timeutil import MIN_US, TimestampError, format_trimmed, format_us, parse_us

PAGE_LIMIT = 1000
KEPT_BODIES = 50
DATA_PATHS = ("/v0/backfilling/updates-before", "/v2/updates", "/v1/updates", "/v0/backfilling/import-updates",
              "/v0/events")


class BadRequest(Exception):
    """A request Scan would answer with 400 `{"error": ...}`."""


class MalformedRequest(BadRequest):
    """A body that does not decode as the endpoint's request type: Scan's HTTP layer rejects it
    before any handler runs, with a `text/plain` 400 rather than an ErrorResponse."""


class Renderer:
    """Rendered update bytes, either all pre-rendered or kept in a byte-bounded LRU."""

    def __init__(self, ledger: Ledger, cache_bytes: int) -> None:
        self.ledger = ledger
        self.cache_bytes = cache_bytes
        self._lru: OrderedDict[tuple[int, int, int, str], bytes] = OrderedDict()
        self._size = 0
        self._pre: dict[tuple[int, int, str], list[bytes]] = {}

    def prerender(self) -> None:
        """Every update in the updates-before shape and the /v2 protobuf_json shape (the two that
        loaders read in bulk), so serving costs no generation."""
        for m in self.ledger.migration_ids():
            spec = self.ledger.specs[m]
            for s in range(spec.synchronizers):
                updates = [self.ledger.update(m, s, i) for i in range(spec.updates)]
                self._pre[(m, s, "v1")] = [orjson.dumps(u) for u in updates]
                self._pre[(m, s, "v2")] = [orjson.dumps(to_v2(u, False)) for u in updates]

    def item(self, m: int, s: int, i: int, shape: str = "v1") -> bytes:
        """Update i of (m, s) as served: `v1` (updates-before; /v1/updates in protobuf_json), `v1c`
        (/v1/updates in compact_json), `v2` (/v2/updates in protobuf_json), `v2c` (compact)."""
        pre = self._pre.get((m, s, shape))
        if pre is not None:
            return pre[i]
        key = (m, s, i, shape)
        got = self._lru.get(key)
        if got is not None:
            self._lru.move_to_end(key)
            return got
        u = self.ledger.update(m, s, i)
        if shape == "v1":
            data = orjson.dumps(u)
        elif shape == "v1c":
            data = orjson.dumps(to_v1(u, True))
        else:
            data = orjson.dumps(to_v2(u, shape == "v2c"))
        self._lru[key] = data
        self._size += len(data)
        while self._size > self.cache_bytes and self._lru:
            _, old = self._lru.popitem(last=False)
            self._size -= len(old)
        return data


@dataclass
class Stats:
    requests: int = 0
    pages: int = 0
    items: int = 0
    bytes: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    by_path: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, list[Any]] = field(default_factory=dict)  # the last request bodies per path

    def keep_body(self, path: str, body: builtins.bytes) -> None:
        """Clients' requests, so tests can hold them against the spec too."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = body.decode("utf-8", "replace")
        kept = self.bodies.setdefault(path, [])
        kept.append(parsed)
        del kept[:-KEPT_BODIES]


class TokenBucket:
    """`rps` requests a second, bursts of up to `rps`: how Scan's own limiter and an ingress count."""

    def __init__(self, rps: float) -> None:
        self.rps, self.tokens, self.last = rps, rps, time.monotonic()

    def take(self) -> bool:
        """One request's token, if there is one."""
        now = time.monotonic()
        self.tokens = min(self.rps, self.tokens + (now - self.last) * self.rps)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ScanInstance:
    """One scan: its own completeness, faults, counters and rate-limit buckets."""

    def __init__(self, sim: Simulation, index: int, config: InstanceConfig) -> None:
        self.sim = sim
        self.index = index
        self.config = config
        self.faults: FaultConfig = config.faults or sim.config.faults
        self.stats = Stats()
        self._rng = random.Random(self.faults.seed * 7919 + index)
        self._buckets: dict[str, TokenBucket] = {}  # per client, for `client_rps`
        self.public_url = ""
        self._egress_free = 0.0  # monotonic time the bandwidth cap lets the next chunk out
        self.served_items = 0  # items of the page just rendered, for `latency_per_1000_ms`
        self.subject_requests = 0
        self.corrupted = 0  # pages spoiled so far: the next one is spoiled the next way  # requests faults apply to: `every_N` schedules count these

    @property
    def complete(self) -> bool:
        return self.config.late_join <= 0

    def count(self, m: int, s: int) -> int:
        """Updates of (m, s) this scan has: the network's, less what it has not ingested yet."""
        return max(0, self.sim.count(m, s) - self.config.stale_updates)

    def min_index(self, m: int) -> int:
        return int(self.sim.ledger.specs[m].updates * self.config.late_join) if self.config.late_join > 0 else 0

    # ----- faults -------------------------------------------------------------------------------

    def _fault(self, name: str) -> bool:
        f = self.faults
        every = getattr(f, f"every_{name}")
        if every and self.subject_requests % every == 0:
            return True
        rate = getattr(f, f"rate_{name}")
        return bool(rate) and self._rng.random() < rate

    def _count(self, name: str) -> None:
        self.stats.faults[name] = self.stats.faults.get(name, 0) + 1

    def _rate_limited(self, client: str) -> bool:
        rps = self.faults.client_rps
        if rps <= 0:
            return False
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(rps)
        return not bucket.take()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/sim/"):
            return await handler(request)  # type: ignore[no-any-return]
        self.stats.requests += 1
        path = request.path.removeprefix("/api/scan")
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        if path in self.config.missing:
            # an older Scan release without this endpoint: the route does not exist
            return web.Response(status=404, text="The requested resource could not be found.", content_type="text/plain")
        if request.method == "POST":
            self.stats.keep_body(path, await request.read())
        f = self.faults
        subject = path in DATA_PATHS or not f.data_only
        if subject:
            self.subject_requests += 1
            client = request.headers.get("X-Client-Id") or (request.remote or "?")
            if self._rate_limited(client):
                self._count("rate_limit")
                return _too_many(f, retry_after=f.rate_limit_retry_after)
            if self.sim.network_limited():
                self._count("network_rate_limit")
                return _too_many(f, retry_after=False)
            if self._fault("hang"):
                self._count("hang")
                await asyncio.sleep(f.hang_s)
            if self._fault("429"):
                self._count("429")
                return _too_many(f, retry_after=f.retry_after_s > 0)
            if self._fault("503"):
                self._count("503")
                return _error(
                    503, f"The server is taking too long to respond to the ({request.method}) request at {request.path}"
                )
            if self._fault("502"):
                self._count("502")
                return _error(502, "Bad gateway: upstream scan connection failed")
            if self._fault("403"):
                self._count("403")
                return web.Response(
                    status=403,
                    content_type="text/html",
                    text="<html><body><h1>403 Forbidden</h1>IP not allow-listed</body></html>",
                )
            if f.latency_ms or f.jitter_ms:
                await asyncio.sleep((f.latency_ms + self._rng.random() * f.jitter_ms) / 1000)
        self.served_items = 0
        resp = await handler(request)
        if subject and f.latency_per_1000_ms and isinstance(resp, web.Response):
            await asyncio.sleep(self.served_items * f.latency_per_1000_ms / 1e6)
        if subject and isinstance(resp, web.Response) and resp.status == 200 and self._fault("drop"):
            self._count("drop")
            return await _drop_mid_body(request, resp)
        if subject and isinstance(resp, web.Response) and resp.status == 200 and self._fault("malformed"):
            self._count("malformed")
            good = resp.body if isinstance(resp.body, bytes) else b""
            # valid JSON, wrong shape: the first item's record time is not a timestamp
            return web.Response(
                body=good.replace(b'"record_time":"', b'"record_time":"garbage-', 1), content_type="application/json"
            )
        if subject and isinstance(resp, web.Response) and resp.status == 200 and self._fault("corrupt"):
            kinds = f.corrupt or tuple(corrupt.KINDS)
            for _ in kinds:  # the next way that applies to this page (an empty page cannot be swapped)
                kind = kinds[self.corrupted % len(kinds)]
                self.corrupted += 1
                spoiled = corrupt.spoil(kind, resp.body if isinstance(resp.body, bytes) else b"")
                if spoiled is not None:
                    self._count(f"corrupt_{kind}")
                    self._count(f"corrupt_at_{path}")
                    resp = web.Response(body=spoiled[0], content_type=spoiled[1])
                    break
        if f.gzip and isinstance(resp, web.Response) and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = resp.body
            if isinstance(body, bytes) and len(body) > 512:
                resp.body = gzip.compress(body, compresslevel=1)
                resp.headers["Content-Encoding"] = "gzip"
        if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            self.stats.bytes += len(resp.body)
            if f.bandwidth_mb_s and subject:
                return await self._paced(request, resp, resp.body)
        return resp  # type: ignore[no-any-return]

    async def _paced(self, request: web.Request, resp: web.Response, body: bytes) -> web.StreamResponse:
        """Send `body` no faster than this scan's egress cap allows, shared with its other responses."""
        out = web.StreamResponse(status=resp.status, headers=resp.headers)
        out.content_length = len(body)
        rate, view, chunk = self.faults.bandwidth_mb_s * 1e6, memoryview(body), 256 * 1024
        try:
            await out.prepare(request)
            for at in range(0, len(body), chunk):
                part = view[at : at + chunk]
                now = time.monotonic()
                self._egress_free = max(now, self._egress_free) + len(part) / rate
                await asyncio.sleep(self._egress_free - now)
                await out.write(part)
            await out.write_eof()
        except ConnectionResetError:  # the client went away (a hedged request answered elsewhere)
            self._count("client_gone")
        return out

    # ----- handlers -----------------------------------------------------------------------------

    async def migration_info(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        m = _int(body, "migration_id")
        ledger = self.sim.ledger
        if m not in ledger.specs:
            return _error(404, f"No data for migration {m}")
        spec = ledger.specs[m]
        ranges = []
        lo_i = self.min_index(m)
        for s in range(spec.synchronizers):
            n = self.count(m, s)
            if lo_i >= n:
                continue
            ranges.append(
                {
                    "synchronizer_id": ledger.synchronizer_id(s),
                    "min": format_trimmed(ledger.record_us(m, s, lo_i)),
                    "max": format_trimmed(ledger.record_us(m, s, n - 1)),
                }
            )
        imports = ledger.import_ids(m)
        return _ok(
            {
                "previous_migration_id": ledger.previous[m],
                "record_time_range": ranges,
                "last_import_update_id": imports[-1] if imports else None,
                "complete": self.complete,
                "import_updates_complete": self.complete,
            }
        )

    async def updates_before(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        m = _int(body, "migration_id")
        sync = _str(body, "synchronizer_id")
        if "::" not in sync:
            raise BadRequest(f"Invalid synchronizer id {sync!r}: expected <identifier>::<fingerprint>")
        before = _time(body, "before")
        after = _time(body, "at_or_after") if body.get("at_or_after") is not None else None
        count = _count(body, "count")
        if self.faults.max_page:
            count = min(count, self.faults.max_page)
        lost = self.config.unservable
        if lost and before > parse_us(lost[0]) and (after is None or after < parse_us(lost[1])):
            raise BadRequest(f"history between {lost[0]} and {lost[1]} is not available on this scan")
        ledger = self.sim.ledger
        s = ledger.sync_index(m, sync)
        items: list[bytes] = []
        if s is not None:
            lo = max(self.min_index(m), ledger.index_at_or_after(m, s, after) if after is not None else 0)
            hi = min(ledger.index_at_or_after(m, s, before), self.count(m, s))
            items = self._newest(m, s, lo, hi, count)
            if after is not None and after <= MIN_US and len(items) < count and before > MIN_US and s == 0:
                for cid in reversed(ledger.import_ids(m)):
                    if len(items) >= count:
                        break
                    items.append(orjson.dumps(ledger.import_update(m, cid)))
        return self._page(items)

    def _newest(self, m: int, s: int, lo: int, hi: int, count: int) -> list[bytes]:
        """Up to `count` updates of [lo, hi), newest first, as this scan serves them (a faulty
        scan alters or omits some)."""
        render, c = self.sim.renderer.item, self.config
        if not (c.alter_every or c.omit_every or c.reuse_id_every):
            return [render(m, s, i) for i in range(hi - 1, max(lo, hi - count) - 1, -1)]
        out: list[bytes] = []
        for i in range(hi - 1, lo - 1, -1):
            if len(out) >= count:
                break
            if c.omit_every and i % c.omit_every == 0:
                continue
            data = render(m, s, i)
            if c.reuse_id_every and i and i % c.reuse_id_every == 0:
                ledger = self.sim.ledger
                data = data.replace(ledger.update_id(m, s, i).encode(), ledger.update_id(m, s, i - 1).encode())
            if c.alter_every and i % c.alter_every == c.alter_phase:
                data = data.replace(b'"numeric":"', b'"numeric":"' + c.alter_digit.encode(), 1)  # still valid
            out.append(data)
        return out

    def _page(self, items: list[bytes]) -> web.Response:
        self.served_items = len(items)  # for `latency_per_1000_ms`, read right after by the middleware
        self.stats.pages += 1
        self.stats.items += len(items)
        return web.Response(body=b'{"transactions":[' + b",".join(items) + b"]}", content_type="application/json")

    async def import_updates(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        m = _int(body, "migration_id")
        after = _str(body, "after_update_id")
        limit = _count(body, "limit")
        ledger = self.sim.ledger
        ids = [cid for cid in ledger.import_ids(m) if cid > after][:limit]
        return self._page([orjson.dumps(ledger.import_update(m, cid)) for cid in ids])

    def _forward(self, body: dict[str, Any], verdict_only: bool = False) -> list[tuple[int, int, int, bool]]:
        """(migration, synchronizer index, update index, False) of a forward page, in Scan's order:
        (migration, record time, synchronizer id), after the request's `after`; with `verdict_only`
        (/v0/events) the verdict-only items interleaved, (m, 0, i, True) being the one after update i
        of synchronizer 0, served once update i+1 is: Scan caps the current migration's events at its
        newest update and newest verdict (ScanEventStore), so no item lies past migration-info's max."""
        size = _count(body, "page_size")
        after = body.get("after")
        ledger = self.sim.ledger
        am, at = -1, MIN_US
        if after is not None:
            if not isinstance(after, dict):
                raise MalformedRequest("The request content was malformed:\nafter must be an object")
            am = _int(after, "after_migration_id")
            at = _time(after, "after_record_time")
        out: list[tuple[int, int, int, bool]] = []
        for m in ledger.migration_ids():
            if m < am or len(out) >= size:
                continue
            heads = []
            for s in range(ledger.specs[m].synchronizers):
                n = self.count(m, s)
                i = ledger.index_at_or_after(m, s, at + 1) if m == am else 0
                if i < n:
                    heads.append((ledger.record_us(m, s, i), ledger.synchronizer_id(s), s, i, n, False))
                if verdict_only and s == 0 and 0 < i < n:  # the item between update i-1 and i may lie after `at`
                    t = ledger.verdict_only_us(m, i - 1)
                    if t is not None and (m != am or t > at):
                        heads.append((t, ledger.synchronizer_id(0), 0, i - 1, n, True))
            heapq.heapify(heads)
            # /v0/events of a migration still growing: nothing past synchronizer 0's newest update, as
            # the verdict-only item after it is not known yet (served later, it would lie behind items
            # of other synchronizers already served: a reader's cursor would pass it)
            n0 = self.count(m, 0)
            cap = ledger.record_us(m, 0, n0 - 1) if verdict_only and 0 < n0 < ledger.specs[m].updates else None
            while heads and len(out) < size:
                if cap is not None and heads[0][0] > cap:
                    break
                _, sid, s, i, n, private = heapq.heappop(heads)
                out.append((m, s, i, private))
                if private or i + 1 >= n:
                    continue
                heapq.heappush(heads, (ledger.record_us(m, s, i + 1), sid, s, i + 1, n, False))
                t = ledger.verdict_only_us(m, i) if verdict_only and s == 0 else None
                if t is not None:
                    heapq.heappush(heads, (t, sid, 0, i, n, True))
        return out

    def _encoding(self, body: dict[str, Any]) -> str:
        encoding = body.get("daml_value_encoding") or "compact_json"
        if encoding not in ("compact_json", "protobuf_json"):
            raise BadRequest(f"Invalid daml_value_encoding {encoding!r}")
        return str(encoding)

    async def updates_v2(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        compact = self._encoding(body) == "compact_json"
        if not self.complete:
            return _error(503, "This scan instance has not yet replicated all data. Please try again later.")
        render, shape = self.sim.renderer.item, "v2c" if compact else "v2"
        return self._page([render(m, s, i, shape) for m, s, i, _ in self._forward(body)])

    async def updates_v1(self, request: web.Request) -> web.Response:
        """`POST /v1/updates` (deprecated, what Splice's scan_txlog.py pages through): the items of
        /v2/updates in Scan's V1 encoding, each with its `offset`; compact_json unless asked otherwise."""
        body = await _json_body(request)
        compact = self._encoding(body) == "compact_json"
        if not self.complete:
            return _error(503, "This scan instance has not yet replicated all data. Please try again later.")
        render, shape = self.sim.renderer.item, "v1c" if compact else "v1"
        return self._page([render(m, s, i, shape) for m, s, i, _ in self._forward(body)])

    async def events(self, request: web.Request) -> web.Response:
        """/v0/events: each update with its mediator verdict, traffic summary and app activity
        records (reassignments have none), in the order of /v2/updates, and between them the items
        that bear only a verdict (`"update": null`)."""
        body = await _json_body(request)
        compact = self._encoding(body) == "compact_json"
        if not self.complete:
            return _error(503, "This scan instance has not yet replicated all data. Please try again later.")
        ledger = self.sim.ledger
        items = [orjson.dumps(ledger.verdict_only_item(m, i) if private else ledger.event_item(m, s, i, compact))
                 for m, s, i, private in self._forward(body, verdict_only=True)]  # fmt: skip
        self.served_items = len(items)
        self.stats.pages += 1
        self.stats.items += len(items)
        return web.Response(body=b'{"events":[' + b",".join(items) + b"]}", content_type="application/json")

    async def update_by_id(self, request: web.Request) -> web.Response:
        uid = request.match_info["update_id"]
        where = self.sim.locate(uid)
        if where is None:
            return _error(404, f"Transaction with id {uid} not found")
        encoding = request.query.get("daml_value_encoding", "compact_json")
        m, s, i = where
        if i >= self.count(m, s):
            return _error(404, f"Transaction with id {uid} not found")
        return _ok(to_v2(self.sim.ledger.update(m, s, i), encoding == "compact_json"))

    async def migrations_last(self, request: web.Request) -> web.Response:
        return _ok({"migration_id": max(self.sim.ledger.migration_ids())})

    async def dso_sequencers(self, request: web.Request) -> web.Response:
        """One sequencer per scan on the current migration (older scans have this, not migrations/last)."""
        current = max(self.sim.ledger.migration_ids())
        sequencers = [
            {"migrationId": current, "id": f"SEQ::{inst.config.name}::1220{inst.index:064x}",
             "url": f"https://sequencer-{current}.{inst.config.name}.example", "svName": inst.config.name,
             "availableAfter": format_trimmed(self.sim.ledger.genesis_us)}
            for inst in self.sim.instances
        ]  # fmt: skip
        return _ok({"domainSequencers": [{"domainId": self.sim.ledger.synchronizer_id(0), "sequencers": sequencers}]})

    async def scans(self, request: web.Request) -> web.Response:
        return _ok(
            {
                "scans": [
                    {
                        "domainId": self.sim.ledger.synchronizer_id(0),
                        "scans": [
                            {"publicUrl": inst.public_url, "svName": inst.config.name} for inst in self.sim.instances
                            if time.monotonic() - self.sim.grow_started >= inst.config.listed_after_s
                        ],
                    }
                ]
            }
        )

    async def backfilling_status(self, request: web.Request) -> web.Response:
        return _ok({"complete": self.complete})

    async def snapshot_timestamp(self, request: web.Request) -> web.Response:
        return self._acs(lambda: self.sim.snapshots.before(dict(request.query)))

    async def snapshot_timestamp_after(self, request: web.Request) -> web.Response:
        return self._acs(lambda: self.sim.snapshots.after(dict(request.query)))

    async def acs(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return self._acs(lambda: self.sim.snapshots.page(body))

    async def acs_v0(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return self._acs(lambda: self.sim.snapshots.page_v0(body))

    async def registry_instrument(self, request: web.Request) -> web.Response:
        """The Token Standard registry's instrument (served at the root, beside /api/scan)."""
        wanted = request.match_info["instrument_id"]
        if wanted != "Amulet":
            return _error(404, f"No instrument with id {wanted} found")
        return _ok(self._instrument())

    async def registry_instruments(self, request: web.Request) -> web.Response:
        return _ok({"instruments": [self._instrument()]})

    async def registry_info(self, request: web.Request) -> web.Response:
        return _ok(self.sim.snapshots.registry_info(self.sim.ledger.dso))

    def _instrument(self) -> dict[str, Any]:
        """The Amulet instrument as of this scan's newest update of the current migration."""
        ledger = self.sim.ledger
        m = max(ledger.migration_ids())
        now = max((ledger.record_us(m, s, self.count(m, s) - 1) for s in range(ledger.specs[m].synchronizers)
                   if self.count(m, s) > 0), default=MIN_US)  # fmt: skip
        return self.sim.snapshots.instrument(m, now)

    async def holdings_summary(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return self._acs(lambda: self.sim.snapshots.holdings(body))

    @staticmethod
    def _acs(answer: Callable[[], dict[str, Any]]) -> web.Response:
        try:
            return _ok(answer())
        except NotFound as exc:
            return _error(404, str(exc))
        except Invalid as exc:
            return _error(400, str(exc))

    async def round_totals(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return self._acs(lambda: aggregates.round_totals(self.sim.ledger, body))

    async def round_party_totals(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return self._acs(lambda: aggregates.round_party_totals(self.sim.ledger, body))

    async def dso(self, request: web.Request) -> web.Response:
        ledger = self.sim.ledger
        return _ok(
            {
                "sv_party_id": ledger.parties[0],
                "dso_party_id": ledger.dso,
                "latest_mining_round": None,
                "voting_threshold": 1,
            }
        )

    async def sim_stats(self, request: web.Request) -> web.Response:
        st = self.stats
        return _ok(
            {
                "requests": st.requests,
                "pages": st.pages,
                "items": st.items,
                "bytes": st.bytes,
                "faults": st.faults,
                "by_path": st.by_path,
                "bodies": st.bodies,
                "grown": self.sim.grown(),
            }
        )

    async def sim_faults(self, request: web.Request) -> web.Response:
        """Change this scan's faults while it runs (tests turn chaos on and off mid-run)."""
        import msgspec

        body = await request.read()
        self.faults = msgspec.json.decode(body, type=FaultConfig)
        self._rng = random.Random(self.faults.seed * 7919 + self.index)
        return _ok({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware, _errors], client_max_size=4 * 1024 * 1024)
        p = "/api/scan"
        app.router.add_post(p + "/v0/backfilling/migration-info", self.migration_info)
        app.router.add_post(p + "/v0/backfilling/updates-before", self.updates_before)
        app.router.add_get(p + "/v0/backfilling/status", self.backfilling_status)
        app.router.add_post(p + "/v0/backfilling/import-updates", self.import_updates)
        app.router.add_post(p + "/v2/updates", self.updates_v2)
        app.router.add_post(p + "/v1/updates", self.updates_v1)
        app.router.add_post(p + "/v0/events", self.events)
        app.router.add_get(p + "/v2/updates/{update_id}", self.update_by_id)
        app.router.add_get(p + "/v0/migrations/last", self.migrations_last)
        app.router.add_get(p + "/v0/scans", self.scans)
        app.router.add_get(p + "/v0/dso-sequencers", self.dso_sequencers)
        app.router.add_get(p + "/v0/state/acs/snapshot-timestamp", self.snapshot_timestamp)
        app.router.add_get(p + "/v0/state/acs/snapshot-timestamp-after", self.snapshot_timestamp_after)
        app.router.add_post(p + "/v1/state/acs", self.acs)
        app.router.add_post(p + "/v0/state/acs", self.acs_v0)
        app.router.add_post(p + "/v1/holdings/summary", self.holdings_summary)
        app.router.add_get(p + "/v0/dso", self.dso)
        app.router.add_post(p + "/v0/round-totals", self.round_totals)  # Splice < 0.6.7, an economy only
        app.router.add_post(p + "/v0/round-party-totals", self.round_party_totals)
        app.router.add_get("/registry/metadata/v1/info", self.registry_info)
        app.router.add_get("/registry/metadata/v1/instruments", self.registry_instruments)
        app.router.add_get("/registry/metadata/v1/instruments/{instrument_id}", self.registry_instrument)
        app.router.add_get("/sim/stats", self.sim_stats)
        app.router.add_post("/sim/faults", self.sim_faults)
        return app


class Simulation:
    """The shared ledger and renderer behind every scan instance of one simulator."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ledger = make_ledger(config.ledger)
        self.renderer = Renderer(self.ledger, config.cache_mb * 1024 * 1024)
        self.snapshots = Snapshots(self.ledger)
        if config.prerender:
            self.renderer.prerender()
        self.instances = [ScanInstance(self, k, inst) for k, inst in enumerate(config.instances)]
        self._ids: dict[str, tuple[int, int, int]] | None = None
        self.grow_started = time.monotonic()
        last = max(self.ledger.migration_ids())
        self._last = last
        syncs = self.ledger.specs[last].synchronizers
        self._hidden = min(config.grow_updates // syncs, self.ledger.specs[last].updates - 1) if config.grow > 0 else 0
        self._network_bucket = TokenBucket(config.network_rps)

    def network_limited(self) -> bool:
        """The network-wide limiter (`network_rps`) over every scan's data requests."""
        return self.config.network_rps > 0 and not self._network_bucket.take()

    def count(self, m: int, s: int) -> int:
        """Updates of (m, s) served so far: the active migration grows at `grow` updates/s (over all
        its synchronizers) until its last `grow_updates` are all visible; the rest is fixed."""
        n = self.ledger.specs[m].updates
        if m != self._last or not self._hidden:
            return n
        syncs = self.ledger.specs[m].synchronizers
        shown = int((time.monotonic() - self.grow_started) * self.config.grow / syncs)
        return n - self._hidden + min(self._hidden, shown)

    def grown(self) -> bool:
        return all(self.count(self._last, s) == self.ledger.specs[self._last].updates
                   for s in range(self.ledger.specs[self._last].synchronizers))  # fmt: skip

    def locate(self, update_id: str) -> tuple[int, int, int] | None:
        if self._ids is None:
            self._ids = {}
            for m in self.ledger.migration_ids():
                spec = self.ledger.specs[m]
                for s in range(spec.synchronizers):
                    for i in range(spec.updates):
                        self._ids[self.ledger.update_id(m, s, i)] = (m, s, i)
        return self._ids.get(update_id)

    async def start(self) -> list[web.AppRunner]:
        runners = []
        for k, inst in enumerate(self.instances):
            runner = web.AppRunner(inst.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            port = self.config.port + k if self.config.port else 0
            ssl_context = None
            if self.config.tls_cert:
                import ssl

                ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_context.load_cert_chain(self.config.tls_cert, self.config.tls_key or None)
            site = web.TCPSite(runner, self.config.host, port, reuse_address=True, ssl_context=ssl_context)
            await site.start()
            server = site._server
            assert server is not None and server.sockets  # type: ignore[attr-defined]
            bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            scheme = "https" if self.config.tls_cert else "http"
            inst.public_url = f"{scheme}://{self.config.host}:{bound}/api/scan"
            runners.append(runner)
        return runners

    @property
    def urls(self) -> list[str]:
        return [inst.public_url for inst in self.instances]


# ----- helpers -----------------------------------------------------------------------------------


def _ok(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type="application/json")


def _too_many(f: FaultConfig, retry_after: bool) -> web.Response:
    """Scan's own rate limiter sends no Retry-After; an ingress in front of it may."""
    return web.Response(
        status=429,
        text="Too Many Requests: Server is busy, please try again later.",
        content_type="text/plain",
        headers={"Retry-After": f"{f.retry_after_s:g}"} if retry_after else None,
    )


async def _drop_mid_body(request: web.Request, resp: web.Response) -> web.StreamResponse:
    body = resp.body if isinstance(resp.body, bytes) else b""
    stream = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    stream.content_length = len(body) + 1
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return stream


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except MalformedRequest as exc:
        return web.Response(status=400, text=str(exc), content_type="text/plain")
    except BadRequest as exc:
        return _error(400, str(exc))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"The request content was malformed:\n{exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequest("The request content was malformed:\nexpected a JSON object")
    return body


def _int(body: dict[str, Any], key: str) -> int:
    v = body.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise MalformedRequest(f"The request content was malformed:\nfield {key} must be an integer")
    return v


def _str(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str):
        raise MalformedRequest(f"The request content was malformed:\nfield {key} must be a string")
    return v


def _time(body: dict[str, Any], key: str) -> int:
    try:
        return parse_us(_str(body, key))
    except TimestampError as exc:
        raise BadRequest(f"Invalid timestamp for {key}: {exc}") from None


def _count(body: dict[str, Any], key: str) -> int:
    n = _int(body, key)
    if n > PAGE_LIMIT:
        raise BadRequest(f"Exceeded limit maximum ({n} > {PAGE_LIMIT}).")
    if n < 1:
        raise BadRequest("Limit must be at least 1.")
    return n


__all__ = ["Simulation", "format_us"]
