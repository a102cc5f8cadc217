"""Cursors no scan can serve: found by `doctor`, repaired by `follow --rewind`.

scanfill's pipeline refuses any page holding a position no scan announces, so a cursor cannot move
there any more; a database written by an earlier release (one corrupted `/v2/updates` item with
`migration_id: 99` moved the follower there for good, and every later follower stored nothing) may
still hold one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.errors import ScanError
from scanfill.load.pipeline import Known
from scanfill.scan.client import ScanClient, ScanConfig
from scanfill.timeutil import format_us


@dataclass
class Unservable:
    problems: list[str] = field(default_factory=list)  # what is wrong, as the user reads it
    cut: dict[int, int | None] = field(default_factory=dict)  # migration -> scans' head (None: unannounced)


async def _heads(scan: ScanConfig, migrations: set[int]) -> Known:
    async with ScanClient(scan) as client:
        known = Known(client)
        for m in sorted(migrations):
            await known.refresh(m)
    return known


def find_unservable(db: Database, scan: ScanConfig) -> Unservable:
    """Cursors and stored positions past what any scan announces (a migration none has, a record
    time beyond every scan's newest)."""
    store = Store(db)
    with db.connect(autocommit=True, application="scanfill doctor") as conn:
        positions = store.follow_positions(conn)
        migrations = set(store.range_migrations(conn)) | {m for m, _ in positions.values()}
    out = Unservable()
    if not migrations:
        return out
    known = asyncio.run(_heads(scan, migrations))
    for m in sorted(migrations):
        if m not in known.heads:
            out.cut[m] = None
    for stream, (m, t) in positions.items():
        if m not in known.heads:
            out.problems.append(f"the follower's {stream} cursor is at migration {m}, which no scan announces")
        elif t > known.heads[m]:
            out.cut[m] = known.heads[m]
            out.problems.append(f"the follower's {stream} cursor is at {format_us(t)} in migration {m}, past the "
                                f"newest record time any scan reports ({format_us(known.heads[m])})")  # fmt: skip
    for m, head in out.cut.items():
        if head is None:
            out.problems.append(f"rows and ranges of migration {m} are stored, which no scan announces")
    return out


def rewind(db: Database, scan: ScanConfig) -> tuple[Unservable, tuple[int, int]]:
    """Repair what `find_unservable` finds; returns it and the (updates, events) rows removed."""
    found = find_unservable(db, scan)
    if not found.cut:
        return found, (0, 0)
    with db.connect(autocommit=True, application="scanfill follow --rewind") as conn:
        return found, Store(db).rewind(conn, found.cut)


def cursor_findings(db: Database, scan: ScanConfig) -> tuple[bool, str, str]:
    """(ok, finding, fix) for doctor."""
    try:
        found = find_unservable(db, scan)
    except ScanError as exc:
        return True, f"not checked: the scans did not answer ({exc})", ""
    if not found.problems:
        return True, "every cursor and stored position is one the scans announce", ""
    return False, "; ".join(found.problems) + (". Nothing after it can be followed: followers ask for updates after a "
                                               "position no scan has, and store none"), \
        "`scanfill follow --rewind` removes what lies past what the scans announce and moves the cursors back " \
        "onto stored positions; `scanfill follow` then goes on from there"  # fmt: skip
