"""Lake commands: `scanfill export` (the copy in PostgreSQL as Delta Lake tables)."""

from __future__ import annotations

import click

from scanfill.cli import db_options, friendly, get_db, main


@main.command()
@db_options
@click.option("--to", "target", required=True, metavar="DIR_OR_URL",
              help="The lake: a directory, or s3://bucket/prefix (credentials and AWS_ENDPOINT_URL from the "
                   "environment, never shown).")
@click.option("--vacuum", "vacuum_hours", type=click.IntRange(0, 100_000), default=None, metavar="HOURS",
              help="Afterwards, delete the files no table version younger than HOURS references (files compaction "
                   "replaced, files of commits that rolled back); 168 keeps a week of versions readable.")
@friendly
def export(dsn: str | None, schema: str, target: str, vacuum_hours: int | None) -> None:
    """Export the stored ledger as Delta Lake tables (`updates`, `events`, and `contracts`), the first two partitioned by migration and
    UTC day, with a sha256 manifest per partition. Incremental: only partitions whose rows changed
    since the last export to this target are written, each replaced whole in one Delta commit, so it
    can be stopped and run again at any moment."""
    from scanfill.coord import schema as sch
    from scanfill.lake.export import export as run_export
    from scanfill.lake.layout import Lake

    db = get_db(dsn, schema)
    sch.require(db)
    from scanfill.lake.known import require_export_source

    require_export_source(db, target)
    report = run_export(db, target, echo=click.echo)
    shown = Lake(target).shown
    if vacuum_hours is not None:
        from scanfill.lake.export import vacuum

        click.echo(f"vacuum: {vacuum(db, Lake(target), vacuum_hours):,} file(s) no version younger than {vacuum_hours} h "
                   "references were deleted")  # fmt: skip
    if not report.partitions and not report.removed and report.contracts is None:
        click.echo(f"nothing changed since the last export to {shown}")
        return
    click.echo(f"exported {report.partitions:,} partition(s) ({report.updates:,} updates, {report.events:,} events; "
               f"{report.files:,} files, {report.bytes / 1e6:,.1f} MB) to {shown}"
               + (f"; removed {report.removed:,} partition(s) no longer stored" if report.removed else "")
               + (f"; contract state: {report.contracts:,} contracts" if report.contracts is not None else ""))  # fmt: skip
