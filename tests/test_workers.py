"""Several worker processes sharing one backfill through PostgreSQL."""

from __future__ import annotations

import random
import signal
from typing import Any

import psycopg
import pytest

from dbcheck import assert_db_matches
from procs import drop_unique_keys, finish, loaded, scanfill, wait_for
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from shared import SMALL

COMMON = ("--page-size", "40", "--batch-rows", "100", "--no-progress")


def workers_rows(db: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT worker_id, state, rows_loaded FROM backfill_workers ORDER BY 1").fetchall()


def test_four_worker_processes_exactly_once(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=5))) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait() == 0
        drop_unique_keys(db)
        p = scanfill("run", "--workers", "4", "--concurrency", "3", *COMMON, dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out
    assert_db_matches(db, Ledger(SMALL))
    rows = workers_rows(db)
    assert len(rows) == 4 and all(state == "done" for _, state, _ in rows)
    assert sum(1 for *_, n in rows if n > 0) >= 3  # the work was shared


def test_killed_and_paused_workers_while_others_run(db: str) -> None:
    rnd = random.Random(7)
    total = Ledger(SMALL).total_updates()
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=15, jitter_ms=10))) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait() == 0
        drop_unique_keys(db)
        args = ("run", "--concurrency", "3", "--lease", "2", *COMMON)
        steady = scanfill(*args, dsn=db, urls=sim.urls)
        paused = scanfill(*args, dsn=db, urls=sim.urls)
        victims = [scanfill(*args, dsn=db, urls=sim.urls) for _ in range(2)]
        wait_for(lambda: loaded(db) >= total // 8, what="first progress")
        paused.send_signal(signal.SIGSTOP)  # holds leases, wakes up after they were taken over
        for v in victims:
            wait_for(lambda: loaded(db) >= rnd.randint(total // 6, total // 3), what="more progress")
            v.send_signal(signal.SIGKILL)
            v.wait()
        out = finish(steady, 240, db)
        assert steady.returncode == 0, out
        paused.send_signal(signal.SIGCONT)
        late = finish(paused, 60, db)
        assert paused.returncode == 0, late
    assert_db_matches(db, Ledger(SMALL))  # no page loaded twice: there is no unique key to stop it


def test_worker_joining_mid_run_takes_a_share(db: str) -> None:
    total = Ledger(SMALL).total_updates()
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=100))) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait() == 0
        slow = ("--page-size", "10", "--batch-rows", "50", "--no-progress")
        first = scanfill("run", "--concurrency", "2", "--slices", "2", *slow, dsn=db, urls=sim.urls)
        wait_for(lambda: loaded(db) >= total // 10, what="first worker's progress")
        second = scanfill("run", "--concurrency", "2", *slow, dsn=db, urls=sim.urls)
        assert second.wait(timeout=300) == 0 and first.wait(timeout=300) == 0
        with psycopg.connect(db) as conn:
            splits = conn.execute("SELECT count(*) FROM backfill_cursors WHERE split_from IS NOT NULL").fetchone()
    assert splits is not None and splits[0] > 0
    rows = workers_rows(db)
    assert len(rows) == 2 and all(n > 0 for *_, n in rows), rows
    assert_db_matches(db, Ledger(SMALL))


def test_static_worker_partition_covers_every_slice_once(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        for wid in range(3):
            env = {"WORKER_ID": str(wid), "WORKER_COUNT": "3"}
            p = scanfill("run", "--concurrency", "2", *COMMON, dsn=db, urls=sim.urls, env=env)
            out = p.communicate(timeout=300)[0].decode()
            assert p.returncode == 0, out
            assert ("history complete" in out) == (wid == 2)
    with psycopg.connect(db) as conn:
        slots = conn.execute("SELECT DISTINCT slot % 3 FROM backfill_cursors").fetchall()
    assert sorted(s for (s,) in slots) == [0, 1, 2]
    assert_db_matches(db, Ledger(SMALL))


def test_connection_budget_refuses_with_a_suggestion(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        p = scanfill("run", "--workers", "60", "--db-connections", "4", *COMMON, dsn=db, urls=sim.urls)
        out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 2
    assert "60 worker(s)" in out and "Use --workers " in out and "too many clients" not in out
    with psycopg.connect(db) as conn:  # refused before any worker started
        assert conn.execute("SELECT count(*) FROM backfill_workers").fetchone() == (0,)


def test_a_worker_frozen_mid_commit_does_not_hold_its_slice_forever(db: str) -> None:
    import time

    from scanfill.coord.slices import Leases
    from scanfill.coord.store import Store

    d, claim, others = one_slice_claimed_by_a_frozen_worker(db)
    frozen = d.connect(autocommit=True)
    frozen.execute("BEGIN")
    # what a commit with a 1 s lease does first (its guard is then 10 s): lock the row, then freeze
    Store(d).lock_for_commit(frozen, claim.lease("frozen-worker"), 1, claim.last_before)
    t0 = time.monotonic()
    rescuer = Leases(d, "rescuer", lease_s=1)
    got: list[object] = []
    with d.connect(autocommit=True) as c:
        wait_for(lambda: bool(got.append(rescuer.claim(c, others)) or got[-1]), timeout=60,
                 what="the frozen worker's slice to be claimable")  # fmt: skip
    took = time.monotonic() - t0
    assert 5 < took < 40, took  # not before the lease and guard, not never
    assert getattr(got[-1], "cursor_name", None) == claim.cursor_name and getattr(got[-1], "epoch", 0) > claim.epoch
    with pytest.raises(psycopg.Error):  # the server ended the frozen transaction; its commit cannot land
        frozen.execute("COMMIT")
    frozen.close()


def test_a_worker_frozen_between_its_claim_and_the_commit_of_it_does_not_hold_the_slice(db: str) -> None:
    """What a CI run caught: a worker stopped after its claim's UPDATE but before its COMMIT held the
    slice's row; every other worker skips locked rows (SKIP LOCKED), so the slice was never loaded and
    the others waited for it forever. The claim's transaction now ends itself after IDLE_GUARD."""
    import time

    from scanfill.coord.slices import Leases
    from scanfill.coord.store import IDLE_GUARD, Store
    from scanfill.db import Database

    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert scanfill("run", "--plan-only", "--no-progress", dsn=db, urls=sim.urls).wait(timeout=120) == 0
    d = Database(db)
    frozen = d.connect(autocommit=True)
    held = Store(d).transaction(frozen)
    held.__enter__()  # the claim's transaction, never committed: the process froze there
    claim = Leases(d, "frozen-worker", lease_s=1).claim(frozen, [])
    assert claim is not None
    t0 = time.monotonic()
    with d.connect(autocommit=True) as c:
        others = [n for (n,) in c.execute("SELECT cursor_name FROM backfill_cursors WHERE cursor_name <> %s",
                                          (claim.cursor_name,)).fetchall()]  # fmt: skip
        rescuer = Leases(d, "rescuer", lease_s=1)
        got: list[object] = []
        wait_for(lambda: bool(got.append(rescuer.claim(c, others)) or got[-1]), timeout=60,
                 what="the frozen claim's slice to be claimable")  # fmt: skip
    took = time.monotonic() - t0
    assert IDLE_GUARD == "10s" and 8 < took < 40, took
    assert getattr(got[-1], "cursor_name", None) == claim.cursor_name
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):  # the server ended the frozen claim
        frozen.execute("SELECT 1")
    frozen.close()


def test_a_worker_frozen_in_the_middle_of_its_copy_is_ended_by_the_others(db: str) -> None:
    """A COPY waiting for data from a stopped client is not ended by its statement timeout (the
    server checks it only when data comes): the other workers' heartbeat ends it after the guard."""
    import threading
    import time

    from scanfill.coord.slices import Leases
    from scanfill.coord.store import Store
    from scanfill.load.sink import Sink

    d, claim, others = one_slice_claimed_by_a_frozen_worker(db)
    frozen = d.connect(autocommit=True, application="scanfill worker frozen")
    frozen.execute("BEGIN")
    Store(d).lock_for_commit(frozen, claim.lease("frozen-worker"), 1, claim.last_before)
    started, release = threading.Event(), threading.Event()
    early: list[BaseException] = []  # a COPY that failed before freezing would prove nothing

    def copy_and_freeze() -> None:
        try:
            with frozen.cursor().copy(Sink(d).copy_updates) as cp:
                cp.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)  # the binary header, then nothing more
                started.set()
                release.wait(120)
        except Exception as exc:
            if not started.is_set():
                early.append(exc)
            started.set()

    t = threading.Thread(target=copy_and_freeze, daemon=True)
    t.start()
    started.wait(30)
    assert not early, early
    with d.connect(autocommit=True) as c:  # the server really is inside the COPY, waiting for data
        wait_for(lambda: c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scanfill worker "
                                   "frozen' AND state = 'active' AND query LIKE 'COPY %'").fetchone() == (1,),
                 timeout=30, what="the frozen COPY to be active")  # fmt: skip
    t0 = time.monotonic()
    waited: list[tuple[str, float]] = []  # a commit on that slice meanwhile waits for its row lock

    def commit_waits() -> None:
        with d.connect(autocommit=True, application="scanfill worker waiting") as w:
            try:
                with w.transaction():
                    Store(d).lock_for_commit(w, claim.lease("frozen-worker"), 1, claim.last_before)
                waited.append(("locked", time.monotonic() - t0))
            except psycopg.Error as exc:
                waited.append((type(exc).__name__, time.monotonic() - t0))

    waiter = threading.Thread(target=commit_waits, daemon=True)
    waiter.start()
    store, rescuer = Store(d), Leases(d, "rescuer", lease_s=1)
    got: list[object] = []
    reaped: list[str] = []
    with d.connect(autocommit=True, application="scanfill worker rescuer") as c:
        def rescued() -> bool:
            reaped.extend(store.reap_frozen_commits(c, 1))  # what every worker's heartbeat does
            got.append(rescuer.claim(c, others))
            return got[-1] is not None

        wait_for(rescued, timeout=90, what="the frozen COPY's slice to be claimable")
    took = time.monotonic() - t0
    release.set()
    # the guard fired: the reaper ended exactly that COPY (an idle timeout would not show here), and
    # not before the guard (10 s for a 1 s lease, + 5 s)
    assert [r for r in reaped if "scanfill worker frozen" in r], reaped
    assert 14 < took < 60, took
    assert getattr(got[-1], "cursor_name", None) == claim.cursor_name
    # that wait was bounded by the commit's own guard (10 s), set before it asked for the lock: it did
    # not depend on the reaper, which a loader whose every connection waits could never run
    waiter.join(60)
    assert waited and waited[0][0] == "QueryCanceled" and 9 < waited[0][1] < took, (waited, took)
    frozen.close()


def one_slice_claimed_by_a_frozen_worker(db: str) -> tuple[Any, Any, list[str]]:
    """A planned database where "frozen-worker" holds one slice with a 1 s lease; the other slices."""
    from scanfill.coord.slices import Leases
    from scanfill.db import Database

    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert scanfill("run", "--plan-only", "--no-progress", dsn=db, urls=sim.urls).wait(timeout=120) == 0
    d = Database(db)
    with d.connect(autocommit=True) as c:
        claim = Leases(d, "frozen-worker", lease_s=1).claim(c, [])
        assert claim is not None
        others = [n for (n,) in c.execute("SELECT cursor_name FROM backfill_cursors WHERE cursor_name <> %s",
                                          (claim.cursor_name,)).fetchall()]  # fmt: skip
    return d, claim, others


def test_the_schema_and_planning_lock_ends_with_a_frozen_holder(db: str) -> None:
    """Every start (schema check) and every plan takes one advisory lock; a holder frozen while idle
    in that transaction is ended by its own idle timeout, set before the lock is taken."""
    from scanfill.coord.schema import LOCK_IDLE, take_lock
    from scanfill.db import Database

    with Database(db).connect() as frozen:
        take_lock(frozen)
        assert frozen.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)
        assert LOCK_IDLE == "60s"
        with Database(db).connect(autocommit=True) as other:  # the lock really is held, and the setting local
            assert other.execute("SELECT pg_try_advisory_lock(%s)", (0x5CA0F111,)).fetchone() == (False,)
            assert other.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("0",)


@pytest.mark.slow
def test_a_run_waits_out_a_frozen_planner(db: str) -> None:
    """The whole path: a run started while another process holds the lock, frozen, plans and loads
    once the server ends that holder (LOCK_IDLE, 60 s), instead of waiting forever."""
    import time

    from scanfill.coord.schema import take_lock
    from scanfill.db import Database

    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait(timeout=120) == 0
        frozen = Database(db).connect()
        take_lock(frozen)
        t0 = time.monotonic()
        p = scanfill("run", *COMMON, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        took = time.monotonic() - t0
        assert p.returncode == 0, out
        assert 55 < took < 200, took
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):  # the server ended the holder
            frozen.execute("SELECT 1")
    assert_db_matches(db, Ledger(SMALL))
