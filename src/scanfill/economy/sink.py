"""Writing transfer facts: in the commit's transaction, keyed by event id, the newest copy winning.

Few rows per commit (one per transfer), so they go as one statement: each column one array
parameter, `unnest`ed into an `INSERT ... ON CONFLICT` (numerics travel as their exact text). A
page stored twice (a retry after an unknown commit outcome, a `--refetch`) leaves one row per
summary. One round trip and no temporary table: measured cheaper than COPY into a staging table,
whose create and drop cost more than these rows.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.economy.transfers import COLUMNS, TransferRow

_TYPES = {"migration_id": "bigint", "record_time": "timestamptz", "pos": "bigint", "round": "bigint",
          "traffic_bytes": "bigint", "readable": "boolean"}
_TEXT = {"event_id", "update_id", "choice", "package_id", "amulet_version", "party", "provider"}


class EconomySink:
    """The round-economics half of a commit; off with contract state (`enabled=False`)."""

    def __init__(self, db: Database, enabled: bool = True) -> None:
        self.enabled = enabled
        cols = ", ".join(COLUMNS)
        arrays = ", ".join(f"%s::{_TYPES.get(c, 'text' if c in _TEXT else 'numeric')}[]" for c in COLUMNS)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
        self.statement = sql.SQL(
            f"INSERT INTO {{t}} ({cols}) SELECT DISTINCT ON (event_id) * FROM unnest({arrays}) AS x({cols}) "
            f"ORDER BY event_id ON CONFLICT (event_id) DO UPDATE SET {sets}").format(t=db.t("amulet_transfers"))  # fmt: skip

    def write(self, conn: Conn, rows: Iterable[TransferRow]) -> int:
        if not self.enabled:
            return 0
        got = list(rows)
        if not got:
            return 0
        conn.execute(self.statement, [list(c) for c in zip(*got, strict=True)])
        return len(got)
