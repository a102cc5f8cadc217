"""Settings every test module shares: the small two-migration ledger and the run options a test
starts from (fast retries, short timeouts). Test modules import this, never each other."""

from __future__ import annotations

import uuid

import psycopg

from scanfill.db import Database
from scanfill.load.run import RunOptions
from scanfill.load.worker import WorkerSettings
from scanfill.scan.client import ScanConfig
from scanfill.sim import LedgerConfig, MigrationSpec

SMALL = LedgerConfig(
    seed=11,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 400),
        MigrationSpec(4, "2024-06-25T00:10:00Z", 350, synchronizers=2, import_updates=5),  # gap in ids, overlap
    ),
)

# Several UTC days: migration 0 from 2024-06-20 to 06-24 (an update every ~30 min), migration 1 from
# 06-24 to 06-26 on two synchronizers (every ~20 min), for the completeness ledger per day.
DAYS = LedgerConfig(
    seed=23,
    migrations=(
        MigrationSpec(0, "2024-06-20T01:00:00Z", 200, gap_us=1_800_000_000),
        MigrationSpec(1, "2024-06-24T12:00:00Z", 120, synchronizers=2, gap_us=1_200_000_000),
    ),
)


def options(dsn: str, urls: list[str], **kw: object) -> RunOptions:
    scan = ScanConfig(urls=tuple(urls), backoff_base_s=0.01, backoff_cap_s=0.2, timeout_s=10, read_timeout_s=5,
                      failure_cooldown_s=0.2)  # fmt: skip
    run_kw = {k: kw.pop(k) for k in ("workers", "slices", "plan_only", "refetch", "start_migration", "agree",
                                     "discover_scans", "rescan_s") if k in kw}
    ws = WorkerSettings(db=Database(dsn), scan=scan, **kw)  # type: ignore[arg-type]
    return RunOptions(worker=ws, progress=False, **run_kw)  # type: ignore[arg-type]


def new_database(admin: str, prefix: str = "t") -> str:
    """A new, empty database on the admin DSN's server; its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(admin)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def drop_database(admin: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
