"""Who loads what: time slices with their own cursors, and leases that hand them to workers
through the database (the statements themselves are in coord/queries.sql).

A slice is [min_time, max_time) of one (migration, synchronizer) range. Workers claim slices with
`FOR UPDATE SKIP LOCKED`; a lease expires unless its holder renews it; every claim bumps
`lease_epoch`, which fences the commits of the previous holder (see load/sink.py). A worker with
nothing to claim splits the largest slice another worker still has ahead of it.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from scanfill.coord.discovery import Discovery, Range
from scanfill.coord.schema import take_lock
from scanfill.coord.store import Lease, LeaseKind, Share, Store
from scanfill.db import Conn, Database
from scanfill.errors import ConfigError
from scanfill.state.facts import position
from scanfill.state.rebuild import rederived
from scanfill.timeutil import dt_to_us, format_us, parse_us, us_to_dt

log = logging.getLogger("scanfill.slices")
PLAN_ROW_WAIT = "3s"  # how long planning waits for a range row a follower's commit holds


@dataclass(frozen=True)
class PlanOptions:
    target_slices: int = 64  # over all ranges, proportional to their time span
    migrations: tuple[int, ...] = ()


def _cursor_name(m: int, sync: str, lo: int, hi: int) -> str:
    return f"m{m}/{sync.split('::')[0]}:{sync.split('::')[-1][:12]}/{lo}-{hi}"


def plan(db: Database, conn: Conn, disc: Discovery, options: PlanOptions) -> dict[str, int]:
    """Record ranges and create their slices; idempotent, and extends a range that grew at either end."""
    store = Store(db)
    stats = {"ranges_new": 0, "slices_new": 0, "ranges_extended": 0, "ranges_busy": 0}
    spans = {(r.migration_id, r.synchronizer_id): max(1, r.max_us + 1 - r.min_us) for r in disc.ranges}
    total = sum(spans.values()) or 1
    with conn.transaction():
        take_lock(conn)
        store.run(conn, "plan_row_wait", wait=PLAN_ROW_WAIT)
        next_slot = int(store.one(conn, "slot_next")[0])
        for r in disc.ranges:
            key = {"m": r.migration_id, "sync": r.synchronizer_id}
            try:
                with conn.transaction():
                    row = store.one(conn, "range_get", **key)
            except psycopg.errors.LockNotAvailable:
                # a follower's commit holds it, perhaps frozen: that commit (or the follower taking
                # over from it) decides the range's top; planning it again is the next run's
                log.warning("range of migration %s on %s: a follower's commit has held it for %s (frozen?); "
                            "not planned this time, the next run plans it", r.migration_id, r.synchronizer_id,
                            PLAN_ROW_WAIT)  # fmt: skip
                stats["ranges_busy"] += 1
                continue
            lo, hi = r.min_us, r.max_us + 1  # `before` is exclusive: the top slice ends 1 us past `max`
            if row is None:
                store.run(conn, "range_insert", min_time=us_to_dt(r.min_us), max_time=us_to_dt(r.max_us),
                          min_text=r.min_text, max_text=r.max_text, complete=r.source_complete, **key)  # fmt: skip
                n = max(1, round(options.target_slices * spans[(r.migration_id, r.synchronizer_id)] / total))
                n = min(n, hi - lo)
                bounds = [lo + (hi - lo) * k // n for k in range(n + 1)]
                next_slot = _insert_slices(store, conn, r, list(itertools.pairwise(bounds)), next_slot)
                stats["ranges_new"] += 1
                stats["slices_new"] += n
                continue
            old_max_text, old_complete, old_min_text, followed = row
            # a range grows at the top while its migration is active (unless a follower owns its top),
            # and at the bottom when it was first taken from a scan still backfilling its own history
            # and a complete scan now shows more
            old_lo, old_hi = parse_us(old_min_text), parse_us(old_max_text) + 1
            if followed is not None:
                hi = old_hi
            gaps = [(a, b) for a, b in ((lo, old_lo), (old_hi, hi)) if a < b]
            if gaps:
                next_slot = _insert_slices(store, conn, r, gaps, next_slot)
                new_min = (r.min_us, r.min_text) if lo < old_lo else (old_lo, old_min_text)
                new_max = (r.max_us, r.max_text) if hi > old_hi else (old_hi - 1, old_max_text)
                store.run(conn, "range_extend", min_time=us_to_dt(new_min[0]), min_text=new_min[1],
                          max_time=us_to_dt(new_max[0]), max_text=new_max[1], **key)  # fmt: skip
                stats["ranges_extended"] += 1
                stats["slices_new"] += len(gaps)
            if r.source_complete and not old_complete:
                store.run(conn, "range_proven", **key)
    return stats


def _insert_slices(store: Store, conn: Conn, r: Range, bounds: list[tuple[int, int]], slot: int) -> int:
    for k, (a, b) in enumerate(bounds):
        store.run(conn, "slice_insert", name=_cursor_name(r.migration_id, r.synchronizer_id, a, b), m=r.migration_id,
                  sync=r.synchronizer_id, min_time=us_to_dt(a), max_time=us_to_dt(b), last_before=format_us(b),
                  slot=slot + k)  # fmt: skip
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

    def lease(self, owner: str) -> Lease:
        return Lease(LeaseKind.SLICE, self.cursor_name, owner, self.epoch)


@dataclass(frozen=True)
class Partition:
    """Static `WORKER_ID`/`WORKER_COUNT` partition of slices (the guide's matrix), or none."""

    worker_id: int = 0
    worker_count: int = 1


class Leases:
    """One worker's view of the slices: claim, split, renew and release, through the store."""

    def __init__(self, db: Database, owner: str, lease_s: float, partition: Partition | None = None,
                 min_split_us: int = 120_000_000, migrations: tuple[int, ...] = ()) -> None:  # fmt: skip
        self.store = Store(db)
        self.owner = owner
        self.lease_s = lease_s
        p = partition or Partition()
        self.share = Share(p.worker_id, p.worker_count, migrations)
        self.min_split_us = min_split_us

    def claim(self, conn: Conn, exclude: list[str], dead_owners: list[str] | None = None) -> Claim | None:
        """The largest open slice whose lease is free, expired, or held by a worker known to be dead."""
        return _claim(self.store.claim_slice(conn, self.owner, self.lease_s, self.share, exclude, dead_owners or []))

    def split(self, conn: Conn, exclude: list[str]) -> Claim | None:
        """Take the older half of the largest slice another worker has not reached yet."""
        st = self.store
        with st.transaction(conn):
            row = st.one(conn, "slice_split_victim", owner=self.owner, exclude=exclude,
                         min_s=self.min_split_us * 2 / 1e6, **self.share.params())  # fmt: skip
            if row is None:
                return None
            victim, m, sync, min_time, last_before, slot = row
            lo = dt_to_us(min_time)
            mid = lo + (parse_us(last_before) - lo) // 2
            name = _cursor_name(m, sync, lo, mid)
            st.run(conn, "slice_raise_floor", name=victim, min_time=us_to_dt(mid))
            got = st.one(conn, "slice_insert_split", name=name, m=m, sync=sync, min_time=us_to_dt(lo),
                         max_time=us_to_dt(mid), last_before=format_us(mid), slot=slot, owner=self.owner,
                         lease_s=self.lease_s, victim=victim)  # fmt: skip
            if got is None:
                raise RuntimeError(f"split of {victim} collided with an existing slice {name}")
        log.info("split %s at %s", victim, format_us(mid))
        return _claim(got)

    def renew(self, conn: Conn) -> int:
        return self.store.renew(conn, self.owner, self.lease_s)

    def release(self, conn: Conn, claim: Claim) -> None:
        self.store.release(conn, claim.lease(self.owner))

    def remaining(self, conn: Conn) -> tuple[int, float | None]:
        """(open slices in this worker's share, seconds until the soonest foreign lease expires)."""
        with self.store.transaction(conn):
            row = self.store.one(conn, "slice_remaining", **self.share.params())
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
    cursors' sums equal the rows in the tables, even after rows were lost out of band. Import
    updates belong to no range: they are neither deleted nor counted.
    """
    try:
        start_text, end_text = window.split("/")
        start, end = parse_us(start_text), parse_us(end_text)
    except ValueError:
        raise ConfigError(
            f"--refetch takes START/END record times, e.g. 2024-06-24T00:00:00Z/2024-06-25T00:00:00Z, not {window!r}"
        ) from None
    store = Store(db)
    made = []
    with conn.transaction():
        take_lock(conn)
        for m, sync, lo_t, hi_t in store.all(conn, "ranges_all"):
            if migrations and m not in migrations:
                continue
            a, b = max(start, parse_us(lo_t)), min(end, parse_us(hi_t) + 1)
            if a >= b:
                continue
            while absorbed := store.all(conn, "refetch_absorb", m=m, sync=sync, lo=us_to_dt(a), hi=us_to_dt(b)):
                a = min(a, *(dt_to_us(lo) for lo, _ in absorbed))  # an open slice's unloaded part joins the window
                b = max(b, *(dt_to_us(hi) for _, hi in absorbed))
            window_key = {"m": m, "sync": sync, "lo": us_to_dt(a), "hi": us_to_dt(b)}
            fu, fe = store.one(conn, "window_followed_rows", **window_key)
            if fu:
                store.run(conn, "follow_uncount", updates=fu, events=fe)
            with rederived(db, conn, position(m, a), position(m, b), sync):  # the reload adds the window's facts
                ev = store.run(conn, "window_delete_events", **window_key).rowcount
                up = store.run(conn, "window_delete_updates", **window_key).rowcount
                store.run(conn, "transfers_forget", lo=position(m, a), hi=position(m, b), sync=sync)
            store.days_recount(conn, m, sync, a, b)  # the reload counts the window again as it commits
            held = store.one(conn, "range_held", m=m, sync=sync)
            name = f"refetch/{_cursor_name(m, sync, a, b)}/{uuid.uuid4().hex[:8]}"
            store.run(conn, "slice_insert_refetch", name=name, m=m, sync=sync, min_time=us_to_dt(a),
                      max_time=us_to_dt(b), last_before=format_us(b), updates=held[0] - held[2],
                      events=held[1] - held[3])  # fmt: skip
            made.append(f"{name}: removed {up:,} updates and {ev:,} events to load again")
    return made


# ----- import updates ----------------------------------------------------------------------------


def plan_imports(db: Database, conn: Conn, disc: Discovery) -> int:
    """One import cursor per migration that has import updates (skipped unless asked for)."""
    store = Store(db)
    with store.transaction(conn):
        return sum(store.run(conn, "import_insert", m=m).rowcount for m, last in disc.last_import_ids.items() if last)
