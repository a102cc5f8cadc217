"""The `scanfill` command line: the group, the options and error mapping every command shares;
each command lives in the module of its kind (load, ops, demo, sim)."""

from __future__ import annotations

import functools
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
    import faulthandler
    import signal

    from scanfill.logs import setup_logging

    setup_logging(verbose, quiet)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>`: every thread's stack on stderr, for a process that hangs
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def friendly(fn: F) -> F:
    """Turn scanfill's errors (errors.py) and database errors into one clear message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg

        from scanfill.config import scrub_all
        from scanfill.errors import ScanfillError

        try:
            return fn(*args, **kwargs)
        except ScanfillError as exc:  # only scanfill's own errors: a bug keeps its traceback
            click.secho(f"error: {scrub_all(str(exc), kwargs.get('dsn'))}", fg="red", err=True)
            sys.exit(2)
        except psycopg.Error as exc:
            msg = scrub_all(str(exc).strip(), kwargs.get("dsn"))
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
    from scanfill import config

    return config.database(dsn, schema)


def get_scan(urls: tuple[str, ...], timeout: float, insecure: bool) -> Any:
    from scanfill import config

    return config.scans(urls, timeout, insecure)


def index_progress(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        eta = f", ETA {r['eta_s']:.0f} s" if r["eta_s"] is not None else ""
        click.echo(f"  building {r['index']}: {r['phase']} {r['percent']:.0f}% ({r['elapsed_s']:.0f} s{eta})", err=True)


from scanfill.cli import demo, lake, load, ops, rounds, sim, state  # noqa: E402  (importing them registers their commands)

__all__ = ["demo", "lake", "load", "main", "ops", "rounds", "sim", "state"]
