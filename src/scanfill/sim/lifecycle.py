"""Which contracts each synthetic update creates and consumes, so the ledger is consistent and still
random-access: every consumed contract was created earlier and is consumed once, and any update,
or the active contract set at any position, is computed without replaying history.

The rules, all pure functions of (seed, migration, synchronizer, index):
- An update's *shape* comes from a hash; a reassignment pair is an unassignment at (s, i) of a
  FeaturedAppRight that (s, i-1) created, assigned at (s+1, i+1); the hashes of the neighbours
  decide whether a pair is possible there, so no shape depends on another's shape recursively.
- Every contract an update creates (a *slot*) has a lag L in [1, MAXLAG]; it is consumed by the
  first transfer on its synchronizer at index >= i + L (an assignment starts such a life on its
  target). Inverting that needs only the transfers just before: the inputs of transfer j are the
  slots with prev_transfer(j) < i + L <= j.
- A slot with no such transfer left in its migration is a *tail*: it is carried into the next
  migration (imported there) and consumed by that migration's first transfer at index >=
  i + L - n on synchronizer s mod n'; if there is none, or no next migration, it stays active.
- A transfer may also create and consume a LockedAmulet within itself: a transient contract.
- Every LONG_PERIOD-th update also creates a contract that is never consumed (a ValidatorLicense or
  an Amulet nobody spends): it lives on across every later migration (each one imports it again).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from scanfill.sim.ledger import Ledger

MAXLAG = 6
LONG_PERIOD = 50
TRANSACTIONS = ("transfer", "marker", "rounds", "traffic")
ROUND_SLOTS = ("IssuingMiningRound", "SummarizingMiningRound", "ClosedMiningRound")


class Ref(NamedTuple):
    """A slot: the contract update (m, s, i) creates under `name`."""

    m: int
    s: int
    i: int
    name: str


class Lifecycle:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.seed = ledger.seed
        self.n = {m: spec.updates for m, spec in ledger.specs.items()}
        self.syncs = {m: spec.synchronizers for m, spec in ledger.specs.items()}
        ids = sorted(ledger.specs)
        self.prev_m = {m: (ids[k - 1] if k else None) for k, m in enumerate(ids)}
        self.next_m = {m: (ids[k + 1] if k + 1 < len(ids) else None) for k, m in enumerate(ids)}
        self.raw = lru_cache(maxsize=1 << 18)(self._raw)
        self.shape = lru_cache(maxsize=1 << 18)(self._shape)
        self._final: dict[int, list[Ref]] = {}

    def _mix(self, *parts: int | str) -> int:
        from scanfill.sim.ledger import _mix

        return _mix(self.seed, *parts)

    # ----- shapes -----------------------------------------------------------------------------------

    def _raw(self, m: int, s: int, i: int) -> str:
        """The shape the hash asks for, before reassignment pairs are checked."""
        r = self._mix("k", m, s, i)
        if self.syncs[m] > 1 and (r % 10_000) < self.ledger.config.reassignment_rate * 10_000:
            return "unassign" if (r >> 20) % 2 == 0 else "spare"
        pick = (r >> 16) % 100
        return "transfer" if pick < 55 else "marker" if pick < 80 else "rounds" if pick < 85 else "traffic"

    def paired_unassign(self, m: int, s: int, i: int) -> bool:
        """Whether (s, i) unassigns the right (s, i-1) created, assigned at (s+1, i+1)."""
        n, k = self.n[m], self.syncs[m]
        if k < 2 or i < 1 or i + 1 >= n or self.raw(m, s, i) != "unassign":
            return False
        up, down = (s + 1) % k, (s - 1) % k
        return (self.raw(m, s, i - 1) in TRANSACTIONS and self.raw(m, up, i + 1) in TRANSACTIONS
                and (i + 2 >= n or self.raw(m, up, i + 2) != "unassign")
                and (i < 2 or self.raw(m, down, i - 2) != "unassign"))  # fmt: skip

    def _shape(self, m: int, s: int, i: int) -> str:
        k = self.syncs[m]
        if k > 1 and self.paired_unassign(m, (s - 1) % k, i - 1):
            return "assign"
        if self.paired_unassign(m, s, i):
            return "unassign"
        raw = self.raw(m, s, i)
        return raw if raw in TRANSACTIONS else "marker"

    def makes_right(self, m: int, s: int, i: int) -> bool:
        return self.paired_unassign(m, s, i + 1)

    def size(self, m: int, s: int, i: int) -> int:
        """The hash's event-count driver: a mean-preserving spread over [0.25, 1.75] x events_mean."""
        spread = ((self._mix("k", m, s, i) >> 32) % 1001) / 1000.0
        return max(4, min(round(self.ledger.config.events_mean * (0.25 + 1.5 * spread)), 40))

    # ----- slots --------------------------------------------------------------------------------------

    def has_transient(self, m: int, s: int, i: int) -> bool:
        return self._mix("transient", m, s, i) % 5 == 0

    def slots(self, m: int, s: int, i: int) -> list[str]:
        """What update (m, s, i) creates, in event order (the right, when it makes one, last)."""
        shape, n = self.shape(m, s, i), self.size(m, s, i)
        if shape == "transfer":
            out = ["out", "change", *(f"c{k}" for k in range(max(0, (n - 4) // 2)))]
        elif shape == "marker":
            out = [f"k{k}" for k in range(max(1, (n - 1) // 2))]
        elif shape == "rounds":
            out = ["open", *(f"r{k}" for k in range(len(ROUND_SLOTS)))]
        elif shape == "traffic":
            out = ["change", "traffic"]
        else:
            return []
        if i % LONG_PERIOD == LONG_PERIOD - 1:
            out.append("long")
        return [*out, "right"] if self.makes_right(m, s, i) else out

    def window_slots(self, m: int, s: int, i: int) -> list[str]:
        """Slots whose life ends at a later transfer of this synchronizer (the right moves first)."""
        if self.shape(m, s, i) == "assign":
            return ["assigned"]
        return [x for x in self.slots(m, s, i) if x not in ("right", "long")]

    def longs(self, m: int, s: int, below: int | None = None) -> list[Ref]:
        """The never-consumed contracts of (m, s) created below an index."""
        end = self.n[m] if below is None else below
        return [Ref(m, s, i, "long") for i in range(LONG_PERIOD - 1, end, LONG_PERIOD) if "long" in self.slots(m, s, i)]

    def lag(self, ref: Ref) -> int:
        return 1 + self._mix("lag", *ref) % MAXLAG

    def creation(self, ref: Ref) -> Ref:
        """Where the contract of a slot was created (an assignment's is its right's)."""
        if ref.name == "assigned":
            return Ref(ref.m, (ref.s - 1) % self.syncs[ref.m], ref.i - 2, "right")
        return ref

    # ----- transfers ----------------------------------------------------------------------------------

    def prev_transfer(self, m: int, s: int, j: int) -> int:
        """The last transfer before index j, or -1."""
        for x in range(j - 1, -1, -1):
            if self.shape(m, s, x) == "transfer":
                return x
        return -1

    def next_transfer(self, m: int, s: int, x: int) -> int | None:
        for y in range(max(0, x), self.n[m]):
            if self.shape(m, s, y) == "transfer":
                return y
        return None

    def tails(self, m: int, s: int) -> list[Ref]:
        """Slots of (m, s) no transfer of their migration consumes."""
        last = self.prev_transfer(m, s, self.n[m])
        return [Ref(m, s, i, x) for i in range(max(0, last + 1 - MAXLAG), self.n[m])
                for x in self.window_slots(m, s, i) if i + self.lag(Ref(m, s, i, x)) > last]  # fmt: skip

    def consumer(self, ref: Ref) -> tuple[int, int, int] | None:
        """(migration, synchronizer, index) of the transfer that consumes a slot; None: never."""
        if ref.name == "long":
            return None
        x = ref.i + self.lag(ref)
        j = self.next_transfer(ref.m, ref.s, x)
        if j is not None:
            return ref.m, ref.s, j
        nxt = self.next_m[ref.m]
        if nxt is None:
            return None
        s2 = ref.s % self.syncs[nxt]
        j = self.next_transfer(nxt, s2, x - self.n[ref.m])
        return (nxt, s2, j) if j is not None else None

    def inputs(self, m: int, s: int, j: int) -> list[Ref]:
        """What transfer j consumes: the inverse of `consumer`."""
        p = self.prev_transfer(m, s, j)
        out = [Ref(m, s, i, x) for i in range(max(0, p + 1 - MAXLAG), j) for x in self.window_slots(m, s, i)
               if p < i + self.lag(Ref(m, s, i, x)) <= j]  # fmt: skip
        prev = self.prev_m[m]
        if prev is not None and p < MAXLAG:
            for s0 in range(self.syncs[prev]):
                if s0 % self.syncs[m] == s:
                    out += [r for r in self.tails(prev, s0) if p < max(0, r.i + self.lag(r) - self.n[prev]) <= j]
        return out

    # ----- active contracts ---------------------------------------------------------------------------

    def final(self, m: int) -> list[Ref]:
        """Slots active once migration m has ended (what the next migration imports)."""
        if m not in self._final:
            prev = self.prev_m[m]
            kept = []
            if prev is not None:
                for r in self.final(prev):
                    c = self.consumer(r)
                    if c is None or c[0] > m:
                        kept.append(r)
            self._final[m] = kept + [r for s in range(self.syncs[m]) for r in self.tails(m, s) + self.longs(m, s)]
        return self._final[m]

    def active(self, m: int, t_us: int) -> list[Ref]:
        """Slots active at position (m, t): every update of earlier migrations and those of m at or
        before t have happened. Each is given where its contract was created."""
        out: list[Ref] = []
        prev = self.prev_m[m]
        record_us = self.ledger.record_us
        if prev is not None:
            for r in self.final(prev):
                c = self.consumer(r)
                if c is None or c[0] > m or record_us(*c) > t_us:
                    out.append(r)
        k = self.syncs[m]
        idx = [self.ledger.index_at_or_after(m, s, t_us + 1) for s in range(k)]
        for s in range(k):
            out += self.longs(m, s, idx[s])
            p = self.prev_transfer(m, s, idx[s])
            for i in range(max(0, p + 1 - MAXLAG), idx[s]):
                for x in self.window_slots(m, s, i):
                    c = self.consumer(Ref(m, s, i, x))
                    if c is None or c[0] > m or c[2] >= idx[c[1]]:
                        out.append(Ref(m, s, i, x))
            if k > 1:  # rights made before t and not yet assigned on the next synchronizer
                up = idx[(s + 1) % k]
                out += [Ref(m, s, r, "right") for r in range(max(0, up - 2), idx[s]) if self.makes_right(m, s, r)]
        return [self.creation(r) for r in out]
