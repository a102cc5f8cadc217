"""Trusting no single scan: every SV's scan discovered from one seed, and pages stored only when
K scans agree. Several simulated scans on their own ports, one or two of them faulty."""

from __future__ import annotations

import psycopg

from dbcheck import assert_db_matches
from procs import scanfill
from scanfill.load.run import run
from scanfill.sim import FaultConfig, InstanceConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from shared import options

LEDGER = LedgerConfig(seed=23, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 300),
                                           MigrationSpec(1, "2024-06-25T00:00:00Z", 250)))  # fmt: skip
HONEST = InstanceConfig("sv-1")


def test_one_faulty_scan_among_three_is_outvoted_and_named(db: str) -> None:
    faulty = InstanceConfig("sv-bad", alter_every=17)
    with Simulator(SimConfig(ledger=LEDGER, instances=(HONEST, faulty, InstanceConfig("sv-3")))) as sim:
        summary = run(options(db, sim.urls, concurrency=4, page_size=40, agree="2"))
        bad_url = sim.urls[1]
    assert summary.complete and not summary.failures
    assert_db_matches(db, Ledger(LEDGER))
    with psycopg.connect(db) as conn:  # the stored JSON is the honest scans', byte for byte
        stored = dict(conn.execute("SELECT update_id, update_json::text FROM ledger_updates").fetchall())
        named = conn.execute("SELECT DISTINCT url FROM scan_disagreements").fetchall()
    ledger = Ledger(LEDGER)
    import orjson

    for h in ledger.expected_all()[::7]:
        m, s, i = h.migration_id, 0, ledger.index_at_or_after(h.migration_id, 0, h.record_us)
        assert orjson.loads(stored[h.update_id]) == ledger.update(m, s, i)
    assert named == [(bad_url,)]
    assert summary.disagreements and all(bad_url in d for d in summary.disagreements)


def test_two_faulty_scans_that_disagree_store_nothing_wrong(db: str) -> None:
    # both alter the same updates, each differently: for those pages no two scans agree
    bad1 = InstanceConfig("bad-1", alter_every=97, alter_digit="7")
    bad2 = InstanceConfig("bad-2", alter_every=97, alter_digit="3")
    with Simulator(SimConfig(ledger=LEDGER, instances=(bad1, bad2, HONEST))) as sim:
        summary = run(options(db, sim.urls, concurrency=4, page_size=40, agree="2"))
    # pages holding an altered update find no two scans agreeing: their slices stop, named
    assert summary.failures and not summary.complete
    assert any("no 2 scans returned the same page" in f for f in summary.failures)
    ledger = Ledger(LEDGER)
    import orjson

    honest = {h.update_id: (h.migration_id, ledger.index_at_or_after(h.migration_id, 0, h.record_us))
              for h in ledger.expected_all()}  # fmt: skip
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT update_id, update_json::text FROM ledger_updates").fetchall()
    assert rows  # pages all three agree on were stored
    for uid, text in rows:
        m, i = honest[uid]
        assert orjson.loads(text) == ledger.update(m, 0, i), uid  # nothing altered was stored


def test_one_seed_discovers_every_scan_and_skips_the_unusable(db: str) -> None:
    forbidden = InstanceConfig("sv-403", faults=FaultConfig(rate_403=1.0, data_only=False))
    with Simulator(SimConfig(ledger=LEDGER, instances=(HONEST, InstanceConfig("sv-2"), forbidden))) as sim:
        summary = run(options(db, sim.urls[:1], concurrency=4, page_size=60, agree="auto"))
        served = [sim.stats(k)["by_path"].get("/v0/backfilling/updates-before", 0) for k in range(3)]
    assert summary.complete
    assert_db_matches(db, Ledger(LEDGER))
    assert len(summary.scans) == 3 and sum("HTTP 403" in line for line in summary.scans) == 1
    assert served[0] > 0 and served[1] > 0 and served[2] == 0  # both usable scans carried load, the 403 one none


def test_agree_needs_enough_scans(db: str) -> None:
    with Simulator(SimConfig(ledger=LEDGER)) as sim:
        p = scanfill("run", "--no-progress", "--agree", "2", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=120)[0].decode()
    # refused once, up front, before any slice is planned or asked for (it was once per slice)
    assert p.returncode == 2 and out.count("--agree 2 needs 2 scans") == 1, out
    assert "slice" not in out and "planned" not in out, out


def test_page_digests_ignore_field_order_whitespace_and_map_order() -> None:
    """Pure: the canonical digest is over content, so a scan that orders fields or events_by_id
    differently agrees, and one changed digit does not."""
    import json

    from scanfill.load.agree import item_digests, page_digest

    ledger = Ledger(LEDGER)
    items = [ledger.update(0, 0, i) for i in range(5, 0, -1)]
    a = json.dumps({"transactions": items}).encode()
    shuffled = [{k: dict(reversed(list(v.items()))) if k == "events_by_id" else v for k, v in reversed(list(u.items()))}
                for u in items]  # fmt: skip
    b = json.dumps({"transactions": shuffled}, indent=2).encode()
    assert a != b and page_digest(item_digests(a)) == page_digest(item_digests(b))
    c = a.replace(b'"numeric": "', b'"numeric": "9', 1)
    differ = {u for u, d in item_digests(c).items() if item_digests(a)[u] != d}
    assert len(differ) == 1 and page_digest(item_digests(c)) != page_digest(item_digests(a))


def test_verify_names_the_windows_a_faulty_scan_spoiled_and_refetch_with_honest_scans_repairs_them(db: str) -> None:
    """--agree 1 against a faulty scan alone stores its altered updates; verify against two honest
    scans names the differing windows; run --refetch with the honest scans repairs them."""
    faulty = InstanceConfig("sv-bad", alter_every=113)
    with Simulator(SimConfig(ledger=LEDGER, instances=(faulty, HONEST, InstanceConfig("sv-3")))) as sim:
        bad, honest = sim.urls[0], sim.urls[1:]
        assert scanfill("run", "--no-progress", "--no-discover", dsn=db, urls=[bad]).wait(timeout=300) == 0
        p = scanfill("verify", "--against-scan", "--window-hours", "0.5", dsn=db, urls=honest)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 1 and "with other content" in out, out
        assert all(u in out for u in honest)  # both honest scans name the spoiled windows
        repairs = [ln.split("--refetch ")[1].split()[0] for ln in out.splitlines() if ln.startswith("repair:")]
        assert repairs
        args = [a for w in repairs for a in ("--refetch", w)]
        fix = scanfill("run", "--no-progress", "--no-discover", *args, dsn=db, urls=honest)
        assert fix.wait(timeout=300) == 0
        again = scanfill("verify", "--against-scan", "--window-hours", "0.5", dsn=db, urls=honest)
        out2 = again.communicate(timeout=300)[0].decode()
    assert again.returncode == 0, out2
    assert_db_matches(db, Ledger(LEDGER))


def test_a_scan_that_is_behind_cuts_nothing_and_leaves_no_hole(db: str) -> None:
    """One of three scans lags 25 updates behind at the head of every range. The plan goes up to
    the lowest head, so no request asks it past what it has; a later run (or the follower) gets
    the rest once it caught up, and nothing is lost in between."""
    behind = InstanceConfig("sv-slow", stale_updates=25)
    with Simulator(SimConfig(ledger=LEDGER, instances=(behind, HONEST, InstanceConfig("sv-3")))) as sim:
        first = run(options(db, sim.urls, concurrency=4, page_size=40))
        with psycopg.connect(db) as conn:
            got = conn.execute("SELECT count(*) FROM ledger_updates").fetchone()
        assert first.complete and got == (Ledger(LEDGER).total_updates() - 2 * 25,)
        second = run(options(db, sim.urls[1:], concurrency=4, page_size=40, discover_scans=False))  # those with the head
    assert second.complete
    assert_db_matches(db, Ledger(LEDGER))


def test_a_scan_that_reports_complete_but_omits_updates_is_outvoted(db: str) -> None:
    lossy = InstanceConfig("sv-lossy", omit_every=37)  # says complete, serves pages with holes
    with Simulator(SimConfig(ledger=LEDGER, instances=(lossy, HONEST, InstanceConfig("sv-3")))) as sim:
        summary = run(options(db, sim.urls, concurrency=4, page_size=50, agree="2"))
        lossy_url = sim.urls[0]
    assert summary.complete and not summary.failures
    assert_db_matches(db, Ledger(LEDGER))
    assert summary.disagreements and all(lossy_url in d for d in summary.disagreements)


def test_following_with_agreement_outvotes_a_faulty_scan_and_waits_for_a_lagging_one(db: str) -> None:
    """`follow --agree 2` among a faulty, a lagging and two honest scans: what is stored is the
    honest ledger, and only the faulty or lagging scans are ever named."""
    import orjson

    faulty = InstanceConfig("sv-bad", alter_every=41)
    lagging = InstanceConfig("sv-slow", stale_updates=20)
    with Simulator(SimConfig(ledger=LEDGER, instances=(faulty, lagging, HONEST, InstanceConfig("sv-4")))) as sim:
        p = scanfill("follow", "--once", "--start", "beginning", "--agree", "2", "--page-size", "60",
                     "--no-events", dsn=db, urls=sim.urls)  # fmt: skip
        out = p.communicate(timeout=300)[0].decode()
        honest = sim.urls[2:]
    assert p.returncode == 0, out
    # scans are asked in random order: when two honest ones came first the faulty one was not asked;
    # whoever is named, it is never an honest scan
    named = [ln for ln in out.splitlines() if ln.startswith("disagreement:")]
    assert all(not any(h in ln.split(" served ")[0] for h in honest) for ln in named), named
    assert_db_matches(db, Ledger(LEDGER))
    ledger = Ledger(LEDGER)
    with psycopg.connect(db) as conn:
        stored = dict(conn.execute("SELECT update_id, update_json::text FROM ledger_updates").fetchall())
    for h in ledger.expected_all()[::5]:  # the content is the honest scans' (in /v2's shape)
        i = ledger.index_at_or_after(h.migration_id, 0, h.record_us)
        want = ledger.update(h.migration_id, 0, i)
        got = orjson.loads(stored[h.update_id])
        assert got["events_by_id"] == want["events_by_id"], h.update_id


def test_a_scan_listed_later_is_found_during_a_long_run_and_used(db: str) -> None:
    later = InstanceConfig("sv-late", listed_after_s=1.5)  # an SV whose scan joins /v0/scans mid-run
    faults = FaultConfig(latency_ms=60)
    with Simulator(SimConfig(ledger=LEDGER, instances=(HONEST, later), faults=faults)) as sim:
        summary = run(options(db, sim.urls[:1], concurrency=2, page_size=15, rescan_s=0.5))
        served = sim.stats(1)["by_path"].get("/v0/backfilling/updates-before", 0)
    assert summary.complete and served > 0
    assert_db_matches(db, Ledger(LEDGER))
