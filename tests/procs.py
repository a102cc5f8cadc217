"""Running `scanfill` as real child processes, and waiting on database conditions (polling the
database for a fact, never sleeping for a guessed time)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import psycopg


def scanfill(*args: str, dsn: str, urls: list[str], env: dict[str, str] | None = None,
             stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:  # fmt: skip
    e = {**os.environ, "DATABASE_URL": dsn, "SCAN_URL": ",".join(urls), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "scanfill.cli", *args], env=e, stdout=stdout,
                            stderr=subprocess.STDOUT)  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def loaded(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('backfill_cursors')").fetchone() == (None,):
            return 0  # `scanfill run` has not created its tables yet
        row = conn.execute("SELECT coalesce(sum(updates_loaded), 0) FROM backfill_cursors").fetchone()
    return int(row[0]) if row else 0


def drop_unique_keys(dsn: str) -> None:
    """Without primary keys a page loaded twice shows up as duplicate rows instead of an error."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_updates DROP CONSTRAINT ledger_updates_pkey")
        conn.execute("ALTER TABLE ledger_events DROP CONSTRAINT ledger_events_pkey")


def lines_of(p: subprocess.Popen[bytes]) -> list[str]:
    """The output lines of a running process, as they come (read in a thread): a test waits on
    what the process said, never on a guessed time."""
    import threading

    lines: list[str] = []

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line.decode())

    threading.Thread(target=read, daemon=True).start()
    return lines
