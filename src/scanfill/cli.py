"""The `scanfill` command line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from scanfill import __version__

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="scanfill")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def main(verbose: bool, quiet: bool) -> None:
    """Copy the complete Canton Network ledger history from Splice Scan into PostgreSQL."""
    from scanfill.logs import setup_logging

    setup_logging(verbose, quiet)


def friendly(fn: F) -> F:
    """Turn scanfill's errors (errors.py) and database errors into one clear message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg

        from scanfill.db import scrub
        from scanfill.errors import ScanfillError

        try:
            return fn(*args, **kwargs)
        except ScanfillError as exc:  # only scanfill's own errors: a bug keeps its traceback
            click.secho(f"error: {scrub(str(exc), os.environ.get('DATABASE_URL'))}", fg="red", err=True)
            sys.exit(2)
        except psycopg.Error as exc:
            msg = scrub(str(exc).strip(), os.environ.get("DATABASE_URL"))
            click.secho(f"database error: {msg}", fg="red", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def db_options(fn: F) -> F:
    fn = click.option(
        "--schema",
        default="public",
        show_default=True,
        envvar="SCANFILL_SCHEMA",
        help="PostgreSQL schema holding the ledger tables.",
    )(fn)
    fn = click.option(
        "--dsn",
        default=None,
        metavar="URL",
        help="PostgreSQL connection string (default: $DATABASE_URL, then $SUPABASE_DB_URL).",
    )(fn)
    return fn


def scan_options(fn: F) -> F:
    fn = click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (not recommended).")(fn)
    fn = click.option("--timeout", default=120.0, show_default=True, help="Seconds allowed for one request.")(fn)
    fn = click.option("--scan-url", "scan_urls", multiple=True, metavar="URL",
                      help="Scan base URL ending in /api/scan; repeat for several (default: $SCAN_URL, "
                           "comma-separated, then $BASE_URL).")(fn)  # fmt: skip
    return fn


def get_db(dsn: str | None, schema: str) -> Any:
    from scanfill.db import Database, resolve_dsn

    return Database(resolve_dsn(dsn), schema)


def get_scan(urls: tuple[str, ...], timeout: float, insecure: bool) -> Any:
    from scanfill.errors import ConfigError
    from scanfill.load.source import ScanConfig

    found = [u for item in urls for u in item.split(",") if u.strip()]
    if not found:
        env = os.environ.get("SCAN_URL") or os.environ.get("BASE_URL") or ""
        found = [u.strip() for u in env.split(",") if u.strip()]
    if not found:
        raise ConfigError("no scan URL: pass --scan-url https://HOST/api/scan or set SCAN_URL")
    for u in found:
        if not u.startswith(("http://", "https://")):
            raise ConfigError(f"scan URL {u!r} must start with http:// or https://")
    return ScanConfig(urls=tuple(u.rstrip("/") for u in found), timeout_s=timeout, verify_tls=not insecure)


# ----- init / run --------------------------------------------------------------------------------


@main.command()
@db_options
@friendly
def init(dsn: str | None, schema: str) -> None:
    """Create scanfill's tables, or upgrade them in place (idempotent)."""
    from scanfill.coord import schema as sch

    db = get_db(dsn, schema)
    before, after = sch.init(db)
    if before == after:
        click.echo(f"schema {schema!r} at {db.shown} is up to date (version {after})")
    else:
        click.echo(f"schema {schema!r} at {db.shown}: version {before} -> {after}")


@main.command()
@db_options
@scan_options
@click.option(
    "--migration",
    "migrations",
    multiple=True,
    type=int,
    help="Load exactly these migrations (repeat for several; default: discover all through the "
    "previous_migration_id chain).",
)
@click.option(
    "--from-migration",
    "start_migration",
    type=click.IntRange(0),
    default=None,
    help="Start the previous_migration_id chain at this migration instead of the current one (for scans "
    "without /v0/migrations/last, or to stop short of a migration).",
)
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Requests (slices) in flight per worker, 1..256 (past ~64 a scan's rate limiter and the "
                   "database, not the network, bound the load; measured in docs/benchmarks.md).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes on this machine (one per loader core is the measured best).")
@click.option(
    "--page-size",
    default=None,
    type=click.IntRange(1, 1000),
    help="Updates per request, 1..1000 (default: $BACKFILL_PAGE_SIZE or 1000).",
)
@click.option("--batch-rows", default=10_000, show_default=True, type=click.IntRange(1, 10_000_000),
              help="Rows per commit (at least one page).")
@click.option(
    "--page-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(0.1, 1024),
    help="Size pages to about this much JSON (fewer updates per request when they are large).",
)
@click.option("--slices", default=0, type=click.IntRange(0, 100_000),
              help="Slices to cut the ranges into (default: 4 x concurrency x workers).")
@click.option("--db-connections", default=3, show_default=True, type=click.IntRange(1, 64),
              help="Database connections per worker.")
@click.option("--lease", "lease_s", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds a slice lease lasts unrenewed.")
@click.option("--db-retry", "db_retry_s", default=300.0, show_default=True, type=click.FloatRange(0, 86400),
              help="Seconds to ride out a database restart or failover before failing.")
@click.option("--plan-only", is_flag=True, help="Discover and plan the slices, load nothing.")
@click.option("--prepare", "do_prepare", is_flag=True, help="Run `scanfill prepare` first (bulk-load mode).")
@click.option("--update-json", type=click.Choice(["full", "envelope"]), default="full", show_default=True,
              help="full: ledger_updates keeps each update as served; envelope: without events_by_id, whose events "
                   "are all in ledger_events (measured 1.2-1.4x faster loads, 20% smaller tables).")  # fmt: skip
@click.option(
    "--import-updates",
    "imports",
    is_flag=True,
    help="Also load import updates (ACS re-imports after a migration; skipped by default as they repeat "
    "contracts created in earlier migrations).",
)
@click.option(
    "--refetch",
    multiple=True,
    metavar="START/END",
    help="Delete and load again this record-time window of every range (from `scanfill verify --against-scan`).",
)
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics here (worker k of --workers on PORT+k).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address the metrics listen on (0.0.0.0 to let Prometheus scrape from elsewhere).")
@click.option("--restore", "do_restore", is_flag=True, help="Run `scanfill restore` when the history is complete.")
@click.option("--agree", default="1", show_default=True, metavar="K|auto",
              help="Store a page only when K scans served the same content (auto: f+1 of the scans found, "
                   "tolerating f faulty ones); scans that differ are named and benched.")
@click.option("--discover/--no-discover", "discover_scans", default=True, show_default=True,
              help="Use every SV's scan the given ones list in /v0/scans (each probed first).")
@click.option("--follow", "then_follow", is_flag=True,
              help="When the history is complete, keep it current (`scanfill follow`) until Ctrl+C.")
@click.option("--follow-poll", default=5.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="With --follow: seconds to wait after catching up before asking again.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@friendly
def run(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool,
        migrations: tuple[int, ...], start_migration: int | None, concurrency: int, workers: int,
        page_size: int | None, batch_rows: int, slices: int, db_connections: int, lease_s: float, db_retry_s: float,
        plan_only: bool, no_progress: bool, do_prepare: bool, do_restore: bool, then_follow: bool, follow_poll: float,
        refetch: tuple[str, ...], metrics_port: int, metrics_addr: str, page_mb: float, imports: bool,
        update_json: str, agree: str, discover_scans: bool) -> None:  # fmt: skip
    """Load the ledger history: every update exactly once, resumable at any instant.

    Run it again (here or on other machines against the same database) to resume or to add workers.
    """
    from scanfill.coord.slices import Partition
    from scanfill.load.run import RunOptions
    from scanfill.load.worker import WorkerSettings

    db = get_db(dsn, schema)
    scan = get_scan(scan_urls, timeout, insecure)
    if page_size is None:
        page_size = int(os.environ.get("BACKFILL_PAGE_SIZE", "1000"))
        if not 1 <= page_size <= 1000:
            raise click.BadParameter("BACKFILL_PAGE_SIZE must be 1..1000 (Scan rejects larger pages)")
    partition = Partition()
    if os.environ.get("WORKER_COUNT"):
        partition = Partition(int(os.environ.get("WORKER_ID", "0")), int(os.environ["WORKER_COUNT"]))
        if not 0 <= partition.worker_id < partition.worker_count:
            raise click.BadParameter("WORKER_ID must be in 0..WORKER_COUNT-1")
    settings = WorkerSettings(
        db=db, scan=scan, concurrency=concurrency, page_size=page_size, batch_rows=batch_rows,
        db_connections=db_connections, lease_s=lease_s, partition=partition, migrations=migrations,
        metrics_port=metrics_port, metrics_addr=metrics_addr, page_mb=page_mb, db_retry_s=db_retry_s, imports=imports, update_json=update_json,
    )  # fmt: skip
    if agree != "auto" and not (agree.isdigit() and 1 <= int(agree) <= 64):
        raise click.BadParameter(f"--agree takes a number 1..64 or auto, not {agree!r}", param_hint="--agree")
    if migrations and start_migration is not None:
        raise click.UsageError("--migration and --from-migration exclude each other: name the migrations or the start")
    opts = RunOptions(
        worker=settings, workers=workers, slices=slices, progress=not no_progress, plan_only=plan_only,
        refetch=refetch, start_migration=start_migration, agree=agree, discover_scans=discover_scans,
    )  # fmt: skip
    summary = _lifecycle(opts, db, do_prepare, do_restore)
    if then_follow:
        if not summary.complete:
            click.secho("not following: the history is not complete (see above); run again to finish it first",
                        fg="red", err=True)  # fmt: skip
            sys.exit(1)
        # the backfill's metrics server holds --metrics-port: the follower's gauges need `scanfill follow`
        _follow(db, scan, page_size=page_size, poll_s=follow_poll, update_json=update_json, db_retry_s=db_retry_s)


def _follow(db: Any, scan: Any, **kw: Any) -> None:
    from scanfill.load.follow import FollowSettings, follow

    metrics_port, metrics_addr = kw.pop("metrics_port", 0), kw.pop("metrics_addr", "127.0.0.1")
    hooks = None
    if metrics_port:
        from scanfill.ops.metrics import Metrics

        hooks = Metrics()
        hooks.serve(metrics_port, metrics_addr)
    settings = FollowSettings(db=db, scan=scan, **kw)
    from scanfill.load.source import redact_url

    click.echo(f"following into {db.shown} (schema {db.schema}); scans: {', '.join(map(redact_url, scan.urls))}",
               err=True)  # fmt: skip
    report = follow(settings, hooks)
    click.echo(f"followed {report.updates:,} updates + {report.events:,} events"
               + (f", {report.scan_events:,} verdicts/traffic records" if settings.events else "")
               + f" ({report.skipped:,} already stored)")  # fmt: skip
    for f in report.failures:
        click.secho(f"failed: {f}", fg="red", err=True)
    if report.failures:
        sys.exit(1)
    if report.stopped:
        click.echo("stopped; run the same command again to go on from the committed cursor")


@main.command()
@db_options
@scan_options
@click.option("--once", is_flag=True, help="Catch up to the scans' current head, then exit (for cron jobs).")
@click.option("--events/--no-events", default=True, show_default=True,
              help="Also keep /v0/events (mediator verdicts, traffic summaries, app activity records), which "
                   "Scan prunes: they cannot be backfilled later.")
@click.option("--page-size", default=1000, show_default=True, type=click.IntRange(1, 1000), help="Items per request.")
@click.option("--poll", "poll_s", default=5.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="Seconds to wait after catching up before asking again.")
@click.option("--lease", "lease_s", default=15.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds the follower lease lasts unrenewed: a standby takes over within this.")
@click.option("--start", type=click.Choice(["auto", "head", "beginning"]), default="auto", show_default=True,
              help="Where a first follow starts: auto = after the backfill in this database (else the head).")
@click.option("--update-json", type=click.Choice(["full", "envelope"]), default="full", show_default=True,
              help="As for `run`.")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535), help="Serve Prometheus metrics here.")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, help="Address the metrics listen on.")
@click.option("--db-retry", "db_retry_s", default=300.0, show_default=True, type=click.FloatRange(0, 86400),
              help="Seconds to ride out a database restart or failover before failing.")
@friendly
def follow(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool, once: bool,
           events: bool, page_size: int, poll_s: float, lease_s: float, start: str, update_json: str,
           metrics_port: int, metrics_addr: str, db_retry_s: float) -> None:  # fmt: skip
    """Keep the copy current: tail new updates (and verdicts) into the same tables, exactly once.

    One follower writes at a time; start the same command elsewhere for a hot standby that takes
    over within --lease seconds of the active one dying. Ctrl+C stops after the page in flight.
    """
    from scanfill.coord import schema as sch

    db = get_db(dsn, schema)
    sch.init(db)
    _follow(db, get_scan(scan_urls, timeout, insecure), once=once, events=events, page_size=page_size,
            poll_s=poll_s, lease_s=lease_s, start=start, update_json=update_json, metrics_port=metrics_port,
            metrics_addr=metrics_addr, db_retry_s=db_retry_s)  # fmt: skip


def _lifecycle(opts: Any, db: Any, do_prepare: bool, do_restore: bool) -> Any:
    """Prints what `load.run.lifecycle` does; exits 1 when slices failed."""
    from scanfill.load.run import lifecycle
    from scanfill.load.source import redact_url
    from scanfill.ops.progress import ProgressDisplay

    click.echo(f"database {db.shown} (schema {db.schema}); scans: {', '.join(map(redact_url, opts.worker.scan.urls))}",
               err=True)  # fmt: skip
    display = ProgressDisplay(db) if opts.progress and not opts.plan_only else None
    summary, restored = lifecycle(opts, do_prepare, do_restore, click.echo, _print_summary, display, _index_progress)
    if restored:
        click.secho("restored: tables LOGGED, indexes and constraints rebuilt, autovacuum on, statistics fresh",
                    fg="green")  # fmt: skip
    elif do_restore:
        click.secho("not restoring: the history is not complete yet (tables stay in bulk-load mode)",
                    fg="yellow", err=True)  # fmt: skip
    if summary.failures:
        sys.exit(1)
    return summary


def _print_summary(summary: Any) -> None:
    mb = summary.bytes / 1e6
    click.echo(
        f"loaded {summary.updates:,} updates + {summary.events:,} events = {summary.rows:,} rows "
        f"({mb:,.1f} MB of JSON) in {summary.seconds:,.1f} s: {summary.rows_per_s:,.0f} rows/s"
    )
    if summary.complete:
        click.secho("history complete: every slice reached its range's start on a scan reporting complete", fg="green")
    elif summary.stopped:
        click.echo("stopped before the end; run the same command again to resume where it left off")
    for w in summary.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    for line in summary.scans:
        click.echo(f"  {line}", err=True)
    for d in summary.disagreements:
        click.secho(f"disagreement: {d}", fg="red", err=True)
    for f in summary.failures:
        click.secho(f"failed: {f}", fg="red", err=True)
    if summary.failures:
        click.echo(
            "nothing of the failed slices past their last committed page was stored; "
            "fix the cause and run again to resume them",
            err=True,
        )


# ----- prepare / restore / abort / tune ----------------------------------------------------------


@main.command()
@db_options
@click.option("--force", is_flag=True, help="Prepare even though other sessions use the tables.")
@click.option("--dry-run", is_flag=True, help="Say what would be done, do nothing.")
@friendly
def prepare(dsn: str | None, schema: str, force: bool, dry_run: bool) -> None:
    """Bulk-load mode: save and drop indexes and constraints, SET UNLOGGED, autovacuum off (idempotent)."""
    from scanfill.coord import schema as sch
    from scanfill.ops import maintenance

    db = get_db(dsn, schema)
    sch.init(db)
    done = maintenance.prepare(db, force=force, dry_run=dry_run, echo=click.echo)
    if not dry_run:
        click.echo("prepared: " + (f"{len(done)} changes" if done else "nothing left to do"))
        click.secho("warning: the ledger tables are UNLOGGED: a server crash empties them (scanfill detects it and "
                    "reloads). Run `scanfill restore` when the load is done.", fg="yellow", err=True)  # fmt: skip


@main.command()
@db_options
@click.option("--jobs", default=2, show_default=True, help="Index builds at once, each on its own connection.")
@click.option("--maintenance-work-mem", default="512MB", show_default=True, help="Memory per index build.")
@friendly
def restore(dsn: str | None, schema: str, jobs: int, maintenance_work_mem: str) -> None:
    """Back to normal: dedupe, SET LOGGED, rebuild every saved index in parallel, autovacuum on, ANALYZE.

    Resumable: if it is interrupted, run it again and it finishes what is left.
    """
    from scanfill.ops import maintenance

    db = get_db(dsn, schema)
    maintenance.restore(db, jobs=jobs, maintenance_work_mem=maintenance_work_mem, echo=click.echo,
                        progress=_index_progress)  # fmt: skip
    click.secho("restored: tables LOGGED, indexes and constraints rebuilt, autovacuum on, statistics fresh", fg="green")


def _index_progress(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        eta = f", ETA {r['eta_s']:.0f} s" if r["eta_s"] is not None else ""
        click.echo(f"  building {r['index']}: {r['phase']} {r['percent']:.0f}% ({r['elapsed_s']:.0f} s{eta})", err=True)


@main.command()
@db_options
@click.option("--truncate", is_flag=True, help="Also empty the ledger tables and cursors (asks first).")
@click.option("--yes", is_flag=True, help="Do not ask before truncating.")
@click.option("--wait", "wait_s", default=120.0, show_default=True, help="Seconds to wait for workers to stop.")
@friendly
def abort(dsn: str | None, schema: str, truncate: bool, yes: bool, wait_s: float) -> None:
    """Emergency stop: tell every worker everywhere to stop, wait for them, restore, optionally truncate."""
    import time

    from scanfill.ops import maintenance

    db = get_db(dsn, schema)
    maintenance.request_stop(db)
    click.echo("stop requested through the database; waiting for workers ...")
    deadline = time.monotonic() + wait_s
    while (left := maintenance.running_workers(db)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        click.secho(f"{len(left)} worker(s) still running after {wait_s:.0f} s: {', '.join(left)}; their leases "
                    "expire and their commits are fenced, so restoring is still safe", fg="yellow", err=True)  # fmt: skip
    if maintenance.phase(db) in ("prepared", "restoring"):
        maintenance.restore(db, echo=click.echo, progress=_index_progress)
    if truncate:
        if not yes and not click.confirm("Empty ledger_updates, ledger_events and every cursor?", default=False):
            click.echo("not truncated")
        else:
            maintenance.truncate_all(db)
            click.echo("ledger tables and cursors emptied")
    maintenance.clear_stop(db)
    click.echo("aborted cleanly; `scanfill run` starts again from the cursors")


@main.command()
@db_options
@click.option("--apply", "do_apply", is_flag=True, help="ALTER SYSTEM the suggestions and reload.")
@click.option("--memory-gb", default=None, type=float, help="The server's RAM if it is not this machine.")
@click.option("--connections", default=16, show_default=True, help="Connections the load will use.")
@friendly
def tune(dsn: str | None, schema: str, do_apply: bool, memory_gb: float | None, connections: int) -> None:
    """Server settings for a bulk load: current value, suggestion and why."""
    from rich.console import Console
    from rich.table import Table

    from scanfill.ops import tune as tn

    db = get_db(dsn, schema)
    advice, ram = tn.advise(db, int(memory_gb * tn.GB) if memory_gb else None, connections)
    t = Table(title=f"bulk-load settings (server RAM {ram / tn.GB:.0f} GiB)")
    for col in ("setting", "current", "suggested", "restart?", "why"):
        t.add_column(col)
    for a in advice:
        t.add_row(a.name, a.current, a.suggested if a.changes else "(keep)", "yes" if a.needs_restart else "",
                  a.why)  # fmt: skip
    Console().print(t)
    if do_apply:
        restart = tn.apply(db, advice)
        click.echo("applied and reloaded" + (f"; restart the server for: {', '.join(restart)}" if restart else ""))


# ----- status / verify / doctor / report -------------------------------------------------------------


@main.command()
@db_options
@click.option("--watch", is_flag=True, help="Refresh live until Ctrl+C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the same as JSON, for scripts.")
@friendly
def status(dsn: str | None, schema: str, watch: bool, interval: float, as_json: bool) -> None:
    """Progress per migration and synchronizer, rate, ETA, workers, tables and index builds."""
    import json
    import time

    from rich.console import Console
    from rich.live import Live

    from scanfill.coord import schema as sch
    from scanfill.ops import monitor
    from scanfill.ops.maintenance import check_unlogged_crash

    db = get_db(dsn, schema)
    sch.require(db)
    check_unlogged_crash(db, echo=lambda s: click.secho(s, fg="red", err=True))
    if as_json:
        click.echo(json.dumps(monitor.status(db), indent=2, default=str))
        return
    console = Console()
    if not watch:
        console.print(monitor.render(monitor.status(db)))
        return
    with Live(monitor.render(monitor.status(db)), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(monitor.render(monitor.status(db)))
        except KeyboardInterrupt:
            pass


@main.command()
@db_options
@scan_options
@click.option("--against-scan", is_flag=True, help="Also compare per-window update counts with Scan itself.")
@click.option("--window-hours", default=24.0, show_default=True, help="Window size for --against-scan.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@friendly
def verify(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool,
           against_scan: bool, window_hours: float, as_json: bool) -> None:  # fmt: skip
    """Integrity checks of the loaded history; exits non-zero if any fails."""
    import asyncio
    import json

    from rich.console import Console
    from rich.table import Table

    from scanfill.coord import schema as sch
    from scanfill.ops import verify as vf

    db = get_db(dsn, schema)
    sch.require(db)
    results = vf.checks(db)
    diffs: list[Any] = []
    if against_scan:
        check, diffs = asyncio.run(vf.against_scan(db, get_scan(scan_urls, timeout, insecure),
                                                   int(window_hours * 3_600_000_000)))  # fmt: skip
        results.append(check)
    failed = [c for c in results if not c.ok]
    if as_json:
        click.echo(json.dumps([{"name": c.name, "ok": c.ok, "detail": c.detail, "rows": c.rows} for c in results],
                              indent=2, default=str))  # fmt: skip
    else:
        t = Table(title="scanfill verify")
        for col in ("check", "result", "detail"):
            t.add_column(col)
        for c in results:
            t.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
        Console().print(t)
        for c in failed:
            for r in c.rows[:20]:
                click.echo(f"  {c.name}: {r}", err=True)
        for mig, window in sorted({(d.migration_id, d.window) for d in diffs}):
            click.echo(f"repair: scanfill run --migration {mig} --refetch {window}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@db_options
@scan_options
@click.option("--workers", default=1, show_default=True, help="Workers you plan to run (connection check).")
@click.option("--db-connections", default=3, show_default=True, help="Connections per worker you plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@friendly
def doctor(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool, workers: int,
           db_connections: int, as_json: bool) -> None:  # fmt: skip
    """Troubleshooting: connections, indexes, persistence, sizes, settings, write amplification, scans."""
    import json

    from rich.console import Console
    from rich.table import Table

    from scanfill.errors import ConfigError
    from scanfill.ops import doctor as dr

    db = None
    try:
        db = get_db(dsn, schema)
    except ConfigError as exc:
        click.secho(f"database: {exc}", fg="yellow", err=True)
    try:
        scan = get_scan(scan_urls, timeout, insecure)
    except ConfigError as exc:
        scan = None
        click.secho(f"scan: {exc}", fg="yellow", err=True)
    found = dr.run_all(db, scan, workers, db_connections)
    if as_json:
        click.echo(json.dumps(dr.as_json(found), indent=2))
    else:
        t = Table(title="scanfill doctor")
        for col in ("check", "", "finding", "fix"):
            t.add_column(col)
        for f in found:
            t.add_row(f.check, "[green]ok[/]" if f.ok else "[red]![/]", f.finding, f.fix)
        Console().print(t)
    if any(not f.ok for f in found):
        sys.exit(1)


@main.command()
@db_options
@click.option("-o", "--output", default="scanfill-report.html", show_default=True, help="Where to write the HTML.")
@friendly
def report(dsn: str | None, schema: str, output: str) -> None:
    """One self-contained HTML file with charts of the run (open it in any browser)."""
    from scanfill.coord import schema as sch
    from scanfill.ops import report as rp

    db = get_db(dsn, schema)
    sch.require(db)
    info = rp.write(db, output)
    click.echo(f"wrote {info['path']} ({info['bytes']:,} bytes)")


# ----- demo --------------------------------------------------------------------------------------


@main.command()
@click.option("--rows", default=1_000_000, show_default=True, help="Size of the simulated ledger in rows.")
@click.option(
    "--dir",
    "workdir",
    default="~/.scanfill/demo",
    show_default=True,
    help="Where the embedded PostgreSQL keeps its data.",
)
@click.option("--concurrency", default=16, show_default=True, help="Requests in flight.")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option("--latency-ms", default=0.0, show_default=True, help="Simulated network latency per page.")
@click.option("--dsn", default=None, metavar="URL", help="Use this PostgreSQL instead of the embedded one.")
@click.option(
    "--lifecycle/--no-lifecycle",
    default=True,
    show_default=True,
    help="prepare before the load and restore after it, as the guide's phases 1 and 3.",
)
@click.option("--keep", is_flag=True, help="Keep the embedded PostgreSQL running afterwards, until Ctrl+C.")
@click.option("--reopen", is_flag=True, help="Load nothing: start the embedded PostgreSQL of an earlier demo again.")
@friendly
def demo(rows: int, workdir: str, concurrency: int, workers: int, latency_ms: float, dsn: str | None,
         lifecycle: bool, keep: bool, reopen: bool) -> None:  # fmt: skip
    """Everything on this machine: embedded PostgreSQL, a simulated Scan, a full backfill, a check,
    then how to look at what was loaded."""
    from pathlib import Path

    import psycopg

    from scanfill.db import Database
    from scanfill.load.run import RunOptions
    from scanfill.load.source import ScanConfig
    from scanfill.load.worker import WorkerSettings
    from scanfill.sim import FaultConfig, Ledger, LedgerConfig, SimConfig, Simulator

    handle = None
    if reopen:
        _demo_reopen(Path(workdir).expanduser())
        return
    if dsn is None:
        from scanfill.embedded import start_embedded

        click.echo(f"starting embedded PostgreSQL in {workdir} ...", err=True)
        handle = start_embedded(Path(workdir).expanduser())
        admin = handle.dsn
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS scanfill_demo WITH (FORCE)")
            conn.execute("CREATE DATABASE scanfill_demo")
        info = psycopg.conninfo.conninfo_to_dict(admin)
        info["dbname"] = "scanfill_demo"
        dsn = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    ledger = LedgerConfig.for_rows(rows)
    expected = Ledger(ledger)
    total_updates = expected.total_updates()
    click.echo(f"simulated Scan: {total_updates:,} updates (~{rows:,} rows) in migrations "
               f"{expected.migration_ids()}", err=True)  # fmt: skip
    try:
        with Simulator(SimConfig(ledger=ledger, faults=FaultConfig(latency_ms=latency_ms)), mode="process") as sim:
            db = Database(dsn)
            settings = WorkerSettings(db=db, scan=ScanConfig(urls=tuple(sim.urls)), concurrency=concurrency)
            summary = _lifecycle(RunOptions(worker=settings, workers=workers), db, lifecycle, lifecycle)
        with psycopg.connect(dsn) as conn:
            got = conn.execute("SELECT count(*), count(DISTINCT update_id) FROM ledger_updates").fetchone()
        assert got is not None
        ok = got[0] == got[1] == total_updates and summary.complete
        click.secho(f"check: {got[0]:,} updates stored, {got[1]:,} distinct, {total_updates:,} served: "
                    f"{'exact' if ok else 'MISMATCH'}", fg="green" if ok else "red")  # fmt: skip
        if not ok:
            sys.exit(1)
        from scanfill.ops import report as rp

        report = rp.write(Database(dsn), str(Path(workdir).expanduser() / "report.html"))
        _demo_how_to_look(dsn, report["path"], workdir, running=keep or handle is None)
        if keep and handle is not None:
            _wait_for_ctrl_c()
    finally:
        if handle is not None:
            handle.stop()


def _demo_how_to_look(dsn: str, report_path: str, workdir: str, running: bool) -> None:
    """What a newcomer does next: the connection string, status, the report, a first query."""
    import shutil
    from pathlib import Path

    from scanfill.db import scrub

    shown = scrub(dsn, dsn)
    psql = shutil.which("psql") or "psql"
    try:
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        psql = psql if shutil.which("psql") or not bundled.exists() else str(bundled)  # the embedded server's own
    except ImportError:
        pass
    click.echo("")
    click.secho("look at what was loaded:", bold=True)
    click.echo(f"  report (open in a browser): {report_path}")
    click.echo(f"  connection string:          {shown}")
    click.echo(f"  progress and tables:        scanfill status --dsn '{shown}'")
    click.echo(f"  integrity checks:           scanfill verify --dsn '{shown}'")
    click.echo(f"  a first query:              {psql} '{shown}' -c \"SELECT migration_id, kind, count(*), "
               "min(record_time), max(record_time) FROM ledger_updates GROUP BY 1, 2 ORDER BY 1, 2\"")  # fmt: skip
    if not running:
        click.echo(f"the embedded PostgreSQL is stopped now; start it again with: scanfill demo --reopen --dir {workdir}"
                   " (or run the demo with --keep)")  # fmt: skip


def _demo_reopen(datadir: Any) -> None:
    from scanfill.embedded import start_embedded

    if not (datadir / "pgdata").exists():
        raise click.UsageError(f"no demo database in {datadir}: run `scanfill demo` first")
    handle = start_embedded(datadir)
    try:
        import psycopg

        info = psycopg.conninfo.conninfo_to_dict(handle.dsn)
        info["dbname"] = "scanfill_demo"
        dsn = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
        _demo_how_to_look(dsn, str(datadir / "report.html"), str(datadir), running=True)
        _wait_for_ctrl_c()
    finally:
        handle.stop()


def _wait_for_ctrl_c() -> None:
    import signal

    click.secho("the embedded PostgreSQL keeps running; Ctrl+C stops it", fg="green")
    sys.stdout.flush()
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # delivered to sigwait, not to a handler
    signal.sigwait(stop)


# ----- sim ---------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=int,
    help="Port of the first scan; scan k listens on PORT+k (0 = any free port).",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, byte-identical ledger.")
@click.option(
    "--rows",
    default=1_000_000,
    show_default=True,
    type=int,
    help="Approximate ledger size in database rows (updates + events).",
)
@click.option(
    "--migrations",
    default="0,1,3",
    show_default=True,
    help="Migration ids (need not be contiguous); ranges of neighbours overlap in time.",
)
@click.option("--synchronizers", default=1, show_default=True, type=int, help="Synchronizers per migration.")
@click.option(
    "--gap-us",
    default=2_000_000,
    show_default=True,
    type=int,
    help="Mean spacing of updates on one synchronizer, in microseconds.",
)
@click.option("--events-mean", default=12.0, show_default=True, type=float, help="Mean events per update.")
@click.option(
    "--payload-pad",
    default=0,
    show_default=True,
    type=int,
    help="Extra bytes of text in each created event's payload (bigger rows).",
)
@click.option(
    "--reassignment-rate",
    default=0.02,
    show_default=True,
    type=float,
    help="Share of updates that are assign/unassign (needs --synchronizers > 1).",
)
@click.option("--no-labels", is_flag=True, help="Serve protobuf_json records without field labels.")
@click.option("--interface-rate", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Share of transfers exercised through the token standard's interface (interface_id set).")
@click.option("--external-hash-rate", default=0.02, show_default=True, type=click.FloatRange(0, 1),
              help="Share of transactions with an external_transaction_hash (sent by newer scans).")
@click.option("--shared-microseconds", is_flag=True,
              help="Break Scan's promise of unique record times per migration: synchronizers share microseconds.")
@click.option("--grow", default=0.0, show_default=True, type=click.FloatRange(0),
              help="The active migration grows by this many updates/s while serving (see --grow-updates).")
@click.option("--grow-updates", default=0, type=click.IntRange(0),
              help="How many updates appear that way (default: 10 minutes of --grow), added to the ledger.")
@click.option("--older", "older", type=int, default=0, metavar="K",
              help="The first K scans behave like an older Splice release (no /v0/migrations/last).")
@click.option(
    "--instances",
    default=1,
    show_default=True,
    type=int,
    help="Scans serving the same ledger, each on its own port, all listed by /v0/scans.",
)
@click.option(
    "--late-join",
    default=0.0,
    show_default=True,
    type=float,
    help="The last scan lacks this share of each range (later min, complete=false, /v2 503).",
)
@click.option("--prerender", is_flag=True, help="Render every update at start so serving costs no generation.")
@click.option("--cache-mb", default=256, show_default=True, type=int, help="LRU of rendered updates.")
@click.option("--latency-ms", default=0.0, show_default=True, type=float, help="Added latency per page.")
@click.option("--jitter-ms", default=0.0, show_default=True, type=float, help="Random extra latency up to this.")
@click.option("--rate-429", default=0.0, type=float, help="Share of requests answered 429 text/plain.")
@click.option("--rate-503", default=0.0, type=float, help="Share answered 503 JSON (server timeout).")
@click.option("--rate-502", default=0.0, type=float, help="Share answered 502.")
@click.option("--rate-403", default=0.0, type=float, help="Share answered 403 with an HTML page.")
@click.option("--rate-drop", default=0.0, type=float, help="Share whose connection is closed mid-body.")
@click.option("--rate-hang", default=0.0, type=float, help="Share never answered (see --hang-s).")
@click.option("--rate-malformed", default=0.0, type=float, help="Share answered 200 with a malformed page.")
@click.option(
    "--every",
    "every",
    multiple=True,
    metavar="FAULT=N",
    help="Schedule a fault on every Nth request, e.g. --every 503=10 (429, 503, 502, 403, drop, hang, malformed).",
)
@click.option("--retry-after", default=1.0, show_default=True, type=float,
              help="Retry-After of a 429 fault, seconds (0: no header). Scan's own limiter (--client-rps) sends none.")
@click.option("--hang-s", default=3600.0, show_default=True, type=float, help="How long a hung request hangs.")
@click.option("--no-gzip", is_flag=True, help="Never compress, even when the client asks for gzip.")
@click.option("--client-rps", default=0.0, type=float, help="Per-client rate limit in requests/s (429 past it).")
@click.option("--max-page", default=0, type=int, help="Cap items per page below the requested count.")
@click.option("--faults-everywhere", is_flag=True, help="Apply faults to discovery endpoints too, not only paging.")
@click.option("--fault-seed", default=0, type=int, help="Seed of the fault decisions.")
@click.option("--tls-cert", default="", help="Serve HTTPS with this PEM certificate (with --tls-key).")
@click.option("--tls-key", default="", help="PEM private key of --tls-cert.")
def sim(**o: Any) -> None:
    """Serve a realistic, deterministic Scan API over a synthetic ledger (for demos, tests, benchmarks).

    Endpoints live under http://HOST:PORT/api/scan; /sim/stats reports what was served.
    """
    from dataclasses import replace

    from scanfill.sim import FaultConfig, InstanceConfig, LedgerConfig, SimConfig, serve_forever
    from scanfill.sim.config import OLDER_SCAN_MISSING

    ids = tuple(int(x) for x in str(o["migrations"]).split(",") if x.strip())
    ledger = LedgerConfig.for_rows(
        int(str(o["rows"])),
        seed=int(str(o["seed"])),
        ids=ids,
        synchronizers=int(str(o["synchronizers"])),
        gap_us=int(str(o["gap_us"])),
        events_mean=float(str(o["events_mean"])),
        labels=not o["no_labels"],
        payload_pad=int(str(o["payload_pad"])),
        reassignment_rate=float(str(o["reassignment_rate"])),
        interface_rate=float(str(o["interface_rate"])),
        external_hash_rate=float(str(o["external_hash_rate"])),
        shared_microseconds=bool(o["shared_microseconds"]),
    )
    grow = float(str(o["grow"]))
    grow_updates = (int(str(o["grow_updates"])) or int(grow * 600)) if grow > 0 else 0
    if grow_updates:
        ledger = ledger.with_growth(grow_updates)
    faults = FaultConfig(
        latency_ms=float(str(o["latency_ms"])),
        jitter_ms=float(str(o["jitter_ms"])),
        rate_429=float(str(o["rate_429"])),
        rate_503=float(str(o["rate_503"])),
        rate_502=float(str(o["rate_502"])),
        rate_403=float(str(o["rate_403"])),
        rate_drop=float(str(o["rate_drop"])),
        rate_hang=float(str(o["rate_hang"])),
        rate_malformed=float(str(o["rate_malformed"])),
        retry_after_s=float(str(o["retry_after"])),
        hang_s=float(str(o["hang_s"])),
        gzip=not o["no_gzip"],
        client_rps=float(str(o["client_rps"])),
        max_page=int(str(o["max_page"])),
        data_only=not o["faults_everywhere"],
        seed=int(str(o["fault_seed"])),
    )
    every: dict[str, int] = {}
    for item in o["every"]:  # type: ignore[attr-defined]
        name, _, count = str(item).partition("=")
        if name not in ("429", "503", "502", "403", "drop", "hang", "malformed") or not count.isdigit():
            raise click.BadParameter(f"expected FAULT=N with FAULT in 429,503,502,403,drop,hang: {item!r}")
        every[f"every_{name}"] = int(count)
    faults = replace(faults, **every)  # type: ignore[arg-type]
    older = int(str(o["older"]))
    instances = [InstanceConfig(name=f"sv-{k + 1}", missing=OLDER_SCAN_MISSING if k < older else ())
                 for k in range(int(str(o["instances"])))]  # fmt: skip
    if float(str(o["late_join"])) > 0:
        instances[-1] = replace(instances[-1], late_join=float(str(o["late_join"])))
    config = SimConfig(
        ledger=ledger,
        instances=tuple(instances),
        faults=faults,
        prerender=bool(o["prerender"]),
        cache_mb=int(str(o["cache_mb"])),
        host=str(o["host"]),
        port=int(str(o["port"])),
        tls_cert=str(o["tls_cert"]),
        tls_key=str(o["tls_key"]),
        grow=grow,
        grow_updates=grow_updates,
    )

    def announce(urls: list[str]) -> None:
        from scanfill.sim import Ledger

        lg = Ledger(ledger)
        click.echo(
            f"scanfill sim: {lg.total_updates():,} updates in migrations {lg.migration_ids()}, seed {ledger.seed}"
        )
        for url in urls:
            click.echo(f"  serving {url}")
        click.echo("Ctrl+C to stop.")
        sys.stdout.flush()

    serve_forever(config, announce=announce)


if __name__ == "__main__":
    main()
