"""A ledger with real round economics, generated in order, and the books of what it meant.

The default simulator is random-access and its amounts only look plausible. This one plays a small
Canton economy forward, update by update: mining rounds go open -> summarizing -> issuing -> closed
-> archived on Splice's schedule; transfers consume real holdings and the reward coupons of issuing
rounds, minting `amount x rate` of the coupon's own IssuingMiningRound (rounded half-even to 10
places, in input order); coupons nobody claims expire when their round closes; validators buy
traffic (split and burn); dust amulets expire; the network moves from `splice-amulet` 0.1.13
(transfer fees and holding fees charged on inputs) to 0.1.14 (CIP-0078: no holding fees on inputs,
fees voted to zero, featured transfers still earn a coupon), to 0.1.17 (CIP-0107:
token-standard transfers without AmuletRules_Transfer, featured transfers earn activity markers that
the DSO converts into coupons once a round, V2 expiry and unlock choices) and then to 0.1.21 (Token
Standard V2: output metadata, a transaction history of holdings changes) at rounds of its choice.

Everything it intends is written into `Books` while it generates, in its own terms (per coupon,
per purchase), so a derivation from the stored history is compared with what was meant, not with
itself. All amounts are integers in units of 10^-10 (Daml's Numeric 10).

Every template, choice argument and choice result is written from Splice's Daml (`daml/` in
canton-network/splice) of the version the network runs in that round: splice-amulet 0.1.13 (with
splice-dso-governance 0.1.18), 0.1.14 (0.1.19), 0.1.17 (0.1.23) and 0.1.21 (0.1.27), package ids
from `daml/dars.lock`. Where a shape changed between them the builder says which version added the
field. The tree of each step is Splice's: a DsoRules choice exercises the AmuletRules choice that
archives and creates the rounds; genesis is a DsoBootstrap create and its DsoBootstrap_Bootstrap
(AmuletRules, ExternalPartyAmuletRules, the rounds, DsoRules below it) as on MainNet, validators
are onboarded by DsoRules_OnboardValidator, preapprovals created by AmuletRules_CreateTransferPreapproval.
Simplified, and said so: confirmations and price votes are not modelled (empty lists), every SV's
reward state is created at genesis, ValidatorRight and FeaturedAppRight contracts are referenced by
id only, configs hold the fields the simulator uses (DsoRulesConfig abbreviated), the rounds keep
the simulator's schedule (one opens every tick) rather than Bootstrap_Rounds' first long round, and
ExternalPartyConfigState contracts are referenced by id only, so the 0.1.21 transaction-history
events logged through them (a token-standard self-transfer's, a dust expiry's) are left out; those
logged through AmuletRules or a temporary AmuletEventLog (transfers, mints, splitAndBurn, unlocks)
are there.

Scope: one synchronizer per migration (a transfer consumes what lives on its own synchronizer);
no reassignments. Contracts alive when a migration ends are imported by the next one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from scanfill.economy.packages import DSO_PACKAGES, DSO_WITH_AMULET, PACKAGE_OF, minor
from scanfill.sim.ledger import IMPORT_TIME, V1_OFFSET, EconomyConfig, Json, Ledger, LedgerConfig, UpdateHeader
from scanfill.sim.lifecycle import Ref
from scanfill.timeutil import MIN_US, format_instant, format_trimmed, format_us

UNIT = 10**10
DSO_PKGS = frozenset(DSO_PACKAGES.values())
TOKEN_TRANSFER_V1 = "55ba4deb0ad4662c4168b39859738a0e91388d252286480c7331b3f71a517281"  # splice-api-token-transfer-instruction-v1 1.0.0
EVENT_LOG = ("5c1097a9bad0af4bcfe6d3fb0fe55112d3d11f18eae57ddfb14c20836fee226c"  # splice-api-token-transfer-events-v2 1.0.0
             ":Splice.Api.Token.TransferEventsV2:EventLog")  # fmt: skip
HOLDING_RATE = 190259  # CC per round an amulet pays for being held (units)
CREATE_FEE_USD = 3 * 10**8  # 0.03 USD per output (fee era)
TRANSFER_RATE = 10**7  # 0.001 of the amount (fee era; Splice's steps start at 1 %, lower here)
EXTRA_FEATURED_USD = UNIT  # 1 USD of extra app reward for a featured transfer
TRAFFIC_USD_PER_MB = 16_670_000_000  # 16.67 USD per MB of extra traffic
PREAPPROVAL_USD_PER_DAY = 27_400_000  # 0.00274 USD: AmuletConfig.daml's defaultTransferPreapprovalFee
PREAPPROVAL_DAYS = 90
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


@dataclass
class _Change:
    """One EventLog_HoldingsChange of Token Standard V2's transaction history (0.1.21): an account
    (a party's basic account, or the mint/burn account when `owner` is None), what it gave and got."""

    owner: str | None
    ident: str = ""
    inputs: list[str] = field(default_factory=list)
    legs: list[Json] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    reason: str | None = None


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
        """The splice-amulet package the network runs in round `rnd`."""
        return PACKAGE_OF[self.version(rnd)]

    def dso_pkg(self, rnd: int) -> str:
        """The splice-dso-governance package released with that amulet version."""
        return DSO_PACKAGES[DSO_WITH_AMULET[self.version(rnd)]]

    def version(self, rnd: int) -> str:
        """The version the network runs in round `rnd` (upgrades take effect at round boundaries)."""
        k = sum(1 for u in self.cfg.upgrades if rnd >= self.r0 + u)
        return self.cfg.versions[min(k, len(self.cfg.versions) - 1)]

    def since(self, rnd: int, n: int) -> bool:
        """Whether round `rnd` runs splice-amulet 0.1.n or later (a field that version added)."""
        return minor(self.version(rnd)) >= n

    def _token_standard(self, rnd: int) -> bool:
        """From 0.1.17 (CIP-0107) token-standard transfers move holdings without AmuletRules_Transfer
        (no summary, no coupons minted), and featured transfers earn activity markers."""
        return self.since(rnd, 17)

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
        return "splice-dso-governance" if pkg in DSO_PKGS else "splice-amulet"

    def exercise(self, cid: str, pkg: str, module: str, entity: str, choice: str, arg: Json, result: Json,
                 consuming: bool, acting: list[str], eid: str | None = None, interface: str | None = None) -> str:  # fmt: skip
        eid = eid or self._id()
        self.events[eid] = {"event_type": "exercised_event", "event_id": eid, "contract_id": cid,
                            "template_id": f"{pkg}:{module}:{entity}", "package_name": self._pkg_name(pkg),
                            "choice": choice, "choice_argument": arg, "child_event_ids": [],
                            "exercise_result": result, "consuming": consuming, "interface_id": interface,
                            "acting_parties": acting}  # fmt: skip
        if consuming:
            c = self.live.pop(cid)
            self.lives[cid] = (c, self.lives[cid][1], (self.m, self.t))
            if c.entity in ("Amulet", "LockedAmulet"):
                self.supply -= c.info["amount"]
        return eid

    def consume(self, c: _C, choice: str, acting: list[str], result: Json | None = None, arg: Json | None = None,
                pkg: str | None = None) -> str:  # fmt: skip
        """A consuming choice on `c` (default: the template's Archive, as `fetchAndArchive` does)."""
        return self.exercise(c.cid, pkg or (c.pkg if c.pkg in DSO_PKGS else self.pkg(self.rnd)), c.module, c.entity,
                             choice, arg or rec(), result or UNIT_V, True, acting)  # fmt: skip

    def children(self, parent: str, kids: list[str]) -> None:
        self.events[parent]["child_event_ids"] = kids

    @property
    def delegate(self) -> str:
        """The SV whose automation submits the DSO's choices (DsoRules' dsoDelegate)."""
        return self.svs[0]

    def dso(self, root: str, choice: str, arg: Json, kids: list[str], result: Json) -> None:
        """The step's root: a DsoRules choice (nonconsuming, `controller sv`) over the events `kids`.
        `arg` holds the choice's own fields; `sv` (Some delegate) is appended as the Daml declares it last."""
        arg = {"record": {"fields": [*arg["record"]["fields"], {"label": "sv", "value": opt(party(self.delegate))}]}}
        self.exercise(self.dso_rules.cid, self.dso_pkg(self.rnd), "Splice.DsoRules", "DsoRules", choice, arg, result,
                      False, [self.delegate], root)  # fmt: skip
        self.children(root, kids)

    def rules(self, eid: str, choice: str, arg: Json, result: Json, kids: list[str], acting: list[str] | None = None,
              rnd: int | None = None) -> str:  # fmt: skip
        """A nonconsuming AmuletRules choice (the contract created at genesis, exercised by the package
        of the round's version) over `kids`."""
        self.exercise(self.amulet_rules.cid, self.pkg(self.rnd if rnd is None else rnd), "Splice.AmuletRules",
                      "AmuletRules", choice, arg, result, False, acting or [self.lg.dso], eid)  # fmt: skip
        self.children(eid, kids)
        return eid

    def _finish(self, shape: str, rnd: int | None) -> None:
        if not self.events:  # a step that found nothing to do (no dust to expire...): a tap instead
            self._tap(self.users[self.i % len(self.users)], UNIT)
        order = sorted(self.events)
        key = (self.m, self.i)
        below = {k for e in self.events.values() for k in e.get("child_event_ids") or ()}
        roots = sorted((k for k in self.events if k not in below), key=lambda k: int(k.rsplit(":", 1)[1]))
        self.updates[key] = {
            "update_id": self.uid, "migration_id": self.m, "workflow_id": "", "record_time": format_us(self.t),
            "synchronizer_id": self.lg.synchronizer_id(0), "effective_at": format_instant(self.eff),
            "offset": V1_OFFSET, "root_event_ids": roots, "events_by_id": {k: self.events[k] for k in order},
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
        if g <= len(self.validators):
            self._onboard(self.validators[g - 1])
            return "coupon"
        if g <= len(self.validators) + len(self.users) + len(self.validators):
            parties = self.users + self.validators
            self._tap(parties[g - 1 - len(self.validators)], 2_000 * UNIT + self.rng.randrange(0, 500 * UNIT))
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
        if phase == 13 and (who := self._unapproved()) is not None:
            self._create_preapproval(who)
            return "transfer"
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

    # ----- configuration records ----------------------------------------------------------------

    def _transfer_config(self, rnd: int) -> Json:
        """TransferConfig USD (AmuletConfig.daml; tokenStandardMaxTTL from 0.1.21)."""
        era = self._fee_era(rnd)
        fields: list[tuple[str, Json]] = [
            ("createFee", rec(("fee", num(CREATE_FEE_USD if era else 0)))),
            ("holdingFee", rec(("rate", num(HOLDING_RATE)))),
            ("transferFee", rec(("initialRate", num(TRANSFER_RATE if era else 0)), ("steps", lst([])))),
            ("lockHolderFee", rec(("fee", num(0)))), ("extraFeaturedAppRewardAmount", num(EXTRA_FEATURED_USD)),
            ("maxNumInputs", i64(100)), ("maxNumOutputs", i64(100)), ("maxNumLockHolders", i64(50))]  # fmt: skip
        if self.since(rnd, 21):
            fields.append(("tokenStandardMaxTTL", opt(None)))
        return rec(*fields)

    def _issuance_config(self, rnd: int) -> Json:
        """IssuanceConfig (Issuance.daml; optDevelopmentFundPercentage from 0.1.15)."""
        fields: list[tuple[str, Json]] = [
            ("amuletToIssuePerYear", num(40_000_000_000 * UNIT)), ("validatorRewardPercentage", num(5 * 10**9)),
            ("appRewardPercentage", num(15 * 10**8)), ("validatorRewardCap", num(2 * 10**9)),
            ("featuredAppRewardCap", num(100 * UNIT)), ("unfeaturedAppRewardCap", num(6 * 10**9)),
            ("optValidatorFaucetCap", opt(num(285 * 10**8)))]  # fmt: skip
        if self.since(rnd, 15):
            fields.append(("optDevelopmentFundPercentage", opt(None)))
        return rec(*fields)

    def _amulet_config(self, rnd: int) -> Json:
        """AmuletConfig USD (AmuletConfig.daml of the genesis version)."""
        v = self.version(rnd)
        return rec(
            ("transferConfig", self._transfer_config(rnd)),
            ("issuanceCurve", rec(("initialValue", self._issuance_config(rnd)), ("futureValues", lst([])))),
            ("decentralizedSynchronizer", rec(
                ("requiredSynchronizers", rec(("map", genmap([(text(self.lg.synchronizer_id(0)), UNIT_V)])))),
                ("activeSynchronizer", text(self.lg.synchronizer_id(0))),
                ("fees", rec(("baseRateTrafficLimits", rec(("burstAmount", i64(200_000)),
                                                             ("burstWindow", reltime(1_200_000_000)))),
                             ("extraTrafficPrice", num(TRAFFIC_USD_PER_MB)), ("readVsWriteScalingFactor", i64(4)),
                             ("minTopupAmount", i64(200_000)))))),
            ("tickDuration", reltime(self.tick)),
            ("packageConfig", rec(("amulet", text(v)), ("amuletNameService", text(v)),
                                  ("dsoGovernance", text(DSO_WITH_AMULET[v])), ("validatorLifecycle", text("0.1.5")),
                                  ("wallet", text(v)), ("walletPayments", text(v)))),
            ("transferPreapprovalFee", opt(None)), ("featuredAppActivityMarkerAmount", opt(num(EXTRA_FEATURED_USD))),
        )  # fmt: skip

    def _dso_config(self) -> Json:
        """DsoRulesConfig (DsoRules.daml), the fields the simulator has a use for; the rest of
        Splice's config (synchronizer node limits, vote timeouts...) is left out."""
        return rec(("numUnclaimedRewardsThreshold", i64(10)), ("numMemberTrafficContractsThreshold", i64(5)),
                   ("actionConfirmationTimeout", reltime(3_600_000_000)),
                   ("svOnboardingRequestTimeout", reltime(3_600_000_000)),
                   ("svOnboardingConfirmedTimeout", reltime(3_600_000_000)),
                   ("voteRequestTimeout", reltime(604_800_000_000)),
                   ("dsoDelegateInactiveTimeout", reltime(70_000_000)))  # fmt: skip

    @staticmethod
    def _sv_name(sv: str) -> str:
        return sv.split("::")[0]

    # ----- rounds --------------------------------------------------------------------------------

    def _open_args(self, rnd: int, opens_at: int) -> Json:
        """OpenMiningRound (Round.daml; trafficPrice and rewardConfig from 0.1.21)."""
        price = 5 * 10**8 + (rnd % 7) * 10**7  # 0.05 .. 0.11 USD per CC
        self.rounds[rnd] = {"phase": "open", "opens_at": opens_at, "price": price}
        fields: list[tuple[str, Json]] = [
            ("dso", party(self.lg.dso)), ("round", rnd_rec(rnd)), ("amuletPrice", num(price)),
            ("opensAt", ts(opens_at)), ("targetClosesAt", ts(opens_at + 2 * self.tick)),
            ("issuingFor", reltime((rnd - self.r0) * self.tick)), ("transferConfigUsd", self._transfer_config(rnd)),
            ("issuanceConfig", self._issuance_config(rnd)), ("tickDuration", reltime(self.tick))]  # fmt: skip
        if self.since(rnd, 21):
            fields += [("trafficPrice", opt(num(TRAFFIC_USD_PER_MB))), ("rewardConfig", opt(None))]
        return rec(*fields)

    def _fee_era(self, rnd: int) -> bool:
        return minor(self.version(rnd)) <= 13

    def _bootstrap(self) -> None:
        """Genesis as on MainNet (DsoBootstrap.daml): a DsoBootstrap contract, then its consuming
        DsoBootstrap_Bootstrap (result: the enum DsoBootstrap_BootstrapResult) creating AmuletRules and
        ExternalPartyAmuletRules, exercising AmuletRules_Bootstrap_Rounds (three open rounds), creating
        DsoRules and each SV's SvRewardState (the other SVs' too: their onboarding is not modelled)."""
        rnd, dso, sv1 = self.r0, self.lg.dso, self.delegate
        apkg, dpkg = self.pkg(rnd), self.dso_pkg(rnd)
        price = 5 * 10**8 + (rnd % 7) * 10**7
        config = self._amulet_config(rnd)
        _, boot = self.create(dpkg, "Splice.DsoBootstrap", "DsoBootstrap", rec(
            ("dso", party(dso)), ("sv1Party", party(sv1)), ("sv1Name", text(self._sv_name(sv1))),
            ("sv1RewardWeight", i64(10)), ("sv1ParticipantId", text(f"PAR::{sv1}")), ("sv1SynchronizerNodes", genmap([])),
            ("round0Duration", reltime(self.tick)), ("amuletConfig", config), ("amuletPrice", num(price)),
            ("ansRulesConfig", rec(("renewalDuration", reltime(2_592_000_000_000)),
                                   ("entryLifetime", reltime(7_776_000_000_000)), ("entryFee", num(UNIT)),
                                   ("descriptionPrefix", text("CNS entry: ")))),
            ("config", self._dso_config()), ("initialTrafficState", genmap([])), ("isDevNet", {"bool": True}),
            ("initialRound", opt(i64(rnd)))), [dso], [sv1])  # fmt: skip
        root = self._id()
        kids = []
        eid, self.amulet_rules = self.create(apkg, "Splice.AmuletRules", "AmuletRules", rec(
            ("dso", party(dso)), ("configSchedule", rec(("initialValue", config), ("futureValues", lst([])))),
            ("isDevNet", {"bool": True})), [dso])  # fmt: skip
        kids.append(eid)
        eid, self.ext_rules = self.create(apkg, "Splice.ExternalPartyAmuletRules", "ExternalPartyAmuletRules",
                                          rec(("dso", party(dso))), [dso])  # fmt: skip
        kids.append(eid)
        boot_rounds = self._id()
        opened = []
        for k in range(3):
            eid, c = self.create(apkg, "Splice.Round", "OpenMiningRound",
                                 self._open_args(rnd + k, self.now + k * self.tick), [dso], number=rnd + k)  # fmt: skip
            self.rounds[rnd + k]["open"] = c
            opened.append(eid)
        self.rules(boot_rounds, "AmuletRules_Bootstrap_Rounds",
                   rec(("amuletPrice", num(price)), ("round0Duration", reltime(self.tick)), ("initialRound", opt(i64(rnd)))),
                   rec(("openMiningRoundCid", cid_v(self.rounds[rnd]["open"].cid)), ("initialRound", opt(rnd_rec(rnd)))),
                   opened, rnd=rnd)  # fmt: skip
        kids.append(boot_rounds)
        svs = genmap([(party(sv), rec(("name", text(self._sv_name(sv))), ("joinedAsOfRound", rnd_rec(rnd)),
                                      ("svRewardWeight", i64(10 * (1 + k))), ("participantId", text(f"PAR::{sv}"))))
                      for k, sv in enumerate(self.svs)])  # fmt: skip
        eid, self.dso_rules = self.create(dpkg, "Splice.DsoRules", "DsoRules", rec(
            ("dso", party(dso)), ("epoch", i64(0)), ("svs", svs), ("offboardedSvs", genmap([])),
            ("dsoDelegate", party(sv1)), ("config", self._dso_config()), ("initialTrafficState", genmap([])),
            ("isDevNet", {"bool": True})), [dso])  # fmt: skip
        kids.append(eid)
        self.sv_states: dict[str, _C] = {}
        for sv in self.svs:
            eid, self.sv_states[sv] = self.create(dpkg, "Splice.DSO.SvState", "SvRewardState",
                                                  self._sv_state(sv, rnd - 1, 0), [dso])  # fmt: skip
            kids.append(eid)
        self.licenses: dict[str, _C] = {}
        self.preapprovals: dict[str, _C] = {}
        self.exercise(boot.cid, dpkg, "Splice.DsoBootstrap", "DsoBootstrap", "DsoBootstrap_Bootstrap", rec(),
                      enum("DsoBootstrap_BootstrapResult"), True, [dso], root)  # fmt: skip
        self.children(root, kids)

    def _onboard(self, validator: str) -> None:
        """DsoRules_OnboardValidator (DsoRules.daml): the sponsoring SV creates the validator's license."""
        root = self._id()
        eid, self.licenses[validator] = self.create(self.pkg(self.rnd), "Splice.ValidatorLicense", "ValidatorLicense",
                                                    self._license(validator, None, self.eff), [self.lg.dso],
                                                    [validator])  # fmt: skip
        self.exercise(self.dso_rules.cid, self.dso_pkg(self.rnd), "Splice.DsoRules", "DsoRules",
                      "DsoRules_OnboardValidator",
                      rec(("sponsor", party(self.delegate)), ("validator", party(validator)), ("version", opt(None)),
                          ("contactPoint", opt(None))),
                      rec(("validatorLicense", cid_v(self.licenses[validator].cid))), False, [self.delegate], root)  # fmt: skip
        self.children(root, [eid])

    def _sv_state(self, sv: str, last: int, collected: int) -> Json:
        """SvRewardState (splice-dso-governance Splice.DSO.SvState)."""
        return rec(("dso", party(self.lg.dso)), ("svName", text(self._sv_name(sv))), ("state", rec(
            ("numRoundsMissed", i64(0)), ("numRoundsCollected", i64(collected)), ("lastRoundCollected", rnd_rec(last)),
            ("numCouponsIssued", i64(collected)))))  # fmt: skip

    def _license(self, v: str, faucet: tuple[int, int] | None, active_us: int | None, sponsor: str | None = None) -> Json:
        """ValidatorLicense (splice-amulet Splice.ValidatorLicense; from 0.1.21 a license the validator
        renews names itself as sponsor)."""
        state = opt(rec(("firstReceivedFor", rnd_rec(faucet[0])), ("lastReceivedFor", rnd_rec(faucet[1])),
                        ("numCouponsMissed", i64(0)))) if faucet else opt(None)  # fmt: skip
        return rec(("validator", party(v)), ("sponsor", party(sponsor or self.delegate)), ("dso", party(self.lg.dso)),
                   ("faucetState", state), ("metadata", opt(None)),
                   ("lastActiveAt", opt(ts(active_us)) if active_us is not None else opt(None)))  # fmt: skip

    def _advance(self) -> None:
        """DsoRules_AdvanceOpenMiningRounds -> AmuletRules_AdvanceOpenMiningRounds: the oldest open round
        archived, its SummarizingMiningRound and the next OpenMiningRound created."""
        opens = sorted(r for r, x in self.rounds.items() if x["phase"] == "open")
        oldest, middle, newest = opens[0], opens[-2], opens[-1]
        pkg = self.pkg(newest + 1)
        root, inner = self._id(), self._id()
        x = self.rounds[oldest]
        arch = self.consume(x["open"], "Archive", [self.lg.dso], pkg=self.pkg(oldest))
        s_args: list[tuple[str, Json]] = [
            ("dso", party(self.lg.dso)), ("round", rnd_rec(oldest)), ("amuletPrice", num(x["price"])),
            ("issuanceConfig", self._issuance_config(newest + 1)), ("tickDuration", reltime(self.tick))]  # fmt: skip
        if self.since(newest + 1, 21):
            s_args += [("trafficPrice", opt(num(TRAFFIC_USD_PER_MB))), ("rewardConfig", opt(None))]
        s_eid, s = self.create(pkg, "Splice.Round", "SummarizingMiningRound", rec(*s_args), [self.lg.dso])
        x.update(phase="summarizing", summarizing=s)
        opens_at = max(self.now, self.rounds[newest]["opens_at"]) + self.tick
        o_eid, o = self.create(
            pkg, "Splice.Round", "OpenMiningRound", self._open_args(newest + 1, opens_at), [self.lg.dso]
        )
        self.rounds[newest + 1]["open"] = o
        cids = (("roundToArchiveCid", cid_v(x["open"].cid)), ("middleRoundCid", cid_v(self.rounds[middle]["open"].cid)),
                ("latestRoundCid", cid_v(self.rounds[newest]["open"].cid)))  # fmt: skip
        self.rules(inner, "AmuletRules_AdvanceOpenMiningRounds",
                   rec(("amuletPrice", num(self.rounds[newest + 1]["price"])), *cids),
                   rec(("summarizingRoundCid", cid_v(s.cid)), ("openRoundCid", cid_v(o.cid))), [arch, s_eid, o_eid],
                   rnd=newest + 1)  # fmt: skip
        self.dso(root, "DsoRules_AdvanceOpenMiningRounds",
                 rec(("amuletRulesCid", cid_v(self.amulet_rules.cid)), *cids, ("amuletPriceVoteCids", lst([]))), [inner],
                 rec(("summarizingRound", cid_v(s.cid)), ("openRound", cid_v(o.cid))))  # fmt: skip

    def _summarizing(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "summarizing"]
        return min(got) if got else None

    def _coupons_of(self, rnd: int) -> list[_C]:
        return [c for c in self.live.values() if c.info.get("coupon") and c.info["round"] == rnd]

    def _confirmed(self, root: str, action: str, value: Json, inner: str, result: Json, kids: list[str],
                   rnd: int) -> None:  # fmt: skip
        """DsoRules_ExecuteConfirmedAction (result: the enum DsoRules_ExecuteConfirmedActionResult) that
        exercises the confirmed AmuletRules choice `action` (its argument `value`) below it, by the
        package of round `rnd` (whose Daml `result` follows)."""
        self.rules(inner, "AmuletRules_" + action.removeprefix("CRARC_"), value, result, kids, rnd=rnd)
        self.dso(root, "DsoRules_ExecuteConfirmedAction", rec(
            ("action", variant("ARC_AmuletRules", rec(("amuletRulesAction", variant(action, value))))),
            ("amuletRulesCid", opt(cid_v(self.amulet_rules.cid))), ("confirmationCids", lst([]))),
            [inner], enum("DsoRules_ExecuteConfirmedActionResult"))  # fmt: skip

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
        root, inner = self._id(), self._id()
        arch = self.consume(x["summarizing"], "Archive", [self.lg.dso], pkg=pkg)
        i_eid, issuing = self.create(pkg, "Splice.Round", "IssuingMiningRound", rec(
            ("dso", party(self.lg.dso)), ("round", rnd_rec(rnd)),
            ("issuancePerValidatorRewardCoupon", num(rates["validator"])),
            ("issuancePerFeaturedAppRewardCoupon", num(rates["app_featured"])),
            ("issuancePerUnfeaturedAppRewardCoupon", num(rates["app_unfeatured"])),
            ("issuancePerSvRewardCoupon", num(rates["sv"])), ("opensAt", ts(self.t + self.tick)),
            ("targetClosesAt", ts(self.t + 3 * self.tick)),
            ("optIssuancePerValidatorFaucetCoupon", opt(num(rates["liveness"])))), [self.lg.dso])  # fmt: skip
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
                      ("optTotalValidatorFaucetCoupons", opt(i64(tot["liveness"] // UNIT))))  # fmt: skip
        result: list[tuple[str, Json]] = [("issuingRoundCid", cid_v(issuing.cid))]
        if self.since(rnd, 15):
            result.append(("unclaimedDevelopmentFundCouponCid", opt(None)))
        self._confirmed(root, "CRARC_MiningRound_StartIssuing",
                        rec(("miningRoundCid", cid_v(x["summarizing"].cid)), ("summary", summary)), inner,
                        rec(*result), kids, rnd)  # fmt: skip

    def _to_close(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "issuing" and x["issuing_since"] + 2 <= self.ticks]
        return min(got) if got else None

    @property
    def ticks(self) -> int:
        return max(self.rounds) - self.r0

    def _close(self, rnd: int) -> None:
        """DsoRules_MiningRound_Close -> AmuletRules_MiningRound_Close: issuing archived, closed created."""
        x = self.rounds[rnd]
        pkg = self.pkg(rnd)
        root, inner = self._id(), self._id()
        arch = self.consume(x["issuing"], "Archive", [self.lg.dso], pkg=pkg)
        r = x["rates"]
        c_eid, closed = self.create(pkg, "Splice.Round", "ClosedMiningRound", rec(
            ("dso", party(self.lg.dso)), ("round", rnd_rec(rnd)),
            ("issuancePerValidatorRewardCoupon", num(r["validator"])),
            ("issuancePerFeaturedAppRewardCoupon", num(r["app_featured"])),
            ("issuancePerUnfeaturedAppRewardCoupon", num(r["app_unfeatured"])),
            ("issuancePerSvRewardCoupon", num(r["sv"])),
            ("optIssuancePerValidatorFaucetCoupon", opt(num(r["liveness"])))), [self.lg.dso])  # fmt: skip
        x.update(phase="closed", closed=closed)
        self.books.closed[rnd] = len(self.books.supply_after)
        self.books.closed_at[rnd] = self.eff
        issuing = ("issuingRoundCid", cid_v(x["issuing"].cid))
        self.rules(inner, "AmuletRules_MiningRound_Close", rec(issuing), rec(("closedRoundCid", cid_v(closed.cid))),
                   [arch, c_eid])  # fmt: skip
        self.dso(root, "DsoRules_MiningRound_Close", rec(("amuletRulesCid", cid_v(self.amulet_rules.cid)), issuing),
                 [inner], rec(("closedRound", cid_v(closed.cid))))  # fmt: skip

    def _to_expire(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "closed" and not x.get("expired")]
        return min(got) if got else None

    def _expire_rewards(self, rnd: int) -> None:
        """DsoRules_ClaimExpiredRewards -> AmuletRules_ClaimExpiredRewards: each coupon left in the
        closed round expired by its DsoExpire choice, their value into one UnclaimedReward."""
        x = self.rounds[rnd]
        x["expired"] = True
        order = {"validator": 0, "liveness": 1, "app_featured": 2, "app_unfeatured": 2, "sv": 3}  # the Daml's order
        cs = sorted(self._coupons_of(rnd), key=lambda c: (order[c.info["coupon"]], c.cid))
        if not cs:
            self._transfer()
            return
        r = x["rates"]
        root, inner = self._id(), self._id()
        kids: list[str] = []
        sums: dict[str, int] = defaultdict(int)
        by_kind: dict[str, list[Json]] = defaultdict(list)
        closed = ("closedRoundCid", cid_v(x["closed"].cid))
        for c in cs:
            kind = c.info["coupon"]
            value = c.info["weight"] // UNIT * r[kind] if kind in ("sv", "liveness") else mul(c.info["weight"], r[kind])
            sums[kind] += c.info["weight"]
            self.books.coupons[(rnd, kind)]["expired_n"] += 1
            self.books.coupons[(rnd, kind)]["expired_cc"] += value
            by_kind[kind.split("_")[0]].append(cid_v(c.cid))
            if kind.startswith("app"):
                choice, result = "AppRewardCoupon_DsoExpire", rec(("featured", {"bool": kind == "app_featured"}),
                                                                   ("amount", num(c.info["weight"])))  # fmt: skip
            elif kind == "validator":
                choice, result = "ValidatorRewardCoupon_DsoExpire", rec(("amount", num(c.info["weight"])))
            elif kind == "sv":
                choice, result = "SvRewardCoupon_DsoExpire", rec(("weight", i64(c.info["weight"] // UNIT)))
            else:
                choice, result = ("ValidatorLivenessActivityRecord_DsoExpire",
                                  enum("ValidatorLivenessActivityRecord_DsoExpireResult"))  # fmt: skip
            kids.append(self.consume(c, choice, [self.lg.dso], result, rec(closed), pkg=self.pkg(rnd)))
        # what the coupons were worth, as the Daml sums it: each kind's amounts (weights, counts) x its rate
        total = sum(sums[k] // UNIT * r[k] if k in ("sv", "liveness") else mul(sums[k], r[k]) for k in sorted(sums))
        made = None
        if total > 0:
            eid, made = self.create(self.pkg(rnd), "Splice.Amulet", "UnclaimedReward",
                                    rec(("dso", party(self.lg.dso)), ("amount", num(total))), [self.lg.dso])  # fmt: skip
            kids.append(eid)
        arg = rec(closed, ("validatorRewardCouponCids", lst(by_kind["validator"])),
                  ("appCouponCids", lst(by_kind["app"])), ("svRewardCouponCids", lst(by_kind["sv"])),
                  ("optValidatorFaucetCouponCids", opt(lst([]))),
                  ("optValidatorLivenessActivityRecordCids", opt(lst(by_kind["liveness"]))))  # fmt: skip
        made_v = opt(cid_v(made.cid)) if made else opt(None)
        self.rules(inner, "AmuletRules_ClaimExpiredRewards", arg, rec(("unclaimedRewardCid", made_v)), kids)
        self.dso(root, "DsoRules_ClaimExpiredRewards",
                 rec(("amuletRulesCid", cid_v(self.amulet_rules.cid)), ("choiceArg", arg)), [inner],
                 rec(("unclaimedReward", made_v)))  # fmt: skip

    def _to_archive(self) -> int | None:
        got = [r for r, x in self.rounds.items() if x["phase"] == "closed" and x.get("expired")
               and self.books.closed[r] + 2 * self.cfg.per_round <= len(self.books.supply_after)]  # fmt: skip
        return min(got) if got else None

    def _archive_closed(self, rnd: int) -> None:
        x = self.rounds[rnd]
        root, inner = self._id(), self._id()
        arch = self.consume(x["closed"], "Archive", [self.lg.dso], pkg=self.pkg(rnd))
        x["phase"] = "archived"
        self._confirmed(root, "CRARC_MiningRound_Archive", rec(("closedRoundCid", cid_v(x["closed"].cid))), inner,
                        enum("AmuletRules_MiningRound_ArchiveResult"), [arch], rnd)  # fmt: skip

    # ----- coupons ---------------------------------------------------------------------------------

    def _coupon(self, kind: str, who: str, weight: int, rnd: int, featured: bool = False) -> str:
        """Create a reward coupon (weight in units; an SV's or a record's count is a whole number)."""
        pkg = self.pkg(rnd)
        if kind.startswith("app"):
            eid, _ = self.create(pkg, "Splice.Amulet", "AppRewardCoupon", rec(
                ("dso", party(self.lg.dso)), ("provider", party(who)), ("featured", {"bool": featured}),
                ("amount", num(weight)), ("round", rnd_rec(rnd)), ("beneficiary", opt(party(who)))),
                [self.lg.dso], [who], coupon=kind, owner=who, weight=weight, round=rnd)  # fmt: skip
        elif kind == "validator":
            eid, _ = self.create(pkg, "Splice.Amulet", "ValidatorRewardCoupon", rec(
                ("dso", party(self.lg.dso)), ("user", party(who)), ("amount", num(weight)), ("round", rnd_rec(rnd))),
                [self.lg.dso], [who], coupon=kind, owner=who, weight=weight, round=rnd)  # fmt: skip
        elif kind == "sv":
            eid, _ = self.create(pkg, "Splice.Amulet", "SvRewardCoupon", rec(
                ("dso", party(self.lg.dso)), ("sv", party(who)), ("beneficiary", party(who)), ("round", rnd_rec(rnd)),
                ("weight", i64(weight // UNIT))), [self.lg.dso], [who], coupon=kind, owner=who, weight=weight, round=rnd)  # fmt: skip
        else:  # splice-amulet keeps Splice.ValidatorLicense
            eid, _ = self.create(pkg, "Splice.ValidatorLicense", "ValidatorLivenessActivityRecord", rec(
                ("dso", party(self.lg.dso)), ("validator", party(who)), ("round", rnd_rec(rnd))),
                [self.lg.dso], [who], coupon=kind, owner=who, weight=UNIT, round=rnd)  # fmt: skip
        self.books.coupons[(rnd, kind)]["created_n"] += 1
        self.books.coupons[(rnd, kind)]["created_weight"] += weight
        return eid

    def _sv_coupon(self, sv: str) -> None:
        """DsoRules_ReceiveSvRewardCoupon: the SV's reward state archived and created anew, one coupon
        for the SV itself as beneficiary."""
        rnd = self.rnd
        root = self._id()
        weight = (1 + self.svs.index(sv)) * 10
        old = self.sv_states[sv]
        arch = self.consume(old, "Archive", [self.lg.dso])
        collected = int(old.args["record"]["fields"][2]["value"]["record"]["fields"][1]["value"]["int64"]) + 1
        s_eid, self.sv_states[sv] = self.create(self.dso_pkg(rnd), "Splice.DSO.SvState", "SvRewardState",
                                                self._sv_state(sv, rnd, collected), [self.lg.dso])  # fmt: skip
        kid = self._coupon("sv", sv, weight * UNIT, rnd)
        self.exercise(self.dso_rules.cid, self.dso_pkg(rnd), "Splice.DsoRules", "DsoRules",
                      "DsoRules_ReceiveSvRewardCoupon",
                      rec(("sv", party(sv)), ("openRoundCid", cid_v(self.rounds[rnd]["open"].cid)),
                          ("rewardStateCid", cid_v(old.cid)),
                          ("beneficiaries", lst([rec(("_1", party(sv)), ("_2", i64(weight)))]))),
                      rec(("svRewardState", cid_v(self.sv_states[sv].cid)),
                          ("svRewardCoupons", lst([cid_v(self.events[kid]["contract_id"])]))),
                      False, [sv], root)  # fmt: skip
        self.children(root, [arch, s_eid, kid])

    def _liveness(self, validator: str) -> None:
        """ValidatorLicense_RecordValidatorLivenessActivity (consuming): the license created anew with
        its faucet state, and a ValidatorLivenessActivityRecord for the open round."""
        rnd = self.rnd
        root = self._id()
        old = self.licenses[validator]
        first = old.info.get("first", rnd)
        l_eid, self.licenses[validator] = self.create(self.pkg(rnd), old.module, old.entity,
                                                      self._license(validator, (first, rnd), self.eff,
                                                                    validator if self.since(rnd, 21) else None),
                                                      [self.lg.dso],
                                                      [validator], first=first)  # fmt: skip
        kid = self._coupon("liveness", validator, UNIT, rnd)
        self.exercise(old.cid, self.pkg(rnd), "Splice.ValidatorLicense", "ValidatorLicense",
                      "ValidatorLicense_RecordValidatorLivenessActivity",
                      rec(("openRoundCid", cid_v(self.rounds[rnd]["open"].cid))),
                      rec(("licenseCid", cid_v(self.licenses[validator].cid)),
                          ("couponCid", cid_v(self.events[kid]["contract_id"]))), True, [validator], root)  # fmt: skip
        self.children(root, [l_eid, kid])

    # ----- holdings --------------------------------------------------------------------------------

    def _amulet(self, owner: str, amount: int, rnd: int, locked: bool = False) -> str:
        a = rec(("dso", party(self.lg.dso)), ("owner", party(owner)),
                ("amount", rec(("initialAmount", num(amount)), ("createdAt", rnd_rec(rnd)),
                               ("ratePerRound", rec(("rate", num(HOLDING_RATE)))))))  # fmt: skip
        info: dict[str, Any] = {"owner": owner, "amount": amount, "created": rnd}
        if locked:
            args = rec(("amulet", a), ("lock", self._lock()))
            return self.create(self.pkg(rnd), "Splice.Amulet", "LockedAmulet", args, [self.lg.dso, owner], None,
                               locked=True, **info)[0]  # fmt: skip
        return self.create(self.pkg(rnd), "Splice.Amulet", "Amulet", a, [self.lg.dso, owner], None, **info)[0]

    def _lock(self) -> Json:
        """TimeLock (Expiry.daml): held by the DSO for a day."""
        return rec(("holders", lst([party(self.lg.dso)])), ("expiresAt", ts(self.t + 86_400_000_000)),
                   ("optContext", opt(None)))  # fmt: skip

    def _create_sum(self, made: str, rnd: int) -> Json:
        """AmuletCreateSummary (Amulet.daml): the amulet, the round's price and number."""
        return rec(("amulet", cid_v(made)), ("amuletPrice", num(self.rounds[rnd]["price"])), ("round", rnd_rec(rnd)))

    def _leg(self, leg_id: str, side: str, other: str | None, amount: int, leg_meta: Json) -> Json:
        """TransferLegSide (TransferEventsV2.daml); `other` None is the mint or burn account of `leg_id`."""
        return rec(("transferLegId", text(leg_id)), ("side", enum(side)),
                   ("otherside", account(other, "" if other else "cip-112/" + leg_id)), ("amount", num(amount)),
                   ("instrumentId", text("Amulet")), ("meta", leg_meta))  # fmt: skip

    def _log(self, changes: list[_Change], on: _C | None = None) -> list[str]:
        """0.1.21's transaction history: the changes merged per account (mergeHoldingsChangeEventsByAccount,
        accounts in Daml's order: the mint/burn ones first), each an EventLog_HoldingsChange exercised
        through the EventLog interface of `on` (AmuletRules unless given), nonconsuming, by the DSO."""
        merged: dict[tuple[bool, str, str], _Change] = {}
        for ch in changes:
            key = (ch.owner is not None, ch.owner or "", ch.ident)
            if key in merged:
                m = merged[key]
                m.inputs, m.legs, m.outputs = m.inputs + ch.inputs, m.legs + ch.legs, m.outputs + ch.outputs
            else:
                merged[key] = _Change(ch.owner, ch.ident, list(ch.inputs), list(ch.legs), list(ch.outputs), ch.reason)
        target = on or self.amulet_rules
        eids = []
        for key in sorted(merged):
            ch = merged[key]
            arg = rec(("admin", party(self.lg.dso)), ("account", account(ch.owner, ch.ident)),
                      ("inputHoldingCids", lst([cid_v(c) for c in ch.inputs])), ("transferLegSides", lst(ch.legs)),
                      ("outputHoldingCids", lst([cid_v(c) for c in ch.outputs])),
                      ("observers", lst([party(ch.owner)] if ch.owner else [])),
                      ("extraArgs", rec(("context", rec(("values", {"textMap": {"entries": []}}))),
                                        ("meta", meta(("reason", ch.reason)) if ch.reason else meta()))))  # fmt: skip
            eids.append(self.exercise(target.cid, self.pkg(self.rnd), target.module, target.entity,
                                      "EventLog_HoldingsChange", arg, rec(), False, [self.lg.dso],
                                      interface=EVENT_LOG))  # fmt: skip
        return eids

    def _split_and_burn_log(self, who: str, inputs: list[_C], split: str, change: str | None, amount: int,
                            usage: str) -> list[str]:  # fmt: skip
        """splitAndBurn's transfer history from 0.1.21: the self-transfer of the split (leg0, its output
        meta "split for <usage>"), merged into the one account."""
        split_meta = meta(("reason", f"split for {usage}"))
        return self._log([
            _Change(who, inputs=[c.cid for c in inputs], outputs=[self.events[change]["contract_id"]] if change else []),
            _Change(who, legs=[self._leg("leg0", "SenderSide", who, amount, split_meta)]),
            _Change(who, legs=[self._leg("leg0", "ReceiverSide", who, amount, split_meta)],
                    outputs=[self.events[split]["contract_id"]])])  # fmt: skip

    def _burn_log(self, who: str, burnt: str, amount: int, usage: str) -> list[str]:
        """logAmuletBurn (Amulet.daml, 0.1.21): the split amulet into the burn account."""
        return self._log([_Change(who, inputs=[self.events[burnt]["contract_id"]],
                                  legs=[self._leg("burn", "SenderSide", None, amount, meta(("reason", usage)))])])  # fmt: skip

    def _tap(self, owner: str, amount: int) -> None:
        """AmuletRules_DevNet_Tap, which exercises AmuletRules_Mint below it (AmuletRules.daml)."""
        rnd = self.rnd
        root, inner = self._id(), self._id()
        kid = self._amulet(owner, amount, rnd)
        made = self.events[kid]["contract_id"]
        arg = rec(("receiver", party(owner)), ("amount", num(amount)),
                  ("openRound", cid_v(self.rounds[rnd]["open"].cid)))  # fmt: skip
        reason, mint_arg, kids = "tapped faucet", arg, [kid]
        if self.since(rnd, 21):  # the Mint takes a reason and logs the mint (AmuletRules.daml, Amulet.daml)
            reason = "tapped DevNet faucet"
            mint_arg = rec(*[(f["label"], f["value"]) for f in arg["record"]["fields"]], ("reason", opt(text(reason))))
            kids += self._log([_Change(owner, legs=[self._leg("mint", "ReceiverSide", None, amount,
                                                              meta(("reason", reason)))], outputs=[made])])  # fmt: skip
        self.rules(inner, "AmuletRules_Mint", mint_arg, rec(("amuletSum", self._create_sum(made, rnd))), kids,
                   [self.lg.dso, owner])  # fmt: skip
        self.rules(root, "AmuletRules_DevNet_Tap", arg,
                   rec(("amuletSum", self._create_sum(made, rnd)), ("meta", opt(meta(("tx-kind", "mint"),
                                                                                     ("reason", reason))))),
                   [inner], [owner])  # fmt: skip
        self.books.tapped += amount

    def _held(self, owner: str) -> list[_C]:
        return sorted((c for c in self.live.values() if c.entity == "Amulet" and c.info["owner"] == owner
                       and c.info["amount"] > DUST), key=lambda c: c.info["amount"], reverse=True)  # fmt: skip

    def _claimable(self, owner: str) -> list[_C]:
        return sorted((c for c in self.live.values() if c.info.get("owner") == owner and c.info.get("coupon")
                       and self.rounds[c.info["round"]]["phase"] == "issuing"), key=lambda c: c.cid)  # fmt: skip

    def _dust(self) -> list[_C]:
        """Amulets expired for every open round (Expiry.daml isAmuletExpired: the round their holding
        fees use them up, createdAt + ceil(amount / rate), is at most the given open round - 2)."""
        r = self.rnd
        return [c for c in self.live.values() if c.entity == "Amulet"
                and c.info["created"] + -(-c.info["amount"] // HOLDING_RATE) <= r - 2]  # fmt: skip

    def _locked(self) -> list[_C]:
        return [c for c in self.live.values() if c.entity == "LockedAmulet"]

    def _expire_dust(self) -> None:
        """DsoRules_Amulet_Expire -> Amulet_Expire (Amulet.daml) up to 0.1.16; from 0.1.17, which
        deprecates those, DsoRules_Amulet_ExpireV2 -> Amulet_ExpireV2, whose round comes from two
        ExternalPartyConfigState contracts (referenced by id only: not modelled)."""
        c = sorted(self._dust(), key=lambda c: c.cid)[0]
        rnd = self.rnd
        root = self._id()
        amount, created = c.info["amount"], c.info["created"]
        dust_meta = tx_meta("expire-dust", None, amount)
        if self.since(rnd, 17):
            choice_arg = rec(("externalPartyConfigState0Cid", cid_v(self._new_cid("external-party-config", rnd, 0))),
                             ("externalPartyConfigState1Cid", cid_v(self._new_cid("external-party-config", rnd, 1))))  # fmt: skip
            expire = rec(("owner", party(c.info["owner"])))
            kid = self.consume(c, "Amulet_ExpireV2", [self.lg.dso], rec(("expireSum", expire), ("meta", dust_meta)),
                               choice_arg)  # fmt: skip
            choice = "DsoRules_Amulet_ExpireV2"
        else:
            choice_arg = rec(("roundCid", cid_v(self.rounds[rnd]["open"].cid)))
            expire = rec(("owner", party(c.info["owner"])), ("round", rnd_rec(created)),
                         ("changeToInitialAmountAsOfRoundZero", num(-(amount + created * HOLDING_RATE))),
                         ("changeToHoldingFeesRate", num(-HOLDING_RATE)))  # fmt: skip
            kid = self.consume(c, "Amulet_Expire", [self.lg.dso], rec(("expireSum", expire), ("meta", opt(dust_meta))),
                               choice_arg)  # fmt: skip
            choice = "DsoRules_Amulet_Expire"
        self.dso(root, choice, rec(("cid", cid_v(c.cid)), ("choiceArg", choice_arg)), [kid], rec(("expireSum", expire)))
        self.books.dust_burnt += amount
        self.books.by_round[rnd]["dust_burnt"] += amount

    def _unlock(self) -> None:
        """LockedAmulet_Unlock (Amulet.daml) up to 0.1.16, LockedAmulet_UnlockV2 from 0.1.17 (which
        deprecates the first): the locked amulet archived, its amulet created again."""
        c = sorted(self._locked(), key=lambda c: c.cid)[0]
        rnd = self.rnd
        root = self._id()
        owner = c.info["owner"]
        kid = self._amulet(owner, c.info["amount"], c.info["created"])
        made = self.events[kid]["contract_id"]
        kids = [kid]
        if self.since(rnd, 21):  # logAmuletUnlock: through a temporary AmuletEventLog (AmuletEventLog.daml)
            e_eid, log = self.create(self.pkg(rnd), "Splice.AmuletEventLog", "AmuletEventLog", rec(("dso", party(self.lg.dso))),
                                     [self.lg.dso])  # fmt: skip
            kids += [e_eid, *self._log([_Change(owner, inputs=[c.cid], outputs=[made], reason="holders released lock")],
                                       log), self.consume(log, "Archive", [self.lg.dso])]  # fmt: skip
        if self.since(rnd, 17):
            choice, arg = "LockedAmulet_UnlockV2", rec()
            result = rec(("amuletCid", cid_v(made)), ("meta", meta(("tx-kind", "unlock"),
                                                                   ("reason", "holders released lock"))))  # fmt: skip
        else:
            choice, arg = "LockedAmulet_Unlock", rec(("openRoundCid", cid_v(self.rounds[rnd]["open"].cid)))
            result = rec(("amuletSum", self._create_sum(made, rnd)), ("meta", opt(meta(("tx-kind", "unlock")))))
        self.exercise(c.cid, self.pkg(rnd), "Splice.Amulet", "LockedAmulet", choice, arg, result, True,
                      [owner, self.lg.dso], root)  # fmt: skip
        self.children(root, kids)

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

    def _right(self, who: str) -> str:
        """A ValidatorRight's contract id (referenced, not modelled)."""
        return self._new_cid("validator-right", who)

    def _spend(self, sender: str, amulets: list[_C], coupons: list[_C], rnd: int) -> tuple[dict[str, int], list[str]]:
        """Consume the inputs, in input order; returns the summary's input amounts and the events."""
        era = self._fee_era(rnd)
        s = {"amulets": 0, "holding": 0, "app": 0, "validator": 0, "faucet": 0, "sv": 0, "zero": 0, "rates": 0}
        kids: list[str] = []
        for c in amulets:
            s["amulets"] += c.info["amount"]
            s["zero"] += c.info["amount"] + c.info["created"] * HOLDING_RATE  # as of round zero
            s["rates"] += HOLDING_RATE
            if era:
                s["holding"] += min(c.info["amount"], max(0, rnd - c.info["created"]) * HOLDING_RATE)
            kids.append(self.consume(c, "Archive", [sender]))
        for c in coupons:
            kind, cr = c.info["coupon"], c.info["round"]
            rate = self.rounds[cr]["rates"][kind]
            arg, result = None, None
            if kind.startswith("app"):
                v = mul(c.info["weight"], rate)
                s["app"] += v
                choice = "Archive"
            elif kind == "validator":
                v = mul(c.info["weight"], rate)
                s["validator"] += v
                choice = "ValidatorRewardCoupon_ArchiveAsValidator"
                arg, result = rec(("validator", party(sender)), ("rightCid", cid_v(self._right(sender)))), rec()
            elif kind == "sv":
                v = c.info["weight"] // UNIT * rate
                s["sv"] += v
                choice = "SvRewardCoupon_ArchiveAsBeneficiary"
                result = enum("SvRewardCoupon_ArchiveAsBeneficiaryResult")
            else:
                v = rate
                s["validator"] += v
                s["faucet"] += v
                choice = "Archive"
            self.books.coupons[(cr, kind)]["claimed_n"] += 1
            self.books.coupons[(cr, kind)]["claimed_cc"] += v
            kids.append(self.consume(c, choice, [sender], result, arg))
        return s, kids

    def _context(self, rnd: int, coupons: list[_C], provider: str | None) -> Json:
        """TransferContext (AmuletRules.daml): the open round, the issuing rounds of the coupons
        claimed, the validator rights used, the provider's FeaturedAppRight if featured."""
        issuing = sorted({c.info["round"] for c in coupons})
        users = sorted({c.info["owner"] for c in coupons if c.info["coupon"] == "validator"})
        right = opt(cid_v(self._new_cid("featured-app-right", provider))) if provider in self.featured else opt(None)
        return rec(("openMiningRound", cid_v(self.rounds[rnd]["open"].cid)),
                   ("issuingMiningRounds", genmap([(rnd_rec(r), cid_v(self.rounds[r]["issuing"].cid)) for r in issuing])),
                   ("validatorRights", genmap([(party(u), cid_v(self._right(u))) for u in users])),
                   ("featuredAppRight", right))  # fmt: skip

    def _output(self, receiver: str, amount: int, rnd: int, locked: bool, described: bool = False) -> Json:
        """TransferOutput (AmuletRules.daml; `meta` from 0.1.21, Token Standard V2, where a
        TransferPreapproval_Send sets it to its description's metadata, empty without one)."""
        fields: list[tuple[str, Json]] = [("receiver", party(receiver)), ("receiverFeeRatio", num(0)),
                                          ("amount", num(amount)), ("lock", opt(self._lock()) if locked else opt(None))]
        if self.since(rnd, 21):
            fields.append(("meta", opt(meta()) if described else opt(None)))
        return rec(*fields)

    def _summary(self, rnd: int, s: dict[str, int], fees: list[int], change_fee: int, change: int, price: int,
                 sender: str, outputs: list[tuple[str, int]], burnt: int = 0) -> Json:  # fmt: skip
        """TransferSummary (AmuletRules.daml; inputDevelopmentFundAmount from 0.1.15). `outputs` are
        (owner, amount) of the outputs; `burnt`, splitAndBurn's one output it archives at once."""
        fields: list[tuple[str, Json]] = [
            ("inputAppRewardAmount", num(s["app"])), ("inputValidatorRewardAmount", num(s["validator"])),
            ("inputSvRewardAmount", num(s["sv"])), ("inputAmuletAmount", num(s["amulets"])),
            ("balanceChanges", self._balance_changes(rnd, s, change, sender, outputs, burnt)),
            ("holdingFees", num(s["holding"])), ("outputFees", lst([num(f) for f in fees])),
            ("senderChangeFee", num(change_fee)), ("senderChangeAmount", num(change)), ("amuletPrice", num(price)),
            ("inputValidatorFaucetAmount", opt(num(s["faucet"]))), ("inputUnclaimedActivityRecordAmount", opt(num(0)))]  # fmt: skip
        if self.since(rnd, 15):
            fields.append(("inputDevelopmentFundAmount", opt(num(0))))
        return rec(*fields)

    @staticmethod
    def _balance_changes(rnd: int, s: dict[str, int], change: int, sender: str, outputs: list[tuple[str, int]],
                         burnt: int) -> Json:  # fmt: skip
        """The summary's balanceChanges (AmuletRules.daml summarizeTransfer, splitAndBurn): per party,
        holdings as of round zero (initialAmount + createdAt x rate) and holding-fee rate added,
        less those of the amulets it archived; a Daml Map, so in party order."""
        adj = rnd * HOLDING_RATE
        got: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        got[sender] = [change + adj - s["zero"], HOLDING_RATE - s["rates"]] if change > 0 else [-s["zero"], -s["rates"]]
        for owner, amount in outputs:
            got[owner][0] += amount + adj
            got[owner][1] += HOLDING_RATE
        if burnt:
            got[sender][0] -= burnt + adj
            got[sender][1] -= HOLDING_RATE
        return genmap([(party(p), rec(("changeToInitialAmountAsOfRoundZero", num(v[0])),
                                      ("changeToHoldingFeesRate", num(v[1])))) for p, v in sorted(got.items())])  # fmt: skip

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
        approved = sorted(u for u in self.preapprovals if u != sender)
        outer = None
        if self.rng.random() < 0.3 and approved:  # sent through the receiver's TransferPreapproval
            receiver = self.rng.choice(approved)
            provider = self.preapprovals[receiver].info["provider"]
            outer = self._id()
        featured = provider in self.featured
        self.books.versions_used.add(self.version(rnd))
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
        locked = amount > 0 and outer is None and not dust and self.rng.random() < 0.1
        leftover = available - amount - fee
        change_fee = min(create_fee, leftover) if era else 0
        change = leftover - change_fee
        coupon_kids = []  # executeTransfer issues the rewards, then creates the outputs and the change
        if era and fee > 0:
            coupon_kids.append(self._coupon("validator", sender, fee, rnd))
        app = (fee if era else 0) + (div(EXTRA_FEATURED_USD, price) if featured else 0)
        if self._token_standard(rnd):
            if featured:  # a marker (issueRewards), converted into a coupon once a round
                coupon_kids.append(self.create(self.pkg(rnd), "Splice.Amulet", "FeaturedAppActivityMarker", rec(
                    ("dso", party(self.lg.dso)), ("provider", party(provider)), ("beneficiary", party(provider)),
                    ("weight", num(UNIT))), [self.lg.dso, provider], marker=provider)[0])  # fmt: skip
        elif app > 0:  # issueRewards: the output fees, plus the extra reward if featured
            coupon_kids.append(
                self._coupon("app_featured" if featured else "app_unfeatured", provider, app, rnd, featured)
            )
        outputs = [self._amulet(receiver, amount, rnd, locked)] if amount > 0 else []
        change_eid = self._amulet(sender, change, rnd) if change > 0 else None
        burnt = fee + s["holding"] + change_fee
        summary = self._summary(rnd, s, [fee] if amount > 0 else [], change_fee, change, price, sender,
                                [(receiver, amount)] if amount > 0 else [])  # fmt: skip
        made = [variant("TransferResultLockedAmulet" if self.events[o]["template_id"].endswith(":LockedAmulet")
                        else "TransferResultAmulet", cid_v(self.events[o]["contract_id"])) for o in outputs]  # fmt: skip
        change_v = opt(cid_v(self.events[change_eid]["contract_id"])) if change_eid else opt(None)
        result_meta = tx_meta("transfer", sender, burnt, s) if amount > 0 else tx_meta("merge-split", None, burnt, s)
        result = rec(("round", rnd_rec(rnd)), ("summary", summary), ("createdAmulets", lst(made)),
                     ("senderChangeAmulet", change_v), ("meta", opt(result_meta)))  # fmt: skip
        inputs = [variant("InputAmulet", cid_v(c.cid)) for c in amulets] + [
            variant(_INPUT[c.info["coupon"]], cid_v(c.cid)) for c in coupons
        ]
        context = self._context(rnd, coupons, provider)
        arg = rec(("transfer", rec(("sender", party(sender)), ("provider", party(provider)), ("inputs", lst(inputs)),
                                   ("outputs", lst([self._output(receiver, amount, rnd, locked, outer is not None)] if amount else [])),
                                   ("beneficiaries", opt(None)))),
                  ("context", context), ("expectedDso", opt(party(self.lg.dso))))  # fmt: skip
        logs: list[str] = []
        if self.since(rnd, 21):  # executeTransfer's transaction history, V2 (AmuletRules.daml)
            minted = s["app"] + s["validator"] + s["sv"]
            changes = [_Change(sender, inputs=[c.cid for c in amulets],
                               legs=[self._leg("mint", "ReceiverSide", None, minted, reward_meta(s))] if minted else [],
                               outputs=[self.events[change_eid]["contract_id"]] if change_eid else [])]  # fmt: skip
            if amount > 0:
                leg_meta = meta()
                changes += [_Change(sender, legs=[self._leg("leg0", "SenderSide", receiver, amount, leg_meta)]),
                            _Change(receiver, legs=[self._leg("leg0", "ReceiverSide", sender, amount, leg_meta)],
                                    outputs=[self.events[outputs[0]]["contract_id"]])]  # fmt: skip
            logs = self._log(changes)
        self.rules(root, "AmuletRules_Transfer", arg, result, kids + coupon_kids + outputs
                   + ([change_eid] if change_eid else []) + logs, [sender], rnd)  # fmt: skip
        if outer is not None:  # TransferPreapproval_Send: the inner result without its meta, the meta outside
            inner = rec(*[(f["label"], opt(None) if f["label"] == "meta" else f["value"])
                          for f in result["record"]["fields"]])  # fmt: skip
            self.exercise(self.preapprovals[receiver].cid, self.pkg(rnd), "Splice.AmuletRules",
                          "TransferPreapproval", "TransferPreapproval_Send",
                          rec(("context", rec(("amuletRules", cid_v(self.amulet_rules.cid)), ("context", context))),
                              ("inputs", lst(inputs)), ("amount", num(amount)), ("sender", party(sender)),
                              ("description", opt(None))),
                          rec(("result", inner), ("meta", opt(result_meta))), False, [sender], outer)  # fmt: skip
            self.children(outer, [root])
        self._book(rnd, sender, s, burnt, fee, 0, 0)

    def _unapproved(self) -> str | None:
        """The first user without a TransferPreapproval."""
        return next((u for u in self.users if u not in self.preapprovals), None)

    def _create_preapproval(self, receiver: str) -> None:
        """AmuletRules_CreateTransferPreapproval (AmuletRules.daml, 0.1.13): the provider pays
        PREAPPROVAL_DAYS x defaultTransferPreapprovalFee by splitAndBurn (a self-transfer of amuletPaid
        executed inline, its output archived at once, a ValidatorRewardCoupon of amuletPaid + output
        fees), then the TransferPreapproval is created. It burns amuletPaid + output fees + holding
        fees + sender change fee."""
        rnd = self.rnd
        x = self.rounds[rnd]
        era = self._fee_era(rnd)
        provider = self.providers[self.users.index(receiver) % len(self.providers)]
        if provider == receiver:
            provider = self.providers[(self.users.index(receiver) + 1) % len(self.providers)]
        paid = div(PREAPPROVAL_DAYS * PREAPPROVAL_USD_PER_DAY, x["price"])
        fee = div(CREATE_FEE_USD, x["price"]) if era else 0
        amulets, _ = self._inputs(provider, paid + 2 * fee + UNIT, False)
        if sum(c.info["amount"] for c in amulets) < paid + 2 * fee + UNIT:
            self._tap(provider, 100 * UNIT)
            return
        self.books.versions_used.add(self.version(rnd))
        root = self._id()
        s, kids = self._spend(provider, amulets, [], rnd)
        leftover = s["amulets"] - s["holding"] - paid - fee
        change_fee = min(fee, leftover) if era else 0
        change = leftover - change_fee
        out = self._amulet(provider, paid, rnd)
        change_eid = self._amulet(provider, change, rnd) if change > 0 else None
        usage = "create TransferPreapproval"
        logs = self._split_and_burn_log(provider, amulets, out, change_eid, paid, usage) if self.since(rnd, 21) else []
        burn = self.consume(self.live[self.events[out]["contract_id"]], "Archive", [provider])
        logs += self._burn_log(provider, out, paid, usage) if self.since(rnd, 21) else []
        coupon = self._coupon("validator", provider, paid + fee, rnd)
        expires = self.eff + PREAPPROVAL_DAYS * 86_400_000_000
        p_eid, self.preapprovals[receiver] = self.create(self.pkg(rnd), "Splice.AmuletRules", "TransferPreapproval", rec(
            ("dso", party(self.lg.dso)), ("receiver", party(receiver)), ("provider", party(provider)),
            ("validFrom", ts(self.eff)), ("lastRenewedAt", ts(self.eff)), ("expiresAt", ts(expires))),
            [receiver, provider, self.lg.dso], provider=provider)  # fmt: skip
        change_v = opt(cid_v(self.events[change_eid]["contract_id"])) if change_eid else opt(None)
        summary = self._summary(rnd, s, [fee], change_fee, change, x["price"], provider, [(provider, paid)], paid)
        transfer_result = rec(("round", rnd_rec(rnd)), ("summary", summary),
                              ("createdAmulets", lst([variant("TransferResultAmulet",
                                                              cid_v(self.events[out]["contract_id"]))])),
                              ("senderChangeAmulet", change_v), ("meta", opt(None)))  # fmt: skip
        inputs = [variant("InputAmulet", cid_v(c.cid)) for c in amulets]
        burnt = paid + fee + s["holding"] + change_fee
        self.rules(root, "AmuletRules_CreateTransferPreapproval",
                   rec(("context", rec(("amuletRules", cid_v(self.amulet_rules.cid)),
                                       ("context", self._context(rnd, [], None)))),
                       ("inputs", lst(inputs)), ("receiver", party(receiver)), ("provider", party(provider)),
                       ("expiresAt", ts(expires)), ("expectedDso", opt(party(self.lg.dso)))),
                   rec(("transferPreapprovalCid", cid_v(self.preapprovals[receiver].cid)),
                       ("transferResult", transfer_result), ("amuletPaid", num(paid)),
                       ("meta", opt(tx_meta("burn", None, burnt, reason="create TransferPreapproval")))),
                   kids + [out] + ([change_eid] if change_eid else []) + logs[:-1] + [burn] + logs[-1:] + [coupon, p_eid],
                   [provider, receiver], rnd)  # fmt: skip
        self._book(rnd, provider, s, fee + s["holding"] + change_fee, fee, 0, paid)

    def _markers(self) -> list[_C]:
        return sorted((c for c in self.live.values() if c.entity == "FeaturedAppActivityMarker"), key=lambda c: c.cid)

    def _convert_markers(self) -> None:
        """DsoRules_AmuletRules_ConvertFeaturedAppActivityMarkers -> AmuletRules_ConvertFeaturedAppActivityMarkers:
        the markers archived, one featured AppRewardCoupon per provider of (1 USD / price) x the
        markers' weights, in the open round."""
        rnd = self.rnd
        price = self.rounds[rnd]["price"]
        root, inner = self._id(), self._id()
        kids: list[str] = []
        weights: dict[str, int] = defaultdict(int)
        markers = self._markers()
        for c in markers:
            weights[c.info["marker"]] += UNIT
            kids.append(self.consume(c, "Archive", [self.lg.dso]))
        made = []
        for provider, w in sorted(weights.items()):
            made.append(self._coupon("app_featured", provider, mul(div(EXTRA_FEATURED_USD, price), w), rnd, True))
        kids += made
        fields: list[tuple[str, Json]] = [("markerCids", lst([cid_v(c.cid) for c in markers])),
                                          ("openMiningRoundCid", cid_v(self.rounds[rnd]["open"].cid))]
        if self.since(rnd, 16):  # choice observers, from 0.1.16
            fields.append(("observers", opt(lst([party(p) for p in sorted(weights)]))))
        arg = rec(*fields)
        result = rec(("appRewardCouponCids", lst([cid_v(self.events[e]["contract_id"]) for e in made])))
        self.rules(inner, "AmuletRules_ConvertFeaturedAppActivityMarkers", arg, result, kids)
        self.dso(root, "DsoRules_AmuletRules_ConvertFeaturedAppActivityMarkers",
                 rec(("amuletRulesCid", cid_v(self.amulet_rules.cid)), ("argument", arg)), [inner],
                 rec(("result", result)))  # fmt: skip

    def _token_transfer(self) -> None:
        """TransferFactory_Transfer (0.1.17+, ExternalPartyAmuletRules.daml): a self-transfer
        (merge-split) executed inline by executeExternalPartyTransfer, as 0.1.17 does when sender =
        receiver: holdings in, holdings out, nothing minted or burnt, and no TransferSummary anywhere
        in the tree (the result is the token standard's TransferInstructionResult)."""
        rnd = self.rnd
        sender = self.rng.choice(self.users + self.validators)
        amulets, _ = self._inputs(sender, 10 * UNIT, False)
        if not amulets:
            self._tap(sender, 500 * UNIT)
            return
        self.books.versions_used.add(self.version(rnd))
        self.books.by_round[rnd]["token_transfers"] += 1
        root = self._id()
        kids = [self.consume(c, "Archive", [sender]) for c in amulets]
        total = sum(c.info["amount"] for c in amulets)
        amount = self.rng.randrange(1, max(2, total // 2))
        out = self._amulet(sender, amount, rnd)
        change = self._amulet(sender, total - amount, rnd)
        kids += [out, change]
        instrument = rec(("admin", party(self.lg.dso)), ("id", text("Amulet")))
        transfer = rec(("sender", party(sender)), ("receiver", party(sender)), ("amount", num(amount)),
                       ("instrumentId", instrument), ("requestedAt", ts(self.eff - 1_000_000)),
                       ("executeBefore", ts(self.eff + 86_400_000_000)),
                       ("inputHoldingCids", lst([cid_v(c.cid) for c in amulets])), ("meta", meta()))  # fmt: skip
        arg = rec(("expectedAdmin", party(self.lg.dso)), ("transfer", transfer),
                  ("extraArgs", rec(("context", rec(("values", {"textMap": {"entries": []}}))), ("meta", meta()))))  # fmt: skip
        result = rec(("output", variant("TransferInstructionResult_Completed", rec(
                          ("receiverHoldingCids", lst([cid_v(self.events[out]["contract_id"])]))))),
                     ("senderChangeCids", lst([cid_v(self.events[change]["contract_id"])])),
                     ("meta", meta(("tx-kind", "merge-split"))))  # fmt: skip
        self.exercise(self.ext_rules.cid, self.pkg(rnd), "Splice.ExternalPartyAmuletRules", "ExternalPartyAmuletRules",
                      "TransferFactory_Transfer", arg, result, False, [sender], root,
                      f"{TOKEN_TRANSFER_V1}:Splice.Api.Token.TransferInstructionV1:TransferFactory")  # fmt: skip
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
        """AmuletRules_BuyMemberTraffic (AmuletRules.daml, splitAndBurn): a self-transfer, executed
        inline (no AmuletRules_Transfer below it), of the price less one create fee, its output
        archived at once (the burn), a ValidatorRewardCoupon of that output plus its fees, a
        MemberTraffic contract. As in Splice, `amuletPaid` (the traffic's price) holds the output's
        fees: output + outputFees = amuletPaid, and the purchase burns amuletPaid + holdingFees +
        senderChangeFee."""
        rnd = self.rnd
        x = self.rounds[rnd]
        era = self._fee_era(rnd)
        buyer = self.rng.choice(self.validators)
        traffic = self.rng.randrange(100_000, 5_000_000)
        usd = div(traffic * UNIT, 10**6 * UNIT)
        usd = mul(usd, TRAFFIC_USD_PER_MB)
        cc = div(usd, x["price"])
        fee = div(CREATE_FEE_USD, x["price"]) if era else 0  # a self-transfer pays no transfer fee
        amulets, _ = self._inputs(buyer, cc + 2 * fee + UNIT, False)
        if sum(c.info["amount"] for c in amulets) < cc + 2 * fee + UNIT:
            self._tap(buyer, cc + 100 * UNIT)
            return
        self.books.versions_used.add(self.version(rnd))
        root = self._id()
        s, kids = self._spend(buyer, amulets, [], rnd)
        leftover = s["amulets"] - s["holding"] - cc
        change_fee = min(fee, leftover) if era else 0
        change = leftover - change_fee
        out = self._amulet(buyer, cc - fee, rnd)
        change_eid = self._amulet(buyer, change, rnd) if change > 0 else None
        usage = "traffic purchase"
        logs = self._split_and_burn_log(buyer, amulets, out, change_eid, cc - fee, usage) if self.since(rnd, 21) else []
        burn = self.consume(self.live[self.events[out]["contract_id"]], "Archive", [buyer])
        logs += self._burn_log(buyer, out, cc - fee, usage) if self.since(rnd, 21) else []
        coupon = self._coupon("validator", buyer, cc, rnd)
        member = text(f"PAR::{buyer.split('::')[0]}")
        t_eid, traffic_c = self.create(self.pkg(rnd), "Splice.DecentralizedSynchronizer", "MemberTraffic", rec(
            ("dso", party(self.lg.dso)), ("memberId", member), ("synchronizerId", text(self.lg.synchronizer_id(0))),
            ("migrationId", i64(self.m)), ("totalPurchased", i64(traffic)), ("numPurchases", i64(1)),
            ("amuletSpent", num(cc)), ("usdSpent", num(usd))), [self.lg.dso])  # fmt: skip
        summary = self._summary(rnd, s, [fee], change_fee, change, x["price"], buyer, [(buyer, cc - fee)], cc - fee)
        change_v = opt(cid_v(self.events[change_eid]["contract_id"])) if change_eid else opt(None)
        inputs = [variant("InputAmulet", cid_v(c.cid)) for c in amulets]
        self.rules(root, "AmuletRules_BuyMemberTraffic",
                   rec(("inputs", lst(inputs)), ("context", self._context(rnd, [], None)), ("provider", party(buyer)),
                       ("memberId", member), ("synchronizerId", text(self.lg.synchronizer_id(0))),
                       ("migrationId", i64(self.m)), ("trafficAmount", i64(traffic)),
                       ("expectedDso", opt(party(self.lg.dso)))),
                   rec(("round", rnd_rec(rnd)), ("summary", summary), ("amuletPaid", num(cc)),
                       ("purchasedTraffic", cid_v(traffic_c.cid)), ("senderChangeAmulet", change_v),
                       ("meta", opt(tx_meta("burn", None, cc + s["holding"] + change_fee, reason="traffic purchase")))),
                   kids + [out] + ([change_eid] if change_eid else []) + logs[:-1] + [burn] + logs[-1:] + [coupon, t_eid],
                   [buyer], rnd)  # fmt: skip
        self._book(rnd, buyer, s, s["holding"] + change_fee, fee, traffic, cc)

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


UNIT_V: Json = {"unit": {}}


def opt(v: Json | None) -> Json:
    """Optional: None, or Some v."""
    return {"optional": {}} if v is None else {"optional": {"value": v}}


def lst(vs: list[Json]) -> Json:
    return {"list": {"elements": vs}}


def genmap(entries: list[tuple[Json, Json]]) -> Json:
    """A Daml Map (not a TextMap)."""
    return {"genMap": {"entries": [{"key": k, "value": v} for k, v in entries]}}


def variant(constructor: str, value: Json) -> Json:
    return {"variant": {"constructor": constructor, "value": value}}


def enum(constructor: str) -> Json:
    """A Daml enum value: also what a data type with one nullary constructor is (a result such as
    DsoBootstrap_BootstrapResult, served by Scan as the bare string of its name in compact JSON)."""
    return {"enum": {"constructor": constructor}}


def reltime(us: int) -> Json:
    return rec(("microseconds", i64(us)))


SPLICE_META = "splice.lfdecentralizedtrust.org/"


def meta(*values: tuple[str, str]) -> Json:
    """The token standard's Metadata (a TextMap of texts, in key order), keys under Splice's prefix
    ("amulet/x": under Amulet's, TokenApiUtils.daml)."""
    keys = [("amulet." + SPLICE_META + k[7:] if k.startswith("amulet/") else SPLICE_META + k, v) for k, v in values]
    return rec(("values", {"textMap": {"entries": [{"key": k, "value": text(v)} for k, v in sorted(keys)]}}))


def account(owner: str | None, ident: str = "") -> Json:
    """Account (splice-api-token-holding-v2): a party's basic account, or a named one (mint, burn)."""
    return rec(("owner", opt(party(owner)) if owner else opt(None)), ("provider", opt(None)), ("id", text(ident)))


def reward_meta(s: dict[str, int]) -> Json:
    """The mint leg's metadata (executeTransfer, 0.1.21): the reason and the non-zero reward inputs."""
    values = [("reason", "mint rewards")]
    for key, field_ in (("amulet/sv-rewards", "sv"), ("amulet/app-rewards", "app"), ("amulet/validator-rewards", "validator")):
        if s[field_]:
            values.append((key, show(s[field_])))
    return meta(*values)


def show(x: int) -> str:
    """A Numeric 10 as Daml's `show` writes it (no trailing zeros, at least one decimal)."""
    whole = str(num(x)["numeric"]).rstrip("0")
    return whole + "0" if whole.endswith(".") else whole


def tx_meta(kind: str, sender: str | None, burnt: int, s: dict[str, int] | None = None, reason: str | None = None) -> Json:
    """holdingTxMeta (TokenApiUtils.daml) with, for a transfer, its reward inputs (executeTransfer):
    the burn and the rewards only when not zero."""
    values = [("tx-kind", kind)] + ([("sender", sender)] if sender else []) + ([("reason", reason)] if reason else [])
    values += [("burned", show(burnt))] if burnt else []
    for key, field_ in (("amulet/sv-rewards", "sv"), ("amulet/app-rewards", "app"), ("amulet/validator-rewards", "validator")):
        if s and s[field_]:
            values.append((key, show(s[field_])))
    return meta(*values)


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
