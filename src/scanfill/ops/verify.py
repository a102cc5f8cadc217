"""`scanfill verify`: the guide's post-backfill checks plus the ones that would have caught the
ancestor's silent losses, including a per-window count reconciliation against Scan itself."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
from psycopg import sql

from scanfill.coord.store import Store
from scanfill.db import Conn, Database
from scanfill.load.pipeline import Pipeline
from scanfill.scan.client import ScanClient, ScanConfig, redact_url
from scanfill.timeutil import DAY_US, dt_to_us, format_us, parse_us, us_to_dt, utc_day


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    rows: list[Any] = field(default_factory=list)


def _one(conn: Any, q: sql.Composable | str, params: Any = None) -> Any:
    row = conn.execute(q, params).fetchone()
    return None if row is None else row[0]


def checks(db: Database) -> list[Check]:
    from scanfill.lake.known import ledger_lakes

    if lakes := ledger_lakes(db):  # the ledger tables are empty by design: checking them would fail and mislead
        return _checks_in_lake(db, lakes)
    t = db.t
    out: list[Check] = []
    with db.connect(autocommit=True, application="scanfill verify") as conn:
        n = _one(conn, sql.SQL("SELECT count(*) FROM {e} e LEFT JOIN {u} u ON e.update_id = u.update_id "
                               "AND e.migration_id = u.migration_id WHERE u.update_id IS NULL").format(e=t("ledger_events"), u=t("ledger_updates")))  # fmt: skip
        out.append(Check("orphaned events (events without their update)", n == 0, f"{n:,}"))
        rows = conn.execute(sql.SQL("SELECT migration_id, min(round), max(round), count(*), count(round) FROM {} "
                                    "GROUP BY 1 ORDER BY 1").format(t("ledger_updates"))).fetchall()  # fmt: skip
        out.append(Check("round distribution per migration", True,
                         "; ".join(f"migration {m}: rounds {lo}..{hi}, {c:,} updates ({c - r:,} without a round)"
                                   for m, lo, hi, c, r in rows) or "no updates", rows))  # fmt: skip
        nu = _one(conn, sql.SQL("SELECT count(*) FROM {} WHERE migration_id IS NULL").format(t("ledger_updates")))
        ne = _one(conn, sql.SQL("SELECT count(*) FROM {} WHERE migration_id IS NULL").format(t("ledger_events")))
        out.append(Check("NULL migration ids", nu == 0 and ne == 0, f"updates {nu:,}, events {ne:,}"))
        store = Store(db)
        out.append(_plan_done(store, conn))
        out.append(_coverage(db, conn))
        out.append(_days_ledger(db, conn))
        out.append(_findings(db, conn))
        out.append(_contract_state(db, conn))
        for table, key in (("ledger_updates", "update_id"), ("ledger_events", "event_id")):
            has_pk = _one(conn, "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
                          (db.qualified(table),))  # fmt: skip
            if has_pk:
                out.append(Check(f"no duplicate {key}", True, "guaranteed by the primary key"))
                continue
            d = _one(conn, sql.SQL("SELECT count(*) - count(DISTINCT ({k}, migration_id)) FROM {t}").format(
                k=sql.Identifier(key), t=t(table)))  # fmt: skip
            out.append(Check(f"no duplicate {key}", d == 0, f"{d:,} duplicate rows (an id is one per migration: "
                                                             "import updates repeat contract ids)"))  # fmt: skip
        bad = conn.execute(sql.SQL("""
            SELECT u.update_id, u.event_count, coalesce(e.n, 0) FROM {u} u
            LEFT JOIN (SELECT update_id, migration_id, count(*) AS n FROM {e} GROUP BY 1, 2) e
                USING (update_id, migration_id)
            WHERE u.event_count <> coalesce(e.n, 0) LIMIT 20""").format(u=t("ledger_updates"), e=t("ledger_events"))
        ).fetchall()  # fmt: skip
        out.append(Check("every update's stored events equal its event_count", not bad,
                         f"{len(bad)}{'+' if len(bad) == 20 else ''} update(s) differ", bad))  # fmt: skip
        out.append(_rounds_advance(db, conn))
        cnt = store.committed_vs_stored(conn)
        out.append(Check("rows in the tables equal what the loaders committed", cnt.equal,
                         f"updates {cnt.updates_stored:,} stored / {cnt.updates_committed:,} committed, events "
                         f"{cnt.events_stored:,} / {cnt.events_committed:,}"))  # fmt: skip
        committed, kept = store.scan_events_vs_committed(conn)
        out.append(Check("verdicts kept (scan_events, verdict-only items too) equal what the follower committed",
                         committed == kept, f"{kept:,} kept / {committed:,} committed"))  # fmt: skip
    return out


def _checks_in_lake(db: Database, lakes: list[Any]) -> list[Check]:
    """A database loaded with `run --lake`: what it holds itself (cursors, coverage, findings,
    contract state kept while loading, verdicts), and where the ledger is, with the command that
    checks it there (nothing is read from the empty ledger tables, no day is marked from them)."""
    store = Store(db)
    shown = ", ".join(x.shown for x in lakes)
    out = [Check("the ledger's rows are in a lake, not in the ledger tables", True,
                 f"{sum(x.updates for x in lakes):,} updates and {sum(x.events for x in lakes):,} events committed "
                 f"to {shown}: `scanfill verify --lake {lakes[0].shown}` checks them there")]  # fmt: skip
    with db.connect(autocommit=True, application="scanfill verify") as conn:
        out.append(_plan_done(store, conn))
        out.append(_coverage(db, conn))
        out.append(_findings(db, conn))
        stale = _one(conn, sql.SQL("SELECT value FROM {} WHERE key = 'contracts_stale'").format(db.t("scanfill_meta")))
        out.append(Check("contract state kept by the loaders", not stale,
                         f"not kept for the whole copy ({stale}): run `scanfill rebuild-state` (it reads the lake)"
                         if stale else "kept in each commit of the load (`verify --acs-at` compares it with the "
                         "scans)"))  # fmt: skip
        out.append(_rounds_advance(db, conn))
        committed, kept = store.scan_events_vs_committed(conn)
        out.append(Check("verdicts kept (scan_events, verdict-only items too) equal what the follower committed",
                         committed == kept, f"{kept:,} kept / {committed:,} committed"))  # fmt: skip
    return out


def refetch_day(m: int, day: date) -> str:
    """The command that loads one UTC day of a migration again (refetch clips it to each range)."""
    a = dt_to_us(datetime.combine(day, time(), tzinfo=UTC))
    return f"scanfill run --migration {m} --refetch {format_us(a)}/{format_us(a + DAY_US)}"


def _days_ledger(db: Database, conn: Any) -> Check:
    """The ledger the loaders kept equals an independent count of the ledger tables, day by day
    (both read in one snapshot, so a commit landing meanwhile is no difference). A day that differs
    is recorded in the ledger: counted again from the tables, and a gap with the reason and the
    refetch that repairs it, so status, report and the watermark stop claiming it; a day whose
    tables hold again what the loaders committed is cleared."""
    store = Store(db)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        kept, counted = store.days_ledger(conn), store.days_counted(conn)
    keys = [k for k in sorted(set(kept) | set(counted)) if kept.get(k, (0, 0)) != counted.get(k, (0, 0))]
    bad = [f"migration {m} {sync[:30]} {day}: ledger {kept.get((m, sync, day), (0, 0))}, tables "
           f"{counted.get((m, sync, day), (0, 0))} (updates, events)" for m, sync, day in keys]  # fmt: skip
    with store.transaction(conn):
        store.days_settled(conn, counted)  # days whose tables hold again what the loaders committed
        for m, sync, day in keys:
            (ku, ke), (cu, ce) = kept.get((m, sync, day), (0, 0)), counted.get((m, sync, day), (0, 0))
            a = dt_to_us(datetime.combine(day, time(), tzinfo=UTC))
            store.days_recount(conn, m, sync, a, a + DAY_US, repaired=False)
            store.day_found(conn, m, sync, day, f"verify found {cu:,} updates and {ce:,} events in the tables "
                            f"where the loaders committed {ku:,} and {ke:,} (rows changed outside scanfill)",
                            refetch_day(m, day), expected=(ku, ke))  # fmt: skip
    return Check("the completeness ledger equals a count of the tables, day by day", not bad,
                 f"{len(counted)} day(s) with rows, {len(bad)} differ" + ("" if not bad else
                 " (rows changed outside scanfill: each such day is now a gap in the ledger, with the "
                 "`run --refetch` that reloads it)"), bad[:20])  # fmt: skip


def _findings(db: Database, conn: Any) -> Check:
    """Days an earlier `verify` proved wrong stay wrong until repaired: the check fails while any is
    open. Repaired: a refetch covering the day, a scan serving exactly its stored copy, or (counts)
    the tables holding again what the loaders committed (a refetch of just the part lost)."""
    found = Store(db).day_findings(conn)
    return Check("no day that verify proved wrong is left unrepaired", not found,
                 f"{len(found)} day(s) a gap until repaired" if found else "none",
                 [f"migration {f.migration_id} {f.synchronizer_id[:30]} {f.day}: {f.finding}; `{f.repair}` "
                  "reloads the day" for f in found])  # fmt: skip


def _rounds_advance(db: Database, conn: Any) -> Check:
    """The round invariant that holds on the real network: OpenMiningRounds are created in
    increasing round order. Splice's `AmuletRules_AdvanceOpenMiningRounds` requires the three open
    rounds to be consecutive and creates the latest + 1 (AmuletRules.daml); the bootstrap creates
    0, 1, 2 in one transaction. A subset of the history keeps that order, so a partial copy holds it.
    Checked here: none is created below an earlier one's round (a round's second OpenMiningRound is
    `rounds_check()`'s "one contract per phase").

    Not a rule: that an update's round grows with record time. Several rounds are open at once and
    a transaction may use any of them: on MainNet an SvRewardCoupon for round 1 (2024-06-24
    21:08:39.536717Z) is followed by a ValidatorFaucetCoupon for round 0 (21:13:14.686816Z)."""
    bad = conn.execute(sql.SQL("""
        SELECT contract_id, round, prev FROM (
            SELECT contract_id, (payload->'round'->>'number')::bigint AS round,
                   max((payload->'round'->>'number')::bigint) OVER (
                       ORDER BY created_pos, (payload->'round'->>'number')::bigint
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
            FROM {} WHERE template_name = 'Splice.Round:OpenMiningRound' AND created_pos IS NOT NULL) x
        WHERE round < prev LIMIT 20""").format(db.t("contracts"))).fetchall()  # fmt: skip
    return Check("OpenMiningRounds are created in increasing round order", not bad,
                 f"{len(bad)} created below an earlier one's round" if bad else "in order",
                 [f"OpenMiningRound {cid} for round {r} created after round {p}" for cid, r, p in bad])  # fmt: skip


_STATE_GAPS = {
    "a create stored without its contract's life starting there": """
        SELECT e.contract_id FROM {e} e JOIN {u} u ON u.update_id = e.update_id AND u.migration_id = e.migration_id
        WHERE u.kind = 'transaction' AND e.event_type = 'created_event' AND NOT EXISTS (
            SELECT 1 FROM {c} c WHERE md5(c.contract_id)::uuid = md5(e.contract_id)::uuid
              AND c.contract_id = e.contract_id AND c.created_update_id = e.update_id
              AND c.created_migration_id = e.migration_id) LIMIT 5""",
    "a consuming exercise stored without its contract's life ending by then": """
        SELECT e.contract_id FROM {e} e WHERE e.consuming AND e.contract_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM {c} c WHERE md5(c.contract_id)::uuid = md5(e.contract_id)::uuid AND c.contract_id = e.contract_id
              AND c.archived_pos <= {s}.ledger_position(e.migration_id, e.record_time)) LIMIT 5""",
    "a lifespan no stored event backs": """
        SELECT c.contract_id FROM {c} c WHERE (c.created_update_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM {e} e WHERE e.contract_id = c.contract_id AND e.update_id = c.created_update_id
              AND e.migration_id = c.created_migration_id AND e.event_type = 'created_event'))
          OR (c.archived_update_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM {e} e WHERE e.contract_id = c.contract_id AND e.update_id = c.archived_update_id
              AND e.migration_id = c.archived_migration_id AND e.consuming)) LIMIT 5""",
}


def _contract_state(db: Database, conn: Any) -> Check:
    """`contracts` says what the stored events say: every create starts a life there, every consuming
    exercise ends it by then, and every lifespan is backed by a stored event."""
    stale = _one(conn, sql.SQL("SELECT value FROM {} WHERE key = 'contracts_stale'").format(db.t("scanfill_meta")))
    if stale:
        return Check("contract state equals the stored ledger", False,
                     f"not kept for the whole copy ({stale}): run `scanfill rebuild-state`")  # fmt: skip
    rows = []
    for what, q in _STATE_GAPS.items():
        got = conn.execute(sql.SQL(q).format(e=db.t("ledger_events"), u=db.t("ledger_updates"), c=db.t("contracts"),
                                             s=sql.Identifier(db.schema))).fetchall()  # fmt: skip
        rows += [f"{what}: contract {r[0]}" for r in got]
    n = _one(conn, sql.SQL("SELECT count(*) FROM {}").format(db.t("contracts")))
    return Check("contract state equals the stored ledger", not rows,
                 f"{n:,} contracts" + (f"; {len(rows)} inconsistencies (first ones listed; `scanfill rebuild-state` "
                                      "derives it again)" if rows else ""), rows)  # fmt: skip


def _plan_done(store: Store, conn: Conn) -> Check:
    """The plan's own account: every slice and import cursor complete, every range proven."""
    progress = store.progress(conn)
    open_slices = store.open_slices(conn)
    return Check("every slice complete, every range from a scan reporting complete, every import cursor complete",
                 progress.complete,
                 f"{len(open_slices)} open slice(s), {progress.ranges_unproven} unproven range(s), "
                 f"{progress.imports_open} open import cursor(s), {progress.ranges} range(s)",
                 open_slices[:20])  # fmt: skip


def _coverage(db: Database, conn: Any) -> Check:
    """Slices of each range must tile [min, max + 1 us) exactly, no gap, no overlap; where a
    follower took over a range's top, the slices end there and the follower owns the rest."""
    problems = []
    store = Store(db)
    ranges = store.ranges_coverage(conn)
    for r in ranges:
        m, sync, hi = r.migration_id, r.synchronizer_id, r.slices_end_text
        expect = parse_us(r.min_text)
        for name, a, b in store.range_slices(conn, m, sync):
            a_us, b_us = dt_to_us(a), dt_to_us(b)
            if a_us != expect:
                kind = "gap" if a_us > expect else "overlap"
                problems.append(f"migration {m} {sync[:30]}: {kind} at {format_us(min(a_us, expect))} ({name})")
            expect = b_us
        if expect != parse_us(hi) + 1:
            problems.append(f"migration {m} {sync[:30]}: slices end at {format_us(expect)}, range at {hi} + 1 us")
    return Check("slices (then the follower) cover every range without gap or overlap", not problems,
                 f"{len(ranges)} range(s), {len(problems)} problem(s)", problems[:20])  # fmt: skip


# ----- against Scan ------------------------------------------------------------------------------


@dataclass
class WindowDiff:
    migration_id: int
    synchronizer_id: str
    start_us: int
    end_us: int
    db_count: int
    scan_count: int
    window_us: int = DAY_US
    url: str = ""  # the scan whose copy differs from the stored one
    missing: int = 0  # updates the scan has and the database lacks
    extra: int = 0  # updates the database has and the scan lacks
    changed: int = 0  # updates whose content differs
    examples: tuple[str, ...] = ()

    @property
    def window(self) -> str:
        """The whole (aligned) window, as `scanfill run --refetch` takes it; refetch clips it to each range."""
        a = self.start_us - self.start_us % self.window_us
        return f"{format_us(a)}/{format_us(a + self.window_us)}"


def normalize(item: dict[str, Any]) -> dict[str, Any]:
    """An update as both endpoints serve it. `/v2/updates` (what `follow` stores) and
    `updates-before` (what `run` stores, and what verify reads) differ in exactly this: `/v2`
    has no `offset` on transactions and omits `external_transaction_hash` when it is null
    (`events_by_id` order differs too; digests sort keys). Nothing else is normalised."""
    if "offset" in item or item.get("external_transaction_hash", 0) is None:
        item = {k: v for k, v in item.items() if k != "offset" and not (k == "external_transaction_hash" and v is None)}
    return item


def _canonical(item: dict[str, Any], envelope: bool) -> bytes:
    """Digest of an update's content, keys sorted; `envelope`: as stored without its events."""
    item = normalize(item)
    if envelope and "events_by_id" in item:
        item = {**item, "events_by_id": {}}
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


async def _scan_items(pages: Pipeline, m: int, sync: str, lo: int, hi: int, url: str) -> list[dict[str, Any]]:
    """Every update one scan holds in [lo, hi), by paging backwards through the pipeline (503s,
    garbage and refusals handled as `run` handles them)."""
    out: list[dict[str, Any]] = []
    before = hi
    while True:
        page = await pages.scan_items(m, sync, before, lo, url)
        if not page:
            return out
        out.extend(page)
        before = parse_us(page[-1]["record_time"])


def _stored(db: Database, conn: Any, m: int, sync: str, a: int, b: int, lake: Any = None
            ) -> dict[str, tuple[bytes, bool]]:  # fmt: skip
    """update id -> (content digest, stored without its events) of the stored copy of a window: the
    database's, or with `lake` (a DuckDB connection over its updates table) the lake's."""
    if lake is not None:
        rows = lake.execute("SELECT update_id, update_json, event_count FROM u WHERE migration_id = ? AND "
                            "synchronizer_id = ? AND record_time >= ? AND record_time < ? AND kind <> 'import'",
                            [m, sync, us_to_dt(a), us_to_dt(b)]).fetchall()  # fmt: skip
    else:
        rows = conn.execute(sql.SQL("SELECT update_id, update_json::text, event_count FROM {} WHERE migration_id = %s "
                                    "AND synchronizer_id = %s AND record_time >= %s AND record_time < %s "
                                    "AND kind <> 'import'").format(db.t("ledger_updates")),
                            (m, sync, us_to_dt(a), us_to_dt(b))).fetchall()  # fmt: skip
    out = {}
    for uid, text, n in rows:
        item = orjson.loads(text)
        envelope = n > 0 and item.get("events_by_id") == {}
        out[uid] = (_canonical(item, envelope), envelope)
    return out


@dataclass
class DayVerdict:
    """What `verify --against-scan --days` found for one (migration, synchronizer, day)."""

    migration_id: int
    synchronizer_id: str
    day: date
    stored: int
    digest: str  # of the stored copy (ids and content), as each scan's copy is digested
    agreeing: list[str] = field(default_factory=list)  # scans serving exactly the stored copy
    differing: list[str] = field(default_factory=list)


def _digest(items: dict[str, bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for uid in sorted(items):
        h.update(uid.encode() + b"\0" + items[uid])
    return h.hexdigest()


async def against_scan(db: Database, scan: ScanConfig, window_us: int = DAY_US, concurrency: int = 8,
                       days: list[date] | None = None, lake: str | None = None,
                       ) -> tuple[Check, list[WindowDiff], list[DayVerdict]]:  # fmt: skip
    """Compare the stored copy, window by window, with every given scan: which updates each scan
    has that the database lacks, lacks that it has, or serves with other content (a digest of the
    content with keys sorted, so field order does not count; rows stored in `envelope` mode are
    compared without their events, which are then checked by count). With `days`, only those UTC
    days, a day per window, and each day's verdict is recorded in the completeness ledger: which
    scans serve exactly the stored copy, and its digest."""
    if days is not None:
        window_us = DAY_US
    wanted = None if days is None else set(days)
    reader = None
    if lake is not None:  # the lake's copy, as its readers see it (the Delta log's committed files)
        import duckdb

        from scanfill.lake import read
        from scanfill.lake.layout import Lake

        reader = duckdb.connect()
        reader.register("u", read.table(Lake(lake), "updates").to_pyarrow_dataset())
    with db.connect(autocommit=True, application="scanfill verify") as conn:
        windows = []
        for m, sync, lo_t, hi_t in Store(db).ranges(conn):
            lo, hi = parse_us(lo_t), parse_us(hi_t) + 1
            start = lo - lo % window_us
            while start < hi:
                a, b = max(start, lo), min(start + window_us, hi)
                if wanted is None or utc_day(start) in wanted:
                    windows.append((m, sync, a, b, _stored(db, conn, m, sync, a, b, reader)))
                start += window_us
    sem = asyncio.Semaphore(concurrency)
    diffs: list[WindowDiff] = []
    verdicts: dict[tuple[int, str, int], DayVerdict] = {}
    for m, sync, a, _, stored in windows:
        verdicts[(m, sync, a)] = DayVerdict(m, sync, utc_day(a), len(stored),
                                            _digest({u: d for u, (d, _) in stored.items()}))  # fmt: skip
    async with ScanClient(scan) as client:
        pages = Pipeline(client)

        async def one(url: str, m: int, sync: str, a: int, b: int, stored: dict[str, tuple[bytes, bool]]) -> None:
            async with sem:
                items = await _scan_items(pages, m, sync, a, b, url)
            theirs = {str(i["update_id"]): i for i in items}
            missing = [u for u in theirs if u not in stored]
            extra = [u for u in stored if u not in theirs]
            changed = [u for u, i in theirs.items() if u in stored and _canonical(i, stored[u][1]) != stored[u][0]]
            verdict = verdicts[(m, sync, a)]
            (verdict.differing if missing or extra or changed else verdict.agreeing).append(redact_url(url))
            if missing or extra or changed:
                diffs.append(WindowDiff(m, sync, a, b, len(stored), len(theirs), window_us, redact_url(url),
                                        len(missing), len(extra), len(changed),
                                        tuple(sorted(missing + extra + changed)[:3])))  # fmt: skip

        await asyncio.gather(*(one(u, *w) for u in client.urls for w in windows))
    diffs.sort(key=lambda d: (d.migration_id, d.synchronizer_id, d.start_us, d.url))
    found = sorted(verdicts.values(), key=lambda v: (v.day, v.migration_id, v.synchronizer_id))
    for v in found:
        v.agreeing.sort()
        v.differing.sort()
    if window_us == DAY_US:  # a window is a UTC day: what was found is the day's (in the ledger)
        store = Store(db)
        with db.connect(autocommit=True, application="scanfill verify") as conn, store.transaction(conn):
            for v in found:
                if days is not None:  # verified_by: the days asked for (a scan serving the copy clears a finding)
                    store.day_verified(conn, v.migration_id, v.synchronizer_id, v.day, v.agreeing, v.digest, v.stored)
                elif v.agreeing and lake is None:
                    store.day_vouched(conn, v.migration_id, v.synchronizer_id, v.day)
                if lake is None and v.differing and not v.agreeing:  # no scan asked serves the stored copy
                    how = "; ".join(f"{d.url}: {d.missing:,} missing, {d.extra:,} extra, {d.changed:,} with other "
                                    f"content" for d in diffs if (d.migration_id, d.synchronizer_id,
                                    utc_day(d.start_us)) == (v.migration_id, v.synchronizer_id, v.day))  # fmt: skip
                    store.day_found(conn, v.migration_id, v.synchronizer_id, v.day,
                                    f"verify --against-scan found the stored copy ({v.stored:,} updates) differs "
                                    f"from every scan asked ({how})", refetch_day(v.migration_id, v.day))  # fmt: skip
    detail = f"{len(windows)} window(s) compared with {len(scan.urls)} scan(s), {len(diffs)} (window, scan) pair(s) differ"
    return Check("the stored copy equals each scan's, window by window", not diffs, detail,
                 [f"migration {d.migration_id} {d.synchronizer_id[:30]} {format_us(d.start_us)}/{format_us(d.end_us)}: "
                  f"{d.url}: {d.missing} missing, {d.extra} extra, {d.changed} with other content (database "
                  f"{d.db_count:,}, scan {d.scan_count:,}; e.g. {', '.join(d.examples)})" for d in diffs]), diffs, found  # fmt: skip


# ----- a lake ------------------------------------------------------------------------------------


def lake_checks(db: Database, target: str) -> list[Check]:
    """A lake written by `scanfill export`: every partition holds exactly what the database stores
    for it (counted from the Delta log's file statistics, i.e. only committed files), no id twice,
    every manifest's files present with their sha256, and whether partitions changed since."""
    import json

    from scanfill.lake import read
    from scanfill.lake.layout import TABLES, Lake, require_libraries

    require_libraries(target)
    lake = Lake(target)
    target = lake.root  # the canonical name its bookkeeping is keyed by, whatever the spelling given
    if not read.exists(lake, "updates"):
        return [Check(f"a scanfill lake at {lake.shown}", False,
                      f"no Delta table there: run `scanfill export --to {lake.shown}` first")]  # fmt: skip
    store = Store(db)
    with db.connect(autocommit=True, application="scanfill verify") as conn:
        from scanfill.lake.names import adopt

        adopt(store, conn, lake)  # an older release's spelling of this lake: its bookkeeping, under this name
        stored = store.export_source(conn)
        loaded = store.lake_partitions(conn, target)  # written by `run --lake` / `follow --lake`
        if loaded:
            changed: set[Any] = set()
            described = sorted(loaded)
        else:
            changed = {(p.migration_id, p.day) for p in store.export_partitions(conn, target)}
            described = [(e.migration_id, e.day) for e in store.export_state(conn, target)]
    rows = {t: read.partition_rows(lake, t) for t in TABLES}
    keys = (set(stored) | set(rows["updates"]) | set(rows["events"])) - changed
    bad = [f"migration {m} {d}: lake {rows['updates'].get((m, d), 0):,} updates / {rows['events'].get((m, d), 0):,} "
           f"events, database {stored.get((m, d), (0, 0))[0]:,} / {stored.get((m, d), (0, 0))[1]:,}"
           for m, d in sorted(keys)
           if (rows["updates"].get((m, d), 0), rows["events"].get((m, d), 0)) != stored.get((m, d), (0, 0))]  # fmt: skip
    what = "the loaders committed" if loaded else "the database stores"
    repair = ""
    if bad and not loaded:  # export checks the log against what it recorded and writes these again
        repair = f": `scanfill export --to {lake.shown}` writes them again"
    out = [Check(f"every lake partition holds exactly the rows {what} for it", not bad,
                 f"{len(keys)} partition(s) compared, {len(bad)} differ{repair}", bad[:20])]
    if loaded:
        pending = sum(loaded.values())
        out.append(Check("every committed file is published in the Delta log", not pending,
                         f"{pending} file(s) committed, not yet published (the next commit or `scanfill export "
                         f"--to {lake.shown}` publishes them)" if pending else "all published"))  # fmt: skip
    else:
        out.append(Check("the lake is current with the database", not changed,
                         f"{len(changed)} partition(s) changed since the last export"
                         + (f": `scanfill export --to {lake.shown}`" if changed else ""),
                         [f"migration {m} {d}" for m, d in sorted(changed)][:20]))  # fmt: skip
    dups = {t: read.duplicate_ids(lake, t, "update_id" if t == "updates" else "event_id") for t in TABLES}
    out.append(Check("no update or event twice in the lake", not any(dups.values()),
                     f"updates {dups['updates']:,}, events {dups['events']:,} duplicate rows"))  # fmt: skip
    broken = []
    for m, day in described:
        for t in TABLES:
            if t == "events" and not rows["events"].get((m, day)):
                continue  # a partition of updates without events has no events file
            try:
                doc = json.loads(lake.read(lake.manifest(t, m, day.isoformat())))
                for item in doc["files"]:
                    if hashlib.sha256(lake.read(item["path"])).hexdigest() != item["sha256"]:
                        broken.append(f"{item['path']}: sha256 differs from its manifest")
            except Exception as exc:  # a missing object, a bad document: named, whatever the store says
                broken.append(f"{t} migration {m} {day}: manifest unreadable ({type(exc).__name__}: {exc})")
    out.append(Check("every manifest's files are there, with their sha256", not broken,
                     f"{len(described)} partition(s), {len(broken)} problem(s)", broken[:20]))  # fmt: skip
    return out
