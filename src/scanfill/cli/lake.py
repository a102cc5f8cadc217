"""Lake commands: `scanfill export` (the copy in PostgreSQL as Delta Lake tables)."""

from __future__ import annotations

import click

from scanfill.cli import db_options, friendly, get_db, main


@main.command()
@db_options
@click.option("--to", "target", required=True, metavar="DIR_OR_URL",
              help="The lake: a directory, or s3://bucket/prefix (credentials and AWS_ENDPOINT_URL from the "
                   "environment, never shown).")
@friendly
def export(dsn: str | None, schema: str, target: str) -> None:
    """Export the stored ledger as Delta Lake tables (`updates`, `events`, and `contracts`), the first two partitioned by migration and
    UTC day, with a sha256 manifest per partition. Incremental: only partitions whose rows changed
    since the last export to this target are written, each replaced whole in one Delta commit, so it
    can be stopped and run again at any moment."""
    from scanfill.coord import schema as sch
    from scanfill.lake.export import export as run_export
    from scanfill.lake.layout import Lake

    db = get_db(dsn, schema)
    sch.require(db)
    report = run_export(db, target, echo=click.echo)
    shown = Lake(target).shown
    if not report.partitions and not report.removed and report.contracts is None:
        click.echo(f"nothing changed since the last export to {shown}")
        return
    click.echo(f"exported {report.partitions:,} partition(s) ({report.updates:,} updates, {report.events:,} events; "
               f"{report.files:,} files, {report.bytes / 1e6:,.1f} MB) to {shown}"
               + (f"; removed {report.removed:,} partition(s) no longer stored" if report.removed else "")
               + (f"; contract state: {report.contracts:,} contracts" if report.contracts is not None else ""))  # fmt: skip
