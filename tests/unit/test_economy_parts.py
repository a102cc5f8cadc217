"""The transfer-fact rules on served updates, without a database: both encodings read alike, the
outermost summary counts once, an unlabelled summary is flagged, half-even products."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
import pytest

from scanfill.economy import transfers
from scanfill.economy.packages import PACKAGE_OF, allows_fees, deducts_holding_fees, version_of
from scanfill.load.decode import _events_decoder, _preorder
from scanfill.sim.economy import EconomyLedger, div, make_ledger, mul
from scanfill.sim.ledger import EconomyConfig, LedgerConfig, MigrationSpec, event_to_compact
from scanfill.timeutil import us_to_dt

LEDGER = LedgerConfig(seed=5, migrations=(MigrationSpec(0, "2025-03-01T00:00:00Z", 700),),
                      economy=EconomyConfig(per_round=24, upgrades=(10, 20)))  # fmt: skip


@pytest.fixture(scope="module")
def econ() -> EconomyLedger:
    lg = make_ledger(LEDGER)
    assert isinstance(lg, EconomyLedger)
    return lg


def rows_of(update: dict[str, Any]) -> list[transfers.TransferRow]:
    by = _events_decoder.decode(orjson.dumps(update["events_by_id"]))
    events = [by[k] for k in sorted(by, key=_preorder)]
    t_us = 1_700_000_000_000_000
    return transfers.of_update(update["update_id"], 0, "sync", us_to_dt(t_us), t_us, events)


def test_both_encodings_read_alike(econ: EconomyLedger) -> None:
    n = 0
    for i in range(700):
        u = econ.update(0, 0, i)
        compact = {**u, "events_by_id": {k: event_to_compact(v) for k, v in u["events_by_id"].items()}}
        a, b = rows_of(u), rows_of(compact)
        assert a == b, i
        n += len(a)
        assert all(r.readable for r in a)
    assert n > 300


def test_the_outermost_summary_counts_once(econ: EconomyLedger) -> None:
    """A traffic purchase holds an AmuletRules_Transfer with the same summary; a preapproval send
    wraps one that is the only summary."""
    seen = {"traffic": 0, "wrapped": 0}
    for i in range(700):
        u = econ.update(0, 0, i)
        choices = [e.get("choice") for e in u["events_by_id"].values()]
        rows = rows_of(u)
        if "AmuletRules_BuyMemberTraffic" in choices:
            assert [r.choice for r in rows] == ["AmuletRules_BuyMemberTraffic"] and rows[0].traffic_bytes
            assert rows[0].amulet_paid is not None
            seen["traffic"] += 1
        elif "TransferPreapproval_Send" in choices:
            assert [r.choice for r in rows] == ["AmuletRules_Transfer"]
            seen["wrapped"] += 1
    assert seen["traffic"] > 10 and seen["wrapped"] > 10


def test_positional_records_are_flagged_not_guessed(econ: EconomyLedger) -> None:
    def unlabel(v: Any) -> Any:
        if isinstance(v, dict):
            if "record" in v:
                return {"record": {"fields": [{"value": unlabel(f["value"])} for f in v["record"]["fields"]]}}
            return {k: unlabel(x) for k, x in v.items()}
        if isinstance(v, list):
            return [unlabel(x) for x in v]
        return v

    # the economy's updates, their payloads stripped of labels
    for i in range(100, 300):
        u = econ.update(0, 0, i)
        stripped = {**u, "events_by_id": {k: {**e, "choice_argument": unlabel(e.get("choice_argument")),
                                              "exercise_result": unlabel(e.get("exercise_result"))}
                                          for k, e in u["events_by_id"].items()}}  # fmt: skip
        for r in rows_of(stripped):
            assert not r.readable and r.app_rewards is None and r.tapped is None and r.round is None


def test_versions_and_their_rules() -> None:
    assert version_of(f"{PACKAGE_OF['0.1.13']}:Splice.AmuletRules:AmuletRules") == "0.1.13"
    assert version_of("deadbeef:Splice.AmuletRules:AmuletRules") is None
    assert deducts_holding_fees("0.1.13") and not deducts_holding_fees("0.1.14") and not deducts_holding_fees(None)
    assert allows_fees("0.1.16") and not allows_fees("0.1.17")


def test_decimal_products_round_half_even() -> None:
    q = Decimal("1E-10")
    for a, b in ((5, 10**9), (15, 10**9), (25, 10**9), (123456789, 987654321), (10**12 + 5, 5 * 10**9)):
        want = (Decimal(a) / 10**10 * (Decimal(b) / 10**10)).quantize(q, rounding=ROUND_HALF_EVEN)
        assert Decimal(mul(a, b)) / 10**10 == want
    assert div(10**10, 3 * 10**10) == 3333333333 and div(2 * 10**10, 3 * 10**10) == 6666666667
