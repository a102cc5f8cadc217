"""Following gets every defence the backfill has: each case here stopped or fooled the follower of
the release before the one page pipeline (issue 19), and each is a test. Real PostgreSQL, the
simulator over HTTP, `scanfill` as real processes."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dbcheck import assert_days_match, assert_db_matches
from helpers import call
from procs import lines_of, scanfill, wait_for
from scanfill.db import Database
from scanfill.sim import FaultConfig, InstanceConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from servers import free_port
from statecheck import assert_state_matches

BASE = LedgerConfig(
    seed=29,
    migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 150), MigrationSpec(2, "2024-06-24T22:00:00Z", 200, synchronizers=2)),
    shared_microseconds=True,
    reassignment_rate=0.05,
)


def one(dsn: str, q: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(q).fetchone()
    return None if row is None else row[0]


def leader(dsn: str) -> str | None:
    return one(dsn, "SELECT owner FROM follow_leader WHERE lease_until > now()")  # type: ignore[return-value]


def run_ok(*args: str, dsn: str, urls: list[str], timeout: float = 300) -> str:
    p = scanfill(*args, dsn=dsn, urls=urls)
    out = p.communicate(timeout=timeout)[0].decode()
    assert p.returncode == 0, (args, out)
    return out


def test_a_cursor_moved_where_no_scan_serves_is_found_by_doctor_and_rewound(db: str) -> None:
    """What an earlier release left after one corrupted item (`migration_id: 99`): an update stored
    as migration 99, a range for it, the cursor at (99, t). doctor names it; follow --rewind repairs
    it; following then goes on and the copy is exact."""
    ledger = Ledger(BASE)
    with Simulator(SimConfig(ledger=BASE)) as sim:
        run_ok("follow", "--once", "--start", "beginning", dsn=db, urls=sim.urls)
        with psycopg.connect(db, autocommit=True) as conn:  # the state a corrupted page used to leave
            uid, sync, t = conn.execute("SELECT update_id, synchronizer_id, record_time FROM ledger_updates "
                                        "WHERE migration_id = 2 AND kind = 'transaction' ORDER BY record_time DESC "
                                        "LIMIT 1").fetchone()  # type: ignore[misc]  # fmt: skip
            conn.execute("DELETE FROM ledger_events WHERE update_id = %s", (uid,))
            conn.execute("UPDATE ledger_updates SET migration_id = 99 WHERE update_id = %s", (uid,))
            conn.execute("INSERT INTO backfill_ranges (migration_id, synchronizer_id, min_time, max_time, min_text, "
                         "max_text, source_complete, followed_after) SELECT 99, %s, %s, %s, 'x', "
                         "to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), true, 'x'",
                         (sync, t, t, t))  # fmt: skip
            conn.execute("UPDATE follow_cursors SET migration_id = 99")
            # its true range never reached it: the corrupted item was the last of its page
            conn.execute("UPDATE backfill_ranges SET max_time = p.t, max_text = to_char(p.t AT TIME ZONE 'UTC', "
                         "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM (SELECT max(record_time) AS t FROM ledger_updates "
                         "WHERE migration_id = 2 AND synchronizer_id = %s) p "
                         "WHERE migration_id = 2 AND synchronizer_id = %s", (sync, sync))  # fmt: skip
        before = run_ok("follow", "--once", dsn=db, urls=sim.urls)
        assert "followed 0 updates" in before  # stuck: what users saw, silently
        doc = scanfill("doctor", "--json", dsn=db, urls=sim.urls)
        out = doc.communicate(timeout=120)[0].decode()
        assert "migration 99, which no scan announces" in out and "follow --rewind" in out, out
        fixed = run_ok("follow", "--once", "--rewind", dsn=db, urls=sim.urls)
        assert "removed 1 updates" in fixed, fixed
        doc2 = scanfill("doctor", "--json", dsn=db, urls=sim.urls).communicate(timeout=120)[0].decode()
        assert "which no scan announces" not in doc2
    assert_db_matches(db, ledger)
    assert one(db, "SELECT count(*) FROM backfill_ranges WHERE migration_id = 99") == 0


def test_follow_detects_a_crash_that_emptied_the_unlogged_tables(tmp_path: Path) -> None:
    """The server crashed while the tables were UNLOGGED: a restarted `follow` must not commit into
    the emptied tables from its old cursor (it reset every cursor, said so, and `run` reloads)."""
    from scanfill.embedded import start_embedded
    from servers import kill_postmaster

    h = start_embedded(tmp_path / "crashy")
    dsn = h.dsn
    with Simulator(SimConfig(ledger=BASE)) as sim:
        run_ok("prepare", dsn=dsn, urls=sim.urls)
        run_ok("run", "--no-progress", dsn=dsn, urls=sim.urls)
        run_ok("follow", "--once", dsn=dsn, urls=sim.urls)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        kill_postmaster(h.datadir / "pgdata")
        import contextlib

        with contextlib.suppress(Exception):
            h.stop()
        h = start_embedded(tmp_path / "crashy")
        assert one(dsn, "SELECT count(*) FROM ledger_updates") == 0  # crash recovery emptied them
        out = run_ok("follow", "--once", dsn=dsn, urls=sim.urls)
        assert "crashed or restarted uncleanly" in out, out
        assert one(dsn, "SELECT count(*) FROM backfill_cursors WHERE complete") == 0  # nothing claims complete
        out = run_ok("run", "--no-progress", "--restore", dsn=dsn, urls=sim.urls)
        assert "history complete" in out
        run_ok("follow", "--once", dsn=dsn, urls=sim.urls)
    assert_db_matches(dsn, Ledger(BASE))
    h.stop()


def test_prepare_is_refused_while_a_follower_holds_its_lease_and_abort_stops_it(db: str) -> None:
    config = SimConfig(ledger=BASE.with_growth(200), grow=20.0, grow_updates=200)
    with Simulator(config) as sim:
        run_ok("run", "--no-progress", dsn=db, urls=sim.urls)
        f = scanfill("follow", "--poll", "0.1", dsn=db, urls=sim.urls)
        wait_for(lambda: leader(db) is not None, timeout=60, what="the follower to hold its lease")
        p = scanfill("prepare", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=60)[0].decode()
        assert p.returncode != 0 and "scanfill follow" in out, out
        assert one(db, "SELECT relpersistence FROM pg_class WHERE relname = 'ledger_updates'") == "p"
        ab = scanfill("abort", dsn=db, urls=sim.urls)
        said = ab.communicate(timeout=120)[0].decode()
        assert ab.returncode == 0, said
        assert f.wait(timeout=30) == 0  # the follower read the stop request and stopped
        fout = f.communicate()[0].decode()
    assert "stop requested through the database" in fout, fout
    assert "still running" not in said and leader(db) is None


def test_verify_against_scan_accepts_followed_updates_and_retries_503s(db: str) -> None:
    """/v2/updates items have no `offset` and updates-before items do: the same update, equal.
    A scan answering 503 now and then, or garbage, is asked again, not given up on."""
    config = SimConfig(ledger=BASE.with_growth(150), grow=100.0, grow_updates=150)
    with Simulator(config) as sim:
        run_ok("run", "--no-progress", dsn=db, urls=sim.urls)
        wait_for(lambda: sim.stats()["grown"], timeout=60, what="the ledger to grow")
        run_ok("follow", "--once", dsn=db, urls=sim.urls)
        assert one(db, "SELECT count(*) FROM ledger_updates WHERE \"offset\" IS NULL") > 50  # followed: no offset
        sim.set_faults(FaultConfig(every_503=3, every_corrupt=4, corrupt=("html", "truncated")))
        p = scanfill("verify", "--against-scan", "--window-hours", "0.25", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out
        faults = sim.stats()["faults"]
        assert faults.get("503", 0) > 0 and faults.get("corrupt_html", 0) > 0, faults
    assert "with other content" not in out
    assert_db_matches(db, Ledger(config.ledger))


def test_agreement_rides_out_a_transient_503_of_one_scan(db: str) -> None:
    """--agree 2 of two honest scans, one answering 503 every third request: asked again, not failed."""
    instances = (InstanceConfig("sv-1", faults=FaultConfig(every_503=3)), InstanceConfig("sv-2"))
    with Simulator(SimConfig(ledger=BASE, instances=instances)) as sim:
        out = run_ok("run", "--no-progress", "--no-discover", "--agree", "2", "--page-size", "30", dsn=db,
                     urls=sim.urls)  # fmt: skip
        assert sim.stats(0)["faults"].get("503", 0) > 3
        assert "history complete" in out, out
        run_ok("follow", "--once", "--agree", "2", "--page-size", "30", dsn=db, urls=sim.urls)
    assert_db_matches(db, Ledger(BASE))


def test_follow_agreement_records_disagreements_and_agrees_on_events(db: str) -> None:
    faulty = InstanceConfig("sv-bad", faults=FaultConfig(every_corrupt=1, corrupt=("time", "migration")))
    with Simulator(SimConfig(ledger=BASE, instances=(faulty, InstanceConfig("sv-2"), InstanceConfig("sv-3")))) as sim:
        run_ok("follow", "--once", "--start", "beginning", "--agree", "2", "--page-size", "50", dsn=db, urls=sim.urls)
    assert_db_matches(db, Ledger(BASE))
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT url, request FROM scan_disagreements").fetchall()
    assert any("/v2/updates" in r for _, r in rows) and any("/v0/events" in r for _, r in rows), rows
    assert {u for u, _ in rows} == {sim.urls[0]}


def test_a_follower_frozen_in_its_copy_is_ended_by_the_standby(db: str) -> None:
    """A follower frozen in the middle of its COPY holds the follower row (FOR SHARE) and a COPY the
    server never times out: the standby ends that COPY and takes over."""
    from scanfill.coord.store import Store
    from scanfill.load.sink import Sink

    with Simulator(SimConfig(ledger=BASE)) as sim:
        run_ok("follow", "--once", "--start", "beginning", dsn=db, urls=sim.urls)
        d = Database(db)
        store = Store(d)
        with d.connect(autocommit=True) as c:
            store.follow_release(c, store.follow_claim(c, "frozen-follower", 1, [])[0])  # type: ignore[index]
            got = store.follow_claim(c, "frozen-follower", 1, [])
            assert got is not None
        frozen = d.connect(autocommit=True, application="scanfill follow frozen")
        frozen.execute("BEGIN")
        store.follow_fence(frozen, got[0], 1)  # what a follower's commit does first: the row, FOR SHARE
        started, release, failed = threading.Event(), threading.Event(), []

        def copy_and_freeze() -> None:
            try:
                with frozen.cursor().copy(Sink(d).copy_updates) as cp:
                    cp.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
                    started.set()
                    release.wait(120)
            except Exception as exc:
                failed.append(exc)
                started.set()

        threading.Thread(target=copy_and_freeze, daemon=True).start()
        started.wait(30)
        wait_for(lambda: one(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scanfill follow "
                                 "frozen' AND state = 'active' AND query LIKE 'COPY %'") == 1, timeout=30,
                 what="the frozen COPY to be running")  # fmt: skip
        t0 = time.monotonic()
        out = run_ok("follow", "--once", "--lease", "1", dsn=db, urls=sim.urls, timeout=180)
        took = time.monotonic() - t0
        release.set()
    assert not failed or "terminat" in str(failed[0]).lower()
    assert "ended the commit of a frozen loader" in out and "took over from frozen-follower" in out, out
    assert took < 90, took


def test_run_and_follow_started_at_the_same_instant_on_an_empty_database(db: str) -> None:
    with Simulator(SimConfig(ledger=BASE)) as sim:
        r = scanfill("run", "--no-progress", dsn=db, urls=sim.urls)
        f = scanfill("follow", "--once", "--start", "beginning", dsn=db, urls=sim.urls)
        rout, fout = r.communicate(timeout=300)[0].decode(), f.communicate(timeout=300)[0].decode()
        assert r.returncode == 0 and "UniqueViolation" not in rout and "duplicate key" not in rout, rout
        assert f.returncode == 0, fout
        run_ok("follow", "--once", dsn=db, urls=sim.urls)
    assert_db_matches(db, Ledger(BASE))
    assert_state_matches(db, Ledger(BASE))
    assert_days_match(db)  # and the day ledger kept exact through it


def test_verify_passes_after_a_refetch_over_a_followed_range(db: str) -> None:
    with Simulator(SimConfig(ledger=BASE)) as sim:
        run_ok("follow", "--once", "--start", "beginning", dsn=db, urls=sim.urls)
        run_ok("run", "--no-progress", "--no-discover", "--refetch", "2024-06-24T00:00:00Z/2024-06-26T00:00:00Z",
               dsn=db, urls=sim.urls)  # fmt: skip
        out = run_ok("verify", dsn=db, urls=sim.urls)
    assert "FAIL" not in out, out
    assert_db_matches(db, Ledger(BASE))


def test_a_follower_in_another_pid_namespace_is_not_presumed_dead(db: str) -> None:
    """Same host name, its own PID namespace: it cannot see the active follower's pid, and must
    wait as a standby instead of taking the lease at once."""
    import shutil
    import sys

    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for this test")
    with Simulator(SimConfig(ledger=BASE.with_growth(100), grow=5.0, grow_updates=100)) as sim:
        run_ok("run", "--no-progress", dsn=db, urls=sim.urls)
        a = scanfill("follow", "--poll", "0.1", "--lease", "30", dsn=db, urls=sim.urls, stdout=subprocess.DEVNULL)
        wait_for(lambda: leader(db) is not None, timeout=60, what="the first follower to be active")
        first = leader(db)
        import os

        env = {**os.environ, "DATABASE_URL": db, "SCAN_URL": ",".join(sim.urls), "FREEZE_AT": "2"}
        b = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-m", "scanfill.cli", "follow", "--poll",
                              "0.1", "--lease", "30"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)  # fmt: skip
        lines = lines_of(b)
        wait_for(lambda: any("hot standby" in ln for ln in lines) or b.poll() is not None, timeout=60,
                 what="the second follower to say what it does")  # fmt: skip
        assert leader(db) == first, lines  # it did not take the lease from a live follower
        assert socket.gethostname() in str(first)
        os.killpg(b.pid, signal.SIGINT)  # unshare does not pass a signal on to its child: the group gets it
        a.send_signal(signal.SIGINT)
        b.wait(timeout=60)
        a.wait(timeout=60)
    assert any("hot standby" in ln for ln in lines) and not any("took over" in ln for ln in lines), lines


def test_metrics_port_in_use_and_a_newer_schema_are_one_clear_line(db: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with Simulator(SimConfig(ledger=BASE)) as sim:
            for cmd in (("run", "--no-progress"), ("follow", "--once")):
                p = scanfill(*cmd, "--metrics-port", str(port), dsn=db, urls=sim.urls)
                out = p.communicate(timeout=120)[0].decode()
                assert p.returncode != 0 and f"cannot serve metrics on 127.0.0.1:{port}" in out, out
                assert "Traceback" not in out and "planned" not in out, out
            p = scanfill("run", "--no-progress", "--metrics-addr", "no-such-host.invalid", "--metrics-port", "9",
                         dsn=db, urls=sim.urls)  # fmt: skip
            out = p.communicate(timeout=120)[0].decode()
            assert p.returncode != 0 and "does not resolve" in out and "Traceback" not in out, out
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("UPDATE scanfill_meta SET value = '99' WHERE key = 'schema_version'")
            for cmd in (("status",), ("verify",), ("restore",), ("abort",)):
                p = scanfill(*cmd, dsn=db, urls=sim.urls)
                out = p.communicate(timeout=120)[0].decode()
                assert p.returncode != 0 and "newer than this scanfill" in out and "scanfill init" not in out, (cmd, out)
    with psycopg.connect(db) as conn:  # restore and abort wrote nothing
        assert conn.execute("SELECT count(*) FROM backfill_control").fetchone() == (0,)


def test_a_follower_waits_out_a_scan_serving_only_garbage_says_so_in_status_and_then_catches_up(db: str) -> None:
    """Every page spoiled for a while: the follower does not die; `status` shows what it could not
    get past; once the scan is healthy again it catches up and the copy is exact."""
    import json

    with Simulator(SimConfig(ledger=BASE)) as sim:
        sim.set_faults(FaultConfig(every_corrupt=1, corrupt=("html", "truncated", "migration")))
        port = free_port()
        f = scanfill("follow", "--start", "beginning", "--poll", "0.1", "--metrics-port", str(port), dsn=db,
                     urls=sim.urls)  # fmt: skip

        def problems() -> int:
            p = scanfill("status", "--json", dsn=db, urls=sim.urls)
            out = p.communicate(timeout=60)[0].decode()
            if p.returncode != 0:
                return 0
            fol = json.loads(out[out.index("{"):]).get("follower") or {}
            return int(fol.get("problems") or 0)

        wait_for(lambda: problems() >= 2, timeout=120, what="status to show the follower asking again")
        assert f.poll() is None, "the follower died on garbage"
        st = scanfill("status", dsn=db, urls=sim.urls).communicate(timeout=60)[0].decode()
        assert "asked again" in st and "malformed page" in st, st
        status, _, body = call(f"http://127.0.0.1:{port}/metrics")  # what an alert would watch
        metrics = body.decode()
        assert status == 200 and re.search(r'^scanfill_pages_refused_total\{url="[^"]+"\} [1-9]', metrics, re.M), metrics
        assert re.search(r'^scanfill_follow_problems_total\{stream="updates"\} [1-9]', metrics, re.M), metrics
        sim.set_faults(FaultConfig())
        wait_for(lambda: one(db, "SELECT count(*) FROM ledger_updates") == Ledger(BASE).total_updates(), timeout=180,
                 what="the follower to catch up once the scan is healthy")  # fmt: skip
        f.send_signal(signal.SIGINT)
        out = f.communicate(timeout=60)[0].decode()
    assert f.returncode == 0, out
    assert "malformed page(s) refused and asked again" in out, out
    assert_db_matches(db, Ledger(BASE))


# `scanfill follow ARGS...` that stops itself (SIGSTOP) in the middle of the COPY of its FREEZE_AT-th
# followed page: what that commit holds, it holds until the test kills it.
FROZEN_IN_COPY = """
import os, signal, sys, time
from scanfill.load.sink import Sink

inside, calls = [], []

def commit_followed(self, *args, **kwargs):
    inside.append(1)
    try:
        return followed(self, *args, **kwargs)
    finally:
        inside.pop()

def copy_rows(self, conn, batch):
    if inside and batch.updates:
        calls.append(1)
    if inside and batch.updates and len(calls) == int(os.environ.get("FREEZE_AT", "1")):
        with conn.cursor().copy(self.copy_updates) as cp:
            cp.write(b"PGCOPY\\n\\xff\\r\\n\\x00" + bytes(8))
            os.kill(os.getpid(), signal.SIGSTOP)
            time.sleep(3600)  # another thread may take the stop first: this one goes no further
    return copy(self, conn, batch)

followed, copy = Sink.commit_followed, Sink.copy_rows
Sink.commit_followed, Sink.copy_rows = commit_followed, copy_rows
sys.argv = ["scanfill", *sys.argv[1:]]
from scanfill.cli import main
main()
"""


@pytest.mark.parametrize("commit", [1, 2], ids=["creating-its-ranges", "ordinary"])
def test_a_follower_frozen_in_its_commit_stops_no_run_init_or_standby(db: str, commit: int) -> None:
    """Issue 29, item 11: a follower's first page creates its ranges. Frozen in the COPY of that
    commit or a later one (the server never times a COPY out), it must hold no lock that `init`,
    `run`'s planning or a standby wait on before they can reap it: each completes while it stays
    frozen, and then the copy ends exact."""
    import os
    import sys

    from scanfill.coord.schema import LOCK_KEY

    with Simulator(SimConfig(ledger=BASE)) as sim:
        env = {**os.environ, "DATABASE_URL": db, "SCAN_URL": ",".join(sim.urls), "FREEZE_AT": str(commit)}
        frozen = subprocess.Popen([sys.executable, "-c", FROZEN_IN_COPY, "follow", "--start", "beginning",
                                   "--page-size", "50", "--lease", "1"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)  # fmt: skip

        def stopped() -> bool:
            with open(f"/proc/{frozen.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        try:
            wait_for(lambda: frozen.poll() is not None or stopped(), 90, "the follower to stop itself in its COPY")
            assert frozen.poll() is None, frozen.communicate()[0].decode()[-3000:]
            assert one(db, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'") == 1
            assert one(db, f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = "
                           f"{LOCK_KEY & 0xFFFFFFFF}") == 0  # the planning lock is not held through the COPY
            t0 = time.monotonic()
            run_ok("init", dsn=db, urls=sim.urls, timeout=120)
            run_ok("run", "--no-progress", "--lease", "1", dsn=db, urls=sim.urls, timeout=240)
            out = run_ok("follow", "--once", "--lease", "1", dsn=db, urls=sim.urls, timeout=240)
            took = time.monotonic() - t0
            assert stopped()  # all of it while the follower stays frozen
            assert "ended the commit of a frozen loader" in out and "took over from" in out, out
            assert took < 150, f"init, run and a standby took {took:.0f} s"
        finally:
            frozen.kill()
            frozen.communicate(timeout=60)
        run_ok("run", "--no-progress", dsn=db, urls=sim.urls)  # what the frozen follower had begun
        run_ok("follow", "--once", dsn=db, urls=sim.urls)
    assert_db_matches(db, Ledger(BASE))
    assert_state_matches(db, Ledger(BASE))
    assert_days_match(db)
