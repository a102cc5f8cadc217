"""Following: the copy stays current after the backfill, exactly once, through kills, takeovers
and updates of different synchronizers at the same microsecond. Real PostgreSQL, the simulator
over HTTP while its active migration grows."""

from __future__ import annotations

import json
import signal
import subprocess

import psycopg

from dbcheck import assert_db_matches
from procs import follow_until_caught_up, scanfill, stored, wait_for
from scanfill.sim import InstanceConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator

BASE = LedgerConfig(
    seed=17,
    migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 150), MigrationSpec(2, "2024-06-24T22:00:00Z", 200, synchronizers=2)),
    shared_microseconds=True,  # synchronizers share microseconds: the follower's hard case
    reassignment_rate=0.05,
)
GROW = 500


def growing(rate: float = 250.0, **kw: object) -> SimConfig:
    return SimConfig(ledger=BASE.with_growth(GROW), grow=rate, grow_updates=GROW, **kw)  # type: ignore[arg-type]


def leader(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('follow_leader')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT owner FROM follow_leader WHERE lease_until > now()").fetchone()
    return row[0] if row else None


def finish(p: subprocess.Popen[bytes]) -> str:
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 0, out
    return out


def test_run_follow_keeps_the_copy_current_while_the_ledger_grows(db: str) -> None:
    config = growing()
    full = Ledger(config.ledger)
    with Simulator(config) as sim:
        out = finish(follow_until_caught_up(db, sim, full.total_updates(), 50))
        st = scanfill("status", "--json", dsn=db, urls=sim.urls).communicate(timeout=60)[0]
    assert "history complete" in out and "followed" in out
    assert_db_matches(db, full)
    with psycopg.connect(db) as conn:
        verdicts = conn.execute("SELECT count(*), count(verdict), count(traffic_summary) FROM scan_events").fetchone()
        handoff = conn.execute("SELECT count(*) FROM backfill_ranges WHERE followed_after IS NOT NULL").fetchone()
    assert verdicts is not None and verdicts[0] > 100 and verdicts[0] == verdicts[1] == verdicts[2]
    assert handoff is not None and handoff[0] >= 2  # both synchronizers of the active migration were handed over
    follower = json.loads(st)["follower"]
    assert follower["cursor_migration"] == 2 and follower["updates"] > 0 and follower["lag_s"] is not None
    checks = scanfill("verify", dsn=db, urls=[]).communicate(timeout=120)[0].decode()
    assert "FAIL" not in checks, checks


def test_same_microsecond_across_page_boundaries_neither_lost_nor_doubled(db: str) -> None:
    ledger = Ledger(BASE)
    order = sorted((h.migration_id, h.record_us, h.synchronizer_id) for h in ledger.expected_all())
    assert len({o[:2] for o in order}) < len(order) - 10  # synchronizers share microseconds

    def straddles(size: int) -> int:
        """Pages (as the follower asks for them, re-reading the boundary microsecond) whose last
        update shares its microsecond with the next page's first new one."""
        n, k = 0, 0
        while k < len(order):
            start = k
            while start > 0 and order[start - 1][:2] == order[k][:2]:
                start -= 1  # the re-read boundary
            end = min(len(order), start + size)
            if end < len(order) and order[end - 1][:2] == order[end][:2]:
                n += 1
            k = max(end, k + 1)
        return n

    size = next(n for n in range(3, 30) if straddles(n) >= 3)  # pages really do end inside a shared microsecond
    with Simulator(SimConfig(ledger=BASE)) as sim:
        for _ in range(2):  # and a second pass stores nothing
            p = scanfill("follow", "--once", "--start", "beginning", "--page-size", str(size), dsn=db, urls=sim.urls)
            out = p.communicate(timeout=300)[0].decode()
            assert p.returncode == 0, out
    assert "followed 0 updates" in out
    assert_db_matches(db, ledger)


def test_a_killed_follower_restarts_exactly_where_it_committed(db: str) -> None:
    config = growing(rate=120.0)
    full = Ledger(config.ledger)
    with Simulator(config) as sim:
        assert scanfill("run", "--no-progress", dsn=db, urls=sim.urls).wait(timeout=120) == 0
        for _ in range(3):
            p = scanfill("follow", "--page-size", "13", "--poll", "0.1", dsn=db, urls=sim.urls,
                         stdout=subprocess.DEVNULL)  # fmt: skip
            target = stored(db) + 15
            wait_for(lambda t=target: stored(db) > t, timeout=60, what="follower progress")  # type: ignore[misc]
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        wait_for(lambda: sim.stats()["grown"], timeout=60, what="the ledger to stop growing")
        p = scanfill("follow", "--once", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 0, out
    assert_db_matches(db, full)


def test_a_standby_takes_over_within_seconds_of_the_active_follower_dying(db: str) -> None:
    config = growing(rate=100.0)
    full = Ledger(config.ledger)
    with Simulator(config) as sim:
        assert scanfill("run", "--no-progress", dsn=db, urls=sim.urls).wait(timeout=120) == 0
        a = scanfill("follow", "--poll", "0.1", "--lease", "3", dsn=db, urls=sim.urls, stdout=subprocess.DEVNULL)
        wait_for(lambda: leader(db) is not None, timeout=60, what="a follower to become active")
        first = leader(db)
        b = scanfill("follow", "--poll", "0.1", "--lease", "3", dsn=db, urls=sim.urls)
        wait_for(lambda: stored(db) > full.total_updates() - GROW + 20, timeout=60, what="the first to follow")
        assert leader(db) == first  # the second one waits
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        wait_for(lambda: leader(db) not in (None, first), timeout=15, what="the standby to take over")
        wait_for(lambda: sim.stats()["grown"], timeout=60, what="the ledger to stop growing")
        wait_for(lambda: stored(db) == full.total_updates(), timeout=60, what="the standby to catch up")
        out = finish(b)
    assert "hot standby" in out or "now active" in out
    assert_db_matches(db, full)


def test_a_scan_that_is_not_complete_is_not_used_for_following(db: str) -> None:
    instances = (InstanceConfig("late", late_join=0.5), InstanceConfig("sv-1"))
    with Simulator(SimConfig(ledger=BASE, instances=instances)) as sim:
        p = scanfill("follow", "--once", "--start", "beginning", "--page-size", "200", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out
        late = sim.stats(0)
        # never asked while it was not complete (it would have answered 503), and asked once it was: for
        # updates or for events, whichever the follower asked first after it joined (timing decides)
        assert late["faults"] == {} and late["by_path"].get("/v2/updates", 0) + late["by_path"].get("/v0/events", 0) >= 1
    assert_db_matches(db, Ledger(BASE))


def test_run_follow_stopped_during_its_backfill_does_not_go_on_to_follow(db: str) -> None:
    """SIGTERM during `run --follow`'s backfill stops the command: before, the backfill took the
    signal and the follower then started with nothing left to stop it."""
    from scanfill.sim import FaultConfig

    slow = SimConfig(ledger=BASE, faults=FaultConfig(latency_ms=50))
    with Simulator(slow) as sim:
        p = scanfill("run", "--follow", "--no-progress", "--page-size", "10", "--batch-rows", "20", dsn=db,
                     urls=sim.urls)  # fmt: skip
        wait_for(lambda: stored(db) > 0, what="the backfill's first commit")
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 0 and "stopped before following" in out and "following into" not in out, out
