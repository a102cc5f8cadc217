"""Contract state for people who do not write SQL: acs, holdings, rebuild-state."""

from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal
from typing import Any

import click

from scanfill.cli import db_options, friendly, get_db, main


def _at(text: str | None) -> int | None:
    from scanfill.errors import ConfigError
    from scanfill.timeutil import TimestampError, parse_us

    if text is None or text == "now":
        return None
    try:
        return parse_us(text if "T" in text else text + "T00:00:00Z")
    except TimestampError:
        raise ConfigError(f"--at takes an ISO-8601 UTC time such as 2025-12-31T23:59:00Z, not {text!r}") from None


def _position(db: Any, at: str | None, migration: int | None) -> Any:
    from scanfill.ops import state

    at_us = _at(at)
    return None if at_us is None and migration is None else state.resolve(db, at_us, migration)


def _emit(rows: list[dict[str, Any]], fmt: str, columns: list[str], title: str) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, Decimal):
            return f"{v:f}"  # never exponent notation (0E-10)
        if isinstance(v, list):
            return " ".join(map(str, v))
        return v if isinstance(v, str | int | float | bool) or v is None else str(v)

    if fmt == "json":
        out = [{c: (json.loads(r[c]) if c == "payload" and isinstance(r[c], str) else
                    f"{r[c]:f}" if isinstance(r[c], Decimal) else r[c]) for c in columns} for r in rows]  # fmt: skip
        click.echo(json.dumps(out, indent=2, default=str))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for r in rows:
            w.writerow([plain(r[c]) for c in columns])
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for c in columns:
            t.add_column(c, overflow="fold", justify="right" if c.endswith(("amount", "fees", "initial", "holdings",
                                                                              "locked", "round")) else "left")  # fmt: skip
        for r in rows:
            t.add_row(*[str(plain(r[c])) if r[c] is not None else "" for c in columns])
        Console().print(t)


_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
                       show_default=True)  # fmt: skip
_AT = click.option("--at", "at", metavar="TIME", help="Record time (ISO-8601 UTC; default: now).")
_MIGRATION = click.option("--migration", type=int, default=None,
                          help="Migration of the position (default: the newest one whose history had begun at TIME; "
                               "record times of migrations overlap).")  # fmt: skip


@main.command()
@db_options
@_AT
@_MIGRATION
@click.option("--template", default=None, help="Template: <package id>:<module>:<entity>, "
                                               "<package-name>:<module>:<entity>, or <module>:<entity> (all versions).")  # fmt: skip
@click.option("--party", default=None, help="Only contracts this party is a signatory or observer of.")
@click.option("--limit", type=int, default=None, help="At most this many contracts.")
@_FORMAT
@friendly
def acs(dsn: str | None, schema: str, at: str | None, migration: int | None, template: str | None,
        party: str | None, limit: int | None, fmt: str) -> None:  # fmt: skip
    """The contracts active at a time (what `active()` returns), from the stored history."""
    from scanfill.coord import schema as sch
    from scanfill.ops import state

    db = get_db(dsn, schema)
    sch.require(db)
    pos = _position(db, at, migration)
    rows = state.active(db, pos, template, party, limit)
    cols = ["contract_id", "template_id", "created_migration_id", "created_record_time", "synchronizer_id",
            "signatories", "observers"] + (["payload"] if fmt != "table" else [])  # fmt: skip
    _emit(rows, fmt, cols, f"active contracts at {pos or 'now'}: {len(rows):,}")


@main.command()
@db_options
@_AT
@_MIGRATION
@click.option("--party", default=None, help="One owner's holdings, contract by contract.")
@click.option("--as-of-round", "as_of_round", type=click.IntRange(min=0), default=None,
              help="Holding fees as of this round (default, as Scan's /v1/holdings/summary: the earliest open round now).")
@_FORMAT
@friendly
def holdings(dsn: str | None, schema: str, at: str | None, migration: int | None, party: str | None,
             as_of_round: int | None, fmt: str) -> None:  # fmt: skip
    """Amulet and LockedAmulet per owner at a time: the amount at creation, the holding fees accrued as of a
    round ((round - createdAt) x rate, as Scan computes them), and what is left (exact decimals)."""
    from scanfill.coord import schema as sch
    from scanfill.ops import state

    db = get_db(dsn, schema)
    sch.require(db)
    pos = _position(db, at, migration)
    rows = state.holdings(db, pos, party, as_of_round)
    if party:
        cols = ["contract_id", "template_name", "initial_amount", "created_round", "at_round", "holding_fees", "amount"]
        _emit(rows, fmt, cols, f"holdings of {party} at {pos or 'now'}")
        return
    owners = state.per_owner(rows)
    cols = ["owner", "holdings", "locked", "round", "unlocked_initial", "locked_initial", "holding_fees", "amount"]
    _emit(owners, fmt, cols, f"holdings at {pos or 'now'}: {len(owners):,} owners")


@main.command("rebuild-state")
@db_options
@friendly
def rebuild_state(dsn: str | None, schema: str) -> None:
    """Derive contract state and the transfer facts from the stored ledger (a copy loaded before
    contract state existed, or with --no-contract-state): from the ledger tables, or, on a database
    loaded with `run --lake`, from that lake (read in place, partition by partition; refused, nothing
    done, when the lake does not hold every row committed there, and one line when it cannot be
    read). Everything is replaced in one transaction; loads may run meanwhile: their merges wait
    for it."""
    from psycopg import sql

    from scanfill.coord import schema as sch
    from scanfill.coord.store import Store
    from scanfill.economy.rebuild import rebuild as rebuild_economy
    from scanfill.lake.known import ledger_lakes, names
    from scanfill.state.rebuild import rebuild

    db = get_db(dsn, schema)
    sch.require(db)
    lakes = ledger_lakes(db)
    if lakes:
        from scanfill.lake.layout import require_libraries

        for known in lakes:
            require_libraries(known.root)
    with db.connect(application="scanfill rebuild-state") as conn:
        with conn.transaction():
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(db.t("contracts")))
            source = []
            if lakes:  # after the lock: no load commits more rows there until this transaction ends
                from scanfill.lake.ledger import open_lakes

                source = open_lakes(conn, Store(db), lakes)
            shown = [0]

            def progress(k: int) -> None:  # every 500,000 rows (a lake's chunks end with its partitions)
                if k // 500_000 > shown[0]:
                    shown[0] = k // 500_000
                    click.echo(f"  {k:,} ledger rows read", err=True)

            n = rebuild(db, conn, None, progress=progress, lakes=source)
            conn.execute(sql.SQL("DELETE FROM {} WHERE key = 'contracts_stale'").format(db.t("scanfill_meta")))
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(db.t("amulet_transfers")))
            summaries = rebuild_economy(db, conn, lakes=source)
        got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(db.t("contracts"))).fetchone()
    click.echo(f"contract state rebuilt{' from the lake ' + names(lakes) if lakes else ''}: {n:,} ledger rows read, "
               f"{got[0] if got else 0:,} contracts, {summaries:,} transfer summaries")  # fmt: skip
