"""The completeness ledger: what is provably whole per (migration, synchronizer, UTC day), the
watermark, the reports that show it, and `verify --against-scan --days` (real PostgreSQL, the
simulator over HTTP, `scanfill` as processes)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from datetime import date, datetime
from typing import Any

import pytest

from dbcheck import assert_db_matches, independent_day_counts
from helpers import post_json
from procs import finish, scanfill
from scanfill.sim import FaultConfig, InstanceConfig, Ledger, SimConfig, Simulator
from scanfill.timeutil import parse_us, us_to_dt
from shared import DAYS

LOST = ("2024-06-22T10:00:00Z", "2024-06-22T10:30:00Z")  # a window the first scan cannot serve
ARGS = ("--no-progress", "--slices", "40", "--concurrency", "3")


def report_json(db: str, urls: list[str]) -> dict[str, Any]:
    p = scanfill("report", "--completeness", "--format", "json", dsn=db, urls=urls)
    out = finish(p, 60, db)
    assert p.returncode == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


def expected_days(ledger: Ledger) -> set[tuple[int, str, str]]:
    return {(h.migration_id, h.synchronizer_id, us_to_dt(h.record_us).date().isoformat())
            for h in ledger.expected_all() if h.kind != "import"}


def test_a_window_no_scan_serves_is_a_gap_until_refetched(db: str, tmp_path: Any) -> None:
    ledger = Ledger(DAYS)
    lossy = SimConfig(ledger=DAYS, instances=(InstanceConfig(unservable=LOST),))
    with Simulator(lossy) as sim:
        p = scanfill("run", *ARGS, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 1 and "not available on this scan" in out, out
        rep = report_json(db, sim.urls)
        csv_text = finish(scanfill("report", "--completeness", "--format", "csv", dsn=db, urls=sim.urls), 60, db)
        html_path = tmp_path / "gap.html"
        assert scanfill("report", "-o", str(html_path), dsn=db, urls=sim.urls).wait(timeout=60) == 0
        status = json.loads(finish(scanfill("status", "--json", dsn=db, urls=sim.urls), 60, db))
        piped = finish(scanfill("status", dsn=db, urls=sim.urls), 60, db)  # as a log or a pipe shows it
        table = finish(scanfill("report", "--completeness", dsn=db, urls=sim.urls), 60, db)
        one = json.loads(finish(scanfill("report", "--completeness", "--format", "json", "--from", "2024-06-22",
                                         "--to", "2024-06-22", dsn=db, urls=sim.urls), 60, db))  # fmt: skip
    assert [(d["day"], d["status"]) for d in one["days"]] == [("2024-06-22", "gap")]
    for text in (piped, table):  # readable at 80 columns: nothing wider, no id cut to nothing
        assert max(len(ln) for ln in text.splitlines()) <= 80, text
        assert "global-domain::1220" in text and "…" not in text, text
    assert "complete through: migration 0, 2024-06-22" in piped and "1 gap" in piped and "ETA" not in piped
    assert "2024-06-22   0 global-domain::" in table and " gap " in table
    days = rep["days"]
    # every day of every range is listed (quiet days too), and exactly the lost window's day is a gap
    assert {(d["migration_id"], d["synchronizer_id"], d["day"]) for d in days} >= expected_days(ledger)
    gaps = [d for d in days if d["status"] == "gap"]
    assert [(g["migration_id"], g["day"]) for g in gaps] == [(0, "2024-06-22")], gaps
    assert "not available on this scan" in gaps[0]["detail"]
    newest = max(d["day"] for d in days if d["migration_id"] == 1)
    for d in days:
        if d["status"] != "gap":
            want = "in progress" if (d["migration_id"], d["day"]) == (1, newest) else "complete"
            assert d["status"] == want, d
    assert rep["summary"]["gap"] == 1
    # the figures equal an independent count from the ledger tables; sources and agreement kept
    counted = independent_day_counts(db)
    for d in days:
        assert (d["updates"], d["events"]) == counted.get((d["migration_id"], d["synchronizer_id"], d["day"]),
                                                          (0, 0)), d  # fmt: skip
        if d["updates"]:
            assert d["sources"] == ["backfill"] and d["agreed_by"] == 1, d
    # the watermark stops before the gap: inside migration 0, before the lost window
    mark = rep["complete_through"]
    assert mark["migration_id"] == 0 and datetime.fromisoformat(mark["record_time"]) < us_to_dt(parse_us(LOST[0]))
    assert datetime.fromisoformat(mark["record_time"]).date() >= date(2024, 6, 22)  # the days before are whole
    assert status["complete_through"] == mark and status["days"]["gap"] == 1
    # the CSV and the HTML say the same
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert [(r["migration_id"], r["day"]) for r in rows if r["status"] == "gap"] == [("0", "2024-06-22")]
    page = html_path.read_text()
    assert page.count('data-status="gap"') == 1 and 'data-day="2024-06-22" data-status="gap"' in page
    assert "not available on this scan" in page

    # a scan that serves the window: refetching the day loads it, and the watermark moves past it
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        p = scanfill("run", *ARGS, "--refetch", "2024-06-22T00:00:00Z/2024-06-23T00:00:00Z", dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0, out
        rep = report_json(db, sim.urls)
        v = scanfill("verify", dsn=db, urls=sim.urls)
        vout = finish(v, 120, db)
        assert v.returncode == 0, vout
    assert_db_matches(db, ledger)  # nothing lost, nothing twice
    assert not [d for d in rep["days"] if d["status"] == "gap"]
    day = next(d for d in rep["days"] if d["day"] == "2024-06-22")
    assert day["status"] == "complete" and "refetch" in day["sources"]
    counted = independent_day_counts(db)
    assert all((d["updates"], d["events"]) == counted.get((d["migration_id"], d["synchronizer_id"], d["day"]),
                                                          (0, 0)) for d in rep["days"])  # fmt: skip
    top = min(max(h.record_us for h in ledger.expected_all() if h.migration_id == 1 and h.synchronizer_id == s)
              for s in {h.synchronizer_id for h in ledger.expected_all() if h.migration_id == 1})
    mark = rep["complete_through"]
    assert mark["migration_id"] == 1 and datetime.fromisoformat(mark["record_time"]) == us_to_dt(top)


def screenshot(page: Any, png: Any, profile: Any) -> Any:
    """A headless Chromium screenshot of a report; the image, after checking nothing complained."""
    import os
    import shutil
    import subprocess

    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is needed for this test: apt-get install chromium (.ci/run does)"
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--screenshot={png}",
                          "--window-size=1000,1700", page.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert png.exists() and png.stat().st_size > 10_000, res.stderr[-2000:]
    assert not [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    if os.environ.get("SCANFILL_SCREENSHOTS"):  # to look at them: SCANFILL_SCREENSHOTS=dir pytest ...
        shutil.copy(png, os.path.join(os.environ["SCANFILL_SCREENSHOTS"], png.name))
    return Image.open(png).convert("RGB")


def pixels(img: Any, rgb: tuple[int, int, int]) -> int:
    return sum(n for n, c in img.getcolors(maxcolors=1 << 22) if c == rgb)


RED, SKY, GREEN = (220, 38, 38), (56, 189, 248), (22, 163, 74)  # gap, in progress, complete


@pytest.mark.needs("chromium")
def test_report_screenshots_of_a_live_a_gapped_and_a_finished_load(db: str, tmp_path: Any) -> None:
    from procs import lines_of, wait_for

    def report(name: str, urls: list[str]) -> tuple[str, Any]:
        page = tmp_path / f"{name}.html"
        assert scanfill("report", "-o", str(page), dsn=db, urls=urls).wait(timeout=60) == 0
        text = page.read_text()
        assert "<script" not in text and "http://" not in text.replace("http://127.0.0.1", "")
        return text, screenshot(page, tmp_path / f"{name}.png", tmp_path / "profile")

    slow = FaultConfig(latency_ms=120)  # slow enough for the live report to have seconds of samples
    lossy = SimConfig(ledger=DAYS, faults=slow, instances=(InstanceConfig(unservable=LOST),))
    with Simulator(lossy) as sim:
        assert scanfill("init", dsn=db, urls=sim.urls).wait(timeout=60) == 0
        p = scanfill("run", *ARGS, "--page-size", "5", "--batch-rows", "5", dsn=db, urls=sim.urls)
        out = lines_of(p)
        wait_for(lambda: sum(1 for d in report_json(db, sim.urls)["days"] if d["status"] == "complete") >= 3,
                 timeout=120, what="three complete days while loading")  # fmt: skip
        # the scan slows to a crawl while the report is taken, so the load is still running then (on a
        # fast machine it could otherwise finish while the browser starts); leases stay renewed
        faults_url = sim.urls[0].rsplit("/api/scan", 1)[0] + "/sim/faults"
        post_json(faults_url, {"latency_ms": 20_000})
        live, img = report("live", sim.urls)
        assert p.poll() is None, out  # taken while loading
        post_json(faults_url, {"latency_ms": slow.latency_ms})
        assert 'data-status="in progress"' in live and pixels(img, SKY) > 200 and pixels(img, GREEN) > 200
        assert p.wait(timeout=240) == 1, out
        gapped, img = report("gap", sim.urls)
    assert gapped.count('data-status="gap"') == 1 and pixels(img, RED) > 500  # a day's cell, not only the legend
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        p = scanfill("run", *ARGS, "--refetch", "2024-06-22T00:00:00Z/2024-06-23T00:00:00Z", dsn=db, urls=sim.urls)
        assert p.wait(timeout=240) == 0
        done, img = report("finished", sim.urls)
    assert 'data-status="gap"' not in done and pixels(img, RED) < 200 and pixels(img, GREEN) > 1000  # legend only
    assert done.count("<polyline") >= 4  # rate, rows, coverage, ETA


def test_a_followed_day_turns_complete(db: str, tmp_path: Any) -> None:
    """A backfill that ends inside the newest migration's last day leaves it in progress; the
    follower carries the copy past midnight, and that day turns complete (and the watermark with it)."""
    from procs import lines_of, stored, wait_for

    ledger = Ledger(DAYS)
    total = ledger.total_updates()
    # the first scan shows migration 1 up to about 23:00 on 2024-06-25 (its last 15 updates per
    # synchronizer, up to 04:00 the next day, appear at a rate too slow to matter)
    frozen = SimConfig(ledger=DAYS, grow=0.001, grow_updates=30)
    with Simulator(frozen) as sim:
        p = scanfill("run", *ARGS, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0, out
        before = {(d["migration_id"], d["synchronizer_id"], d["day"]): d for d in report_json(db, sim.urls)["days"]}
    last = {k: d for k, d in before.items() if k[0] == 1 and k[2] == "2024-06-25"}
    assert len(last) == 2 and all(d["status"] == "in progress" for d in last.values()), last
    assert not [k for k in before if k[2] == "2024-06-26"]
    # the same ledger, its tail now appearing (4 updates/s): the follower, not a backfill, stores it
    with Simulator(SimConfig(ledger=DAYS, grow=4, grow_updates=30)) as sim:
        f = scanfill("follow", "--poll", "0.2", "--lease", "4", dsn=db, urls=sim.urls)
        said = lines_of(f)
        try:
            wait_for(lambda: stored(db) == total, timeout=120, what="the follower to catch up")
            rep = report_json(db, sim.urls)
            page = tmp_path / "followed.html"
            assert scanfill("report", "-o", str(page), dsn=db, urls=sim.urls).wait(timeout=60) == 0
        finally:
            f.terminate()
            try:
                f.wait(timeout=60)
            except subprocess.TimeoutExpired:
                f.kill()
                raise AssertionError("the follower did not stop:\n" + "\n".join(said[-200:])) from None
        assert f.returncode == 0, said
    assert_db_matches(db, ledger)
    after = {(d["migration_id"], d["synchronizer_id"], d["day"]): d for d in rep["days"]}
    for k in last:
        assert after[k]["status"] == "complete" and after[k]["sources"][0] == "backfill", after[k]
    newest = [d for k, d in after.items() if k[2] == "2024-06-26"]
    assert len(newest) == 2 and all(d["status"] == "in progress" and d["sources"] == ["follow"] for d in newest), newest
    counted = independent_day_counts(db)
    assert all((d["updates"], d["events"]) == counted.get(k, (0, 0)) for k, d in after.items())
    mark = rep["complete_through"]
    newest_t = max(h.record_us for h in ledger.expected_all() if h.migration_id == 1)
    assert mark["migration_id"] == 1 and datetime.fromisoformat(mark["record_time"]) == us_to_dt(newest_t)
    assert "follower lag" in page.read_text()


def test_days_reconciled_against_the_scans_say_who_vouches_for_them(db: str, tmp_path: Any) -> None:
    """`run --agree 2` with one faulty scan among three: the days record agreement and the
    disagreements; `verify --against-scan --days` names, per day, the scans that serve exactly the
    stored copy and the one that does not, and the ledger keeps it."""
    honest, faulty = InstanceConfig("sv-1"), InstanceConfig("sv-bad", alter_every=29)
    with Simulator(SimConfig(ledger=DAYS, instances=(honest, faulty, InstanceConfig("sv-3")))) as sim:
        p = scanfill("run", *ARGS, "--agree", "2", dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0, out
        v = scanfill("verify", "--against-scan", "--days", "2024-06-21..2024-06-22", dsn=db, urls=sim.urls)
        said = finish(v, 240, db)
        rep = report_json(db, sim.urls)
        page = tmp_path / "agreed.html"
        assert scanfill("report", "-o", str(page), dsn=db, urls=sim.urls).wait(timeout=60) == 0
        good, bad = sorted([sim.urls[0], sim.urls[2]]), sim.urls[1]
    assert v.returncode == 1, said  # the faulty scan differs: verify says so
    lines = [ln for ln in said.splitlines() if ln.startswith(("2024-06-21 ", "2024-06-22 "))]
    assert len(lines) == 2, said
    for ln in lines:
        assert f"the same at {', '.join(good)}" in ln and f"differs at {bad}" in ln, ln
    days = {d["day"]: d for d in rep["days"] if d["migration_id"] == 0}
    for day in ("2024-06-21", "2024-06-22"):
        assert days[day]["verified_by"] == good and days[day]["verified_at"], days[day]
    assert days["2024-06-20"]["verified_by"] is None  # only the days asked for
    assert all(d["agreed_by"] == 2 for d in rep["days"] if d["updates"])
    assert sum(d["disagreements"] for d in rep["days"]) > 0
    text = page.read_text()
    assert "Scans that disagreed" in text and bad.split("//")[1] in text and "None recorded" not in text
