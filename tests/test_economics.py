"""Round economics against the simulator's books: a ledger played forward with real rounds,
coupons, transfers, traffic purchases, expiries and four `splice-amulet` versions (each in its own
Daml shapes), loaded over HTTP into a real PostgreSQL, whose derived figures must equal what the
generator meant, satisfy the invariants of docs/round-economics.md, and not depend on the order
pages were loaded in."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from procs import finish, loaded, scanfill, wait_for
from scanfill.load.run import run
from scanfill.sim import LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.sim.economy import UNIT, EconomyLedger
from scanfill.sim.ledger import EconomyConfig
from shared import drop_database, new_database, options

ECONOMY = LedgerConfig(
    seed=41,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 900),
        MigrationSpec(1, "2024-06-25T01:30:00Z", 700, import_updates=1),
    ),
    economy=EconomyConfig(per_round=24, upgrades=(20, 40, 55)),
    acs_snapshot_hours=0.25,
)
FIGURES = ("round_totals", "round_party_totals", "round_coupon_totals", "burn_mint_daily", "rounds")


def cc(units: int) -> Decimal:
    return Decimal(units) / UNIT


CREATED: list[str] = []


def new_db(admin: str) -> str:
    dsn = new_database(admin, "t_econ")
    CREATED.append(dsn)
    return dsn


def rows(dsn: str, text: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return conn.cursor(row_factory=dict_row).execute(text, args or None).fetchall()


def figures(dsn: str) -> dict[str, list[dict[str, Any]]]:
    return {v: rows(dsn, f"SELECT * FROM {v} ORDER BY 1, 2") for v in FIGURES}


@pytest.fixture(scope="module")
def econ() -> EconomyLedger:
    from scanfill.sim.economy import make_ledger

    lg = make_ledger(ECONOMY)
    assert isinstance(lg, EconomyLedger)
    return lg


@pytest.fixture(scope="module")
def loaded_db(pg_admin_dsn: str, econ: EconomyLedger) -> Iterator[tuple[str, list[str]]]:
    """The economy loaded by four workers in small pages (newest first, slices in parallel)."""
    dsn = new_db(pg_admin_dsn)
    with Simulator(SimConfig(ledger=ECONOMY)) as sim:
        summary = run(options(dsn, sim.urls, workers=4, concurrency=4, page_size=25, imports=True))
        assert summary.complete and not summary.failures
        yield dsn, sim.urls
    for made in CREATED:
        drop_database(pg_admin_dsn, made)


def test_the_books_balance(econ: EconomyLedger) -> None:
    """The generator's own accounts close: supply = taps + minted - burnt, and every coupon is
    claimed, expired or still pending, and both package versions were used."""
    b = econ.economy.books
    minted = sum(v["app"] + v["validator"] + v["sv"] for v in b.by_round.values())
    burnt = sum(v["burnt"] for v in b.by_round.values()) + b.dust_burnt
    assert b.supply == b.tapped + minted - burnt
    assert b.versions_used == {"0.1.13", "0.1.14", "0.1.17", "0.1.21"}
    assert len(b.closed) > 50 and b.dust_burnt > 0
    for (_, kind), c in b.coupons.items():
        assert c["claimed_n"] + c["expired_n"] <= c["created_n"], kind
    assert sum(c["expired_n"] for c in b.coupons.values()) > 0


def test_round_totals_equal_the_books(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    dsn, _ = loaded_db
    b = econ.economy.books
    got = {r["closed_round"]: r for r in rows(dsn, "SELECT * FROM round_totals")}
    assert set(got) == set(b.closed), "exactly the rounds the generator closed (and none still active)"
    assert all(r["whole"] for r in got.values()), "a complete load: every closed round is final"
    cumulative = Decimal(0)
    for rnd in sorted(got):
        r, want = got[rnd], b.by_round.get(rnd, {})
        assert r["app_rewards"] == cc(want.get("app", 0)), rnd
        assert r["validator_rewards"] == cc(want.get("validator", 0)), rnd
        assert r["sv_rewards"] == cc(want.get("sv", 0)), rnd
        assert r["faucet_rewards"] == cc(want.get("faucet", 0)), rnd
        assert r["holding_fees"] == cc(want.get("holding", 0)), rnd
        assert r["burnt"] == cc(want.get("burnt", 0)), rnd
        assert r["traffic_purchased"] == want.get("traffic_bytes", 0), rnd
        assert r["traffic_purchased_cc_spent"] == cc(want.get("traffic_cc", 0)), rnd
        assert r["traffic_num_purchases"] == want.get("traffic_n", 0), rnd
        assert r["transfers"] == want.get("transfers", 0), rnd
        cumulative += r["app_rewards"]
        assert r["cumulative_app_rewards"] == cumulative
        assert (
            r["change_to_initial_amount_as_of_round_zero"] == 0 and r["total_amulet_balance"] == 0
        )  # Scan since 0.5.3
    assert any(r["sv_rewards"] > 0 for r in got.values()) and any(r["faucet_rewards"] > 0 for r in got.values())


def test_party_totals_equal_the_books_and_add_up(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    dsn, _ = loaded_db
    b = econ.economy.books
    closed = set(b.closed)
    want = {k: v for k, v in b.by_party.items() if k[0] in closed and (v["app"] or v["validator"] or v["sv"]
                                                                        or v["traffic_n"])}  # fmt: skip
    got = {(r["closed_round"], r["party"]): r for r in rows(dsn, "SELECT * FROM round_party_totals")}
    assert set(got) == set(want)
    for k, r in got.items():
        assert (r["app_rewards"], r["validator_rewards"], r["sv_rewards"]) == (
            cc(want[k]["app"]), cc(want[k]["validator"]), cc(want[k]["sv"])), k  # fmt: skip
        assert (r["traffic_purchased"], r["traffic_purchased_cc_spent"], r["traffic_num_purchases"]) == (
            want[k]["traffic_bytes"], cc(want[k]["traffic_cc"]), want[k]["traffic_n"]), k  # fmt: skip
    # per-party totals add up to the round totals; cumulative columns are each party's running sums
    sums = rows(dsn, "SELECT t.closed_round, t.app_rewards, t.validator_rewards, t.traffic_purchased, "
                     "coalesce(sum(p.app_rewards), 0) AS pa, coalesce(sum(p.validator_rewards), 0) AS pv, "
                     "coalesce(sum(p.traffic_purchased), 0) AS pt FROM round_totals t "
                     "LEFT JOIN round_party_totals p USING (closed_round) GROUP BY 1, 2, 3, 4")  # fmt: skip
    for s in sums:
        assert (s["app_rewards"], s["validator_rewards"], s["traffic_purchased"]) == (s["pa"], s["pv"], s["pt"])
    last = rows(dsn, "SELECT DISTINCT ON (party) party, cumulative_app_rewards AS c FROM round_party_totals "
                     "ORDER BY party, closed_round DESC")  # fmt: skip
    for r in last:
        total = sum((v["app"] for (rnd, p), v in want.items() if p == r["party"]), 0)
        assert r["c"] == cc(total)


def test_coupons_by_their_own_round(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    """Claimed + expired + unclaimed = created per coupon round and kind, with the CC each was worth
    at its own round's rates (half-even), equal to what the generator minted and expired."""
    dsn, _ = loaded_db
    b = econ.economy.books
    got = {(r["round"], r["kind"]): r for r in rows(dsn, "SELECT * FROM round_coupon_totals")}
    assert set(got) == set(b.coupons)
    for k, r in got.items():
        w = b.coupons[k]
        assert r["created"] == w["created_n"] and r["created_weight"] == (
            cc(w["created_weight"]) if k[1] not in ("liveness",) else w["created_n"]), k  # fmt: skip
        assert (r["claimed"], r["claimed_cc"]) == (w["claimed_n"], cc(w["claimed_cc"])), k
        assert (r["expired"], r["expired_cc"]) == (w["expired_n"], cc(w["expired_cc"])), k
        assert r["claimed"] + r["expired"] + r["unclaimed"] == r["created"], k
        if k[0] in b.closed and econ.economy.rounds[k[0]].get("expired"):
            assert r["unclaimed"] == 0, k  # the DSO expired what was left when the round closed
    # minted by coupon round (what Scan never served) sums to minted by transfer round
    total = rows(dsn, "SELECT (SELECT sum(claimed_cc) FROM round_coupon_totals) AS by_coupon, "
                      "(SELECT sum(coalesce(app_rewards,0) + coalesce(validator_rewards,0) + coalesce(sv_rewards,0)) "
                      "FROM amulet_transfers) AS by_transfer")[0]  # fmt: skip
    assert total["by_coupon"] == total["by_transfer"]


def test_supply_and_its_identity(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    """supply_at equals the generator's supply at several positions, and the copy's own figures
    close: supply = taps + minted - burnt - expired dust."""
    dsn, _ = loaded_db
    b = econ.economy.books
    for k in (30, len(b.supply_after) // 3, len(b.supply_after) // 2, len(b.supply_after) - 1):
        m, t_us, want = b.supply_after[k]
        from scanfill.timeutil import us_to_dt

        got = rows(dsn, "SELECT * FROM supply_at(%s, %s)", m, us_to_dt(t_us))[0]
        assert got["supply"] == cc(want), k
    now = rows(dsn, "SELECT * FROM supply_at()")[0]
    assert now["supply"] == cc(b.supply) and now["locked"] > 0
    f = rows(dsn, "SELECT sum(minted) AS minted, sum(tapped) AS tapped, sum(total_burnt) AS burnt, "
                  "sum(dust_burnt) AS dust FROM burn_mint_daily")[0]  # fmt: skip
    assert f["tapped"] + f["minted"] - f["burnt"] == now["supply"]
    assert f["dust"] == cc(b.dust_burnt) and f["tapped"] == cc(b.tapped)


def test_versions_read_with_their_rules(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    """0.1.13 charged holding fees on inputs and transfer fees; 0.1.14 charges neither; from 0.1.17
    token-standard transfers carry no summary (they mint and burn nothing) and featured transfers
    earn markers the DSO converts into coupons. Each summary carries its package's version; each
    round its version and rates."""
    dsn, _ = loaded_db
    got = {r["amulet_version"]: r for r in rows(dsn, (
        "SELECT amulet_version, count(*) AS n, sum(holding_fees) AS hf, sum(output_fees) AS fees "
        "FROM amulet_transfers WHERE tapped IS NULL GROUP BY 1"))}  # fmt: skip
    assert set(got) == {"0.1.13", "0.1.14", "0.1.17", "0.1.21"}
    assert got["0.1.13"]["hf"] > 0 and got["0.1.13"]["fees"] > 0
    assert all(got[v]["hf"] == got[v]["fees"] == 0 for v in ("0.1.14", "0.1.17", "0.1.21"))
    b = econ.economy.books
    token = rows(dsn, "SELECT count(*) AS n, count(*) FILTER (WHERE interface_id IS NOT NULL) AS by_interface "
                      "FROM ledger_events WHERE choice = 'TransferFactory_Transfer'")[0]  # fmt: skip
    assert token["n"] == token["by_interface"] == sum(v.get("token_transfers", 0) for v in b.by_round.values()) > 20
    assert rows(dsn, "SELECT count(*) AS n FROM amulet_transfers WHERE choice = 'TransferFactory_Transfer'")[0]["n"] == 0
    converted = rows(dsn, "SELECT count(*) AS n FROM contracts WHERE template_name = 'Splice.Amulet:FeaturedAppActivityMarker' "
                          "AND archived_choice IS NOT NULL")[0]["n"]  # fmt: skip
    assert converted > 0
    r = rows(dsn, "SELECT round, amulet_version, validator_rate, featured_app_rate, phase FROM rounds "
                  "WHERE closed ORDER BY round")  # fmt: skip
    assert ECONOMY.economy is not None
    starts = [ECONOMY.round_zero + u for u in ECONOMY.economy.upgrades]
    assert all(x["amulet_version"] == ECONOMY.economy.versions[sum(x["round"] >= s for s in starts)] for x in r)
    for x in r:
        assert x["validator_rate"] == cc(econ.economy.rounds[x["round"]]["rates"]["validator"])
    issued = {x["round"]: x["unclaimed_at_issuing"] for x in rows(dsn, "SELECT round, unclaimed_at_issuing FROM rounds "
                                                                        "WHERE issuing_at IS NOT NULL")}  # fmt: skip
    want = econ.economy.books.unclaimed_at_issuing
    assert issued == {k: (cc(v) if v else None) for k, v in want.items()} and len(issued) > 50


def test_rounds_check_is_clean_and_catches_tampering(loaded_db: tuple[str, list[str]], pg_admin_dsn: str) -> None:
    dsn, _ = loaded_db
    assert rows(dsn, "SELECT * FROM rounds_check()") == []
    p = scanfill("rounds", "--check", dsn=dsn, urls=[])
    out = finish(p, 60, dsn)
    assert p.returncode == 0 and "no violations" in out, out
    # one summary off by one unit of the tenth decimal, then put back
    with psycopg.connect(dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute("UPDATE amulet_transfers SET app_rewards = app_rewards + 0.0000000001 "
                         "WHERE event_id = (SELECT min(event_id) FROM amulet_transfers WHERE app_rewards > 0)")  # fmt: skip
        bad = conn.execute("SELECT rule, subject FROM rounds_check()").fetchall()
        assert [b[0] for b in bad] == ["coupon value", "supply delta"]
    # a 0.1.14 transfer that charged holding fees on its inputs (CIP-0078 forbids it)
    with psycopg.connect(dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute("UPDATE amulet_transfers SET holding_fees = 0.5, sender_change_amount = sender_change_amount - 0.5 "
                     "WHERE event_id = (SELECT min(event_id) FROM amulet_transfers WHERE amulet_version = '0.1.14' "
                     "AND choice = 'AmuletRules_Transfer')")  # fmt: skip
        bad = conn.execute("SELECT rule, detail FROM rounds_check()").fetchall()
        assert "version rules" in [b[0] for b in bad], bad
        assert any("splice-amulet 0.1.14 charged holding fees 0.5" in b[1] for b in bad), bad
    # a round with two ClosedMiningRound contracts
    with psycopg.connect(dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute("INSERT INTO contracts (contract_id, template_name, template_id, created_pos, payload) "
                     "SELECT contract_id || 'x', template_name, template_id, created_pos + 1, payload FROM contracts "
                     "WHERE template_name = 'Splice.Round:ClosedMiningRound' LIMIT 1")  # fmt: skip
        bad = conn.execute("SELECT rule FROM rounds_check()").fetchall()
        assert ("one contract per phase",) in bad
    assert rows(dsn, "SELECT * FROM rounds_check()") == []


def test_half_even(loaded_db: tuple[str, list[str]]) -> None:
    dsn, _ = loaded_db
    got = rows(dsn, "SELECT half_even(0.00000000005) a, half_even(0.00000000015) b, "
                    "half_even(-0.00000000025) c, half_even(1.23456789014999) d, "
                    "round(0.00000000005, 10) pg")[0]  # fmt: skip
    assert (got["a"], got["b"], got["c"], got["d"]) == (0, Decimal("0.0000000002"), Decimal("-0.0000000002"),
                                                        Decimal("1.2345678901"))  # fmt: skip
    assert got["pg"] == Decimal("0.0000000001"), "PostgreSQL's round() breaks ties away from zero"


def test_cli_and_leaderboards(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    import csv
    import io
    import json

    dsn, _ = loaded_db
    b = econ.economy.books
    closed = sorted(b.closed)
    lo, hi = closed[5], closed[25]
    p = scanfill("rounds", "--from", str(lo), "--to", str(hi), "--format", "json", dsn=dsn, urls=[])
    out = finish(p, 60, dsn)
    assert p.returncode == 0, out
    data = json.loads(out[out.index("[") :])
    assert [d["closed_round"] for d in data] == list(range(lo, hi + 1))
    assert Decimal(data[0]["app_rewards"]) == cc(b.by_round[lo]["app"])
    want: dict[str, int] = {}
    for (rnd, party), v in b.by_party.items():
        if lo <= rnd <= hi and rnd in b.closed:
            want[party] = want.get(party, 0) + v["validator"]
    p = scanfill("rounds", "--top", "validator", "--from", str(lo), "--to", str(hi), "--limit", "3", "--format",
                 "csv", dsn=dsn, urls=[])  # fmt: skip
    out = finish(p, 60, dsn)
    got = list(csv.DictReader(io.StringIO(out[out.index("rank,") :])))
    best = sorted(((v, k) for k, v in want.items() if v > 0), reverse=True)[:3]
    assert [(g["party"], Decimal(g["amount"])) for g in got] == [(k, cc(v)) for v, k in best]
    party = best[0][1]
    p = scanfill("rounds", "--party", party, "--format", "json", dsn=dsn, urls=[])
    out = finish(p, 60, dsn)
    assert p.returncode == 0, out
    mine = {d["closed_round"]: Decimal(d["validator_rewards"]) for d in json.loads(out[out.index("[") :])}
    assert {r for r, v in mine.items() if v} == {r for (r, q), v in b.by_party.items()
                                                  if q == party and v["validator"] and r in b.closed}  # fmt: skip
    assert sum(mine.values()) == sum(
        cc(v["validator"]) for (r, q), v in b.by_party.items() if q == party and r in b.closed
    )
    p = scanfill("rounds", dsn=dsn, urls=[])  # the table a person reads
    out = finish(p, 60, dsn)
    assert p.returncode == 0 and f"{len(b.closed)} closed rounds ({len(b.closed)} final)" in out, out
    first = min(b.closed)
    assert f"{first:,} " in out and f"{cc(b.by_round[first]['validator']):,.2f}" in out, out
    for flag in ("--coupons", "--burn"):
        p = scanfill("rounds", flag, "--format", "csv", dsn=dsn, urls=[])
        out = finish(p, 60, dsn)
        assert p.returncode == 0 and out.count("\n") > 50, out


def test_load_order_does_not_matter(loaded_db: tuple[str, list[str]], pg_admin_dsn: str, econ: EconomyLedger) -> None:
    """A run killed mid-way and finished by one worker with big pages, and a rebuild from the stored
    ledger, give exactly the same figures as four workers with small pages."""
    dsn, urls = loaded_db
    other = new_db(pg_admin_dsn)
    # a short lease: the finishing run takes the killed run's slices over once it expires
    p = scanfill("run", "--no-progress", "--concurrency", "2", "--page-size", "7", "--import-updates", "--lease", "4",
                 dsn=other, urls=urls)  # fmt: skip
    wait_for(lambda: loaded(other) > econ.total_updates() // 3, timeout=120, what="a third of the economy")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    # a partial copy: a round below the watermark is final, and its figures are already the final ones;
    # the newest round is not (its history is not all there, or not yet provably)
    partial = rows(other, "SELECT closed_round, app_rewards, validator_rewards, burnt, whole FROM round_totals")
    final = {r["closed_round"]: r for r in rows(dsn, "SELECT closed_round, app_rewards, validator_rewards, burnt, "
                                                     "whole FROM round_totals")}  # fmt: skip
    newest = max(econ.economy.books.closed)
    assert newest not in {r["closed_round"] for r in partial if r["whole"]}
    for r in partial:
        if r["whole"]:
            assert r == final[r["closed_round"]], r
    summary = run(options(other, urls, workers=1, concurrency=2, page_size=100, imports=True))
    assert summary.complete and not summary.failures
    want = figures(dsn)
    assert figures(other) == want
    p = scanfill("rebuild-state", dsn=other, urls=[])
    out = finish(p, 120, other)
    assert p.returncode == 0 and "transfer summaries" in out, out
    assert figures(other) == want
    cols = (
        "event_id, round, party, app_rewards, validator_rewards, sv_rewards, holding_fees, output_fees, amulet_version"
    )
    assert rows(other, f"SELECT {cols} FROM amulet_transfers ORDER BY 1") == rows(
        dsn, f"SELECT {cols} FROM amulet_transfers ORDER BY 1")  # fmt: skip


# the same figures from the lake, read in place by DuckDB: the README's query
LAKE_ROUND_TOTALS = """
WITH r AS (
    SELECT CAST(json_extract_string(payload, '$.round.number') AS BIGINT) AS round, template_name, archived_pos
    FROM contracts WHERE template_name LIKE 'Splice.Round:%MiningRound' AND created_pos IS NOT NULL),
closed AS (
    SELECT round FROM r GROUP BY round
    HAVING count(*) FILTER (WHERE template_name = 'Splice.Round:ClosedMiningRound') > 0
       AND count(*) FILTER (WHERE archived_pos IS NULL AND template_name <> 'Splice.Round:ClosedMiningRound') = 0)
SELECT c.round AS closed_round, coalesce(sum(t.app_rewards), 0) AS app_rewards,
       coalesce(sum(t.validator_rewards), 0) AS validator_rewards, coalesce(sum(t.sv_rewards), 0) AS sv_rewards,
       coalesce(sum(t.traffic_bytes), 0) AS traffic_purchased,
       -- Splice's burn per choice: a choice whose one output is burnt burns what its inputs held less
       -- the change; a transfer its fees (docs/round-economics.md)
       coalesce(sum(CASE WHEN t.choice IN ('AmuletRules_BuyMemberTraffic', 'AmuletRules_CreateTransferPreapproval',
                                           'TransferPreapproval_Renew', 'AmuletRules_CreateExternalPartySetupProposal')
                         THEN t.input_amulets + coalesce(t.app_rewards, 0) + coalesce(t.validator_rewards, 0)
                              + coalesce(t.sv_rewards, 0) + coalesce(t.unclaimed_activity_rewards, 0)
                              + coalesce(t.dev_fund_rewards, 0) - t.sender_change_amount
                         ELSE t.output_fees + t.holding_fees + t.sender_change_fee + coalesce(t.amulet_paid, 0) END), 0)
           AS burnt
FROM closed c LEFT JOIN amulet_transfers t ON t.round = c.round AND t.tapped IS NULL
GROUP BY c.round ORDER BY c.round
"""
LAKE_SUPPLY = """
SELECT sum(CAST(coalesce(json_extract_string(payload, '$.amulet.amount.initialAmount'),
                         json_extract_string(payload, '$.amount.initialAmount')) AS DECIMAL(38, 10))) AS supply
FROM contracts
WHERE template_name IN ('Splice.Amulet:Amulet', 'Splice.Amulet:LockedAmulet')
  AND created_pos IS NOT NULL AND archived_pos IS NULL
"""


def test_the_same_figures_from_the_lake(loaded_db: tuple[str, list[str]], tmp_path: Any) -> None:
    """`export` writes the transfer facts (exact decimals) beside contract state; DuckDB over the
    lake gives the round totals and the supply PostgreSQL gives."""
    import duckdb
    from deltalake import DeltaTable

    dsn, _ = loaded_db
    lake = tmp_path / "lake"
    p = scanfill("export", "--to", str(lake), dsn=dsn, urls=[])
    out = finish(p, 180, dsn)
    assert p.returncode == 0, out
    con = duckdb.connect()
    for table in ("contracts", "amulet_transfers"):
        con.register(table, DeltaTable(str(lake / table)).to_pyarrow_table())
    got = [dict(zip(("closed_round", "app_rewards", "validator_rewards", "sv_rewards", "traffic_purchased", "burnt"), r,
                    strict=True)) for r in con.sql(LAKE_ROUND_TOTALS).fetchall()]  # fmt: skip
    want = rows(dsn, "SELECT closed_round, app_rewards, validator_rewards, sv_rewards, traffic_purchased, burnt "
                     "FROM round_totals ORDER BY closed_round")  # fmt: skip
    assert len(got) > 50 and got == want
    ((supply,),) = con.sql(LAKE_SUPPLY).fetchall()
    assert supply == rows(dsn, "SELECT supply FROM supply_at()")[0]["supply"]
    p = scanfill("export", "--to", str(lake), dsn=dsn, urls=[])  # nothing changed: nothing rewritten
    out = finish(p, 120, dsn)
    assert p.returncode == 0 and DeltaTable(str(lake / "amulet_transfers")).version() == 0, out


def test_a_summary_stored_again_is_replaced_not_doubled(db: str, econ: EconomyLedger) -> None:
    """The sink's fast path (COPY) meets a row already stored: the batch is upserted instead, one row
    per event, the newer copy winning, and the commit goes through."""
    from scanfill.coord import schema
    from scanfill.db import Database
    from scanfill.economy.sink import EconomySink
    from scanfill.load.decode import decode_page
    from scanfill.timeutil import us_to_dt

    d = Database(db)
    schema.init(d)
    body = __import__("orjson").dumps({"transactions": [econ.update(0, 0, i) for i in range(200, 100, -1)]})
    batch = decode_page(body, 0, econ.synchronizer_id(0))
    got = [r for u in batch.updates for r in u.transfers]
    assert len(got) > 20
    sink = EconomySink(d)
    with psycopg.connect(db) as conn:
        with conn.transaction():
            sink.write(conn, got[:10])
        changed = [got[3]._replace(app_rewards="1.0000000001", record_time=us_to_dt(1)), *got[10:]]
        with conn.transaction():
            sink.write(conn, changed)  # overlaps the first write in one row
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM amulet_transfers").fetchone() or (0, 0)
        (app,) = conn.execute("SELECT app_rewards FROM amulet_transfers WHERE event_id = %s", (got[3].event_id,)).fetchone() or (None,)
    assert n == distinct == len(got) and app == Decimal("1.0000000001")


def test_following_from_the_beginning_gives_the_same_figures(loaded_db: tuple[str, list[str]], pg_admin_dsn: str,
                                                             econ: EconomyLedger) -> None:  # fmt: skip
    """The other direction: the follower reads the whole history forwards (/v2/updates and
    /v0/events) and keeps the same facts; its app activity records join their rounds."""
    dsn, urls = loaded_db
    other = new_db(pg_admin_dsn)
    p = scanfill("follow", "--once", "--start", "beginning", "--page-size", "50", dsn=other, urls=urls)
    out = finish(p, 300, other)
    assert p.returncode == 0, out
    assert figures(other) == figures(dsn)
    act = rows(other, "SELECT a.round, a.updates, r.round IS NOT NULL AS known FROM round_activity a "
                      "LEFT JOIN rounds r USING (round) ORDER BY 1")  # fmt: skip
    accepted = sum(1 for m in econ.migration_ids() for i in range(econ.specs[m].updates)  # verdict-only items
                   if econ.verdict_only_us(m, i) is not None and econ.verdict_only_item(m, i)["app_activity_records"])
    assert sum(a["updates"] for a in act) == econ.total_updates() + accepted and accepted > 0
    assert all(a["known"] for a in act) and len(act) > 50
    per = rows(other, "SELECT round, sum(activity_weight) AS w FROM round_party_activity GROUP BY 1 ORDER BY 1")
    assert per == [{"round": a["round"], "w": a["activity_weight"]} for a in rows(
        other, "SELECT round, activity_weight FROM round_activity ORDER BY 1")]  # fmt: skip


def test_parity_with_the_aggregates_scan_served(loaded_db: tuple[str, list[str]], econ: EconomyLedger) -> None:
    """Against a scan that still serves /v0/round-totals and /v0/round-party-totals (Splice before
    0.6.7: the simulator answers from its books as Scan's aggregator computed them): identical,
    every round and party row; one altered summary is named by round and field; a current scan
    (404) is said to lack the endpoint."""
    dsn, urls = loaded_db
    b = econ.economy.books
    p = scanfill("rounds", "--against-scan", dsn=dsn, urls=urls)
    out = finish(p, 120, dsn)
    assert p.returncode == 0, out
    parties = sum(1 for (r, _), v in b.by_party.items() if r in b.closed and (v["app"] or v["validator"] or v["traffic_n"]))
    assert f"{len(b.closed)} rounds and {parties} party rows compared, identical" in out, out
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT event_id, round, party, app_rewards FROM amulet_transfers WHERE app_rewards > 0 "
                           "AND round + 3 IN (SELECT closed_round FROM round_totals) ORDER BY event_id LIMIT 1").fetchone()  # fmt: skip
        assert row is not None
        eid, rnd, who, app = row
        conn.execute("UPDATE amulet_transfers SET app_rewards = app_rewards + 1 WHERE event_id = %s", (eid,))
        conn.commit()
        try:
            p = scanfill("rounds", "--against-scan", "--from", str(rnd), "--to", str(rnd + 3), dsn=dsn, urls=urls)
            out = finish(p, 120, dsn)
            assert p.returncode == 1, out
            assert f"round {rnd} app_rewards: copy" in out and f"round {rnd} party {who} app_rewards" in out, out
            assert "4 rounds" in out, out
        finally:
            conn.execute("UPDATE amulet_transfers SET app_rewards = %s WHERE event_id = %s", (app, eid))
            conn.commit()
    with Simulator(SimConfig(ledger=LedgerConfig.for_rows(2000))) as current:
        p = scanfill("rounds", "--against-scan", dsn=dsn, urls=current.urls)
        out = finish(p, 120, dsn)
    assert p.returncode != 0 and "Splice removed it in 0.6.7" in out, out


def test_a_corrupting_proxy_and_concurrent_runs_leave_the_figures_exact(loaded_db: tuple[str, list[str]],
                                                                         pg_admin_dsn: str) -> None:  # fmt: skip
    """One of two scans spoils every second answer (HTML, truncated JSON, a wrong migration or
    synchronizer...): two backfills started at the same instant into one database, and a follower
    from the beginning into another, end with exactly the figures of the clean load (each spoiled
    page refused whole and asked again elsewhere)."""
    from scanfill.sim import FaultConfig, InstanceConfig

    dsn, _ = loaded_db
    want = figures(dsn)
    both, forwards = new_db(pg_admin_dsn), new_db(pg_admin_dsn)
    spoiled = SimConfig(ledger=ECONOMY, instances=(InstanceConfig("sv-1"),
                                                   InstanceConfig("sv-bad", faults=FaultConfig(every_corrupt=2))))  # fmt: skip
    with Simulator(spoiled) as sim:
        assert scanfill("init", dsn=both, urls=sim.urls).wait(timeout=60) == 0
        bad_first = [sim.urls[1], sim.urls[0]]  # the backfills meet the spoiling scan too, not only the follower
        runs = [scanfill("run", "--no-progress", "--page-size", "40", "--import-updates", dsn=both, urls=bad_first)
                for _ in range(2)]  # fmt: skip
        follower = scanfill("follow", "--once", "--start", "beginning", "--page-size", "60", dsn=forwards,
                            urls=sim.urls)  # fmt: skip
        outs = [finish(p, 300, both) for p in runs] + [finish(follower, 300, forwards)]
        assert [p.returncode for p in (*runs, follower)] == [0, 0, 0], outs
    assert figures(both) == want and figures(forwards) == want
    assert rows(both, "SELECT * FROM rounds_check()") == [] and rows(forwards, "SELECT * FROM rounds_check()") == []
    import re

    # each of the three met the spoiling scan, and counts in its summary the pages it refused
    refused = [sum(int(n) for n in re.findall(r"(\d+) malformed page\(s\) refused", o)) for o in outs]
    assert all(n > 0 for n in refused), (refused, outs)
    assert all(n == len(re.findall(r"malformed page from ", o)) for n, o in zip(refused[:2], outs, strict=False))


def test_the_economy_versions_from_the_command_line() -> None:
    """`scanfill sim --economy --economy-versions`: the eras asked for and no other (the history
    Splice's scan_txlog.py reads whole is 0.1.13,0.1.14); an unknown version is refused, named."""
    import subprocess
    import sys

    from helpers import post_json
    from scanfill.economy.packages import version_of

    bad = subprocess.run([sys.executable, "-m", "scanfill.cli", "sim", "--economy", "--economy-versions", "0.1.13,0.1.99"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0 and "'0.1.13,0.1.99'" in bad.stderr and "--economy-versions" in bad.stderr, bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "scanfill.cli", "sim", "--economy", "--economy-versions",
                             "0.1.13,0.1.14", "--rows", "6000", "--port", "0"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = next(line.split()[-1] for line in proc.stdout if line.strip().startswith("serving "))
        versions: set[str | None] = set()
        after: dict[str, Any] | None = None
        while True:
            page = post_json(url + "/v2/updates", {"page_size": 500, **({"after": after} if after else {})})
            for t in page["transactions"]:
                versions |= {version_of(e["template_id"]) for e in t.get("events_by_id", {}).values()
                             if e["package_name"] == "splice-amulet"}  # fmt: skip
            if len(page["transactions"]) < 500:
                break
            last = page["transactions"][-1]
            after = {"after_migration_id": last["migration_id"], "after_record_time": last["record_time"]}
        assert versions == {"0.1.13", "0.1.14"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
