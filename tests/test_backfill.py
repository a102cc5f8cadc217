"""End-to-end backfill against real PostgreSQL and the simulator over HTTP."""

from __future__ import annotations

import time
from dataclasses import replace

import psycopg
import pytest

from dbcheck import assert_db_matches
from scanfill.db import Database
from scanfill.load.run import RunOptions, run
from scanfill.scan.client import ScanConfig
from scanfill.sim import FaultConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.timeutil import parse_us
from shared import SMALL, options


def test_full_history_exactly_once(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        summary = run(options(db, sim.urls, concurrency=6, page_size=50, batch_rows=200))
    assert summary.complete and not summary.failures
    rows = assert_db_matches(db, Ledger(SMALL))
    assert summary.rows == rows
    with psycopg.connect(db) as conn:
        kinds = dict(conn.execute("SELECT kind, count(*) FROM ledger_updates GROUP BY 1").fetchall())
        assert kinds.get("assignment", 0) > 0 and kinds.get("unassignment", 0) > 0
        # the newest update of every range (exactly at `max`) is there, and its exact microseconds
        for m, sync, mx in conn.execute("SELECT migration_id, synchronizer_id, max_text FROM backfill_ranges"):
            got = conn.execute(
                "SELECT to_char(max(record_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                "FROM ledger_updates WHERE migration_id = %s AND synchronizer_id = %s",
                (m, sync),
            ).fetchone()
            assert got is not None and got[0].startswith(mx.rstrip("Z"))
        cursors = conn.execute("SELECT count(*), bool_and(complete) FROM backfill_cursors").fetchone()
        assert cursors == (cursors[0], True) and cursors[0] > 3


def test_rerun_loads_nothing_twice(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        first = run(options(db, sim.urls, concurrency=4))
        second = run(options(db, sim.urls, concurrency=4))
    assert first.complete and second.complete and second.rows == 0
    assert_db_matches(db, Ledger(SMALL))


def test_label_less_values_and_explicit_migration(db: str) -> None:
    cfg = LedgerConfig(seed=5, labels=False, migrations=SMALL.migrations)
    with Simulator(SimConfig(ledger=cfg)) as sim:
        summary = run(options(db, sim.urls, concurrency=4, migrations=(4,)))
    assert summary.complete
    assert_db_matches(db, Ledger(cfg), migrations=[4])  # rounds derived from positional records too


def test_faults_end_with_identical_content(db: str) -> None:
    # schedules make sure every fault happens; the rates add seeded randomness on top
    faults = FaultConfig(every_429=7, every_503=11, every_502=13, every_drop=17, rate_429=0.05, rate_503=0.03,
                         latency_ms=5, jitter_ms=20, retry_after_s=0.05, max_page=40, seed=3)  # fmt: skip
    with Simulator(SimConfig(ledger=SMALL, faults=faults)) as sim:
        summary = run(options(db, sim.urls, concurrency=8, page_size=100, batch_rows=300))
        stats = sim.stats()
    assert summary.complete and not summary.failures, summary.failures
    assert all(stats["faults"].get(k, 0) > 0 for k in ("429", "503", "502", "drop")), stats["faults"]
    assert_db_matches(db, Ledger(SMALL))


def test_failover_between_scans_and_late_joiner_not_trusted(db: str) -> None:
    from scanfill.sim import InstanceConfig

    instances = (
        InstanceConfig("sv-1", faults=FaultConfig(every_403=1)),  # forbidden: must be benched
        InstanceConfig("sv-2", late_join=0.5),  # incomplete: must never serve a slice
        InstanceConfig("sv-3"),
    )
    with Simulator(SimConfig(ledger=SMALL, instances=instances)) as sim:
        summary = run(options(db, sim.urls, concurrency=4))
        served = [sim.stats(k)["by_path"].get("/v0/backfilling/updates-before", 0) for k in range(3)]
    assert summary.complete and not summary.failures
    assert served[1] == 0 and served[2] > 0
    assert_db_matches(db, Ledger(SMALL))


def test_hung_scan_fails_over(db: str) -> None:
    from scanfill.sim import InstanceConfig

    instances = (InstanceConfig("sv-1", faults=FaultConfig(every_hang=1, hang_s=60)), InstanceConfig("sv-2"))
    with Simulator(SimConfig(ledger=SMALL, instances=instances)) as sim:
        opts = options(db, sim.urls, concurrency=4)
        opts = RunOptions(worker=opts.worker.__class__(**{**opts.worker.__dict__, "scan": ScanConfig(
            urls=tuple(sim.urls), timeout_s=1, read_timeout_s=0.5, backoff_base_s=0.01, backoff_cap_s=0.1,
            failure_cooldown_s=30)}), progress=False)  # fmt: skip
        summary = run(opts)
    assert summary.complete and not summary.failures
    assert_db_matches(db, Ledger(SMALL))


def test_a_hung_scan_costs_a_hedge_not_the_read_timeout(db: str) -> None:
    """With the default 60 s read timeout, a scan that never answers is raced by a second scan after
    a short wait, loses, and is benched; the load finishes exact long before any timeout."""
    from scanfill.sim import InstanceConfig

    hang = FaultConfig(rate_hang=1.0, hang_s=600)
    instances = (InstanceConfig("sv-1"), InstanceConfig("sv-2", faults=hang), InstanceConfig("sv-3"))
    with Simulator(SimConfig(ledger=SMALL, instances=instances)) as sim:
        opts = options(db, sim.urls, concurrency=4)
        scan = ScanConfig(urls=tuple(sim.urls), hedge_first_s=0.3, hedge_min_s=0.3)
        t0 = time.monotonic()
        summary = run(RunOptions(worker=replace(opts.worker, scan=scan), progress=False))
        took = time.monotonic() - t0
        hung = sim.stats(1)["by_path"].get("/v0/backfilling/updates-before", 0)
        answered = [sim.stats(k)["by_path"].get("/v0/backfilling/updates-before", 0) for k in (0, 2)]
    assert summary.complete and not summary.failures
    assert took < 50  # the read timeout alone would take 60 s for the first hung request
    hedges = sum(r.hedges for r in summary.reports)
    won = sum(r.hedges_won for r in summary.reports)
    # every request the hung scan got was rescued by a hedge that won; a loaded machine may also hedge a
    # healthy scan that was merely slow, and that one's first answer may still win
    assert 1 <= hung <= won <= hedges, (hung, won, hedges)
    assert sum(answered) > 10 * hung  # benched after losing: the hung scan soon gets nothing
    assert_db_matches(db, Ledger(SMALL))


def test_malformed_page_names_slice_and_loses_nothing(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert run(options(db, sim.urls, concurrency=2, migrations=(0,))).complete
        with psycopg.connect(db) as conn:
            loaded = conn.execute("SELECT count(*) FROM ledger_updates").fetchone()
        sim.set_faults(FaultConfig(every_malformed=1))
        bad = run(options(db, sim.urls, concurrency=2))
        assert not bad.complete and bad.failures
        assert all("slice m4/" in f and "cursor (before) 20" in f and "record_time" in f for f in bad.failures)
        with psycopg.connect(db) as conn:  # nothing of migration 4 stored, migration 0 untouched
            assert conn.execute("SELECT count(*) FROM ledger_updates").fetchone() == loaded
            assert conn.execute("SELECT count(*) FROM ledger_updates WHERE migration_id = 4").fetchone() == (0,)
        sim.set_faults(FaultConfig())
        assert run(options(db, sim.urls, concurrency=2)).complete
    assert_db_matches(db, Ledger(SMALL))


def test_unreachable_scan_is_a_clear_error(db: str) -> None:
    from scanfill.errors import ScanError

    with pytest.raises(ScanError, match="gave up after"):
        run(options(db, ["http://127.0.0.1:9/api/scan"], concurrency=1))


def test_gzip_asked_for_remote_scans_only() -> None:
    from scanfill.scan.client import ScanClient

    assert not ScanClient(ScanConfig(urls=("http://127.0.0.1:1/api/scan",)))._want_gzip()
    assert ScanClient(ScanConfig(urls=("https://scan.sv-1.example/api/scan",)))._want_gzip()
    assert ScanClient(ScanConfig(urls=("http://127.0.0.1:1/api/scan",), gzip=True))._want_gzip()


def test_gzip_responses_load_identically(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        opts = options(db, sim.urls, concurrency=4)
        from dataclasses import replace

        opts = replace(opts, worker=replace(opts.worker, scan=replace(opts.worker.scan, gzip=True)))
        summary = run(opts)
        assert summary.complete
        assert sim.stats()["bytes"] < summary.bytes / 2  # the wire carried gzip, the database got the JSON
    assert_db_matches(db, Ledger(SMALL))


def test_multi_megabyte_updates_load_with_small_pages(db: str) -> None:
    big = LedgerConfig(seed=2, payload_pad=1_500_000, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 30),))
    with Simulator(SimConfig(ledger=big)) as sim:
        summary = run(options(db, sim.urls, concurrency=4, page_size=1000))
    assert summary.complete and summary.bytes > 30 * 1_000_000  # updates of several MB each
    assert_db_matches(db, Ledger(big))
    with psycopg.connect(db) as conn:
        biggest = conn.execute("SELECT max(length(update_json::text)) FROM ledger_updates").fetchone()
    assert biggest is not None and biggest[0] > 2_000_000


def test_import_updates_only_with_the_flag(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert run(options(db, sim.urls, concurrency=3)).complete
        assert_db_matches(db, Ledger(SMALL))  # skipped by default
        summary = run(options(db, sim.urls, concurrency=3, imports=True, page_size=2))
    assert summary.complete and summary.updates == len(Ledger(SMALL).import_ids(4)) > 0
    assert_db_matches(db, Ledger(SMALL), imports=True)
    with psycopg.connect(db) as conn:
        kinds = conn.execute("SELECT DISTINCT record_time FROM ledger_updates WHERE kind = 'import'").fetchall()
        assert [k[0].year for k in kinds] == [1]


def test_updates_one_microsecond_apart_across_a_page_boundary(db: str) -> None:
    one = LedgerConfig(seed=4, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 400),))
    ledger = Ledger(one)
    # one slice, pages of 29 newest-first: the first page ends at update 371 and the next starts at
    # 370, and 371 % 37 == 1 makes those two exactly 1 us apart
    assert ledger.record_us(0, 0, 371) - ledger.record_us(0, 0, 370) == 1
    with Simulator(SimConfig(ledger=one)) as sim:
        summary = run(options(db, sim.urls, concurrency=1, page_size=29, batch_rows=1, slices=1))
        assert sim.stats()["pages"] >= 400 // 29
    assert summary.complete
    assert_db_matches(db, ledger)


def test_schema_upgrades_in_place(db: str) -> None:
    from scanfill.coord import schema

    d = Database(db)
    with psycopg.connect(db, autocommit=True) as conn:  # a database left by the first release
        conn.execute("CREATE TABLE scanfill_meta (key text PRIMARY KEY, value text NOT NULL)")
        conn.execute(str(schema.MIGRATIONS[0]).replace("{s}", '"public"'))
        conn.execute("INSERT INTO scanfill_meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO backfill_workers (worker_id, host, pid) VALUES ('old', 'h', 1)")
    assert schema.init(d) == (1, schema.SCHEMA_VERSION)
    assert schema.init(d) == (schema.SCHEMA_VERSION, schema.SCHEMA_VERSION)
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "SELECT to_regclass('scanfill_saved_indexes') IS NOT NULL, "
            "to_regclass('backfill_import_cursors') IS NOT NULL"
        ).fetchone() == (True, True)
        assert conn.execute("SELECT worker_id FROM backfill_workers").fetchall() == [("old",)]  # data kept


def test_discovery_survives_faults_on_every_endpoint(db: str) -> None:
    faults = FaultConfig(every_503=3, every_429=4, every_502=5, data_only=False, retry_after_s=0.01)
    with Simulator(SimConfig(ledger=SMALL, faults=faults)) as sim:
        summary = run(options(db, sim.urls, concurrency=3))
        by_path = sim.stats()["by_path"]
    assert summary.complete and not summary.failures
    assert by_path["/v0/backfilling/migration-info"] > 3  # discovery itself was retried through faults
    assert_db_matches(db, Ledger(SMALL))


def test_active_migration_grows_and_a_rerun_loads_only_the_new_updates(db: str) -> None:
    def ledger(n: int) -> LedgerConfig:  # same seed: the longer ledger extends the shorter one
        return LedgerConfig(seed=9, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 200),
                                                 MigrationSpec(2, "2024-06-24T22:00:00Z", n)))  # fmt: skip

    with Simulator(SimConfig(ledger=ledger(150))) as sim:
        assert run(options(db, sim.urls, concurrency=3)).complete
    assert_db_matches(db, Ledger(ledger(150)))
    with Simulator(SimConfig(ledger=ledger(260))) as sim:
        again = run(options(db, sim.urls, concurrency=3))
    assert again.complete and again.updates == 110  # only what Scan ingested since
    assert_db_matches(db, Ledger(ledger(260)))
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT max_text FROM backfill_ranges WHERE migration_id = 2").fetchone() == (
            Ledger(ledger(260)).expected(2, Ledger(ledger(260)).synchronizer_id(0))[-1].record_time.replace(
                ".000000Z", "Z"),)  # fmt: skip


def test_envelope_updates_keep_everything_but_the_duplicate_events(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        summary = run(options(db, sim.urls, concurrency=3, update_json="envelope"))
    assert summary.complete
    assert_db_matches(db, Ledger(SMALL))
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT update_json::text, kind FROM ledger_updates").fetchall()
    import json

    for text, kind in rows:
        doc = json.loads(text)
        if kind == "transaction":
            assert doc["events_by_id"] == {} and doc["root_event_ids"] and doc["record_time"]
        else:
            assert "event" in doc  # reassignments are stored whole
    uid = Ledger(SMALL).update_id(0, 0, 7)
    served = json.loads(json.dumps(Ledger(SMALL).update(0, 0, 7)))
    stored = json.loads(next(t for t, _ in rows if json.loads(t)["update_id"] == uid))
    assert {k: v for k, v in served.items() if k != "events_by_id"} == {
        k: v for k, v in stored.items() if k != "events_by_id"
    }


def test_history_from_a_late_joiner_is_never_complete_until_a_complete_scan_covers_it(db: str) -> None:
    from scanfill.sim import InstanceConfig

    late = SimConfig(ledger=SMALL, instances=(InstanceConfig("sv-late", late_join=0.5),))
    with Simulator(late) as sim:
        partial = run(options(db, sim.urls, concurrency=3))
    assert not partial.complete and partial.warnings  # loaded what it has, said it cannot prove more
    assert 0 < partial.updates < Ledger(SMALL).total_updates()
    with Simulator(SimConfig(ledger=SMALL)) as sim:  # a complete scan shows the earlier history
        rest = run(options(db, sim.urls, concurrency=3))
    assert rest.complete and partial.updates + rest.updates == Ledger(SMALL).total_updates()
    assert_db_matches(db, Ledger(SMALL))
    from scanfill.ops import verify

    assert all(c.ok for c in verify.checks(Database(db)))  # slices tile the widened ranges


def test_when_every_scan_is_slow_hedges_stay_within_a_quarter_of_the_requests_in_flight() -> None:
    import asyncio

    from scanfill.scan.client import ScanClient
    from scanfill.sim import InstanceConfig

    slow = FaultConfig(latency_ms=1500)
    instances = (InstanceConfig("sv-1"), InstanceConfig("sv-2"))
    with Simulator(SimConfig(ledger=SMALL, instances=instances, faults=slow)) as sim:
        sync = Ledger(SMALL).synchronizer_id(0)

        async def eight() -> tuple[int, int]:
            cfg = ScanConfig(urls=tuple(sim.urls), hedge_first_s=0.2, hedge_min_s=0.2)
            async with ScanClient(cfg) as client:
                got = await asyncio.gather(*(client.updates_before(0, sync, parse_us("2030-01-01T00:00:00Z"), None, 5) for _ in range(8)))
                assert all(b'"transactions"' in g for g in got)
                return client.stats.hedges, client.stats.hedges_peak

        hedges, peak = asyncio.run(eight())
    assert hedges >= 1 and peak == 2  # 8 requests in flight (10 with the hedges): 2 hedges at once, not 8


def test_the_memory_budget_bounds_pages_in_flight_and_the_copy_stays_exact(db: str) -> None:
    """A 1 MB budget at concurrency 8: pages shrink to fit, slices wait for commits, and the peak of
    page bytes held stays near the budget (it can pass it only by what the pages in flight weigh
    beyond their estimate: bytes that arrived cannot be refused); the copy is exact. Without the
    budget each slice would hold up to --batch-rows (2,000 rows, ~3 MB) pending: ~24 MB."""
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        summary = run(options(db, sim.urls, concurrency=8, memory_mb=1, batch_rows=2000))
    assert summary.complete
    report = summary.reports[0]
    assert 0 < report.memory_peak <= 2 * 1024 * 1024, report.memory_peak
    assert report.memory_waits > 0
    assert_db_matches(db, Ledger(SMALL))
