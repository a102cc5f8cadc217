"""Connecting to PostgreSQL: where the DSN comes from, how it is shown, and what a failure says."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo, sql

from scanfill.errors import ConfigError

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

    def t(self, name: str) -> sql.Composed:
        """A schema-qualified table identifier."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    @property
    def shown(self) -> str:
        return redact(self.dsn)
