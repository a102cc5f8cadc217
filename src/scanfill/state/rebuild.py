"""Contract state derived from the stored ledger instead of from pages: for a copy loaded before
contract state existed (or with it off), and for the contracts a `--refetch` window touches.

It reads ledger_events (with each event's update kind), or the same rows from the lake a
`run --lake` sent the ledger to, and merges the same facts, with the same statement, that the
loaders merge page by page, so the result is the one a load would have kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from psycopg import sql

from scanfill.db import Conn, Database
from scanfill.state.facts import Fact, of_stored
from scanfill.state.sink import StateSink

if TYPE_CHECKING:
    from scanfill.lake.ledger import LakeLedger

CHUNK = 5_000


def _events(db: Database, only: bool) -> sql.Composed:
    return sql.SQL(
        "SELECT u.kind, e.update_id, e.migration_id, e.synchronizer_id, e.record_time, e.event_type, e.contract_id, "
        "e.template_id, e.package_name, e.created_at_ts, e.signatories, e.observers, e.choice, e.consuming, "
        "e.payload::text FROM {e} e JOIN {u} u ON u.update_id = e.update_id AND u.migration_id = e.migration_id "
        "WHERE e.contract_id IS NOT NULL AND u.kind IN ('transaction', 'assignment') "
        "AND (e.event_type = 'created_event' OR e.consuming)" + (" AND e.contract_id = ANY(%s)" if only else "")
    ).format(e=db.t("ledger_events"), u=db.t("ledger_updates"))


def stored_events(db: Database, conn: Conn, contract_ids: list[str] | None = None,
                  lakes: Sequence[LakeLedger] = ()) -> Iterator[Sequence[tuple[Any, ...]]]:  # fmt: skip
    """The stored ledger's contract events (`_events`' columns, the arguments of `of_stored`), in
    chunks: from the ledger tables, or from the lakes the ledger went to (`lake.ledger`: the same
    tuples; all contracts only). The merge is order-free, so neither gives them in any order."""
    if lakes:
        if contract_ids is not None:
            raise ValueError("a lake's ledger is read for all contracts")
        for lake in lakes:
            yield from lake.state_events()
        return
    with conn.cursor(name="scanfill_rebuild") as cur:
        cur.itersize = CHUNK
        cur.execute(_events(db, contract_ids is not None), (contract_ids,) if contract_ids is not None else None)
        while rows := cur.fetchmany(CHUNK):
            yield rows


def rebuild(db: Database, conn: Conn, contract_ids: list[str] | None = None,
            progress: Callable[[int], None] | None = None, lakes: Sequence[LakeLedger] = ()) -> int:  # fmt: skip
    """Replace the rows of these contracts (all when None) by what the stored ledger says (the
    ledger tables, or `lakes` when the ledger is there), in the caller's transaction; returns the
    ledger rows read."""
    sink = StateSink(db)
    if contract_ids is None:
        conn.execute(sql.SQL("TRUNCATE {}").format(db.t("contracts")))
    elif contract_ids:
        conn.execute(sql.SQL("DELETE FROM {} WHERE md5(contract_id)::uuid IN (SELECT md5(x)::uuid FROM unnest(%s::text[]) x)")
                     .format(db.t("contracts")), (contract_ids,))  # fmt: skip
    else:
        return 0
    read = 0
    for rows in stored_events(db, conn, contract_ids, lakes):
        facts: list[Fact] = [f for r in rows if (f := of_stored(*r)) is not None]
        sink.write(conn, facts)
        read += len(rows)
        if progress:
            progress(read)
    return read


def touched(db: Database, conn: Conn, lo_pos: int, hi_pos: int, sync: str | None = None) -> list[str]:
    """Contracts with a create, an end or a move stored in positions [lo, hi) (of one synchronizer,
    or of all): what removing those ledger rows changes."""
    rows = conn.execute(sql.SQL(
        "SELECT contract_id FROM {c} WHERE (created_pos >= %(lo)s AND created_pos < %(hi)s "
        "AND (%(s)s::text IS NULL OR created_synchronizer_id = %(s)s)) "
        "OR (archived_pos >= %(lo)s AND archived_pos < %(hi)s AND (%(s)s::text IS NULL OR archived_synchronizer_id = %(s)s)) "
        "OR (synchronizer_pos >= %(lo)s AND synchronizer_pos < %(hi)s AND (%(s)s::text IS NULL OR synchronizer_id = %(s)s))"
    ).format(c=db.t("contracts")), {"s": sync, "lo": lo_pos, "hi": hi_pos}).fetchall()  # fmt: skip
    return [r[0] for r in rows]


@contextmanager
def rederived(db: Database, conn: Conn, lo_pos: int, hi_pos: int, sync: str | None = None) -> Iterator[None]:
    """Around removing the ledger rows at positions [lo, hi) (of one synchronizer, or of all), in the
    caller's transaction: the contracts they touched are derived again from what remains."""
    hit = touched(db, conn, lo_pos, hi_pos, sync)
    yield
    rebuild(db, conn, hit)
