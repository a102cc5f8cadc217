"""Extra PostgreSQL servers for tests: Debian's PostgreSQL 15 in a throw-away cluster, and an
embedded server a test may crash on purpose."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG15 = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def debian_pg15(tmp: Path) -> Iterator[str]:
    """A fresh PostgreSQL 15 cluster on a Unix socket; fails loudly when the binaries are missing."""
    if not (PG15 / "initdb").exists():
        raise RuntimeError("PostgreSQL 15 binaries not found: `apt-get install postgresql-15` (.ci/run does)")
    data = tmp / "pg15"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(PG15 / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
                   check=True, capture_output=True)  # fmt: skip
    opts = f"-c listen_addresses='' -c unix_socket_directories={data} -c port={port} -c fsync=off"
    subprocess.run(_as_postgres([str(PG15 / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l",
                                 str(data / "log"), "start"]), check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://postgres@/postgres?host={data}&port={port}"
    finally:
        subprocess.run(_as_postgres([str(PG15 / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)  # fmt: skip


def kill_postmaster(datadir: Path) -> None:
    """SIGKILL the server: its UNLOGGED tables are emptied by crash recovery at the next start."""
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
