"""Operations around a load: prepare, restore, abort, tune, status, verify, doctor, report."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Any

import click

from scanfill.cli import db_options, friendly, get_db, get_scan, index_progress, main, scan_options

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
    from scanfill.lake import known

    known.refuse_in_lake(db, "bulk-load mode (indexes dropped, UNLOGGED) is for loading the ledger tables",
                         "`scanfill run --lake {lake}` needs no preparing")  # fmt: skip
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
    from scanfill.coord import schema as sch
    from scanfill.ops import maintenance

    db = get_db(dsn, schema)
    sch.require(db)
    if maintenance.phase(db) not in ("prepared", "restoring"):  # a database prepared before its lake: restorable
        from scanfill.lake import known

        known.refuse_in_lake(db, "restore rebuilds the ledger tables' indexes, and they were never prepared",
                             "`scanfill verify --lake {lake}` checks the lake")  # fmt: skip
    maintenance.restore(db, jobs=jobs, maintenance_work_mem=maintenance_work_mem, echo=click.echo,
                        progress=index_progress)  # fmt: skip
    click.secho("restored: tables LOGGED, indexes and constraints rebuilt, autovacuum on, statistics fresh", fg="green")


@main.command()
@db_options
@click.option("--truncate", is_flag=True, help="Also empty the ledger tables and cursors (asks first).")
@click.option("--yes", is_flag=True, help="Do not ask before truncating.")
@click.option("--wait", "wait_s", default=120.0, show_default=True, help="Seconds to wait for workers to stop.")
@click.option("--lake", "lakes", multiple=True, metavar="DIR_OR_URL",
              help="With --truncate, on a database loaded with `run --lake`: also remove that lake's tables "
                   "(updates, events, manifests, an export's contracts) and forget it, so the next `run --lake` "
                   "stores every row once. Required for each lake the database loaded.")  # fmt: skip
@friendly
def abort(dsn: str | None, schema: str, truncate: bool, yes: bool, wait_s: float, lakes: tuple[str, ...]) -> None:
    """Emergency stop: tell every worker everywhere to stop, wait for them, restore, optionally truncate."""
    import time

    from scanfill.coord import schema as sch
    from scanfill.lake import known
    from scanfill.ops import maintenance

    db = get_db(dsn, schema)
    sch.require(db)
    if lakes and not truncate:
        raise click.UsageError("--lake goes with --truncate: it removes the lake's tables with the database's copy")
    # refused before anything is stopped: truncating the database alone would make the next run double the lake
    gone_lakes = known.truncate_plan(db, lakes) if truncate else []
    if gone_lakes and not yes and not click.confirm(f"Also remove the ledger's tables in the lake "
                                                    f"{known.names(gone_lakes)}?", default=False):  # fmt: skip
        click.echo("nothing done")
        return
    # asked before anything is stopped: a "no" (or no terminal to answer) leaves everything as it was
    if truncate and not yes and not click.confirm("Stop every loader and empty the ledger tables, contract state "
                                                  "and every cursor?", default=False):  # fmt: skip
        click.echo("nothing done")
        return
    maintenance.request_stop(db)
    click.echo("stop requested through the database; waiting for workers and the follower ...")
    deadline = time.monotonic() + wait_s

    def running() -> list[str]:
        follower = maintenance.active_follower(db)
        return maintenance.running_workers(db) + ([f"follower {follower}"] if follower else [])

    try:
        while (left := running()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            click.secho(f"{len(left)} loader(s) still running after {wait_s:.0f} s: {', '.join(left)}; their leases "
                        "expire and their commits are fenced, so restoring is still safe", fg="yellow", err=True)  # fmt: skip
        if maintenance.phase(db) in ("prepared", "restoring"):
            maintenance.restore(db, echo=click.echo, progress=index_progress)
        if truncate:
            for x in gone_lakes:  # the lake first: if this fails, the database still knows it and `abort` again finishes
                n = known.remove(db, x)
                click.echo(f"lake {x.shown}: scanfill's tables there removed (updates, events, manifests, "
                           f"contracts: {n:,} directories or objects) and the lake forgotten")  # fmt: skip
            maintenance.truncate_all(db)
            click.echo("ledger tables, contract state and cursors emptied")
    finally:
        maintenance.clear_stop(db)  # whatever happened above, a later `run` must not stop at once
    again = " ".join(["scanfill run", *(f"--lake {x.shown}" for x in gone_lakes[:1])])
    click.echo(f"aborted cleanly; `{again}` starts again from the cursors")


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


def parse_days(text: str) -> list[date]:
    """`2026-02-05`, `2026-02-01,2026-02-03`, `2026-02-01..2026-02-07` (inclusive), or a mix."""
    out: list[date] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("..")
            a = date.fromisoformat(lo)
            b = date.fromisoformat(hi) if hi else a
            if b < a or (b - a).days > 3660:
                raise ValueError
            out.extend(a + timedelta(days=k) for k in range((b - a).days + 1))
    except ValueError:
        raise click.BadParameter(f"{text!r}: days are YYYY-MM-DD, a comma list, or FIRST..LAST") from None
    return sorted(set(out))


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
@click.option("--against-scan", is_flag=True,
              help="Also compare the stored copy with each given scan (repeat --scan-url), window by window: "
                   "updates missing, extra, or with other content (digests, field order aside).")
@click.option("--window-hours", default=24.0, show_default=True, help="Window size for --against-scan.")
@click.option("--days", "days_", metavar="DAY[,DAY|DAY..DAY]",
              help="With --against-scan: only these UTC days (2026-02-05, a list, or a range 2026-02-01..2026-02-07), "
                   "each reconciled by count and digest with every scan and recorded in the completeness ledger "
                   "(which scans serve exactly the stored copy).")
@click.option("--lake", "lake", metavar="DIR_OR_URL",
              help="Check a lake written by `scanfill export` instead of the database: every partition holds exactly "
                   "the rows the database stores for it, no id twice, every manifest's files with their sha256.")
@click.option("--acs-at", "acs_at", metavar="TIME",
              help="Also compare contract state with the scans' ACS snapshot at or before TIME: active() at the "
                   "snapshot's exact position against every contract (id, template, payload) and holdings summary.")
@click.option("--migration", type=int, default=None, help="Migration of --acs-at (default: the one in force then).")
@click.option("--agree", default=1, show_default=True, type=click.IntRange(1, 64),
              help="With --acs-at: the snapshot must be served identically by this many scans.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@friendly
def verify(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool,
           against_scan: bool, window_hours: float, days_: str | None, lake: str | None, acs_at: str | None,
           migration: int | None, agree: int, as_json: bool) -> None:  # fmt: skip
    """Integrity checks of the loaded history; exits non-zero if any fails."""
    import asyncio
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    from scanfill.coord import schema as sch
    from scanfill.ops import verify as vf

    db = get_db(dsn, schema)
    sch.require(db)
    days = parse_days(days_) if days_ else None
    if days is not None and not against_scan:
        raise click.UsageError("--days reconciles days against the scans: add --against-scan")
    if against_scan and not lake:
        from scanfill.lake import known

        known.refuse_in_lake(db, "--against-scan without --lake would compare the scans with the empty ledger tables",
                             "Run `scanfill verify --lake {lake} --against-scan`")  # fmt: skip
    results = vf.lake_checks(db, lake) if lake else vf.checks(db)
    diffs: list[Any] = []
    verdicts: list[Any] = []
    if against_scan:
        check, diffs, verdicts = asyncio.run(vf.against_scan(db, get_scan(scan_urls, timeout, insecure),
                                                             int(window_hours * 3_600_000_000), days=days,
                                                             lake=lake))  # fmt: skip
        results.append(check)
    if acs_at:
        from scanfill.cli.state import _at
        from scanfill.ops import state
        from scanfill.timeutil import now_us

        results.append(state.run_verify_acs(db, get_scan(scan_urls, timeout, insecure), _at(acs_at) or now_us(),
                                            migration, agree))  # fmt: skip
    failed = [c for c in results if not c.ok]
    if as_json:
        out: Any = [{"name": c.name, "ok": c.ok, "detail": c.detail, "rows": c.rows} for c in results]
        if days is not None:
            out = {"checks": out, "days": [dataclasses.asdict(v) for v in verdicts]}
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        t = Table(title="scanfill verify")
        for col in ("check", "result", "detail"):
            t.add_column(col)
        for c in results:
            t.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
        Console().print(t)
        if days is not None:
            for v in verdicts:
                who = ", ".join(v.agreeing) or "no scan"
                click.echo(f"{v.day} migration {v.migration_id} {v.synchronizer_id[:32]}: {v.stored:,} update(s) "
                           f"stored, digest {v.digest[:16]}; the same at {who}"
                           + (f"; differs at {', '.join(v.differing)}" if v.differing else ""))  # fmt: skip
            if not verdicts:
                click.echo("no range covers those days")
        for c in failed:
            for r in c.rows[:20]:
                click.echo(f"  {c.name}: {r}", err=True)
        for mig, window in sorted({(d.migration_id, d.window) for d in diffs}):
            click.echo(f"repair: scanfill run --migration {mig} --refetch {window}  (with --scan-url of scans that "
                       "agree, or --agree 2)", err=True)  # fmt: skip
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
@click.option("-o", "--output", default=None, help="Where to write it (default: scanfill-report.html for the HTML "
              "report, the terminal for --completeness).")
@click.option("--completeness", is_flag=True,
              help="The completeness ledger instead: per (migration, synchronizer, UTC day) its status (complete, in "
                   "progress, gap, not yet loaded), counts, how the rows came, agreement, verification, and the "
                   "watermark (complete through).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="With --completeness.")
@click.option("--from", "from_day", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First UTC day shown.")
@click.option("--to", "to_day", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last UTC day shown.")
@friendly
def report(dsn: str | None, schema: str, output: str | None, completeness: bool, fmt: str, from_day: Any,
           to_day: Any) -> None:  # fmt: skip
    """One self-contained HTML file with charts of the run (open it in any browser), or with
    --completeness what is provably whole, day by day."""
    from scanfill.coord import schema as sch

    db = get_db(dsn, schema)
    sch.require(db)
    if not completeness:
        if fmt != "table" or from_day or to_day:
            raise click.UsageError("--format, --from and --to go with --completeness")
        from scanfill.ops import report as rp

        info = rp.write(db, output or "scanfill-report.html")
        click.echo(f"wrote {info['path']} ({info['bytes']:,} bytes)")
        return
    from rich.console import Console

    from scanfill.ops import completeness as cp

    rows = cp.days(db, from_day.date() if from_day else None, to_day.date() if to_day else None)
    w = cp.watermark(db)
    if fmt == "table":
        if output:
            with open(output, "w", encoding="utf-8") as f:
                Console(file=f, width=100, no_color=True).print(cp.render(rows, w))
        else:
            Console().print(cp.render(rows, w))
        return
    text = cp.to_csv(rows) if fmt == "csv" else cp.to_json(rows, w) + "\n"
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)
