"""The aggregates Scan served until Splice 0.6.7, answered from the economy's books the way Scan's
aggregator computed them: per closed round, by the transfer's round, attributed to the sender,
cumulative from the first round, balance fields zero (as since 0.5.3). A simulator without an
economy answers 404, as a current Scan does."""

from __future__ import annotations

from typing import Any

from scanfill.sim.acs import Invalid, NotFound
from scanfill.sim.economy import num
from scanfill.sim.ledger import Ledger
from scanfill.timeutil import format_instant


def _cc(units: int) -> str:
    """Units of 10^-10 as Scan sent amounts: Daml's Decimal text."""
    return str(num(units)["numeric"])


ZERO = _cc(0)


def _range(body: dict[str, Any], most: int) -> tuple[int, int]:
    lo, hi = body.get("start_round"), body.get("end_round")
    if not isinstance(lo, int) or not isinstance(hi, int) or lo > hi:
        raise Invalid("start_round and end_round must be rounds, start_round <= end_round")
    if hi - lo + 1 > most:
        raise Invalid(f"Cannot request more than {most} rounds at a time")
    return lo, hi


def _books(ledger: Ledger) -> Any:
    economy = getattr(ledger, "economy", None)
    if economy is None:
        raise NotFound("Not found: the round aggregates were removed in Splice 0.6.7")
    return economy.books


def round_totals(ledger: Ledger, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /v0/round-totals`."""
    b = _books(ledger)
    lo, hi = _range(body, 200)
    out, app, val = [], 0, 0
    for r in sorted(b.closed):
        a, v = b.by_round.get(r, {}).get("app", 0), b.by_round.get(r, {}).get("validator", 0)
        app, val = app + a, val + v
        if lo <= r <= hi:
            out.append({"closed_round": r, "closed_round_effective_at": format_instant(b.closed_at[r]),
                        "app_rewards": _cc(a), "validator_rewards": _cc(v),
                        "change_to_initial_amount_as_of_round_zero": ZERO, "change_to_holding_fees_rate": ZERO,
                        "cumulative_app_rewards": _cc(app), "cumulative_validator_rewards": _cc(val),
                        "cumulative_change_to_initial_amount_as_of_round_zero": ZERO,
                        "cumulative_change_to_holding_fees_rate": ZERO, "total_amulet_balance": ZERO})  # fmt: skip
    return {"entries": out}


def round_party_totals(ledger: Ledger, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /v0/round-party-totals`: a row per (closed round, party) with rewards or traffic."""
    b = _books(ledger)
    lo, hi = _range(body, 50)
    out: list[dict[str, Any]] = []
    running: dict[str, list[int]] = {}
    for (r, party), v in sorted(b.by_party.items()):
        if r not in b.closed or not (v.get("app") or v.get("validator") or v.get("traffic_n")):
            continue
        c = running.setdefault(party, [0, 0, 0, 0, 0])
        for k, key in enumerate(("app", "validator", "traffic_bytes", "traffic_cc", "traffic_n")):
            c[k] += v.get(key, 0)
        if lo <= r <= hi:
            out.append({"closed_round": r, "party": party, "app_rewards": _cc(v.get("app", 0)),
                        "validator_rewards": _cc(v.get("validator", 0)),
                        "traffic_purchased": v.get("traffic_bytes", 0),
                        "traffic_purchased_cc_spent": _cc(v.get("traffic_cc", 0)),
                        "traffic_num_purchases": v.get("traffic_n", 0),
                        "cumulative_app_rewards": _cc(c[0]), "cumulative_validator_rewards": _cc(c[1]),
                        "cumulative_traffic_purchased": c[2], "cumulative_traffic_purchased_cc_spent": _cc(c[3]),
                        "cumulative_traffic_num_purchases": c[4],
                        "cumulative_change_to_initial_amount_as_of_round_zero": ZERO,
                        "cumulative_change_to_holding_fees_rate": ZERO})  # fmt: skip
    return {"entries": out}
