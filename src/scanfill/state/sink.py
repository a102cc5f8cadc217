"""Writing contract facts: one merge per committed batch, inside the batch's transaction.

The merge is order-free and idempotent (the earliest create and consuming exercise win, the newest
move wins), so pages may arrive newest first, in parallel slices, twice, or after a crash, and the
row a contract ends up with is the same. It relies on `contracts_key` (a unique index on a digest of
the contract id), which `prepare` keeps.

The facts go in by binary COPY into a temporary table dropped at commit, then one `INSERT ...
SELECT ... ON CONFLICT`: measured 1.6-1.8x cheaper for the server than sending them as JSON
(`json_to_recordset`), whose parsing cost more than the upsert itself. A temporary table that lives
only inside its transaction is safe behind a transaction-mode pooler.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from scanfill import framing
from scanfill.db import Conn, Database
from scanfill.state.facts import COLUMNS, Fact, frame, merge

STAGE = "scanfill_facts"  # the temporary table of one transaction
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
    """INSERT ... ON CONFLICT from the staged facts."""
    cols = ", ".join(COLUMNS)
    sets = ", ".join(f"{c} = {_rule(c)}" for c in COLUMNS[1:])
    # no ORDER BY: the facts were copied in contract id order (`merge` sorts them) into a fresh
    # temporary table, whose scan returns them in that order, so rows are still locked in that order
    text = (f"INSERT INTO {{t}} AS c ({cols}) SELECT {cols} FROM pg_temp.{STAGE} "
            f"ON CONFLICT ((md5(contract_id)::uuid)) DO UPDATE SET {sets}")  # fmt: skip
    return sql.SQL(text).format(t=db.t("contracts"))


class StateSink:
    """The contract-state half of a commit; `enabled=False` leaves `contracts` alone (measuring)."""

    def __init__(self, db: Database, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stage = sql.SQL(f"CREATE TEMPORARY TABLE {STAGE} (LIKE {{t}}) ON COMMIT DROP").format(t=db.t("contracts"))
        self.copy = sql.SQL(f"COPY pg_temp.{STAGE} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)")
        self.statement = merge_statement(db)
        self.unstage = sql.SQL(f"DROP TABLE pg_temp.{STAGE}")

    def write(self, conn: Conn, facts: Iterable[Fact]) -> int:
        """Merge the facts into `contracts` in the caller's transaction; returns the contracts touched."""
        if not self.enabled:
            return 0
        merged = merge(facts)
        if not merged:
            return 0
        conn.execute(self.stage)
        with conn.cursor().copy(self.copy) as cp:
            cp.write(framing.frame([frame(f) for f in merged]))
        conn.execute(self.statement)
        conn.execute(self.unstage)  # a transaction may merge again (rebuild does, chunk by chunk)
        return len(merged)
