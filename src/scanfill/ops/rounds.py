"""Round economics for people who do not write SQL: each answer is one query over the views of
`economy/economy.sql`, as rows of named columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
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


# ----- against a scan that still serves the aggregates (Splice < 0.6.7) -------------------------------

TOTALS_FIELDS = ("app_rewards", "validator_rewards", "cumulative_app_rewards", "cumulative_validator_rewards")
PARTY_FIELDS = ("app_rewards", "validator_rewards", "traffic_purchased", "traffic_purchased_cc_spent",
                "traffic_num_purchases", "cumulative_app_rewards", "cumulative_validator_rewards",
                "cumulative_traffic_purchased", "cumulative_traffic_purchased_cc_spent",
                "cumulative_traffic_num_purchases")  # fmt: skip


@dataclass
class Parity:
    """What comparing the copy's round figures with a scan's `/v0/round-totals` and
    `/v0/round-party-totals` found."""

    scan: str
    rounds: int = 0  # compared, in both
    party_rows: int = 0
    differences: list[str] = field(default_factory=list)
    only_in_copy: list[int] = field(default_factory=list)  # closed here, not aggregated by the scan (yet)

    @property
    def equal(self) -> bool:
        return not self.differences


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except ArithmeticError:
        return str(a) == str(b)


def _compare(report: Parity, what: str, mine: dict[str, Any], theirs: dict[str, Any], fields: tuple[str, ...]) -> None:
    """One row of the copy against the scan's, field by field, each difference named."""
    for f in fields:
        if not _same(mine[f], theirs.get(f)):
            report.differences.append(f"{what} {f}: copy {mine[f]}, scan {theirs.get(f)}")


async def _fetch(client: Any, path: str, lo: int, hi: int, step: int) -> list[dict[str, Any]]:
    from scanfill.scan import endpoints as ep

    out: list[dict[str, Any]] = []
    for a in range(lo, hi + 1, step):
        got = await client.post_json(path, ep.round_range(a, min(hi, a + step - 1)))
        out.extend(got.get("entries") or [])
    return out


async def against_scan(db: Database, scan: Any, lo: int | None = None, hi: int | None = None) -> Parity:
    """Every closed round of [lo, hi] (default: all the copy has) and its party rows, field by field."""
    from scanfill.errors import ScanError, ScanHTTPError
    from scanfill.scan import endpoints as ep
    from scanfill.scan.client import ScanClient, redact_url
    from scanfill.timeutil import dt_to_us, parse_us

    mine = {r["closed_round"]: r for r in query(db, "totals", lo, hi)}
    report = Parity(scan=", ".join(redact_url(u) for u in scan.urls))
    if not mine:
        return report
    lo, hi = min(mine) if lo is None else lo, max(mine) if hi is None else hi
    async with ScanClient(scan) as client:
        try:
            theirs = {e["closed_round"]: e for e in await _fetch(client, ep.ROUND_TOTALS, lo, hi, ep.ROUND_TOTALS_MAX)}
            parties = await _fetch(client, ep.ROUND_PARTY_TOTALS, lo, hi, ep.ROUND_PARTY_TOTALS_MAX)
        except ScanHTTPError as exc:
            if exc.status == 404:
                raise ScanError(f"{report.scan} does not serve {ep.ROUND_TOTALS} (Splice removed it in 0.6.7): compare "
                                "against a scan of an older release, or an archive serving the same API") from None
            raise
    for r, e in sorted(theirs.items()):
        m = mine.get(r)
        if m is None:
            report.differences.append(f"round {r}: the scan aggregated it; the copy has no closed round {r}")
            continue
        report.rounds += 1
        _compare(report, f"round {r}", m, e, TOTALS_FIELDS)
        t = e.get("closed_round_effective_at")
        if t and m["closed_round_effective_at"] is not None and dt_to_us(m["closed_round_effective_at"]) != parse_us(t):
            report.differences.append(f"round {r} closed_round_effective_at: copy {m['closed_round_effective_at']}, scan {t}")
    report.only_in_copy = sorted(set(mine) - set(theirs))
    aggregated = set(theirs)
    ours = {(p["closed_round"], p["party"]): p for p in query(db, "parties", lo, hi)
            if p["closed_round"] in aggregated and (p["app_rewards"] or p["validator_rewards"] or p["traffic_num_purchases"])}  # fmt: skip
    seen = set()
    for e in parties:
        key = (e["closed_round"], e["party"])
        seen.add(key)
        p = ours.get(key)
        if p is None:
            report.differences.append(f"round {key[0]} party {key[1]}: the scan has a row, the copy none")
            continue
        report.party_rows += 1
        _compare(report, f"round {key[0]} party {key[1]}", p, e, PARTY_FIELDS)
    for key in sorted(set(ours) - seen):
        report.differences.append(f"round {key[0]} party {key[1]}: the copy has a row, the scan none")
    return report
