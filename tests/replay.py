"""An independent replay of a Scan's update history with Splice's rules, apart from scanfill.

scanfill's own checks read the history through its own economy and state code, so a wrong picture
of Splice would agree with itself there. This module imports none of it: it takes the updates a
scan serves (`/v2/updates`, either encoding), replays them transaction by transaction and names
every place where they break a rule of Splice's Daml or of Splice's documentation:

* the ACS diff: a created contract id is new, a consumed or exercised contract is active, and an
  exercise names the template its contract was created with;
* each TransferSummary (`AmuletRules_Transfer`, `AmuletRules_BuyMemberTraffic`, the preapproval
  payments): its input fields recomputed from the consumed contracts (coupon amount x the rate of
  the IssuingMiningRound of the coupon's own round, each product rounded half-even to Numeric 10;
  holding fees charged on inputs up to splice-amulet 0.1.13), its output fees from the open round's
  fee schedule (fee era) or zero (0.1.17 on), and conservation, exactly: what goes in (amulets less
  holding fees, plus rewards) = outputs + output fees + sender change fee + sender change
  (`summarizeTransfer`, splice-amulet `AmuletRules.daml` at splice f4db17bd (fee era) and f819bd6f);
* burn per choice as Splice's docs define it (docs/src/app_dev/scan_api/scan_bulk_data_api.rst,
  "Computing Total Burnt Canton Coin"): a transfer burns its output fees, holding fees and sender
  change fee; `AmuletRules_BuyMemberTraffic` burns `amuletPaid` + holding fees + sender change fee
  (its output fee being inside `amuletPaid`); the preapproval choices burn `amuletPaid` on top of
  the transfer's fees; a CNS payment also burns the amulet its collection archives;
* every transaction's change of total supply (initialAmount of active Amulet and LockedAmulet)
  equals what it minted less what it burnt, expired as dust or tapped;
* rounds: a round's phases follow each other (Open -> Summarizing -> Issuing -> Closed, each
  created as the previous one is archived); coupons are created for an open round, consumed by a
  transfer only while their round is issuing, and expired only once it is closed;
* the ValidatorRewardCoupon each choice creates (a fee-era transfer's output fees, a paid choice's
  payment), the UnclaimedReward of a round's expired coupons (each kind's sum x the closed round's
  rate), and dust expired only once the amulet is gone for every open round;
* the results and arguments readers such as Splice's scan_txlog.py rely on: a choice's result names
  the contracts created below it (`svRewardCoupons`, `couponCid`, `amuletSum.amulet`,
  `issuingRoundCid`), its argument the contracts consumed below it (`cid`, `roundToArchiveCid`),
  a DsoRules choice Splice implements as one exercise has that exercise as its only child, and a
  confirmed AmuletRules action exercises AmuletRules;
* every package is a published Splice package (daml/dars.lock) declaring the event's template, and
  every choice is one Splice's Daml declares.

Sources are Splice's Daml (splice-amulet AmuletRules/Amulet/Round/Fees/ValidatorLicense,
splice-dso-governance DsoRules) and docs as mirrored at /work/.mirror (commit f819bd6f, fee era
f4db17bd); the rules here are written from them, not copied.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any

Json = Any
TEN = Decimal("1e-10")
_CTX = Context(prec=80)  # wide enough for any product of two Numeric 38,10 values before rounding
ZERO = Decimal(0)


# Splice's published packages (id -> [name, version], from daml/dars.lock), the templates each package's Daml
# declares and every choice name, at Splice's HEAD and four release commits (tests/fixtures/replay/PROVENANCE.txt).
SPLICE = json.loads((Path(__file__).parent / "fixtures" / "replay" / "splice-daml.json").read_text())
_TEMPLATES = {name: set(ts) for name, ts in SPLICE["templates"].items()}
_CHOICES = set(SPLICE["choices"])
# splice-amulet's minor version by package id: up to 0.1.13 transfers charge holding fees on their inputs,
# 0.1.14 (CIP-0078) stopped that, 0.1.17 (CIP-0107) forbids fees.
_AMULET_VERSIONS = {pid: int(v.rsplit(".", 1)[1]) for pid, (n, v) in SPLICE["packages"].items() if n == "splice-amulet"}

AMULET, LOCKED = "Splice.Amulet:Amulet", "Splice.Amulet:LockedAmulet"
OPEN, SUMMARIZING = "Splice.Round:OpenMiningRound", "Splice.Round:SummarizingMiningRound"
ISSUING, CLOSED = "Splice.Round:IssuingMiningRound", "Splice.Round:ClosedMiningRound"
APP, VALIDATOR, SV = (
    "Splice.Amulet:AppRewardCoupon",
    "Splice.Amulet:ValidatorRewardCoupon",
    "Splice.Amulet:SvRewardCoupon",
)
FAUCET = "Splice.ValidatorLicense:ValidatorFaucetCoupon"
LIVENESS = "Splice.ValidatorLicense:ValidatorLivenessActivityRecord"
ROUND_COUPONS = (APP, VALIDATOR, SV, FAUCET, LIVENESS)
MALFORMED = (KeyError, TypeError, ValueError, ArithmeticError, AttributeError, IndexError)  # a value of another shape
PHASE_BEFORE = {SUMMARIZING: OPEN, ISSUING: SUMMARIZING, CLOSED: ISSUING}
EXPIRE_CHOICES = ("Amulet_Expire", "Amulet_ExpireV2", "LockedAmulet_ExpireAmulet", "LockedAmulet_ExpireAmuletV2")
# Choices whose result carries a TransferSummary, and where it sits in the result.
SUMMARY_CHOICES = {
    "AmuletRules_Transfer": (),
    "AmuletRules_BuyMemberTraffic": (),
    "AmuletRules_CreateTransferPreapproval": ("transferResult",),
    "AmuletRules_CreateExternalPartySetupProposal": ("transferResult",),
    "TransferPreapproval_Renew": ("transferResult",),
}
# DsoRules choices that Splice implements as one exercise (DsoRules.daml: `exercise amuletRulesCid ...`,
# `exercise cid choiceArg`): that exercise is their only child.
DELEGATES = {
    "DsoRules_AdvanceOpenMiningRounds": "AmuletRules_AdvanceOpenMiningRounds",
    "DsoRules_MiningRound_Close": "AmuletRules_MiningRound_Close",
    "DsoRules_MergeUnclaimedRewards": "AmuletRules_MergeUnclaimedRewards",
    "DsoRules_AmuletRules_ConvertFeaturedAppActivityMarkers": "AmuletRules_ConvertFeaturedAppActivityMarkers",
    "DsoRules_Amulet_Expire": "Amulet_Expire",
    "DsoRules_Amulet_ExpireV2": "Amulet_ExpireV2",
    "DsoRules_LockedAmulet_ExpireAmulet": "LockedAmulet_ExpireAmulet",
    "DsoRules_LockedAmulet_ExpireAmuletV2": "LockedAmulet_ExpireAmuletV2",
}


def num(v: Any) -> Decimal:
    """A Daml Numeric 10 as served (a string, at most 10 decimals, 38 digits); anything else raises."""
    if not isinstance(v, str):
        raise ValueError(f"expected a Numeric string, got {v!r}")
    try:
        d = Decimal(v)
    except ArithmeticError:
        raise ValueError(f"{v!r} is not a number") from None
    if not d.is_finite() or d != d.quantize(TEN, context=_CTX) or abs(d) >= Decimal("1e28"):
        raise ValueError(f"{v!r} is not a Daml Numeric 10")
    return d


def half_even(x: Decimal) -> Decimal:
    return x.quantize(TEN, rounding=ROUND_HALF_EVEN, context=_CTX)


def mul(a: Decimal, b: Decimal) -> Decimal:
    """Daml's Numeric 10 product: exact, then rounded half-even to 10 places."""
    return half_even(_CTX.multiply(a, b))


def div(a: Decimal, b: Decimal) -> Decimal:
    return half_even(_CTX.divide(a, b))


# ----- values ---------------------------------------------------------------------------------


def compact(v: Json) -> Json:
    """A protobuf_json Daml value in the compact_json shape (records by label, variants as
    {tag, value}, optionals as the value or None, timestamps as RFC 3339), so one set of rules
    reads both encodings."""
    if not isinstance(v, dict) or len(v) != 1:
        raise ValueError(f"not a protobuf_json value: {str(v)[:120]}")
    ((k, x),) = v.items()
    if k == "record":
        return {f.get("label") or str(i): compact(f["value"]) for i, f in enumerate(x.get("fields", []))}
    if k == "variant":
        return {"tag": x["constructor"], "value": compact(x["value"]) if "value" in x else {}}
    if k == "enum":
        return x["constructor"]
    if k == "list":
        return [compact(e) for e in x.get("elements", [])]
    if k == "optional":
        return compact(x["value"]) if "value" in x else None
    if k in ("genMap", "textMap"):
        return [[compact(e["key"]) if k == "genMap" else e["key"], compact(e["value"])] for e in x.get("entries", [])]
    if k == "timestamp":
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(x))
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if k == "unit":
        return {}
    return x  # party, contractId, text, numeric, int64, bool, date


def compact_update(tx: Json) -> Json:
    """A /v2/updates protobuf_json transaction with its Daml values in the compact shape."""
    events = {}
    for eid, e in tx["events_by_id"].items():
        e = dict(e)
        for key in ("create_arguments", "choice_argument", "exercise_result"):
            if key in e and e[key] is not None:
                e[key] = compact(e[key])
        events[eid] = e
    return {**tx, "events_by_id": events}


def get(v: Json, *path: str) -> Json:
    """v[path[0]][path[1]]...; KeyError names the missing field."""
    for p in path:
        if not isinstance(v, dict) or p not in v:
            raise KeyError(p)
        v = v[p]
    return v


def rnd(v: Json) -> int:
    return int(get(v, "number"))


def qname(template_id: str) -> str:
    return template_id.split(":", 1)[1]


# ----- the replay -----------------------------------------------------------------------------


@dataclass
class Problem:
    kind: str  # a short stable name, to count by
    update_id: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.update_id}: {self.detail}"


@dataclass
class Contract:
    template: str  # Module:Entity
    package: str
    args: Json
    update_id: str


@dataclass
class Point:
    """Cumulative figures after one transaction."""

    migration_id: int
    record_time: str
    minted: Decimal
    burnt: Decimal
    dust: Decimal
    tapped: Decimal
    supply: Decimal


def amulet_amount(c: Contract) -> Json:
    return get(c.args, "amulet", "amount") if c.template == LOCKED else get(c.args, "amount")


def amulet_owner(c: Contract) -> str:
    return str(get(c.args, "amulet", "owner") if c.template == LOCKED else get(c.args, "owner"))


@dataclass
class Replay:
    """Splice's rules over a history, transaction by transaction; `problems` lists every breach."""

    acs: dict[str, Contract] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    rounds_seen: set[int] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    minted: Decimal = ZERO
    burnt: Decimal = ZERO
    dust: Decimal = ZERO
    tapped: Decimal = ZERO
    supply: Decimal = ZERO
    timeline: list[Point] = field(default_factory=list)
    transactions: int = 0
    summaries: int = 0
    versions: set[int] = field(default_factory=set)  # splice-amulet minor versions the summaries ran under
    synchronizer: str | None = None

    # -- entry points --

    def run(self, updates: Iterable[Json], encoding: str = "compact_json") -> Replay:
        for tx in updates:
            self.apply(compact_update(tx) if encoding == "protobuf_json" else tx)
        return self

    def apply(self, tx: Json) -> None:
        """One transaction (compact values). Reassignments carry no tree and are skipped."""
        if "events_by_id" not in tx:
            return
        self.transactions += 1
        sync = tx.get("synchronizer_id")
        if self.synchronizer is None:
            self.synchronizer = sync
        elif sync != self.synchronizer:  # Amulet lives on the one global synchronizer, across migrations
            self.problems.append(
                Problem("synchronizer", str(tx["update_id"]), f"on {sync}, before on {self.synchronizer}")
            )
        try:
            _Tx(self, tx).replay()
        except MALFORMED as x:  # the transaction's own envelope (ids, tree) is not Scan's
            self.problems.append(Problem("shape", str(tx.get("update_id")), f"transaction not readable: {x!r}"))
        self.timeline.append(Point(int(tx.get("migration_id", 0)), str(tx["record_time"]), self.minted, self.burnt,
                                   self.dust, self.tapped, self.supply))  # fmt: skip

    # -- queries --

    def active(self, template: str) -> dict[str, Contract]:
        return {cid: c for cid, c in self.acs.items() if c.template == template}

    def round_contract(self, template: str, number: int) -> Contract | None:
        for c in self.acs.values():
            if c.template == template and rnd(get(c.args, "round")) == number:
                return c
        return None

    def holdings(self) -> dict[str, Decimal]:
        """Per owner: initialAmount of active Amulet + LockedAmulet (holding fees not deducted)."""
        out: dict[str, Decimal] = {}
        for c in self.acs.values():
            if c.template in (AMULET, LOCKED):
                owner = amulet_owner(c)
                out[owner] = out.get(owner, ZERO) + num(get(amulet_amount(c), "initialAmount"))
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out


class _Tx:
    """One transaction's replay: the tree walked in execution order (pre-order)."""

    def __init__(self, replay: Replay, tx: Json) -> None:
        self.r, self.tx = replay, tx
        self.uid = str(tx["update_id"])
        self.events: dict[str, Json] = tx["events_by_id"]
        self.created: dict[str, Json] = {e["contract_id"]: e for e in self.events.values()
                                         if e.get("event_type") == "created_event"}  # fmt: skip
        self.consumed_here: list[tuple[str, int]] = []  # (template, round) of rounds archived so far
        self.transfer_inputs: set[str] = set()  # contract ids named as inputs by a summary above
        self.tapped: set[str] = set()  # amulets a tap or mint created
        self.expected_delta = ZERO  # what the supply should move by
        self.supply_before = replay.supply

    def problem(self, kind: str, detail: str) -> None:
        self.r.problems.append(Problem(kind, self.uid, detail))

    def replay(self) -> None:
        for eid in self.tx["root_event_ids"]:
            self.visit(eid, in_summary=False)
        delta = self.r.supply - self.supply_before
        if delta != self.expected_delta:
            self.problem("supply-delta", f"total supply moved by {delta}, but minted - burnt - dust + tapped "
                                         f"of this transaction is {self.expected_delta}")  # fmt: skip

    def descendants(self, eid: str) -> Iterator[Json]:
        for c in self.events[eid].get("child_event_ids") or []:
            yield self.events[c]
            yield from self.descendants(c)

    def visit(self, eid: str, in_summary: bool) -> None:
        e = self.events.get(eid)
        if e is None:
            self.problem("tree", f"event {eid} is named but not served")
            return
        self.known(e)
        if e.get("event_type") == "created_event":
            self.create(e)
            return
        choice = e["choice"]
        nested = in_summary
        if choice in SUMMARY_CHOICES and not in_summary:
            self.safely(self.summary, e)
            nested = True
        self.safely(self.choice_rules, e)
        self.exercise(e)
        for c in e.get("child_event_ids") or []:
            self.visit(c, nested)

    def known(self, e: Json) -> None:
        """The event's package is a published Splice package of the name it gives, which declares
        the template; the choice is one Splice's Daml declares."""
        pid, name = e["template_id"].split(":", 1)
        pkg = SPLICE["packages"].get(pid)
        if pkg is None:
            self.problem("package", f"{name} in package {pid[:16]}, which no Splice release has (daml/dars.lock)")
        else:
            if e.get("package_name") not in (None, pkg[0]):
                self.problem("package", f"{name}: package_name {e['package_name']}, {pid[:16]} is {pkg[0]} {pkg[1]}")
            if name not in _TEMPLATES.get(pkg[0], ()):
                self.problem("package", f"{name} is no template of {pkg[0]}")
        if e.get("event_type") == "exercised_event" and e["choice"] not in _CHOICES:
            self.problem("choice", f"{name} {e['choice']}: no such choice in Splice's Daml")
        iid = e.get("interface_id")
        if iid and iid.split(":", 1)[0] not in SPLICE["packages"]:
            self.problem(
                "package", f"interface {iid.split(':', 1)[1]} in package {iid[:16]}, which no Splice release has"
            )

    def safely(self, check: Any, e: Json) -> None:
        try:
            check(e)
        except MALFORMED as x:
            what = f"missing field {x}" if isinstance(x, KeyError) else str(x)
            self.problem("shape", f"{qname(e['template_id'])} {e.get('choice', 'create')} ({e['event_id']}): {what}")

    # -- the ACS diff --

    def create(self, e: Json) -> None:
        cid, tpl = e["contract_id"], qname(e["template_id"])
        if cid in self.r.seen:
            self.problem("acs-create", f"{tpl} {cid[:16]} was created before")
        c = Contract(tpl, e["template_id"].split(":", 1)[0], e["create_arguments"], self.uid)
        self.r.seen.add(cid)
        self.r.acs[cid] = c
        try:
            self.created_rules(cid, c)
        except MALFORMED as x:
            self.problem(
                "shape", f"{tpl} create ({e['event_id']}): {'missing field ' if isinstance(x, KeyError) else ''}{x}"
            )

    def exercise(self, e: Json) -> None:
        cid, tpl = e["contract_id"], qname(e["template_id"])
        c = self.r.acs.get(cid)
        if c is None:
            state = "already archived" if cid in self.r.seen else "never created"
            self.problem("acs-exercise", f"{tpl} {e['choice']} on {cid[:16]}, {state}")
            return
        if c.template != tpl:
            self.problem("acs-template", f"{e['choice']} on {cid[:16]} as {tpl}, created as {c.template}")
        if e.get("consuming"):
            del self.r.acs[cid]
            try:
                self.consume(c, e["choice"], cid)
            except MALFORMED as x:
                self.problem("shape", f"{tpl} {e['choice']} ({e['event_id']}) of a contract whose payload lacks {x}")

    def consume(self, c: Contract, choice: str, cid: str) -> None:
        if c.template in (AMULET, LOCKED):
            amount = num(get(amulet_amount(c), "initialAmount"))
            self.r.supply -= amount
            if choice in EXPIRE_CHOICES:
                self.r.dust += amount
                self.expected_delta -= amount
        elif c.template in (OPEN, SUMMARIZING, ISSUING, CLOSED):
            self.consumed_here.append((c.template, rnd(get(c.args, "round"))))
        elif c.template in ROUND_COUPONS:
            number = rnd(get(c.args, "round"))
            if choice.endswith("_DsoExpire"):
                if self.r.round_contract(CLOSED, number) is None:
                    self.problem("coupon-expiry", f"{c.template} of round {number} expired before that round closed")
            elif cid not in self.transfer_inputs:
                self.problem("coupon-consumed", f"{c.template} {cid[:16]} consumed by {choice}, neither a transfer "
                                                "input nor an expiry")  # fmt: skip

    def created_rules(self, cid: str, c: Contract) -> None:
        if c.template in (AMULET, LOCKED):
            self.r.supply += num(get(amulet_amount(c), "initialAmount"))
        elif c.template in ROUND_COUPONS:
            number = rnd(get(c.args, "round"))
            if self.r.round_contract(OPEN, number) is None:
                self.problem("coupon-round", f"{c.template} created for round {number}, which is not open")
        elif c.template in (OPEN, SUMMARIZING, ISSUING, CLOSED):
            number = rnd(get(c.args, "round"))
            before = PHASE_BEFORE.get(c.template)
            if before is None:
                if number in self.r.rounds_seen:
                    self.problem("round-phase", f"OpenMiningRound {number} created again")
                self.r.rounds_seen.add(number)
            elif (before, number) not in self.consumed_here:
                self.problem("round-phase", f"{c.template} {number} created without archiving {before} {number} "
                                            "in the same transaction")  # fmt: skip

    # -- choices whose results and arguments name contracts --

    def below(self, e: Json, template: str | None = None, created: bool = True) -> list[str]:
        out = []
        for d in self.descendants(e["event_id"]):
            if (
                created
                and d.get("event_type") == "created_event"
                and (template is None or qname(d["template_id"]) == template)
            ):
                out.append(d["contract_id"])
            if not created and d.get("event_type") == "exercised_event" and d.get("consuming") and (
                    template is None or qname(d["template_id"]) == template):  # fmt: skip
                out.append(d["contract_id"])
        return out

    def names(self, e: Json, where: str, got: Any, want: list[str]) -> None:
        got_list = got if isinstance(got, list) else [got]
        if sorted(got_list) != sorted(want):
            self.problem("result-names", f"{e['choice']} {where} names {[str(g)[:16] for g in got_list]}, the tree "
                                         f"has {[w[:16] for w in want]}")  # fmt: skip

    def choice_rules(self, e: Json) -> None:
        choice, arg, res = e["choice"], e.get("choice_argument"), e.get("exercise_result")
        if choice in DELEGATES:
            kids = [self.events.get(c) or {} for c in e.get("child_event_ids") or []]
            if [k.get("choice") for k in kids] != [DELEGATES[choice]]:
                self.problem("delegation", f"{choice} has {[k.get('choice') or qname(k.get('template_id', ':?')) for k in kids][:4]} "
                                           f"below it, Splice exercises {DELEGATES[choice]} alone")  # fmt: skip
        if choice == "DsoRules_ReceiveSvRewardCoupon":
            self.names(e, "result.svRewardCoupons", get(res, "svRewardCoupons"), self.below(e, SV))
        elif choice in ("ValidatorLicense_RecordValidatorLivenessActivity", "ValidatorLicense_ReceiveFaucetCoupon"):
            tpl = LIVENESS if choice.endswith("LivenessActivity") else FAUCET
            self.names(e, "result.couponCid", get(res, "couponCid"), self.below(e, tpl))
        elif choice in ("LockedAmulet_Unlock", "LockedAmulet_OwnerExpireLock"):
            self.names(e, "result.amuletSum.amulet", get(res, "amuletSum", "amulet"), self.below(e, AMULET))
            locked = self.r.acs.get(e["contract_id"])
            made = self.created.get(get(res, "amuletSum", "amulet"))
            if locked is not None and made is not None and get(locked.args, "amulet") != made["create_arguments"]:
                self.problem("unlock", f"{choice} created an amulet other than the one locked")
        elif choice in ("DsoRules_Amulet_Expire", "DsoRules_Amulet_ExpireV2"):
            self.names(e, "argument.cid", get(arg, "cid"), self.below(e, AMULET, created=False))
        elif choice in ("DsoRules_LockedAmulet_ExpireAmulet", "DsoRules_LockedAmulet_ExpireAmuletV2"):
            self.names(e, "argument.cid", get(arg, "cid"), self.below(e, LOCKED, created=False))
        elif choice == "DsoRules_AdvanceOpenMiningRounds":
            self.advance(e, arg)
        elif choice in ("Amulet_Expire", "LockedAmulet_ExpireAmulet"):
            self.expired(e, arg)
        elif choice == "DsoRules_ClaimExpiredRewards":
            self.claim_expired(e, arg)
        elif choice == "DsoRules_MiningRound_Close":
            self.names(
                e, "argument.issuingRoundCid", get(arg, "issuingRoundCid"), self.below(e, ISSUING, created=False)
            )
        elif choice == "AmuletRules_MiningRound_StartIssuing":
            self.names(
                e, "argument.miningRoundCid", get(arg, "miningRoundCid"), self.below(e, SUMMARIZING, created=False)
            )
            self.names(e, "result.issuingRoundCid", get(res, "issuingRoundCid"), self.below(e, ISSUING))
        elif choice == "DsoRules_ExecuteConfirmedAction":
            action = get(arg, "action")
            if get(action, "tag") == "ARC_AmuletRules":
                kids = e.get("child_event_ids") or []
                last = self.events.get(kids[-1]) if kids else None
                inner = get(action, "value", "amuletRulesAction", "tag")
                if (last is None or last.get("event_type") != "exercised_event"
                        or qname(last["template_id"]) != "Splice.AmuletRules:AmuletRules"):  # fmt: skip
                    self.problem("confirmed-action", f"{inner}: the last event below is not an exercise on AmuletRules")
                elif last["choice"] != "AmuletRules_" + inner.removeprefix("CRARC_"):
                    self.problem("confirmed-action", f"{inner} exercises {last['choice']}")
        elif choice in ("SubscriptionInitialPayment_Collect", "SubscriptionPayment_Collect"):
            paid = self.created.get(str(get(res, "amulet")))
            if paid is None:
                self.problem("result-names", f"{choice} result.amulet is not created in this transaction")
            else:
                self.burn(num(get(paid, "create_arguments", "amount", "initialAmount")))
        elif choice in ("AmuletRules_DevNet_Tap", "AmuletRules_Mint"):
            cid = str(get(res, "amuletSum", "amulet"))
            made = self.created.get(cid)
            if made is None:
                self.problem("result-names", f"{choice} result.amuletSum.amulet is not created in this transaction")
            elif cid not in self.tapped:  # AmuletRules_DevNet_Tap exercises AmuletRules_Mint: one amulet
                self.tapped.add(cid)
                amount = num(get(made, "create_arguments", "amount", "initialAmount"))
                self.r.tapped += amount
                self.expected_delta += amount
        elif choice == "TransferFactory_Transfer":
            pkg_minor = self.version(e)
            inner = [
                d
                for d in self.descendants(e["event_id"])
                if d.get("choice") in ("AmuletRules_Transfer", "TransferPreapproval_Send")
            ]
            if pkg_minor is not None and pkg_minor < 17 and not inner:
                self.problem("token-standard", "TransferFactory_Transfer before splice-amulet 0.1.17 without "
                                               "AmuletRules_Transfer or TransferPreapproval_Send below it")  # fmt: skip

    def version(self, e: Json) -> int | None:
        """The splice-amulet minor version of the exercised template's package (None: not splice-amulet)."""
        return _AMULET_VERSIONS.get(e["template_id"].split(":", 1)[0])

    def advance(self, e: Json, arg: Json) -> None:
        fields = ("amuletRulesCid", "roundToArchiveCid", "middleRoundCid", "latestRoundCid")
        cids = {f: str(get(arg, f)) for f in fields}
        self.names(e, "argument.roundToArchiveCid", cids["roundToArchiveCid"], self.below(e, OPEN, created=False))
        rounds = []
        for f in fields[1:]:
            c = self.r.acs.get(cids[f])
            if c is None or c.template != OPEN:
                self.problem("advance", f"argument.{f} is not an active OpenMiningRound")
                return
            rounds.append(rnd(get(c.args, "round")))
        if rounds != [rounds[0], rounds[0] + 1, rounds[0] + 2]:
            self.problem("advance", f"rounds {rounds} are not consecutive")
        made = [rnd(get(self.created[c]["create_arguments"], "round")) for c in self.below(e, OPEN)]
        if made != [rounds[-1] + 1]:
            self.problem("advance", f"opened rounds {made} after latest round {rounds[-1]}")

    def expired(self, e: Json, arg: Json) -> None:
        """Amulet_Expire only once the amulet is gone for every open round: the round its holding fees
        use it up, createdAt + ceil(initialAmount / rate), is at most the given open round - 2
        (Expiry.daml isAmuletExpired up to 0.1.16; from 0.1.17 the choice is deprecated)."""
        minor = self.version(e)
        if minor is not None and minor >= 17:
            self.problem(
                "expiry",
                f"{e['choice']} under splice-amulet 0.1.{minor}, where it is deprecated (the V2 choice expires)",
            )
            return
        c, rc = self.r.acs.get(e["contract_id"]), self.r.acs.get(str(get(arg, "roundCid")))
        if c is None:
            return
        if rc is None or rc.template != OPEN:
            self.problem("expiry", f"{e['choice']} argument roundCid is not an active OpenMiningRound")
            return
        amount = amulet_amount(c)
        spent = div(num(get(amount, "initialAmount")), num(get(amount, "ratePerRound", "rate")))
        gone = rnd(get(amount, "createdAt")) + int(spent.to_integral_value(rounding="ROUND_CEILING"))
        if gone > rnd(get(rc.args, "round")) - 2:
            self.problem("expiry", f"{e['choice']} of an amulet that lasts until round {gone}, with round "
                                   f"{rnd(get(rc.args, 'round'))} open")  # fmt: skip

    def claim_expired(self, e: Json, arg: Json) -> None:
        """The UnclaimedReward of a round's expired coupons: per kind, the sum of their amounts (or
        weights, or count) x the ClosedMiningRound's rate (DsoRules_ClaimExpiredRewards)."""
        closed = self.r.acs.get(str(get(arg, "choiceArg", "closedRoundCid")))
        if closed is None or closed.template != CLOSED:
            self.problem("claim-expired", "argument choiceArg.closedRoundCid is not an active ClosedMiningRound")
            return
        number, rates = rnd(get(closed.args, "round")), closed.args
        sums = dict.fromkeys(("validator", "faucet", "featured", "unfeatured", "sv"), ZERO)
        for d in self.descendants(e["event_id"]):
            c = self.r.acs.get(d["contract_id"]) if str(d.get("choice", "")).endswith("_DsoExpire") else None
            if c is None or c.template not in ROUND_COUPONS:
                continue
            if rnd(get(c.args, "round")) != number:
                self.problem(
                    "claim-expired", f"{c.template} of round {rnd(get(c.args, 'round'))} expired with round {number}"
                )
            if c.template == VALIDATOR:
                sums["validator"] += num(get(c.args, "amount"))
            elif c.template in (FAUCET, LIVENESS):
                sums["faucet"] += 1
            elif c.template == APP:
                sums["featured" if get(c.args, "featured") else "unfeatured"] += num(get(c.args, "amount"))
            else:
                sums["sv"] += Decimal(int(get(c.args, "weight")))
        faucet_rate = rates.get("optIssuancePerValidatorFaucetCoupon")
        want = (mul(sums["validator"], num(get(rates, "issuancePerValidatorRewardCoupon")))
                + mul(sums["faucet"], num(faucet_rate) if faucet_rate is not None else ZERO)
                + mul(sums["featured"], num(get(rates, "issuancePerFeaturedAppRewardCoupon")))
                + mul(sums["unfeatured"], num(get(rates, "issuancePerUnfeaturedAppRewardCoupon")))
                + mul(sums["sv"], num(get(rates, "issuancePerSvRewardCoupon"))))  # fmt: skip
        made = [
            num(get(self.created[c]["create_arguments"], "amount"))
            for c in self.below(e, "Splice.Amulet:UnclaimedReward")
        ]
        if made != ([want] if want > 0 else []):
            self.problem(
                "claim-expired", f"round {number}'s expired coupons are worth {want}, UnclaimedReward created: {made}"
            )

    def burn(self, amount: Decimal) -> None:
        self.r.burnt += amount
        self.expected_delta -= amount

    # -- TransferSummary --

    def summary(self, e: Json) -> None:
        """Accounts a TransferSummary (minted, burnt per Splice's docs, conservation from its own
        fields), then recomputes its fields from the contracts it consumed and created."""
        choice, arg, res = e["choice"], e["choice_argument"], e["exercise_result"]
        self.r.summaries += 1
        transfer = get(arg, "transfer") if choice == "AmuletRules_Transfer" else arg
        for i in get(transfer, "inputs"):
            value = get(i, "value")
            cid = value.get("optInputValidatorFaucetCoupon") if get(i, "tag") == "ExtTransferInput" else value
            if cid is not None:
                self.transfer_inputs.add(str(cid))
        tres = get(res, *SUMMARY_CHOICES[choice])
        s = get(tres, "summary")
        paid = num(get(res, "amuletPaid")) if choice != "AmuletRules_Transfer" else ZERO
        outs = ZERO
        if choice == "AmuletRules_Transfer":
            for m in get(tres, "createdAmulets"):
                ev = self.created.get(str(get(m, "value")))
                if ev is not None:
                    outs += num(get(amulet_amount(Contract(qname(ev["template_id"]), "", ev["create_arguments"], "")),
                                    "initialAmount"))  # fmt: skip
        into, out, burnt = balance(choice, s, outs, paid)
        minted = into - num(get(s, "inputAmuletAmount")) + num(get(s, "holdingFees"))
        self.r.minted += minted
        self.expected_delta += minted
        self.burn(burnt)
        if into != out:
            self.problem("conservation", f"{choice}: in {into} (amulets {get(s, 'inputAmuletAmount')} - holding fees "
                                         f"{get(s, 'holdingFees')} + rewards {minted}) != out {out} (outputs {outs}, "
                                         f"output fees {get(s, 'outputFees')}, change fee {get(s, 'senderChangeFee')}, "
                                         f"change {get(s, 'senderChangeAmount')}, amuletPaid {paid})")  # fmt: skip
        self.safely(lambda _: self.recompute(e, transfer, tres, s, outs, paid), e)

    def recompute(self, e: Json, transfer: Json, tres: Json, s: Json, outs: Decimal, paid: Decimal) -> None:
        choice = e["choice"]
        number = rnd(get(tres, "round"))
        minor = self.version(e)
        if minor is None:
            self.problem("package", f"{choice} on a package that is no splice-amulet release: {e['template_id'][:16]}")
            minor = 1 << 30
        self.r.versions.add(minor)
        open_round = self.r.round_contract(OPEN, number)
        if open_round is None:
            self.problem("transfer-round", f"{choice} in round {number}, which is not open")
            return
        price = num(get(open_round.args, "amuletPrice"))
        if num(get(s, "amuletPrice")) != price:
            self.problem("summary-field", f"{choice} amuletPrice {get(s, 'amuletPrice')}, round {number} has {price}")
        sender = str(get(transfer, "sender")) if choice == "AmuletRules_Transfer" else str(get(transfer, "provider"))

        # inputs
        got = self.inputs(choice, get(transfer, "inputs"), number, minor)
        want = {"inputAmuletAmount": got["amulet"], "holdingFees": got["holding"], "inputAppRewardAmount": got["app"],
                "inputValidatorRewardAmount": got["validator"] + got["faucet"], "inputSvRewardAmount": got["sv"]}  # fmt: skip
        optional = {"inputValidatorFaucetAmount": got["faucet"], "inputUnclaimedActivityRecordAmount": got["unclaimed"],
                    "inputDevelopmentFundAmount": got["devfund"]}  # fmt: skip
        for k, v in optional.items():
            if s.get(k) is not None:
                want[k] = v
            elif v:
                self.problem("summary-field", f"{choice} consumed {k} worth {v}, the summary has no {k}")
        for k, v in want.items():
            if num(get(s, k)) != v:
                self.problem("summary-field", f"{choice} {k} is {get(s, k)}, its inputs give {v}")

        # outputs, fees, change
        scale = div(Decimal(1), price)
        cfg = get(open_round.args, "transferConfigUsd")
        fees = [num(f) for f in get(s, "outputFees")]
        change_fee, change = num(get(s, "senderChangeFee")), num(get(s, "senderChangeAmount"))
        self.sender_change(choice, tres, sender, change)
        if choice == "AmuletRules_Transfer":
            self.outputs(transfer, tres, fees, sender, cfg, scale, minor)
        elif choice == "AmuletRules_BuyMemberTraffic":
            self.split(e, paid - sum(fees, ZERO), sender, to_dso=minor <= 6)
        elif paid > 0:
            self.split(e, paid, sender)
        # the validator's activity: a fee-era transfer's output fees; a paid choice's whole payment
        # (issueRewards, splitAndBurn); none from a transfer from 0.1.17 (CIP-0107)
        if choice == "AmuletRules_Transfer":
            want_coupons = [sum(fees, ZERO)] if minor <= 16 and sum(fees, ZERO) > 0 else []
        elif choice == "AmuletRules_BuyMemberTraffic":
            want_coupons = [paid]
        else:
            want_coupons = [paid + sum(fees, ZERO)] if paid > 0 else []
        self.validator_coupons(e, want_coupons, sender, number)
        if choice != "AmuletRules_Transfer" and paid > 0 and minor <= 16:
            # the one output's fee: its create fee, and up to 0.1.6 a traffic purchase's transfer fee to the DSO
            one_fee = mul(num(get(cfg, "createFee", "fee")), scale)
            if choice == "AmuletRules_BuyMemberTraffic" and minor <= 6:
                one_fee += stepped(get(cfg, "transferFee"), paid, scale, minor)
            if fees != [one_fee]:
                self.problem(
                    "output-fee", f"{choice} output fees {fees}, the fee schedule of the round gives [{one_fee}]"
                )
        if minor <= 16:
            rewards = sum((got[k] for k in ("app", "validator", "faucet", "sv", "unclaimed", "devfund")), ZERO)
            into = got["amulet"] - got["holding"] + rewards
            left = into - outs - sum(fees, ZERO) - paid
            if choice == "AmuletRules_BuyMemberTraffic":
                left += sum(fees, ZERO)  # its output fee is inside amuletPaid (Splice's docs)
            create_fee = mul(num(get(cfg, "createFee", "fee")), scale)
            if change_fee != min(create_fee, left):
                self.problem(
                    "change-fee",
                    f"{choice} senderChangeFee {change_fee}, the fee schedule gives {min(create_fee, left)}",
                )
        elif change_fee != ZERO:
            self.problem(
                "change-fee", f"{choice} senderChangeFee {change_fee} under splice-amulet 0.1.{minor} (no fees)"
            )

    def inputs(self, choice: str, inputs: Json, number: int, minor: int) -> dict[str, Decimal]:
        got = dict.fromkeys(("amulet", "holding", "app", "validator", "faucet", "sv", "unclaimed", "devfund"), ZERO)
        for i in inputs:
            tag, value = get(i, "tag"), get(i, "value")
            cid = value.get("optInputValidatorFaucetCoupon") if tag == "ExtTransferInput" else value
            if cid is None:
                continue
            c = self.r.acs.get(str(cid))
            if c is None:
                self.problem("transfer-input", f"{choice} input {tag} {str(cid)[:16]} is not active")
                continue
            self.transfer_inputs.add(str(cid))
            if tag == "InputAmulet":
                amount = get(c.args, "amount")
                initial = num(get(amount, "initialAmount"))
                got["amulet"] += initial
                age = number - rnd(get(amount, "createdAt"))
                if minor <= 13 and age > 0:
                    left = max(ZERO, initial - mul(num(get(amount, "ratePerRound", "rate")), Decimal(age)))
                    got["holding"] += initial - left
                continue
            if tag in ("InputUnclaimedActivityRecord", "InputDevelopmentFundCoupon", "InputRewardCouponV2"):
                key = {"InputUnclaimedActivityRecord": "unclaimed", "InputDevelopmentFundCoupon": "devfund"}.get(
                    tag, "app"
                )
                got[key] += num(get(c.args, "amount"))
                continue
            coupon_round = rnd(get(c.args, "round"))
            issuing = self.r.round_contract(ISSUING, coupon_round)
            if issuing is None:
                self.problem(
                    "coupon-round", f"{choice} consumed a {c.template} of round {coupon_round}, which is not issuing"
                )
                continue
            rates = issuing.args
            if tag == "InputAppRewardCoupon":
                featured = get(c.args, "featured")
                rate = get(
                    rates, "issuancePerFeaturedAppRewardCoupon" if featured else "issuancePerUnfeaturedAppRewardCoupon"
                )
                got["app"] += mul(num(get(c.args, "amount")), num(rate))
            elif tag == "InputValidatorRewardCoupon":
                got["validator"] += mul(num(get(c.args, "amount")), num(get(rates, "issuancePerValidatorRewardCoupon")))
            elif tag == "InputSvRewardCoupon":
                got["sv"] += mul(Decimal(int(get(c.args, "weight"))), num(get(rates, "issuancePerSvRewardCoupon")))
            elif tag in ("InputValidatorLivenessActivityRecord", "ExtTransferInput"):
                rate = rates.get("optIssuancePerValidatorFaucetCoupon")
                got["faucet"] += num(rate) if rate is not None else ZERO
            else:
                self.problem("transfer-input", f"{choice} input of unknown kind {tag}")
        return got

    def outputs(self, transfer: Json, tres: Json, fees: list[Decimal], sender: str, cfg: Json, scale: Decimal,
                minor: int) -> None:  # fmt: skip
        """Each declared output against the amulet created for it and its fee."""
        declared, made = get(transfer, "outputs"), get(tres, "createdAmulets")
        if not (len(declared) == len(made) == len(fees)):
            self.problem("outputs", f"{len(declared)} outputs, {len(made)} created amulets, {len(fees)} output fees")
            return
        for out, m, fee in zip(declared, made, fees, strict=True):
            receiver, amount, ratio = (
                str(get(out, "receiver")),
                num(get(out, "amount")),
                num(get(out, "receiverFeeRatio")),
            )
            lock = get(out, "lock")
            cid = str(get(m, "value"))
            ev = self.created.get(cid)
            tag = get(m, "tag")
            want_tpl = LOCKED if lock is not None else AMULET
            if (
                ev is None
                or qname(ev["template_id"]) != want_tpl
                or tag != ("TransferResultLockedAmulet" if lock else "TransferResultAmulet")
            ):
                self.problem("outputs", f"output to {receiver[:20]} is {tag} {cid[:16]}, not a {want_tpl} created here")
                continue
            c = Contract(want_tpl, "", ev["create_arguments"], self.uid)
            initial = num(get(amulet_amount(c), "initialAmount"))
            if amulet_owner(c) != receiver:
                self.problem("outputs", f"output for {receiver[:20]} created for {amulet_owner(c)[:20]}")
            if initial != amount - mul(fee, ratio):
                self.problem(
                    "outputs", f"output of {amount} (receiver pays {ratio} of fee {fee}) created with {initial}"
                )
            if minor <= 16:
                holders = sorted({str(h) for h in get(lock, "holders")} - {receiver}) if lock else []
                want = mul(num(get(cfg, "createFee", "fee")), scale) + mul(
                    num(get(cfg, "lockHolderFee", "fee")), scale
                ) * len(holders)
                if receiver != sender:
                    want += stepped(get(cfg, "transferFee"), amount, scale, minor)
                if fee != want:
                    self.problem("output-fee", f"output fee {fee}, the fee schedule of the round gives {want}")
            elif fee != ZERO:
                self.problem("output-fee", f"output fee {fee} under splice-amulet 0.1.{minor} (no fees)")

    def validator_coupons(self, e: Json, want: list[Decimal], user: str, number: int) -> None:
        made = [self.events[c] for c in e.get("child_event_ids") or [] if c in self.events]
        made = [m for m in made if m.get("event_type") == "created_event" and qname(m["template_id"]) == VALIDATOR]
        got = [num(get(m, "create_arguments", "amount")) for m in made]
        if got != want or any(get(m, "create_arguments", "user") != user or rnd(get(m, "create_arguments", "round")) != number
                              for m in made):  # fmt: skip
            self.problem("reward-coupon", f"{e['choice']} created ValidatorRewardCoupons of {got}, Splice's Daml gives "
                                          f"{want} for {user[:20]} in round {number}")  # fmt: skip

    def sender_change(self, choice: str, tres: Json, sender: str, change: Decimal) -> None:
        cid = tres.get("senderChangeAmulet")
        if change > 0:
            ev = self.created.get(str(cid)) if cid else None
            if ev is None or qname(ev["template_id"]) != AMULET:
                self.problem("sender-change", f"{choice} senderChangeAmount {change}, but no change amulet created")
                return
            got = num(get(ev, "create_arguments", "amount", "initialAmount"))
            if got != change or get(ev, "create_arguments", "owner") != sender:
                self.problem("sender-change", f"{choice} change amulet of {got}, the summary says {change}")
        elif cid:
            self.problem("sender-change", f"{choice} created a change amulet for a change of {change}")

    def split(self, e: Json, amount: Decimal, sender: str, to_dso: bool = False) -> None:
        """The paid amulet, created and archived below: splitAndBurn's split for the sender (splice-amulet
        0.1.7 on), or up to 0.1.6 a traffic purchase's output to the DSO (receiverFeeRatio 1.0)."""
        for cid in self.below(e, AMULET):
            args = self.created[cid]["create_arguments"]
            if (
                num(get(args, "amount", "initialAmount")) == amount
                and get(args, "owner") == (get(args, "dso") if to_dso else sender)
                and cid in self.below(e, AMULET, created=False)
            ):
                return
        whose = "the DSO" if to_dso else "the sender"
        self.problem("split", f"{e['choice']}: no amulet of {amount} for {whose} created and archived below it")


def balance(choice: str, s: Json, outputs: Decimal, paid: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(what went in, what came out, what was burnt) of one TransferSummary, from its fields, the
    total of its created outputs and the result's `amuletPaid`: in = amulets - holding fees +
    rewards; a transfer's out = outputs + output fees + change fee + change and it burns its fees;
    `AmuletRules_BuyMemberTraffic`'s output fee is inside `amuletPaid` (burnt: amuletPaid + holding
    fees + change fee); the preapproval payments burn `amuletPaid` and their output fees on top."""
    rewards = sum((num(s[k]) for k in ("inputAppRewardAmount", "inputValidatorRewardAmount", "inputSvRewardAmount",
                                        "inputUnclaimedActivityRecordAmount", "inputDevelopmentFundAmount")
                   if s.get(k) is not None), ZERO)  # fmt: skip
    holding = num(get(s, "holdingFees"))
    into = num(get(s, "inputAmuletAmount")) - holding + rewards
    fees, change_fee, change = sum((num(f) for f in get(s, "outputFees")), ZERO), num(get(s, "senderChangeFee")), num(
        get(s, "senderChangeAmount"))  # fmt: skip
    if choice == "AmuletRules_Transfer":
        return into, outputs + fees + change_fee + change, fees + holding + change_fee
    if choice == "AmuletRules_BuyMemberTraffic":
        return into, paid + change_fee + change, paid + holding + change_fee
    return into, paid + fees + change_fee + change, paid + fees + holding + change_fee


def stepped(rate: Json, amount: Decimal, scale: Decimal, minor: int) -> Decimal:
    """Splice's chargeSteppedRate over the USD schedule scaled to CC: each step's threshold is an
    absolute amount (0.1.0-0.1.1 read them as band widths)."""
    steps = [(mul(num(get(s, "_1")), scale), num(get(s, "_2"))) for s in get(rate, "steps")]
    if minor >= 2:
        total, diffs = ZERO, []
        for step, r in steps:
            diffs.append((step - total, r))
            total += step
        steps = diffs
    remainder, current, charged = amount, num(get(rate, "initialRate")), ZERO
    for step, r in steps:
        if remainder <= 0:
            return charged
        charged += mul(min(remainder, step), current)
        remainder, current = remainder - step, r
    return charged + (mul(remainder, current) if remainder > 0 else ZERO)


# ----- fetching -------------------------------------------------------------------------------


def post_json(url: str, body: Json) -> Json:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def fetch_acs(base: str, migration_id: int, record_time: str) -> dict[str, str]:
    """contract id -> Module:Entity of a scan's ACS snapshot (`/v0/state/acs`, every page)."""
    out: dict[str, str] = {}
    after = None
    while True:
        body: dict[str, Any] = {"migration_id": migration_id, "record_time": record_time, "page_size": 1000}
        if after is not None:
            body["after"] = after
        page = post_json(base.rstrip("/") + "/v0/state/acs", body)
        out.update((e["contract_id"], qname(e["template_id"])) for e in page["created_events"])
        after = page["next_page_token"]
        if after is None:
            return out


def fetch_updates(base: str, encoding: str = "protobuf_json", page_size: int = 500) -> Iterator[Json]:
    """Every update a scan serves on /v2/updates, from the beginning, over plain HTTP."""
    after: dict[str, Any] | None = None
    while True:
        body: dict[str, Any] = {"page_size": page_size, "daml_value_encoding": encoding}
        if after:
            body["after"] = after
        page = post_json(base.rstrip("/") + "/v2/updates", body)["transactions"]
        yield from page
        if len(page) < page_size:
            return
        last = page[-1]
        after = {"after_migration_id": last["migration_id"], "after_record_time": last["record_time"]}
