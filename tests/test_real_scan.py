"""Real pages, not our picture of them: recorded MainNet answers and the Splice docs' examples
(tests/fixtures/real-scan, each with its PROVENANCE) served over HTTP as a scan would
(tests/recorded_scan.py), loaded by `scanfill run` and `follow --once` into a real PostgreSQL.
What is stored must be what was recorded, byte for byte; `scanfill verify` and `rounds_check()`
must pass; contract state, burns and holding fees must be the figures the recordings and docs state."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest

from procs import finish, scanfill
from recorded_scan import (
    GENESIS,
    RAXOL,
    Recorded,
    docs_network,
    load,
    mainnet_genesis,
    mainnet_migration_4,
    serving,  # fmt: skip
)
from shared import drop_database, new_database


def _load(pg_admin_dsn: str, rec: Recorded, *extra: str) -> Iterator[tuple[str, str, Recorded]]:
    dsn = new_database(pg_admin_dsn, "t_real")
    with serving(rec) as scan:
        out = finish(scanfill("run", "--no-progress", "--no-discover", "--page-size", "7", *extra,
                              dsn=dsn, urls=[scan.url]), 120, dsn)  # fmt: skip
        assert "complete" in out.lower(), out
        yield dsn, scan.url, rec
    drop_database(pg_admin_dsn, dsn)


@pytest.fixture(scope="module")
def genesis(pg_admin_dsn: str) -> Iterator[tuple[str, str, Recorded]]:
    yield from _load(pg_admin_dsn, mainnet_genesis())


@pytest.fixture(scope="module")
def migration_4(pg_admin_dsn: str) -> Iterator[tuple[str, str, Recorded]]:
    yield from _load(pg_admin_dsn, mainnet_migration_4(), "--migration", "4")


@pytest.fixture(scope="module")
def docs(pg_admin_dsn: str) -> Iterator[tuple[str, str, Recorded]]:
    yield from _load(pg_admin_dsn, docs_network(), "--migration", "4")


def _rows(dsn: str, q: str, args: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(q, args).fetchall()


def _stored_equals_recorded(dsn: str, rec: Recorded) -> None:
    """Every update and event stored exactly as served: the update's JSON text and each event's
    payload and result, byte for byte, and nothing else."""
    stored = dict(_rows(dsn, "SELECT update_id, update_json::text FROM ledger_updates"))
    assert stored == {u["update_id"]: orjson.dumps(u).decode() for u in rec.updates}
    events = {eid: (p, r) for eid, p, r in _rows(dsn, "SELECT event_id, payload::text, exercise_result::text "
                                                      "FROM ledger_events")}  # fmt: skip
    want = {}
    for u in rec.updates:
        for eid, e in u["events_by_id"].items():
            payload = e.get("create_arguments", e.get("choice_argument"))
            result = e.get("exercise_result") if e["event_type"] == "exercised_event" else None
            want[eid] = (orjson.dumps(payload).decode(), None if result is None else orjson.dumps(result).decode())
    assert events == want


def _verify(dsn: str, url: str, *extra: str) -> str:
    p = scanfill("verify", *extra, dsn=dsn, urls=[url])
    out = finish(p, 120, dsn)
    assert p.returncode == 0, out
    return out


def test_mainnet_genesis_is_stored_as_recorded_and_verifies(genesis: tuple[str, str, Recorded], db: str) -> None:
    """MainNet's first 25 updates: byte-equal, and `verify` passes although rounds do not grow with
    record time there (round 1's SvRewardCoupon at 21:08:39.536717Z, round 0's ValidatorFaucetCoupon
    at 21:13:14.686816Z: several rounds are open at once)."""
    dsn, url, rec = genesis
    _stored_equals_recorded(dsn, rec)
    rounds = _rows(dsn, "SELECT record_time, round FROM ledger_updates WHERE round IS NOT NULL ORDER BY record_time")
    assert any(b[1] < a[1] for a, b in itertools.pairwise(rounds)), "the recording has a round decrease"
    out = _verify(dsn, url)
    assert "OpenMiningRounds" in out and "rounds never decrease" not in out
    assert _rows(dsn, "SELECT * FROM rounds_check()") == []
    # contract state: the genesis rounds 0, 1, 2 and the DsoRules the recording creates
    opened = _rows(dsn, "SELECT (payload->'round'->>'number')::int FROM active('Splice.Round:OpenMiningRound') ORDER BY 1")
    assert [r[0] for r in opened] == [0, 1, 2]
    assert len(_rows(dsn, "SELECT 1 FROM active('Splice.DsoRules:DsoRules')")) == 1
    # every contract the recording creates and does not consume, and no other, is active
    created = {e["contract_id"] for u in rec.updates for e in u["events_by_id"].values() if e["event_type"] == "created_event"}
    consumed = {e["contract_id"] for u in rec.updates for e in u["events_by_id"].values() if e.get("consuming")}
    assert {r[0] for r in _rows(dsn, "SELECT contract_id FROM active()")} == created - consumed
    # a round created below an earlier one is what verify's round check refuses
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE contracts SET created_pos = created_pos + 1 "  # round 0 opened after round 2
                     "WHERE template_name = 'Splice.Round:OpenMiningRound' AND payload->'round'->>'number' = '0'")
    p = scanfill("verify", dsn=dsn, urls=[url])
    out = finish(p, 120, dsn)
    assert p.returncode == 1 and "created after round" in out, out
    _follow_genesis(db)


# the docs' burn per choice (scan_bulk_data_api.rst, "Computing Total Burnt Canton Coin"), as figures
DOCS_BURNS = {
    "AmuletRules_BuyMemberTraffic": Decimal("24003.6076103600"),  # amuletPaid + holdingFees + senderChangeFee
    "AmuletRules_Transfer": Decimal("108.0021164861"),  # outputFees + holdingFees + senderChangeFee
    "AmuletRules_CreateTransferPreapproval": Decimal("61.3199997000"),  # amuletPaid + outputFees + the rest
}


def test_the_docs_burns_per_choice(docs: tuple[str, str, Recorded]) -> None:
    """Each example of Splice's docs burns what the docs say. A fee-era traffic purchase's output
    fees are inside amuletPaid (24003.6076103600, not 24213.6052103600); a preapproval's are not;
    the CNS payment burns its transfer's fees and the 200 CC amulet the DSO archives. And each
    burn is what the transaction's holdings show: input - created = burnt."""
    dsn, url, rec = docs
    _stored_equals_recorded(dsn, rec)
    got = dict(_rows(dsn, "SELECT choice, burnt(x) FROM amulet_transfers x WHERE choice <> 'AmuletRules_Transfer' "
                          "OR update_id LIKE '1220f207%'"))  # fmt: skip
    assert got == DOCS_BURNS
    cns = "1220088866741e05b6ee333fad8fb505856ad78e836aa812afb1ca4a00deae5d50b3"
    assert _rows(dsn, "SELECT update_id, burnt FROM update_burns WHERE update_id = %s", (cns,)) == [
        (cns, Decimal("208.0000000000"))]
    assert sum(r[0] for r in _rows(dsn, "SELECT burnt FROM update_burns")) == sum(DOCS_BURNS.values()) + 208
    assert _rows(dsn, "SELECT sum(total_burnt), sum(dso_burnt) FROM burn_mint_daily") == [
        (sum(DOCS_BURNS.values()) + 208, Decimal(200))]
    assert _rows(dsn, "SELECT * FROM rounds_check()") == []
    _verify(dsn, url)
    # the supply check needs no input's creation (none is in this copy), yet catches a wrong output
    transfer = "1220f207fb8c58969e51c99af570f99302ad4f5adf513de0b70dc93e358371f25bc2"
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE contracts SET payload = jsonb_set(payload, '{amount,initialAmount}', '\"9600.2116486068\"') "
                     "WHERE created_update_id = %s AND payload->'amount'->>'initialAmount' = '9600.2116486069'", (transfer,))
    assert [(r[0], r[1]) for r in _rows(dsn, "SELECT * FROM rounds_check()")] == [("supply delta", transfer)]


def _holdings(dsn: str, url: str, at: str, *extra: str) -> dict[str, dict[str, Any]]:
    p = scanfill("holdings", "--at", at, "--migration", "4", "--format", "json", *extra, dsn=dsn, urls=[url])
    out = finish(p, 60, dsn)
    assert p.returncode == 0, out
    return {o["owner"]: o for o in orjson.loads(out)}


def test_holding_fees_as_scan_computes_them(migration_4: tuple[str, str, Recorded]) -> None:
    """Both recorded MainNet holdings summaries, from the contracts loaded over HTTP: (asOfRound -
    createdAt) x rate, asOfRound by default the earliest open round now (81323, Scan's
    computed_as_of_round), or the one asked for (113139 for the raxol recording)."""
    dsn, url, rec = migration_4
    _stored_equals_recorded(dsn, rec)
    for state, summary, extra in (
        (GENESIS / "scan.v0.holdings_state.json", GENESIS / "scan.v0.holdings_summary.json", ()),
        (RAXOL / "holdings_state.json", RAXOL / "holdings_summary.json", ("--as-of-round", "113139")),
    ):
        s = load(summary)
        want = s["summaries"][0]
        assert load(state)["record_time"] == s["record_time"]
        got = _holdings(dsn, url, s["record_time"], *extra)[want["party_id"]]
        assert got["round"] == s["computed_as_of_round"]
        assert Decimal(got["holding_fees"]) == Decimal(want["accumulated_holding_fees_total"])
        assert Decimal(got["unlocked_initial"]) == Decimal(want["total_unlocked_coin"])
        assert Decimal(got["amount"]) == Decimal(want["total_available_coin"])
    fees = {"0.0016480635", "0.0122197152"}
    assert {str(Decimal(w["accumulated_holding_fees_total"])) for w in (
        load(GENESIS / "scan.v0.holdings_summary.json")["summaries"][0],
        load(RAXOL / "holdings_summary.json")["summaries"][0])} == fees
    # the ACS page recorded at 06:00 is the copy's state there, contract for contract, and its
    # holdings summary (fees as of Scan's round included) is the copy's
    _verify(dsn, url, "--acs-at", "2026-01-30T06:00:00Z", "--migration", "4")
    altered = mainnet_migration_4()
    assert altered.holdings is not None
    altered.holdings["summaries"][0]["accumulated_holding_fees_total"] = "0.0016480636"
    with serving(altered) as other:
        p = scanfill("verify", "--acs-at", "2026-01-30T06:00:00Z", "--migration", "4", dsn=dsn, urls=[other.url])
        out = finish(p, 120, dsn)
    assert p.returncode == 1 and "as of round 81323: 0.0016480635 here, 0.0016480636 at the scan" in out, out


def _follow_genesis(db: str) -> None:
    """`follow --once` from the beginning over the recorded /v2/updates and /v0/events (pages of 7,
    so the boundary is re-read): the same 25 updates byte for byte; the events stream reads every
    recorded item to the last one, and stores none (MainNet's genesis items carry no verdict, traffic
    summary or activity: nothing beyond the update, which the updates stream stored); `verify` passes."""
    rec = mainnet_genesis()
    with serving(rec) as scan:
        p = scanfill("follow", "--once", "--events", "--start", "beginning", "--page-size", "7", dsn=db,
                     urls=[scan.url])  # fmt: skip
        out = finish(p, 120, db)
        assert p.returncode == 0, out
        _stored_equals_recorded(db, rec)
        assert all(e["verdict"] is None and e["update"] for e in rec.events)
        cursors = dict(_rows(db, "SELECT stream, record_text FROM follow_cursors"))
        assert cursors["events"] == cursors["updates"] == rec.events[-1]["update"]["record_time"], cursors
        assert _rows(db, "SELECT count(*) FROM scan_events") == [(0,)]
        assert scan.requests.get("/api/scan/v0/events", 0) >= 4
    opened = _rows(db, "SELECT (payload->'round'->>'number')::int FROM active('Splice.Round:OpenMiningRound') ORDER BY 1")
    assert [r[0] for r in opened] == [0, 1, 2]
    assert _rows(db, "SELECT * FROM rounds_check()") == []
