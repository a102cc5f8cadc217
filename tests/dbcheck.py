"""Compare a loaded database with exactly what the simulator's ledger says it served."""

from __future__ import annotations

import psycopg
from psycopg import sql

from scanfill.sim import Ledger
from scanfill.timeutil import dt_to_us


def assert_db_matches(
    dsn: str, ledger: Ledger, schema: str = "public", migrations: list[int] | None = None, imports: bool = False
) -> int:
    """Every update and event id exactly once, exact record times, effective synchronizer, kind, rounds."""
    expected = [h for h in ledger.expected_all() if migrations is None or h.migration_id in migrations]
    import_ids = {
        cid
        for m in ledger.migration_ids()
        for cid in ledger.import_ids(m)
        if imports and (migrations is None or m in migrations)
    }
    with psycopg.connect(dsn) as conn:
        updates_t, events_t = (sql.Identifier(schema, t) for t in ("ledger_updates", "ledger_events"))
        rows = conn.execute(
            sql.SQL("SELECT update_id, migration_id, synchronizer_id, record_time, kind, round, event_count FROM {}")
            .format(updates_t)
        ).fetchall()
        events = conn.execute(sql.SQL("SELECT event_id, update_id FROM {}").format(events_t)).fetchall()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate update rows"
    got = {r[0]: r for r in rows if r[4] != "import"}
    assert {r[0] for r in rows if r[4] == "import"} == import_ids
    want = {h.update_id: h for h in expected}
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    assert not missing, f"{len(missing)} updates missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected updates, e.g. {sorted(extra)[:3]}"
    for uid, h in want.items():
        r = got[uid]
        assert (r[1], r[2], dt_to_us(r[3]), r[4], r[5], r[6]) == (
            h.migration_id,
            h.synchronizer_id,
            h.record_us,
            h.kind,
            h.round,
            h.event_count,
        ), (uid, r, h)
    ev_ids = [e[0] for e in events]
    assert len(ev_ids) == len(set(ev_ids)), f"{len(ev_ids) - len(set(ev_ids))} duplicate event rows"
    want_events = {eid for h in expected for eid in h.event_ids()} | {f"{cid}:0" for cid in import_ids}
    assert set(ev_ids) == want_events, (len(set(ev_ids)), len(want_events))
    return len(rows) + len(events)


def independent_day_counts(dsn: str) -> dict[tuple[int, str, str], tuple[int, int]]:
    """Updates and events per (migration, synchronizer, UTC day), counted here from the ledger tables."""
    with psycopg.connect(dsn) as conn:
        u = conn.execute("SELECT migration_id, synchronizer_id, to_char(record_time AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "
                         "count(*) FROM ledger_updates WHERE kind <> 'import' GROUP BY 1, 2, 3").fetchall()
        e = conn.execute("SELECT e.migration_id, e.synchronizer_id, to_char(e.record_time AT TIME ZONE 'UTC', "
                         "'YYYY-MM-DD'), count(*) FROM ledger_events e JOIN ledger_updates u USING (update_id, "
                         "migration_id) WHERE u.kind <> 'import' GROUP BY 1, 2, 3").fetchall()
    events = {(m, s, d): n for m, s, d, n in e}
    return {(m, s, d): (n, events.get((m, s, d), 0)) for m, s, d, n in u}


def assert_days_match(dsn: str) -> None:
    """The completeness ledger the loaders kept equals a count of the tables, day by day."""
    with psycopg.connect(dsn) as conn:
        kept = {(m, s, d.isoformat()): (int(u), int(e)) for m, s, d, u, e in conn.execute(
            "SELECT migration_id, synchronizer_id, day, updates, events FROM completeness "
            "WHERE updates > 0 OR events > 0").fetchall()}  # fmt: skip
    counted = independent_day_counts(dsn)
    assert kept == counted, sorted(set(kept.items()) ^ set(counted.items()))[:4]
