"""The one page pipeline, driven by both directions: a corrupting proxy in front of the simulator
(HTML, truncated and invalid JSON, empty bodies, missing fields, duplicated and swapped items, a
wrong migration, a wrong synchronizer, a record time outside the window), with and without
agreement, ends with the copy exact and the follower still running. Real PostgreSQL, the
simulator over HTTP."""

from __future__ import annotations

import signal

import psycopg
import pytest

from dbcheck import assert_days_match, assert_db_matches
from procs import scanfill, wait_for
from scanfill.sim import FaultConfig, InstanceConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.sim.corrupt import KINDS
from statecheck import assert_state_matches

BASE = LedgerConfig(
    seed=23,
    migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 120), MigrationSpec(2, "2024-06-24T22:00:00Z", 160, synchronizers=2)),
    shared_microseconds=True,
    reassignment_rate=0.05,
)
GROW = 300


def stored(dsn: str, where: str = "true") -> int:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('ledger_updates')").fetchone() == (None,):
            return 0
        row = conn.execute(f"SELECT count(*) FROM ledger_updates WHERE {where}").fetchone()
    return int(row[0]) if row else 0


def corrupted(sim: Simulator, k: int) -> dict[str, int]:
    """How many pages the scan spoiled, by kind and by endpoint ("at_/v2/updates")."""
    return {name[len("corrupt_"):]: n for name, n in sim.stats(k)["faults"].items() if name.startswith("corrupt_")}


PATHS = {"at_/v0/backfilling/updates-before", "at_/v2/updates", "at_/v0/events"}


def events_at(db: str) -> tuple[int, int]:
    """Where the /v0/events stream's cursor is: (migration, record time in microseconds)."""
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT migration_id, (extract(epoch FROM record_text::timestamptz) * 1e6)::bigint "
                           "FROM follow_cursors WHERE stream = 'events'").fetchone()  # fmt: skip
    return (int(row[0]), int(row[1])) if row else (-1, 0)


# agree=1 rides out every spoiled page by retries and backoff alone (about 50 s): a long chaos run
@pytest.mark.parametrize("agree", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_a_corrupting_proxy_in_both_directions_leaves_the_copy_exact_and_the_follower_running(db: str,
                                                                                             agree: int) -> None:  # fmt: skip
    """Every kind of spoiled page reaches the backfill and the follower (updates and events
    streams); each is refused whole, asked again (of another scan where there is one) and the copy
    ends exact, nothing of migration 99 or the bogus synchronizer stored, the follower alive."""
    spoil = FaultConfig(every_corrupt=2 if agree > 1 else 3)
    instances = (InstanceConfig("sv-bad", faults=spoil), *tuple(InstanceConfig(f"sv-{k}") for k in range(agree)))
    config = SimConfig(ledger=BASE.with_growth(GROW), grow=60.0, grow_updates=GROW, instances=instances)
    full = Ledger(config.ledger)
    with Simulator(config) as sim:
        p = scanfill("run", "--follow", "--follow-poll", "0.2", "--no-progress", "--no-discover", "--concurrency", "4",
                     "--page-size", "10", "--agree", str(agree), dsn=db, urls=sim.urls)  # fmt: skip
        wait_for(lambda: sim.stats()["grown"], timeout=120, what="the ledger to stop growing")
        wait_for(lambda: stored(db) == full.total_updates(), timeout=120, what="the follower to catch up")
        last = max(max((h.migration_id, h.record_us) for h in full.expected_all()),
                   max((m, t) for m in full.migration_ids() for i in range(full.specs[m].updates)
                       if (t := full.verdict_only_us(m, i)) is not None))  # fmt: skip
        wait_for(lambda: events_at(db) >= last, timeout=120, what="the events stream to catch up")
        try:
            wait_for(lambda: set(corrupted(sim, 0)) >= set(KINDS) | PATHS, timeout=60,
                     what="every kind of spoiled page, on every paging endpoint")  # fmt: skip
        except TimeoutError:
            p.kill()
            raise AssertionError(f"spoiled: {corrupted(sim, 0)}; loader said: {p.communicate()[0].decode()[-3000:]}") from None
        assert p.poll() is None, "the follower stopped"
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0].decode()
        assert p.returncode == 0, out
    assert "history complete" in out and "followed" in out, out
    assert "malformed page" in out or agree > 1, out
    assert_db_matches(db, full)
    assert_state_matches(db, full)  # spoiled pages left nothing in contract state either
    assert_days_match(db)  # and the day ledger kept exact through it
    assert stored(db, "migration_id = 99 OR synchronizer_id LIKE 'bogus%'") == 0
    with psycopg.connect(db) as conn:
        cursor = conn.execute("SELECT migration_id FROM follow_cursors WHERE stream = 'updates'").fetchone()
        ev = conn.execute("SELECT count(*), count(*) FILTER (WHERE migration_id = 99 OR domain_id LIKE 'bogus%') "
                          "FROM scan_events").fetchone()  # fmt: skip
        unmatched = {r[0] for r in conn.execute(
            "SELECT update_id FROM scan_events WHERE update_id NOT IN (SELECT update_id FROM ledger_updates)")}
        state = conn.execute("SELECT count(*) FROM scan_disagreements").fetchone()
        kept = {(str(u), int(m), int(t)) for u, m, t in conn.execute(
            "SELECT update_id, migration_id, (extract(epoch FROM record_time) * 1e6)::bigint FROM scan_events")}
    assert cursor == (2,)  # never moved to a migration no scan has
    assert ev is not None and ev[0] == len(kept) > 50 and ev[1] == 0
    # exactly the items the scans serve from where the events stream began: none lost, none spoiled
    start = min((m, t) for _, m, t in kept)
    want = {(h.update_id, h.migration_id, h.record_us) for h in full.expected_all()
            if h.kind == "transaction" and (h.migration_id, h.record_us) >= start}  # reassignments bear no verdict
    want |= {(full.verdict_only_id(m, i), m, t) for m in full.migration_ids() for i in range(full.specs[m].updates)
             if (t := full.verdict_only_us(m, i)) is not None and (m, t) >= start}  # fmt: skip
    assert kept == want, (sorted(want - kept)[:5], sorted(kept - want)[:5])
    # an item with no update is one of the verdict-only items the scans served, never a spoiled id
    assert unmatched and unmatched <= {u for m in full.migration_ids() for u in full.verdict_only_ids(m)}
    if agree > 1:
        assert state is not None and state[0] > 0  # the spoiling scan was named and recorded
