"""The transfer facts derived from the stored ledger instead of from pages: for a copy loaded
before round economics existed (schema v11) or with contract state off, from the ledger tables or
the lake a `run --lake` sent the ledger to. The same rules (`transfers.of_update`) read the stored
events, so the rows are those a load would have written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.economy.sink import EconomySink
from scanfill.economy.transfers import CHOICES, TransferRow, of_update
from scanfill.timeutil import dt_to_us

if TYPE_CHECKING:
    from scanfill.lake.ledger import LakeLedger

CHUNK = 5_000
# the exercised events of every transaction holding a summary-bearing choice, in tree pre-order
# (event ids are `<update>:<n>`, numbered in pre-order): their nesting decides which summary counts
_EVENTS = (
    "SELECT e.update_id, e.migration_id, e.synchronizer_id, e.record_time, e.event_id, e.template_id, e.choice, "
    "e.child_event_ids, e.acting_parties, e.payload::text, e.exercise_result::text FROM {e} e "
    "WHERE e.event_type = 'exercised_event' AND (e.update_id, e.migration_id) IN ("
    "  SELECT x.update_id, x.migration_id FROM {e} x JOIN {u} u ON u.update_id = x.update_id "
    "  AND u.migration_id = x.migration_id AND u.kind = 'transaction' "
    "  WHERE x.event_type = 'exercised_event' AND x.choice = ANY(%s)) "
    "ORDER BY e.migration_id, e.update_id, (substring(e.event_id FROM ':([0-9]+)$'))::int NULLS LAST"
)
_FIELDS = ("update_id", "migration_id", "synchronizer_id", "record_time", "event_id", "template_id", "choice",
           "child_event_ids", "acting_parties", "choice_argument", "exercise_result")  # fmt: skip


def stored_events(db: Database, conn: Conn, lakes: Sequence[LakeLedger] = ()) -> Iterator[tuple[Any, ...]]:
    """`_EVENTS`' rows (`_FIELDS`): from the ledger tables, or the same tuples from the lakes the
    ledger went to (`lake.ledger`), each transaction's events together and in tree pre-order (what
    `of_update` needs; the order of transactions does not change the rows)."""
    if lakes:
        for lake in lakes:
            for rows in lake.transfer_events():
                yield from rows
        return
    with conn.cursor(name="scanfill_rebuild_economy") as cur:
        cur.itersize = CHUNK
        cur.execute(sql.SQL(_EVENTS).format(e=db.t("ledger_events"), u=db.t("ledger_updates")), (sorted(CHOICES),))
        yield from cur


def rebuild(db: Database, conn: Conn, lakes: Sequence[LakeLedger] = ()) -> int:
    """Replace every `amulet_transfers` row by what the stored ledger says (the ledger tables, or
    `lakes` when the ledger is there), in the caller's transaction; returns the rows written."""
    sink = EconomySink(db)
    conn.execute(sql.SQL("TRUNCATE {}").format(db.t("amulet_transfers")))
    written = 0
    pending: list[TransferRow] = []
    events = (SimpleNamespace(event_type="exercised_event", **dict(zip(_FIELDS, r, strict=True)))
              for r in stored_events(db, conn, lakes))  # fmt: skip
    for (uid, m), group in groupby(events, key=lambda e: (e.update_id, e.migration_id)):
        evs = list(group)
        t = evs[0].record_time
        pending.extend(of_update(uid, m, evs[0].synchronizer_id, t, dt_to_us(t), evs))
        if len(pending) >= CHUNK:
            written += sink.write(conn, pending)
            pending.clear()
    return written + sink.write(conn, pending)
