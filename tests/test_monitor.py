"""status, verify, doctor, report and metrics against databases in known states."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import urllib.request

import psycopg
import pytest

from dbcheck import assert_db_matches
from procs import drop_unique_keys, loaded, scanfill, wait_for
from scanfill.db import Database
from scanfill.load.run import run
from scanfill.ops import monitor, verify
from scanfill.sim import FaultConfig, Ledger, SimConfig, Simulator
from shared import SMALL, options

SLOW = FaultConfig(latency_ms=40)
ARGS = ("--concurrency", "2", "--page-size", "20", "--batch-rows", "50", "--no-progress")


def cli_json(*args: str, dsn: str, urls: list[str]) -> tuple[int, object]:
    p = scanfill(*args, "--json", dsn=dsn, urls=urls, stdout=subprocess.PIPE)
    out = p.communicate(timeout=300)[0].decode()
    start = min(i for i in (out.find("{"), out.find("[")) if i >= 0)
    return p.returncode, json.loads(out[start:])


def test_graceful_stop_then_status_of_half_done_and_complete_run(db: str) -> None:
    total = Ledger(SMALL).total_updates()
    with Simulator(SimConfig(ledger=SMALL, faults=SLOW)) as sim:
        p = scanfill("run", *ARGS, dsn=db, urls=sim.urls)
        wait_for(lambda: loaded(db) >= total // 5, what="a fifth loaded")
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 0, out
        assert "run the same command again to resume" in out
        with psycopg.connect(db) as conn:  # leases released on the way out
            assert conn.execute("SELECT count(*) FROM backfill_cursors WHERE lease_owner IS NOT NULL").fetchone() == (
                0,
            )
        code, st = cli_json("status", dsn=db, urls=sim.urls)
        assert code == 0 and isinstance(st, dict)
        tt = st["totals"]
        assert not tt["complete"] and 0 < tt["fraction"] < 1 and tt["updates"] == loaded(db)
        assert sum(r["slices_waiting"] for r in st["ranges"]) > 0 and st["workers"] == []
        assert st["tables"]["ledger_updates"]["persistence"] == "LOGGED"
        assert run(options(db, sim.urls, concurrency=4)).complete
    st2 = monitor.status(Database(db))
    assert st2["totals"]["complete"] and st2["totals"]["fraction"] == pytest.approx(1.0)
    assert st2["totals"]["updates"] == total
    assert_db_matches(db, Ledger(SMALL))


def test_verify_complete_then_broken_on_purpose(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert run(options(db, sim.urls, concurrency=4)).complete
    d = Database(db)
    assert all(c.ok for c in verify.checks(d)), [c for c in verify.checks(d) if not c.ok]
    drop_unique_keys(db)
    with psycopg.connect(db) as conn:
        conn.execute("DELETE FROM ledger_updates WHERE update_id IN (SELECT update_id FROM ledger_updates "
                     "WHERE kind = 'transaction' ORDER BY update_id LIMIT 2)")  # fmt: skip
        conn.execute("INSERT INTO ledger_events SELECT * FROM ledger_events ORDER BY event_id DESC LIMIT 3")
    failed = {c.name: c for c in verify.checks(d) if not c.ok}
    assert "orphaned events (events without their update)" in failed
    assert failed["no duplicate event_id"].detail.startswith("3 duplicate rows")
    assert "every update's stored events equal its event_count" in failed
    assert "rows in the tables equal what the loaders committed" in failed
    assert "no duplicate update_id" not in failed


def test_verify_against_scan_finds_a_missing_window_and_refetch_repairs_it(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert run(options(db, sim.urls, concurrency=4)).complete
        with psycopg.connect(db) as conn:  # lose an hour of migration 4 silently, like the ancestor did
            conn.execute(
                "DELETE FROM ledger_events WHERE update_id IN (SELECT update_id FROM ledger_updates WHERE "
                "migration_id = 4 AND record_time >= '2024-06-25T00:00:00Z' AND record_time < '2024-06-25T01:00:00Z')"
            )
            conn.execute("DELETE FROM ledger_updates WHERE migration_id = 4 AND record_time >= "
                         "'2024-06-25T00:00:00Z' AND record_time < '2024-06-25T01:00:00Z'")  # fmt: skip
        p = scanfill("verify", "--against-scan", "--window-hours", "1", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 1, out
        repairs = re.findall(r"repair: scanfill run --migration (\d+) --refetch (\S+)", out)
        assert {w for _, w in repairs} == {"2024-06-25T00:00:00.000000Z/2024-06-25T01:00:00.000000Z"}, out
        assert len(repairs) == 1 and out.count("database 0, scan 350") == 2  # both synchronizers lost that hour
        fix = scanfill("run", "--migration", "4", "--refetch", repairs[0][1], "--no-progress", dsn=db, urls=sim.urls)
        fixed = fix.communicate(timeout=300)[0].decode()
        assert fix.returncode == 0 and "history complete" in fixed, fixed
        again = scanfill("verify", "--against-scan", "--window-hours", "1", dsn=db, urls=sim.urls)
        out2 = again.communicate(timeout=300)[0].decode()
        assert again.returncode == 0, out2
    assert_db_matches(db, Ledger(SMALL))


def test_doctor_findings(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert run(options(db, sim.urls, concurrency=2)).complete
        code, found = cli_json("doctor", "--workers", "500", dsn=db, urls=[*sim.urls, "http://127.0.0.1:9/api/scan"])
    assert code == 1 and isinstance(found, list)
    by = {f["check"]: f for f in found}
    assert not by["connections"]["ok"] and "--workers" in by["connections"]["fix"]
    assert by[f"scan {sim.urls[0]}"]["ok"] and "complete" in by[f"scan {sim.urls[0]}"]["finding"]
    assert not by["scan http://127.0.0.1:9/api/scan"]["ok"]
    assert by["table persistence"]["ok"] and by["indexes during a load"]["ok"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_scraped_during_a_run(db: str) -> None:
    port = _free_port()
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=40, every_503=7))) as sim:
        p = scanfill("run", *ARGS, "--metrics-port", str(port), dsn=db, urls=sim.urls)
        scraped: list[str] = []

        def scrape() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                return False
            m = re.search(r'scanfill_rows_loaded_total\{table="ledger_events"\} (\S+)', text)
            if m and float(m.group(1)) > 0 and 'status="503"' in text:
                scraped.append(text)
                return True
            return False

        wait_for(scrape, what="metrics with rows and a 503")
        assert p.poll() is None  # scraped while the run was going
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) == 0
    text = scraped[0]
    for name in (
        "scanfill_pages_loaded_total",
        "scanfill_scan_request_seconds_bucket",
        "scanfill_batch_commit_seconds",
        "scanfill_cursor_position_seconds",
        "scanfill_lease_takeovers_total",
        "scanfill_scan_errors_total",
    ):
        assert name in text, name
