"""Configuration objects of the simulator; plain frozen dataclasses so they cross process lines."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from scanfill.sim.ledger import LedgerConfig


@dataclass(frozen=True)
class FaultConfig:
    """Faults, each off by default; `rate_*` is a probability per request, `every_*` a schedule
    (every Nth request). Decisions come from a seeded generator so a run can be replayed."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_429: float = 0.0
    rate_503: float = 0.0
    rate_502: float = 0.0
    rate_403: float = 0.0
    rate_drop: float = 0.0  # connection closed mid-body
    rate_hang: float = 0.0  # request never answered (until hang_s)
    rate_malformed: float = 0.0  # 200 with a body that is not a valid page
    every_429: int = 0
    every_503: int = 0
    every_502: int = 0
    every_403: int = 0
    every_drop: int = 0
    every_hang: int = 0
    every_malformed: int = 0
    # a corrupting proxy: every Nth (or a share of) 200 answers on the paging endpoints is spoiled,
    # one way after another from `corrupt` (see sim.corrupt.KINDS; empty: all of them in turn)
    every_corrupt: int = 0
    rate_corrupt: float = 0.0
    corrupt: tuple[str, ...] = ()
    retry_after_s: float = 1.0  # Retry-After sent with the `429` fault (an ingress's limiter); 0: none
    rate_limit_retry_after: bool = False  # Scan's own limiter (`client_rps`) sends none
    hang_s: float = 3600.0
    gzip: bool = True  # compress when the client sends Accept-Encoding: gzip
    client_rps: float = 0.0  # per-client rate limit (requests/s, 0 = none), answered with 429
    max_page: int = 0  # cap on items per page below the requested count (0 = none)
    latency_per_1000_ms: float = 0.0  # added per 1000 updates served (a scan's database time for a page)
    bandwidth_mb_s: float = 0.0  # this scan's egress, shared by its responses (0 = unlimited)
    data_only: bool = True  # faults hit only the paging endpoints, not discovery
    seed: int = 0


@dataclass(frozen=True)
class InstanceConfig:
    """One scan in the simulated network."""

    name: str = "sv-1"
    late_join: float = 0.0  # share of each range this scan lacks; > 0 means `complete: false`
    faults: FaultConfig | None = None  # overrides the network-wide faults for this scan
    missing: tuple[str, ...] = ()  # endpoints this scan lacks (404), like an older Splice release
    # a faulty scan (Byzantine, stale or buggy), on updates-before: update i of any range is served
    # with an altered payload when i % alter_every == alter_phase, omitted when i % omit_every == 0
    alter_every: int = 0
    alter_phase: int = 0
    alter_digit: str = "7"  # prefixed to the first numeric of an altered update (faulty scans differ by it)
    omit_every: int = 0
    reuse_id_every: int = 0  # update i (i % N == 0, i > 0) carries the id of update i - 1: an id reused
    # record times [from, to) this scan cannot serve: an updates-before request reaching into them is
    # answered 400 (a window a scan lost; a load that cannot get past it must say so, not skip it)
    unservable: tuple[str, str] | None = None
    stale_updates: int = 0  # a scan that is behind: the newest N updates of every range are not there yet
    listed_after_s: float = 0.0  # /v0/scans lists this scan only after this long (an SV that joins later)


# What Splice 0.5.x and the spring-2026 releases lack: discovery must do without it.
OLDER_SCAN_MISSING = ("/v0/migrations/last",)


@dataclass(frozen=True)
class SimConfig:
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    instances: tuple[InstanceConfig, ...] = (InstanceConfig(),)
    faults: FaultConfig = field(default_factory=FaultConfig)
    prerender: bool = False  # render every update once at start so serving costs no generation
    cache_mb: int = 256  # LRU of rendered updates when not pre-rendering
    host: str = "127.0.0.1"
    port: int = 0  # first port; instance k listens on port + k (0 = free ports)
    grow: float = 0.0  # updates/s the active (last) migration grows by while serving (0: fixed)
    grow_updates: int = 0  # how many of its last updates appear that way (they are hidden at start)
    network_rps: float = 0.0  # one limiter over every scan's data requests (requests/s), answered with 429
    tls_cert: str = ""  # serve HTTPS with this certificate (PEM) and key
    tls_key: str = ""

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @staticmethod
    def from_json(data: bytes | str) -> SimConfig:
        return msgspec.json.decode(data, type=SimConfig)


def mainnet_shaped(ledger: LedgerConfig, scans: int = 10, prerender: bool = True) -> SimConfig:
    """Scans that behave like MainNet's SV scans, for the benchmark and `scanfill sim --mainnet-shape`:
    each takes 1-3 s per 1000-update page (its database) and sends at most 20 MB/s, one limiter of
    200 requests/s covers them all (429 without Retry-After, as Scan's own), one answers every
    request 403 (an SV that has not allow-listed you) and one accepts pages but never answers."""
    instances = []
    for k in range(scans):
        faults = FaultConfig(latency_per_1000_ms=1000 + 2000 * k / max(1, scans - 1), jitter_ms=200,
                             bandwidth_mb_s=20, seed=k)  # fmt: skip
        if k == scans - 2:
            faults = FaultConfig(every_403=1, data_only=False)
        elif k == scans - 1:
            faults = FaultConfig(rate_hang=1.0, hang_s=3600)
        instances.append(InstanceConfig(name=f"sv-{k + 1}", faults=faults))
    return SimConfig(ledger=ledger, instances=tuple(instances), prerender=prerender, network_rps=200)
