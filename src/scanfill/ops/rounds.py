"""Round economics for people who do not write SQL: each answer is one query over the views of
`economy/economy.sql`, as rows of named columns."""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from scanfill.db import Database

VIEWS = ("totals", "parties", "coupons", "burn", "top", "check")
METRICS = {"app": "app_rewards", "validator": "validator_rewards", "sv": "sv_rewards", "faucet": "faucet_rewards",
           "traffic": "traffic_purchased", "traffic-cc": "traffic_purchased_cc_spent"}  # fmt: skip
# what a table shows, (column, heading) (csv and json carry every column, exactly)
SHOWN = {
    "totals": [("closed_round", "round"), ("app_rewards", "app"), ("validator_rewards", "validator"),
               ("sv_rewards", "sv"), ("minted", "minted"), ("burnt", "burnt"),
               ("traffic_purchased_cc_spent", "traffic CC"), ("whole", "final")],
    "parties": [("closed_round", "round"), ("party", "party"), ("app_rewards", "app"),
                ("validator_rewards", "validator"), ("sv_rewards", "sv"), ("traffic_purchased", "traffic B"),
                ("cumulative_validator_rewards", "validator cum.")],
    "coupons": [("round", "round"), ("kind", "kind"), ("created", "made"), ("claimed", "claimed"),
                ("expired", "expired"), ("unclaimed", "open"), ("claimed_cc", "claimed CC"),
                ("expired_cc", "expired CC")],
    "burn": [("round", "round"), ("minted", "minted"), ("tapped", "tapped"), ("burnt", "burnt"),
             ("burn_mint_ratio", "burn/mint"), ("whole", "final")],
    "top": [("rank", "#"), ("party", "party"), ("amount", "amount"), ("rounds", "rounds"),
            ("first_round", "first"), ("last_round", "last")],
    "check": [("rule", "rule"), ("subject", "subject"), ("detail", "detail")],
}  # fmt: skip


def cell(v: Any) -> str:
    """A value as a table shows it: CC to the cent with thousands separators (the exact value is in
    csv and json), a party by its name and the start of its fingerprint."""
    from decimal import Decimal

    if isinstance(v, Decimal):
        return f"{v:,.2f}" if v == v.to_integral_value() or abs(v) >= Decimal("0.01") or v == 0 else f"{v:.2e}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, str) and "::" in v:
        name, _, fp = v.partition("::")
        return f"{name}::{fp[:8]}"
    return "-" if v is None else str(v)


def _between(col: str) -> str:
    return f"(%(lo)s::bigint IS NULL OR {col} >= %(lo)s) AND (%(hi)s::bigint IS NULL OR {col} <= %(hi)s)"


def query(db: Database, view: str, lo: int | None = None, hi: int | None = None, party: str | None = None,
          metric: str = "app", limit: int = 10) -> list[dict[str, Any]]:  # fmt: skip
    """The rows of one view over rounds [lo, hi] (None: open)."""
    args: dict[str, Any] = {"lo": lo, "hi": hi, "party": party, "limit": limit}
    if view == "totals":
        text = f"SELECT * FROM {{s}}.round_totals WHERE {_between('closed_round')} ORDER BY closed_round"
    elif view == "parties":
        text = (f"SELECT * FROM {{s}}.round_party_totals WHERE {_between('closed_round')} "
                "AND (%(party)s::text IS NULL OR party = %(party)s) ORDER BY closed_round, party")  # fmt: skip
    elif view == "coupons":
        text = f"SELECT * FROM {{s}}.round_coupon_totals WHERE {_between('round')} ORDER BY round, kind"
    elif view == "burn":
        text = f"SELECT * FROM {{s}}.burn_mint_rounds WHERE {_between('round')} ORDER BY round"
    elif view == "top":
        args["metric"] = METRICS[metric]
        text = "SELECT * FROM {s}.leaderboard(%(metric)s, %(lo)s, %(hi)s, %(limit)s)"
    elif view == "check":
        text = "SELECT * FROM {s}.rounds_check() ORDER BY 1, 2"
    else:
        raise ValueError(f"unknown view {view!r}")
    with db.connect(application="scanfill rounds") as conn:
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(sql.SQL(text.replace("{s}", "{}")).format(sql.Identifier(db.schema)), args).fetchall()


def summary(db: Database) -> dict[str, Any]:
    """The supply now and how much of the round history is final."""
    with db.connect(application="scanfill rounds") as conn:
        cur = conn.cursor(row_factory=dict_row)
        s = sql.Identifier(db.schema)
        got = cur.execute(sql.SQL("SELECT * FROM {}.supply_at()").format(s)).fetchone() or {}
        r = cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE closed) AS closed, count(*) FILTER (WHERE whole) AS whole, "
                                "count(*) AS rounds, max(round) AS newest FROM {}.rounds").format(s)).fetchone() or {}  # fmt: skip
        u = cur.execute(sql.SQL("SELECT count(*) AS summaries, count(*) FILTER (WHERE NOT readable) AS unreadable, "
                                "count(*) FILTER (WHERE amulet_version IS NULL) AS unknown_versions "
                                "FROM {}.amulet_transfers").format(s)).fetchone() or {}  # fmt: skip
    return {**got, **r, **u}
