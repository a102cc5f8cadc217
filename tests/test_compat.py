"""Real Scan compatibility: older scans without /v0/migrations/last, interface ids, rate limiters
without Retry-After. Real PostgreSQL, the simulator over HTTP."""

from __future__ import annotations

import psycopg

from dbcheck import assert_db_matches
from procs import scanfill
from scanfill.sim import FaultConfig, InstanceConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.sim.config import OLDER_SCAN_MISSING
from shared import SMALL, options

OLDER = (InstanceConfig("sv-1", missing=OLDER_SCAN_MISSING), InstanceConfig("sv-2", missing=OLDER_SCAN_MISSING))
IDS_WITH_GAPS = LedgerConfig(
    seed=21,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 120),
        MigrationSpec(1, "2024-06-24T23:00:00Z", 100),
        MigrationSpec(4, "2024-06-25T01:00:00Z", 90, import_updates=3),
    ),
)


def test_older_scans_without_migrations_last_load_the_whole_history(db: str) -> None:
    with Simulator(SimConfig(ledger=SMALL, instances=OLDER)) as sim:
        summary = run_ok(db, sim.urls)
        asked = sum(sim.stats(k)["by_path"].get("/v0/migrations/last", 0) for k in range(2))
        assert asked >= 1  # asked, got 404, did without
    assert any("/v0/dso-sequencers" in w for w in summary.warnings), summary.warnings
    assert_db_matches(db, Ledger(SMALL))


def test_scans_without_sequencer_list_either_are_probed_upward_from_zero(db: str) -> None:
    """Neither endpoint: migration-info from 0 upward, past gaps in the ids (0, 1, 4 here)."""
    bare = tuple(InstanceConfig(f"sv-{k}", missing=(*OLDER_SCAN_MISSING, "/v0/dso-sequencers")) for k in (1, 2))
    with Simulator(SimConfig(ledger=IDS_WITH_GAPS, instances=bare)) as sim:
        summary = run_ok(db, sim.urls)
    assert any("probed upward from 0" in w and "newest with data is 4" in w for w in summary.warnings)
    assert_db_matches(db, Ledger(IDS_WITH_GAPS))


def test_from_migration_starts_the_chain_there(db: str) -> None:
    with Simulator(SimConfig(ledger=IDS_WITH_GAPS, instances=OLDER)) as sim:
        summary = run_ok(db, sim.urls, start=1)
    assert_db_matches(db, Ledger(IDS_WITH_GAPS), migrations=[0, 1])
    assert summary.complete


def test_a_migration_no_scan_knows_is_an_error_naming_the_known_ones(db: str) -> None:
    with Simulator(SimConfig(ledger=IDS_WITH_GAPS)) as sim:
        for args in (("--migration", "99"), ("--from-migration", "3")):
            p = scanfill("run", "--no-progress", *args, dsn=db, urls=sim.urls)
            out = p.communicate(timeout=120)[0].decode()
            assert p.returncode == 2, out
            assert f"migration {args[1]}: no scan holds data for it" in out and "[0, 1, 4]" in out, out
            assert "Traceback" not in out


def test_interface_ids_survive_the_envelope_mode(db: str) -> None:
    """`--update-json envelope` drops events_by_id from the update JSON: interface_id must be in its column."""
    config = LedgerConfig(seed=3, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 300),), interface_rate=0.4)
    ledger = Ledger(config)
    with Simulator(SimConfig(ledger=config)) as sim:
        run_ok(db, sim.urls, update_json="envelope")
    want = {e["event_id"]: e.get("interface_id") for i in range(300)
            for e in ledger.update(0, 0, i)["events_by_id"].values()}  # fmt: skip
    with psycopg.connect(db) as conn:
        got = dict(conn.execute("SELECT event_id, interface_id FROM ledger_events").fetchall())
        stripped = conn.execute("SELECT count(*) FROM ledger_updates WHERE update_json::text LIKE "
                                "'%\"events_by_id\":{}%'").fetchone()  # fmt: skip
    assert got == want
    assert sum(v is not None for v in got.values()) > 50
    assert stripped == (300,)


def test_a_rate_limiter_without_retry_after_is_ridden_out(db: str) -> None:
    faults = FaultConfig(client_rps=4.0, rate_limit_retry_after=False)
    with Simulator(SimConfig(ledger=SMALL, faults=faults)) as sim:
        run_ok(db, sim.urls)
        assert sim.stats()["faults"].get("rate_limit", 0) > 0
    assert_db_matches(db, Ledger(SMALL))


def run_ok(db: str, urls: list[str], start: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
    from scanfill.load.run import run

    summary = run(options(db, urls, concurrency=4, page_size=100, start_migration=start, **kw))
    assert summary.complete and not summary.failures, (summary.failures, summary.warnings)
    return summary


def test_an_upgraded_database_gets_the_contract_state_functions_of_this_release(db: str) -> None:
    """contracts.sql's functions were applied once, by the v8 upgrade, so a fix to them (holdings as
    Scan computes them, earliest_open_round) never reached a database created before it. A database
    made by an older release (older function text, no earliest_open_round, the old holdings()
    signature) gets this release's on the next init, and its indexes are left as they are."""
    from scanfill.coord import schema
    from scanfill.db import Database

    schema.init(Database(db))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DROP FUNCTION earliest_open_round(bigint, timestamptz)")
        conn.execute("DROP FUNCTION holdings(bigint, timestamptz, text, bigint)")
        conn.execute("CREATE FUNCTION holdings(at_migration bigint DEFAULT NULL, at_time timestamptz DEFAULT NULL, "
                     "owner text DEFAULT NULL) RETURNS TABLE (x int) LANGUAGE sql AS 'SELECT 1'")  # fmt: skip
        conn.execute("DROP INDEX contracts_template_created_idx")  # as `prepare` leaves it
        conn.execute("UPDATE scanfill_meta SET value = 'an older release' WHERE key = 'functions_digest'")
    schema.init(Database(db))
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT earliest_open_round()").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM holdings()").fetchone() == (0,)  # one holdings(), this release's
        assert conn.execute("SELECT to_regclass('contracts_template_created_idx')").fetchone() == (None,)
