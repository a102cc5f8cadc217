"""The bytes a loader holds in flight (pages being fetched, decoded, waiting to commit), kept under
one budget (`--memory`), whatever the ledger size, the concurrency or the weight of an update.

Each slice reserves what its next page is expected to weigh before asking for it, holds what the
decoded rows weigh until they are committed, and gives it back then. When the budget is spent, the
next reservation waits; one reservation is always let through when nothing is held, so a page
larger than the whole budget is still loaded (alone) instead of never.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

DEFAULT_MB = 384  # in flight; with the interpreter, buffers and allocator slack a loader stays under 1 GB RSS
MIN_MB = 16


@dataclass
class BudgetStats:
    peak: int = 0  # most bytes held at once
    waits: int = 0  # reservations that had to wait for others to commit


class ByteBudget:
    """Used from one event loop (a loader process's slices)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = max(1, int(limit_bytes))
        self.used = 0
        self.stats = BudgetStats()
        self._freed = asyncio.Event()

    def fits(self, n: int) -> bool:
        """Whether `n` more bytes would be let through now."""
        return self.used == 0 or self.used + n <= self.limit

    async def acquire(self, n: int) -> int:
        """Reserve `n` bytes (waiting while others hold the budget); returns what was reserved."""
        n = max(0, int(n))
        if self.used and self.used + n > self.limit:
            self.stats.waits += 1
            while self.used and self.used + n > self.limit:
                await self._freed.wait()
        self.used += n
        self.stats.peak = max(self.stats.peak, self.used)
        return n

    def resize(self, held: int, actual: int) -> int:
        """A reservation turned out to weigh `actual`: hold that instead (never waits: the bytes
        already exist). Returns the new amount held."""
        actual = max(0, int(actual))
        self.used = max(0, self.used + actual - held)
        self.stats.peak = max(self.stats.peak, self.used)
        if actual < held:
            self._wake()
        return actual

    def release(self, n: int) -> None:
        if n > 0:
            self.used = max(0, self.used - int(n))
            self._wake()

    def _wake(self) -> None:
        """Let every waiter look again (each re-checks its own size)."""
        self._freed.set()
        self._freed = asyncio.Event()

    def page_share(self, concurrency: int) -> int:
        """What one slice's page may weigh so that every slice can hold about three (one fetching,
        one pending, one committing; a page being decoded counts twice) within the budget."""
        return max(64 * 1024, self.limit // max(1, 4 * concurrency))
