"""`scanfill rounds`: the totals Scan stopped serving, from the copy."""

from __future__ import annotations

import click

from scanfill.cli import db_options, friendly, get_db, get_scan, main, scan_options
from scanfill.cli.state import _emit


@main.command("rounds")
@db_options
@scan_options
@click.option("--from", "lo", type=int, default=None, help="First round (inclusive).")
@click.option("--to", "hi", type=int, default=None, help="Last round (inclusive).")
@click.option("--party", default=None, help="One party's totals per round (Scan's round-party-totals).")
@click.option("--coupons", "view", flag_value="coupons", help="Coupons by their own round: created, claimed, expired, unclaimed.")
@click.option("--burn", "view", flag_value="burn", help="Minted against burnt, per round.")
@click.option("--top", type=click.Choice(["app", "validator", "sv", "faucet", "traffic", "traffic-cc"]), default=None,
              help="A leaderboard over the rounds chosen.")
@click.option("--check", "view", flag_value="check", help="List what contradicts the rules (exit 1 if anything does).")
@click.option("--against-scan", "view", flag_value="parity",
              help="Compare the closed rounds (and their party rows) with a scan that still serves /v0/round-totals "
                   "and /v0/round-party-totals (Splice before 0.6.7), field by field (exit 1 on a difference).")  # fmt: skip
@click.option("--limit", type=int, default=10, show_default=True, help="Rows of a leaderboard.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@friendly
def rounds(dsn: str | None, schema: str, scan_urls: tuple[str, ...], timeout: float, insecure: bool, lo: int | None,
           hi: int | None, party: str | None, view: str | None, top: str | None, limit: int, fmt: str) -> None:  # fmt: skip
    """Rewards minted, traffic bought and CC burnt per closed mining round, as Scan's removed
    /v0/round-totals served them (by the transfer's round, attributed to the sender), plus SV
    rewards, faucets, burns and supply. `final` rounds lie below the completeness watermark."""
    from scanfill.coord import schema as sch
    from scanfill.ops import rounds as ops

    db = get_db(dsn, schema)
    sch.require(db)
    if view == "parity":
        import asyncio

        report = asyncio.run(ops.against_scan(db, get_scan(scan_urls, timeout, insecure), lo, hi))
        for line in report.differences[:50]:
            click.echo(f"  {line}")
        if len(report.differences) > 50:
            click.echo(f"  ... and {len(report.differences) - 50:,} more")
        pending = f"; {len(report.only_in_copy):,} closed here that the scan has not aggregated" if report.only_in_copy else ""
        verdict = "identical" if report.equal else f"{len(report.differences):,} differences"
        click.echo(f"round totals against {report.scan}: {report.rounds:,} rounds and {report.party_rows:,} party rows "
                   f"compared, {verdict}{pending}")  # fmt: skip
        raise SystemExit(0 if report.equal else 1)
    chosen = "top" if top else view or ("parties" if party else "totals")
    rows = ops.query(db, chosen, lo, hi, party, top or "app", limit)
    s = ops.summary(db)
    title = (f"{chosen}: {len(rows):,} rows; {s.get('closed', 0):,} closed rounds ({s.get('whole', 0):,} final); "
             f"supply {ops.cell(s.get('supply'))} CC")  # fmt: skip
    if chosen == "check" and not rows and fmt == "table":
        click.echo(f"round economics: no violations ({s.get('summaries', 0):,} transfer summaries, "
                   f"{s.get('closed', 0):,} closed rounds checked)")  # fmt: skip
        return
    if fmt == "table":
        from rich.console import Console

        from scanfill.ops.monitor import narrow_table

        cols = ops.SHOWN[chosen]
        t = narrow_table(title, *(h for _, h in cols), right=tuple(h for c, h in cols if c not in
                                                                   ("party", "kind", "rule", "subject", "detail")))  # fmt: skip
        for r in rows:
            t.add_row(*(ops.cell(r[c]) for c, _ in cols))
        Console().print(t)
        click.echo("CC to the cent; --format csv or json for the exact values", err=True)
        if s.get("unreadable"):
            click.echo(f"note: {s['unreadable']:,} transfer summaries could not be read whole (no field labels, or an "
                       "amount that is not a Daml Numeric 10) and count as zero where unread; `scanfill rounds "
                       "--check` names each field", err=True)
        if s.get("unknown_versions"):
            click.echo(f"note: {s['unknown_versions']:,} transfers are of splice-amulet packages scanfill does not know "
                       "(read with the newest rules)", err=True)  # fmt: skip
    else:
        _emit(rows, fmt, list(rows[0]) if rows else [c for c, _ in ops.SHOWN[chosen]], "")
    if chosen == "check" and rows:
        raise SystemExit(1)
