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
# the columns a table shows (csv and json carry every column)
SHOWN = {
    "totals": ["closed_round", "app_rewards", "validator_rewards", "sv_rewards", "minted", "burnt",
               "traffic_purchased_cc_spent", "whole"],
    "parties": ["closed_round", "party", "app_rewards", "validator_rewards", "sv_rewards", "traffic_purchased",
                "cumulative_app_rewards", "cumulative_validator_rewards"],
    "coupons": ["round", "kind", "created", "claimed", "expired", "unclaimed", "claimed_cc", "expired_cc"],
    "burn": ["round", "minted", "tapped", "burnt", "burn_mint_ratio", "whole"],
    "top": ["rank", "party", "amount", "rounds", "first_round", "last_round"],
    "check": ["rule", "subject", "detail"],
}  # fmt: skip


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
        u = cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE NOT readable) AS unreadable, "
                                "count(*) FILTER (WHERE amulet_version IS NULL) AS unknown_versions "
                                "FROM {}.amulet_transfers").format(s)).fetchone() or {}  # fmt: skip
    return {**got, **r, **u}
