"""A database whose ledger went to a lake knows it. `run --lake` / `follow --lake` record every file
they write in `lake_files`; while any row is there, the ledger tables are not the copy (they are
empty), so a command that would read or write them instead (`verify`, `rebuild-state`, `--refetch`,
`run`/`follow` without `--lake`, `prepare`, `abort --truncate`) either works on the lake
(`rebuild-state` reads it: `lake.ledger`) or is refused in one line naming the lake and the
command that does work. `abort --truncate --lake`
removes the lake's tables with the rest, so the next `run --lake` stores every row once."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import psycopg

from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.errors import Refused
from scanfill.lake.layout import Lake, canonical

# what scanfill writes under a lake's root: the ledger's tables, their manifests, an export's derived tables
LAKE_DIRS = ("updates", "events", "_manifests", "contracts", "amulet_transfers")


@dataclass(frozen=True)
class LedgerLake:
    """A lake this database's ledger went to, and the rows its loaders committed there."""

    root: str  # the canonical name (`lake.layout.canonical`)
    updates: int
    events: int

    @property
    def shown(self) -> str:
        from scanfill.scan.client import redact_url

        return redact_url(self.root)


def ledger_lakes(db: Database) -> list[LedgerLake]:
    """The lakes `run --lake` / `follow --lake` loaded this database's ledger into (none on a
    database without scanfill's tables yet)."""
    try:
        with db.connect(autocommit=True, application="scanfill lake check") as conn:
            return [LedgerLake(t, u, e) for t, u, e in Store(db).lake_ledger(conn)]
    except psycopg.errors.UndefinedTable:
        return []


def _adopt(db: Database, lake: Lake) -> None:
    """What an older release recorded under another spelling of `lake` is this lake's (`lake.names`)."""
    from scanfill.lake.names import adopt

    try:
        with db.connect(autocommit=True, application="scanfill lake check") as conn:
            adopt(Store(db), conn, lake)
    except psycopg.errors.UndefinedTable:
        pass


def names(lakes: list[LedgerLake]) -> str:
    return ", ".join(x.shown for x in lakes)


def refuse_in_lake(db: Database, what: str, instead: str) -> None:
    """Refuse `what` (a command acting on the ledger tables) on a database whose ledger is in a lake;
    `instead` names what works, with `{lake}` for the lake's name."""
    lakes = ledger_lakes(db)
    if lakes:
        raise Refused(f"this database's ledger is in the lake {names(lakes)} ({_rows(lakes)}), not in the ledger "
                      f"tables: {what}; nothing done. {instead.format(lake=lakes[0].shown)}")  # fmt: skip


def require_same(db: Database, target: str, command: str) -> None:
    """`run --lake` / `follow --lake` loads the lake this database's ledger is in, and only there:
    into a second lake, beside rows in the ledger tables, or into a lake holding rows this database
    did not write (another database's, an export target, one a truncate left), every row it loads
    would be split from the rest or stored twice."""
    lake = Lake(target)
    _adopt(db, lake)
    lakes = ledger_lakes(db)
    if lakes and lake.root not in {x.root for x in lakes}:
        raise Refused(f"this database's ledger is in the lake {names(lakes)} ({_rows(lakes)}), not in {lake.shown}: "
                      f"a second lake would split it; run `scanfill {command} --lake {lakes[0].shown}`")  # fmt: skip
    if lakes:
        return
    try:
        with db.connect(autocommit=True, application="scanfill lake check") as conn:
            empty = Store(db).ledger_tables_empty(conn)
    except psycopg.errors.UndefinedTable:
        empty = True
    if not empty:
        raise Refused(f"this database's ledger is in its ledger tables, not in a lake: `{command} --lake "
                      f"{lake.shown}` would put the rest of it there, a split copy; nothing done. Run `scanfill "
                      f"{command}` without --lake, and `scanfill export --to {lake.shown}` for a lake of it")  # fmt: skip
    from scanfill.lake import read

    if read.exists(lake, "updates") and (held := sum(read.partition_rows(lake, "updates").values())):
        raise Refused(f"the lake {lake.shown} holds {held:,} updates this database did not write (another "
                      f"database's lake, an export target, or one a truncate left): `{command} --lake` would store "
                      "them a second time; nothing done. Name an empty lake, or remove scanfill's tables there "
                      f"({', '.join(LAKE_DIRS)}) first")  # fmt: skip


def require_export_source(db: Database, target: str) -> None:
    """`export` reads the ledger tables: on a database whose ledger is in a lake they are empty, and
    an export elsewhere would write a lake of nothing (its own lake gets contract state only)."""
    lake = Lake(target)
    _adopt(db, lake)
    lakes = ledger_lakes(db)
    if lakes and lake.root not in {x.root for x in lakes}:
        raise Refused(f"refusing to export to {lake.shown}: this database's ledger is in the lake {names(lakes)} "
                      f"({_rows(lakes)}) and its ledger tables are empty, so the export would hold none of it; nothing "
                      "done. The lake is Delta tables any engine copies; `scanfill export --to "
                      f"{lakes[0].shown}` adds contract state there")  # fmt: skip


def _rows(lakes: list[LedgerLake]) -> str:
    return f"{sum(x.updates for x in lakes):,} updates and {sum(x.events for x in lakes):,} events committed there"


def truncate_plan(db: Database, named: tuple[str, ...]) -> list[LedgerLake]:
    """The lakes `abort --truncate` must remove with the ledger: every lake of this database, each
    named with `--lake` (else the next `run --lake` would store its rows a second time)."""
    for n in named:
        _adopt(db, Lake(n))
    lakes = ledger_lakes(db)
    given = {canonical(n) for n in named}
    unknown = sorted(given - {x.root for x in lakes})
    if unknown:
        raise Refused(f"this database sent no ledger rows to {', '.join(unknown)}"
                      + (f" (its lake is {names(lakes)})" if lakes else " (it has no lake)")
                      + "; nothing done")  # fmt: skip
    left = [x for x in lakes if x.root not in given]
    if left:
        args = " ".join(f"--lake {x.shown}" for x in lakes)
        raise Refused(f"this database's ledger is in the lake {names(left)} ({_rows(left)}): truncating the "
                      "database alone would leave those rows there and the next `run --lake` would store every "
                      f"one twice; nothing done. `scanfill abort --truncate {args}` also removes the lake's "
                      "tables")  # fmt: skip
    return lakes


def remove(db: Database, lake: LedgerLake) -> int:
    """Remove what scanfill wrote under the lake's root (its tables, manifests, staged files), then
    forget its bookkeeping; returns the objects or directories removed. Files first: a failure
    leaves the database still knowing the lake, and the same `abort` finishes the job."""
    from scanfill.lake.layout import require_libraries

    require_libraries(lake.root)
    gone = _remove_tables(Lake(lake.root))
    with db.connect(autocommit=True, application="scanfill abort") as conn:
        Store(db).lake_forget(conn, lake.root)
    return gone


def _remove_tables(lake: Lake) -> int:
    from scanfill.lake.layout import _s3

    if lake.root.startswith("s3://"):
        s3, n = _s3(), 0
        for d in LAKE_DIRS:
            bucket, prefix = lake._s3_key(d + "/")
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                for i in range(0, len(keys), 1000):
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
                n += len(keys)
        return n
    if "://" not in lake.root:
        n = 0
        for d in LAKE_DIRS:
            path = os.path.join(lake.root, d)
            if os.path.lexists(path):
                shutil.rmtree(path)
                n += 1
        return n
    fs, root = lake._pyarrow_fs()
    from pyarrow import fs as pafs

    n = 0
    for d in LAKE_DIRS:
        path = f"{root.rstrip('/')}/{d}"
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
            n += 1
    return n
