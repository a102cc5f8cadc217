"""The ledger read back from the lake a database's `run --lake` / `follow --lake` sent it to, for
`rebuild-state`: the same rows, in the same tuples, as its queries of the ledger tables
(`state.rebuild`, `economy.rebuild`), so contract state and transfer facts are derived by one
code path whatever holds the ledger.

Each lake is read at one version of its two Delta tables (`open_lakes`, under rebuild-state's
lock), after checking that this version holds every row the database committed there: a lake
missing some (files committed but not yet published, a wiped or restored lake) would derive less
than the load kept, so it is refused, nothing done. Rows are read partition by partition
(migration, UTC day) by DuckDB over the tables' Arrow datasets (its filter on the partition
columns opens only that partition's files) and handed over in Arrow batches of `CHUNK` rows: an
update and its events share a partition (same migration, same record time), so the join with
each event's update kind never crosses one, and no more than a partition is held at once.

Order: contract facts merge order-free (the earliest create and consuming exercise, the newest
move win, as the loaders' merge), so the state's rows come in no particular order, as the tables'
query gives them. Transfer facts need each transaction's exercised events together, in tree
pre-order (which summary is outermost): here, as in the tables' query, ordered by update id and
the event's number; updates come partition by partition instead of by update id over a whole
migration, which changes only the order rows are written in, not which rows."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from scanfill.coord.store import Store
from scanfill.db import Conn
from scanfill.errors import Refused, ScanfillError
from scanfill.lake.errors import is_lake_failure, reason
from scanfill.lake.known import LedgerLake
from scanfill.lake.layout import Lake

CHUNK = 5_000
PUBLISH_WAIT_S = 15.0  # a commit just before rebuild-state's lock is published by its loader within seconds


class LakeUnreadable(ScanfillError):
    """The lake could not be read (a file missing or undecodable, a store refusing access): one
    line naming the lake and why; what was being derived from it is rolled back."""


def _read_failure(exc: BaseException) -> bool:
    """Storage, delta-rs, an Arrow decode error, or one of these as DuckDB rethrows it from its scan
    of an Arrow dataset (`InvalidInputException: reading the stream ... failed: IOError: ...`)."""
    if is_lake_failure(exc):
        return True
    import duckdb
    import pyarrow as pa

    return isinstance(exc, pa.ArrowException | duckdb.IOException | duckdb.InvalidInputException)


@contextmanager
def reading(lake: Lake, doing: str) -> Iterator[None]:
    """Read `lake`; a storage failure becomes one `LakeUnreadable` line."""
    try:
        yield
    except LakeUnreadable:
        raise
    except BaseException as exc:
        if not _read_failure(exc):
            raise
        why = re.sub(r"^.*? failed: ", "", reason(exc).split(": ", 1)[-1]) if "failed: " in str(exc) else reason(exc)
        raise LakeUnreadable(f"the lake at {lake.shown} cannot be read ({why}) while {doing}; nothing was changed. "
                             f"`scanfill verify --lake {lake.shown}` checks it") from None  # fmt: skip


def _rows(dt: Any) -> int:
    from scanfill.lake.read import add_actions

    return sum(int(n) for n in add_actions(dt)["num_records"])


def _partitions(dt: Any) -> list[tuple[int, date]]:
    from scanfill.lake.read import add_actions

    actions = add_actions(dt)
    return sorted({(int(m), d if isinstance(d, date) else date.fromisoformat(str(d)))
                   for m, d in zip(actions["partition.migration_id"], actions["partition.record_date"],
                                   strict=True)})  # fmt: skip


@dataclass
class LakeLedger:
    """One lake's `updates` and `events` at one version, each row the database committed there in it."""

    lake: Lake
    updates: Any  # DeltaTable
    events: Any

    def _connect(self) -> Any:
        import duckdb

        con = duckdb.connect()
        con.register("u", self.updates.to_pyarrow_dataset())
        con.register("e", self.events.to_pyarrow_dataset())
        return con

    def _stream(self, query: Callable[[int, date], str], doing: str) -> Iterator[list[tuple[Any, ...]]]:
        """The query's rows, partition by partition, in lists of at most CHUNK tuples."""
        with reading(self.lake, doing):
            con = self._connect()
            try:
                for m, day in _partitions(self.events):
                    rel = con.sql(query(m, day))
                    # DuckDB 2 streams with to_arrow_reader, 1.x with fetch_arrow_reader
                    batches = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
                    for batch in batches(CHUNK):
                        if batch.num_rows:
                            yield list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
            finally:
                con.close()

    def state_events(self) -> Iterator[list[tuple[Any, ...]]]:
        """`state.rebuild._events`' rows: each contract event with its update's kind."""
        return self._stream(_state, "reading its ledger for contract state")

    def transfer_events(self) -> Iterator[list[tuple[Any, ...]]]:
        """`economy.rebuild._EVENTS`' rows: the exercised events of every transaction holding a
        summary-bearing choice, per transaction in tree pre-order."""
        return self._stream(_transfers, "reading its ledger for transfer facts")


def _part(alias: str, m: int, day: date) -> str:
    return f"{alias}.migration_id = {int(m)} AND {alias}.record_date = DATE '{day.isoformat()}'"


def _state(m: int, day: date) -> str:
    """`state.rebuild._events` (all contracts), in one partition."""
    return (
        "SELECT u.kind, e.update_id, e.migration_id, e.synchronizer_id, e.record_time, e.event_type, e.contract_id, "
        "e.template_id, e.package_name, e.created_at_ts, e.signatories, e.observers, e.choice, e.consuming, e.payload "
        "FROM e JOIN u ON u.update_id = e.update_id AND u.migration_id = e.migration_id "
        f"WHERE {_part('e', m, day)} AND {_part('u', m, day)} AND e.contract_id IS NOT NULL "
        "AND u.kind IN ('transaction', 'assignment') AND (e.event_type = 'created_event' OR e.consuming)"
    )


def _transfers(m: int, day: date) -> str:
    """`economy.rebuild._EVENTS`, in one partition (the event's number: the digits after its last ':')."""
    from scanfill.economy.transfers import CHOICES

    choices = ", ".join("'" + c.replace("'", "''") + "'" for c in sorted(CHOICES))
    return (
        "SELECT e.update_id, e.migration_id, e.synchronizer_id, e.record_time, e.event_id, e.template_id, e.choice, "
        "e.child_event_ids, e.acting_parties, e.payload, e.exercise_result FROM e "
        f"WHERE {_part('e', m, day)} AND e.event_type = 'exercised_event' AND e.update_id IN ("
        "  SELECT x.update_id FROM e x JOIN u ON u.update_id = x.update_id AND u.migration_id = x.migration_id "
        f"  AND u.kind = 'transaction' WHERE {_part('x', m, day)} AND {_part('u', m, day)} "
        f"  AND x.event_type = 'exercised_event' AND x.choice IN ({choices})) "
        "ORDER BY e.update_id, TRY_CAST(regexp_extract(e.event_id, ':([0-9]+)$', 1) AS INTEGER) NULLS LAST"
    )


def open_lakes(conn: Conn, store: Store, lakes: list[LedgerLake]) -> list[LakeLedger]:
    """Each lake at its current version, once that version holds every row the database committed
    there (counted in the caller's transaction, after its lock): files committed moments ago are
    awaited while their loader publishes them (PUBLISH_WAIT_S), anything else missing is refused."""
    from scanfill.lake.layout import require_libraries
    from scanfill.lake.read import exists, table

    out = []
    for known in lakes:
        require_libraries(known.root)
        lake = Lake(known.root)
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while True:
            committed = {t: (u, e) for t, u, e in store.lake_ledger(conn)}.get(lake.root, (0, 0))
            pending = sum(store.lake_partitions(conn, lake.root).values())
            with reading(lake, "opening its Delta tables"):
                if not (exists(lake, "updates") and exists(lake, "events")):
                    raise LakeUnreadable(f"the lake at {lake.shown} has no Delta tables `updates` and `events` (removed, "
                                         f"or the lake is not reachable from here), yet this database committed "
                                         f"{committed[0]:,} updates there; nothing was changed. `scanfill verify "
                                         f"--lake {lake.shown}` checks it")  # fmt: skip
                got = LakeLedger(lake, table(lake, "updates"), table(lake, "events"))
                held = (_rows(got.updates), _rows(got.events))
            if held == committed:
                out.append(got)
                break
            if pending and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if pending:
                raise Refused(f"the lake {lake.shown} does not hold all of this database's ledger yet: {pending:,} "
                              f"file(s) committed there are not in its Delta log (a load stopped before publishing "
                              f"them), so contract state derived from it would miss their rows; nothing done. The "
                              f"next `scanfill run --lake {lake.shown}` publishes them")  # fmt: skip
            raise Refused(f"the lake {lake.shown} holds {held[0]:,} updates and {held[1]:,} events, this database "
                          f"committed {committed[0]:,} and {committed[1]:,} there (a wiped, replaced or restored "
                          "lake): contract state derived from it would not be the load's; nothing done. `scanfill "
                          f"verify --lake {lake.shown}` names the partitions that differ")  # fmt: skip
    return out
