"""Loading: `init`, `run` (with its prepare/restore stages and `--follow`) and `follow`."""

from __future__ import annotations

import sys
from typing import Any

import click

from scanfill import config
from scanfill.cli import db_options, friendly, get_db, get_scan, index_progress, main, scan_options

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
@click.option("--rescan", "rescan_s", default=600.0, show_default=True, type=click.FloatRange(0, 86400),
              help="With --discover: read /v0/scans again this often during a run and use new scans (0: never).")
@click.option("--follow", "then_follow", is_flag=True,
              help="When the history is complete, keep it current (`scanfill follow`) until Ctrl+C.")
@click.option("--follow-poll", default=5.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="With --follow: seconds to wait after catching up before asking again.")
@click.option("--memory", "memory_mb", default=384, show_default=True, type=click.IntRange(16, 1 << 20),
              metavar="MB", help="Page bytes a process holds in flight (fetching, decoded, waiting to commit), "
                                 "whatever the ledger size and concurrency; more waits for commits.")
@click.option("--no-contract-state", "no_state", is_flag=True,
              help="Do not keep `contracts` (only to measure what it costs): verify then fails until "
                   "`scanfill rebuild-state` derives it from the stored ledger.")
@click.option("--lake", metavar="DIR_OR_URL",
              help="Store the ledger's rows as Delta Lake tables there (a directory or s3://bucket/prefix) instead of "
                   "the PostgreSQL ledger tables; coordination, contract state and the completeness ledger stay in "
                   "PostgreSQL. Exactly once: a commit's files become visible in the Delta log after its cursor moved.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@friendly
def run(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool,
        migrations: tuple[int, ...], start_migration: int | None, concurrency: int, workers: int,
        page_size: int | None, batch_rows: int, slices: int, db_connections: int, lease_s: float, db_retry_s: float,
        plan_only: bool, no_progress: bool, do_prepare: bool, do_restore: bool, then_follow: bool, follow_poll: float,
        refetch: tuple[str, ...], metrics_port: int, metrics_addr: str, page_mb: float, imports: bool,
        update_json: str, agree: str, discover_scans: bool, rescan_s: float, memory_mb: int,
        no_state: bool, lake: str | None) -> None:  # fmt: skip
    """Load the ledger history: every update exactly once, resumable at any instant.

    Run it again (here or on other machines against the same database) to resume or to add workers.
    """
    from scanfill.load.run import RunOptions
    from scanfill.load.worker import WorkerSettings

    db = get_db(dsn, schema)
    scan = get_scan(scan_urls, timeout, insecure)
    page_size = config.page_size(page_size)
    partition = config.partition()
    settings = WorkerSettings(
        db=db, scan=scan, concurrency=concurrency, page_size=page_size, batch_rows=batch_rows,
        db_connections=db_connections, lease_s=lease_s, partition=partition, migrations=migrations,
        metrics_port=metrics_port, metrics_addr=metrics_addr, page_mb=page_mb, db_retry_s=db_retry_s, imports=imports,
        update_json=update_json, memory_mb=memory_mb, contract_state=not no_state, lake=lake,
    )  # fmt: skip
    if lake:
        from scanfill.lake.layout import require_libraries

        require_libraries(lake)
    if lake and (refetch or do_prepare or do_restore):
        raise click.UsageError("--lake does not go with --refetch, --prepare or --restore yet: the lake's rows are "
                               "not in the ledger tables those act on")  # fmt: skip
    _ledger_where(db, "run", lake, refetch=bool(refetch))
    if no_state:
        _without_state(db)
    _check_agree(agree)
    if migrations and start_migration is not None:
        raise click.UsageError("--migration and --from-migration exclude each other: name the migrations or the start")
    opts = RunOptions(
        worker=settings, workers=workers, slices=slices, progress=not no_progress, plan_only=plan_only,
        refetch=refetch, start_migration=start_migration, agree=agree, discover_scans=discover_scans, rescan_s=rescan_s,
    )  # fmt: skip
    summary = _lifecycle(opts, db, do_prepare, do_restore)
    if then_follow:
        if summary.stopped:  # Ctrl+C / SIGTERM during the backfill meant the whole command
            click.echo("stopped before following")
            return
        if not summary.complete:
            click.secho("not following: the history is not complete (see above); run again to finish it first",
                        fg="red", err=True)  # fmt: skip
            sys.exit(1)
        # the backfill's metrics server holds --metrics-port: the follower's gauges need `scanfill follow`
        from scanfill.load.agree import quorum

        _follow(db, scan, page_size=page_size, poll_s=follow_poll, update_json=update_json, db_retry_s=db_retry_s,
                agree=quorum(agree, len(scan.urls)), contract_state=not no_state, lake=lake)  # fmt: skip


def _ledger_where(db: Any, command: str, lake: str | None, refetch: bool = False, rewind: bool = False) -> None:
    """A database whose ledger is in a lake is loaded into that lake only: the ledger tables
    (`--refetch`, `--rewind`, no `--lake`) or a second lake would split the copy."""
    from scanfill.lake import known

    if lake:
        from scanfill.lake.errors import writing
        from scanfill.lake.layout import Lake

        with writing(Lake(lake), "opening it"):  # a missing bucket, an unreachable store: one line
            known.require_same(db, lake, command)
    elif refetch:
        known.refuse_in_lake(db, "--refetch deletes and reloads rows of the ledger tables and cannot reload a "
                             "lake's rows yet", "`scanfill verify --lake {lake} --against-scan` names the windows "
                             "that differ; `scanfill abort --truncate --lake {lake}` then `scanfill run --lake {lake}` "
                             "loads the whole ledger again")  # fmt: skip
    elif rewind:
        known.refuse_in_lake(db, "--rewind acts on the ledger tables and cannot cut a lake's rows yet",
                             "`scanfill follow --lake {lake}` follows on from the cursors")  # fmt: skip
    else:
        known.refuse_in_lake(db, f"`{command}` without --lake would load a second, split copy into the ledger tables",
                             f"Run `scanfill {command} --lake {{lake}}`")  # fmt: skip


def _without_state(db: Any) -> None:
    from scanfill.coord import schema as sch
    from scanfill.coord.store import Store

    sch.init(db)
    Store(db).contracts_stale("loaded with --no-contract-state")
    click.secho("contract state is not kept (--no-contract-state): run `scanfill rebuild-state` afterwards",
                fg="yellow", err=True)  # fmt: skip


def _follow(db: Any, scan: Any, **kw: Any) -> None:
    from scanfill.load.follow import FollowSettings, follow

    metrics_port, metrics_addr = kw.pop("metrics_port", 0), kw.pop("metrics_addr", "127.0.0.1")
    hooks = None
    if metrics_port:
        from scanfill.config import check_listen
        from scanfill.load.metrics import Metrics

        check_listen(metrics_addr, metrics_port)
        hooks = Metrics()
        hooks.serve(metrics_port, metrics_addr)
    settings = FollowSettings(db=db, scan=scan, **kw)
    from scanfill.scan.client import redact_url

    click.echo(f"following into {db.shown} (schema {db.schema}); scans: {', '.join(map(redact_url, scan.urls))}",
               err=True)  # fmt: skip
    report = follow(settings, hooks)
    click.echo(f"followed {report.updates:,} updates + {report.events:,} events"
               + (f", {report.scan_events:,} verdicts/traffic records" if settings.events else "")
               + f" ({report.skipped:,} already stored)")  # fmt: skip
    for d in report.disagreements:
        click.secho(f"disagreement: {d}", fg="red", err=True)
    if report.malformed or report.problems:
        click.secho(f"{report.malformed:,} malformed page(s) refused and asked again; {report.problems:,} time(s) the "
                    "scans could not serve a page and it was asked again later"
                    + (f" (last: {report.last_problem})" if report.last_problem else ""), fg="yellow", err=True)  # fmt: skip
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
@click.option("--agree", default="1", show_default=True, metavar="K|auto",
              help="Store updates only when K scans served them identically (up to the lowest head of those K).")
@click.option("--no-contract-state", "no_state", is_flag=True,
              help="Do not keep `contracts` (only to measure what it costs); `scanfill rebuild-state` derives it later.")
@click.option("--lake", metavar="DIR_OR_URL",
              help="Store the ledger's rows as Delta Lake tables there (a directory or s3://bucket/prefix) instead of "
                   "the PostgreSQL ledger tables; coordination, contract state and the completeness ledger stay in "
                   "PostgreSQL. Exactly once: a commit's files become visible in the Delta log after its cursor moved.")
@click.option("--rewind", is_flag=True,
              help="Repair a cursor no scan can serve (`scanfill doctor` names one): remove what lies past what the "
                   "scans announce, move the cursors back onto stored positions, then follow.")
@friendly
def follow(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool, once: bool,
           events: bool, page_size: int, poll_s: float, lease_s: float, start: str, update_json: str,
           metrics_port: int, metrics_addr: str, db_retry_s: float, agree: str, no_state: bool, lake: str | None,
           rewind: bool) -> None:  # fmt: skip
    """Keep the copy current: tail new updates (and verdicts) into the same tables, exactly once.

    One follower writes at a time; start the same command elsewhere for a hot standby that takes
    over within --lease seconds of the active one dying. Ctrl+C stops after the page in flight.
    """
    from scanfill.coord import schema as sch
    from scanfill.load.agree import quorum, require_scans

    _check_agree(agree)
    db = get_db(dsn, schema)
    sch.init(db)
    scan = get_scan(scan_urls, timeout, insecure)
    if rewind and lake:
        raise click.UsageError("--rewind acts on the ledger tables, not on a lake: it does not go with --lake yet")
    if lake:
        from scanfill.lake.layout import require_libraries

        require_libraries(lake)
    _ledger_where(db, "follow", lake, rewind=rewind)
    if rewind:
        from scanfill.ops.cursors import rewind as do_rewind

        found, (gone_u, gone_e) = do_rewind(db, scan)
        for line in found.problems:
            click.secho(f"rewind: {line}", fg="yellow", err=True)
        click.echo(f"rewind: removed {gone_u:,} updates and {gone_e:,} events no scan serves; the cursors are back on "
                   "stored positions" if found.cut else "rewind: nothing to repair")  # fmt: skip
    require_scans(quorum(agree, len(scan.urls)), len(scan.urls))
    if no_state:
        _without_state(db)
    _follow(db, scan, agree=quorum(agree, len(scan.urls)), once=once, events=events, page_size=page_size,
            poll_s=poll_s, lease_s=lease_s, start=start, update_json=update_json, metrics_port=metrics_port,
            metrics_addr=metrics_addr, db_retry_s=db_retry_s, contract_state=not no_state, lake=lake)  # fmt: skip


def _lifecycle(opts: Any, db: Any, do_prepare: bool, do_restore: bool) -> Any:
    """Prints what `load.run.lifecycle` does; exits 1 when slices failed."""
    from scanfill.ops.lifecycle import lifecycle
    from scanfill.ops.progress import ProgressDisplay
    from scanfill.scan.client import redact_url

    click.echo(f"database {db.shown} (schema {db.schema}); scans: {', '.join(map(redact_url, opts.worker.scan.urls))}",
               err=True)  # fmt: skip
    display = ProgressDisplay(db) if opts.progress and not opts.plan_only else None
    summary, restored = lifecycle(opts, do_prepare, do_restore, click.echo, _print_summary, display, index_progress)
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
    requests = sum(r.requests for r in summary.reports)
    if requests:
        retries, hedges = sum(r.retries for r in summary.reports), sum(r.hedges for r in summary.reports)
        won = sum(r.hedges_won for r in summary.reports)
        click.echo(f"{requests:,} requests to scans: {retries:,} retried, {hedges:,} also sent to a second scan "
                   f"after a slow answer ({won:,} answered there first)")  # fmt: skip
    malformed = sum(r.malformed for r in summary.reports)
    if malformed:
        click.secho(f"{malformed:,} malformed page(s) refused and asked again", fg="yellow")
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


def _check_agree(agree: str) -> None:
    if agree != "auto" and not (agree.isdigit() and 1 <= int(agree) <= 64):
        raise click.BadParameter(f"--agree takes a number 1..64 or auto, not {agree!r}", param_hint="--agree")
