"""The transfer-fact rules on served updates, without a database: both encodings read alike, the
outermost summary counts once, an unlabelled summary is flagged, half-even products."""

from __future__ import annotations

from collections import defaultdict
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
                      economy=EconomyConfig(per_round=24, upgrades=(10, 15, 20)))  # fmt: skip


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


# ----- the shapes of Splice's Daml (splice-amulet AmuletRules/Amulet/Round/ValidatorLicense.daml,
# splice-dso-governance DsoRules/DsoBootstrap.daml of the version each round runs) ---------------------


def field(v: Any, *path: str) -> Any:
    """The value at a path of record labels (optionals' values looked through), None if absent."""
    for label in path:
        while isinstance(v, dict) and "optional" in v:
            v = v["optional"].get("value")
        if not isinstance(v, dict) or "record" not in v:
            return None
        v = next((f["value"] for f in v["record"]["fields"] if f.get("label") == label), None)
    return v


def labels(v: Any) -> list[str]:
    return [f["label"] for f in v["record"]["fields"]]


def updates(econ: EconomyLedger) -> list[dict[str, Any]]:
    return [econ.update(0, 0, i) for i in range(700)]


def below(u: dict[str, Any], eid: str) -> list[dict[str, Any]]:
    return [u["events_by_id"][k] for k in u["events_by_id"][eid]["child_event_ids"]]


def exercises(u: dict[str, Any], choice: str) -> list[dict[str, Any]]:
    return [e for e in u["events_by_id"].values() if e.get("choice") == choice]


def test_genesis_is_dso_bootstrap_as_on_mainnet(econ: EconomyLedger) -> None:
    """A DsoBootstrap create and its consuming DsoBootstrap_Bootstrap as the two roots, the enum
    result served as a bare string in compact JSON, the rounds below AmuletRules_Bootstrap_Rounds."""
    u = econ.update(0, 0, 0)
    roots = [u["events_by_id"][k] for k in u["root_event_ids"]]
    assert [(r["event_type"], r["template_id"].split(":", 1)[1], r.get("choice")) for r in roots] == [
        ("created_event", "Splice.DsoBootstrap:DsoBootstrap", None),
        ("exercised_event", "Splice.DsoBootstrap:DsoBootstrap", "DsoBootstrap_Bootstrap")]  # fmt: skip
    boot = roots[1]
    assert boot["consuming"] and boot["contract_id"] == roots[0]["contract_id"]
    assert event_to_compact(boot)["exercise_result"] == "DsoBootstrap_BootstrapResult"
    kids = below(u, boot["event_id"])
    names = [k["template_id"].split(":", 1)[1] + (":" + k["choice"] if k.get("choice") else "") for k in kids]
    assert names[:4] == ["Splice.AmuletRules:AmuletRules", "Splice.ExternalPartyAmuletRules:ExternalPartyAmuletRules",
                         "Splice.AmuletRules:AmuletRules:AmuletRules_Bootstrap_Rounds", "Splice.DsoRules:DsoRules"]  # fmt: skip
    rounds = below(u, kids[2]["event_id"])
    assert [field(r["create_arguments"], "round", "number")["int64"] for r in rounds] == ["1000", "1001", "1002"]


def test_every_package_is_a_published_one_and_validator_licenses_are_splice_amulet(econ: EconomyLedger) -> None:
    from scanfill.economy.packages import AMULET_PACKAGES, DSO_PACKAGES

    known = set(AMULET_PACKAGES) | set(DSO_PACKAGES.values())
    licensed = 0
    for u in updates(econ):
        for e in u["events_by_id"].values():
            pkg, name = e["template_id"].split(":", 1)
            assert pkg in known, e["template_id"]
            assert e["package_name"] == ("splice-dso-governance" if pkg in DSO_PACKAGES.values() else "splice-amulet")
            if name.startswith("Splice.ValidatorLicense:"):
                assert pkg in AMULET_PACKAGES
                licensed += 1
    assert licensed > 20


def test_every_exercised_contract_was_created_before(econ: EconomyLedger) -> None:
    """AmuletRules, DsoRules, licenses, preapprovals...: what a choice is exercised on exists."""
    made: set[str] = set()
    gone: set[str] = set()
    for u in updates(econ):
        for k in sorted(u["events_by_id"], key=lambda k: int(k.rsplit(":", 1)[1])):
            e = u["events_by_id"][k]
            if e["event_type"] == "created_event":
                made.add(e["contract_id"])
                continue
            assert e["contract_id"] in made and e["contract_id"] not in gone, (u["update_id"], e["choice"])
            if e["consuming"]:
                gone.add(e["contract_id"])


def test_transfer_outputs_results_and_arguments_carry_their_daml_fields(econ: EconomyLedger) -> None:
    seen: dict[str, int] = defaultdict(int)
    for u in updates(econ):
        for e in exercises(u, "AmuletRules_Transfer"):
            version = version_of(e["template_id"])
            for o in field(e["choice_argument"], "transfer", "outputs")["list"]["elements"]:
                want = ["receiver", "receiverFeeRatio", "amount", "lock"] + (["meta"] if version == "0.1.21" else [])
                assert labels(o) == want, version
                seen[version or ""] += 1
            assert labels(field(e["choice_argument"], "context")) == [
                "openMiningRound", "issuingMiningRounds", "validatorRights", "featuredAppRight"]  # fmt: skip
        for e in exercises(u, "DsoRules_ReceiveSvRewardCoupon"):
            made = [k["contract_id"] for k in below(u, e["event_id"]) if k["template_id"].endswith(":SvRewardCoupon")]
            assert [c["contractId"] for c in field(e["exercise_result"], "svRewardCoupons")["list"]["elements"]] == made
            seen["sv"] += 1
        for e in exercises(u, "ValidatorLicense_RecordValidatorLivenessActivity"):
            made = [k["contract_id"] for k in below(u, e["event_id"]) if k["event_type"] == "created_event"]
            assert e["consuming"] and [field(e["exercise_result"], "licenseCid")["contractId"],
                                       field(e["exercise_result"], "couponCid")["contractId"]] == made  # fmt: skip
            seen["liveness"] += 1
        for choice, path in (("LockedAmulet_Unlock", ("amuletSum", "amulet")), ("LockedAmulet_UnlockV2", ("amuletCid",))):
            for e in exercises(u, choice):  # V2 from 0.1.17, which deprecates the first
                assert (choice == "LockedAmulet_UnlockV2") == (version_of(e["template_id"]) in ("0.1.17", "0.1.21"))
                (amulet,) = [k for k in below(u, e["event_id"]) if k["template_id"].endswith(":Amulet")]
                assert field(e["exercise_result"], *path)["contractId"] == amulet["contract_id"]
                seen[choice] += 1
        for e in exercises(u, "DsoRules_AdvanceOpenMiningRounds"):
            assert labels(e["choice_argument"]) == ["amuletRulesCid", "roundToArchiveCid", "middleRoundCid",
                                                    "latestRoundCid", "amuletPriceVoteCids", "sv"]  # fmt: skip
            (inner,) = below(u, e["event_id"])
            archived = below(u, inner["event_id"])[0]
            assert inner["choice"] == "AmuletRules_AdvanceOpenMiningRounds" and archived["consuming"]
            assert field(e["choice_argument"], "roundToArchiveCid")["contractId"] == archived["contract_id"]
            seen["advance"] += 1
        for choice in ("DsoRules_Amulet_Expire", "DsoRules_Amulet_ExpireV2"):
            for e in exercises(u, choice):
                (inner,) = below(u, e["event_id"])
                assert (inner["choice"] == "Amulet_ExpireV2") == (version_of(inner["template_id"]) in ("0.1.17", "0.1.21"))
                assert inner["choice"] == choice.removeprefix("DsoRules_") and inner["consuming"]
                assert field(e["choice_argument"], "cid")["contractId"] == inner["contract_id"]
                seen[choice] += 1
        for e in exercises(u, "DsoRules_ExecuteConfirmedAction"):
            (inner,) = below(u, e["event_id"])
            assert inner["template_id"].endswith(":Splice.AmuletRules:AmuletRules")
            assert inner["choice"] in ("AmuletRules_MiningRound_StartIssuing", "AmuletRules_MiningRound_Archive")
            seen["confirmed"] += 1
    assert all(seen[k] > 3 for k in ("0.1.13", "0.1.14", "0.1.17", "0.1.21", "sv", "liveness", "advance", "confirmed",
                                     "LockedAmulet_Unlock", "DsoRules_Amulet_Expire")), dict(seen)  # fmt: skip
    assert seen["LockedAmulet_UnlockV2"] and seen["DsoRules_Amulet_ExpireV2"], dict(seen)


def test_traffic_purchases_pay_their_output_fees_inside_amulet_paid(econ: EconomyLedger) -> None:
    """Splice's AmuletRules_BuyMemberTraffic: the split output plus its output fees is amuletPaid,
    so inputs - change = amuletPaid + holding fees + sender change fee (splice-docs block_08);
    the self-transfer runs inline, with no AmuletRules_Transfer below."""

    def units(v: Any) -> int:
        return int(Decimal(v["numeric"]) * 10**10)

    fee_era = 0
    for u in updates(econ):
        for e in exercises(u, "AmuletRules_BuyMemberTraffic"):
            kids = below(u, e["event_id"])
            assert not [k for k in kids if k.get("choice") == "AmuletRules_Transfer"]
            s = field(e["exercise_result"], "summary")
            fees = sum(units(f) for f in s["record"]["fields"][6]["value"]["list"]["elements"])
            burnt = [k for k in kids if k.get("choice") == "Archive" and k["template_id"].endswith(":Amulet")
                     and k["contract_id"] in {c["contract_id"] for c in kids if c["event_type"] == "created_event"}]  # fmt: skip
            (split,) = [c for c in kids if c["event_type"] == "created_event" and c["contract_id"] == burnt[0]["contract_id"]]
            paid = units(field(e["exercise_result"], "amuletPaid"))
            assert units(field(split["create_arguments"], "amount", "initialAmount")) + fees == paid
            assert units(field(s, "inputAmuletAmount")) - units(field(s, "senderChangeAmount")) == (
                paid + units(field(s, "holdingFees")) + units(field(s, "senderChangeFee")))  # fmt: skip
            fee_era += fees > 0
    assert fee_era > 3


def test_balance_changes_are_the_holdings_moved_as_of_round_zero(econ: EconomyLedger) -> None:
    """summarizeTransfer's balanceChanges (and splitAndBurn's adjustment): Σ over parties of the
    change as of round zero = the amulets created less those archived below the choice, each valued
    initialAmount + createdAt x rate; the rates likewise."""

    def units(v: Any) -> int:
        return int(Decimal(v["numeric"]) * 10**10)

    def as_of_zero(args: Any) -> tuple[int, int]:
        a = field(args, "amulet") or args
        rate = units(field(a, "amount", "ratePerRound", "rate"))
        return units(field(a, "amount", "initialAmount")) + int(field(a, "amount", "createdAt", "number")["int64"]) * rate, rate

    created: dict[str, tuple[int, int]] = {}
    n = 0
    for u in updates(econ):
        for e in u["events_by_id"].values():
            if e["event_type"] == "created_event" and e["template_id"].endswith((":Amulet", ":LockedAmulet")):
                created[e["contract_id"]] = as_of_zero(e["create_arguments"])
        for choice in ("AmuletRules_Transfer", "AmuletRules_BuyMemberTraffic", "AmuletRules_CreateTransferPreapproval"):
            for e in exercises(u, choice):
                s = field(e["exercise_result"], "summary") or field(e["exercise_result"], "transferResult", "summary")
                entries = field(s, "balanceChanges")["genMap"]["entries"]
                assert [x["key"]["party"] for x in entries] == sorted(x["key"]["party"] for x in entries)
                got = [sum(units(field(x["value"], k)) for x in entries)
                       for k in ("changeToInitialAmountAsOfRoundZero", "changeToHoldingFeesRate")]
                kids = below(u, e["event_id"])
                made = [created[k["contract_id"]] for k in kids if k["contract_id"] in created and k["event_type"] == "created_event"]
                gone = [created[k["contract_id"]] for k in kids if k["contract_id"] in created and k.get("consuming")]
                assert got == [sum(x[0] for x in made) - sum(x[0] for x in gone),
                               sum(x[1] for x in made) - sum(x[1] for x in gone)], (u["update_id"], choice)
                n += 1
    assert n > 200


def test_token_standard_v2_history_from_0_1_21(econ: EconomyLedger) -> None:
    """From splice-amulet 0.1.21 a transfer, a mint, a split-and-burn and an unlock log their holdings
    changes (EventLog_HoldingsChange through the EventLog interface, one per account): together they
    name exactly the amulets consumed and created below the choice; never before 0.1.21."""
    seen: dict[str, int] = defaultdict(int)
    for u in updates(econ):
        for e in u["events_by_id"].values():
            choice = e.get("choice")
            if choice not in ("AmuletRules_Transfer", "AmuletRules_Mint", "AmuletRules_BuyMemberTraffic",
                              "AmuletRules_CreateTransferPreapproval", "LockedAmulet_UnlockV2"):  # fmt: skip
                continue
            kids = below(u, e["event_id"])
            logs = [k for k in kids if k.get("choice") == "EventLog_HoldingsChange"]
            if version_of(e["template_id"]) != "0.1.21":
                assert not logs
                continue
            assert logs and all(k["interface_id"].endswith(":Splice.Api.Token.TransferEventsV2:EventLog") for k in logs)
            named_in = [c["contractId"] for k in logs for c in field(k["choice_argument"], "inputHoldingCids")["list"]["elements"]]
            named_out = [c["contractId"] for k in logs for c in field(k["choice_argument"], "outputHoldingCids")["list"]["elements"]]
            made = [k["contract_id"] for k in kids if k["event_type"] == "created_event"
                    and k["template_id"].endswith((":Amulet", ":LockedAmulet"))]  # fmt: skip
            gone = [k["contract_id"] for k in kids if k.get("consuming") and k["template_id"].endswith(":Amulet")]
            if choice == "LockedAmulet_UnlockV2":
                gone = [e["contract_id"]]
            assert sorted(named_in) == sorted(gone) and sorted(named_out) == sorted(made), (u["update_id"], choice)
            seen[choice] += 1
    assert all(seen[c] > 0 for c in ("AmuletRules_Transfer", "AmuletRules_BuyMemberTraffic", "LockedAmulet_UnlockV2")), seen
