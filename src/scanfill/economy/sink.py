"""Writing transfer facts: in the commit's transaction, keyed by event id.

The commit protocol stores each update once (and the repairs that remove rows, `--refetch` and
`follow --rewind`, forget their facts with them), so the rows go by COPY straight into the table,
inside a savepoint. Should a row be there already (anything the protocol did not foresee), the
unique key (a digest of the event id) refuses the COPY and the batch is written again as one
`INSERT ... ON CONFLICT`, the stored copy replaced: never twice, never a stuck commit. Measured on 719 summaries: COPY 6.5 ms,
the upsert (each column an array, `unnest`ed) 27 ms.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.economy.transfers import COLUMNS, TYPES, TransferRow


class EconomySink:
    """The round-economics half of a commit; off with contract state (`enabled=False`)."""

    def __init__(self, db: Database, enabled: bool = True) -> None:
        self.enabled = enabled
        cols = ", ".join(COLUMNS)
        arrays = ", ".join(f"%s::{TYPES[c]}[]" for c in COLUMNS)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
        self.copy = sql.SQL(f"COPY {{t}} ({cols}) FROM STDIN").format(t=db.t("amulet_transfers"))
        self.statement = sql.SQL(
            f"INSERT INTO {{t}} ({cols}) SELECT DISTINCT ON (event_id) * FROM unnest({arrays}) AS x({cols}) "
            f"ORDER BY event_id ON CONFLICT ((md5(event_id)::uuid)) DO UPDATE SET {sets}").format(t=db.t("amulet_transfers"))  # fmt: skip

    def write(self, conn: Conn, rows: Iterable[TransferRow]) -> int:
        if not self.enabled:
            return 0
        got = list(rows)
        if not got:
            return 0
        try:
            with conn.transaction(), conn.cursor().copy(self.copy) as cp:  # a savepoint
                for r in got:
                    cp.write_row(r)
        except psycopg.errors.UniqueViolation:
            conn.execute(self.statement, [list(c) for c in zip(*got, strict=True)])
        return len(got)
