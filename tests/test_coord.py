"""The coordination rules, written once in coord/store: import cursors are treated like slices
everywhere (leases, guards, resets, "complete", refetch accounting). Each test failed before the
store existed (issue 10's list)."""

from __future__ import annotations

import psycopg

from dbcheck import assert_db_matches
from scanfill.coord.store import Share, Store, guard_timeout
from scanfill.db import Database
from scanfill.load.run import overall_state, run
from scanfill.ops import maintenance, verify
from scanfill.ops.monitor import status
from scanfill.sim import Ledger, SimConfig, Simulator
from shared import SMALL, options
from statecheck import assert_state_matches


def load_with_imports(db: str, urls: list[str]) -> None:
    summary = run(options(db, urls, concurrency=3, imports=True, page_size=50))
    assert summary.complete, summary.failures
    assert_db_matches(db, Ledger(SMALL), imports=True)


def test_abort_truncate_makes_the_next_run_load_import_updates_again(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        load_with_imports(db, sim.urls)
        maintenance.truncate_all(Database(db))
        assert contracts(db) == 0  # contract state goes with the ledger
        load_with_imports(db, sim.urls)
    assert_state_matches(db, Ledger(SMALL))


def test_unlogged_crash_reset_makes_the_next_run_load_import_updates_again(db: str) -> None:
    d = Database(db)
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        load_with_imports(db, sim.urls)
        maintenance.prepare(d, echo=lambda _: None)  # UNLOGGED, canary armed
        with psycopg.connect(db, autocommit=True) as conn:  # what crash recovery does to UNLOGGED tables
            conn.execute("TRUNCATE ledger_updates, ledger_events, scanfill_unlogged_canary")
        assert maintenance.check_unlogged_crash(d, echo=lambda _: None)
        with psycopg.connect(db) as conn:
            left = conn.execute("SELECT count(*) FROM backfill_import_cursors WHERE complete").fetchone()
        assert left == (0,) and contracts(db) == 0  # what crash recovery empties, the reset empties with it
        load_with_imports(db, sim.urls)
    assert_state_matches(db, Ledger(SMALL))


def contracts(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM contracts").fetchone()
    return int(row[0]) if row else -1


def test_a_heartbeat_renews_import_leases_too(db: str) -> None:
    d = Database(db)
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        run(options(db, sim.urls, imports=True, plan_only=True))
    store = Store(d)
    with d.connect(autocommit=True) as conn:
        got = store.claim_import(conn, "w1", lease_s=1, share=Share())
        assert got is not None
        assert store.renew(conn, "w1", lease_s=600) == 1
        row = conn.execute("SELECT lease_until > now() + interval '500 seconds' FROM backfill_import_cursors "
                           "WHERE lease_owner = 'w1'").fetchone()  # fmt: skip
    assert row == (True,)


def test_an_import_commit_guard_follows_the_lease(db: str) -> None:
    d = Database(db)
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        run(options(db, sim.urls, imports=True, plan_only=True))
    store = Store(d)
    with d.connect(autocommit=True) as conn:
        got = store.claim_import(conn, "w1", lease_s=30, share=Share())
        assert got is not None
        lease, after = got
        with conn.transaction():
            store.lock_for_commit(conn, lease, 30, after)
            shown = conn.execute("SHOW statement_timeout").fetchone()
    assert guard_timeout(30) == "120000ms" and shown == ("2min",)


def test_complete_means_the_same_in_run_status_and_verify(db: str) -> None:
    d = Database(db)
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        load_with_imports(db, sim.urls)
    assert overall_state(d).complete and status(d)["totals"]["complete"]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE backfill_import_cursors SET complete = false")
    assert not overall_state(d).complete
    assert not status(d)["totals"]["complete"]
    check = next(c for c in verify.checks(d) if c.name.startswith("every slice complete"))
    assert not check.ok and "1 open import cursor" in check.detail


def test_refetch_with_import_updates_keeps_the_accounting_exact(db: str) -> None:
    d = Database(db)
    ledger = Ledger(SMALL)
    _, _, lo, hi = next(r for r in ledger.ranges() if r[0] == 4)
    from scanfill.timeutil import format_us

    window = f"{format_us(lo + (hi - lo) // 3)}/{format_us(lo + (hi - lo) // 2)}"
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        load_with_imports(db, sim.urls)
        assert all(c.ok for c in verify.checks(d)), [c for c in verify.checks(d) if not c.ok]
        summary = run(options(db, sim.urls, concurrency=3, imports=True, refetch=(window,)))
    assert summary.complete and summary.updates > 0
    assert_db_matches(db, ledger, imports=True)
    failed = [c for c in verify.checks(d) if not c.ok]
    assert not failed, failed
