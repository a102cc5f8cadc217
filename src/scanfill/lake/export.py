"""`scanfill export --to DIR_OR_URL`: the copy in PostgreSQL as a Delta Lake, incrementally.

The unit is a (migration, UTC day) partition of both tables. A partition is exported when its rows
changed since it was last exported to that target (the completeness ledger's counts and last
change per day; import updates by count), by one Delta commit per table that replaces the
partition whole (`predicate` overwrite), events first: a reader following Delta's log sees each
table's old partition or its new one, never a mix, and never an update without its events, even
when the export dies between the two commits. A partition written twice (a crash between the
Delta commit and the database's record of it) is simply the same partition again. So an export can
be stopped at any moment and run again; a second export with nothing changed writes nothing.

What was recorded as exported is checked against the target's Delta log first: a partition the
log no longer holds as recorded (a wiped directory, a new bucket, a restored backup) is written
again. And a lake whose partitions hold rows is never overwritten from empty ledger tables (a
database loaded with `run --lake`): the export refuses instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import pq, sql

from scanfill.coord.records import ExportPartition
from scanfill.coord.store import Store
from scanfill.db import Conn, Database
from scanfill.errors import ConfigError, DatabaseUnavailable
from scanfill.lake.errors import LakeUnwritable, writing
from scanfill.lake.layout import (
    PARTITIONS,
    TABLES,
    TARGET_FILE_BYTES,
    Lake,
    columns,
    contracts_schema,
    require_libraries,
    schema,
    transfers_schema,
)
from scanfill.lake.names import adopt
from scanfill.lake.read import add_actions, ensure_tables, exists, partition_predicate, partition_rows

log = logging.getLogger("scanfill.lake")
BATCH_ROWS = 20_000  # rows per Arrow batch read from PostgreSQL (memory stays flat for any day)


@dataclass
class ExportReport:
    partitions: int = 0
    removed: int = 0
    updates: int = 0
    events: int = 0
    files: int = 0
    bytes: int = 0
    written: list[str] = field(default_factory=list)  # "migration/day" of each partition written
    lost: int = 0  # partitions recorded as exported that the target's Delta log no longer held as recorded
    contracts: int | None = None  # contracts written (None: contract state unchanged since the last export)


def _stream(conn: Conn, name: str, query: sql.Composed, params: tuple[Any, ...], sch: Any,
            also: Callable[[list[tuple[Any, ...]]], list[Any]] | None = None) -> Iterator[Any]:
    """Rows of a query as Arrow record batches of `sch`, streamed from a server-side cursor (memory
    stays flat for any size); `also` returns further columns for each batch's rows."""
    import pyarrow as pa

    with conn.cursor(name=name) as cur:
        cur.itersize = BATCH_ROWS
        cur.execute(query, params)
        while rows := cur.fetchmany(BATCH_ROWS):
            data = list(zip(*rows, strict=True))
            arrays = [pa.array(col, type=sch.field(i).type) for i, col in enumerate(data)]
            yield pa.RecordBatch.from_arrays(arrays + (also(rows) if also else []), schema=sch)


def _select(cols: list[str], json_cols: tuple[str, ...], exact: dict[str, str] | None = None) -> sql.Composable:
    """The column list, JSON columns read as their text; `exact` names a column that holds a value
    exactly where the other cannot (contracts.payload_exact beside payload) and is read first."""
    def one(c: str) -> sql.Composable:
        if exact and c in exact:
            return sql.SQL("coalesce({}::text, {}::text) AS {}").format(sql.Identifier(exact[c]), sql.Identifier(c),
                                                                        sql.Identifier(c))  # fmt: skip
        return sql.SQL("{}::text").format(sql.Identifier(c)) if c in json_cols else sql.Identifier(c)

    return sql.SQL(", ").join(one(c) for c in cols)


def _batches(db: Database, conn: Conn, table: str, m: int, day: date, span: list[Any]) -> Iterator[Any]:
    """The partition's rows as Arrow record batches; `span` gets the exact first and last record
    time (file statistics keep milliseconds only)."""
    import pyarrow as pa

    cols = columns(table)
    q = sql.SQL("SELECT {} FROM {} WHERE migration_id = %s AND record_time >= %s AND record_time < %s").format(
        _select(cols, ("update_json", "payload", "exercise_result")), db.t(f"ledger_{table}"))
    lo = f"{day.isoformat()}T00:00:00Z"
    hi = f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z"
    t = cols.index("record_time")

    def record_date(rows: list[tuple[Any, ...]]) -> list[Any]:
        first, last = min(r[t] for r in rows), max(r[t] for r in rows)
        span[:] = [first, last] if not span else [min(span[0], first), max(span[1], last)]
        return [pa.array([day] * len(rows), type=pa.date32())]

    yield from _stream(conn, f"scanfill_export_{table}", q, (m, lo, hi), schema(table), record_date)


# The order a partition's tables are replaced in: events first, so an update a reader sees has its
# events visible already (the new events are a superset of what the old updates refer to), also when
# the export dies between the two commits. Removal goes the other way (`_remove_partition`).
WRITE_ORDER = ("events", "updates")
Committed = Callable[[str, int, date], None]  # (table, migration, day): called after each Delta commit


def _write_partition(db: Database, conn: Conn, lake: Lake, p: ExportPartition, report: ExportReport,
                     committed: Committed | None = None, still: Callable[[], None] = lambda: None,
                     ) -> tuple[int, ExportPartition]:  # fmt: skip
    """Replace one partition in both tables, events first; returns the updates table's Delta version
    and the partition with the rows its log now holds (what is recorded: the next export checks the
    log against it, and a source whose counts disagree with its tables is not rewritten forever)."""
    import pyarrow as pa
    from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake

    predicate = partition_predicate(p.migration_id, p.day)
    version = -1
    held = {}
    for table in WRITE_ORDER:
        uri = lake.uri(table)
        span: list[Any] = []
        reader = pa.RecordBatchReader.from_batches(schema(table),
                                                   _batches(db, conn, table, p.migration_id, p.day, span))
        meta = {"scanfill": json.dumps({"migration_id": p.migration_id, "record_date": p.day.isoformat(),
                                        "updates": p.updates, "events": p.events, "source_mark": p.mark})}  # fmt: skip
        still()
        write_deltalake(uri, reader, mode="overwrite", predicate=predicate, partition_by=PARTITIONS,
                        storage_options=lake.storage_options(), target_file_size=TARGET_FILE_BYTES,
                        writer_properties=WriterProperties(compression="ZSTD"),
                        commit_properties=CommitProperties(custom_metadata=meta))  # fmt: skip
        if committed is not None:
            committed(table, p.migration_id, p.day)
        dt = DeltaTable(uri, storage_options=lake.storage_options())
        files = write_manifest(lake, dt, table, p.migration_id, p.day, span)
        report.files += len(files)
        report.bytes += sum(f["bytes"] for f in files)
        held[table] = sum(f["rows"] for f in files)
        if table == "updates":
            version = dt.version()
    return version, p._replace(updates=held["updates"], events=held["events"])


def write_manifest(lake: Lake, dt: Any, table: str, m: int, day: date, span: list[Any]) -> list[dict[str, Any]]:
    """Write the partition's manifest: its files (path, bytes, rows, sha256), rows, first and last
    record time, the table version it describes. Checkable with nothing but sha256sum."""
    actions = add_actions(dt)
    files = []
    rows = 0
    for i, path in enumerate(actions["path"]):
        if actions["partition.migration_id"][i] != m or str(actions["partition.record_date"][i]) != day.isoformat():
            continue
        h = hashlib.sha256(lake.read(f"{table}/{path}"))
        n = int(actions["num_records"][i])
        rows += n
        files.append({"path": f"{table}/{path}", "bytes": int(actions["size_bytes"][i]), "rows": n,
                      "sha256": h.hexdigest()})  # fmt: skip
    doc = {"table": table, "migration_id": m, "record_date": day.isoformat(), "delta_version": dt.version(),
           "rows": rows, "first_record_time": span[0].isoformat() if span else None,
           "last_record_time": span[1].isoformat() if span else None, "files": files}  # fmt: skip
    lake.write(lake.manifest(table, m, day.isoformat()), json.dumps(doc, indent=2).encode())
    return files


def _remove_partition(lake: Lake, m: int, day: date, committed: Committed | None = None) -> None:
    """Remove a partition from both tables, updates first (never an update left without its events)."""
    from deltalake import DeltaTable

    for table in reversed(WRITE_ORDER):
        DeltaTable(lake.uri(table), storage_options=lake.storage_options()).delete(partition_predicate(m, day))
        if committed is not None:
            committed(table, m, day)


DERIVED = ("contracts", "amulet_transfers")  # whole tables derived from the ledger, rewritten when they change


def vacuum(db: Database, lake: Lake, retention_hours: int) -> int:
    """Delete files no table version younger than `retention_hours` references: files compaction
    replaced, and files of commits that rolled back (never referenced). Readers of a version older
    than that may then miss files; 168 h (Delta's default) keeps a week of versions readable.

    Never a file a commit of `run --lake` / `follow --lake` staged and the Delta log does not hold
    yet (the publisher would add a missing file: every reader fails). Under the lake's writer lock,
    so no publish or compaction changes the log meanwhile: delta-rs lists the candidates (dry run),
    every commit that was writing files then is waited out (committed, its files are in
    `lake_files`; rolled back, they are orphans), and the committed, unpublished ones are kept."""
    from deltalake import DeltaTable

    store = Store(db)
    candidates: dict[str, list[str]] = {}
    with store.lake_writer_lock(f"publish {lake.root}"):
        for table in (*TABLES, *DERIVED):
            uri = lake.uri(table)
            if DeltaTable.is_deltatable(uri, storage_options=lake.storage_options()):
                candidates[table] = DeltaTable(uri, storage_options=lake.storage_options()).vacuum(
                    retention_hours=retention_hours, dry_run=True, enforce_retention_duration=False, full=True)
        store.lake_staging_drain(lake.root)
        with db.connect(autocommit=True, application="scanfill vacuum") as conn:
            keep = store.lake_unpublished_paths(conn, lake.root)
        removed = 0
        for table, paths in candidates.items():
            for path in paths:
                if (table, path) not in keep:
                    lake.delete(f"{table}/{path}")
                    removed += 1
    return removed


def export(db: Database, target: str, echo: Callable[[str], None] = log.info,
           committed: Committed | None = None) -> ExportReport:  # fmt: skip
    """Export every partition that changed since the last export to `target`, or that its Delta log
    no longer holds as recorded; safe to stop and run again at any moment, and a no-op when nothing
    changed. `committed` is called after each Delta commit of the ledger tables (a reader's instant)."""
    require_libraries(target)
    lake = Lake(target)
    target = lake.root  # the canonical name: one record and one exporter lock per lake, whatever the spelling
    store = Store(db)
    report = ExportReport()
    with db.connect(autocommit=True, application="scanfill export") as conn, store.export_lock(target) as lock:
        if not lock.held:
            raise ConfigError(f"another `scanfill export` to {lake.shown} is running; wait for it to finish")
        still = _still_held(lock.lost, lake)
        adopt(store, conn, lake)
        with writing(lake, "creating its tables"):
            ensure_tables(lake)
        if store.lake_partitions(conn, target):
            # written by `run --lake` / `follow --lake`: its rows are not in the ledger tables (an
            # export of those would empty it); publish what a killed loader left, add contract state
            from scanfill.lake.sink import LakeWriter

            with writing(lake, "publishing what a stopped loader committed"):
                LakeWriter(db, target).publish()
            echo(f"{lake.shown} is loaded by `run --lake`: exporting contract state only")
            with db.connect(application="scanfill export (read)") as reader, _exporting(lake, reader):
                _export_contracts(db, conn, reader, store, lake, target, report)
            return report
        held = {t: partition_rows(lake, t) for t in TABLES}
        report.lost = _forget_lost(conn, store, lake, target, held, echo)
        gone = store.export_gone(conn, target)
        todo = store.export_partitions(conn, target)
        _refuse_emptying(conn, store, lake, held, [*gone, *((p.migration_id, p.day) for p in todo)])
        for m, day in gone:
            with writing(lake, "removing a partition no longer stored"):
                _remove_partition(lake, m, day, committed)
            store.export_forget(conn, target, m, day)
            report.removed += 1
        if todo:
            echo(f"exporting {len(todo)} partition(s) to {lake.shown}")
        with db.connect(application="scanfill export (read)") as reader, _exporting(lake, reader):
            for p in todo:  # a transaction per partition
                with reader.transaction():
                    version, written = _write_partition(db, reader, lake, p, report, committed, still)
                store.export_done(conn, target, written, version)
                report.partitions += 1
                report.updates += written.updates  # the rows written, not what the day ledger counts
                report.events += written.events
                report.written.append(f"{p.migration_id}/{p.day.isoformat()}")
            still()
            _export_contracts(db, conn, reader, store, lake, target, report)
    return report


def _still_held(lost: Any, lake: Lake) -> Callable[[], None]:
    """Called before each Delta commit: an export frozen past its lock's bound (SIGSTOP, a paused
    VM) has lost it, perhaps to another export, and must write nothing more."""
    def still() -> None:
        if lost.is_set():
            raise ConfigError(f"this export to {lake.shown} was stopped (frozen) for longer than its lock "
                              "lasts and lost it, perhaps to another export: it wrote nothing more; run "
                              "`scanfill export` again if another did not finish the work")  # fmt: skip

    return still


@contextmanager
def _exporting(lake: Lake, reader: Conn) -> Iterator[None]:
    """Writing what `reader` reads into `lake`, each failure as one line: the lake's own (full,
    read-only, unreachable), and the database's. delta-rs pulls the rows, so a database error while
    they are read (a restart, a terminated session) reaches us as its DeltaError around the text
    of ours; the reader's connection tells which side failed."""
    try:
        with writing(lake, "exporting"):
            yield
    except (LakeUnwritable, psycopg.OperationalError) as exc:
        if isinstance(exc, LakeUnwritable) and not (
                reader.broken or reader.info.transaction_status == pq.TransactionStatus.INERROR):  # fmt: skip
            raise
        raise DatabaseUnavailable(
            f"export to {lake.shown} stopped: the database failed "
            f"({_first_line(exc.__cause__ or exc)}); nothing of the partition in progress is visible in the "
            "lake. Run the same `scanfill export` again once the database is back: it writes what is still to do"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    if "Unknown error: " in text:  # delta-rs's wrapping of our own error: "... Unknown error: <ours>. Detail: ..."
        text = text.split("Unknown error: ", 1)[1].split(". Detail:", 1)[0]
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)


def _forget_lost(conn: Conn, store: Store, lake: Lake, target: str, held: dict[str, Any],
                 echo: Callable[[str], None]) -> int:  # fmt: skip
    """Forget the exports the target's Delta log no longer holds as recorded (a wiped directory, a
    new bucket, a restored backup: rows per partition from the log's file statistics), so this
    export writes them again; likewise contract state whose Delta tables are gone. Returns how many."""
    lost = [(e.migration_id, e.day) for e in store.export_state(conn, target)
            if (held["updates"].get((e.migration_id, e.day), 0), held["events"].get((e.migration_id, e.day), 0))
            != (e.updates, e.events)]  # fmt: skip
    for m, day in lost:
        store.export_forget(conn, target, m, day)
    if lost:
        echo(f"{len(lost)} partition(s) exported before are missing from {lake.shown} or differ from what was "
             "written (a new or restored lake): writing them again")  # fmt: skip
    if not all(exists(lake, t) for t in DERIVED):
        store.export_contracts_forget(conn, target)
    return len(lost)


def _refuse_emptying(conn: Conn, store: Store, lake: Lake, held: dict[str, Any], parts: list[tuple[int, date]]) -> None:
    """Never replace a lake's partitions with the nothing of empty ledger tables: a database loaded
    with `run --lake` keeps its rows in a lake, and this one may be it under another name (or a
    lake of another database). One line, and nothing written."""
    rows = sum(held["updates"].get(k, 0) + held["events"].get(k, 0) for k in set(parts))
    if rows and store.ledger_tables_empty(conn):
        raise ConfigError(f"refusing to export to {lake.shown}: its partitions hold {rows:,} rows and this "
                          "database's ledger tables are empty, so the export would replace them with nothing "
                          "(a lake loaded by `run --lake`, or another database's); nothing was written "
                          "(to empty the lake, delete it)")  # fmt: skip


def _export_contracts(db: Database, conn: Conn, reader: Conn, store: Store, lake: Lake, target: str,
                      report: ExportReport) -> None:  # fmt: skip
    """Contract state and the transfer facts, when they changed since the last export to `target`."""
    mark = store.contracts_changed(conn, target)
    if mark is not None:
        with reader.transaction():
            report.contracts = _write_contracts(db, reader, lake)
        store.export_contracts_done(conn, target, mark)


def _write_contracts(db: Database, conn: Conn, lake: Lake) -> int:
    """Contract state (`contracts`) and what each transfer minted and burnt (`amulet_transfers`),
    each one Delta table replaced whole in one commit: lifespans end anywhere in the history, so
    there is no partition that only grows. Returns the contracts written."""
    contracts = _write_whole(db, conn, lake, "contracts", contracts_schema())
    _write_whole(db, conn, lake, "amulet_transfers", transfers_schema())
    return contracts


# Where a whole table keeps a value jsonb cannot hold (NUL, a lone surrogate): the lake gets it exactly.
EXACT = {"contracts": {"payload": "payload_exact"}}


def _write_whole(db: Database, conn: Conn, lake: Lake, table: str, sch: Any) -> int:
    import pyarrow as pa
    from deltalake import WriterProperties, write_deltalake

    n = [0]

    def counted(rows: list[tuple[Any, ...]]) -> list[Any]:
        n[0] += len(rows)
        return []

    q = sql.SQL("SELECT {} FROM {}").format(_select([f.name for f in sch], ("payload",), EXACT.get(table)),
                                             db.t(table))
    batches = _stream(conn, f"scanfill_export_{table}", q, (), sch, counted)
    write_deltalake(lake.uri(table), pa.RecordBatchReader.from_batches(sch, batches), mode="overwrite",
                    schema_mode="overwrite", storage_options=lake.storage_options(),
                    target_file_size=TARGET_FILE_BYTES, writer_properties=WriterProperties(compression="ZSTD"))  # fmt: skip
    return n[0]
