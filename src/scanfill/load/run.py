"""`scanfill run`: discover, plan, then run workers (in this process or N child processes) with
live progress, graceful stop on the first SIGINT/SIGTERM and an immediate one on the second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any

from scanfill.config import check_listen
from scanfill.coord import schema
from scanfill.coord.discovery import Discovery, discover
from scanfill.coord.scans import discover_scans
from scanfill.coord.slices import PlanOptions, plan, plan_imports, refetch
from scanfill.coord.store import CRASH_RESET, Progress, Store
from scanfill.db import Database
from scanfill.errors import ConfigError
from scanfill.load.agree import quorum, require_scans
from scanfill.load.worker import Worker, WorkerReport, WorkerSettings
from scanfill.logs import dump_tasks_on_sigusr2
from scanfill.scan.client import ScanClient

log = logging.getLogger("scanfill.run")


@dataclass(frozen=True)
class RunOptions:
    worker: WorkerSettings
    workers: int = 1
    slices: int = 0  # 0: 4 x concurrency x workers
    progress: bool = True
    plan_only: bool = False
    refetch: tuple[str, ...] = ()
    start_migration: int | None = None  # walk the previous_migration_id chain down from here
    discover_scans: bool = True  # use every scan the given ones list in /v0/scans (probed first)
    agree: str = "1"  # scans that must serve the same page: a number, or "auto" (f+1 of those found)
    rescan_s: float = 600.0  # with discover_scans: read /v0/scans again this often during the run


@dataclass
class RunSummary:
    updates: int = 0
    events: int = 0
    bytes: int = 0
    seconds: float = 0.0
    complete: bool = False
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reports: list[WorkerReport] = field(default_factory=list)
    stopped: bool = False
    scans: list[str] = field(default_factory=list)  # what scan discovery found and probed

    @property
    def disagreements(self) -> list[str]:
        return [d for r in self.reports for d in r.disagreements]

    @property
    def rows(self) -> int:
        return self.updates + self.events

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


async def find_scans(opts: RunOptions) -> tuple[WorkerSettings, list[str]]:
    """Every SV's scan the given ones list, probed; the settings to load with and what was found."""
    w = opts.worker
    if not opts.discover_scans:
        return replace(w, agree=quorum(opts.agree, len(w.scan.urls)), rescan_s=0.0), []
    usable, probes = await discover_scans(w.scan)
    lines = [p.line() for p in probes]
    if not usable:
        log.warning("no scan answered the probe (%s); trying the given ones anyway", "; ".join(lines))
        return replace(w, agree=quorum(opts.agree, len(w.scan.urls))), lines
    # the seeds listing others means "use them all"; otherwise the given URLs, less the unusable ones
    urls = tuple(usable) if len(probes) > len(w.scan.urls) else tuple(u for u in w.scan.urls if u in usable)
    return replace(w, scan=replace(w.scan, urls=urls), agree=quorum(opts.agree, len(urls)), rescan_s=opts.rescan_s), lines


async def discover_and_plan(opts: RunOptions) -> tuple[Discovery, dict[str, int]]:
    w = opts.worker
    async with ScanClient(w.scan) as client:
        disc = await discover(client, list(w.migrations) or None, start=opts.start_migration)
    slices = opts.slices or max(8, 4 * w.concurrency * max(1, opts.workers))
    with w.db.connect(autocommit=True) as conn:
        stats = plan(w.db, conn, disc, PlanOptions(target_slices=slices, migrations=w.migrations))
        if w.imports:
            plan_imports(w.db, conn, disc)
        for window in opts.refetch:
            for line in refetch(w.db, conn, window, w.migrations):
                log.info("%s", line)
    return disc, stats


def reset_if_emptied(db: Database) -> bool:
    """The crash canary, checked before a run's first write (`Store.reset_if_emptied`)."""
    with db.connect(autocommit=True) as conn:
        if Store(db).reset_if_emptied(conn):
            log.warning("%s", CRASH_RESET)
            return True
    return False


def overall_state(db: Database) -> Progress:
    """Totals the progress display and the summary need, from counters the loaders keep (cheap)."""
    with db.connect(autocommit=True) as conn:
        return Store(db).progress(conn)


def check_connection_budget(db: Database, workers: int, per_worker: int) -> dict[str, int]:
    """Refuse before starting, with a suggested --workers, rather than fail later with "too many clients"."""

    with db.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int"
        ).fetchone()
    assert row is not None
    max_conn, reserved, in_use = row
    available = max_conn - reserved - in_use + 1  # this checking connection goes away
    needed = workers * (per_worker + 1) + 2  # each worker's heartbeat; the planner and the progress display
    budget = {"max_connections": max_conn, "reserved": reserved, "in_use": in_use - 1, "needed": needed,
              "available": available}  # fmt: skip
    if needed > available:
        fit = max(0, (available - 2) // (per_worker + 1))
        raise ConfigError(
            f"{workers} worker(s) x {per_worker + 1} connections (+2) need {needed} connections, but the server has "
            f"{available} free (max_connections {max_conn}, {reserved} reserved, {in_use - 1} in use). "
            + (f"Use --workers {fit}" if fit else "Free some connections")
            + " or lower --db-connections, or raise max_connections."
        )
    return budget


def _child(settings: WorkerSettings, queue: Any) -> None:
    """Entry point of a worker process started by `--workers N`."""
    from scanfill.logs import setup_logging

    setup_logging(quiet=True)
    report = asyncio.run(_run_worker(settings))
    queue.put(report)


async def _run_worker(settings: WorkerSettings, hooks: Any = None) -> WorkerReport:
    if hooks is None and settings.metrics_port:
        from scanfill.load.metrics import Metrics

        hooks = Metrics()
        hooks.serve(settings.metrics_port, settings.metrics_addr)
        log.info("Prometheus metrics on port %d", settings.metrics_port)
    worker = Worker(settings, hooks)
    loop = asyncio.get_running_loop()
    hits = [0]

    def on_signal() -> None:
        hits[0] += 1
        if hits[0] >= 2:
            os._exit(130)  # nothing is lost: every commit is atomic, uncommitted pages are refetched
        log.warning("stop requested: finishing the batches in flight (signal again to stop at once)")
        worker.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    dump_tasks_on_sigusr2(loop)
    return await worker.run()


def run(opts: RunOptions, hooks: Any = None, display: Any = None) -> RunSummary:
    """Plan and load; returns when every slice this run can reach is done, or on a stop."""
    schema.init(opts.worker.db)
    if opts.worker.metrics_port:
        check_listen(opts.worker.metrics_addr, opts.worker.metrics_port, opts.workers)
    reset_if_emptied(opts.worker.db)
    if not opts.plan_only:
        check_connection_budget(opts.worker.db, opts.workers, opts.worker.db_connections)
    t0 = time.monotonic()
    worker, found = asyncio.run(find_scans(opts))
    for line in found:
        log.info("%s", line)
    if len(found) > len(opts.worker.scan.urls) or worker.agree > 1:
        log.warning("scans: %d found through /v0/scans, %d usable; a page needs %d agreeing", len(found),
                    len(worker.scan.urls), worker.agree)  # fmt: skip
    require_scans(worker.agree, len(worker.scan.urls))
    opts = replace(opts, worker=worker)
    disc, stats = asyncio.run(discover_and_plan(opts))
    complete_urls = {m: frozenset(u) for m, u in disc.complete_urls.items()}
    settings = replace(opts.worker, complete_urls=complete_urls)
    summary = RunSummary(warnings=list(disc.warnings), scans=found)
    for w in disc.warnings:
        log.warning("%s", w)
    log.info("planned: %s", stats)
    before = overall_state(opts.worker.db)
    if opts.plan_only:
        summary.complete = before.complete
        return summary
    if display is not None:
        display.start(before)
    try:
        if opts.workers <= 1:
            summary.reports.append(asyncio.run(_run_worker(settings, hooks)))
        else:
            summary.reports.extend(_run_processes(settings, opts.workers))
    finally:
        if display is not None:
            display.stop()
    summary.seconds = time.monotonic() - t0
    after = overall_state(opts.worker.db)
    summary.updates = sum(r.updates for r in summary.reports)
    summary.events = sum(r.events for r in summary.reports)
    summary.bytes = sum(r.bytes for r in summary.reports)
    summary.failures = [f for r in summary.reports for f in r.failures]
    summary.stopped = any(r.stopped for r in summary.reports)
    summary.complete = after.complete
    return summary


def _run_processes(settings: WorkerSettings, n: int) -> list[WorkerReport]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_child, daemon=False, args=(
            replace(settings, worker_id="", metrics_port=settings.metrics_port + k if settings.metrics_port else 0),
            queue))
        for k in range(n)
    ]  # fmt: skip
    for p in procs:
        p.start()
    hits = [0]

    def forward(signum: int, frame: Any) -> None:
        hits[0] += 1
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM if hits[0] == 1 else signal.SIGKILL)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    reports: list[WorkerReport] = []
    try:
        while len(reports) < n:
            try:
                reports.append(queue.get(timeout=0.5))
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs) and queue.empty():
                    break
        for p in procs:
            p.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for p in procs:
        if p.exitcode not in (0, None):
            reports.append(WorkerReport(f"pid {p.pid}", failures=[f"worker process {p.pid} exited with {p.exitcode}"]))
    return reports
