"""A deterministic synthetic Splice ledger that costs no memory to "hold".

Update *i* of a synchronizer is a pure function of (seed, migration, synchronizer, i): its record
time is `start + i*gap + h(i)` with `0 <= h(i) < gap`, so times are strictly increasing, any time
maps back to an index in O(1), and paging by time is arithmetic rather than a scan. Every few
updates two neighbours sit exactly 1 us apart, which is what breaks millisecond-rounding clients.

Scan promises that within one migration every update has its own record time, across all its
synchronizers; the ledger keeps that promise unless `shared_microseconds` breaks it on purpose
(updates of different synchronizers at the same microsecond, to test a `/v2/updates` follower).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from scanfill.sim.lifecycle import LONG_PERIOD, ROUND_SLOTS, Lifecycle, Ref
from scanfill.timeutil import MIN_US, format_instant, format_trimmed, format_us, parse_us

ROUND_TICK_US = 600_000_000  # Splice opens a mining round every ~10 minutes
RATE_PER_ROUND = 190259  # an Amulet's holding fee per round, in units of 10^-10
NEIGHBOUR_PERIOD = 37  # updates i, i+1 with i % 37 == 0 are exactly 1 us apart
IMPORT_TIME = format_us(MIN_US)
V1_OFFSET = "000000000000000001"

Json = dict[str, Any]


@dataclass(frozen=True)
class MigrationSpec:
    """One migration: its id, when it starts, and how much each synchronizer holds."""

    migration_id: int
    start: str
    updates: int  # per synchronizer
    synchronizers: int = 1
    gap_us: int = 2_000_000  # mean spacing of updates on one synchronizer
    import_updates: int = 0

    @property
    def start_us(self) -> int:
        return parse_us(self.start)


@dataclass(frozen=True)
class EconomyConfig:
    """A ledger with real round economics (`sim.economy`): a round advances every `per_round`
    updates; rounds from `round_zero + upgrades[k]` run `splice-amulet` `versions[k + 1]`."""

    per_round: int = 24
    upgrades: tuple[int, ...] = (8, 16, 24)
    versions: tuple[str, ...] = ("0.1.13", "0.1.14", "0.1.17", "0.1.21")  # those sim.economy writes Splice's Daml of
    claim_rate: float = 0.6  # share of transfers whose sender also collects its claimable coupons


@dataclass(frozen=True)
class LedgerConfig:
    """Everything that defines a ledger; equal configs serve byte-identical responses."""

    seed: int = 1
    migrations: tuple[MigrationSpec, ...] = field(default_factory=lambda: default_migrations(60_000))
    events_mean: float = 12.0
    labels: bool = True
    reassignment_rate: float = 0.02  # share of updates that are reassignments (multi-synchronizer only)
    payload_pad: int = 0  # extra bytes of text per created event, to scale row size
    acs_snapshot_hours: float = 3.0  # a scan snapshots its ACS every this many hours of record time
    round_zero: int = 1000
    interface_rate: float = 0.25  # share of transfers exercised through the token standard's interface
    external_hash_rate: float = 0.02  # share of transactions carrying `external_transaction_hash` (newer scans)
    shared_microseconds: bool = False  # break Scan's promise: synchronizers of a migration share record times
    # /v0/events items that carry only a verdict (a wholly private or a rejected transaction, no update): at
    # most one between two neighbouring updates of the first synchronizer, this share of those gaps. MainNet
    # serves 40-50 % of its items so (issue 28); 0.8 of the gaps makes them 44 % of the items.
    verdict_only_rate: float = 0.8
    economy: EconomyConfig | None = None  # play a real economy forward instead (one synchronizer per migration)

    @staticmethod
    def for_rows(rows: int, seed: int = 1, **kwargs: Any) -> LedgerConfig:
        """A default-shaped ledger of about `rows` database rows (updates + events)."""
        mean = float(kwargs.get("events_mean", 12.0))
        updates = max(30, int(rows / (1 + mean)))
        shape = {k: kwargs.pop(k) for k in ("ids", "synchronizers", "gap_us") if k in kwargs}
        return LedgerConfig(seed=seed, migrations=default_migrations(updates, **shape), **kwargs)

    def with_growth(self, extra_updates: int) -> LedgerConfig:
        """The same ledger with `extra_updates` more at the end of its last migration (over its
        synchronizers): what a growing simulator shows once it has grown."""
        from dataclasses import replace

        *rest, last = sorted(self.migrations, key=lambda m: m.migration_id)
        grown = replace(last, updates=last.updates + -(-extra_updates // last.synchronizers))
        return replace(self, migrations=(*rest, grown))


def default_migrations(
    total_updates: int, ids: tuple[int, ...] = (0, 1, 3), synchronizers: int = 1, gap_us: int = 2_000_000
) -> tuple[MigrationSpec, ...]:
    """Migrations (by default 0, 1, 3: ids with a gap) whose time ranges overlap, like MainNet.

    Later migrations are larger, and each one after the first carries a few import updates.
    """
    weights = list(range(2, 2 + len(ids)))
    per = [max(10, total_updates * w // (sum(weights) * synchronizers)) for w in weights]
    out = []
    start = parse_us("2024-06-24T21:08:00Z")
    for k, (mid, n) in enumerate(zip(ids, per, strict=True)):
        out.append(
            MigrationSpec(
                mid,
                format_us(start),
                n,
                synchronizers=synchronizers,
                gap_us=gap_us,
                import_updates=0 if k == 0 else 20 + 10 * k,
            )
        )
        start += n * gap_us - 300_000_000  # the next one starts 5 minutes before this one ends
    return tuple(out)


@dataclass(frozen=True)
class UpdateHeader:
    """What a test needs to know about an update without rendering its payload."""

    update_id: str
    migration_id: int
    synchronizer_id: str  # effective: target of an assignment, source of an unassignment
    record_us: int
    kind: str  # transaction | assignment | unassignment
    shape: str  # transfer | marker | rounds | traffic | assign | unassign
    event_count: int
    round: int | None

    @property
    def record_time(self) -> str:
        return format_us(self.record_us)

    def event_ids(self) -> list[str]:
        return [f"{self.update_id}:{n}" for n in range(self.event_count)]


def _mix(*parts: int | str) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _hex(*parts: int | str, n: int = 32) -> str:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=n).hexdigest()


class Ledger:
    """Read-only view of the synthetic history defined by a `LedgerConfig`."""

    def __init__(self, config: LedgerConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.specs = {m.migration_id: m for m in config.migrations}
        ids = sorted(self.specs)
        self.previous = {mid: (ids[k - 1] if k else None) for k, mid in enumerate(ids)}
        self.genesis_us = min(m.start_us for m in config.migrations)
        self._starts = {m.migration_id: m.start_us for m in config.migrations}
        self.dso = f"DSO::1220{_hex(self.seed, 'dso')}"
        self.parties = [
            f"{name}-{k}::1220{_hex(self.seed, 'party', k)}"
            for k, name in enumerate(
                ["Cumberland-GasStation", "validator", "digital-asset", "alice", "bob", "c7-wallet"] * 6
            )
        ]
        self.packages = {
            name: _hex(self.seed, "pkg", name)
            for name in (
                "splice-amulet",
                "splice-dso-governance",
                "splice-wallet-payments",
                "splice-amulet-name-service",
                "splice-validator-lifecycle",
                "splice-api-token-transfer-instruction-v1",
            )
        }
        self.life = Lifecycle(self)
        self._import_cache: dict[int, dict[str, Ref]] = {}

    # ----- layout -----------------------------------------------------------------------------

    def migration_ids(self) -> list[int]:
        return sorted(self.specs)

    def synchronizers(self, migration_id: int) -> list[str]:
        spec = self.specs.get(migration_id)
        if spec is None:
            return []
        return [self.synchronizer_id(s) for s in range(spec.synchronizers)]

    def synchronizer_id(self, s: int) -> str:
        if s == 0:
            return f"global-domain::1220{_hex(self.seed, 'dso')}"
        return f"app-synchronizer-{s}::1220{_hex(self.seed, 'sync', s)}"

    def sync_index(self, migration_id: int, synchronizer_id: str) -> int | None:
        try:
            return self.synchronizers(migration_id).index(synchronizer_id)
        except ValueError:
            return None

    def record_us(self, m: int, s: int, i: int) -> int:
        spec = self.specs[m]
        g, n = spec.gap_us, spec.synchronizers
        if n == 1 or self.config.shared_microseconds:
            phase, h = i % NEIGHBOUR_PERIOD, _mix(self.seed, "t", m, s, i) % g
        else:
            # unique across synchronizers: the 1 us neighbours of each synchronizer fall on other
            # indices, and every other offset lies in [1, g-2] with residue s modulo n
            phase = (i + s) % NEIGHBOUR_PERIOD
            h = 1 + (_mix(self.seed, "t", m, s, i) % ((g - 2) // n)) * n + s
        if phase == 0:
            h = g - 1
        elif phase == 1:
            h = 0
        return self._starts[m] + i * g + h

    def index_at_or_after(self, m: int, s: int, t_us: int) -> int:
        """Smallest index whose record time is >= t_us (the count when none is)."""
        spec = self.specs[m]
        rel = t_us - self._starts[m]
        if rel <= 0:
            return 0
        i = rel // spec.gap_us
        if i >= spec.updates:
            return spec.updates
        return i if self.record_us(m, s, i) >= t_us else min(i + 1, spec.updates)

    def ranges(self) -> Iterator[tuple[int, str, int, int]]:
        """(migration, synchronizer id, first record time, last record time) of every range."""
        for m in self.migration_ids():
            for s, sid in enumerate(self.synchronizers(m)):
                yield (m, sid, *self.range_us(m, s))

    def range_us(self, m: int, s: int) -> tuple[int, int]:
        n = self.specs[m].updates
        return self.record_us(m, s, 0), self.record_us(m, s, n - 1)

    def round_at(self, t_us: int) -> int:
        return self.config.round_zero + (t_us - self.genesis_us) // ROUND_TICK_US

    # ----- headers ------------------------------------------------------------------------------

    def update_id(self, m: int, s: int, i: int) -> str:
        return f"1220{_hex(self.seed, 'u', m, s, i)}"

    def header(self, m: int, s: int, i: int) -> UpdateHeader:
        t = self.record_us(m, s, i)
        uid = self.update_id(m, s, i)
        sync = self.synchronizer_id(s)
        shape = self.life.shape(m, s, i)
        if shape in ("assign", "unassign"):
            return UpdateHeader(uid, m, sync, t, shape + "ment", shape, 1 if shape == "assign" else 0, None)
        made = self.life.slots(m, s, i)
        n = 1 + len(made)
        if shape == "transfer":  # + AmuletRules_Transfer, its inputs, a transient's create and consumption
            n += 1 + len(self.life.inputs(m, s, i)) + (2 if self.life.has_transient(m, s, i) else 0)
        # a marker carries no round, unless it also makes a dormant Amulet (whose createdAt is one)
        bare = shape == "marker" and not ("long" in made and self.kind(Ref(m, s, i, "long"))[2] == "Amulet")
        rnd = None if bare else self.round_at(t)
        return UpdateHeader(uid, m, sync, t, "transaction", shape, n, rnd)

    def headers(self, m: int, s: int, lo: int = 0, hi: int | None = None) -> Iterator[UpdateHeader]:
        hi = self.specs[m].updates if hi is None else hi
        for i in range(lo, hi):
            yield self.header(m, s, i)

    def expected(
        self, m: int, synchronizer_id: str, at_or_after_us: int | None = None, before_us: int | None = None
    ) -> list[UpdateHeader]:
        """Exactly the updates a complete backfill of this range must store, oldest first."""
        s = self.sync_index(m, synchronizer_id)
        if s is None:
            return []
        lo = 0 if at_or_after_us is None else self.index_at_or_after(m, s, at_or_after_us)
        hi = self.specs[m].updates if before_us is None else self.index_at_or_after(m, s, before_us)
        return list(self.headers(m, s, lo, hi))

    def expected_all(self) -> list[UpdateHeader]:
        out: list[UpdateHeader] = []
        for m in self.migration_ids():
            for sid in self.synchronizers(m):
                out.extend(self.expected(m, sid))
        return out

    def total_updates(self) -> int:
        return sum(spec.updates * spec.synchronizers for spec in self.specs.values())

    # ----- import updates -----------------------------------------------------------------------

    def import_ids(self, m: int) -> list[str]:
        """Import updates of a migration, ascending by update id (which is the contract id): the
        contracts active when the previous migration ended (a migration with `import_updates` 0 has
        none); a contract alive across several migrations is imported by each of them."""
        return sorted(self._imports(m))

    def _imports(self, m: int) -> dict[str, Ref]:
        spec = self.specs.get(m)
        prev = self.previous.get(m)
        if spec is None or not spec.import_updates or prev is None:
            return {}
        if m not in self._import_cache:
            self._import_cache[m] = {self.cid(r): r for r in self.life.final(prev)}
        return self._import_cache[m]

    def import_update(self, m: int, cid: str) -> Json:
        ref = self._imports(m)[cid]
        ev = self.created_event(ref, f"{cid}:0")
        return {
            "update_id": cid,
            "migration_id": m,
            "workflow_id": f"canton-network-acs-import-{cid}",
            "record_time": IMPORT_TIME,
            "synchronizer_id": self.synchronizer_id(0),
            "effective_at": format_instant(MIN_US),
            "offset": V1_OFFSET,
            "root_event_ids": [f"{cid}:0"],
            "events_by_id": {f"{cid}:0": ev},
        }

    # ----- contracts ----------------------------------------------------------------------------

    @property
    def snapshot_period_us(self) -> int:
        return max(1, int(self.config.acs_snapshot_hours * 3_600_000_000))

    def migration_end_us(self, m: int) -> int:
        return max(self.range_us(m, s)[1] for s in range(self.specs[m].synchronizers))

    def snapshot_before(self, m: int, t_us: int) -> int | None:
        """The newest ACS snapshot of migration m at or before t (whole periods of record time,
        taken while the migration had updates)."""
        spec = self.specs.get(m)
        if spec is None:
            return None
        p = self.snapshot_period_us
        snap = min(t_us, self.migration_end_us(m))
        snap -= snap % p
        return snap if snap >= spec.start_us else None

    def snapshot_after(self, m: int, t_us: int) -> tuple[int, int] | None:
        """(migration, time) of the first snapshot after t of migration m or a later one."""
        p = self.snapshot_period_us
        for mid in self.migration_ids():
            if mid < m:
                continue
            first = max(t_us + 1, self.specs[mid].start_us)
            snap = first + (-first % p)
            if snap <= self.migration_end_us(mid):
                return mid, snap
        return None


    def cid(self, ref: Ref) -> str:
        """The contract id of a slot (an assignment's slot holds its right's contract)."""
        c = self.life.creation(ref)
        return self.contract_id(c.m, c.s, c.i, c.name)

    def acs(self, m: int, t_us: int) -> list[tuple[str, Ref]]:
        """(contract id, where it was created) of every contract active at position (m, t), in
        creation order: what a scan's ACS snapshot of migration m at record time t holds."""
        refs = self.life.active(m, t_us)
        return sorted(((self.cid(r), r) for r in refs), key=lambda x: (x[1].m, self.record_us(*x[1][:3]), x[0]))

    def parties_of(self, m: int, s: int, i: int) -> tuple[str, str]:
        """(sender, receiver) of update (m, s, i)."""
        r, k = _mix(self.seed, "who", m, s, i), len(self.parties)
        a = r % k
        return self.parties[a], self.parties[(a + 1 + (r >> 16) % (k - 1)) % k]

    def effective_us(self, m: int, s: int, i: int) -> int:
        t = self.record_us(m, s, i)
        r = _mix(self.seed, "eff", m, s, i)
        eff = t - 1 - r % 1_999_999
        return eff - eff % 1000 if (r >> 32) % 10 < 3 else eff  # effective_at printed in groups of 3 digits

    def amount(self, ref: Ref) -> int:
        """A holding's initial amount in units of 10^-10 (Daml's Numeric 10)."""
        return 10**10 + _mix(self.seed, "amount", *ref) % 10**16

    def locked(self, ref: Ref) -> bool:
        return ref.name == "tmp" or (ref.name == "out" and _mix(self.seed, "locked", *ref) % 8 == 0)

    def kind(self, ref: Ref) -> tuple[str, str, str]:
        """(package, module, entity) of the contract a slot holds."""
        name = self.life.creation(ref).name
        if name in ("out", "change", "tmp"):
            return ("splice-amulet", "Splice.Amulet", "LockedAmulet" if self.locked(ref) else "Amulet")
        if name == "right":
            return ("splice-amulet", "Splice.Amulet", "FeaturedAppRight")
        if name == "long":  # a validator licence, or a holding nobody spends (its fees grow round by round)
            if (ref.i // LONG_PERIOD) % 2:
                return ("splice-amulet", "Splice.Amulet", "Amulet")
            return ("splice-validator-lifecycle", "Splice.ValidatorLicense", "ValidatorLicense")
        if name == "traffic":
            return ("splice-amulet", "Splice.DecentralizedSynchronizer", "MemberTraffic")
        if name == "open":
            return ("splice-amulet", "Splice.Round", "OpenMiningRound")
        if name[0] == "r":
            return ("splice-amulet", "Splice.Round", ROUND_SLOTS[int(name[1:])])
        if name[0] == "c":
            return ("splice-amulet", "Splice.Amulet", ("AppRewardCoupon", "ValidatorRewardCoupon")[int(name[1:]) % 2])
        return ("splice-amulet", "Splice.Amulet", "FeaturedAppActivityMarker")

    def owner(self, ref: Ref) -> str:
        sender, receiver = self.parties_of(*self.life.creation(ref)[:3])
        return receiver if ref.name == "out" else sender

    def amulet_args(self, ref: Ref) -> Json:
        m, s, i, _ = ref
        fields: list[tuple[str, Json]] = [
            ("dso", {"party": self.dso}),
            ("owner", {"party": self.owner(ref)}),
            ("amount", self._rec(("initialAmount", self._num(self.amount(ref))),
                                 ("createdAt", self._round(self.round_at(self.record_us(m, s, i)))),
                                 ("ratePerRound", self._rec(("rate", self._num(RATE_PER_ROUND)))))),
        ]  # fmt: skip
        if self.config.payload_pad:
            fields.append(("meta", {"text": "x" * self.config.payload_pad}))
        return self._rec(*fields)

    def arguments(self, ref: Ref) -> Json:
        """The create arguments of a slot's contract (a pure function of the slot)."""
        ref = self.life.creation(ref)
        m, s, i, name = ref
        t = self.record_us(m, s, i)
        rnd = self.round_at(t)
        sender, receiver = self.parties_of(m, s, i)
        entity = self.kind(ref)[2]
        if entity == "Amulet":
            return self.amulet_args(ref)
        if entity == "LockedAmulet":
            return self._rec(("amulet", self.amulet_args(ref)),
                             ("lock", self._rec(("holders", {"list": {"elements": [{"party": self.dso}]}}),
                                                ("expiresAt", {"timestamp": str(t + 86_400_000_000)}),
                                                ("optContext", {"optional": {}}))))  # fmt: skip
        if entity == "FeaturedAppRight":
            return self._rec(("dso", {"party": self.dso}), ("provider", {"party": sender}))
        if entity == "ValidatorLicense":
            return self._rec(("validator", {"party": sender}), ("sponsor", {"party": receiver}), ("dso", {"party": self.dso}),
                             ("faucetState", {"optional": {}}), ("lastActiveAt", {"optional": {"value": {"timestamp": str(t)}}}))  # fmt: skip
        if entity == "MemberTraffic":
            return self._rec(("dso", {"party": self.dso}),
                             ("totalPurchased", self._i64(_mix(self.seed, "traffic", *ref) % 10**9)))  # fmt: skip
        if entity == "OpenMiningRound":
            return self._rec(
                ("dso", {"party": self.dso}), ("round", self._round(rnd)), ("amuletPrice", self._num(5 * 10**9)),
                ("opensAt", {"timestamp": str(t)}), ("targetClosesAt", {"timestamp": str(t + 2 * ROUND_TICK_US)}),
                ("issuingFor", self._rec(("microseconds", self._i64(0)))),
                ("tickDuration", self._rec(("microseconds", self._i64(ROUND_TICK_US)))),
            )  # fmt: skip
        if entity in ROUND_SLOTS:
            return self._rec(("dso", {"party": self.dso}), ("round", self._round(rnd - 1 - int(name[1:]))))
        if entity == "FeaturedAppActivityMarker":
            return self._rec(("dso", {"party": self.dso}), ("provider", {"party": sender}),
                             ("beneficiary", {"party": receiver}), ("weight", self._num(10**10)))  # fmt: skip
        return self._rec(("dso", {"party": self.dso}), ("provider", {"party": sender}),
                         ("amount", self._num(10**8 + _mix(self.seed, "coupon", *ref) % 10**12)),
                         ("round", self._round(rnd)))  # fmt: skip

    def created_event(self, ref: Ref, eid: str) -> Json:
        c = self.life.creation(ref)
        sender, receiver = self.parties_of(c.m, c.s, c.i)
        pkg, module, entity = self.kind(c)
        if entity in ("Amulet", "LockedAmulet"):
            signatories, observers = [self.dso, self.owner(c)], []
        elif entity in ("FeaturedAppRight", "MemberTraffic", "ValidatorLicense") or entity.endswith("MiningRound"):
            signatories, observers = [self.dso], [sender]
        else:
            signatories, observers = [self.dso, sender], [receiver]
        return self._created(eid, self.cid(c), pkg, module, entity, self.arguments(c), self.effective_us(c.m, c.s, c.i),
                             signatories, observers)  # fmt: skip

    # ----- full updates -------------------------------------------------------------------------

    def contract_id(self, *parts: int | str) -> str:
        h = hashlib.blake2b("/".join(map(str, (self.seed, "c", *parts))).encode(), digest_size=64).hexdigest()
        return f"00{h[:64]}ca101220{h[64:]}"

    def template(self, package: str, module: str, entity: str) -> str:
        return f"{self.packages[package]}:{module}:{entity}"

    def update(self, m: int, s: int, i: int) -> Json:
        """Update i of (m, s) in the V1 shape updates-before serves (protobuf_json values)."""
        h = self.header(m, s, i)
        rng = random.Random(_mix(self.seed, "p", m, s, i))
        if h.kind != "transaction":
            return self._reassignment(h, m, s, i)
        uid = h.update_id
        events, roots = self._tree(h, m, s, i, rng)
        assert len(events) == h.event_count, (h, len(events))
        order = sorted(events)  # a plain map: not preorder (x:10 sorts before x:2)
        out: Json = {
            "update_id": uid,
            "migration_id": m,
            "workflow_id": "",
            "record_time": format_us(h.record_us),
            "synchronizer_id": h.synchronizer_id,
            "effective_at": format_instant(self.effective_us(m, s, i)),
            "offset": V1_OFFSET,
            "root_event_ids": roots,
            "events_by_id": {k: events[k] for k in order},
        }
        if _mix(self.seed, "xh", m, s, i) % 10_000 < self.config.external_hash_rate * 10_000:
            out["external_transaction_hash"] = _hex(self.seed, "xh", m, s, i)  # omitted when absent, as Scan does
        return out

    def event_item(self, m: int, s: int, i: int, compact: bool) -> Json:
        """The /v0/events item of update i: the update with its mediator verdict, traffic summary
        and app activity records (a reassignment has none of those)."""
        h = self.header(m, s, i)
        update = to_v2(self.update(m, s, i), compact)
        if h.kind != "transaction":
            return {"update": update, "verdict": None, "traffic_summary": None, "app_activity_records": None}
        rng = random.Random(_mix(self.seed, "verdict", m, s, i))
        submitter, other = sorted(rng.sample(self.parties, 2))
        views = [
            {"view_id": k, "informees": [submitter, other],
             "confirming_parties": [{"parties": [submitter], "threshold": 1}], "sub_views": [],
             "view_hash": _hex(self.seed, "view", m, s, i, k)}
            for k in range(1 + rng.randrange(3))
        ]  # fmt: skip
        costs = [rng.randrange(2_000, 60_000) for _ in views]
        verdict = {
            "update_id": h.update_id, "migration_id": m, "domain_id": h.synchronizer_id,
            "record_time": format_us(h.record_us),
            "finalization_time": format_us(h.record_us + rng.randrange(1_000, 900_000)),
            "submitting_parties": [submitter],
            "submitting_participant_uid": f"PAR::{submitter.split('::')[0]}::1220{_hex(self.seed, 'par', submitter)}",
            "verdict_result": "VERDICT_RESULT_ACCEPTED", "mediator_group": 0,
            "transaction_views": {"views": views, "root_views": [0]},
        }  # fmt: skip
        traffic = {"total_traffic_cost": sum(costs),
                   "envelope_traffic_summaries": [{"traffic_cost": c, "view_ids": [v["view_id"]]}
                                                  for c, v in zip(costs, views, strict=True)]}  # fmt: skip
        activity = {"round_number": h.round if h.round is not None else self.round_at(h.record_us),
                    "records": [{"party": submitter, "weight": sum(costs)}]}  # fmt: skip
        return {"update": update, "verdict": verdict, "traffic_summary": traffic, "app_activity_records": activity}

    # ----- verdict-only /v0/events items -------------------------------------------------------

    def verdict_only_us(self, m: int, i: int) -> int | None:
        """Record time of the verdict-only item sequenced after update i of synchronizer 0 and before
        update i+1 (None when that gap has none). It is unique in its migration, as Scan promises of
        every /v0/events item: never an update's time on any synchronizer."""
        spec = self.specs[m]
        r = _mix(self.seed, "verdict-only", m, i)
        if i + 1 >= spec.updates or r % 10_000 >= self.config.verdict_only_rate * 10_000:
            return None
        lo, hi = self.record_us(m, 0, i), self.record_us(m, 0, i + 1)
        if hi - lo < 2:
            return None
        t = lo + 1 + (r >> 16) % (hi - lo - 1)
        taken = {self.record_us(m, s, j) for s in range(1, spec.synchronizers) for j in range(i - 1, i + 3)
                 if 0 <= j < spec.updates}  # fmt: skip
        while t in taken:
            t += 1
        return t if t < hi else None

    def verdict_only_id(self, m: int, i: int) -> str:
        """The update id the verdict names: a transaction this scan never serves as an update."""
        return f"1220{_hex(self.seed, 'private', m, i)}"

    def verdict_only_ids(self, m: int) -> list[str]:
        """Every verdict-only item's update id in migration m (a whole, grown ledger), in stream order."""
        return [self.verdict_only_id(m, i) for i in range(self.specs[m].updates) if self.verdict_only_us(m, i)]

    def verdict_only_item(self, m: int, i: int) -> Json:
        """The /v0/events item after update i of synchronizer 0 that bears only a mediator verdict
        (`"update": null`): Scan's EventHistoryItem for a transaction wholly private to other parties,
        or one the mediator rejected. Accepted ones carry a traffic summary and app activity records as
        every verdict does where the SVs compute them (CIP-104); a rejected one pays traffic, earns none."""
        t = self.verdict_only_us(m, i)
        assert t is not None, (m, i)
        rng = random.Random(_mix(self.seed, "verdict-only-item", m, i))
        submitter, other = sorted(rng.sample(self.parties, 2))
        rejected = rng.random() < 0.05
        views = [
            {"view_id": k, "informees": [submitter, other],
             "confirming_parties": [{"parties": [other], "threshold": 1}], "sub_views": [],
             "view_hash": _hex(self.seed, "private-view", m, i, k)}
            for k in range(1 + rng.randrange(2))
        ]  # fmt: skip
        costs = [rng.randrange(2_000, 40_000) for _ in views]
        verdict = {
            "update_id": self.verdict_only_id(m, i), "migration_id": m, "domain_id": self.synchronizer_id(0),
            "record_time": format_us(t), "finalization_time": format_us(t + rng.randrange(1_000, 900_000)),
            "submitting_parties": [submitter],
            "submitting_participant_uid": f"PAR::{submitter.split('::')[0]}::1220{_hex(self.seed, 'par', submitter)}",
            "verdict_result": "VERDICT_RESULT_REJECTED" if rejected else "VERDICT_RESULT_ACCEPTED",
            "mediator_group": 0, "transaction_views": {"views": views, "root_views": [0]},
        }  # fmt: skip
        traffic = {"total_traffic_cost": sum(costs),
                   "envelope_traffic_summaries": [{"traffic_cost": c, "view_ids": [v["view_id"]]}
                                                  for c, v in zip(costs, views, strict=True)]}  # fmt: skip
        rnd = self.header(m, 0, i).round
        activity = None if rejected else {"round_number": rnd if rnd is not None else self.round_at(t),
                                          "records": [{"party": submitter, "weight": sum(costs)}]}  # fmt: skip
        return {"update": None, "verdict": verdict, "traffic_summary": traffic, "app_activity_records": activity}

    # ----- value builders (protobuf_json) -------------------------------------------------------

    def _rec(self, *fields: tuple[str, Json]) -> Json:
        if self.config.labels:
            return {"record": {"fields": [{"label": k, "value": v} for k, v in fields]}}
        return {"record": {"fields": [{"value": v} for _, v in fields]}}

    @staticmethod
    def _num(x: int) -> Json:
        return {"numeric": f"{x // 10**10}.{x % 10**10:010d}"}

    @staticmethod
    def _i64(n: int) -> Json:
        return {"int64": str(n)}

    def _round(self, n: int) -> Json:
        return self._rec(("number", self._i64(n)))



    def _created(
        self,
        eid: str,
        cid: str,
        package: str,
        module: str,
        entity: str,
        args: Json,
        created_us: int,
        signatories: list[str],
        observers: list[str],
    ) -> Json:
        return {
            "event_type": "created_event",
            "event_id": eid,
            "contract_id": cid,
            "template_id": self.template(package, module, entity),
            "package_name": package,
            "create_arguments": args,
            "created_at": format_trimmed(created_us),
            "signatories": sorted(set(signatories)),
            "observers": sorted(set(observers)),
        }

    def _exercised(
        self,
        eid: str,
        cid: str,
        package: str,
        module: str,
        entity: str,
        choice: str,
        arg: Json,
        children: list[str],
        result: Json,
        consuming: bool,
        acting: list[str],
        interface_id: str | None = None,
    ) -> Json:
        return {
            "event_type": "exercised_event",
            "event_id": eid,
            "contract_id": cid,
            "template_id": self.template(package, module, entity),
            "package_name": package,
            "choice": choice,
            "choice_argument": arg,
            "child_event_ids": children,
            "exercise_result": result,
            "consuming": consuming,
            "interface_id": interface_id,
            "acting_parties": acting,
        }

    def _consume(self, eid: str, ref: Ref, choice: str, acting: list[str]) -> Json:
        pkg, module, entity = self.kind(ref)
        return self._exercised(eid, self.cid(ref), pkg, module, entity, choice, self._rec(), [], {"unit": {}}, True,
                               acting)  # fmt: skip

    def _tree(
        self, h: UpdateHeader, m: int, s: int, i: int, rng: random.Random
    ) -> tuple[dict[str, Json], list[str]]:
        uid, rnd = h.update_id, h.round
        ids = [f"{uid}:{k}" for k in range(h.event_count)]
        sender, receiver = self.parties_of(m, s, i)
        made = self.life.slots(m, s, i)
        right = bool(made) and made[-1] == "right"
        made = [x for x in made if x != "right"]
        ev: dict[str, Json] = {}
        unit: Json = {"unit": {}}
        k = 1
        if h.shape == "transfer":
            assert rnd is not None
            inputs = self.life.inputs(m, s, i)
            k = 2
            for ref in inputs:
                ev[ids[k]] = self._consume(ids[k], ref, "Archive", [sender])
                k += 1
            for x in made:
                ev[ids[k]] = self.created_event(Ref(m, s, i, x), ids[k])
                k += 1
            if self.life.has_transient(m, s, i):  # locked and unlocked again within the transfer
                tmp = Ref(m, s, i, "tmp")
                ev[ids[k]] = self.created_event(tmp, ids[k])
                ev[ids[k + 1]] = self._consume(ids[k + 1], tmp, "LockedAmulet_Unlock", [self.owner(tmp)])
                k += 2
            self._transfer(ev, ids, k, m, s, i, rng, inputs, rnd)
        else:
            for x in made:
                ev[ids[k]] = self.created_event(Ref(m, s, i, x), ids[k])
                k += 1
            kids = ids[1:k]
            cids = [self.contract_id(m, s, i, x) for x in made]
            if h.shape == "marker":
                ev[ids[0]] = self._exercised(
                    ids[0], self.contract_id(m, s, i, "provider-right"), "splice-amulet", "Splice.Amulet",
                    "FeaturedAppRight", "FeaturedAppRight_CreateActivityMarker",
                    self._rec(("beneficiaries", {"list": {"elements": [
                        self._rec(("beneficiary", {"party": receiver}), ("weight", self._num(10**10)))]}})),
                    kids, self._rec(("activityMarkers", {"list": {"elements": [{"contractId": c} for c in cids]}})),
                    False, [sender],
                )  # fmt: skip
            elif h.shape == "rounds":
                assert rnd is not None
                ev[ids[0]] = self._exercised(
                    ids[0], self.contract_id("dso-rules"), "splice-dso-governance", "Splice.DsoRules", "DsoRules",
                    "DsoRules_AdvanceOpenMiningRounds",
                    self._rec(("amuletRulesCid", {"contractId": self.contract_id("amulet-rules")}),
                              ("roundToArchiveCid", {"contractId": self.contract_id("round", rnd - 3)})),
                    kids, unit, False, [self.dso],
                )  # fmt: skip
            else:  # a traffic purchase: the result carries the round
                assert rnd is not None
                ev[ids[0]] = self._exercised(
                    ids[0], self.contract_id("amulet-rules"), "splice-amulet", "Splice.AmuletRules", "AmuletRules",
                    "AmuletRules_BuyMemberTraffic",
                    self._rec(("provider", {"party": sender}),
                              ("memberId", {"text": f"PAR::{sender.split('::')[0]}::1220{_hex(sender)}"}),
                              ("trafficAmount", self._i64(rng.randrange(10**5, 10**8)))),
                    kids, self._rec(("round", self._round(rnd)), ("purchasedTraffic", {"contractId": cids[-1]})),
                    False, [sender],
                )  # fmt: skip
        if right:  # the FeaturedAppRight the next update unassigns: the root's last child
            ev[ids[k]] = self.created_event(Ref(m, s, i, "right"), ids[k])
            ev[ids[0]]["child_event_ids"].append(ids[k])
        return ev, [ids[0]]

    def _transfer(self, ev: dict[str, Json], ids: list[str], end: int, m: int, s: int, i: int, rng: random.Random,
                  inputs: list[Ref], rnd: int) -> None:  # fmt: skip
        """The root and AmuletRules_Transfer of a transfer whose inputs, outputs and transient are
        at ids[2:end]. Amounts add up: amulet inputs + rewards minted = outputs + fees + holding fees."""
        sender, receiver = self.parties_of(m, s, i)
        out, change = Ref(m, s, i, "out"), Ref(m, s, i, "change")
        spent = sum(self.amount(r) for r in inputs if self.kind(r)[2] in ("Amulet", "LockedAmulet"))
        fee = _mix(self.seed, "fee", m, s, i) % 10**9
        paid = self.amount(out) + self.amount(change) + fee
        minted, holding = max(0, paid - spent), max(0, spent - paid)
        variant = {"Amulet": "InputAmulet", "LockedAmulet": "InputAmulet", "AppRewardCoupon": "InputAppRewardCoupon",
                   "ValidatorRewardCoupon": "InputValidatorRewardCoupon"}  # fmt: skip
        listed = [{"variant": {"constructor": variant[self.kind(r)[2]], "value": {"contractId": self.cid(r)}}}
                  for r in inputs if self.kind(r)[2] in variant]  # fmt: skip
        summary = self._rec(
            ("inputAppRewardAmount", self._num(minted)),
            ("inputAmuletAmount", self._num(spent)),
            ("holdingFees", self._num(holding)),
            ("outputFees", self._rec(("_1", self._num(fee)))),
            ("senderChangeFee", self._num(0)),
            ("senderChangeAmount", self._num(self.amount(change))),
            ("amuletPrice", self._num(50000000 + rng.randrange(0, 10**8))),
            ("balanceChanges", {"genMap": {"entries": [
                {"key": {"party": p}, "value": self._rec(
                    ("changeToInitialAmountAsOfRoundZero", self._num(rng.randrange(0, 10**14))),
                    ("changeToHoldingFeesRate", self._num(rng.randrange(0, 10**6))))}
                for p in (sender, receiver)]}}),
        )  # fmt: skip
        made = "TransferResultLockedAmulet" if self.locked(out) else "TransferResultAmulet"
        result = self._rec(
            ("round", self._round(rnd)), ("summary", summary),
            ("createdAmulets", {"list": {"elements": [
                {"variant": {"constructor": made, "value": {"contractId": self.cid(out)}}}]}}),
            ("senderChangeAmulet", {"optional": {"value": {"contractId": self.cid(change)}}}),
        )  # fmt: skip
        lock = ({"optional": {"value": self._rec(("holders", {"list": {"elements": [{"party": self.dso}]}}))}}
                if self.locked(out) else {"optional": {}})  # fmt: skip
        transfer_arg = self._rec(
            ("transfer", self._rec(
                ("sender", {"party": sender}), ("provider", {"party": rng.choice(self.parties)}),
                ("inputs", {"list": {"elements": listed}} if listed else {"list": {}}),
                ("outputs", {"list": {"elements": [self._rec(("receiver", {"party": receiver}),
                                                             ("amount", self._num(self.amount(out))),
                                                             ("lock", lock))]}}))),
            ("context", self._rec(("openMiningRound", {"contractId": self.contract_id("round", rnd)}))),
        )  # fmt: skip
        root_arg = self._rec(("amount", self._num(self.amount(out))), ("description", {"optional": {}}))
        root_result = self._rec(("result", {"contractId": self.cid(out)}))
        if _mix(self.seed, "if", m, s, i) % 10_000 < self.config.interface_rate * 10_000:
            # the token standard: a choice of an interface the template implements (`interface_id` set)
            ev[ids[0]] = self._exercised(
                ids[0], self.contract_id("external-party-amulet-rules"), "splice-amulet",
                "Splice.ExternalPartyAmuletRules", "ExternalPartyAmuletRules", "TransferFactory_Transfer",
                root_arg, [ids[1]], root_result, False, [sender],
                interface_id=self.template("splice-api-token-transfer-instruction-v1",
                                           "Splice.Api.Token.TransferInstructionV1", "TransferFactory"),
            )  # fmt: skip
        else:
            ev[ids[0]] = self._exercised(
                ids[0], self.contract_id(m, s, i, "preapproval"), "splice-amulet", "Splice.AmuletRules",
                "TransferPreapproval", "TransferPreapproval_Send", root_arg, [ids[1]], root_result, False, [sender],
            )  # fmt: skip
        ev[ids[1]] = self._exercised(ids[1], self.contract_id("amulet-rules"), "splice-amulet", "Splice.AmuletRules",
                                     "AmuletRules", "AmuletRules_Transfer", transfer_arg, ids[2:end], result, False,
                                     [sender])  # fmt: skip

    def _reassignment(self, h: UpdateHeader, m: int, s: int, i: int) -> Json:
        """An unassignment of the right (s, i-1) made, or its assignment at (s+1, i+1)."""
        k = self.specs[m].synchronizers
        src, at = ((s - 1) % k, i - 1) if h.kind == "assignment" else (s, i)
        right = Ref(m, src, at - 1, "right")
        submitter = self.parties_of(m, src, at - 1)[0]
        common = {"unassign_id": f"1220{_hex(self.seed, 'unassign', m, src, at)}",
                  "reassignment_counter": 1 + _mix(self.seed, "counter", m, src, at) % 5}  # fmt: skip
        if h.kind == "assignment":
            event: Json = {
                "submitter": submitter,
                "source_synchronizer": self.synchronizer_id(src),
                "target_synchronizer": h.synchronizer_id,
                "migration_id": m,
                "unassign_id": common["unassign_id"],
                "created_event": self.created_event(right, f"{h.update_id}:0"),
                "reassignment_counter": common["reassignment_counter"],
            }
        else:
            event = {
                "submitter": submitter,
                "source_synchronizer": h.synchronizer_id,
                "migration_id": m,
                "target_synchronizer": self.synchronizer_id((s + 1) % k),
                "unassign_id": common["unassign_id"],
                "reassignment_counter": common["reassignment_counter"],
                "contract_id": self.cid(right),
            }
        return {"update_id": h.update_id, "offset": V1_OFFSET, "record_time": format_us(h.record_us), "event": event}

# ----- compact_json ------------------------------------------------------------------------------


def to_compact(value: Json) -> Any:
    """protobuf_json -> compact_json as Scan serves it (records keyed by label; a positional record,
    which real scans never serve, as the array of its fields; Some None inside an optional as [])."""
    ((tag, v),) = value.items()
    if tag == "record":
        fields = v.get("fields", [])
        if fields and not all(f.get("label") for f in fields):
            return [to_compact(f["value"]) for f in fields]
        return {f["label"]: to_compact(f["value"]) for f in fields}
    if tag in ("numeric", "int64", "text", "party", "contractId", "bool"):
        return v
    if tag == "timestamp":
        return format_instant(int(v))
    if tag == "date":
        return v
    if tag == "unit":
        return {}
    if tag == "optional":
        if "value" not in v:
            return None
        if "optional" in v["value"]:
            inner = to_compact(v["value"])
            return [] if inner is None else [inner]
        return to_compact(v["value"])
    if tag == "list":
        return [to_compact(e) for e in v.get("elements", [])]
    if tag == "textMap":
        return {e["key"]: to_compact(e["value"]) for e in v.get("entries", [])}
    if tag == "genMap":
        return [[to_compact(e["key"]), to_compact(e["value"])] for e in v.get("entries", [])]
    if tag == "variant":
        return {"tag": v["constructor"], "value": to_compact(v["value"])}
    if tag == "enum":
        return v["constructor"]
    return v


def event_to_compact(ev: Json) -> Json:
    out = dict(ev)
    for key in ("create_arguments", "choice_argument", "exercise_result"):
        if key in out:
            out[key] = to_compact(out[key])
    return out


def to_v1(update: Json, compact: bool) -> Json:
    """The deprecated /v1/updates shape (Scan's V1 encoding, what updates-before serves): `offset`
    kept, `events_by_id` in no defined order, values in the requested encoding (compact by default)."""
    if not compact:
        return update
    if "event" in update:
        return to_v2(update, compact)  # a reassignment: the same in both versions
    return {**update, "events_by_id": {k: event_to_compact(ev) for k, ev in update["events_by_id"].items()}}


def to_v2(update: Json, compact: bool) -> Json:
    """The /v2/updates shape: no `offset` on transactions, `events_by_id` sorted by key."""
    if "event" in update:
        if compact and "created_event" in update["event"]:
            event = dict(update["event"])
            event["created_event"] = event_to_compact(event["created_event"])
            return {**update, "event": event}
        return update
    out = {k: v for k, v in update.items() if k != "offset"}
    evs = update["events_by_id"]
    out["events_by_id"] = {k: (event_to_compact(evs[k]) if compact else evs[k]) for k in sorted(evs)}
    return out
