"""Writing transfer facts: in the commit's transaction, keyed by event id, the newest copy winning.

Few rows per page (one per transfer), so they go by text COPY (psycopg adapts each value, numerics
as their exact text) into a temporary table, then one `INSERT ... ON CONFLICT`: a page stored twice
(a retry after an unknown commit outcome, a `--refetch`) leaves one row per summary.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.economy.transfers import COLUMNS, TransferRow

STAGE = "scanfill_transfers"


class EconomySink:
    """The round-economics half of a commit; off with contract state (`enabled=False`)."""

    def __init__(self, db: Database, enabled: bool = True) -> None:
        self.enabled = enabled
        cols = ", ".join(COLUMNS)
        self.stage = sql.SQL(f"CREATE TEMPORARY TABLE {STAGE} (LIKE {{t}}) ON COMMIT DROP").format(
            t=db.t("amulet_transfers")
        )
        self.copy = sql.SQL(f"COPY pg_temp.{STAGE} ({cols}) FROM STDIN")
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
        self.statement = sql.SQL(f"INSERT INTO {{t}} ({cols}) SELECT DISTINCT ON (event_id) {cols} FROM pg_temp.{STAGE} "
                                 f"ORDER BY event_id ON CONFLICT (event_id) DO UPDATE SET {sets}").format(t=db.t("amulet_transfers"))  # fmt: skip
        self.unstage = sql.SQL(f"DROP TABLE pg_temp.{STAGE}")

    def write(self, conn: Conn, rows: Iterable[TransferRow]) -> int:
        if not self.enabled:
            return 0
        got = list(rows)
        if not got:
            return 0
        conn.execute(self.stage)
        with conn.cursor().copy(self.copy) as cp:
            for r in got:
                cp.write_row(r)
        conn.execute(self.statement)
        conn.execute(self.unstage)
        return len(got)
