"""`run --lake` / `follow --lake`: a commit's rows as Parquet files in the lake instead of rows in
the PostgreSQL ledger tables; coordination (slices, leases, cursors, the completeness ledger,
contract state) stays in PostgreSQL, which decides what is committed.

Exactly once, in three steps:

1. Inside the commit's transaction, each (table, migration, UTC day) of the batch is written as one
   zstd Parquet file in its Hive partition directory, and recorded in `lake_files`. Files are
   invisible to readers: only the Delta log makes a file part of the table. If the transaction
   rolls back (a fenced worker, a crash), its files stay unreferenced forever (`vacuum` removes
   them), and its rows are fetched again by whoever resumes the slice.
2. After the commit, a publisher (one per lake at a time, by a database lock) numbers every
   committed, unpublished file with a publish id, then adds them to the Delta log in one commit
   whose app transaction (`scanfill`) carries that id as its version.
3. It marks them published. A crash between 2 and 3 is recognised by the next publisher: the log's
   app-transaction version says which publishes landed, so none is added twice and none is lost.

A reader following Delta's protocol sees a page's rows all at once, with its cursor's move
already committed; `finish` compacts the small files of the partitions a run touched (one Delta
commit each, readers unaffected) and writes their manifests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, RemoveAction, Transaction

from scanfill import framing
from scanfill.coord.store import Store
from scanfill.db import Conn, Database
from scanfill.lake.errors import writing
from scanfill.lake.layout import PARTITIONS, TABLES, TARGET_FILE_BYTES, Lake, schema
from scanfill.lake.names import adopt
from scanfill.lake.read import ensure_tables
from scanfill.lake.read import table as lake_table
from scanfill.rows import COPY_TYPES, EventRow, UpdateRow
from scanfill.timeutil import utc_day

log = logging.getLogger("scanfill.lake")
APP_ID = "scanfill"
PUBLISH_TRIES = 3  # a publish refused by the Delta log (a concurrent publisher's commit landed) is tried again
UPDATE_TYPES, EVENT_TYPES = COPY_TYPES[UpdateRow], COPY_TYPES[EventRow]
_JSON_COLS = {"updates": {10}, "events": {11, 12}}  # framed as raw JSON bytes: stored as text
_FILE_SCHEMAS = {t: schema(t).remove(schema(t).get_field_index("record_date")) for t in TABLES}  # partition: path


class LakeWriter:
    """The lake half of a commit, and the publisher. One per process; its methods are called from
    the worker threads (stage: inside a commit's transaction; publish: after it)."""

    def __init__(self, db: Database, target: str) -> None:
        self.db = db
        self.lake = Lake(target)
        self.target = self.lake.root  # the canonical name: one key (and one publisher lock) per lake
        self.store = Store(db)
        self._ready = False
        self._lock = threading.Lock()  # the worker threads' first commits race to create the tables

    def ensure(self) -> None:
        """Create the Delta tables if they do not exist (idempotent; before the first commit)."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            with self.db.connect(autocommit=True, application="scanfill lake publish") as conn:
                adopt(self.store, conn, self.lake)  # an older release's spelling: still this lake's files
            with writing(self.lake, "creating its tables"):
                ensure_tables(self.lake)
            self._ready = True

    # ----- 1. inside the commit ---------------------------------------------------------------------

    def stage(self, conn: Conn, batch: Any) -> None:
        """Write the batch's rows as one Parquet file per (table, migration, day) and record them."""
        self.ensure()
        self.store.lake_staging(conn, self.target)  # a vacuum deletes none of them while this commit runs
        groups: dict[tuple[str, int, date], list[tuple[Any, ...]]] = defaultdict(list)
        for u in batch.updates:
            key = (u.migration_id, utc_day(u.t_us))
            groups[("updates", *key)].extend(framing.parse(u.row, UPDATE_TYPES))
            if u.event_count:
                groups[("events", *key)].extend(framing.parse(u.event_rows, EVENT_TYPES))
        files = []
        for (table, m, day), rows in sorted(groups.items()):
            sch = _FILE_SCHEMAS[table]
            cols = list(zip(*rows, strict=True))
            # JSON columns arrive as the served bytes: cast to text in Arrow (no Python loop)
            arrays = [pa.array(col, type=pa.binary()).cast(pa.string()) if i in _JSON_COLS[table]
                      else pa.array(col, type=sch.field(i).type) for i, col in enumerate(cols)]  # fmt: skip
            buf = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_arrays(arrays, schema=sch), buf, compression="zstd")
            body = buf.getvalue().to_pybytes()
            rel = f"migration_id={m}/record_date={day.isoformat()}/part-{uuid.uuid4().hex}.zstd.parquet"
            with writing(self.lake, "writing a commit's files"):  # the commit rolls back
                self.lake.write(f"{table}/{rel}", body)  # one PUT on object stores
            times = cols[4] if table == "events" else cols[3]
            files.append((table, rel, m, day, len(rows), len(body), min(times), max(times)))
        self.store.lake_files_add(conn, self.target, files)

    # ----- 2 and 3. after it --------------------------------------------------------------------------

    def publish(self, conn: Conn | None = None) -> int:
        """Add every committed, unpublished file to the Delta log; returns the files added (0 when a
        publisher it waited for took them). `conn`: an autocommit connection to use (a worker's,
        after its commit), else one of its own."""
        if conn is None:
            with self.db.connect(autocommit=True, application="scanfill lake publish") as own:
                return self.publish(own)
        self.ensure()
        for attempt in range(1, PUBLISH_TRIES + 1):
            # waited for: this commit's files are published when it returns
            with self.store.lake_writer_lock(f"publish {self.target}"):
                pid = self.store.lake_publish_next(conn, self.target)  # every committed file, both tables at once
                try:
                    # events first: an update a reader sees has all its events visible already
                    return sum(self._publish_table(conn, table, pid) for table in ("events", "updates"))
                except CommitFailedError as exc:
                    # another publisher's commit landed after this one read the log (this process was
                    # frozen past the lock's guard): Delta refused the second; read the log again
                    if attempt == PUBLISH_TRIES or "oncurrent" not in str(exc):
                        raise
                    log.warning("lake publish: another publisher wrote the log meanwhile (%s); publishing again", exc)
        return 0

    def _publish_table(self, conn: Conn, table: str, pid: int | None) -> int:
        dt = lake_table(self.lake, table)
        landed = dt.transaction_version(APP_ID) or 0
        self.store.lake_published_upto(conn, self.target, table, landed)  # a crash between steps 2 and 3
        files = self.store.lake_unpublished(conn, self.target, table)
        if not files:
            return 0
        version = max(pid or 0, *(f[5] for f in files))
        now_ms = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            AddAction(path, size, {"migration_id": str(m), "record_date": day.isoformat()}, now_ms, True,
                      json.dumps({"numRecords": rows}))
            for path, m, day, rows, size, _ in files]  # fmt: skip
        props = CommitProperties(app_transactions=[Transaction(APP_ID, version)],
                                 custom_metadata={"scanfill": json.dumps({"publish": version})})
        dt.create_write_transaction(actions, mode="append", schema=schema(table), partition_by=PARTITIONS,
                                    commit_properties=props)
        self.store.lake_published_upto(conn, self.target, table, version)
        return len(files)

    def finish(self) -> None:
        """Publish what is left, compact the partitions with files not yet described into files of
        about 128 MB (one Delta commit each: readers see the same rows), and write their manifests.

        Under the publisher lock, from a table read after taking it: delta-rs (1.6) lets two OPTIMIZE
        commits from one table version both land (each removes the same files and adds its own
        compacted copy: every row twice), so two processes stopping together compact one after the
        other, and the second finds the partitions already described."""
        from scanfill.lake.export import write_manifest

        with writing(self.lake, "publishing"):
            self.publish()
        with (self.db.connect(autocommit=True, application="scanfill lake publish") as conn,
              self.store.lake_writer_lock(f"publish {self.target}")):  # one writer of a table version
            for table in TABLES:
                with writing(self.lake, f"compacting its {table} table"):
                    self._compact_table(conn, table, write_manifest)

    def _compact_table(self, conn: Conn, table: str, write_manifest: Any) -> None:
        touched = self.store.lake_partitions_touched(conn, self.target, table)
        if not touched:
            return
        dt = lake_table(self.lake, table)  # read under the lock: the version this compaction replaces
        for m, day in touched:
            dt.optimize.compact(partition_filters=[("migration_id", "=", str(m)), ("record_date", "=", day.isoformat())],
                                target_size=TARGET_FILE_BYTES)  # fmt: skip
        dt = lake_table(self.lake, table)
        for m, day in touched:
            write_manifest(self.lake, dt, table, m, day, self.store.lake_partition_span(conn, self.target, table, m, day))
            self.store.lake_described(conn, self.target, table, m, day)
