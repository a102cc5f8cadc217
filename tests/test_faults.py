"""The fault suite: the database restarted under a load or a follower, nonsense options refused,
hostile names. Real PostgreSQL (Debian's 15, restarted for real), the simulator over HTTP."""

from __future__ import annotations

import threading

import psycopg
import pytest

from dbcheck import assert_days_match, assert_db_matches
from procs import lines_of, loaded, scanfill, wait_for
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from servers import pg15_cluster
from shared import SMALL
from statecheck import assert_state_matches


def _new_db(admin: str, name: str = "ledger") -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.replace("/postgres?", f"/{name}?")


@pytest.mark.needs("postgresql-15")
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_during_a_run_is_ridden_out(mode: str) -> None:
    with pg15_cluster() as pg, Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=40))) as sim:
        db = _new_db(pg.dsn)
        p = scanfill("run", "--no-progress", "--concurrency", "4", "--page-size", "25", "--batch-rows", "100",
                     dsn=db, urls=sim.urls)  # fmt: skip
        wait_for(lambda: loaded(db) > 50, timeout=120, what="the first commits")
        pg.restart(mode)  # a few seconds without a database, every connection cut
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out
        assert "database unavailable" in out and "retrying for up to" in out
        assert "history complete" in out and "Traceback" not in out
        assert_db_matches(db, Ledger(SMALL))
        assert_state_matches(db, Ledger(SMALL))
        assert_days_match(db)  # and the day ledger kept exact through it


@pytest.mark.needs("postgresql-15")
def test_a_database_restart_while_following_is_ridden_out() -> None:
    with pg15_cluster() as pg, Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=30))) as sim:
        db = _new_db(pg.dsn)
        p = scanfill("follow", "--once", "--start", "beginning", "--page-size", "20", dsn=db, urls=sim.urls)
        wait_for(lambda: _count(db) > 40, timeout=120, what="the first followed pages")
        restart = threading.Thread(target=pg.restart, args=("fast",))
        restart.start()
        out = p.communicate(timeout=300)[0].decode()
        restart.join()
        assert p.returncode == 0, out
        assert "database unavailable" in out
        assert_db_matches(db, Ledger(SMALL))
        assert_state_matches(db, Ledger(SMALL))
        assert_days_match(db)  # and the day ledger kept exact through it


def _count(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            if conn.execute("SELECT to_regclass('ledger_updates')").fetchone() == (None,):
                return 0
            row = conn.execute("SELECT count(*) FROM ledger_updates").fetchone()
            return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return 0


def test_a_database_that_stays_down_fails_with_one_clear_message(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        p = scanfill("run", "--no-progress", "--db-retry", "2", dsn="postgresql://nobody@127.0.0.1:9/none",
                     urls=sim.urls)  # fmt: skip
        out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 2 and "cannot connect to postgresql://nobody@127.0.0.1:9/none" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "args, words",
    [
        (("--concurrency", "0"), "--concurrency"),
        (("--concurrency", "100000"), "1<=x<=256"),
        (("--workers", "0"), "--workers"),
        (("--page-mb", "-1"), "--page-mb"),
        (("--lease", "0"), "--lease"),
        (("--db-connections", "0"), "--db-connections"),
        (("--metrics-port", "70000"), "--metrics-port"),
        (("--page-size", "1001"), "--page-size"),
    ],
)
def test_nonsense_options_are_refused_with_the_allowed_range(args: tuple[str, ...], words: str) -> None:
    p = scanfill("run", "--no-progress", *args, dsn="postgresql://x@127.0.0.1:9/x", urls=["http://127.0.0.1:9/api/scan"])
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 2 and "Invalid value" in out and words in out, out


HOSTILE = 'we"ird; DROP TABLE ledger_updates; --'


def test_a_hostile_schema_name_creates_exactly_that_schema_and_touches_nothing_else(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.ledger_updates (canary int)")
        conn.execute("INSERT INTO public.ledger_updates VALUES (42)")
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        for args in (("init",), ("run", "--no-progress", "--concurrency", "4"), ("status", "--json"), ("verify",),
                     ("prepare",), ("restore",), ("doctor",)):  # fmt: skip
            p = scanfill(*args, "--schema", HOSTILE, dsn=db, urls=sim.urls)
            out = p.communicate(timeout=300)[0].decode()
            # doctor exits 1 when it has advice (here: settings of the test server), never with an error
            assert p.returncode == (1 if args[0] == "doctor" else 0), (args, out)
            assert "error" not in out.lower() and "Traceback" not in out, (args, out)
    assert_db_matches(db, Ledger(SMALL), schema=HOSTILE)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT canary FROM public.ledger_updates").fetchall() == [(42,)]
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information)'")}
    assert schemas == {"public", HOSTILE}


def test_credentials_in_scan_urls_never_show(db: str) -> None:
    secret = "t0ken-Pa55"
    faults = FaultConfig(every_403=2, data_only=False)  # errors that quote the URL
    with Simulator(SimConfig(ledger=SMALL, faults=faults)) as sim:
        urls = [u.replace("http://", f"http://loader:{secret}@") for u in sim.urls]
        outs = []
        for args in (("run", "--no-progress", "--timeout", "5"), ("status", "--json"), ("doctor",)):
            p = scanfill(*args, dsn=db, urls=urls, env={"SCANFILL_LOG": "DEBUG"})
            outs.append(p.communicate(timeout=300)[0].decode())
    assert all(secret not in o for o in outs), next(o for o in outs if secret in o)[:2000]
    assert "127.0.0.1" in outs[0]  # the URLs are shown, without their credentials


def test_odd_time_zones_change_no_record_time(db: str) -> None:
    """TZ of the loader and PGTZ of its sessions set to zones with odd offsets: every record
    time stored exactly, every cursor exact (they are strings and UTC microseconds throughout)."""
    env = {"TZ": "Pacific/Chatham", "PGTZ": "Asia/Kathmandu"}
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        p = scanfill("run", "--no-progress", "--concurrency", "4", "--page-size", "30", dsn=db, urls=sim.urls, env=env)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0 and "history complete" in out, out
        again = scanfill("run", "--no-progress", dsn=db, urls=sim.urls, env=env).communicate(timeout=300)[0].decode()
    assert "loaded 0 updates" in again
    assert_db_matches(db, Ledger(SMALL))


def test_a_full_disk_stops_the_load_clearly_and_it_resumes_exactly_once_space_is_freed(db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ledger tables on a tablespace on an 8 MB tmpfs (a real filesystem that fills up)."""
    import os
    import subprocess

    import psutil

    if os.geteuid() != 0:
        pytest.skip("mounting the small filesystem needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            owner = psutil.Process(pid).username()
            ts = mnt / "ts"
            ts.mkdir()
            os.chown(ts, *(lambda p: (p.pw_uid, p.pw_gid))(__import__("pwd").getpwnam(owner)))
            os.chmod(tmp_path, 0o755)
            conn.execute(f"CREATE TABLESPACE tiny_{pid} LOCATION '{ts}'")
        with Simulator(SimConfig(ledger=SMALL)) as sim:
            assert scanfill("init", dsn=db, urls=sim.urls).wait(timeout=60) == 0
            with psycopg.connect(db, autocommit=True) as conn:
                for t in ("ledger_updates", "ledger_events"):
                    conn.execute(f"ALTER TABLE {t} SET TABLESPACE tiny_{pid}")
            p = scanfill("run", "--no-progress", "--concurrency", "4", dsn=db, urls=sim.urls)
            try:
                out = p.communicate(timeout=60)[0].decode()
            except subprocess.TimeoutExpired:
                p.kill()
                out = p.communicate()[0].decode()
                raise AssertionError("the run did not stop on a full disk: " + out[-3000:]) from None
            assert p.returncode == 1, out
            assert "ran out of a resource" in out and "No space left" in out and "run the same command again" in out, out
            subprocess.run(["mount", "-o", "remount,size=200m", str(mnt)], check=True)  # space freed
            again = scanfill("run", "--no-progress", dsn=db, urls=sim.urls).communicate(timeout=300)[0].decode()
            assert "history complete" in again, again
        assert_db_matches(db, Ledger(SMALL))
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS ledger_updates, ledger_events")
            conn.execute(f"DROP TABLESPACE IF EXISTS tiny_{pid}")
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_two_runs_and_an_init_started_at_the_same_instant_on_an_empty_database(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=5))) as sim:
        procs = [scanfill("run", "--no-progress", "--concurrency", "3", "--page-size", "40", dsn=db, urls=sim.urls),
                 scanfill("init", dsn=db, urls=sim.urls),
                 scanfill("run", "--no-progress", "--concurrency", "3", "--page-size", "40", dsn=db, urls=sim.urls)]  # fmt: skip
        outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("history complete" in o for o in outs) == 2  # both runs end with the whole history
    assert_db_matches(db, Ledger(SMALL))
    assert_state_matches(db, Ledger(SMALL))
    assert_days_match(db)  # and the day ledger kept exact through it


def test_two_restores_at_once_and_an_abort_during_a_restore_leave_the_tables_restored(db: str) -> None:
    from scanfill.db import Database
    from scanfill.ops import maintenance

    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait(timeout=60) == 0
        with Database(db).connect() as conn:
            before = maintenance.catalog_snapshot(Database(db), conn)
        for second in ("restore", "abort"):
            assert scanfill("prepare", dsn=db, urls=sim.urls).wait(timeout=60) == 0
            assert scanfill("run", "--no-progress", dsn=db, urls=sim.urls).wait(timeout=300) == 0
            extra = ("--yes",) if second == "abort" else ()
            procs = [scanfill("restore", dsn=db, urls=sim.urls), scanfill(second, *extra, dsn=db, urls=sim.urls)]
            outs = [p.communicate(timeout=300)[0].decode() for p in procs]
            assert all(p.returncode == 0 for p in procs), outs
            assert all("Traceback" not in o for o in outs), outs
            with Database(db).connect() as conn:
                assert maintenance.catalog_snapshot(Database(db), conn) == before, second
    assert_db_matches(db, Ledger(SMALL))


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_killing_three_workers_at_random_moments_then_a_final_run_is_exact(db: str, how: str) -> None:
    kill_workers_then_finish(db, how, cycles=3, seed=7 if how == "SIGTERM" else 11)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_killing_three_workers_many_times_slow(db: str, seed: int) -> None:
    """The long variant (`pytest -m slow`): 12 SIGTERM/SIGKILL cycles per seed."""
    kill_workers_then_finish(db, "SIGKILL" if seed % 2 else "SIGTERM", cycles=12, seed=seed)


def kill_workers_then_finish(db: str, how: str, cycles: int, seed: int) -> None:
    import random
    import signal as sig

    from procs import drop_unique_keys

    rng = random.Random(seed)
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=20))) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait(timeout=60) == 0
        drop_unique_keys(db)  # a page stored twice shows as duplicate rows instead of an error
        total = Ledger(SMALL).total_updates()
        for _ in range(cycles):
            p = scanfill("run", "--no-progress", "--workers", "3", "--concurrency", "2", "--page-size", "20",
                         "--batch-rows", "60", "--lease", "3", dsn=db, urls=sim.urls)  # fmt: skip
            target = min(total - 1, loaded(db) + rng.randrange(20, 120))
            wait_for(lambda t=target, q=p: loaded(db) >= t or q.poll() is not None, timeout=120, what="progress")  # type: ignore[misc]
            if p.poll() is None:
                p.send_signal(getattr(sig, how))
            p.communicate(timeout=120)
        final = scanfill("run", "--no-progress", "--lease", "3", dsn=db, urls=sim.urls)
        out = final.communicate(timeout=300)[0].decode()
        assert final.returncode == 0 and "history complete" in out, out
    assert_db_matches(db, Ledger(SMALL))


def test_prepare_during_a_run_is_refused_and_the_run_finishes_exact(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=60))) as sim:
        p = scanfill("run", "--no-progress", "--concurrency", "3", "--page-size", "20", dsn=db, urls=sim.urls)
        wait_for(lambda: loaded(db) > 20, timeout=120, what="the run to be loading")
        refused = scanfill("prepare", dsn=db, urls=sim.urls)
        msg = refused.communicate(timeout=120)[0].decode()
        out = p.communicate(timeout=300)[0].decode()
    assert refused.returncode == 2 and "live database" in msg and "scanfill worker" in msg and "Traceback" not in msg, msg
    assert p.returncode == 0 and "history complete" in out, out
    assert_db_matches(db, Ledger(SMALL))


def test_a_scan_reusing_an_id_with_other_content_stops_the_slice_instead_of_looping(db: str) -> None:
    from scanfill.sim import InstanceConfig

    reuse = InstanceConfig("sv-1", reuse_id_every=150)
    with Simulator(SimConfig(ledger=SMALL, instances=(reuse,))) as sim:
        p = scanfill("run", "--no-progress", "--concurrency", "3", "--page-size", "40", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 1, out
    assert "already stored" in out and "reusing ids" in out and "Traceback" not in out, out
    ledger = Ledger(SMALL)
    want = {h.update_id: h.record_us for h in ledger.expected_all()}
    from scanfill.timeutil import dt_to_us

    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT update_id, record_time FROM ledger_updates").fetchall()
    # the impostor came first (pages run newest first) and was stored; when the real update with
    # that id arrived the conflict stopped its slice rather than overwriting or looping: a single
    # scan cannot tell which is real, which is what `run --agree 2` is for
    wrong = [u for u, t in rows if dt_to_us(t) != want[u]]
    assert rows and all(u in want for u, _ in rows) and 0 < len(wrong) <= 2, wrong


def test_a_schema_name_with_a_percent_sign_is_refused_in_one_line_and_creates_nothing(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        for args in (("init",), ("run", "--no-progress"), ("status",)):
            p = scanfill(*args, "--schema", "ledger%s%(x)s", dsn=db, urls=sim.urls)
            out = p.communicate(timeout=120)[0].decode()
            assert p.returncode != 0 and "containing % is not supported" in out and "Traceback" not in out, (args, out)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ledger%%'").fetchone() == (0,)


@pytest.mark.needs("postgresql-15")
def test_ctrl_c_during_a_database_outage_stops_at_once() -> None:
    """A follower riding out an outage (--db-retry 300) stops on Ctrl+C without waiting for the database."""
    import signal
    import subprocess
    import time

    with pg15_cluster() as pg, Simulator(SimConfig(ledger=SMALL.with_growth(300), grow=5.0, grow_updates=300)) as sim:
        db = _new_db(pg.dsn)
        p = scanfill("follow", "--start", "beginning", "--poll", "0.1", "--db-retry", "300", dsn=db, urls=sim.urls,
                     stdout=subprocess.PIPE)  # fmt: skip
        wait_for(lambda: _count(db) > 100, timeout=120, what="the follower to follow")
        lines = lines_of(p)
        pg.ctl("-m", "fast", "stop")
        try:
            wait_for(lambda: any("database unavailable" in ln for ln in lines), timeout=60, what="the outage noticed")
            t0 = time.monotonic()
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
            took = time.monotonic() - t0
        finally:
            pg.ctl("start")
    assert took < 20, (took, lines)
    assert not any("Traceback" in ln for ln in lines), lines
