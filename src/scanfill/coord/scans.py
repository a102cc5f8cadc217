"""Which scans to use: every SV's scan, found through `GET /v0/scans` of the seed URLs the user
gave, each probed (reachable, 403 allow-listing, latency, complete history) before use."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from scanfill.errors import ScanError, ScanHTTPError
from scanfill.scan import endpoints as ep
from scanfill.scan.client import ScanClient, ScanConfig, redact_url


@dataclass(frozen=True)
class Probe:
    url: str
    ok: bool
    status: str  # "reachable", "403 (IP not allow-listed)", "unreachable: ..."
    latency_ms: float | None = None
    complete: bool | None = None

    def line(self) -> str:
        head = f"scan {redact_url(self.url)}: {self.status}"
        if self.ok:
            backfilled = "unknown" if self.complete is None else "yes" if self.complete else "NO (still backfilling)"
            head += f", {self.latency_ms:.0f} ms, all history replicated: {backfilled}"
        return head


def normalize(public_url: str) -> str:
    """`/v0/scans` lists each scan's public URL without the API prefix; requests need it."""
    url = public_url.rstrip("/")
    return url if url.endswith("/api/scan") else url + "/api/scan"


async def discover_scans(config: ScanConfig) -> tuple[list[str], list[Probe]]:
    """Every scan the seeds list (the seeds included), and a probe of each; usable ones first."""
    quick = replace(config, max_attempts=3, timeout_s=min(config.timeout_s, 15.0), read_timeout_s=10.0,
                    connect_timeout_s=5.0)  # fmt: skip
    found: dict[str, None] = dict.fromkeys(u.rstrip("/") for u in config.urls)
    async with ScanClient(quick) as client:
        for seed in config.urls:
            try:
                data, _ = await client.request("GET", ep.SCANS, only={seed.rstrip("/")}, what="GET /v0/scans")
            except ScanError:
                continue
            import orjson

            for domain in orjson.loads(data).get("scans") or []:
                for scan in domain.get("scans") or []:
                    if scan.get("publicUrl"):
                        found.setdefault(normalize(str(scan["publicUrl"])), None)
    async with ScanClient(replace(quick, urls=tuple(found))) as client:
        probes = await asyncio.gather(*(_probe(client, u) for u in found))
    usable = [p.url for p in probes if p.ok]
    return usable, sorted(probes, key=lambda p: (not p.ok, p.latency_ms or 0.0))


async def _probe(client: ScanClient, url: str) -> Probe:
    t0 = time.monotonic()
    try:
        data, _ = await client.request("GET", ep.BACKFILL_STATUS, only={url}, what=f"probe {redact_url(url)}")
    except ScanHTTPError as exc:
        if exc.status == 403:
            return Probe(url, False, "403 (IP not allow-listed)")
        # it answers, if only with "busy" or a server error: the loader's retries deal with that
        return Probe(url, True, f"answering HTTP {exc.status}", (time.monotonic() - t0) * 1000, None)
    except ScanError as exc:
        return Probe(url, False, f"unreachable: {str(exc)[:120]}")
    import orjson

    complete = bool(orjson.loads(data).get("complete"))
    return Probe(url, True, "reachable", (time.monotonic() - t0) * 1000, complete)
