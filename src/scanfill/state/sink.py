"""Writing contract facts: one merge statement per committed batch, inside the batch's transaction.

The merge is order-free and idempotent (the earliest create and consuming exercise win, the newest
move wins), so pages may arrive newest first, in parallel slices, twice, or after a crash, and the
row a contract ends up with is the same. It relies on `contracts_pkey`, which `prepare` keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.state.facts import SQL_TYPES, Fact, merge

COLUMNS = Fact._fields
_TEMPLATE = ("template_id", "package_name", "template_name")
_NEW_CREATE = "(EXCLUDED.created_pos IS NOT NULL AND (c.created_pos IS NULL OR EXCLUDED.created_pos < c.created_pos))"
_NEW_ARCHIVE = ("(EXCLUDED.archived_pos IS NOT NULL AND (c.archived_pos IS NULL "
                "OR EXCLUDED.archived_pos < c.archived_pos))")  # fmt: skip
_NEW_PLACE = ("(EXCLUDED.synchronizer_pos IS NOT NULL AND (c.synchronizer_pos IS NULL "
              "OR EXCLUDED.synchronizer_pos > c.synchronizer_pos))")  # fmt: skip


def _rule(col: str) -> str:
    if col in _TEMPLATE:
        return f"CASE WHEN {_NEW_CREATE} THEN EXCLUDED.{col} ELSE coalesce(c.{col}, EXCLUDED.{col}) END"
    cond = (_NEW_ARCHIVE if col.startswith("archived_") else _NEW_PLACE if col.startswith("synchronizer_")
            else _NEW_CREATE)  # fmt: skip
    return f"CASE WHEN {cond} THEN EXCLUDED.{col} ELSE c.{col} END"


def merge_statement(db: Database) -> sql.Composed:
    """INSERT ... ON CONFLICT over the facts of a batch, sent as one JSON array of objects."""
    cols = ", ".join(COLUMNS)
    typed = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, SQL_TYPES, strict=True))
    sets = ", ".join(f"{c} = {_rule(c)}" for c in COLUMNS[1:])
    text = (f"INSERT INTO {{t}} AS c ({cols}) SELECT {cols} FROM json_to_recordset(%s::json) AS x({typed}) "
            f"ORDER BY contract_id ON CONFLICT (contract_id) DO UPDATE SET {sets}")  # fmt: skip
    return sql.SQL(text).format(t=db.t("contracts"))


def _json(facts: list[Fact]) -> bytes:
    rows: list[dict[str, Any]] = []
    for f in facts:
        d = f._asdict()
        if f.payload is not None:
            d["payload"] = orjson.Fragment(f.payload)
        rows.append(d)
    return orjson.dumps(rows)


class StateSink:
    """The contract-state half of a commit; `enabled=False` leaves `contracts` alone (measuring)."""

    def __init__(self, db: Database, enabled: bool = True) -> None:
        self.enabled = enabled
        self.statement = merge_statement(db)

    def write(self, conn: Conn, facts: Iterable[Fact]) -> int:
        """Merge the facts into `contracts` in the caller's transaction; returns the rows touched."""
        if not self.enabled:
            return 0
        merged = merge(facts)
        if not merged:
            return 0
        conn.execute(self.statement, (_json(merged).decode(),))
        return len(merged)
