"""Shared set-up of the benchmarks: an embedded PostgreSQL, fresh databases, a pre-rendered simulator."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scanfill.embedded import start_embedded


@contextmanager
def postgres() -> Iterator[str]:
    """The DSN of an admin connection to a benchmark server (SCANFILL_BENCH_DSN or embedded)."""
    if os.environ.get("SCANFILL_BENCH_DSN"):
        yield os.environ["SCANFILL_BENCH_DSN"]
        return
    with tempfile.TemporaryDirectory(prefix="scanfill-bench-") as d:
        h = start_embedded(d, max_connections=200)
        try:
            yield h.dsn
        finally:
            h.stop()


def fresh_db(admin: str) -> str:
    name = f"b_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(admin)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def drop_db(admin: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
