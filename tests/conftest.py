"""Shared fixtures: one real PostgreSQL server per session (embedded pgserver unless
SCANFILL_TEST_DSN names another), a fresh database per test, and simulators over real HTTP."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dsn = os.environ.get("SCANFILL_TEST_DSN")
    if dsn:
        yield dsn
        return

    from scanfill.embedded import start_embedded

    handle = start_embedded(tmp_path_factory.mktemp("pg"), max_connections=200)
    yield handle.dsn
    handle.stop()


@pytest.fixture
def db(pg_admin_dsn: str) -> Iterator[str]:
    """A DSN of a new, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(pg_admin_dsn)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
