"""Round economics: what keeping the transfer facts costs a backfill, and what asking costs.

python benchmarks/economics.py load --rows 300000    # rows/s with and without the transfer facts, alternating
python benchmarks/economics.py query --rows 10000000 # round_totals & co. over a 10M-row history's facts
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import psycopg

from common import alternating, drop_db, fresh_db, postgres, table
from scanfill.db import Database
from scanfill.economy import transfers
from scanfill.load.run import RunOptions, run
from scanfill.load.worker import WorkerSettings
from scanfill.scan.client import ScanConfig
from scanfill.sim import LedgerConfig, MigrationSpec, SimConfig, Simulator


def _load(dsn: str, urls: list[str], upkeep: bool) -> tuple[float, int, str]:
    """One in-process backfill; without `upkeep` no update is read for summaries (measuring only)."""
    original = transfers.wanted
    if not upkeep:
        transfers.wanted = lambda events: False  # type: ignore[assignment]
    try:
        ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(urls)), concurrency=16)
        s = run(RunOptions(worker=ws, progress=False))
    finally:
        transfers.wanted = original  # type: ignore[assignment]
    assert s.complete and not s.failures, s.failures
    with psycopg.connect(dsn) as conn:
        got = conn.execute("SELECT count(*) FROM amulet_transfers").fetchone()
    return s.seconds, s.rows, f"{got[0] if got else 0:,}"


def bench_load(rows: int) -> str:
    """The default simulator: most of its updates are transfers or traffic purchases with a
    summary (16,122 of 22,696 here), more than MainNet, so this is the dearer case."""
    return alternating(LedgerConfig.for_rows(rows), _load, "transfer facts", "summaries stored")


def _timed(conn: Any, q: str, n: int = 5) -> tuple[float, float, int]:
    times, got = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        got = len(conn.execute(q).fetchall())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times), got


SYNTH = """
-- the rounds: Open, Summarizing and Issuing archived, Closed active, as in a long history
INSERT INTO contracts (contract_id, template_id, package_name, template_name, created_pos, created_record_time,
                       created_at, archived_pos, archived_record_time, archived_choice, payload)
SELECT md5(r || p), '3ca1343ab26b453d38c8adb70dca5f1ead8440c42b59b68f070786955cbf9ec1:Splice.Round:' || p,
       'splice-amulet', 'Splice.Round:' || p, r * 1000 + k, t, t,
       CASE WHEN p <> 'ClosedMiningRound' THEN r * 1000 + k + 500 END, CASE WHEN p <> 'ClosedMiningRound' THEN t END,
       CASE WHEN p <> 'ClosedMiningRound' THEN 'Archive' END,
       jsonb_build_object('round', jsonb_build_object('number', r::text), 'amuletPrice', '0.0050000000',
                          'opensAt', t, 'issuancePerValidatorRewardCoupon', '0.2000000000',
                          'issuancePerFeaturedAppRewardCoupon', '100.0000000000',
                          'issuancePerUnfeaturedAppRewardCoupon', '0.6000000000',
                          'issuancePerSvRewardCoupon', '12.3456789012')
FROM generate_series(1, %(rounds)s) r,
     unnest(ARRAY['OpenMiningRound', 'SummarizingMiningRound', 'IssuingMiningRound', 'ClosedMiningRound'])
         WITH ORDINALITY AS x(p, k),
     LATERAL (SELECT timestamptz '2025-01-01' + r * interval '10 minutes' AS t) tt;
-- the holdings a history of that size leaves in contract state (weight for the index the views read)
INSERT INTO contracts (contract_id, template_id, package_name, template_name, created_pos, created_record_time, payload)
SELECT md5('a' || i), 'x:Splice.Amulet:Amulet', 'splice-amulet', 'Splice.Amulet:Amulet', i, now(),
       jsonb_build_object('owner', 'p' || (i %% 500), 'amount', jsonb_build_object('initialAmount', '10.0000000000',
                          'createdAt', jsonb_build_object('number', '1'), 'ratePerRound',
                          jsonb_build_object('rate', '0.0000190259')))
FROM generate_series(1::bigint, %(holdings)s) i;
-- one summary per transfer
INSERT INTO amulet_transfers (event_id, update_id, migration_id, synchronizer_id, record_time, pos, choice, package_id, amulet_version,
                              round, party, provider, input_amulets, app_rewards, validator_rewards, faucet_rewards,
                              sv_rewards, unclaimed_activity_rewards, dev_fund_rewards, holding_fees, output_fees,
                              sender_change_fee, sender_change_amount, amulet_price, amulet_paid, traffic_bytes)
SELECT 'e' || i, 'u' || i, 0, 'global-domain::1220', timestamptz '2025-01-01' + i * interval '1 second', i,
       CASE WHEN i %% 9 = 0 THEN 'AmuletRules_BuyMemberTraffic' ELSE 'AmuletRules_Transfer' END,
       '3ca1343ab26b453d38c8adb70dca5f1ead8440c42b59b68f070786955cbf9ec1', '0.1.14',
       1 + (i * %(rounds)s::bigint) / %(transfers)s, 'party-' || (i * 7919 %% 400), 'app-' || (i %% 20),
       (i %% 10000) / 7.0, CASE WHEN i %% 3 = 0 THEN (i %% 977) / 3.0 ELSE 0 END, (i %% 331) / 11.0, 0,
       CASE WHEN i %% 50 = 0 THEN 1234.5678901234 ELSE 0 END, 0, 0, 0, 0, 0, (i %% 1000) / 13.0, 0.005,
       CASE WHEN i %% 9 = 0 THEN 57.1234567891 END, CASE WHEN i %% 9 = 0 THEN 1000000 + i END
FROM generate_series(1::bigint, %(transfers)s) i;
ANALYZE contracts;
ANALYZE amulet_transfers;
"""


def bench_query(rows: int) -> str:
    """A history of `rows` ledger rows (12 events per update, 55 % transfers, an update every 2 s,
    a round every 10 minutes) as its facts: the rounds, one summary per transfer, a holding per
    seven updates. The coordination tables hold a planned backfill of 1,000 slices (the watermark
    is computed for every answer)."""
    updates = rows // 13
    n_transfers, n_rounds, holdings = updates * 55 // 100, max(10, updates * 2 // 600), updates // 7
    cfg = LedgerConfig(seed=3, migrations=(MigrationSpec(0, "2025-01-01T00:00:00Z", 4000, gap_us=600_000_000),))
    lines = []
    with postgres() as admin, Simulator(SimConfig(ledger=cfg)) as sim:
        dsn = fresh_db(admin)
        ws = WorkerSettings(db=Database(dsn), scan=ScanConfig(urls=tuple(sim.urls)))
        run(RunOptions(worker=ws, progress=False, plan_only=True, slices=1000))
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            params = {"rounds": n_rounds, "transfers": n_transfers, "holdings": holdings}
            for stmt in SYNTH.split(";\n"):
                if stmt.strip():
                    conn.execute(stmt, params if "%(" in stmt else None)  # type: ignore[call-overload]
            made = time.perf_counter() - t0
            for name, q in (("round_totals (every round)", "SELECT * FROM round_totals"),
                            ("round_party_totals (every round)", "SELECT * FROM round_party_totals"),
                            ("rounds", "SELECT * FROM rounds"),
                            ("top 10 validators, all rounds", "SELECT * FROM top_validators(NULL, NULL, 10)"),
                            ("burn_mint_daily", "SELECT * FROM burn_mint_daily")):  # fmt: skip
                p50, worst, got = _timed(conn, q)
                lines.append([name, f"{got:,}", f"{p50 * 1000:,.0f}", f"{worst * 1000:,.0f}"])
        drop_db(admin, dsn)
    head = (f"{rows:,} ledger rows -> {n_transfers:,} summaries, {n_rounds:,} rounds, {holdings:,} holdings "
            f"(synthesised in {made:.0f} s)\n\n")  # fmt: skip
    return head + table(["query", "rows", "ms p50", "ms max"], lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--rows", type=int, default=300_000)
    q = sub.add_parser("query")
    q.add_argument("--rows", type=int, default=10_000_000)
    a = ap.parse_args()
    print(bench_load(a.rows) if a.cmd == "load" else bench_query(a.rows))


if __name__ == "__main__":
    main()
