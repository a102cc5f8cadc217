"""A lake's one name in the database. Releases before canonical names (`layout.canonical`) keyed a
lake's bookkeeping (`lake_files`, `lake_exports`, its contract-state mark) by the spelling it was
given; whoever opens the lake moves what is recorded under a spelling of the same lake to the
canonical name, so a `run --lake` lake is still known as one and files a killed loader left are
still published."""

from __future__ import annotations

import logging

from scanfill.coord.store import Store
from scanfill.db import Conn
from scanfill.errors import ConfigError
from scanfill.lake.layout import Lake, canonical

log = logging.getLogger("scanfill.lake")


def adopt(store: Store, conn: Conn, lake: Lake) -> list[str]:
    """Move the bookkeeping of every other spelling of `lake` (resolved from here) to its canonical
    name; returns the spellings moved."""
    moved = []
    for name in store.lake_names(conn):
        if name != lake.root and _names(name, lake.root) and store.lake_rename(conn, name, lake.root):
            moved.append(name)
    if moved:
        log.warning("%s: bookkeeping recorded under %s moved to this canonical name", lake.shown,
                    ", ".join(repr(n) for n in moved))  # fmt: skip
    return moved


def _names(spelling: str, root: str) -> bool:
    try:
        return canonical(spelling) == root
    except ConfigError:
        return False
