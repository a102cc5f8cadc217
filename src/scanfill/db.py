"""Connecting to PostgreSQL: where the DSN comes from, how it is shown, and what a failure says."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo, sql

from scanfill.errors import ConfigError, DatabaseUnavailable

DSN_ENV = ("DATABASE_URL", "SUPABASE_DB_URL")
Conn = psycopg.Connection[tuple[Any, ...]]  # the one connection type: rows are plain tuples



def resolve_dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    for name in DSN_ENV:
        if os.environ.get(name):
            return os.environ[name]
    raise ConfigError(
        "no database given: pass --dsn postgresql://USER@HOST/DB, or set DATABASE_URL (or SUPABASE_DB_URL)"
    )


def redact(dsn: str) -> str:
    """The DSN with any password removed entirely (not masked: not even its length shows)."""
    try:
        info = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn).split("?")[0]
    info.pop("password", None)
    host = str(info.get("host") or "localhost")
    port = info.get("port")
    user = str(info.get("user") or "")
    where = f"{host}:{port}" if port else host
    return f"postgresql://{user + '@' if user else ''}{where}/{info.get('dbname') or ''}"


def scrub(message: str, dsn: str | None) -> str:
    """Remove a password from an error text that may quote the connection string."""
    if dsn:
        try:
            pw = conninfo.conninfo_to_dict(dsn).get("password")
        except psycopg.ProgrammingError:
            pw = None
        if pw:
            message = message.replace(str(pw), "***")
    return re.sub(r"(password=)\S+", r"\1***", message)


@dataclass(frozen=True)
class Database:
    """Where the ledger lives: a DSN and the schema that holds scanfill's tables."""

    dsn: str
    schema: str = "public"

    def __post_init__(self) -> None:
        if "%" in self.schema:
            # psycopg reads % in a statement as a parameter marker: every statement with parameters on
            # such a schema would fail (nothing is injected, but nothing would work); refuse it at once
            raise ConfigError(f"--schema {self.schema!r}: a schema name containing % is not supported (the driver "
                              "reads % as a query parameter). Choose a name without %.")  # fmt: skip

    def connect(self, autocommit: bool = False, application: str = "scanfill") -> Conn:
        """A connection safe behind a transaction-mode pooler: no prepared statements, no session SETs."""
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=autocommit,
                prepare_threshold=None,
                application_name=application,
                connect_timeout=15,
            )
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cannot connect to {redact(self.dsn)}: {scrub(str(exc).strip(), self.dsn)}\n"
                "Check the host, port, user and password in --dsn / DATABASE_URL, and that the server is running."
            ) from None
        return conn

    def qualified(self, name: str) -> str:
        """`"schema"."name"` as text for `to_regclass`, quoted whatever the names hold."""
        return ".".join('"' + part.replace('"', '""') + '"' for part in (self.schema, name))

    def t(self, name: str) -> sql.Composed:
        """A schema-qualified table identifier."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    @property
    def shown(self) -> str:
        return redact(self.dsn)


def _touch(conn: Conn) -> None:
    """Nothing: calling it connects a pool slot."""


def _is_outage(exc: BaseException) -> bool:
    """Errors a restart or failover of the server causes (the connection is gone or refused),
    as opposed to an error of the statement itself."""
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # no SQLSTATE: the connection is gone; 08: connection exceptions; 57P01-03: shutting down,
        # crash recovery, not accepting connections yet. A full disk (53100) is not an outage.
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    return isinstance(exc, ConfigError) and "cannot connect" in str(exc)


class DbPool:
    """A few connections used from worker threads, for an asyncio process (worker or follower).

    A database restart or failover is ridden out: a call whose connection broke is run again on a
    fresh connection, with backoff, for up to `retry_s` seconds (said once in the log), and only then
    fails with one clear message. Running a call again is safe because every write scanfill makes
    is checked under a row lock (a commit that did land before the connection broke is seen as
    "the cursor moved", and the slice is resumed from the database).
    """

    def __init__(self, db: Database, size: int, application: str, retry_s: float = 300.0,
                 after_outage: Any = None, stop: Any = None) -> None:  # fmt: skip
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        self.db = db
        self.size = size
        self.application = application
        self.retry_s = retry_s
        self._queue: asyncio.Queue[Conn | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=size + 1, thread_name_prefix="scanfill-db")
        self._all: list[Conn] = []
        self.outages = 0
        self.after_outage = after_outage  # called with a fresh connection after an outage; may raise
        self.stop = stop  # an asyncio.Event: once set (Ctrl+C), an outage is not waited out any longer

    async def open(self) -> None:
        """Connect every slot now (a slot that connected only after an outage would skip the
        `after_outage` check); an outage at start is ridden out like any other."""
        for _ in range(self.size):
            self._queue.put_nowait(None)
        for _ in range(self.size):  # the queue is FIFO: call k connects slot k
            await self.call(_touch)

    def _connect(self) -> Conn:
        conn = self.db.connect(autocommit=True, application=self.application)
        self._all.append(conn)
        return conn

    async def call(self, fn: Any, *args: Any) -> Any:
        import asyncio
        import logging
        import random
        import time

        loop = asyncio.get_running_loop()
        deadline: float | None = None
        delay = 0.2
        conn = await self._queue.get()
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await loop.run_in_executor(self._executor, self._connect)
                        if deadline is not None and self.after_outage is not None:
                            await loop.run_in_executor(self._executor, self.after_outage, conn)
                    return await loop.run_in_executor(self._executor, fn, conn, *args)
                except Exception as exc:
                    if not _is_outage(exc):
                        raise
                    if conn is not None:
                        conn.close()
                    conn = None
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self.retry_s
                        self.outages += 1
                        logging.getLogger("scanfill.db").warning(
                            "database unavailable (%s); retrying for up to %.0f s",
                            scrub(str(exc).strip().splitlines()[0], self.db.dsn), self.retry_s)  # fmt: skip
                    if now >= deadline or (self.stop is not None and self.stop.is_set()):
                        raise DatabaseUnavailable(
                            f"the database at {redact(self.db.dsn)} stayed unavailable for {self.retry_s:.0f} s "
                            f"(--db-retry): {scrub(str(exc).strip(), self.db.dsn)}. Nothing past the last "
                            "committed page was stored; run the same command again when it is back."
                        ) from None
                    pause = min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - now))
                    if self.stop is None:
                        await asyncio.sleep(pause)
                    else:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stop.wait(), timeout=pause)
                    delay = min(delay * 2, 5.0)
        finally:
            self._queue.put_nowait(conn)

    def close(self) -> None:
        for c in self._all:
            c.close()
        self._executor.shutdown(wait=False)
