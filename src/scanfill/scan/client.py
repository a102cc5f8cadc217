"""The Scan HTTP client: several base URLs, timeouts on every request, retries that honour
Retry-After, failover away from failing or forbidden scans, gzip, and fresh connections after
failures (a keep-alive socket to a hung scan must not hold every later request hostage)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from scanfill.errors import ConfigError, ScanError, ScanHTTPError
from scanfill.scan import endpoints as ep
from scanfill.timeutil import format_us

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RATE_LIMIT_WAIT_S = 1.0  # Splice's HttpRateLimiter counts requests per second and sends no Retry-After


@dataclass(frozen=True)
class ScanConfig:
    """How scanfill talks to Scan; every number is a ceiling a hung or slow scan runs into."""

    urls: tuple[str, ...]
    timeout_s: float = 120.0  # whole request, body included
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0  # silence on the socket
    max_attempts: int = 12  # per request, across all URLs
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0
    forbidden_cooldown_s: float = 300.0  # a 403 (IP not allow-listed) benches that URL this long
    failure_cooldown_s: float = 5.0
    # a request still unanswered after max(hedge_min_s, 3 x the recent p90 latency) is sent to a
    # second scan too, and the first answer wins: one hung or crawling scan costs seconds, not the
    # read timeout (0: never)
    hedge_min_s: float = 2.0
    hedge_first_s: float = 10.0  # the wait before enough latencies are known (20 answers)
    connections: int = 64
    verify_tls: bool = True
    client_id: str = ""
    gzip: bool | None = None  # None: ask for gzip except on loopback, where compressing only burns CPU




def redact_url(url: str) -> str:
    """A scan URL as shown anywhere (logs, errors, metrics labels): without user and password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class UrlHealth:
    url: str
    benched_until: float = 0.0
    failures: int = 0
    requests: int = 0
    in_flight: int = 0
    slow: int = 0  # hedges lost in a row: each benches the scan twice as long as the last


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_sum: float = 0.0
    hedges: int = 0  # requests also sent to a second scan
    hedges_won: int = 0  # ... where the second answered first
    hedges_peak: int = 0  # most hedges in flight at once
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=256))  # latencies of recent 200s

    def count(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1


class ScanClient:
    """One aiohttp session shared by every in-flight request of a process."""

    def __init__(self, config: ScanConfig, on_request: Any = None) -> None:
        if not config.urls:
            raise ConfigError("no scan URL: pass --scan-url or set SCAN_URL")
        self.config = config
        self.health = [UrlHealth(u.rstrip("/")) for u in config.urls]
        self.stats = ClientStats()
        self.on_request = on_request  # callback(url, status_or_error, seconds) for metrics
        self._session: aiohttp.ClientSession | None = None
        self._hedging = 0  # hedges in flight: at most a quarter of all requests in flight
        self._rr = 0

    async def __aenter__(self) -> ScanClient:
        timeout = aiohttp.ClientTimeout(
            total=self.config.timeout_s, sock_connect=self.config.connect_timeout_s,
            sock_read=self.config.read_timeout_s,
        )  # fmt: skip
        connector = aiohttp.TCPConnector(
            limit=self.config.connections, ssl=self.config.verify_tls, enable_cleanup_closed=True
        )
        headers = {"Accept-Encoding": "gzip" if self._want_gzip() else "identity", "User-Agent": "scanfill"}
        if self.config.client_id:
            headers["X-Client-Id"] = self.config.client_id
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers, json_serialize=lambda o: orjson.dumps(o).decode()
        )
        return self

    def _want_gzip(self) -> bool:
        if self.config.gzip is not None:
            return self.config.gzip
        from urllib.parse import urlsplit

        hosts = {urlsplit(u).hostname or "" for u in self.config.urls}
        return not all(h in ("localhost", "::1") or h.startswith("127.") for h in hosts)

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _pick(self, only: set[str] | None, avoid: str | None) -> UrlHealth:
        now = time.monotonic()
        pool = [h for h in self.health if only is None or h.url in only]
        if not pool:
            raise ScanError("no scan URL can serve this request (none reported a complete history)")
        ready = [h for h in pool if h.benched_until <= now and h.url != avoid] or [
            h for h in pool if h.benched_until <= now
        ]
        if not ready:
            ready = sorted(pool, key=lambda h: h.benched_until)[:1]
        self._rr += 1
        return min(ready, key=lambda h: (h.in_flight, (self._rr + self.health.index(h)) % len(self.health)))

    def _bench(self, h: UrlHealth, seconds: float) -> None:
        h.benched_until = max(h.benched_until, time.monotonic() + seconds)

    def bench(self, url: str, seconds: float) -> None:
        """Send no request to this scan for a while (it served a page the others disagreed with)."""
        for h in self.health:
            if h.url == url.rstrip("/"):
                self._bench(h, seconds)

    def add(self, urls: list[str]) -> list[str]:
        """Scans found since the start (a refreshed `/v0/scans`); returns the ones that are new."""
        known = {h.url for h in self.health}
        new = [u.rstrip("/") for u in urls if u.rstrip("/") not in known]
        self.health.extend(UrlHealth(u) for u in new)
        return new

    @property
    def urls(self) -> list[str]:
        return [h.url for h in self.health]

    async def request(
        self, method: str, path: str, body: Any = None, only: set[str] | None = None, what: str = "",
        raise_503: bool = False,
    ) -> tuple[bytes, str]:  # fmt: skip
        """The response body and the URL that gave it; retried across URLs until max_attempts.

        Each attempt: pick a scan (`_pick`), send once (`_attempt`), and on a retryable failure
        count it against that scan and back off (`_after_failure`). With `raise_503` a 503 (Scan's
        own request timeout) goes back to the caller after one backoff, so it can ask for a smaller
        page instead of repeating the same one.
        """
        assert self._session is not None, "use `async with ScanClient(...)`"
        last: Exception | None = None
        avoid: str | None = None
        for attempt in range(self.config.max_attempts):
            h = self._pick(only, avoid)
            data, last, delay, h = await self._hedged(h, only, method, path, body, what)
            if data is not None:
                return data, h.url
            avoid = h.url
            await self._after_failure(h, attempt, delay)
            if raise_503 and isinstance(last, ScanHTTPError) and last.status == 503:
                raise last  # the caller shrinks its page and retries (a 503 is a server-side timeout)
        raise ScanError(f"{what or path}: gave up after {self.config.max_attempts} attempts; last error: {last}")

    def _hedge_after(self) -> float | None:
        """How long to wait for one scan before asking a second: a multiple of what pages take now."""
        if self.config.hedge_min_s <= 0:
            return None
        recent = self.stats.recent
        if len(recent) < 20:
            return max(self.config.hedge_min_s, self.config.hedge_first_s)
        p90 = sorted(recent)[int(len(recent) * 0.9)]
        return max(self.config.hedge_min_s, 3 * p90)

    async def _hedged(self, h: UrlHealth, only: set[str] | None, method: str, path: str, body: Any, what: str
                      ) -> tuple[bytes | None, Exception | None, float, UrlHealth]:  # fmt: skip
        """`_attempt` at `h`; if it is still unanswered after `_hedge_after`, the same request at a
        second scan too. The first success wins and the other is cancelled; a scan that lost a
        hedge is benched, twice as long each time in a row, so a hung scan soon gets nothing."""
        first = asyncio.ensure_future(self._attempt(h, method, path, body, what))
        after = self._hedge_after()
        while True:
            done, _ = await asyncio.wait({first}, timeout=after)
            if done:
                return (*first.result(), h)
            other = self._pick(only, avoid=h.url)
            if other is h:
                return (*await first, h)
            # hedges in flight stay within a quarter of all requests in flight: when every scan is
            # slow, hedging each request would double their load for nothing; look again later
            if self._hedging < max(1, sum(x.in_flight for x in self.health) // 4):
                break
        self.stats.hedges += 1
        self._hedging += 1
        self.stats.hedges_peak = max(self.stats.hedges_peak, self._hedging)
        tasks = {first: h, asyncio.ensure_future(self._attempt(other, method, path, body, what)): other}
        pending = set(tasks)
        failed: tuple[bytes | None, Exception | None, float, UrlHealth] | None = None
        raised: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is not None:
                        raised = t.exception()
                        continue
                    data, err, delay = t.result()
                    if data is None:
                        failed = (data, err, delay, tasks[t])
                        continue
                    winner = tasks[t]
                    if winner is other:
                        self.stats.hedges_won += 1
                        h.slow += 1
                        self._bench(h, self.config.failure_cooldown_s * 2 ** min(h.slow, 6))
                    return data, None, 0.0, winner
        finally:
            self._hedging -= 1
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if failed is not None:
            return failed
        assert raised is not None
        raise raised

    async def _attempt(self, h: UrlHealth, method: str, path: str, body: Any, what: str
                       ) -> tuple[bytes | None, Exception | None, float]:  # fmt: skip
        """One request to one scan: (body, None, 0) on 200; (None, the retryable error, how long it
        asked us to wait) otherwise. Errors retrying cannot fix (404, 4xx, TLS) are raised."""
        assert self._session is not None
        url = h.url + path
        h.in_flight += 1
        h.requests += 1
        self.stats.requests += 1
        t0 = time.monotonic()
        outcome = "error"
        try:
            async with self._session.request(method, url, json=body) as resp:
                data = await resp.read()
                outcome = str(resp.status)
                if resp.status == 200:
                    h.failures = h.slow = 0
                    took = time.monotonic() - t0
                    self.stats.bytes += len(data)
                    self.stats.latency_sum += took
                    self.stats.recent.append(took)
                    return data, None, 0.0
                err = ScanHTTPError(resp.status, redact_url(url), data)
                if resp.status == 403:
                    self._bench(h, self.config.forbidden_cooldown_s)
                elif resp.status == 404 or resp.status not in RETRY_STATUS:
                    raise err
                resp.close()  # never reuse a connection that just failed
                return None, err, self._wait_asked(resp.status, resp.headers.get("Retry-After"))
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            raise ScanError(
                f"{what or path}: TLS failure talking to {redact_url(h.url)}: {exc}. Certificates are verified; pass "
                "--insecure only if you trust this network (not recommended)."
            ) from None
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            outcome = type(exc).__name__
            return None, exc, 0.0
        except asyncio.CancelledError:
            outcome = "hedged"  # another scan answered first
            raise
        finally:
            h.in_flight -= 1
            if outcome != "200":
                self.stats.count(outcome)
            if self.on_request is not None:
                self.on_request(redact_url(h.url), outcome, time.monotonic() - t0)

    def _wait_asked(self, status: int, retry_after: str | None) -> float:
        """What the scan asked us to wait: its Retry-After, or for Scan's own rate limiter (which
        names none) its 1 s window."""
        if retry_after:
            try:
                return min(float(retry_after), self.config.backoff_cap_s * 4)
            except ValueError:
                return 0.0
        return RATE_LIMIT_WAIT_S if status == 429 else 0.0

    async def _after_failure(self, h: UrlHealth, attempt: int, asked: float) -> None:
        """Count the failure against the scan (three in a row bench it briefly), then back off
        exponentially with jitter, at least as long as the scan asked."""
        self.stats.retries += 1
        h.failures += 1
        if h.failures >= 3:
            self._bench(h, self.config.failure_cooldown_s)
        backoff = min(self.config.backoff_cap_s, self.config.backoff_base_s * 2 ** min(attempt, 16))
        await asyncio.sleep(max(asked, random.uniform(0, backoff)))

    async def get_json(self, path: str) -> Any:
        data, _ = await self.request("GET", path, what=f"GET {path}")
        return orjson.loads(data)

    async def post_json(self, path: str, body: Any, only: set[str] | None = None) -> Any:
        data, _ = await self.request("POST", path, body, only=only, what=f"POST {path}")
        return orjson.loads(data)

    async def migration_info_all(self, migration_id: int) -> dict[str, Any]:
        """migration-info from every URL (url -> response, or the exception it raised)."""

        async def one(h: UrlHealth) -> Any:
            try:
                data, _ = await self.request("POST", ep.MIGRATION_INFO, ep.migration_info(migration_id), only={h.url},
                                             what=f"migration-info({migration_id}) at {redact_url(h.url)}")  # fmt: skip
                return orjson.loads(data)
            except ScanError as exc:
                return exc
            except ValueError as exc:  # not JSON: as good as no answer
                return ScanError(f"migration-info({migration_id}) at {redact_url(h.url)}: not JSON ({exc})")

        results = await asyncio.gather(*(one(h) for h in self.health))
        return {h.url: r for h, r in zip(self.health, results, strict=True)}

    async def updates_before(
        self, migration_id: int, synchronizer_id: str, before_us: int, at_or_after_us: int | None, count: int,
        only: set[str] | None = None, before_text: str | None = None,
    ) -> bytes:  # fmt: skip
        """One updates-before page; a 503 (Scan's own timeout for a page too large) comes back at once."""
        body = ep.updates_before(migration_id, synchronizer_id, before_text or format_us(before_us), at_or_after_us,
                                 count)  # fmt: skip
        data, _ = await self.request(
            "POST", ep.UPDATES_BEFORE, body, only=only,
            what=f"updates-before(migration {migration_id}, {synchronizer_id}, before {body['before']})", raise_503=True,
        )  # fmt: skip
        return data
