"""Verdict-only /v0/events items (`"update": null`: a transaction wholly private to others, or one
the mediator rejected; 40-50 % of MainNet's items) kept by the follower exactly once, keyed by the
update id their verdict names, its cursor moving past them. Real PostgreSQL, the simulator over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg

from procs import finish, scanfill
from scanfill.sim import Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.timeutil import format_us

LEDGER = LedgerConfig(
    seed=23,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 120),
        MigrationSpec(2, "2024-06-24T21:20:00Z", 90, synchronizers=2, import_updates=5),
    ),
    reassignment_rate=0.05,
)


def _stream(ledger: Ledger) -> list[tuple[str, int, int, str | None]]:
    """(update id, migration, record time, what the row holds) of every /v0/events item that
    carries a verdict, in stream order: updates of transactions and the verdict-only items."""
    out = [(h.update_id, h.migration_id, h.record_us, "update") for h in ledger.expected_all()
           if h.kind == "transaction"]  # fmt: skip
    for m in ledger.migration_ids():
        for i in range(ledger.specs[m].updates):
            t = ledger.verdict_only_us(m, i)
            if t is not None:
                out.append((ledger.verdict_only_id(m, i), m, t, "verdict only"))
    return sorted(out, key=lambda x: (x[1], x[2]))


def test_follower_keeps_verdict_only_items_exactly_once(db: str) -> None:
    ledger = Ledger(LEDGER)
    expected = _stream(ledger)
    only = [x for x in expected if x[3] == "verdict only"]
    assert len(only) > 60
    with Simulator(SimConfig(ledger=LEDGER)) as sim:
        # pages of 7: many end on a verdict-only item, so the next one starts after it (re-reading its microsecond)
        first = scanfill("follow", "--once", "--start", "beginning", "--page-size", "7", dsn=db, urls=sim.urls)
        out = finish(first, 120, db)
        assert first.returncode == 0, out
        again = scanfill("follow", "--once", "--page-size", "5", dsn=db, urls=sim.urls)
        out2 = finish(again, 120, db)
        assert again.returncode == 0, out2
        st = scanfill("status", "--json", dsn=db, urls=sim.urls).communicate(timeout=60)[0]
        checks = scanfill("verify", "--json", dsn=db, urls=[]).communicate(timeout=120)[0].decode()
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT update_id, migration_id, record_time, verdict->>'record_time', "
                            "verdict->>'update_id', traffic_summary IS NOT NULL FROM scan_events").fetchall()  # fmt: skip
        cursor = conn.execute("SELECT migration_id, record_text, items FROM follow_cursors WHERE stream = 'events'").fetchone()
        in_updates = conn.execute("SELECT count(*) FROM scan_events e JOIN ledger_updates u USING (update_id)").fetchone()
    got = {r[0]: r for r in rows}
    assert len(rows) == len(got) == len(expected)  # each item once, across both runs
    assert set(got) == {x[0] for x in expected}
    for uid, m, t, _ in only:
        row = got[uid]
        assert (row[1], row[2], row[3], row[4], row[5]) == (m, datetime.fromtimestamp(t / 1e6, UTC), format_us(t), uid, True)
    assert in_updates == (len(expected) - len(only),)  # the others are the stored updates' verdicts
    last = expected[-1]
    assert cursor == (last[1], format_us(last[2]), len(expected))
    assert json.loads(st)["follower"]["scan_events"] == len(expected)
    # verify holds the ledger tables to what the loaders committed; the verdicts kept beside them
    # are no update's events, so none of them counts as an orphan or an uncommitted row
    verdicts = checked(checks)
    for name in ("orphaned events (events without their update)", "rows in the tables equal what the loaders committed",
                 "every update's stored events equal its event_count", KEPT):
        assert verdicts[name]["ok"], verdicts[name]
    assert verdicts[KEPT]["detail"] == f"{len(expected)} kept / {len(expected)} committed"


KEPT = "verdicts kept (scan_events, verdict-only items too) equal what the follower committed"


def checked(out: str) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(out[out.index("["):])}


def test_verify_counts_the_verdicts_kept_through_a_rewind(db: str) -> None:
    """verify holds scan_events to what the follower committed: a row lost is named; `follow
    --rewind` removing events rows (an earlier release's corrupted item, at migration 99) uncounts them."""
    with Simulator(SimConfig(ledger=LEDGER)) as sim:
        out = finish(scanfill("follow", "--once", "--start", "beginning", dsn=db, urls=sim.urls), 120, db)
        n = len(_stream(Ledger(LEDGER)))
        with psycopg.connect(db, autocommit=True) as conn:  # what one corrupted item used to leave
            conn.execute("INSERT INTO scan_events (update_id, migration_id, domain_id, record_time, verdict) "
                         "SELECT update_id || '-99', 99, domain_id, record_time, verdict FROM scan_events LIMIT 1")
            conn.execute("UPDATE follow_cursors SET items = items + 1, migration_id = 99 WHERE stream = 'events'")
        fixed = finish(scanfill("follow", "--once", "--rewind", dsn=db, urls=sim.urls), 120, db)
        assert "migration 99" in fixed, fixed
        after = checked(scanfill("verify", "--json", dsn=db, urls=[]).communicate(timeout=120)[0].decode())
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM scan_events WHERE update_id = (SELECT max(update_id) FROM scan_events)")
        lost = checked(scanfill("verify", "--json", dsn=db, urls=[]).communicate(timeout=120)[0].decode())
    assert "followed" in out
    assert after[KEPT]["ok"] and after[KEPT]["detail"] == f"{n} kept / {n} committed", after[KEPT]
    assert not lost[KEPT]["ok"] and lost[KEPT]["detail"] == f"{n - 1} kept / {n} committed", lost[KEPT]
