"""The one owner of scanfill's coordination tables: every statement is in `queries.sql`, run here.

What each rule means is written once: a lease (claim, renew, release, fence) is the same for time
slices and import cursors (`LeaseKind`); "complete" is `Progress.complete`; resetting after the
ledger tables were emptied resets every kind of cursor. Callers hold no SQL of these tables.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.errors import Fenced


@cache
def _statements() -> dict[str, str]:
    text = resources.files("scanfill.coord").joinpath("queries.sql").read_text()
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.startswith("--")]
        out[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return out


class LeaseKind(enum.Enum):
    """What a lease is on: a time slice (keyed by cursor name) or a migration's import cursor."""

    SLICE = "slice"
    IMPORT = "import"


class WorkerState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"
    DEAD = "dead"




@dataclass(frozen=True)
class Lease:
    kind: LeaseKind
    key: str | int  # cursor name of a slice, migration id of an import cursor
    owner: str
    epoch: int


@dataclass(frozen=True)
class Share:
    """Which slices a worker may take: a static WORKER_ID/WORKER_COUNT partition and/or migrations."""

    index: int = 0
    count: int = 1
    migrations: tuple[int, ...] = ()

    def params(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "migrations": list(self.migrations)}


@dataclass(frozen=True)
class Progress:
    slices: int
    slices_done: int
    ranges: int
    ranges_unproven: int
    imports_open: int
    updates: int
    events: int
    bytes: int
    span_s: float
    covered_s: float

    @property
    def complete(self) -> bool:
        """Every slice complete, every range vouched for by a scan reporting a complete history,
        every import cursor complete: the one meaning of "complete" in scanfill."""
        return self.slices > 0 and self.slices == self.slices_done and self.ranges_unproven == 0 and not self.imports_open

    @property
    def fraction(self) -> float:
        return self.covered_s / self.span_s if self.span_s else 1.0


def guard_timeout(lease_s: float) -> str:
    """How long a commit's transaction may take: a frozen committer must not hold its row forever."""
    return f"{int(max(4 * lease_s, 10.0) * 1000)}ms"


class Store:
    """Runs the named statements of queries.sql against one schema; a connection is passed in
    (the worker keeps a pool of them), and a method never commits more than its own work."""

    def __init__(self, db: Database) -> None:
        self.db = db
        schema = sql.Identifier(db.schema)
        self._q = {name: sql.SQL(text.replace("{s}", "{schema}")).format(schema=schema)
                   for name, text in _statements().items()}  # fmt: skip

    def run(self, conn: Conn, query: str, /, **params: Any) -> psycopg.Cursor[Any]:
        return conn.execute(self._q[query], params or None)

    def one(self, conn: Conn, query: str, /, **params: Any) -> Any:
        return self.run(conn, query, **params).fetchone()

    def all(self, conn: Conn, query: str, /, **params: Any) -> list[Any]:
        return self.run(conn, query, **params).fetchall()

    # ----- leases, the same for both kinds ------------------------------------------------------

    def claim_slice(self, conn: Conn, owner: str, lease_s: float, share: Share, exclude: list[str],
                    dead: list[str]) -> Any:  # fmt: skip
        with conn.transaction():
            return self.one(conn, "slice_claim", owner=owner, lease_s=lease_s, exclude=exclude, dead=dead,
                            **share.params())  # fmt: skip

    def claim_import(self, conn: Conn, owner: str, lease_s: float, share: Share) -> tuple[Lease, str] | None:
        """An import cursor's lease and the update id it stands after."""
        with conn.transaction():
            row = self.one(conn, "import_claim", owner=owner, lease_s=lease_s, migrations=list(share.migrations))
        return None if row is None else (Lease(LeaseKind.IMPORT, int(row[0]), owner, int(row[2])), str(row[1]))

    def imports_open(self, conn: Conn) -> int:
        return int(self.one(conn, "imports_open")[0])

    def renew(self, conn: Conn, owner: str, lease_s: float) -> int:
        """Heartbeat: every lease this worker holds, of every kind, lives on."""
        with conn.transaction():
            n = self.run(conn, "slices_renew", owner=owner, lease_s=lease_s).rowcount
            return n + self.run(conn, "imports_renew", owner=owner, lease_s=lease_s).rowcount

    def release(self, conn: Conn, lease: Lease) -> None:
        name = "slice_release" if lease.kind is LeaseKind.SLICE else "import_release"
        with conn.transaction():
            self.run(conn, name, key=lease.key, owner=lease.owner, epoch=lease.epoch)

    def lock_for_commit(self, conn: Conn, lease: Lease, lease_s: float, expected: str) -> Any:
        """Inside the caller's transaction: lock the cursor row, set the guard, check the fence."""
        kind = "slice" if lease.kind is LeaseKind.SLICE else "import"
        row = self.one(conn, f"{kind}_lock", key=lease.key, guard=guard_timeout(lease_s))
        if row is None:
            raise Fenced(f"{kind} {lease.key} no longer exists")
        position, owner, epoch, complete = (row[1], row[2], row[3], row[4]) if kind == "slice" else row[:4]
        if owner != lease.owner or epoch != lease.epoch:
            raise Fenced(f"{kind} {lease.key}: lease now held by {owner} (epoch {epoch})")
        if complete or position != expected:
            raise Fenced(f"{kind} {lease.key} moved to {position!r} under this worker")
        return row

    # ----- state and the crash reset ------------------------------------------------------------

    def progress(self, conn: Conn) -> Progress:
        row = self.one(conn, "progress")
        assert row is not None
        slices, done, ranges, unproven, imp, upd, ev, nbytes, span, covered = row
        return Progress(int(slices), int(done), int(ranges), int(unproven), int(imp), int(upd), int(ev), int(nbytes),
                        float(span), float(covered))  # fmt: skip

    def reset_cursors(self, conn: Conn) -> None:
        """Inside the caller's transaction: the ledger tables were emptied, so every cursor of
        every kind starts over (never "complete" over rows that are gone)."""
        self.run(conn, "slices_lock_all")
        self.run(conn, "slices_reset")
        self.run(conn, "imports_reset")
