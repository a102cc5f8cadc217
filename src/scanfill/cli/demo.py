"""`scanfill demo`: everything on this machine, then how to look at it."""

from __future__ import annotations

import sys
from typing import Any

import click

from scanfill.cli import friendly, main
from scanfill.cli.load import _lifecycle

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
    from scanfill.load.worker import WorkerSettings
    from scanfill.scan.client import ScanConfig
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
