"""What there is to load: migrations (through `/v0/migrations/last`, or on older scans
`/v0/dso-sequencers` or migration-info probed upward from 0, then the `previous_migration_id`
chain) and each one's synchronizer ranges, taken from a scan that reports a complete history."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from scanfill.errors import ScanError, ScanHTTPError, UnknownMigration
from scanfill.scan import endpoints as ep
from scanfill.scan.client import ScanClient
from scanfill.timeutil import parse_us

log = logging.getLogger("scanfill.discovery")


@dataclass(frozen=True)
class Range:
    migration_id: int
    synchronizer_id: str
    min_text: str
    max_text: str
    source_complete: bool

    @property
    def min_us(self) -> int:
        return parse_us(self.min_text)

    @property
    def max_us(self) -> int:
        return parse_us(self.max_text)


@dataclass
class Discovery:
    ranges: list[Range] = field(default_factory=list)
    complete_urls: dict[int, set[str]] = field(default_factory=dict)  # per migration
    warnings: list[str] = field(default_factory=list)
    last_import_ids: dict[int, str | None] = field(default_factory=dict)

    @property
    def migrations(self) -> list[int]:
        return sorted({r.migration_id for r in self.ranges})


PROBE_GAP = 8  # upward probing stops this many ids past the last migration found


async def current_migration(client: ScanClient) -> tuple[int, str | None]:
    """The newest migration id, and a note when it had to be found without `/v0/migrations/last`.

    That endpoint exists only in recent Scan releases. Older scans still list their sequencers per
    migration in `/v0/dso-sequencers`; failing that, migration-info is probed upward from 0 (never
    from 1: that skips migration 0), past gaps in the ids, as Splice's docs describe.
    """
    try:
        return int((await client.get_json(ep.MIGRATIONS_LAST))["migration_id"]), None
    except ScanHTTPError as exc:
        if exc.status != 404:
            raise ScanError(f"cannot find the current migration ({exc}); pass --from-migration N") from None
    try:
        seqs = await client.get_json(ep.DSO_SEQUENCERS)
        ids = [int(q["migrationId"]) for d in seqs.get("domainSequencers") or [] for q in d.get("sequencers") or []
               if isinstance(q.get("migrationId"), int) and q["migrationId"] >= 0]  # fmt: skip
        if ids:
            return max(ids), "this scan has no /v0/migrations/last (an older Splice release): current migration " \
                f"{max(ids)} taken from /v0/dso-sequencers"
    except ScanHTTPError as exc:
        if exc.status != 404:
            raise ScanError(f"cannot find the current migration ({exc}); pass --from-migration N") from None
    found, m = -1, 0
    while m <= found + PROBE_GAP:
        infos = await client.migration_info_all(m)
        if any(isinstance(r, dict) for r in infos.values()):
            found = m
        elif not all(isinstance(r, ScanHTTPError) and r.status == 404 for r in infos.values()):
            errors = "; ".join(f"{u}: {r}" for u, r in infos.items())
            raise ScanError(f"migration-info({m}) failed on every scan: {errors}")
        m += 1
    if found < 0:
        raise ScanError(f"no scan holds data for any migration 0..{PROBE_GAP}: is this a Scan URL?")
    return found, (f"this scan has neither /v0/migrations/last nor /v0/dso-sequencers: migrations probed "
                   f"upward from 0, the newest with data is {found}")  # fmt: skip


async def known_migrations(client: ScanClient) -> list[int]:
    """Every migration some scan holds data for (to name them when a requested one does not exist)."""
    return (await discover(client)).migrations


async def discover(client: ScanClient, migrations: list[int] | None = None, start: int | None = None) -> Discovery:
    """Migrations from `/v0/migrations/last` (or `start`) and the `previous_migration_id` chain,
    or exactly `migrations`; each range taken from a scan that reports a complete history.

    An explicitly named migration that no scan knows is an error, not an empty success.
    """
    out = Discovery()
    if migrations:
        todo, chain = list(migrations), False
    elif start is not None:
        todo, chain = [start], True
    else:
        last, note = await current_migration(client)
        if note:
            out.warnings.append(note)
        todo, chain = [last], True
    explicit = set(migrations or ()) | ({start} if start is not None else set())
    seen: set[int] = set()
    while todo:
        m = todo.pop(0)
        if m in seen or m < 0:
            continue
        seen.add(m)
        infos = await client.migration_info_all(m)
        good = {u: r for u, r in infos.items() if isinstance(r, dict)}
        if not good:
            not_found = all(isinstance(r, ScanHTTPError) and r.status == 404 for r in infos.values())
            if not not_found:
                errors = "; ".join(f"{u}: {r}" for u, r in infos.items())
                raise ScanError(f"migration-info({m}) failed on every scan: {errors}")
            if m in explicit:
                known = await known_migrations(client)
                raise UnknownMigration(f"migration {m}: no scan holds data for it; the scans know migrations {known}")
            out.warnings.append(f"migration {m}: no scan holds data for it")
            if chain and m > 0 and not out.ranges:
                todo.append(m - 1)  # the current migration may have no updates yet
            continue
        complete = {u for u, r in good.items() if r.get("complete")}
        out.complete_urls[m] = complete
        source = next((good[u] for u in good if u in complete), None)
        if source is None:
            source = next(iter(good.values()))
            out.warnings.append(
                f"migration {m}: no scan reports a complete history; it is loaded but cannot be marked complete"
            )
        out.last_import_ids[m] = source.get("last_import_update_id")
        # a synchronizer's range as all the complete scans have it: up to the LOWEST head (scans
        # ingest at different speeds; asking a scan that is behind for updates past its own head
        # would page over what it lacks and leave a hole; the next run or the follower takes the
        # rest), from the earliest `min`
        tops: dict[str, tuple[str, str]] = {}
        for info in [good[u] for u in good if u in complete] or [source]:
            for r in info.get("record_time_range") or []:
                sid, lo, hi = r["synchronizer_id"], r["min"], r["max"]
                if sid in tops:
                    old_lo, old_hi = tops[sid]
                    lo = lo if parse_us(lo) < parse_us(old_lo) else old_lo
                    hi = hi if parse_us(hi) < parse_us(old_hi) else old_hi
                tops[sid] = (lo, hi)
        for sid, (lo, hi) in tops.items():
            out.ranges.append(Range(m, sid, lo, hi, bool(source.get("complete"))))
        prev = source.get("previous_migration_id")
        if chain and prev is not None:
            todo.append(int(prev))
    out.ranges.sort(key=lambda r: (r.migration_id, r.synchronizer_id))
    return out




