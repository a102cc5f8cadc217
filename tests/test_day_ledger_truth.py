"""The day ledger tells the truth (issue 29, items 8 and 12): what `verify` proves wrong about a day
reaches the ledger (a gap with its reason and repair, the watermark before it, until a refetch),
and the crash reset of UNLOGGED tables empties the day ledger with them (real PostgreSQL, the
simulator over HTTP, `scanfill` as processes where the user would run it)."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from dbcheck import assert_db_matches, independent_day_counts
from procs import finish, scanfill
from scanfill.db import Database
from scanfill.load.run import run
from scanfill.ops import maintenance, verify
from scanfill.sim import InstanceConfig, Ledger, SimConfig, Simulator
from shared import DAYS, options

DAY = "2024-06-22"  # a whole day of migration 0 (which runs 06-20 .. 06-24)


def report_json(db: str, urls: list[str]) -> dict[str, Any]:
    p = scanfill("report", "--completeness", "--format", "json", dsn=db, urls=urls)
    out = finish(p, 60, db)
    assert p.returncode == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


def kept_days(db: str) -> dict[tuple[int, str, str], tuple[int, int]]:
    with psycopg.connect(db) as conn:
        return {(m, s, d.isoformat()): (int(u), int(e)) for m, s, d, u, e in conn.execute(
            "SELECT migration_id, synchronizer_id, day, updates, events FROM completeness "
            "WHERE updates > 0 OR events > 0").fetchall()}  # fmt: skip


def load(db: str, urls: list[str]) -> None:
    summary = run(options(db, urls, concurrency=3))
    assert summary.complete, summary.failures


def top_of_migration_1(ledger: Ledger) -> datetime:
    hs = [h for h in ledger.expected_all() if h.migration_id == 1]
    from scanfill.timeutil import us_to_dt

    return us_to_dt(min(max(h.record_us for h in hs if h.synchronizer_id == s) for s in {h.synchronizer_id for h in hs}))


def repair_of(day: dict[str, Any]) -> list[str]:
    """The `--refetch` the gap's detail names, as arguments of `scanfill`."""
    detail = day["detail"]
    assert "repair: scanfill run " in detail, day
    return shlex.split(detail.split("repair: scanfill ", 1)[1])


def test_the_crash_reset_empties_the_day_ledger_with_the_tables(db: str) -> None:
    """prepare, load, a crash empties the UNLOGGED tables, the reset, reload: the day ledger counts
    each day once and verify passes on the exact copy."""
    d = Database(db)
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        run(options(db, sim.urls, plan_only=True))  # the schema
        maintenance.prepare(d, echo=lambda _: None)  # UNLOGGED, canary armed
        load(db, sim.urls)
        with psycopg.connect(db, autocommit=True) as conn:  # what crash recovery does to UNLOGGED tables
            conn.execute("TRUNCATE ledger_updates, ledger_events, contracts, scanfill_unlogged_canary")
        load(db, sim.urls)  # run's crash check resets, then loads again
    assert_db_matches(db, Ledger(DAYS))
    assert kept_days(db) == independent_day_counts(db)
    failed = [c for c in verify.checks(d) if not c.ok]
    assert not failed, failed


def test_rows_deleted_by_hand_make_their_day_a_gap_until_refetched(db: str, tmp_path: Path) -> None:
    ledger = Ledger(DAYS)
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        load(db, sim.urls)
        before = report_json(db, sim.urls)
        assert before["complete_through"]["migration_id"] == 1
        with psycopg.connect(db, autocommit=True) as conn:  # a DBA, a partial restore, a dropped partition
            window = ("migration_id = 0 AND record_time >= '2024-06-22T06:00:00Z' "
                      "AND record_time < '2024-06-22T12:00:00Z'")  # fmt: skip
            conn.execute(f"DELETE FROM ledger_events WHERE {window}")
            gone = conn.execute(f"DELETE FROM ledger_updates WHERE {window}").rowcount
        assert gone > 0
        v = scanfill("verify", dsn=db, urls=sim.urls)
        said = finish(v, 120, db)
        assert v.returncode == 1 and DAY in said, said
        rep = report_json(db, sim.urls)
        table = finish(scanfill("report", "--completeness", dsn=db, urls=sim.urls), 60, db)
        csv_text = finish(scanfill("report", "--completeness", "--format", "csv", dsn=db, urls=sim.urls), 60, db)
        page = tmp_path / "report.html"
        assert scanfill("report", "-o", str(page), dsn=db, urls=sim.urls).wait(timeout=60) == 0
        status = json.loads(finish(scanfill("status", "--json", dsn=db, urls=sim.urls), 60, db))
        again = scanfill("verify", dsn=db, urls=sim.urls)  # the finding stays until repaired
        said_again = finish(again, 120, db)
        assert again.returncode == 1 and "`scanfill run --migration 0 --refetch" in said_again, said_again
        gaps = [x for x in rep["days"] if x["status"] == "gap"]
        assert [(g["migration_id"], g["day"]) for g in gaps] == [(0, DAY)], gaps
        assert "rows changed outside scanfill" in gaps[0]["detail"], gaps[0]
        assert (gaps[0]["updates"], gaps[0]["events"]) == independent_day_counts(db)[(0, gaps[0]["synchronizer_id"],
                                                                                     DAY)]  # fmt: skip
        mark = rep["complete_through"]
        assert mark["migration_id"] == 0 and mark["record_time"].startswith("2024-06-21T23:59:59.999999"), mark
        assert status["complete_through"] == mark and status["days"]["gap"] == 1
        assert f"{DAY}   0 global-domain::" in table and " gap " in table, table
        assert "rows changed outside scanfill" in " ".join(table.split()), table
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert [(r["migration_id"], r["day"]) for r in rows if r["status"] == "gap"] == [("0", DAY)], csv_text
        html = page.read_text()
        assert html.count('data-status="gap"') == 1 and f'data-day="{DAY}" data-status="gap"' in html
        assert "rows changed outside scanfill" in html and "--refetch" in html

        args = repair_of(gaps[0])
        assert args[:4] == ["run", "--migration", "0", "--refetch"]
        p = scanfill(*args, "--no-progress", dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0, out
        rep = report_json(db, sim.urls)
        v = scanfill("verify", dsn=db, urls=sim.urls)
        said = finish(v, 120, db)
        assert v.returncode == 0, said
    assert_db_matches(db, ledger)
    assert not [x for x in rep["days"] if x["status"] == "gap"]
    assert datetime.fromisoformat(rep["complete_through"]["record_time"]) == top_of_migration_1(ledger)
    assert kept_days(db) == independent_day_counts(db)


def test_a_day_short_at_every_scan_is_a_gap_until_refetched(db: str) -> None:
    """A scan that said `complete: true` served some pages short: the load and plain verify cannot
    know, but `verify --against-scan --days` finds each such day short at every scan asked; those
    days become gaps (verified_by []) and the watermark stops before the first, until a refetch."""
    ledger = Ledger(DAYS)
    with Simulator(SimConfig(ledger=DAYS, instances=(InstanceConfig("sv-short", omit_every=23),))) as short:
        load(db, short.urls)
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        v = scanfill("verify", "--against-scan", "--days", "2024-06-21..2024-06-23", dsn=db, urls=sim.urls)
        said = finish(v, 120, db)
        assert v.returncode == 1, said
        rep = report_json(db, sim.urls)
        days = {x["day"]: x for x in rep["days"] if x["migration_id"] == 0}
        wrong = sorted(d for d in ("2024-06-21", "2024-06-22", "2024-06-23") if days[d]["verified_by"] == [])
        assert wrong, rep["days"]
        for d in ("2024-06-21", "2024-06-22", "2024-06-23"):
            if d in wrong:
                assert days[d]["status"] == "gap" and "differs from every scan asked" in days[d]["detail"], days[d]
                assert "missing" in days[d]["detail"] and "--refetch" in days[d]["detail"], days[d]
            else:
                assert days[d]["status"] == "complete", days[d]
        mark = rep["complete_through"]
        assert mark["migration_id"] == 0 and mark["record_time"].startswith(
            f"{datetime.fromisoformat(wrong[0]).date().fromordinal(datetime.fromisoformat(wrong[0]).toordinal() - 1)}"
            "T23:59:59.999999"), (mark, wrong)
        for d in wrong:
            p = scanfill(*repair_of(days[d]), "--no-progress", dsn=db, urls=sim.urls)
            out = finish(p, 240, db)
            assert p.returncode == 0, out
        v = scanfill("verify", "--against-scan", "--days", "2024-06-21..2024-06-23", dsn=db, urls=sim.urls)
        said = finish(v, 120, db)
        assert v.returncode == 0, said
        rep = report_json(db, sim.urls)
        # plain `verify --against-scan` (day windows, every day): the days still short are recorded too
        v = scanfill("verify", "--against-scan", "--json", dsn=db, urls=sim.urls)
        found = json.loads(finish(v, 120, db))
        after = report_json(db, sim.urls)
    days = {x["day"]: x for x in rep["days"] if x["migration_id"] == 0}
    for d in ("2024-06-21", "2024-06-22", "2024-06-23"):
        assert days[d]["status"] == "complete" and days[d]["verified_by"] == [sim.urls[0]], days[d]
    mark = rep["complete_through"]
    assert datetime.fromisoformat(mark["record_time"]) == top_of_migration_1(ledger), mark
    assert kept_days(db) == independent_day_counts(db)
    rows = next(c["rows"] for c in found if c["name"].startswith("the stored copy equals each scan"))
    short_days = {(int(m), day) for m, day in (re.match(r"migration (\d+) \S+ (\d{4}-\d\d-\d\d)", r).groups()
                                                for r in rows)}  # type: ignore[union-attr]  # fmt: skip
    assert v.returncode == 1 and short_days and not {(0, d) for d in wrong} & short_days, rows
    gaps = {(x["migration_id"], x["day"]) for x in after["days"] if x["status"] == "gap"}
    assert gaps == short_days, (gaps, short_days)
