"""Contract state (`contracts`, `active()` ...) against the simulator's own ACS snapshots and a
replay of everything it served: exact at any position, whatever the load order, through kills,
following, repairs and a tampered copy. Real PostgreSQL, the simulator over HTTP."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from helpers import post_json
from procs import follow_until_caught_up, loaded, scanfill, wait_for
from scanfill.db import Database
from scanfill.load.run import run
from scanfill.ops import state, verify
from scanfill.sim import Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.sim.ledger import RATE_PER_ROUND, to_compact
from scanfill.timeutil import format_us
from shared import drop_database, new_database, options
from statecheck import Life, assert_state_matches, pos

# three migrations whose record times overlap, one with two synchronizers and reassignments; the
# later two import the contracts alive at the previous one's end (some are imported by both)
STATE = LedgerConfig(
    seed=23,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 300),
        MigrationSpec(2, "2024-06-24T21:15:00Z", 260, synchronizers=2, import_updates=1),
        MigrationSpec(3, "2024-06-24T21:22:00Z", 200, import_updates=1),
    ),
    reassignment_rate=0.08,
    acs_snapshot_hours=0.05,  # a snapshot every 3 minutes of record time
)


@pytest.fixture(scope="module")
def loaded_db(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """STATE loaded newest first by a run killed mid-way, then two workers, import updates included."""
    dsn = new_database(pg_admin_dsn, "t_state")
    ledger = Ledger(STATE)
    with Simulator(SimConfig(ledger=STATE)) as sim:
        p = scanfill("run", "--no-progress", "--concurrency", "6", "--page-size", "20", "--import-updates", "--lease", "4",
                     dsn=dsn, urls=sim.urls)  # fmt: skip
        wait_for(lambda: loaded(dsn) > ledger.total_updates() // 3, timeout=120, what="a third of the ledger")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert 0 < loaded(dsn) < ledger.total_updates()
        summary = run(options(dsn, sim.urls, workers=2, concurrency=4, page_size=30, imports=True))
        assert summary.complete and not summary.failures
        yield dsn, sim, ledger
    drop_database(pg_admin_dsn, dsn)


def _active(dsn: str, m: int | None, t_us: int | None, template: str | None = None) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT contract_id FROM active(%s, %s, %s::timestamptz)",
                            (template, m, format_us(t_us) if t_us is not None else None)).fetchall()  # fmt: skip
    return {r[0] for r in rows}


def test_state_equals_the_replay_after_a_kill_and_import_updates_of_several_migrations(loaded_db: Any) -> None:
    dsn, _, ledger = loaded_db
    lives = assert_state_matches(dsn, ledger)
    with psycopg.connect(dsn) as conn:
        imports = conn.execute("SELECT migration_id, count(*) FROM ledger_updates WHERE kind = 'import' "
                               "GROUP BY 1 ORDER BY 1").fetchall()  # fmt: skip
        transient = conn.execute("SELECT count(*) FROM contracts WHERE created_pos = archived_pos").fetchone()
        moved = conn.execute("SELECT count(*) FROM contracts WHERE synchronizer_id <> created_synchronizer_id"
                             ).fetchone()  # fmt: skip
        across = conn.execute("SELECT count(*) FROM contracts WHERE archived_migration_id > created_migration_id"
                              ).fetchone()  # fmt: skip
    # the bug this fixes: a contract alive across two hard migrations is imported by both (same update id)
    twice = set(ledger.import_ids(2)) & set(ledger.import_ids(3))
    assert twice and imports == [(2, len(ledger.import_ids(2))), (3, len(ledger.import_ids(3)))]
    assert all(lives[cid].archived_pos is None or lives[cid].archived_pos > pos(3, 0) for cid in twice)
    assert transient and transient[0] > 10 and moved and moved[0] > 0 and across and across[0] > 0
    checks = {c.name: c for c in verify.checks(Database(dsn))}
    assert checks["contract state equals the stored ledger"].ok, checks["contract state equals the stored ledger"]


def test_active_equals_the_simulators_snapshots_at_many_positions(loaded_db: Any) -> None:
    dsn, _, ledger = loaded_db
    lives = assert_state_matches(dsn, ledger)
    positions = []
    for m in ledger.migration_ids():
        t = ledger.snapshot_after(m, ledger.specs[m].start_us - 1)
        while t is not None and t[0] == m:  # every snapshot of the migration
            positions.append((m, t[1]))
            t = ledger.snapshot_after(m, t[1])
    consumed = sorted({life.archived_pos for life in lives.values() if life.archived_pos is not None})
    positions += [divmod(p, 10**16) for p in consumed[:: max(1, len(consumed) // 25)]]  # exactly at an ending
    positions += [(divmod(p, 10**16)[0], divmod(p, 10**16)[1] - 1) for p in consumed[5::60]]  # just before one
    moved = [life for life in lives.values() if life.synchronizer_id is not None and life.archived_pos is not None]
    positions += [(2, ledger.specs[2].start_us + 1), (3, ledger.specs[3].start_us + 1)]  # inside the overlaps
    moves = [h for h in ledger.expected_all() if h.kind in ("assignment", "unassignment")]
    assert len(moves) > 6
    for h in moves[::3]:  # a right in flight between its unassignment and its assignment, and either side
        positions += [(h.migration_id, h.record_us - 1), (h.migration_id, h.record_us)]
    assert len([p for p in positions if p[0] == 0]) >= 3 and moved
    for m, t in positions:
        want = {cid for cid, _ in ledger.acs(m, t)}
        assert _active(dsn, m, t) == want, (m, format_us(t))
    # transient contracts are never active: not even at their own position
    with psycopg.connect(dsn) as conn:
        tr = conn.execute("SELECT created_pos FROM contracts WHERE created_pos = archived_pos LIMIT 3").fetchall()
    for (p,) in tr:
        m, t = divmod(p, 10**16)
        assert not {c for c, life in lives.items() if life.created_pos == p and life.archived_pos == p} & _active(dsn, m, t)


def test_templates_in_every_form_and_the_other_functions(loaded_db: Any) -> None:
    dsn, _, ledger = loaded_db
    m, t = 2, ledger.migration_end_us(2) - 30_000_000
    full = ledger.template("splice-amulet", "Splice.Amulet", "Amulet")
    forms = [_active(dsn, m, t, x) for x in (full, "splice-amulet:Splice.Amulet:Amulet", "#splice-amulet:Splice.Amulet:Amulet",
                                             "Splice.Amulet:Amulet")]  # fmt: skip
    assert forms[0] and all(f == forms[0] for f in forms)
    assert not _active(dsn, m, t, "other-package:Splice.Amulet:Amulet")
    want = {cid for cid, ref in ledger.acs(m, t) if ledger.kind(ref)[2] == "Amulet"}
    assert forms[0] == want
    with psycopg.connect(dsn) as conn:
        cid = sorted(want)[0]
        row = conn.execute("SELECT contract_id, payload->>'owner', payload->'amount'->>'initialAmount' "
                           "FROM lookup_contract(%s)", (cid,)).fetchone()  # fmt: skip
        creates = conn.execute("SELECT count(*) FROM creates('Splice.Amulet:Amulet')").fetchone()
        archives = conn.execute("SELECT count(*) FROM archives('Splice.Amulet:Amulet')").fetchone()
        amulets = conn.execute("SELECT count(*), count(archived_pos) FROM contracts WHERE template_name = "
                               "'Splice.Amulet:Amulet' AND created_pos IS NOT NULL").fetchone()  # fmt: skip
        ex = conn.execute("SELECT count(*), bool_and(consuming) FROM exercises('LockedAmulet_Unlock')").fetchone()
        now = conn.execute("SELECT count(*) FROM active()").fetchone()
    ref = dict(ledger.acs(m, t))[cid]
    assert row == (cid, ledger.owner(ref), f"{ledger.amount(ref) // 10**10}.{ledger.amount(ref) % 10**10:010d}")
    assert creates == (amulets[0],) and archives == (amulets[1],) and amulets[0] > amulets[1] > 0
    assert ex is not None and ex[0] > 10 and ex[1] is True
    last = max(ledger.migration_ids())
    assert now == (len(ledger.acs(last, ledger.migration_end_us(last))),)


def test_compact_payloads_equal_the_scans_acs_and_verify_acs_at_passes(loaded_db: Any) -> None:
    dsn, sim, ledger = loaded_db
    at = ledger.snapshot_before(2, ledger.migration_end_us(2))
    assert at is not None
    contracts = post_json(sim.url + "/v1/state/acs", {"migration_id": 2, "record_time": format_us(at), "page_size": 1000,
                                           "record_time_match": "at_or_before"})["created_events"]  # fmt: skip
    with psycopg.connect(dsn) as conn:
        ours = dict(conn.execute("SELECT contract_id, payload FROM active(NULL, 2, %s::timestamptz)",
                                 (format_us(at),)).fetchall())  # fmt: skip
    assert contracts and {c["contract_id"]: c["create_arguments"] for c in contracts} == ours  # equal as JSON values
    out = scanfill("verify", "--acs-at", format_us(at + 59_000_000), "--migration", "2", "--json",
                   dsn=dsn, urls=sim.urls).communicate(timeout=120)[0]  # fmt: skip
    got = {c["name"]: c for c in json.loads(out)}
    check = got["contract state equals the scans' ACS snapshot"]
    assert check["ok"] and f"{len(contracts):,} contracts" in check["detail"], check


def test_holdings_with_fees_as_of_the_round_in_force(loaded_db: Any) -> None:
    dsn, _, ledger = loaded_db
    m, t = 2, ledger.migration_end_us(2) - 120_000_000
    rounds = [ledger.round_at(h.record_us) for mid in ledger.migration_ids() if mid <= m
              for h in ledger.expected_all() if h.migration_id == mid and h.shape == "rounds" and h.record_us <= t]  # fmt: skip
    at_round = max(rounds)
    want: dict[str, list[Decimal]] = {}
    for _, ref in ledger.acs(m, t):
        entity = ledger.kind(ref)[2]
        if entity not in ("Amulet", "LockedAmulet"):
            continue
        initial = Decimal(ledger.amount(ref)) / 10**10
        created = ledger.round_at(ledger.record_us(*ref[:3]))
        fee = min(initial, max(0, at_round - created) * Decimal(RATE_PER_ROUND) / 10**10)
        w = want.setdefault(ledger.owner(ref), [Decimal(0)] * 3)
        w[0] += initial
        w[1] += fee
        w[2] += initial - fee
    # as of the round in force then, asked for (the default is Scan's: the earliest open round now)
    out = scanfill("holdings", "--at", format_us(t), "--migration", "2", "--format", "json", "--as-of-round",
                   str(at_round), dsn=dsn, urls=[]).communicate(timeout=60)[0]  # fmt: skip
    got = {o["owner"]: [Decimal(o["unlocked_initial"]) + Decimal(o["locked_initial"]), Decimal(o["holding_fees"]),
                        Decimal(o["amount"])] for o in json.loads(out)}  # fmt: skip
    assert got == want and any(w[1] > 0 for w in want.values())
    assert {o["round"] for o in json.loads(out)} == {at_round}


def test_a_tampered_copy_fails_verify_acs_at_naming_the_contract(pg_admin_dsn: str, db: str) -> None:
    small = LedgerConfig(seed=29, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 240),), acs_snapshot_hours=0.05)
    ledger = Ledger(small)
    with Simulator(SimConfig(ledger=small)) as sim:
        assert run(options(db, sim.urls, concurrency=4, page_size=40)).complete
        at = ledger.snapshot_before(0, ledger.migration_end_us(0))
        assert at is not None
        acs = [cid for cid, ref in ledger.acs(0, at) if ledger.kind(ref)[2] == "Amulet"]
        with psycopg.connect(db) as conn:
            conn.execute("UPDATE contracts SET payload = jsonb_set(payload, '{owner}', '\"mallory::1220ab\"') "
                         "WHERE contract_id = %s", (acs[0],))  # fmt: skip
            conn.execute("UPDATE contracts SET archived_pos = created_pos WHERE contract_id = %s", (acs[1],))
        p = scanfill("verify", "--acs-at", format_us(at), dsn=db, urls=sim.urls)
        out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 1, out
    assert f"differs: {acs[0]}: payload differs" in out and f"missing here (active at the scan): {acs[1]}" in out
    assert "holdings of" in out  # the owner's total no longer matches Scan's holdings summary


def test_following_keeps_state_and_a_refetch_repairs_it(db: str) -> None:
    base = LedgerConfig(seed=31, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 150),
                                             MigrationSpec(2, "2024-06-24T21:12:00Z", 200, synchronizers=2)),
                        reassignment_rate=0.08)  # fmt: skip
    grow = 400
    config = SimConfig(ledger=base.with_growth(grow), grow=300.0, grow_updates=grow)
    full = Ledger(config.ledger)
    with Simulator(config) as sim:
        p = follow_until_caught_up(db, sim, full.total_updates(), 40, timeout=90)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
        lives = assert_state_matches(db, full)
        with psycopg.connect(db) as conn:  # damage: a window's contract rows go wrong or vanish
            conn.execute("UPDATE contracts SET archived_pos = NULL, archived_update_id = NULL "
                         "WHERE archived_migration_id = 2")  # fmt: skip
            conn.execute("DELETE FROM contracts WHERE created_migration_id = 2 AND archived_pos IS NULL")
        window = f"{format_us(full.specs[2].start_us - 1)}/{format_us(full.migration_end_us(2) + 1)}"
        assert run(options(db, sim.urls, concurrency=4, refetch=(window,), migrations=(2,))).complete
    assert assert_state_matches(db, full) == lives
    moved = [cid for cid, life in lives.items() if life.synchronizer_id == full.synchronizer_id(1)]
    assert moved and isinstance(lives[moved[0]], Life)


def test_unlabelled_payloads_keep_every_field_in_order(db: str) -> None:
    cfg = LedgerConfig(seed=37, labels=False, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 80),))
    ledger = Ledger(cfg)
    with Simulator(SimConfig(ledger=cfg)) as sim:
        assert run(options(db, sim.urls, concurrency=2)).complete
    with psycopg.connect(db) as conn:
        rows = dict(conn.execute("SELECT contract_id, payload FROM contracts WHERE payload IS NOT NULL").fetchall())
    some = [(cid, ref) for cid, ref in ledger.acs(0, ledger.migration_end_us(0))]
    assert some and all(rows[cid] == to_compact(ledger.arguments(ref)) for cid, ref in some)
    assert all(isinstance(rows[cid], list) for cid, _ in some)  # positional records: arrays, fields in order
    assert state.normalize(["0E-10", "2024-06-24T21:08:00Z"]) == state.normalize(["0.0000000000",
                                                                                 "2024-06-24T21:08:00.000000Z"])


def test_a_copy_loaded_without_state_is_flagged_until_rebuild_state_derives_it(db: str) -> None:
    cfg = LedgerConfig(seed=41, migrations=STATE.migrations[:2], reassignment_rate=0.08)
    ledger = Ledger(cfg)
    with Simulator(SimConfig(ledger=cfg)) as sim:
        p = scanfill("run", "--no-progress", "--no-contract-state", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0 and "rebuild-state" in out, out
        with psycopg.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM contracts").fetchone() == (0,)
        p = scanfill("verify", dsn=db, urls=[])
        out = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 1 and "--no-contract-state" in out, out
        out = scanfill("rebuild-state", dsn=db, urls=[]).communicate(timeout=300)[0].decode()
        assert "contract state rebuilt" in out, out
        p = scanfill("verify", dsn=db, urls=[])
        out = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 0, out
    assert_state_matches(db, ledger)


def test_a_schema_7_copy_upgrades_keys_flags_its_state_and_rebuild_state_derives_it(db: str) -> None:
    from scanfill.coord import schema

    cfg = LedgerConfig(seed=43, migrations=STATE.migrations[:2], reassignment_rate=0.08)
    with Simulator(SimConfig(ledger=cfg)) as sim:
        assert run(options(db, sim.urls, concurrency=3)).complete
    with psycopg.connect(db, autocommit=True) as conn:  # back to what release 7 left: no state, keys by id alone
        conn.execute("DROP TABLE contracts CASCADE")
        for t, col in (("ledger_updates", "update_id"), ("ledger_events", "event_id")):
            conn.execute(f"ALTER TABLE {t} DROP CONSTRAINT {t}_pkey, ADD CONSTRAINT {t}_pkey PRIMARY KEY ({col})")
        conn.execute("UPDATE scanfill_meta SET value = '7' WHERE key = 'schema_version'")
    assert schema.init(Database(db)) == (7, schema.SCHEMA_VERSION)
    with psycopg.connect(db) as conn:
        keys = conn.execute("SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                            "WHERE contype = 'p' AND conrelid::regclass::text LIKE 'ledger_%' ORDER BY 1").fetchall()  # fmt: skip
        stale = conn.execute("SELECT value FROM scanfill_meta WHERE key = 'contracts_stale'").fetchone()
    assert keys == [("ledger_events", "PRIMARY KEY (event_id, migration_id)"),
                    ("ledger_updates", "PRIMARY KEY (update_id, migration_id)")]  # fmt: skip
    assert stale is not None
    assert not {c.name: c for c in verify.checks(Database(db))}["contract state equals the stored ledger"].ok
    assert "contract state rebuilt" in scanfill("rebuild-state", dsn=db, urls=[]).communicate(timeout=300)[0].decode()
    assert {c.name: c for c in verify.checks(Database(db))}["contract state equals the stored ledger"].ok
    assert_state_matches(db, Ledger(cfg))


def test_acs_command_in_every_format(loaded_db: Any) -> None:
    dsn, _, ledger = loaded_db
    t = ledger.migration_end_us(2) - 45_000_000
    want = {cid for cid, ref in ledger.acs(2, t) if ledger.kind(ref)[2] == "Amulet"}
    args = ("acs", "--at", format_us(t), "--migration", "2", "--template", "Splice.Amulet:Amulet")
    rows = json.loads(scanfill(*args, "--format", "json", dsn=dsn, urls=[]).communicate(timeout=60)[0])
    assert {r["contract_id"] for r in rows} == want and all(isinstance(r["payload"], dict) for r in rows)
    csv_out = scanfill(*args, "--format", "csv", dsn=dsn, urls=[]).communicate(timeout=60)[0].decode().splitlines()
    assert csv_out[0].startswith("contract_id,template_id") and len(csv_out) == len(want) + 1
    owner = ledger.owner(dict(ledger.acs(2, t))[sorted(want)[0]])
    mine = json.loads(scanfill(*args, "--party", owner, "--format", "json", dsn=dsn, urls=[]).communicate(timeout=60)[0])
    assert mine and all(owner in r["signatories"] + r["observers"] for r in mine)
    p = scanfill("acs", "--template", "Amulet", dsn=dsn, urls=[])
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 2 and "Splice.Amulet:Amulet" in out and "Traceback" not in out


def test_follow_without_state_is_flagged_too(db: str) -> None:
    cfg = LedgerConfig(seed=47, migrations=STATE.migrations[:1])
    with Simulator(SimConfig(ledger=cfg)) as sim:
        p = scanfill("follow", "--once", "--start", "beginning", "--no-contract-state", dsn=db, urls=sim.urls)
        out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0 and "rebuild-state" in out, out
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM contracts").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM ledger_updates").fetchone() == (Ledger(cfg).total_updates(),)
        assert conn.execute("SELECT value FROM scanfill_meta WHERE key = 'contracts_stale'").fetchone() is not None
