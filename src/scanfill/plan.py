"""What to load and who loads it: discovery of migrations and synchronizers, time slices with
their own cursors, and leases that hand slices to workers through the database.

A slice is [min_time, max_time) of one (migration, synchronizer) range. Workers claim slices with
`FOR UPDATE SKIP LOCKED`; a lease expires unless its holder renews it; every claim bumps
`lease_epoch`, which fences the commits of the previous holder (see sink.py). A worker with
nothing to claim splits the largest slice another worker still has ahead of it.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from scanfill.db import Database
from scanfill.scan import ScanClient, ScanError, ScanHTTPError
from scanfill.schema import LOCK_KEY
from scanfill.timeutil import dt_to_us, format_us, parse_us, us_to_dt

log = logging.getLogger("scanfill.plan")
Conn = psycopg.Connection[tuple]  # type: ignore[type-arg]


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
        return int((await client.get_json("/v0/migrations/last"))["migration_id"]), None
    except ScanHTTPError as exc:
        if exc.status != 404:
            raise ScanError(f"cannot find the current migration ({exc}); pass --from-migration N") from None
    try:
        seqs = await client.get_json("/v0/dso-sequencers")
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
        for r in source.get("record_time_range") or []:
            out.ranges.append(Range(m, r["synchronizer_id"], r["min"], r["max"], bool(source.get("complete"))))
        prev = source.get("previous_migration_id")
        if chain and prev is not None:
            todo.append(int(prev))
    out.ranges.sort(key=lambda r: (r.migration_id, r.synchronizer_id))
    return out


class UnknownMigration(ScanError):
    """A migration the user asked for by id that no scan holds (a typo, or the wrong network)."""


@dataclass(frozen=True)
class PlanOptions:
    target_slices: int = 64  # over all ranges, proportional to their time span
    migrations: tuple[int, ...] = ()


def _cursor_name(m: int, sync: str, lo: int, hi: int) -> str:
    return f"m{m}/{sync.split('::')[0]}:{sync.split('::')[-1][:12]}/{lo}-{hi}"


def plan(db: Database, conn: Conn, disc: Discovery, options: PlanOptions) -> dict[str, int]:
    """Record ranges and create their slices; idempotent, and extends a range that grew at either end."""
    stats = {"ranges_new": 0, "slices_new": 0, "ranges_extended": 0}
    spans = {(r.migration_id, r.synchronizer_id): max(1, r.max_us + 1 - r.min_us) for r in disc.ranges}
    total = sum(spans.values()) or 1
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        next_slot = conn.execute(sql.SQL("SELECT coalesce(max(slot) + 1, 0) FROM {}").format(
            db.t("backfill_cursors"))).fetchone()[0]  # type: ignore[index]  # fmt: skip
        for r in disc.ranges:
            row = conn.execute(
                sql.SQL("SELECT max_text, source_complete, min_text FROM {} WHERE migration_id = %s AND "
                        "synchronizer_id = %s FOR UPDATE").format(db.t("backfill_ranges")),
                (r.migration_id, r.synchronizer_id),
            ).fetchone()  # fmt: skip
            lo, hi = r.min_us, r.max_us + 1  # `before` is exclusive: the top slice ends 1 us past `max`
            if row is None:
                conn.execute(
                    sql.SQL("INSERT INTO {} (migration_id, synchronizer_id, min_time, max_time, min_text, max_text, "
                            "source_complete) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(db.t("backfill_ranges")),
                    (r.migration_id, r.synchronizer_id, us_to_dt(r.min_us), us_to_dt(r.max_us), r.min_text,
                     r.max_text, r.source_complete),
                )  # fmt: skip
                n = max(1, round(options.target_slices * spans[(r.migration_id, r.synchronizer_id)] / total))
                n = min(n, hi - lo)
                bounds = [lo + (hi - lo) * k // n for k in range(n + 1)]
                next_slot = _insert_slices(db, conn, r, list(itertools.pairwise(bounds)), next_slot)
                stats["ranges_new"] += 1
                stats["slices_new"] += n
                continue
            old_max_text, old_complete, old_min_text = row
            # a range grows at the top while its migration is active, and at the bottom when it was first
            # taken from a scan still backfilling its own history and a complete scan now shows more
            old_lo, old_hi = parse_us(old_min_text), parse_us(old_max_text) + 1
            gaps = [(a, b) for a, b in ((lo, old_lo), (old_hi, hi)) if a < b]
            if gaps:
                next_slot = _insert_slices(db, conn, r, gaps, next_slot)
                new_min = (r.min_us, r.min_text) if lo < old_lo else (old_lo, old_min_text)
                new_max = (r.max_us, r.max_text) if hi > old_hi else (old_hi - 1, old_max_text)
                conn.execute(
                    sql.SQL("UPDATE {} SET min_time = %s, min_text = %s, max_time = %s, max_text = %s "
                            "WHERE migration_id = %s AND synchronizer_id = %s").format(db.t("backfill_ranges")),
                    (us_to_dt(new_min[0]), new_min[1], us_to_dt(new_max[0]), new_max[1], r.migration_id,
                     r.synchronizer_id),
                )  # fmt: skip
                stats["ranges_extended"] += 1
                stats["slices_new"] += len(gaps)
            if r.source_complete and not old_complete:
                conn.execute(
                    sql.SQL("UPDATE {} SET source_complete = true WHERE migration_id = %s AND synchronizer_id = %s")
                    .format(db.t("backfill_ranges")), (r.migration_id, r.synchronizer_id),
                )  # fmt: skip
    return stats


def _insert_slices(db: Database, conn: Conn, r: Range, bounds: list[tuple[int, int]], slot: int) -> int:
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before, "
                    "slot) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                    ).format(db.t("backfill_cursors")),
            [(_cursor_name(r.migration_id, r.synchronizer_id, a, b), r.migration_id, r.synchronizer_id, us_to_dt(a),
              us_to_dt(b), format_us(b), slot + k) for k, (a, b) in enumerate(bounds)],
        )  # fmt: skip
    return slot + len(bounds)


# ----- leases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    cursor_name: str
    migration_id: int
    synchronizer_id: str
    lo_us: int
    hi_us: int
    last_before: str
    epoch: int
    taken_over_from: str | None


@dataclass(frozen=True)
class Partition:
    """Static `WORKER_ID`/`WORKER_COUNT` partition of slices (the guide's matrix), or none."""

    worker_id: int = 0
    worker_count: int = 1

    def where(self) -> sql.Composable:
        if self.worker_count <= 1:
            return sql.SQL("true")
        return sql.SQL("mod(slot, {}) = {}").format(sql.Literal(self.worker_count), sql.Literal(self.worker_id))


class Leases:
    """Claim, split, renew and release slices for one worker."""

    def __init__(self, db: Database, owner: str, lease_s: float, partition: Partition | None = None,
                 min_split_us: int = 120_000_000, migrations: tuple[int, ...] = ()) -> None:  # fmt: skip
        self.db = db
        self.owner = owner
        self.lease_s = lease_s
        self.partition = partition or Partition()
        self.min_split_us = min_split_us
        self.filter = self.partition.where()
        if migrations:
            self.filter = sql.SQL("({}) AND migration_id = ANY({})").format(self.filter, sql.Literal(list(migrations)))

    def claim(self, conn: Conn, exclude: list[str], dead_owners: list[str] | None = None) -> Claim | None:
        """The largest open slice whose lease is free, expired, or held by a worker known to be dead."""
        t = self.db.t("backfill_cursors")
        q = sql.SQL("""
            WITH c AS (
                SELECT cursor_name, lease_owner AS prev FROM {t}
                WHERE NOT complete AND (lease_owner IS NULL OR lease_until < now() OR lease_owner = ANY(%s))
                  AND {f} AND NOT (cursor_name = ANY(%s))
                ORDER BY max_time - min_time DESC, cursor_name
                LIMIT 1 FOR UPDATE SKIP LOCKED)
            UPDATE {t} s SET lease_owner = %s, lease_epoch = s.lease_epoch + 1,
                   lease_until = now() + make_interval(secs => %s)
            FROM c WHERE s.cursor_name = c.cursor_name
            RETURNING s.cursor_name, s.migration_id, s.synchronizer_id, s.min_time, s.max_time, s.last_before,
                      s.lease_epoch, c.prev""").format(t=t, f=self.filter)
        with conn.transaction():
            row = conn.execute(q, (dead_owners or [], exclude, self.owner, self.lease_s)).fetchone()
        return _claim(row)

    def split(self, conn: Conn, exclude: list[str]) -> Claim | None:
        """Take the older half of the largest slice another worker has not reached yet."""
        t = self.db.t("backfill_cursors")
        with conn.transaction():
            row = conn.execute(sql.SQL("""
                SELECT cursor_name, migration_id, synchronizer_id, min_time, last_before, slot FROM {t}
                WHERE NOT complete AND lease_owner IS NOT NULL AND lease_owner <> %s AND {f}
                  AND NOT (cursor_name = ANY(%s))
                  AND last_before::timestamptz - min_time > make_interval(secs => %s)
                ORDER BY last_before::timestamptz - min_time DESC
                LIMIT 1 FOR UPDATE SKIP LOCKED""").format(t=t, f=self.filter),
                (self.owner, exclude, self.min_split_us * 2 / 1e6),
            ).fetchone()  # fmt: skip
            if row is None:
                return None
            victim, m, sync, min_time, last_before, slot = row
            lo = dt_to_us(min_time)
            mid = lo + (parse_us(last_before) - lo) // 2
            name = _cursor_name(m, sync, lo, mid)
            conn.execute(
                sql.SQL("UPDATE {} SET min_time = %s WHERE cursor_name = %s").format(t), (us_to_dt(mid), victim)
            )
            got = conn.execute(
                sql.SQL("""INSERT INTO {} (cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before,
                           slot, lease_owner, lease_until, lease_epoch, split_from)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s), 1, %s)
                           ON CONFLICT DO NOTHING
                           RETURNING cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before,
                                     lease_epoch, NULL""").format(t),
                (name, m, sync, us_to_dt(lo), us_to_dt(mid), format_us(mid), slot, self.owner, self.lease_s, victim),
            ).fetchone()  # fmt: skip
            if got is None:
                raise RuntimeError(f"split of {victim} collided with an existing slice {name}")
        log.info("split %s at %s", victim, format_us(mid))
        return _claim(got)

    def renew(self, conn: Conn) -> int:
        with conn.transaction():
            cur = conn.execute(
                sql.SQL("UPDATE {} SET lease_until = now() + make_interval(secs => %s) "
                        "WHERE lease_owner = %s AND NOT complete").format(self.db.t("backfill_cursors")),
                (self.lease_s, self.owner),
            )  # fmt: skip
            return cur.rowcount

    def release(self, conn: Conn, claim: Claim) -> None:
        with conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET lease_owner = NULL, lease_until = NULL "
                        "WHERE cursor_name = %s AND lease_owner = %s AND lease_epoch = %s").format(
                    self.db.t("backfill_cursors")),
                (claim.cursor_name, self.owner, claim.epoch),
            )  # fmt: skip

    def remaining(self, conn: Conn) -> tuple[int, float | None]:
        """(open slices in this worker's share, seconds until the soonest foreign lease expires)."""
        with conn.transaction():
            row = conn.execute(sql.SQL(
                "SELECT count(*), extract(epoch FROM min(lease_until) - now()) FROM {} WHERE NOT complete AND {}"
            ).format(self.db.t("backfill_cursors"), self.filter)).fetchone()  # fmt: skip
        assert row is not None
        return int(row[0]), (float(row[1]) if row[1] is not None else None)


def _claim(row: Any) -> Claim | None:
    if row is None:
        return None
    name, m, sync, lo, hi, last_before, epoch, prev = row
    return Claim(name, int(m), sync, dt_to_us(lo), dt_to_us(hi), last_before, int(epoch), prev)


def refetch(db: Database, conn: Conn, window: str, migrations: tuple[int, ...] = ()) -> list[str]:
    """Delete what is stored in WINDOW (START/END) of every range it touches, in one transaction
    with a new slice covering it, so the next run loads exactly that window again.

    The new slice's counters rebase the range's accounting: they start at (rows the range still
    holds) - (what its other slices say they committed), so once the window is loaded again the
    cursors' sums equal the rows in the tables, even after rows were lost out of band.
    """
    try:
        start_text, end_text = window.split("/")
        start, end = parse_us(start_text), parse_us(end_text)
    except ValueError:
        raise ValueError(
            f"--refetch takes START/END record times, e.g. 2024-06-24T00:00:00Z/2024-06-25T00:00:00Z, not {window!r}"
        ) from None
    made = []
    t = db.t
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        ranges = conn.execute(sql.SQL("SELECT migration_id, synchronizer_id, min_text, max_text FROM {}").format(
            t("backfill_ranges"))).fetchall()  # fmt: skip
        for m, sync, lo_t, hi_t in ranges:
            if migrations and m not in migrations:
                continue
            a, b = max(start, parse_us(lo_t)), min(end, parse_us(hi_t) + 1)
            if a >= b:
                continue
            ev = conn.execute(sql.SQL(
                "DELETE FROM {e} WHERE update_id IN (SELECT update_id FROM {u} WHERE migration_id = %s AND "
                "synchronizer_id = %s AND record_time >= %s AND record_time < %s)").format(
                e=t("ledger_events"), u=t("ledger_updates")), (m, sync, us_to_dt(a), us_to_dt(b))).rowcount  # fmt: skip
            up = conn.execute(sql.SQL(
                "DELETE FROM {} WHERE migration_id = %s AND synchronizer_id = %s AND record_time >= %s AND "
                "record_time < %s").format(t("ledger_updates")), (m, sync, us_to_dt(a), us_to_dt(b))).rowcount  # fmt: skip
            held = conn.execute(sql.SQL(
                "SELECT (SELECT count(*) FROM {u} WHERE migration_id = %s AND synchronizer_id = %s), "
                "(SELECT count(*) FROM {e} WHERE migration_id = %s AND synchronizer_id = %s), "
                "(SELECT coalesce(sum(updates_loaded), 0) FROM {c} WHERE migration_id = %s AND synchronizer_id = %s), "
                "(SELECT coalesce(sum(events_loaded), 0) FROM {c} WHERE migration_id = %s AND synchronizer_id = %s)"
            ).format(u=t("ledger_updates"), e=t("ledger_events"), c=t("backfill_cursors")), (m, sync) * 4).fetchone()  # fmt: skip
            assert held is not None
            name = f"refetch/{_cursor_name(m, sync, a, b)}/{uuid.uuid4().hex[:8]}"
            conn.execute(sql.SQL(
                "INSERT INTO {} (cursor_name, migration_id, synchronizer_id, min_time, max_time, last_before, "
                "updates_loaded, events_loaded, split_from) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'refetch')"
            ).format(t("backfill_cursors")), (name, m, sync, us_to_dt(a), us_to_dt(b), format_us(b),
                                              held[0] - held[2], held[1] - held[3]))  # fmt: skip
            made.append(f"{name}: removed {up:,} updates and {ev:,} events to load again")
    return made


# ----- import updates ----------------------------------------------------------------------------


def plan_imports(db: Database, conn: Conn, disc: Discovery) -> int:
    """One import cursor per migration that has import updates (skipped unless asked for)."""
    n = 0
    with conn.transaction():
        for m, last in disc.last_import_ids.items():
            if last:
                n += conn.execute(sql.SQL("INSERT INTO {} (migration_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
                    db.t("backfill_import_cursors")), (m,)).rowcount  # fmt: skip
    return n


def claim_import(db: Database, conn: Conn, owner: str, lease_s: float, migrations: tuple[int, ...] = ()
                 ) -> tuple[int, str, int] | None:  # fmt: skip
    t = db.t("backfill_import_cursors")
    only = sql.SQL("AND migration_id = ANY({})").format(sql.Literal(list(migrations))) if migrations else sql.SQL("")
    with conn.transaction():
        row = conn.execute(sql.SQL("""
            WITH c AS (SELECT migration_id FROM {t} WHERE NOT complete AND (lease_owner IS NULL OR lease_until < now())
                       {only} ORDER BY migration_id LIMIT 1 FOR UPDATE SKIP LOCKED)
            UPDATE {t} i SET lease_owner = %s, lease_epoch = i.lease_epoch + 1,
                   lease_until = now() + make_interval(secs => %s)
            FROM c WHERE i.migration_id = c.migration_id
            RETURNING i.migration_id, i.last_update_id, i.lease_epoch""").format(t=t, only=only),
            (owner, lease_s)).fetchone()  # fmt: skip
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]))


def release_import(db: Database, conn: Conn, migration_id: int, owner: str, epoch: int) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("UPDATE {} SET lease_owner = NULL, lease_until = NULL WHERE migration_id = %s "
                             "AND lease_owner = %s AND lease_epoch = %s").format(db.t("backfill_import_cursors")),
                     (migration_id, owner, epoch))  # fmt: skip


def imports_open(db: Database, conn: Conn) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE NOT complete").format(
        db.t("backfill_import_cursors"))).fetchone()  # fmt: skip
    return int(row[0]) if row else 0
