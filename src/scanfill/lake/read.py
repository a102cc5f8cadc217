"""Reading a lake the way its readers do: through the Delta log (only committed files)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from scanfill.lake.layout import Lake


def table(lake: Lake, name: str) -> Any:
    from deltalake import DeltaTable

    return DeltaTable(lake.uri(name), storage_options=lake.storage_options())


def exists(lake: Lake, name: str) -> bool:
    from deltalake import DeltaTable

    return bool(DeltaTable.is_deltatable(lake.uri(name), storage_options=lake.storage_options()))


def add_actions(dt: Any) -> dict[str, list[Any]]:
    """The committed files of a Delta table and their statistics, as columns."""
    import pyarrow as pa

    return pa.table(dt.get_add_actions(flatten=True)).to_pydict()  # type: ignore[no-any-return]


def ensure_tables(lake: Lake) -> None:
    """Create the ledger's Delta tables where they do not exist yet (idempotent)."""
    from deltalake import DeltaTable

    from scanfill.lake.layout import PARTITIONS, TABLES, schema

    for name in TABLES:
        if not exists(lake, name):
            DeltaTable.create(lake.uri(name), schema(name), partition_by=PARTITIONS, mode="ignore",
                              storage_options=lake.storage_options())  # fmt: skip


def partition_predicate(m: int, day: date) -> str:
    """The Delta predicate selecting one (migration, day) partition."""
    return f"migration_id = {int(m)} AND record_date = '{day.isoformat()}'"


def partition_rows(lake: Lake, name: str) -> Counter[tuple[int, date]]:
    """Rows per (migration, record_date) from the log's file statistics (no data file is read)."""
    actions = add_actions(table(lake, name))
    out: Counter[tuple[int, date]] = Counter()
    for m, d, n in zip(actions["partition.migration_id"], actions["partition.record_date"], actions["num_records"],
                       strict=True):  # fmt: skip
        day = d if isinstance(d, date) else date.fromisoformat(str(d))
        out[(int(m), day)] += int(n)
    return out


def duplicate_ids(lake: Lake, name: str, key: str) -> int:
    """Rows beyond the first per (key, migration): DuckDB over the committed files' Arrow dataset."""
    import duckdb

    con = duckdb.connect()
    con.register("data", table(lake, name).to_pyarrow_dataset())
    row = con.execute(f"SELECT count(*) - count(DISTINCT ({key}, migration_id)) FROM data").fetchone()
    return int(row[0]) if row else 0
