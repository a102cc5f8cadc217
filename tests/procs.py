"""Running `scanfill` as real child processes, and waiting on database conditions (polling the
database for a fact, never sleeping for a guessed time)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg


def scanfill(*args: str, dsn: str, urls: list[str], env: dict[str, str] | None = None,
             stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:  # fmt: skip
    e = {**os.environ, "DATABASE_URL": dsn, "SCAN_URL": ",".join(urls), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "scanfill.cli", *args], env=e, stdout=stdout,
                            stderr=subprocess.STDOUT)  # fmt: skip


def finish(p: subprocess.Popen[bytes], timeout: float, dsn: str | None = None) -> str:
    """Wait for a process and return its output. One that hangs fails the test with what it was
    doing: every thread's stack (scanfill dumps them on SIGUSR1), its output, and the sessions."""
    import signal

    try:
        return p.communicate(timeout=timeout)[0].decode()
    except subprocess.TimeoutExpired:
        sessions = ""
        if dsn is not None:  # first, while it still holds what it holds
            with psycopg.connect(dsn, autocommit=True) as conn:
                sessions = "\n".join(map(str, conn.execute(
                    "SELECT pid, application_name, state, wait_event_type, wait_event, left(query, 60), "
                    "pg_blocking_pids(pid) FROM pg_stat_activity WHERE datname = current_database()").fetchall()))
        p.send_signal(signal.SIGUSR1)
        try:
            out = p.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[0]
        raise AssertionError(f"still running after {timeout:.0f} s:\n{out.decode()[-20000:]}\nsessions:\n{sessions}") from None


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


def count_of(dsn: str, table: str, where: str = "true") -> int:
    """Rows of a table (0 before scanfill has created it)."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return 0
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
    return int(row[0]) if row else 0


def stored(dsn: str) -> int:
    """Updates stored (import updates aside), 0 before the tables exist."""
    return count_of(dsn, "ledger_updates", "kind <> 'import'")


def follow_until_caught_up(dsn: str, sim: Any, total: int, page_size: int, timeout: float = 60) -> subprocess.Popen[bytes]:
    """`scanfill run --follow` against a growing simulator, once it stopped growing and the copy
    holds all `total` updates; the process is still following (the caller stops it)."""
    p = scanfill("run", "--follow", "--follow-poll", "0.2", "--no-progress", "--concurrency", "4",
                 "--page-size", str(page_size), dsn=dsn, urls=sim.urls)  # fmt: skip
    wait_for(lambda: sim.stats()["grown"], timeout=timeout, what="the ledger to stop growing")
    wait_for(lambda: stored(dsn) == total, timeout=timeout, what="the follower to catch up")
    return p
