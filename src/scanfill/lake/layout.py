"""The lake's layout: two Delta tables (`updates`, `events`) under one root, Hive-partitioned by
`migration_id` and `record_date` (the UTC day of the record time; import updates, at 0001-01-01,
have their own partition per migration), typed columns (timestamps in microseconds UTC, lists of
text, JSON payloads as text), zstd Parquet. A JSON manifest per partition lists its files with
their sha256, for a check that needs no engine.

Why Delta Lake (delta-rs) and not Iceberg: the table is a directory and its `_delta_log`, nothing
else, so any filesystem or bucket holds all of it and every engine that reads Delta or Parquet can
open it; delta-rs replaces a partition atomically (`predicate` overwrite) and ships as one wheel.
Iceberg would need a catalog service or pyiceberg's SQL catalog living in a database beside the
files; scanfill's exactly-once bookkeeping is already in PostgreSQL, the catalog would add a
second source of truth."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

TABLES = ("updates", "events")
PARTITIONS = ["migration_id", "record_date"]
TARGET_FILE_BYTES = 128 * 1024 * 1024  # what engines read best


def require_libraries(root: str) -> None:
    """The lake's libraries are an extra: say so in one line before anything starts."""
    from scanfill.errors import ConfigError

    needed = ["deltalake", "pyarrow", *(["boto3"] if canonical(root).startswith("s3://") else [])]
    missing = []
    for name in needed:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"the lake needs {', '.join(missing)}: pip install 'scanfill[lake]'")


def schema(table: str) -> Any:
    """The Arrow schema of a lake table (the ledger table's columns, typed, plus `record_date`)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    text_list = pa.list_(pa.string())
    cols = {
        "updates": [("update_id", pa.string()), ("migration_id", pa.int64()), ("synchronizer_id", pa.string()),
                    ("record_time", ts), ("effective_at", ts), ("offset", pa.string()), ("workflow_id", pa.string()),
                    ("kind", pa.string()), ("round", pa.int64()), ("event_count", pa.int32()),
                    ("update_json", pa.string())],
        "events": [("event_id", pa.string()), ("update_id", pa.string()), ("migration_id", pa.int64()),
                   ("synchronizer_id", pa.string()), ("record_time", ts), ("event_type", pa.string()),
                   ("contract_id", pa.string()), ("template_id", pa.string()), ("package_name", pa.string()),
                   ("choice", pa.string()), ("consuming", pa.bool_()), ("payload", pa.string()),
                   ("exercise_result", pa.string()), ("signatories", text_list), ("observers", text_list),
                   ("acting_parties", text_list), ("child_event_ids", text_list), ("created_at_ts", ts),
                   ("round", pa.int64()), ("interface_id", pa.string())],
    }[table]  # fmt: skip
    return pa.schema([*(pa.field(n, t) for n, t in cols), pa.field("record_date", pa.date32())])


def contracts_schema() -> Any:
    """`contracts` (contract state) as exported: one row per contract, its lifespan and payload."""
    import pyarrow as pa

    ts, text_list = pa.timestamp("us", tz="UTC"), pa.list_(pa.string())
    cols = [("contract_id", pa.string()), ("template_id", pa.string()), ("package_name", pa.string()),
            ("template_name", pa.string()), ("created_update_id", pa.string()), ("created_migration_id", pa.int64()),
            ("created_synchronizer_id", pa.string()), ("created_record_time", ts), ("created_at", ts),
            ("created_pos", pa.int64()), ("payload", pa.string()), ("signatories", text_list),
            ("observers", text_list), ("archived_update_id", pa.string()), ("archived_migration_id", pa.int64()),
            ("archived_synchronizer_id", pa.string()), ("archived_record_time", ts), ("archived_choice", pa.string()),
            ("archived_pos", pa.int64()), ("synchronizer_id", pa.string()), ("synchronizer_pos", pa.int64())]  # fmt: skip
    return pa.schema([pa.field(n, t) for n, t in cols])


def transfers_schema() -> Any:
    """`amulet_transfers` (what each transfer minted and burnt) as exported: amounts as exact
    decimal(38, 10), so a lake reader sums them as exactly as PostgreSQL does."""
    import pyarrow as pa

    from scanfill.economy.transfers import TYPES

    arrow = {"text": pa.string(), "bigint": pa.int64(), "timestamptz": pa.timestamp("us", tz="UTC"),
             "boolean": pa.bool_(), "numeric": pa.decimal128(38, 10)}  # fmt: skip
    return pa.schema([pa.field(c, arrow[t]) for c, t in TYPES.items()])


def columns(table: str) -> list[str]:
    """The stored columns read from PostgreSQL, in schema order (JSON columns read as text)."""
    return [f.name for f in schema(table) if f.name != "record_date"]


_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def canonical(root: str) -> str:
    """The one name of a lake, whatever the spelling it was given in: its bookkeeping
    (`lake_files`, `lake_exports`, the publisher and exporter locks) is keyed by it, so `lake`,
    `./lake/`, `/abs/lake`, `file:///abs/lake` are one lake, never a `run --lake` lake taken for an
    export target or two publishers on one Delta log. A local path: absolute, normalised, symlinks
    resolved; an object-store URL: one scheme per store (`s3a://` is `s3://`), no empty, `.` or
    trailing path segment."""
    from scanfill.errors import ConfigError

    s = root.strip()
    scheme, sep, rest = s.partition("://")
    if sep and scheme.lower() == "file":
        s, sep = rest.removeprefix("localhost"), ""  # file:///abs and file://localhost/abs: a local path
    if not sep:
        if not s:
            raise ConfigError("the lake's location is empty: name a directory or an s3://bucket/prefix URL")
        return os.path.realpath(os.path.expanduser(s))
    scheme = scheme.lower()
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if not parts:
        raise ConfigError(f"the lake {root!r} names no bucket: use {scheme}://bucket/prefix")
    return f"{_SCHEME_ALIASES.get(scheme, scheme)}://{'/'.join(parts)}"


@dataclass(frozen=True)
class Lake:
    """Where the lake is: a local directory or an object-store URL (`s3://bucket/prefix`,
    `gs://...`). Credentials come from the usual environment variables and are never shown.
    `root` is always the canonical name (`canonical`), whatever spelling the lake was given in."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", canonical(self.root))

    @property
    def shown(self) -> str:
        from scanfill.scan.client import redact_url

        return redact_url(self.root)

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def manifest(self, table: str, migration_id: int, day: str) -> str:
        """A partition's manifest, relative to the root."""
        return f"_manifests/{table}/migration_id={migration_id}/record_date={day}.json"

    def storage_options(self) -> dict[str, str]:
        """delta-rs options: for S3-compatible stores a custom endpoint (AWS_ENDPOINT_URL) and, as
        scanfill serialises its own writers (one exporter or publisher per lake, by a database
        lock), no external lock table is needed."""
        if not self.root.startswith("s3://"):
            return {}
        opts = {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            opts["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        return opts

    # ----- files beside the Delta log (staged Parquet files, manifests): one PUT, one GET -------------

    def write(self, rel: str, data: bytes) -> None:
        """Write a whole object at `rel` (relative to the root) in one request."""
        if self.root.startswith("s3://"):
            bucket, key = self._s3_key(rel)
            _s3().put_object(Bucket=bucket, Key=key, Body=data)
            return
        if "://" not in self.root:
            path = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # a reader sees the whole file or none
            return
        fs, root = self._pyarrow_fs()
        with fs.open_output_stream(f"{root.rstrip('/')}/{rel}") as out:
            out.write(data)

    def read(self, rel: str) -> bytes:
        if self.root.startswith("s3://"):
            bucket, key = self._s3_key(rel)
            return bytes(_s3().get_object(Bucket=bucket, Key=key)["Body"].read())
        if "://" not in self.root:
            with open(os.path.join(self.root, rel), "rb") as f:
                return f.read()
        fs, root = self._pyarrow_fs()
        with fs.open_input_stream(f"{root.rstrip('/')}/{rel}") as f:
            return bytes(f.read())

    def delete(self, rel: str) -> None:
        """Remove the file at `rel` (vacuum); one already gone is fine."""
        if self.root.startswith("s3://"):
            bucket, key = self._s3_key(rel)
            _s3().delete_object(Bucket=bucket, Key=key)
            return
        if "://" not in self.root:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.root, rel))
            return
        fs, root = self._pyarrow_fs()
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(f"{root.rstrip('/')}/{rel}")

    def _s3_key(self, rel: str) -> tuple[str, str]:
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        return bucket, f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel

    def _pyarrow_fs(self) -> tuple[Any, str]:
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(self.root)
        return filesystem, path


def _s3() -> Any:
    """A boto3 S3 client: credentials, region and endpoint (AWS_ENDPOINT_URL) from the environment."""
    import boto3

    return boto3.client("s3")
