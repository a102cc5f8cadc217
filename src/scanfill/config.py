"""Settings resolved once from flags and the environment (the way httpx keeps `_config.py` apart
from its client): the database, the scans, the page size, the static partition, and every secret
those carry, so that any message can be scrubbed of all of them.

Environment: `DATABASE_URL` / `SUPABASE_DB_URL` (after `--dsn`), `SCAN_URL` (comma-separated) /
`BASE_URL` (after `--scan-url`), `BACKFILL_PAGE_SIZE` (after `--page-size`), `WORKER_ID` /
`WORKER_COUNT` (the guide's static partition).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from psycopg import conninfo

from scanfill.coord.slices import Partition
from scanfill.db import DSN_ENV, Database, resolve_dsn, scrub
from scanfill.errors import ConfigError
from scanfill.scan.client import ScanConfig

SCAN_ENV = ("SCAN_URL", "BASE_URL")


def database(dsn: str | None, schema: str) -> Database:
    return Database(resolve_dsn(dsn), schema)


def scan_urls(urls: tuple[str, ...]) -> tuple[str, ...]:
    found = [u.strip() for item in urls for u in item.split(",") if u.strip()]
    if not found:
        env = next((os.environ[n] for n in SCAN_ENV if os.environ.get(n)), "")
        found = [u.strip() for u in env.split(",") if u.strip()]
    if not found:
        raise ConfigError("no scan URL: pass --scan-url https://HOST/api/scan or set SCAN_URL")
    for u in found:
        if not u.startswith(("http://", "https://")):
            raise ConfigError(f"scan URL {urlsplit(u).hostname or '?'}... must start with http:// or https://")
    return tuple(u.rstrip("/") for u in found)


def scans(urls: tuple[str, ...], timeout: float, insecure: bool) -> ScanConfig:
    return ScanConfig(urls=scan_urls(urls), timeout_s=timeout, verify_tls=not insecure)


def page_size(flag: int | None) -> int:
    if flag is not None:
        return flag
    try:
        size = int(os.environ.get("BACKFILL_PAGE_SIZE", "1000"))
    except ValueError:
        raise ConfigError("BACKFILL_PAGE_SIZE must be a whole number 1..1000") from None
    if not 1 <= size <= 1000:
        raise ConfigError("BACKFILL_PAGE_SIZE must be 1..1000 (Scan rejects larger pages)")
    return size


def partition() -> Partition:
    if not os.environ.get("WORKER_COUNT"):
        return Partition()
    try:
        p = Partition(int(os.environ.get("WORKER_ID", "0")), int(os.environ["WORKER_COUNT"]))
    except ValueError:
        raise ConfigError("WORKER_ID and WORKER_COUNT must be whole numbers") from None
    if not 0 <= p.worker_id < p.worker_count:
        raise ConfigError("WORKER_ID must be in 0..WORKER_COUNT-1")
    return p


def secrets(dsn_flag: str | None = None) -> list[str]:
    """Every password and token the settings carry: --dsn, the DSN variables, scan URL credentials."""
    out: list[str] = []
    for dsn in (dsn_flag, *(os.environ.get(n) for n in DSN_ENV)):
        if dsn:
            try:
                pw = conninfo.conninfo_to_dict(dsn).get("password")
            except Exception:  # an unparsable DSN: its own error says so, without its text
                pw = None
            if pw:
                out.append(str(pw))
    for item in (*(os.environ.get(n) or "" for n in SCAN_ENV),):
        for u in item.split(","):
            parts = urlsplit(u.strip())
            out += [s for s in (parts.password, parts.username if parts.password else None) if s]
    return out


def scrub_all(message: str, dsn_flag: str | None = None) -> str:
    for secret in secrets(dsn_flag):
        message = message.replace(secret, "***")
    return scrub(message, dsn_flag)


def check_listen(addr: str, port: int, count: int = 1) -> None:
    """Refuse up front (not after planning, not with a traceback) a metrics address that cannot
    be listened on: a port in use, an address that does not resolve or is not this machine's.
    `count` ports from `port` on (one per worker process)."""
    import socket

    for p in range(port, port + max(1, count)):
        try:
            infos = socket.getaddrinfo(addr, p, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"--metrics-addr {addr!r} does not resolve ({exc.strerror or exc}): pass an address of "
                              "this machine, e.g. 127.0.0.1 or 0.0.0.0") from None  # fmt: skip
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server does
            try:
                s.bind(where)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {addr}:{p}: {exc.strerror or exc} (another process uses "
                                  "it?); pick another --metrics-port, or 0 for none") from None  # fmt: skip
