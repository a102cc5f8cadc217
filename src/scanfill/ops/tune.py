"""`scanfill tune`: the server settings that matter for a bulk load, with a reason for each."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import psycopg

from scanfill.db import Conn, Database

MB = 1024 * 1024
GB = 1024 * MB


@dataclass
class Advice:
    name: str
    current: str
    suggested: str
    why: str
    needs_restart: bool

    @property
    def changes(self) -> bool:
        return _norm(self.current) != _norm(self.suggested)


def _norm(v: str) -> str:
    return v.replace(" ", "").lower()


def _fmt(nbytes: int) -> str:
    return f"{nbytes // GB}GB" if nbytes >= GB and nbytes % GB == 0 else f"{max(1, nbytes // MB)}MB"


def server_memory(conn: Conn) -> int | None:
    """RAM of the server's machine, when it is this machine (a socket or loopback connection)."""
    host = conn.info.host
    if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")):
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def advise(db: Database, memory: int | None = None, connections: int = 16) -> tuple[list[Advice], int]:
    with db.connect(autocommit=True, application="scanfill tune") as conn:
        ram = memory or server_memory(conn) or 8 * GB
        rows = conn.execute(
            "SELECT name, current_setting(name), context FROM pg_settings WHERE name = ANY(%s)",
            (["shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size", "max_wal_size",
              "checkpoint_timeout", "synchronous_commit", "wal_compression", "max_parallel_maintenance_workers"],),
        ).fetchall()  # fmt: skip
    cur = {n: (v, ctx) for n, v, ctx in rows}
    shared = min(8 * GB, ram // 4)
    wanted = [
        ("shared_buffers", _fmt(shared), "25% of RAM (the guide's 8GB at most): the working set of COPY and index builds"),
        ("effective_cache_size", _fmt(ram * 3 // 4), "75% of RAM: tells the planner how much the OS caches"),
        ("maintenance_work_mem", _fmt(min(2 * GB, ram // 8)),
         "index rebuilds after the load sort in memory; each parallel build gets its share"),
        ("work_mem", _fmt(max(16 * MB, min(256 * MB, ram // (connections * 8)))),
         "per sort per connection: the guide's 256MB is only safe with few connections"),
        ("max_wal_size", "16GB" if (shutil.disk_usage("/").free > 64 * GB) else "4GB",
         "fewer checkpoints while bulk loading (bounded by free disk)"),
        ("checkpoint_timeout", "30min", "fewer full-page writes during the load"),
        ("synchronous_commit", "off",
         "safe for a backfill: a crash loses only the last commits, and their cursors with them, so they are refetched"),
    ]  # fmt: skip
    advice = [
        Advice(n, cur.get(n, ("?", ""))[0], v, why, cur.get(n, ("", ""))[1] == "postmaster") for n, v, why in wanted
    ]
    return advice, ram


def apply(db: Database, advice: list[Advice]) -> list[str]:
    """ALTER SYSTEM + reload; returns the settings that only take effect after a restart."""
    restart = []
    with db.connect(autocommit=True, application="scanfill tune") as conn:
        for a in advice:
            if a.changes:
                conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    psycopg.sql.Identifier(a.name), psycopg.sql.Literal(a.suggested)))  # fmt: skip
                if a.needs_restart:
                    restart.append(a.name)
        conn.execute("SELECT pg_reload_conf()")
    return restart
