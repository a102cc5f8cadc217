"""`scanfill doctor`: the guide's troubleshooting section as checks, each with a finding and a fix."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson

from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.errors import ScanError
from scanfill.ops.maintenance import KEPT, catalog_snapshot, running_workers
from scanfill.ops.tune import advise
from scanfill.scan import endpoints as ep
from scanfill.scan.client import ScanClient, ScanConfig, redact_url


@dataclass
class Finding:
    check: str
    ok: bool
    finding: str
    fix: str = ""


def database_findings(db: Database, workers: int, db_connections: int) -> list[Finding]:
    out: list[Finding] = []
    with db.connect(autocommit=True, application="scanfill doctor") as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, "
            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int, "
            "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())::int").fetchone()  # fmt: skip
        assert row is not None
        max_c, reserved, in_use, here = row
        per = db_connections + 1  # and its heartbeat's own
        need = workers * per + 2
        free = max_c - reserved - in_use
        out.append(Finding("connections", need <= free,
                           f"{in_use} in use ({here} on this database) of max_connections {max_c} ({reserved} "
                           f"reserved); {workers} worker(s) x {per} need {need}",
                           "" if need <= free else f"use --workers {max(1, (free - 2) // per)} or raise "
                           "max_connections"))  # fmt: skip
        snap = catalog_snapshot(db, conn)
        loading = bool(running_workers(db))
        idx = sum(1 for v in snap.values() for i in v["indexes"] if i[0].split(".")[-1] not in KEPT)
        out.append(Finding("indexes during a load", not (loading and idx),
                           f"{idx} index(es) on the ledger tables, {'a load is running' if loading else 'no load running'}",
                           "" if not (loading and idx) else "indexes slow every COPY: `scanfill prepare` before loading, "
                           "`scanfill restore` after"))  # fmt: skip
        pers = {t: ("UNLOGGED" if v["persistence"] == "u" else "LOGGED") for t, v in snap.items()}
        unlogged_idle = not loading and any(p == "UNLOGGED" for p in pers.values())
        out.append(Finding("table persistence", not unlogged_idle, ", ".join(f"{t} {p}" for t, p in pers.items()),
                           "tables are UNLOGGED with no load running: a crash would empty them; `scanfill restore`"
                           if unlogged_idle else ""))  # fmt: skip
        page = int(os.environ.get("BACKFILL_PAGE_SIZE", "1000"))
        out.append(Finding("page and batch size", page >= 500,
                           f"page size {page} updates (~{page * 13:,} rows per request); commits of >= 10,000 rows",
                           "" if page >= 500 else "small pages multiply requests: set BACKFILL_PAGE_SIZE=1000"))  # fmt: skip
        advice, _ = advise(db)
        slow = [a for a in advice if a.changes]
        out.append(Finding("server settings for a bulk load", not slow,
                           "; ".join(f"{a.name}={a.current} (suggest {a.suggested})" for a in slow) or "all set",
                           "`scanfill tune --apply` (see `scanfill tune` for why)" if slow else ""))  # fmt: skip
        st = conn.execute("SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                          "pg_database_size(current_database()) FROM pg_stat_database WHERE datname = current_database()"
                          ).fetchone()  # fmt: skip
        assert st is not None
        progress = Store(db).progress(conn)
        loaded = progress.updates + progress.events
        amp = (st[2] + st[3]) / max(1, st[1])
        out.append(Finding("write amplification", amp < 0.5,
                           f"{st[0]:,} transactions, {st[1]:,} rows inserted ({loaded:,} by scanfill), {st[2]:,} "
                           f"updated, {st[3]:,} deleted, database {st[4] / 1e9:.2f} GB",
                           "" if amp < 0.5 else "many updates/deletes per insert: something upserts or rewrites rows"))  # fmt: skip
        lakes = Store(db).lake_ledger(conn)
        if lakes:  # the ledger tables are empty by design: what checks and repairs the copy is `--lake`
            out.append(Finding("where the ledger is", True,
                               "in the lake " + ", ".join(f"{redact_url(t)} ({u:,} updates, {e:,} events)" for t, u, e in lakes)
                               + "; the ledger tables are empty by design",
                               f"`scanfill verify --lake {redact_url(lakes[0][0])}` checks it; commands acting on the ledger "
                               "tables refuse"))  # fmt: skip
    return out


def one_try(scan: ScanConfig) -> ScanConfig:
    """Doctor asks each scan once: an unreachable one is a finding, not something to wait out."""
    return ScanConfig(**{**scan.__dict__, "max_attempts": 1, "timeout_s": min(scan.timeout_s, 15.0)})


async def scan_findings(scan: ScanConfig) -> list[Finding]:
    out: list[Finding] = []
    async with ScanClient(one_try(scan)) as client:
        for url in scan.urls:
            t0 = time.monotonic()
            try:
                data, _ = await client.request("GET", ep.BACKFILL_STATUS, only={url.rstrip("/")})
                ms = (time.monotonic() - t0) * 1000
                complete = bool(orjson.loads(data).get("complete"))
                out.append(Finding(f"scan {redact_url(url)}", complete, f"reachable, {ms:.0f} ms, history "
                                   f"{'complete' if complete else 'NOT complete (still backfilling)'}",
                                   "" if complete else "scanfill will not trust it for ranges it cannot prove; "
                                   "add another scan URL"))  # fmt: skip
            except ScanError as exc:
                out.append(Finding(f"scan {redact_url(url)}", False, f"unreachable: {exc}",
                                   "check the URL (it ends in /api/scan), your IP allow-listing (403), or drop it"))  # fmt: skip
    return out


def run_all(db: Database | None, scan: ScanConfig | None, workers: int, db_connections: int) -> list[Finding]:
    found: list[Finding] = []
    if db is not None:
        found += database_findings(db, workers, db_connections)
    if scan is not None:
        found += asyncio.run(scan_findings(scan))
    if db is not None and scan is not None:
        import psycopg

        from scanfill.ops.cursors import cursor_findings

        try:
            ok, finding, fix = cursor_findings(db, one_try(scan))
            found.append(Finding("cursors the scans can serve", ok, finding, fix))
        except psycopg.errors.UndefinedTable:
            pass  # nothing loaded yet: no cursor to check
    return found


def as_json(found: list[Finding]) -> list[dict[str, Any]]:
    return [f.__dict__ for f in found]
