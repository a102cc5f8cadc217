"""The embedded PostgreSQL (pgserver) behind `scanfill demo` and the tests.

Settings that matter for a bulk load are written before the first real start so the demo shows
what a tuned server does; a user's own server is reached with `--dsn` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

BULK_SETTINGS = {
    "synchronous_commit": "off",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "shared_buffers": "512MB",
    "maintenance_work_mem": "512MB",
    "wal_compression": "off",
}


@dataclass
class Embedded:
    dsn: str
    datadir: Path
    _server: Any

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded(datadir: Path | str, max_connections: int = 100, fsync: bool = False) -> Embedded:
    """Start (creating on first use) a pgserver cluster in `datadir` and return its DSN."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    import warnings

    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver

    datadir = Path(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    marker = datadir / "pgdata" / ".scanfill-tuned"
    _remove_stale_pidfile(datadir / "pgdata")
    srv = pgserver.get_server(  # type: ignore[attr-defined]
        datadir / "pgdata", cleanup_mode="stop"
    )
    if not marker.exists():
        with psycopg.connect(srv.get_uri(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
            conn.execute(f"ALTER SYSTEM SET fsync = {'on' if fsync else 'off'}")
            for k, v in BULK_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {k} = '{v}'")
        srv.cleanup()
        marker.touch()
        srv = pgserver.get_server(  # type: ignore[attr-defined]
            datadir / "pgdata", cleanup_mode="stop"
        )
    return Embedded(srv.get_uri(), datadir, srv)


def _remove_stale_pidfile(pgdata: Path) -> None:
    """After a crash the pid file names a dead process; pgserver would then wait for a server that is
    not there instead of starting one (PostgreSQL itself recovers fine once the file is gone)."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
    except PermissionError:
        pass
