"""A ledger with real round economics, generated in order, and the books of what it meant.

The default simulator is random-access and its amounts only look plausible. This one plays a small
Canton economy forward, update by update: mining rounds go open -> summarizing -> issuing -> closed
-> archived on Splice's schedule; transfers consume real holdings and the reward coupons of issuing
rounds, minting `amount x rate` of the coupon's own IssuingMiningRound (rounded half-even to 10
places, in input order); coupons nobody claims expire when their round closes; validators buy
traffic (split and burn); dust amulets expire; the network moves from `splice-amulet` 0.1.13
(transfer fees and holding fees charged on inputs) to 0.1.14 (CIP-0078: no holding fees on inputs,
fees voted to zero, featured transfers still earn a coupon) and then to 0.1.17 (CIP-0107:
token-standard transfers without AmuletRules_Transfer, featured transfers earn activity markers that
the DSO converts into coupons once a round) at rounds of its choice.

Everything it intends is written into `Books` while it generates, in its own terms (per coupon,
per purchase), so a derivation from the stored history is compared with what was meant, not with
itself. All amounts are integers in units of 10^-10 (Daml's Numeric 10).

Scope: one synchronizer per migration (a transfer consumes what lives on its own synchronizer);
no reassignments. Contracts alive when a migration ends are imported by the next one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from scanfill.economy.packages import PACKAGE_OF, minor
from scanfill.sim.ledger import IMPORT_TIME, V1_OFFSET, EconomyConfig, Json, Ledger, LedgerConfig, UpdateHeader
from scanfill.sim.lifecycle import Ref
from scanfill.timeutil import MIN_US, format_instant, format_trimmed, format_us

UNIT = 10**10
DSO_PKG = "4974c654485d4ecaa6b5caf8ef3c2679efa8195c4b50d4965a8fff1b72e8efa4"  # splice-dso-governance 0.1.24
LIFECYCLE_PKG = "8fbfd30fbf3530756d659ba839129762166ae95ba52a1253044cbe7ba9d9b1e1"  # splice-validator-lifecycle 0.1.9
HOLDING_RATE = 190259  # CC per round an amulet pays for being held (units)
CREATE_FEE_USD = 3 * 10**8  # 0.03 USD per output (fee era)
TRANSFER_RATE = 10**7  # 0.001 of the amount (fee era; Splice's steps start at 1 %, lower here)
EXTRA_FEATURED_USD = UNIT  # 1 USD of extra app reward for a featured transfer
TRAFFIC_USD_PER_MB = 16_670_000_000  # 16.67 USD per MB of extra traffic
DUST = 1_000_000  # 0.0001 CC: expires within a few rounds


def mul(a: int, b: int) -> int:
    """a x b of two Numeric 10 values, rounded half-even to 10 places (Daml's multiplication)."""
    q, r = divmod(a * b, UNIT)
    return q + (1 if 2 * r > UNIT or (2 * r == UNIT and q % 2) else 0)


def div(a: int, b: int) -> int:
    """a / b of two Numeric 10 values, rounded half-even to 10 places."""
    q, r = divmod(a * UNIT, b)
    return q + (1 if 2 * r > b or (2 * r == b and q % 2) else 0)


@dataclass
class Books:
    """What the generator meant, in its own terms. Keys: rounds are the transfer's round
    (Scan's), coupon rounds the coupon's own round."""

    by_round: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    by_party: dict[tuple[int, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    coupons: dict[tuple[int, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    tapped: int = 0
    dust_burnt: int = 0
    unclaimed_at_issuing: dict[int, int] = field(default_factory=dict)
    closed: dict[int, int] = field(default_factory=dict)  # round -> global index of its ClosedMiningRound
    closed_at: dict[int, int] = field(default_factory=dict)  # round -> effective time (us) of its closing
    supply_after: list[tuple[int, int, int]] = field(default_factory=list)  # (migration, t_us, supply) per update
    versions_used: set[str] = field(default_factory=set)

    @property
    def supply(self) -> int:
        return self.supply_after[-1][2] if self.supply_after else 0


class _C:
    """A live contract of the economy."""

    __slots__ = ("args", "cid", "created_us", "entity", "info", "module", "observers", "pkg", "signatories", "where")

    def __init__(self, cid: str, pkg: str, module: str, entity: str, args: Json, where: tuple[int, int, int],
                 created_us: int, signatories: list[str], observers: list[str], info: dict[str, Any]) -> None:  # fmt: skip
        self.cid, self.pkg, self.module, self.entity, self.args = cid, pkg, module, entity, args
        self.where, self.created_us, self.signatories, self.observers, self.info = (where, created_us, signatories,
                                                                                   observers, info)  # fmt: skip


class Economy:
    """Generates every update of a ledger's layout (its migrations, indices and record times)."""

    def __init__(self, ledger: Ledger, config: EconomyConfig) -> None:
        for spec in ledger.specs.values():
            if spec.synchronizers != 1:
                raise ValueError("the economy simulator runs one synchronizer per migration")
        self.lg, self.cfg = ledger, config
        self.rng = random.Random(ledger.seed * 7919 + 17)
        self.books = Books()
        self.updates: dict[tuple[int, int], Json] = {}
        self.headers: dict[tuple[int, int], UpdateHeader] = {}
        self.live: dict[str, _C] = {}
        self.finals: dict[int, list[_C]] = {}  # contracts alive when each migration ended
        self.lives: dict[str, tuple[_C, tuple[int, int], tuple[int, int] | None]] = {}  # cid -> (c, created, ended)
        p = ledger.parties
        self.validators, self.providers, self.users, self.svs = p[1:5], p[2:8:2], p[6:18], p[18:21]
        self.featured = set(self.providers[:2])
        self.supply = 0
        self.r0 = ledger.config.round_zero
        first = ledger.specs[ledger.migration_ids()[0]]
        self.tick = config.per_round * first.gap_us  # tickDuration: one round advance every per_round updates
        self.rounds: dict[int, dict[str, Any]] = {}
        self._run()

    # ----- the contracts -----------------------------------------------------------------------

    def pkg(self, rnd: int) -> str:
        return PACKAGE_OF[self.version(rnd)]

    def version(self, rnd: int) -> str:
        """The version the network runs in round `rnd` (upgrades take effect at round boundaries)."""
        k = sum(1 for u in self.cfg.upgrades if rnd >= self.r0 + u)
        return self.cfg.versions[min(k, len(self.cfg.versions) - 1)]

    def _token_standard(self, rnd: int) -> bool:
        """From 0.1.17 (CIP-0107) token-standard transfers move holdings without AmuletRules_Transfer
        (no summary, no coupons minted), and featured transfers earn activity markers."""
        return minor(self.version(rnd)) >= 17

    def _new_cid(self, *parts: Any) -> str:
        return self.lg.contract_id("econ", *parts)

    # ----- building updates ----------------------------------------------------------------------

    def _begin(self, m: int, i: int) -> None:
        self.m, self.i = m, i
        self.t = self.lg.record_us(m, 0, i)
        self.now = max(getattr(self, "now", self.t), self.t)  # a migration starts before the last one ends
        self.eff = self.lg.effective_us(m, 0, i)
        self.uid = self.lg.update_id(m, 0, i)
        self.events: dict[str, Json] = {}
        self.n = 0
        self.made: list[str] = []

    def _id(self) -> str:
        eid = f"{self.uid}:{self.n}"
        self.n += 1
        return eid

    def create(self, pkg: str, module: str, entity: str, args: Json, signatories: list[str],
               observers: list[str] | None = None, **info: Any) -> tuple[str, _C]:  # fmt: skip
        eid = self._id()
        cid = self._new_cid(self.m, self.i, eid)
        c = _C(cid, pkg, module, entity, args, (self.m, 0, self.i), self.eff, signatories, observers or [], info)
        self.events[eid] = self._created_json(c, eid)
        self.live[cid] = c
        self.lives[cid] = (c, (self.m, self.t), None)
        if entity in ("Amulet", "LockedAmulet"):
            self.supply += info["amount"]
        return eid, c

    def _created_json(self, c: _C, eid: str) -> Json:
        return {"event_type": "created_event", "event_id": eid, "contract_id": c.cid,
                "template_id": f"{c.pkg}:{c.module}:{c.entity}", "package_name": self._pkg_name(c.pkg),
                "create_arguments": c.args, "created_at": format_trimmed(c.created_us),
                "signatories": sorted(set(c.signatories)), "observers": sorted(set(c.observers))}  # fmt: skip

    @staticmethod
    def _pkg_name(pkg: str) -> str:
        return ("splice-dso-governance" if pkg == DSO_PKG else "splice-validator-lifecycle" if pkg == LIFECYCLE_PKG
                else "splice-amulet")  # fmt: skip

    def exercise(self, cid: str, pkg: str, module: str, entity: str, choice: str, arg: Json, result: Json,
                 consuming: bool, acting: list[str], eid: str | None = None) -> str:  # fmt: skip
        eid = eid or self._id()
        self.events[eid] = {"event_type": "exercised_event", "event_id": eid, "contract_id": cid,
                            "template_id": f"{pkg}:{module}:{entity}", "package_name": self._pkg_name(pkg),
                            "choice": choice, "choice_argument": arg, "child_event_ids": [],
                            "exercise_result": result, "consuming": consuming, "interface_id": None,
                            "acting_parties": acting}  # fmt: skip
        if consuming:
            c = self.live.pop(cid)
            self.lives[cid] = (c, self.lives[cid][1], (self.m, self.t))
            if c.entity in ("Amulet", "LockedAmulet"):
                self.supply -= c.info["amount"]
        return eid

    def consume(self, c: _C, choice: str, acting: list[str], result: Json | None = None) -> str:
        return self.exercise(c.cid, self.pkg(self.rnd), c.module, c.entity, choice, rec(), result or {"unit": {}},
                             True, acting)  # fmt: skip

    def children(self, parent: str, kids: list[str]) -> None:
        self.events[parent]["child_event_ids"] = kids

    def dso(self, root: str, choice: str, arg: Json, kids: list[str], acting: list[str] | None = None) -> None:
        """The step's root: a DsoRules choice (non-consuming, unit result) over the events `kids`."""
        self.exercise(self._new_cid("dso-rules"), DSO_PKG, "Splice.DsoRules", "DsoRules", choice, arg, {"unit": {}},
                      False, acting or [self.lg.dso], root)  # fmt: skip
        self.children(root, kids)

    def _finish(self, shape: str, rnd: int | None) -> None:
        if not self.events:  # a step that found nothing to do (no dust to expire...): a tap instead
            self._tap(self.users[self.i % len(self.users)], UNIT)
        order = sorted(self.events)
        key = (self.m, self.i)
        self.updates[key] = {
            "update_id": self.uid, "migration_id": self.m, "workflow_id": "", "record_time": format_us(self.t),
            "synchronizer_id": self.lg.synchronizer_id(0), "effective_at": format_instant(self.eff),
            "offset": V1_OFFSET, "root_event_ids": [f"{self.uid}:0"],  # every step makes its root first
            "events_by_id": {k: self.events[k] for k in order},
        }  # fmt: skip
        self.headers[key] = UpdateHeader(self.uid, self.m, self.lg.synchronizer_id(0), self.t, "transaction", shape,
                                         len(self.events), rnd)  # fmt: skip
        self.books.supply_after.append((self.m, self.t, self.supply))

    # ----- the schedule -------------------------------------------------------------------------

    def _run(self) -> None:
        g = 0
        ids = self.lg.migration_ids()
        for k, m in enumerate(ids):
            if k:
                self.finals[ids[k - 1]] = list(self.live.values())
            for i in range(self.lg.specs[m].updates):
                self._begin(m, i)
                shape = self._step(g)
                self._finish(shape, self.rnd if self.rounds else None)
                g += 1
        self.finals[ids[-1]] = list(self.live.values())

    @property
    def rnd(self) -> int:
        """The round transfers use now: the newest open round that has opened."""
        opened = [r for r, x in self.rounds.items() if x["phase"] == "open" and x["opens_at"] <= self.now]
        return max(opened) if opened else min(r for r, x in self.rounds.items() if x["phase"] == "open")

    def _step(self, g: int) -> str:
        p = self.cfg.per_round
        if g == 0:
            self._bootstrap()
            return "rounds"
        if g <= len(self.users) + len(self.validators):
            parties = self.users + self.validators
            self._tap(parties[g - 1], 2_000 * UNIT + self.rng.randrange(0, 500 * UNIT))
            return "tap"
        phase = g % p
        if phase == 0:
            self._advance()
            return "rounds"
        if phase == 2 and self._summarizing() is not None:
            self._start_issuing(self._summarizing())  # type: ignore[arg-type]
            return "rounds"
        if phase == 4 and (r := self._to_close()) is not None:
            self._close(r)
            return "rounds"
        if phase == 5 and (r := self._to_expire()) is not None:
            self._expire_rewards(r)
            return "rounds"
        if phase == 6 and (r := self._to_archive()) is not None:
            self._archive_closed(r)
            return "rounds"
        if phase in (7, 8, 9):
            self._sv_coupon(self.svs[phase - 7])
            return "coupon"
        if phase in (10, 11):
            self._liveness(self.validators[(g // p + phase) % len(self.validators)])
            return "coupon"
        if phase == 12 and self._markers():
            self._convert_markers()
            return "coupon"
        pick = self.rng.random()
        if pick < 0.12:
            self._traffic()
            return "traffic"
        if pick < 0.18 and self._dust():
            self._expire_dust()
            return "expire"
        if pick < 0.22 and self._locked():
            self._unlock()
            return "unlock"
        if pick < 0.45 and self._token_standard(self.rnd):
            self._token_transfer()
            return "transfer"
        self._transfer()
        return "transfer"

    # ----- rounds --------------------------------------------------------------------------------

    def _open_args(self, rnd: int, opens_at: int) -> Json:
        price = 5 * 10**8 + (rnd % 7) * 10**7  # 0.05 .. 0.11 USD per CC
        self.rounds[rnd] = {"phase": "open", "opens_at": opens_at, "price": price}
        fees = rec(("createFee", rec(("fee", num(CREATE_FEE_USD if self._fee_era(rnd) else 0)))),
                   ("holdingFee", rec(("rate", num(HOLDING_RATE)))),
                   ("transferFee", rec(("initialRate", num(TRANSFER_RATE if self._fee_era(rnd) else 0)),
                                       ("steps", {"list": {}}))),
                   ("lockHolderFee", rec(("fee", num(0)))),
                   ("extraFeaturedAppRewardAmount", num(EXTRA_FEATURED_USD)),
                   ("maxNumInputs", i64(100)), ("maxNumOutputs", i64(100)), ("maxNumLockHolders", i64(50)))  # fmt: skip
        return rec(("dso", party(self.lg.dso)), ("round", rnd_rec(rnd)), ("amuletPrice", num(price)),
                   ("opensAt", ts(opens_at)), ("targetClosesAt", ts(opens_at + 2 * self.tick)),
                   ("issuingFor", rec(("microseconds", i64((rnd - self.r0) * self.tick)))),
                   ("transferConfigUsd", fees), ("issuanceConfig", self._issuance_config()),
                   ("tickDuration", rec(("microseconds", i64(self.tick)))))  # fmt: skip

    def _fee_era(self, rnd: int) -> bool:
        return minor(self.version(rnd)) <= 13

    @staticmethod
    def _issuance_config() -> Json:
        return rec(("amuletToIssuePerYear", num(40_000_000_000 * UNIT)), ("validatorRewardPercentage", num(5 * 10**9)),
                   ("appRewardPercentage", num(15 * 10**8)), ("validatorRewardCap", num(2 * 10**9)),
                   ("featuredAppRewardCap", num(100 * UNIT)), ("unfeaturedAppRewardCap", num(6 * 10**9)),
                   ("optValidatorFaucetCap", {"optional": {"value": num(285 * 10**8)}}))  # fmt: skip

    def _bootstrap(self) -> None:
        root = self._id()
        kids = []
        for k in range(3):
            eid, c = self.create(PACKAGE_OF[self.cfg.versions[0]], "Splice.Round", "OpenMiningRound",
                                 self._open_args(self.r0 + k, self.now + k * self.tick), [self.lg.dso],
                                 number=self.r0 + k)  # fmt: skip
            self.rounds[self.r0 + k]["open"] = c
            kids.append(eid)
        self.exercise(self._new_cid("amulet-rules"), PACKAGE_OF[self.cfg.versions[0]], "Splice.AmuletRules",
                      "AmuletRules", "AmuletRules_Bootstrap_Rounds", rec(), {"unit": {}}, False, [self.lg.dso], root)  # fmt: skip
        self.children(root, kids)

    def _advance(self) -> None:
        opens = sorted(r for r, x in self.rounds.items() if x["phase"] == "open")
        oldest, newest = opens[0], opens[-1]
        pkg = self.pkg(newest + 1)
        root = self._id()
        x = self.rounds[oldest]
        arch = self.exercise(x["open"].cid, self.pkg(oldest), "Splice.Round", "OpenMiningRound", "Archive", rec(),
                             {"unit": {}}, True, [self.lg.dso])  # fmt: skip
        s_eid, s = self.create(pkg, "Splice.Round", "SummarizingMiningRound",
                               rec(("dso", party(self.lg.dso)), ("round", rnd_rec(oldest)), ("amuletPrice", num(x["price"])),
                                   ("issuanceConfig", self._issuance_config()),
                                   ("tickDuration", rec(("microseconds", i64(self.tick))))), [self.lg.dso])  # fmt: skip
        x.update(phase="summarizing", summarizing=s)
        opens_at = max(self.now, self.rounds[newest]["opens_at"]) + self.tick
        o_eid, o = self.create(
            pkg, "Splice.Round", "OpenMiningRound", self._open_args(newest + 1, opens_at), [self.lg.dso]
        )
        self.rounds[newest + 1]["open"] = o
        self.dso(root, "DsoRules_AdvanceOpenMiningRounds", rec(("roundToArchiveCid", cid_v(x["open"].cid))),
                 [arch, s_eid, o_eid])

    def _summarizing(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "summarizing"]
        return min(got) if got else None

    def _coupons_of(self, rnd: int) -> list[_C]:
        return [c for c in self.live.values() if c.info.get("coupon") and c.info["round"] == rnd]

    def _start_issuing(self, rnd: int) -> None:
        """Rates from the round's coupon totals, by Splice's tranches (see docs: round economics)."""
        x = self.rounds[rnd]
        cs = self._coupons_of(rnd)
        tot: dict[str, int] = defaultdict(int)
        for c in cs:
            tot[c.info["coupon"]] += c.info["weight"]
        per_round = div(40_000_000_000 * UNIT, div(365 * 24 * 3600 * 10**6 * UNIT, self.tick * UNIT))
        val = tranche(mul(per_round, 5 * 10**9), 2 * 10**9, tot["validator"])
        faucet = tranche(val[1], div(285 * 10**8, x["price"]), tot["liveness"] // UNIT * UNIT)
        unfeat = tranche(mul(per_round, 15 * 10**8), 6 * 10**9, tot["app_featured"] + tot["app_unfeatured"])
        feat = tranche(unfeat[1], 100 * UNIT - 6 * 10**9, tot["app_featured"])
        to_svs = per_round - mul(per_round, 5 * 10**9) - mul(per_round, 15 * 10**8)
        weight = tot["sv"] // UNIT
        sv_rate = div(to_svs, weight * UNIT) if weight else to_svs
        sv_left = max(0, to_svs - sv_rate * weight)
        rates = {"validator": val[0], "app_unfeatured": unfeat[0], "app_featured": unfeat[0] + feat[0], "sv": sv_rate,
                 "liveness": faucet[0]}  # fmt: skip
        x.update(rates=rates, phase="issuing", issuing_since=self.ticks)
        pkg = self.pkg(rnd)
        root = self._id()
        arch = self.exercise(x["summarizing"].cid, pkg, "Splice.Round", "SummarizingMiningRound", "Archive", rec(),
                             {"unit": {}}, True, [self.lg.dso])  # fmt: skip
        i_eid, issuing = self.create(pkg, "Splice.Round", "IssuingMiningRound", rec(
            ("dso", party(self.lg.dso)), ("round", rnd_rec(rnd)),
            ("issuancePerValidatorRewardCoupon", num(rates["validator"])),
            ("issuancePerFeaturedAppRewardCoupon", num(rates["app_featured"])),
            ("issuancePerUnfeaturedAppRewardCoupon", num(rates["app_unfeatured"])),
            ("issuancePerSvRewardCoupon", num(rates["sv"])), ("opensAt", ts(self.t + self.tick)),
            ("targetClosesAt", ts(self.t + 3 * self.tick)),
            ("optIssuancePerValidatorFaucetCoupon", {"optional": {"value": num(rates["liveness"])}})), [self.lg.dso])  # fmt: skip
        x["issuing"] = issuing
        kids = [arch, i_eid]
        unclaimed = faucet[1] + feat[1] + sv_left
        if unclaimed > 0:
            kids.append(self.create(pkg, "Splice.Amulet", "UnclaimedReward",
                                    rec(("dso", party(self.lg.dso)), ("amount", num(unclaimed))), [self.lg.dso])[0])  # fmt: skip
        self.books.unclaimed_at_issuing[rnd] = unclaimed
        summary = rec(("totalValidatorRewardCoupons", num(tot["validator"])),
                      ("totalFeaturedAppRewardCoupons", num(tot["app_featured"])),
                      ("totalUnfeaturedAppRewardCoupons", num(tot["app_unfeatured"])),
                      ("totalSvRewardWeight", i64(weight)),
                      ("optTotalValidatorFaucetCoupons", {"optional": {"value": i64(tot["liveness"] // UNIT)}}))  # fmt: skip
        self.dso(root, "DsoRules_ExecuteConfirmedAction", confirmed("CRARC_MiningRound_StartIssuing", rec(
            ("miningRoundCid", cid_v(x["summarizing"].cid)), ("summary", summary))), kids)  # fmt: skip

    def _to_close(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "issuing" and x["issuing_since"] + 2 <= self.ticks]
        return min(got) if got else None

    @property
    def ticks(self) -> int:
        return max(self.rounds) - self.r0

    def _close(self, rnd: int) -> None:
        x = self.rounds[rnd]
        pkg = self.pkg(rnd)
        root = self._id()
        arch = self.exercise(x["issuing"].cid, pkg, "Splice.Round", "IssuingMiningRound", "Archive", rec(), {"unit": {}},
                             True, [self.lg.dso])  # fmt: skip
        r = x["rates"]
        c_eid, closed = self.create(pkg, "Splice.Round", "ClosedMiningRound", rec(
            ("dso", party(self.lg.dso)), ("round", rnd_rec(rnd)),
            ("issuancePerValidatorRewardCoupon", num(r["validator"])),
            ("issuancePerFeaturedAppRewardCoupon", num(r["app_featured"])),
            ("issuancePerUnfeaturedAppRewardCoupon", num(r["app_unfeatured"])),
            ("issuancePerSvRewardCoupon", num(r["sv"])),
            ("optIssuancePerValidatorFaucetCoupon", {"optional": {"value": num(r["liveness"])}})), [self.lg.dso])  # fmt: skip
        x.update(phase="closed", closed=closed)
        self.books.closed[rnd] = len(self.books.supply_after)
        self.books.closed_at[rnd] = self.eff
        self.dso(root, "DsoRules_MiningRound_Close", rec(("issuingRoundCid", cid_v(x["issuing"].cid))), [arch, c_eid])

    def _to_expire(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "closed" and not x.get("expired")]
        return min(got) if got else None

    def _expire_rewards(self, rnd: int) -> None:
        x = self.rounds[rnd]
        x["expired"] = True
        cs = sorted(self._coupons_of(rnd), key=lambda c: c.cid)
        if not cs:
            self._transfer()
            return
        r = x["rates"]
        root = self._id()
        kids, total = [], 0
        choice = {"app_featured": "AppRewardCoupon_DsoExpire", "app_unfeatured": "AppRewardCoupon_DsoExpire",
                  "validator": "ValidatorRewardCoupon_DsoExpire", "sv": "SvRewardCoupon_DsoExpire",
                  "liveness": "ValidatorLivenessActivityRecord_DsoExpire"}  # fmt: skip
        for c in cs:
            kind = c.info["coupon"]
            value = c.info["weight"] // UNIT * r[kind] if kind in ("sv", "liveness") else mul(c.info["weight"], r[kind])
            total += value
            self.books.coupons[(rnd, kind)]["expired_n"] += 1
            self.books.coupons[(rnd, kind)]["expired_cc"] += value
            kids.append(self.exercise(c.cid, self.pkg(rnd), c.module, c.entity, choice[kind],
                                      rec(("closedRoundCid", cid_v(x["closed"].cid))), {"unit": {}}, True, [self.lg.dso]))  # fmt: skip
        if total > 0:
            kids.append(self.create(self.pkg(rnd), "Splice.Amulet", "UnclaimedReward",
                                    rec(("dso", party(self.lg.dso)), ("amount", num(total))), [self.lg.dso])[0])  # fmt: skip
        self.dso(root, "DsoRules_ClaimExpiredRewards", rec(("closedRoundCid", cid_v(x["closed"].cid))), kids)

    def _to_archive(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "closed" and x.get("expired")
               and self.books.closed[r] + 2 * self.cfg.per_round <= len(self.books.supply_after)]  # fmt: skip
        return min(got) if got else None

    def _archive_closed(self, rnd: int) -> None:
        x = self.rounds[rnd]
        root = self._id()
        arch = self.exercise(x["closed"].cid, self.pkg(rnd), "Splice.Round", "ClosedMiningRound", "Archive", rec(),
                             {"unit": {}}, True, [self.lg.dso])  # fmt: skip
        x["phase"] = "archived"
        self.dso(root, "DsoRules_ExecuteConfirmedAction",
                 confirmed("CRARC_MiningRound_Archive", rec(("closedRoundCid", cid_v(x["closed"].cid)))), [arch])

    # ----- coupons ---------------------------------------------------------------------------------

    def _coupon(self, kind: str, who: str, weight: int, rnd: int, featured: bool = False) -> str:
        """Create a reward coupon (weight in units; an SV's or a record's count is a whole number)."""
        pkg = self.pkg(rnd)
        if kind.startswith("app"):
            eid, _ = self.create(pkg, "Splice.Amulet", "AppRewardCoupon", rec(
                ("dso", party(self.lg.dso)), ("provider", party(who)), ("featured", {"bool": featured}),
                ("amount", num(weight)), ("round", rnd_rec(rnd)), ("beneficiary", {"optional": {}})),
                [self.lg.dso], [who], coupon=kind, owner=who, weight=weight, round=rnd)  # fmt: skip
        elif kind == "validator":
            eid, _ = self.create(pkg, "Splice.Amulet", "ValidatorRewardCoupon", rec(
                ("dso", party(self.lg.dso)), ("user", party(who)), ("amount", num(weight)), ("round", rnd_rec(rnd))),
                [self.lg.dso], [who], coupon=kind, owner=who, weight=weight, round=rnd)  # fmt: skip
        elif kind == "sv":
            eid, _ = self.create(pkg, "Splice.Amulet", "SvRewardCoupon", rec(
                ("dso", party(self.lg.dso)), ("sv", party(who)), ("beneficiary", party(who)), ("round", rnd_rec(rnd)),
                ("weight", i64(weight // UNIT))), [self.lg.dso], [who], coupon=kind, owner=who, weight=weight, round=rnd)  # fmt: skip
        else:
            eid, _ = self.create(LIFECYCLE_PKG, "Splice.ValidatorLicense", "ValidatorLivenessActivityRecord", rec(
                ("dso", party(self.lg.dso)), ("validator", party(who)), ("round", rnd_rec(rnd))),
                [self.lg.dso], [who], coupon=kind, owner=who, weight=UNIT, round=rnd)  # fmt: skip
        self.books.coupons[(rnd, kind)]["created_n"] += 1
        self.books.coupons[(rnd, kind)]["created_weight"] += weight
        return eid

    def _sv_coupon(self, sv: str) -> None:
        rnd = self.rnd
        root = self._id()
        kid = self._coupon("sv", sv, (1 + self.svs.index(sv)) * 10 * UNIT, rnd)
        self.dso(root, "DsoRules_ReceiveSvRewardCoupon",
                 rec(("sv", party(sv)), ("openRoundCid", cid_v(self.rounds[rnd]["open"].cid))), [kid], [sv])

    def _liveness(self, validator: str) -> None:
        rnd = self.rnd
        root = self._id()
        kid = self._coupon("liveness", validator, UNIT, rnd)
        self.exercise(self._new_cid("license", validator), LIFECYCLE_PKG, "Splice.ValidatorLicense", "ValidatorLicense",
                      "ValidatorLicense_RecordValidatorLivenessActivity",
                      rec(("openRoundCid", cid_v(self.rounds[rnd]["open"].cid))), {"unit": {}}, False, [validator], root)  # fmt: skip
        self.children(root, [kid])

    # ----- holdings --------------------------------------------------------------------------------

    def _amulet(self, owner: str, amount: int, rnd: int, locked: bool = False) -> str:
        a = rec(("dso", party(self.lg.dso)), ("owner", party(owner)),
                ("amount", rec(("initialAmount", num(amount)), ("createdAt", rnd_rec(rnd)),
                               ("ratePerRound", rec(("rate", num(HOLDING_RATE)))))))  # fmt: skip
        info: dict[str, Any] = {"owner": owner, "amount": amount, "created": rnd}
        if locked:
            args = rec(("amulet", a), ("lock", rec(("holders", {"list": {"elements": [party(self.lg.dso)]}}),
                                                    ("expiresAt", ts(self.t + 86_400_000_000)),
                                                    ("optContext", {"optional": {}}))))  # fmt: skip
            return self.create(self.pkg(rnd), "Splice.Amulet", "LockedAmulet", args, [self.lg.dso, owner], None,
                               locked=True, **info)[0]  # fmt: skip
        return self.create(self.pkg(rnd), "Splice.Amulet", "Amulet", a, [self.lg.dso, owner], None, **info)[0]

    def _tap(self, owner: str, amount: int) -> None:
        rnd = self.rnd if self.rounds else self.r0
        root = self._id()
        kid = self._amulet(owner, amount, rnd)
        made = self.events[kid]["contract_id"]
        self.exercise(self._new_cid("amulet-rules"), self.pkg(rnd), "Splice.AmuletRules", "AmuletRules",
                      "AmuletRules_DevNet_Tap", rec(("receiver", party(owner)), ("amount", num(amount))),
                      rec(("amuletSum", rec(("amulet", cid_v(made)), ("round", rnd_rec(rnd))))), False, [owner], root)  # fmt: skip
        self.children(root, [kid])
        self.books.tapped += amount

    def _held(self, owner: str) -> list[_C]:
        return sorted((c for c in self.live.values() if c.entity == "Amulet" and c.info["owner"] == owner
                       and c.info["amount"] > DUST), key=lambda c: c.info["amount"], reverse=True)  # fmt: skip

    def _claimable(self, owner: str) -> list[_C]:
        return sorted((c for c in self.live.values() if c.info.get("owner") == owner and c.info.get("coupon")
                       and self.rounds[c.info["round"]]["phase"] == "issuing"), key=lambda c: c.cid)  # fmt: skip

    def _dust(self) -> list[_C]:
        r = self.rnd
        return [c for c in self.live.values() if c.entity == "Amulet"
                and c.info["created"] + -(-c.info["amount"] // HOLDING_RATE) <= r]  # fmt: skip

    def _locked(self) -> list[_C]:
        return [c for c in self.live.values() if c.entity == "LockedAmulet"]

    def _expire_dust(self) -> None:
        c = sorted(self._dust(), key=lambda c: c.cid)[0]
        rnd = self.rnd
        root = self._id()
        amount, created = c.info["amount"], c.info["created"]
        kid = self.exercise(c.cid, self.pkg(rnd), "Splice.Amulet", "Amulet", "Amulet_Expire",
                            rec(("roundCid", cid_v(self.rounds[rnd]["open"].cid))),
                            rec(("owner", party(c.info["owner"])), ("round", rnd_rec(created)),
                                ("changeToInitialAmountAsOfRoundZero", num(-(amount + created * HOLDING_RATE))),
                                ("changeToHoldingFeesRate", num(-HOLDING_RATE))), True, [self.lg.dso])  # fmt: skip
        self.dso(root, "DsoRules_Amulet_Expire", rec(("amuletCid", cid_v(c.cid))), [kid])
        self.books.dust_burnt += amount
        self.books.by_round[rnd]["dust_burnt"] += amount

    def _unlock(self) -> None:
        c = sorted(self._locked(), key=lambda c: c.cid)[0]
        root = self._id()
        owner = c.info["owner"]
        kid = self._amulet(owner, c.info["amount"], c.info["created"])
        self.exercise(c.cid, self.pkg(self.rnd), "Splice.Amulet", "LockedAmulet", "LockedAmulet_Unlock", rec(),
                      rec(("amuletSum", cid_v(self.events[kid]["contract_id"]))), True, [owner, self.lg.dso], root)  # fmt: skip
        self.children(root, [kid])

    # ----- transfers -------------------------------------------------------------------------------

    def _inputs(self, sender: str, need: int, claim: bool) -> tuple[list[_C], list[_C]]:
        amulets: list[_C] = []
        got = 0
        for c in self._held(sender):
            if got >= need or len(amulets) >= 3:
                break
            amulets.append(c)
            got += c.info["amount"]
        coupons = self._claimable(sender)[:6] if claim else []
        return amulets, coupons

    def _spend(self, sender: str, amulets: list[_C], coupons: list[_C], rnd: int) -> tuple[dict[str, int], list[str]]:
        """Consume the inputs, in input order; returns the summary's input amounts and the events."""
        era = self._fee_era(rnd)
        s = {"amulets": 0, "holding": 0, "app": 0, "validator": 0, "faucet": 0, "sv": 0}
        kids: list[str] = []
        for c in amulets:
            s["amulets"] += c.info["amount"]
            if era:
                s["holding"] += min(c.info["amount"], max(0, rnd - c.info["created"]) * HOLDING_RATE)
            kids.append(self.consume(c, "Archive", [sender]))
        for c in coupons:
            kind, cr = c.info["coupon"], c.info["round"]
            rate = self.rounds[cr]["rates"][kind]
            if kind.startswith("app"):
                v = mul(c.info["weight"], rate)
                s["app"] += v
                choice = "Archive"
            elif kind == "validator":
                v = mul(c.info["weight"], rate)
                s["validator"] += v
                choice = "ValidatorRewardCoupon_ArchiveAsValidator"
            elif kind == "sv":
                v = c.info["weight"] // UNIT * rate
                s["sv"] += v
                choice = "SvRewardCoupon_ArchiveAsBeneficiary"
            else:
                v = rate
                s["validator"] += v
                s["faucet"] += v
                choice = "Archive"
            self.books.coupons[(cr, kind)]["claimed_n"] += 1
            self.books.coupons[(cr, kind)]["claimed_cc"] += v
            kids.append(self.consume(c, choice, [sender]))
        return s, kids

    def _transfer(self) -> None:
        rnd = self.rnd
        x = self.rounds[rnd]
        price = x["price"]
        era = self._fee_era(rnd)
        sender = self.rng.choice(self.users + self.validators + self.svs + self.providers)
        claim = self.rng.random() < self.cfg.claim_rate
        amulets, coupons = self._inputs(sender, 50 * UNIT, claim)
        if not amulets and not coupons:
            self._tap(sender, 500 * UNIT)
            return
        receiver = self.rng.choice([p for p in self.users + self.validators + self.providers if p != sender])
        provider = self.rng.choice(self.providers)
        featured = provider in self.featured
        self.books.versions_used.add(self.version(rnd))
        outer = self._id() if self.rng.random() < 0.3 else None  # wrapped by a non-summary choice
        root = self._id()
        s, kids = self._spend(sender, amulets, coupons, rnd)
        minted = s["app"] + s["validator"] + s["sv"]
        available = s["amulets"] - s["holding"] + minted
        create_fee = div(CREATE_FEE_USD, price) if era else 0
        dust = self.rng.random() < 0.1
        amount = DUST if dust else self.rng.randrange(1, max(2, available // 2))
        fee = create_fee + mul(amount, TRANSFER_RATE) if era else 0
        if available - amount - fee < 0:  # too little to pay the fees: send less
            amount, fee = DUST, (create_fee + mul(DUST, TRANSFER_RATE) if era else 0)
            if available - amount - fee < 0:
                amount, fee = 0, 0
        outputs = []
        if amount > 0:
            locked = not dust and self.rng.random() < 0.1
            outputs.append(self._amulet(receiver, amount, rnd, locked))
        leftover = available - amount - fee
        change_fee = min(create_fee, leftover) if era else 0
        change = leftover - change_fee
        change_eid = self._amulet(sender, change, rnd) if change > 0 else None
        coupon_kids = []
        if era and fee > 0:
            coupon_kids.append(self._coupon("validator", sender, fee, rnd))
        app = (fee if era else 0) + (div(EXTRA_FEATURED_USD, price) if featured else 0)
        if self._token_standard(rnd):
            if featured and amount > 0:  # a marker, converted into a coupon once a round
                coupon_kids.append(self.create(self.pkg(rnd), "Splice.Amulet", "FeaturedAppActivityMarker", rec(
                    ("dso", party(self.lg.dso)), ("provider", party(provider)), ("beneficiary", party(provider)),
                    ("weight", num(UNIT))), [self.lg.dso, provider], marker=provider)[0])  # fmt: skip
        elif app > 0 and amount > 0:
            coupon_kids.append(
                self._coupon("app_featured" if featured else "app_unfeatured", provider, app, rnd, featured)
            )
        burnt = fee + s["holding"] + change_fee
        summary = rec(
            ("inputAppRewardAmount", num(s["app"])), ("inputValidatorRewardAmount", num(s["validator"])),
            ("inputSvRewardAmount", num(s["sv"])), ("inputAmuletAmount", num(s["amulets"])),
            ("balanceChanges", {"genMap": {}}), ("holdingFees", num(s["holding"])),
            ("outputFees", {"list": {"elements": [num(fee)] if amount > 0 else []}}),
            ("senderChangeFee", num(change_fee)), ("senderChangeAmount", num(change)), ("amuletPrice", num(price)),
            ("inputValidatorFaucetAmount", {"optional": {"value": num(s["faucet"])}}),
            ("inputUnclaimedActivityRecordAmount", {"optional": {"value": num(0)}}),
        )  # fmt: skip
        made = [{"variant": {"constructor": "TransferResultLockedAmulet" if self.events[o]["template_id"].endswith(":LockedAmulet")
                             else "TransferResultAmulet", "value": cid_v(self.events[o]["contract_id"])}} for o in outputs]  # fmt: skip
        result = rec(("round", rnd_rec(rnd)), ("summary", summary), ("createdAmulets", {"list": {"elements": made}}),
                     ("senderChangeAmulet", {"optional": {"value": cid_v(self.events[change_eid]["contract_id"])}}
                      if change_eid else {"optional": {}}),
                     ("meta", {"optional": {}}))  # fmt: skip
        inputs = [{"variant": {"constructor": "InputAmulet", "value": cid_v(c.cid)}} for c in amulets] + [
            {"variant": {"constructor": _INPUT[c.info["coupon"]], "value": cid_v(c.cid)}} for c in coupons
        ]
        arg = rec(("transfer", rec(("sender", party(sender)), ("provider", party(provider)),
                                   ("inputs", {"list": {"elements": inputs}}),
                                   ("outputs", {"list": {"elements": [rec(("receiver", party(receiver)),
                                                                         ("amount", num(amount)))] if amount else []}}))),
                  ("context", rec(("openMiningRound", cid_v(x["open"].cid)))), ("expectedDso", {"optional": {}}))  # fmt: skip
        self.exercise(self._new_cid("amulet-rules"), self.pkg(rnd), "Splice.AmuletRules", "AmuletRules",
                      "AmuletRules_Transfer", arg, result, False, [sender], root)  # fmt: skip
        self.children(root, kids + outputs + ([change_eid] if change_eid else []) + coupon_kids)
        if outer is not None:
            self.exercise(self._new_cid("preapproval", receiver), self.pkg(rnd), "Splice.AmuletRules",
                          "TransferPreapproval", "TransferPreapproval_Send",
                          rec(("amount", num(amount)), ("description", {"optional": {}})),
                          rec(("result", result)), False, [sender], outer)  # fmt: skip
            self.children(outer, [root])
        self._book(rnd, sender, s, burnt, fee, 0, 0)

    def _markers(self) -> list[_C]:
        return sorted((c for c in self.live.values() if c.entity == "FeaturedAppActivityMarker"), key=lambda c: c.cid)

    def _convert_markers(self) -> None:
        """AmuletRules_ConvertFeaturedAppActivityMarkers: the markers archived, one featured
        AppRewardCoupon per provider of (1 USD / price) x the markers' weights, in the open round."""
        rnd = self.rnd
        price = self.rounds[rnd]["price"]
        root = self._id()
        kids: list[str] = []
        weights: dict[str, int] = defaultdict(int)
        for c in self._markers():
            weights[c.info["marker"]] += UNIT
            kids.append(self.consume(c, "FeaturedAppActivityMarker_DsoArchive", [self.lg.dso]))
        for provider, w in sorted(weights.items()):
            kids.append(self._coupon("app_featured", provider, mul(div(EXTRA_FEATURED_USD, price), w), rnd, True))
        self.dso(root, "DsoRules_AmuletRules_ConvertFeaturedAppActivityMarkers",
                 rec(("openMiningRoundCid", cid_v(self.rounds[rnd]["open"].cid))), kids)

    def _token_transfer(self) -> None:
        """TransferFactory_Transfer (0.1.17+): holdings in, holdings out, nothing minted or burnt,
        and no TransferSummary anywhere in the tree."""
        rnd = self.rnd
        sender = self.rng.choice(self.users + self.validators)
        amulets, _ = self._inputs(sender, 10 * UNIT, False)
        if not amulets:
            self._tap(sender, 500 * UNIT)
            return
        receiver = self.rng.choice([p for p in self.users + self.providers if p != sender])
        self.books.versions_used.add(self.version(rnd))
        self.books.by_round[rnd]["token_transfers"] += 1
        root = self._id()
        kids = [self.consume(c, "Archive", [sender]) for c in amulets]
        total = sum(c.info["amount"] for c in amulets)
        amount = self.rng.randrange(1, max(2, total // 2))
        out = self._amulet(receiver, amount, rnd)
        kids.append(out)
        kids.append(self._amulet(sender, total - amount, rnd))
        self.exercise(self._new_cid("external-party-amulet-rules"), self.pkg(rnd), "Splice.ExternalPartyAmuletRules",
                      "ExternalPartyAmuletRules", "TransferFactory_Transfer",
                      rec(("sender", party(sender)), ("receiver", party(receiver)), ("amount", num(amount))),
                      rec(("output", cid_v(self.events[out]["contract_id"]))), False, [sender], root)  # fmt: skip
        self.events[root]["interface_id"] = (
            "55ba4deb0ad4662c4168b39859738a0e91388d252286480c7331b3f71a517281:"
            "Splice.Api.Token.TransferInstructionV1:TransferFactory")  # splice-api-token-transfer-instruction-v1
        self.children(root, kids)

    def _book(self, rnd: int, who: str, s: dict[str, int], burnt: int, fees: int, traffic: int, paid: int) -> None:
        b, p = self.books.by_round[rnd], self.books.by_party[(rnd, who)]
        for k in ("app", "validator", "sv", "faucet"):
            b[k] += s[k]
            p[k] += s[k]
        b["holding"] += s["holding"]
        b["burnt"] += burnt + paid
        b["fees"] += fees
        b["transfers"] += 1
        if traffic:
            for d in (b, p):
                d["traffic_bytes"] += traffic
                d["traffic_cc"] += paid
                d["traffic_n"] += 1

    def _traffic(self) -> None:
        """AmuletRules_BuyMemberTraffic: a self-transfer of the price (split), its output archived
        at once (burn), a ValidatorRewardCoupon for the buyer, a MemberTraffic contract. The inner
        AmuletRules_Transfer repeats the summary: it must be counted once."""
        rnd = self.rnd
        x = self.rounds[rnd]
        era = self._fee_era(rnd)
        buyer = self.rng.choice(self.validators)
        traffic = self.rng.randrange(100_000, 5_000_000)
        usd = div(traffic * UNIT, 10**6 * UNIT)
        usd = mul(usd, TRAFFIC_USD_PER_MB)
        cc = div(usd, x["price"])
        fee = div(CREATE_FEE_USD, x["price"]) if era else 0
        amulets, _ = self._inputs(buyer, cc + 2 * fee + UNIT, False)
        if sum(c.info["amount"] for c in amulets) < cc + 2 * fee + UNIT:
            self._tap(buyer, cc + 100 * UNIT)
            return
        self.books.versions_used.add(self.version(rnd))
        root, inner = self._id(), self._id()
        s, kids = self._spend(buyer, amulets, [], rnd)
        leftover = s["amulets"] - s["holding"] - cc - fee
        change_fee = min(fee, leftover) if era else 0
        change = leftover - change_fee
        out = self._amulet(buyer, cc, rnd)
        change_eid = self._amulet(buyer, change, rnd) if change > 0 else None
        burn = self.consume(self.live[self.events[out]["contract_id"]], "Archive", [buyer])
        coupon = self._coupon("validator", buyer, cc + fee, rnd)
        t_eid, traffic_c = self.create(self.pkg(rnd), "Splice.DecentralizedSynchronizer", "MemberTraffic", rec(
            ("dso", party(self.lg.dso)), ("memberId", text(f"PAR::{buyer.split('::')[0]}")),
            ("synchronizerId", text(self.lg.synchronizer_id(0))), ("migrationId", i64(self.m)),
            ("totalPurchased", i64(traffic)), ("numPurchases", i64(1)), ("amuletSpent", num(cc)), ("usdSpent", num(usd))),
            [self.lg.dso])  # fmt: skip
        summary = rec(
            ("inputAppRewardAmount", num(0)), ("inputValidatorRewardAmount", num(0)), ("inputSvRewardAmount", num(0)),
            ("inputAmuletAmount", num(s["amulets"])), ("balanceChanges", {"genMap": {}}), ("holdingFees", num(s["holding"])),
            ("outputFees", {"list": {"elements": [num(fee)]}}), ("senderChangeFee", num(change_fee)),
            ("senderChangeAmount", num(change)), ("amuletPrice", num(x["price"])))  # fmt: skip
        change_v = ({"optional": {"value": cid_v(self.events[change_eid]["contract_id"])}} if change_eid
                    else {"optional": {}})  # fmt: skip
        inputs = [{"variant": {"constructor": "InputAmulet", "value": cid_v(c.cid)}} for c in amulets]
        self.exercise(self._new_cid("amulet-rules"), self.pkg(rnd), "Splice.AmuletRules", "AmuletRules",
                      "AmuletRules_Transfer",
                      rec(("transfer", rec(("sender", party(buyer)), ("provider", party(buyer)),
                                           ("inputs", {"list": {"elements": inputs}}),
                                           ("outputs", {"list": {"elements": [rec(("receiver", party(buyer)),
                                                                                 ("amount", num(cc)))]}})))),
                      rec(("round", rnd_rec(rnd)), ("summary", summary),
                          ("createdAmulets", {"list": {"elements": [{"variant": {"constructor": "TransferResultAmulet",
                                                                                 "value": cid_v(self.events[out]["contract_id"])}}]}}),
                          ("senderChangeAmulet", change_v)), False, [buyer], inner)  # fmt: skip
        self.children(inner, kids + [out] + ([change_eid] if change_eid else []))
        self.exercise(self._new_cid("amulet-rules"), self.pkg(rnd), "Splice.AmuletRules", "AmuletRules",
                      "AmuletRules_BuyMemberTraffic",
                      rec(("inputs", {"list": {"elements": inputs}}), ("provider", party(buyer)),
                          ("memberId", text(f"PAR::{buyer.split('::')[0]}")),
                          ("synchronizerId", text(self.lg.synchronizer_id(0))), ("migrationId", i64(self.m)),
                          ("trafficAmount", i64(traffic))),
                      rec(("round", rnd_rec(rnd)), ("summary", summary), ("amuletPaid", num(cc)),
                          ("purchasedTraffic", cid_v(traffic_c.cid)), ("senderChangeAmulet", change_v),
                          ("meta", {"optional": {}})), False, [buyer], root)  # fmt: skip
        self.children(root, [inner, burn, coupon, t_eid])
        self._book(rnd, buyer, s, fee + s["holding"] + change_fee, fee, traffic, cc)

    # ----- serving ---------------------------------------------------------------------------------

    def final(self, m: int) -> list[_C]:
        return self.finals.get(m, [])

    def active(self, m: int, t_us: int) -> list[_C]:
        """Contracts alive at position (m, t), oldest first."""
        pos = (m, t_us)
        out = [c for c, made, ended in self.lives.values() if made <= pos and (ended is None or ended > pos)]
        return sorted(out, key=lambda c: (c.where[0], self.lg.record_us(*c.where), c.cid))

    def created_event(self, c: _C, eid: str) -> Json:
        return self._created_json(c, eid)


_INPUT = {"app_featured": "InputAppRewardCoupon", "app_unfeatured": "InputAppRewardCoupon",
          "validator": "InputValidatorRewardCoupon", "sv": "InputSvRewardCoupon",
          "liveness": "InputValidatorLivenessActivityRecord"}  # fmt: skip


def tranche(to_issue: int, cap: int, total: int) -> tuple[int, int]:
    """(rate per coupon unit, unclaimed) of one issuance tranche (Splice's `computeIssuanceTranche`)."""
    if total <= 0:
        return cap, to_issue
    capped = min(to_issue, mul(cap, total))
    rate = div(mul(capped, cap), mul(cap, total))
    return rate, max(0, to_issue - mul(rate, total))


# ----- protobuf_json values --------------------------------------------------------------------------


def rec(*fields: tuple[str, Json]) -> Json:
    return {"record": {"fields": [{"label": k, "value": v} for k, v in fields]}}


def num(x: int) -> Json:
    sign = "-" if x < 0 else ""
    x = abs(x)
    return {"numeric": f"{sign}{x // UNIT}.{x % UNIT:010d}"}


def i64(n: int) -> Json:
    return {"int64": str(n)}


def party(p: str) -> Json:
    return {"party": p}


def text(s: str) -> Json:
    return {"text": s}


def ts(us: int) -> Json:
    return {"timestamp": str(us)}


def cid_v(cid: str) -> Json:
    return {"contractId": cid}


def confirmed(action: str, value: Json) -> Json:
    """The argument of DsoRules_ExecuteConfirmedAction for an AmuletRules action the SVs confirmed."""
    return rec(("action", {"variant": {"constructor": "ARC_AmuletRules", "value": rec(
        ("amuletRulesAction", {"variant": {"constructor": action, "value": value}}))}}))


def rnd_rec(n: int) -> Json:
    return rec(("number", i64(n)))


class EconomyLedger(Ledger):
    """A `Ledger` whose updates, imports and snapshots come from an `Economy`."""

    def __init__(self, config: LedgerConfig) -> None:
        super().__init__(config)
        assert config.economy is not None
        self.economy = Economy(self, config.economy)

    def header(self, m: int, s: int, i: int) -> UpdateHeader:
        return self.economy.headers[(m, i)]

    def update(self, m: int, s: int, i: int) -> Json:
        return self.economy.updates[(m, i)]

    def _economy_imports(self, m: int) -> dict[str, Any]:
        spec, prev = self.specs.get(m), self.previous.get(m)
        if spec is None or not spec.import_updates or prev is None:
            return {}
        return {c.cid: c for c in self.economy.final(prev)}

    def import_ids(self, m: int) -> list[str]:
        return sorted(self._economy_imports(m))

    def import_update(self, m: int, cid: str) -> Json:
        c = self._economy_imports(m)[cid]
        eid = f"{cid}:0"
        return {"update_id": cid, "migration_id": m, "workflow_id": f"canton-network-acs-import-{cid}",
                "record_time": IMPORT_TIME, "synchronizer_id": self.synchronizer_id(0),
                "effective_at": format_instant(MIN_US), "offset": V1_OFFSET, "root_event_ids": [eid],
                "events_by_id": {eid: self.economy.created_event(c, eid)}}  # fmt: skip

    def acs(self, m: int, t_us: int) -> list[tuple[str, Ref]]:
        return [(c.cid, Ref(c.where[0], c.where[1], c.where[2], c.cid)) for c in self.economy.active(m, t_us)]

    def created_event(self, ref: Ref, eid: str) -> Json:
        return self.economy.created_event(self.economy.lives[ref.name][0], eid)


def make_ledger(config: LedgerConfig) -> Ledger:
    """The ledger a config describes: with `economy` set, one played forward with real economics."""
    return EconomyLedger(config) if config.economy is not None else Ledger(config)
