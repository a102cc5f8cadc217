"""The transfer facts derived from the stored ledger instead of from pages: for a copy loaded
before round economics existed (schema v11) or with contract state off. The same rules
(`transfers.of_update`) read the stored events, so the rows are those a load would have written."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.economy.sink import EconomySink
from scanfill.economy.transfers import CHOICES, TransferRow, _load, of_update
from scanfill.timeutil import dt_to_us

CHUNK = 5_000


def _preorder(event_id: str) -> int:
    try:
        return int(event_id[event_id.rindex(":") + 1 :])
    except ValueError:
        return 1 << 30


def rebuild(db: Database, conn: Conn, progress: Callable[[int], None] | None = None) -> int:
    """Replace every `amulet_transfers` row by what the stored ledger says, in the caller's
    transaction; returns the rows written. Reads the exercised events of the updates holding a
    summary-bearing choice (their nesting decides which summary counts)."""
    sink = EconomySink(db)
    conn.execute(sql.SQL("TRUNCATE {}").format(db.t("amulet_transfers")))
    query = sql.SQL(
        "SELECT e.update_id, e.migration_id, e.synchronizer_id, e.record_time, e.event_id, e.template_id, e.choice, e.child_event_ids, "
        "e.acting_parties, e.payload::text, e.exercise_result::text FROM {e} e "
        "WHERE e.event_type = 'exercised_event' AND (e.update_id, e.migration_id) IN ("
        "  SELECT x.update_id, x.migration_id FROM {e} x JOIN {u} u ON u.update_id = x.update_id "
        "  AND u.migration_id = x.migration_id AND u.kind = 'transaction' "
        "  WHERE x.event_type = 'exercised_event' AND x.choice = ANY(%s)) "
        "ORDER BY e.migration_id, e.update_id"
    ).format(e=db.t("ledger_events"), u=db.t("ledger_updates"))
    written = 0
    pending: list[TransferRow] = []
    group: list[Any] = []

    def flush_group() -> None:
        if not group:
            return
        g = group[0]
        evs = sorted(group, key=lambda e: _preorder(e.event_id))
        pending.extend(of_update(g.update_id, g.migration_id, g.synchronizer_id, g.record_time, dt_to_us(g.record_time),
                                 evs, arg=lambda e: _load(e.arg), result=lambda e: _load(e.res)))  # fmt: skip
        group.clear()

    with conn.cursor(name="scanfill_rebuild_economy") as cur:
        cur.itersize = CHUNK
        cur.execute(query, (sorted(CHOICES),))
        for r in cur:
            ev = SimpleNamespace(update_id=r[0], migration_id=r[1], synchronizer_id=r[2], record_time=r[3],
                                 event_id=r[4], template_id=r[5], choice=r[6], child_event_ids=r[7],
                                 acting_parties=r[8], arg=r[9], res=r[10], event_type="exercised_event")  # fmt: skip
            if group and (group[0].update_id, group[0].migration_id) != (ev.update_id, ev.migration_id):
                flush_group()
            group.append(ev)
            if len(pending) >= CHUNK:
                written += sink.write(conn, pending)
                pending.clear()
                if progress:
                    progress(written)
        flush_group()
    written += sink.write(conn, pending)
    return written
