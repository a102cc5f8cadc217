"""The independent replay (tests/replay.py) over what real clients read: the economy simulator's
/v2/updates over HTTP, MainNet's recorded genesis, and Splice's documented examples. The replay
must be clean on all three (a rule that holds only on our simulator is not Splice's), and it must
name each breach planted into otherwise clean history."""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replay import (
    OPEN,
    SUMMARY_CHOICES,
    SV,
    Replay,
    balance,
    compact_update,
    div,
    fetch_acs,
    fetch_updates,
    get,
    mul,
    num,
    stepped,
)
from scanfill.load.run import run
from scanfill.sim import LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.sim.ledger import EconomyConfig
from shared import options

FIXTURES = Path(__file__).parent / "fixtures"
MAINNET = FIXTURES / "real-scan" / "mainnet-genesis" / "scan.v2.updates.json"
DOCS = FIXTURES / "replay"
# Two migrations, four splice-amulet eras (fees and holding fees; CIP-0078; CIP-0107; Token Standard V2
# metadata), ~66 rounds.
ECONOMY = LedgerConfig(
    seed=41,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 900),
        MigrationSpec(1, "2024-06-25T01:30:00Z", 700, import_updates=1),
    ),
    economy=EconomyConfig(per_round=24, upgrades=(20, 40, 55), versions=("0.1.13", "0.1.14", "0.1.17", "0.1.21")),
    acs_snapshot_hours=0.25,
)


def report(r: Replay) -> str:
    return f"{len(r.problems)} breaches of Splice's rules {r.counts()}, first: " + "\n".join(map(str, r.problems[:15]))


@pytest.fixture(scope="module")
def scan() -> Iterator[str]:
    """The economy simulator's base URL (…/api/scan)."""
    with Simulator(SimConfig(ledger=ECONOMY)) as sim:
        yield sim.urls[0]


@pytest.fixture(scope="module")
def served(scan: str) -> dict[str, list[Any]]:
    """Every update of the economy, fetched over HTTP from /v2/updates in both encodings."""
    return {enc: list(fetch_updates(scan, enc, page_size=250)) for enc in ("protobuf_json", "compact_json")}


def test_the_economy_simulator_replays_clean(served: dict[str, list[Any]]) -> None:
    r = Replay().run(served["protobuf_json"], "protobuf_json")
    assert r.counts() == {}, report(r)
    # It replayed an economy, not an empty shell: transfers under a fee era and a fee-free one, mints,
    # burns, dust, and a supply that is the sum of the holdings.
    assert r.transactions == len(served["protobuf_json"]) and r.summaries > 500
    assert r.versions == {13, 14, 17, 21}, r.versions
    assert r.minted > 0 and r.burnt > 0 and r.dust > 0
    assert r.supply == sum(r.holdings().values()) == r.tapped + r.minted - r.burnt - r.dust


def test_the_scans_state_is_the_replayed_state(scan: str, served: dict[str, list[Any]]) -> None:
    """What the scan says its state is, the registry's totalSupply and the /v0/state/acs snapshot
    it is taken from, equals the replayed history up to that snapshot (scan_txlog's
    --compare-acs-with-snapshot and --compare-balances-with-total-supply, for every template)."""
    with urllib.request.urlopen(scan.removesuffix("/api/scan") + "/registry/metadata/v1/instruments/Amulet") as resp:
        instrument = json.load(resp)
    at, last = instrument["totalSupplyAsOf"], max(u["migration_id"] for u in served["protobuf_json"])
    r = Replay().run(
        (u for u in served["protobuf_json"] if u["migration_id"] < last or instant(u["record_time"]) <= instant(at)),
        "protobuf_json",
    )
    assert r.supply == num(instrument["totalSupply"]) and r.supply > 0
    acs = fetch_acs(scan, last, at)
    assert acs == {cid: c.template for cid, c in r.acs.items()}
    assert sum(1 for t in acs.values() if t == "Splice.Amulet:Amulet") > 10


def test_scanfills_figures_are_the_replays(db: str, scan: str, served: dict[str, list[Any]]) -> None:
    """scanfill's copy of the same history, read through its own code (active(), holdings(),
    supply_at(), minted(), burnt() of update_burns, dust from expired_amulets), equals the
    independent replay midway through and at the end of each migration."""
    summary = run(options(db, [scan], concurrency=4, page_size=200))
    assert summary.complete and not summary.failures
    ups = served["protobuf_json"]
    last_of = {u["migration_id"]: i for i, u in enumerate(ups)}
    first_of = {m: min(i for i, u in enumerate(ups) if u["migration_id"] == m) for m in last_of}
    points = sorted({*last_of.values(), *((first_of[m] + last_of[m]) // 2 for m in last_of)})
    r = Replay()
    with psycopg.connect(db) as conn:
        for i, u in enumerate(ups):
            r.apply(compact_update(u))
            if i not in points:
                continue
            m, t = u["migration_id"], u["record_time"]

            def one(sql: str, m: int = m, t: str = t) -> Any:
                return conn.execute(sql, {"m": m, "t": t}).fetchone()[0]  # type: ignore[index]

            where = f"update {i} (migration {m}, {t})"
            active = conn.execute("SELECT contract_id FROM active(NULL, %(m)s, %(t)s::timestamptz)", {"m": m, "t": t})
            assert {row[0] for row in active} == set(r.acs), where
            holdings = conn.execute("SELECT owner, sum(initial_amount) FROM holdings(%(m)s, %(t)s::timestamptz) GROUP BY 1",
                                    {"m": m, "t": t})  # fmt: skip
            assert dict(holdings.fetchall()) == r.holdings(), where
            assert one("SELECT supply FROM supply_at(%(m)s, %(t)s::timestamptz)") == r.supply, where
            before = "(migration_id, record_time) <= (%(m)s, %(t)s::timestamptz)"
            assert one(f"SELECT coalesce(sum(minted(x)), 0) FROM amulet_transfers x WHERE tapped IS NULL AND {before}") \
                == r.minted, where  # fmt: skip
            assert one(f"SELECT coalesce(sum(tapped), 0) FROM amulet_transfers WHERE {before}") == r.tapped, where
            assert one("SELECT coalesce(sum(b.burnt), 0) FROM update_burns b JOIN ledger_updates u USING (update_id) "
                       "WHERE (u.migration_id, u.record_time) <= (%(m)s, %(t)s::timestamptz)") == r.burnt, where  # fmt: skip
            assert one("SELECT coalesce(sum(initial_amount), 0) FROM expired_amulets "
                       "WHERE archived_record_time <= %(t)s::timestamptz") == r.dust, where  # fmt: skip
    assert r.minted > 0 and r.burnt > 0 and r.dust > 0


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_both_encodings_replay_alike(served: dict[str, list[Any]]) -> None:
    a = Replay().run(served["protobuf_json"], "protobuf_json")
    b = Replay().run(served["compact_json"], "compact_json")
    assert [str(p) for p in a.problems] == [str(p) for p in b.problems]
    assert (a.supply, a.minted, a.burnt, a.dust, a.summaries) == (b.supply, b.minted, b.burnt, b.dust, b.summaries)
    assert a.acs.keys() == b.acs.keys() and a.holdings() == b.holdings()


def test_mainnet_genesis_replays_clean() -> None:
    updates = json.loads(MAINNET.read_text())["transactions"]
    r = Replay().run(updates)
    assert r.counts() == {}, report(r)
    assert r.transactions == 25
    assert sorted(int(get(c.args, "round", "number")) for c in r.active(OPEN).values()) == [0, 1, 2]
    assert len(r.active(SV)) == 2 and r.supply == 0


def docs_event(block: str) -> dict[str, Any]:
    """The one exercised event of a docs code-block (a `"id": {...},` member)."""
    text = (DOCS / f"block_{block}.json.txt").read_text().strip().rstrip(",")
    ((_, event),) = json.loads("{" + text + "}").items()
    return dict(event)


@pytest.mark.parametrize(
    ("block", "burnt"), [("08", "24003.6076103600"), ("09", "108.0021164861"), ("11", "61.3199997000")]
)
def test_splice_docs_examples_burn_what_the_docs_say(block: str, burnt: str) -> None:
    """Each documented choice balances exactly (in = out) and burns the docs' figure, which is also
    what went in less what came out to the owners."""
    e = docs_event(block)
    choice = e["choice"]
    res = e["exercise_result"]
    tres = get(res, *SUMMARY_CHOICES[choice])
    s = tres["summary"]
    outputs = sum((num(o["amount"]) for o in get(e, "choice_argument", "transfer", "outputs")), Decimal(0)) \
        if choice == "AmuletRules_Transfer" else Decimal(0)  # fmt: skip
    paid = num(res["amuletPaid"]) if "amuletPaid" in res else Decimal(0)
    into, out, burn = balance(choice, s, outputs, paid)
    assert into == out
    assert burn == Decimal(burnt) == num(s["inputAmuletAmount"]) - outputs - num(s["senderChangeAmount"])


def test_the_fee_rules_give_the_documented_output_fees() -> None:
    """MainNet's genesis fee schedule (USD) at the docs' price of 0.005 USD/CC gives the documented
    fees: the 0.1.6 traffic purchase's output to the DSO (create fee + stepped transfer fee on
    amuletPaid: 209.9976) and the transfer's output (102.0021164861)."""
    genesis = json.loads(MAINNET.read_text())["transactions"][0]
    boot = next(e for e in genesis["events_by_id"].values() if e.get("template_id", "").endswith(":DsoBootstrap"))
    cfg = boot["create_arguments"]["amuletConfig"]["transferConfig"]
    for block, amount in (("08", get(docs_event("08"), "exercise_result", "amuletPaid")),
                          ("09", get(docs_event("09"), "choice_argument", "transfer", "outputs")[0]["amount"])):  # fmt: skip
        e = docs_event(block)
        s = get(e["exercise_result"], *SUMMARY_CHOICES[e["choice"]], "summary")
        scale = div(Decimal(1), num(s["amuletPrice"]))
        fee = mul(num(cfg["createFee"]["fee"]), scale) + stepped(cfg["transferFee"], num(amount), scale, 6)
        assert [fee] == [num(f) for f in s["outputFees"]]


def test_the_docs_traffic_purchase_does_not_balance_with_its_fee_outside_amulet_paid() -> None:
    """Read as if its output fee were on top of amuletPaid (as a preapproval's is), the documented
    purchase would burn 24213.6052103600 and not balance: the rule tells the two apart."""
    e = docs_event("08")
    s = e["exercise_result"]["summary"]
    into, out, burn = balance(
        "AmuletRules_CreateTransferPreapproval", s, Decimal(0), num(e["exercise_result"]["amuletPaid"])
    )
    assert burn == Decimal("24213.6052103600") and into != out


def kinds_in(r: Replay, update_id: str) -> set[str]:
    return {p.kind for p in r.problems if p.update_id == update_id}


def test_the_replay_names_each_planted_breach() -> None:
    updates = json.loads(MAINNET.read_text())["transactions"]
    clean = Replay().run(updates)
    assert clean.counts() == {}

    def planted(change: Any) -> Replay:
        ups = copy.deepcopy(updates)
        change(ups)
        return Replay().run(ups)

    def events(tx: dict[str, Any], choice: str) -> dict[str, Any]:
        return next(e for e in tx["events_by_id"].values() if e.get("choice") == choice)

    def coupon(tx: dict[str, Any]) -> dict[str, Any]:
        return next(e for e in tx["events_by_id"].values() if e.get("template_id", "").endswith(":SvRewardCoupon"))

    sv_tx = updates[2]["update_id"]
    # the same transaction served twice: its creates are not new, its consumed contracts not active
    r = planted(lambda u: u.insert(3, copy.deepcopy(u[2])))
    assert {"acs-create", "acs-exercise"} <= kinds_in(r, sv_tx)
    # a result that no longer names the coupon created below it
    r = planted(lambda u: events(u[2], "DsoRules_ReceiveSvRewardCoupon")["exercise_result"].pop("svRewardCoupons"))
    assert kinds_in(r, sv_tx) == {"shape"}
    r = planted(
        lambda u: events(u[9], "ValidatorLicense_ReceiveFaucetCoupon")["exercise_result"].update(couponCid="00ff")
    )
    assert kinds_in(r, updates[9]["update_id"]) == {"result-names"}
    # a coupon for a round that is not open
    r = planted(lambda u: coupon(u[2])["create_arguments"]["round"].update(number="7"))
    assert kinds_in(r, sv_tx) == {"coupon-round"}
    # a package no Splice release has, a package named as another, a choice Splice never declared
    report_tx = updates[1]["update_id"]
    r = planted(
        lambda u: events(u[1], "DsoRules_SubmitStatusReport").update(
            template_id="ab" * 32 + ":Splice.DsoRules:DsoRules"
        )
    )
    assert kinds_in(r, report_tx) == {"package"}
    r = planted(lambda u: events(u[1], "DsoRules_SubmitStatusReport").update(package_name="splice-amulet"))
    assert kinds_in(r, report_tx) == {"package"}
    r = planted(lambda u: events(u[1], "DsoRules_SubmitStatusReport").update(choice="DsoRules_SubmitReport"))
    assert kinds_in(r, report_tx) == {"choice"}

    # an exercise naming another template than its contract's
    def other_template(u: list[Any]) -> None:
        e = events(u[1], "Archive")
        e["template_id"] = e["template_id"].replace("SvStatusReport", "SvRewardState")

    r = planted(other_template)
    assert kinds_in(r, updates[1]["update_id"]) == {"acs-template"}


def test_the_replay_names_breaches_planted_into_transfers(served: dict[str, list[Any]]) -> None:
    """A summary field off by 10^-10, a change amulet off by 10^-10, a validator coupon off by
    10^-10, a coupon whose round is not issuing: each named in its own transaction (the simulator's
    other findings aside). Only the history up to the planted update is replayed; the updates that
    change are copies."""
    ups = [compact_update(u) for u in served["protobuf_json"]]
    base = Replay().run(ups)

    def planted(upto: int, change: Any, *copied: int) -> set[str]:
        """The kinds of problem the plant adds to update `upto`: `change` edits copies of `copied`."""
        prefix = list(ups[: upto + 1])
        for k in copied:
            prefix[k] = copy.deepcopy(prefix[k])
        change(prefix)
        uid = ups[upto]["update_id"]
        return kinds_in(Replay().run(prefix), uid) - kinds_in(base, uid)

    def transfer(u: dict[str, Any]) -> dict[str, Any]:
        return next(e for e in u["events_by_id"].values() if e.get("choice") == "AmuletRules_Transfer"
                    and get(e, "exercise_result", "senderChangeAmulet"))  # fmt: skip

    def has(find: Any, u: dict[str, Any]) -> bool:
        try:
            return find(u) is not None
        except StopIteration:
            return False

    def plus_tiny(record: dict[str, Any], key: str) -> None:
        record[key] = str(num(record[key]) + Decimal("1e-10"))

    i = next(k for k, u in enumerate(ups) if has(transfer, u))
    assert {"conservation", "sender-change"} <= planted(
        i, lambda p: plus_tiny(transfer(p[i])["exercise_result"]["summary"], "senderChangeAmount"), i
    )

    def change_amulet(u: dict[str, Any]) -> dict[str, Any]:
        cid = transfer(u)["exercise_result"]["senderChangeAmulet"]
        return next(e for e in u["events_by_id"].values() if e.get("contract_id") == cid and "create_arguments" in e)

    assert {"sender-change", "supply-delta"} <= planted(
        i, lambda p: plus_tiny(change_amulet(p[i])["create_arguments"]["amount"], "initialAmount"), i
    )

    def eleven_places(p: list[Any]) -> None:
        change_amulet(p[i])["create_arguments"]["amount"]["initialAmount"] = "1.00000000001"

    assert "shape" in planted(i, eleven_places, i)  # not a Daml Numeric 10

    def validator_coupon(u: dict[str, Any]) -> dict[str, Any]:
        kids = [u["events_by_id"][c] for c in transfer(u)["child_event_ids"]]
        return next(k for k in kids if k["template_id"].endswith(":ValidatorRewardCoupon"))

    k = next(k for k, u in enumerate(ups) if has(validator_coupon, u))
    assert "reward-coupon" in planted(k, lambda p: plus_tiny(validator_coupon(p[k])["create_arguments"], "amount"), k)

    # a reward coupon consumed by a transfer, re-dated to a round that never issues
    def coupon_input(u: dict[str, Any]) -> str | None:
        for e in u["events_by_id"].values():
            if e.get("choice") == "AmuletRules_Transfer":
                for inp in get(e, "choice_argument", "transfer", "inputs"):
                    if inp["tag"] in ("InputAppRewardCoupon", "InputValidatorRewardCoupon"):
                        return str(inp["value"])
        return None

    j = next(k for k, u in enumerate(ups) if coupon_input(u) is not None)
    cid = coupon_input(ups[j])
    made_in = next(k for k, u in enumerate(ups) if any(e.get("contract_id") == cid and "create_arguments" in e
                                                       for e in u["events_by_id"].values()))  # fmt: skip

    def redate(p: list[Any]) -> None:
        made = next(
            e for e in p[made_in]["events_by_id"].values() if e.get("contract_id") == cid and "create_arguments" in e
        )
        made["create_arguments"]["round"]["number"] = "999999"

    assert "coupon-round" in planted(j, redate, made_in)
