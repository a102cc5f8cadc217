"""What a user sees at the command line: clear errors, no secrets, signals."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import psycopg

from dbcheck import assert_db_matches
from procs import loaded, scanfill, wait_for
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from shared import SMALL

SECRET = "s3cr3t-Pa55word"


def test_wrong_dsn_is_clear_and_never_shows_the_password() -> None:
    dsn = f"postgresql://loader:{SECRET}@127.0.0.1:9/ledger"
    for args in (("init",), ("status",), ("run", "--no-progress"), ("verify",), ("prepare",)):
        p = scanfill(*args, dsn=dsn, urls=["http://127.0.0.1:9/api/scan"])
        out = p.communicate(timeout=60)[0].decode()
        assert p.returncode == 2, out
        assert "cannot connect to postgresql://loader@127.0.0.1:9/ledger" in out, out
        assert SECRET not in out and "Check the host" in out


def test_missing_configuration_says_what_to_set() -> None:
    p = scanfill("run", dsn="", urls=[], env={"DATABASE_URL": "", "SUPABASE_DB_URL": ""})
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 2 and "DATABASE_URL" in out and "--dsn" in out


def test_half_initialised_database_is_named(db: str) -> None:
    p = scanfill("status", dsn=db, urls=[])
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 2 and "run `scanfill init`" in out


def test_second_signal_stops_at_once_and_loses_nothing(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=1500))) as sim:
        p = scanfill("run", "--concurrency", "3", "--page-size", "20", "--batch-rows", "50", "--no-progress",
                     dsn=db, urls=sim.urls)  # fmt: skip
        wait_for(lambda: loaded(db) > 0, what="first commit")
        p.send_signal(signal.SIGINT)
        assert p.stdout is not None
        for line in p.stdout:  # the first signal is acknowledged while requests are still in flight
            if b"stop requested" in line:
                break
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 130
        sim.set_faults(FaultConfig())
        again = scanfill("run", "--no-progress", "--lease", "2", dsn=db, urls=sim.urls)
        out = again.communicate(timeout=300)[0].decode()
        assert again.returncode == 0 and "history complete" in out, out
    assert_db_matches(db, Ledger(SMALL))
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM backfill_workers WHERE state = 'running'").fetchone() == (0,)


def test_demo_runs_end_to_end(tmp_path: object) -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "scanfill.cli", "demo", "--rows", "30000", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "history complete" in out and ": exact" in out and "restored" in out
    assert re.search(r"loaded [\d,]+ updates \+ [\d,]+ events = [\d,]+ rows .* rows/s", out), out


def test_tls_is_verified_unless_the_user_opts_out(db: str, tmp_path: object) -> None:
    import subprocess
    from pathlib import Path

    d = Path(str(tmp_path))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)  # fmt: skip
    cfg = SimConfig(ledger=SMALL, tls_cert=str(d / "cert.pem"), tls_key=str(d / "key.pem"))
    with Simulator(cfg) as sim:
        assert sim.url.startswith("https://")
        assert sim.stats()["requests"] == 0  # control endpoints work over the test certificate too
        p = scanfill("run", "--no-progress", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 2 and "TLS failure" in out and "certificate verify failed" in out, out
        ok = scanfill("run", "--no-progress", "--insecure", dsn=db, urls=sim.urls)
        out2 = ok.communicate(timeout=300)[0].decode()
        assert ok.returncode == 0 and "history complete" in out2, out2
    assert_db_matches(db, Ledger(SMALL))


def test_demo_reopen_serves_the_loaded_database_until_ctrl_c(tmp_path: Path) -> None:
    """After the demo a newcomer is told how to look at the data, and can start its server again."""
    import subprocess
    import sys

    first = subprocess.run([sys.executable, "-m", "scanfill.cli", "demo", "--rows", "3000", "--dir", str(tmp_path),
                            "--no-lifecycle"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "report (open in a browser)" in first.stdout and (tmp_path / "report.html").stat().st_size > 1000
    assert f"scanfill demo --reopen --dir {tmp_path}" in first.stdout
    p = subprocess.Popen([sys.executable, "-m", "scanfill.cli", "demo", "--reopen", "--dir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert p.stdout is not None
    dsn, said = "", []
    for line in p.stdout:
        said.append(line)
        if "connection string:" in line:
            dsn = line.split("connection string:", 1)[1].strip()
        if "Ctrl+C stops it" in line:
            break
    assert dsn, f"exit {p.poll()}: " + "".join(said)
    with psycopg.connect(dsn) as conn:
        got = conn.execute("SELECT count(*) FROM ledger_updates").fetchone()
    assert got is not None and got[0] > 100
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 0


def test_every_secret_source_is_scrubbed_from_errors(db: str) -> None:
    """--dsn, SUPABASE_DB_URL and scan URL credentials: none appears in an error, whichever it came from."""
    token = "Sc4n-T0ken-xyz"
    bad = f"postgresql://loader:{SECRET}@127.0.0.1:9/ledger"
    for env in ({"DATABASE_URL": "", "SUPABASE_DB_URL": bad}, {"DATABASE_URL": bad}):
        p = scanfill("status", dsn="", urls=[], env=env)
        out = p.communicate(timeout=60)[0].decode()
        assert p.returncode == 2 and SECRET not in out, out
    p = scanfill("run", "--no-progress", dsn=db, urls=[f"ftp://user:{token}@host/api/scan"])
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 2 and "must start with http" in out and token not in out, out
