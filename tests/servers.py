"""Extra PostgreSQL servers for tests: Debian's PostgreSQL 15 in a throw-away cluster, and an
embedded server a test may crash on purpose."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG15 = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Pg15Cluster:
    """Debian's PostgreSQL 15 in a throw-away cluster that a test may restart (as a managed
    database's maintenance or failover would)."""

    def __init__(self, tcp_port: int | None = None) -> None:
        if not (PG15 / "initdb").exists():
            raise RuntimeError("PostgreSQL 15 binaries not found: `apt-get install postgresql-15`")
        self.tmp = Path(tempfile.mkdtemp(prefix="scanfill-pg15-"))  # under /tmp: reachable by the postgres user
        self.data = self.tmp / "pg15"
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
            shutil.chown(self.data, "postgres")
        subprocess.run(_as_postgres([str(PG15 / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]),
                       check=True, capture_output=True)  # fmt: skip
        listen = "127.0.0.1" if tcp_port else ""
        self.port = tcp_port or free_port()
        self.opts = (f"-c listen_addresses='{listen}' -c unix_socket_directories={self.data} -c port={self.port} "
                     "-c fsync=off -c max_connections=200")  # fmt: skip
        self.dsn = f"postgresql://postgres@/postgres?host={self.data}&port={self.port}"

    def ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(PG15 / "pg_ctl"), "-D", str(self.data), "-o", self.opts, "-w", "-l",
                                     str(self.data / "log"), *args]), check=True, capture_output=True)  # fmt: skip

    def restart(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "restart")

    def close(self) -> None:
        subprocess.run(_as_postgres([str(PG15 / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)  # fmt: skip
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def pg15_cluster(tcp_port: int | None = None) -> Iterator[Pg15Cluster]:
    cluster = Pg15Cluster(tcp_port)
    cluster.ctl("start")
    try:
        yield cluster
    finally:
        cluster.close()


@contextmanager
def debian_pg15(tmp: Path, tcp_port: int | None = None) -> Iterator[str]:
    """A fresh PostgreSQL 15 cluster on a Unix socket; fails loudly when the binaries are missing."""
    with pg15_cluster(tcp_port) as cluster:
        yield cluster.dsn


def kill_postmaster(datadir: Path) -> None:
    """SIGKILL the server: its UNLOGGED tables are emptied by crash recovery at the next start."""
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)


@contextmanager
def pgbouncer(tmp: Path, pg_port: int) -> Iterator[int]:
    """Debian's pgbouncer in transaction mode in front of a TCP PostgreSQL on 127.0.0.1:pg_port."""
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(exe).exists():
        raise RuntimeError("pgbouncer not found: `apt-get install pgbouncer` (.ci/run does)")
    tmp = Path(tempfile.mkdtemp(prefix="scanfill-pgbouncer-"))
    d = tmp / "pgbouncer"
    d.mkdir()
    port = free_port()
    (d / "users.txt").write_text('"postgres" ""\n')
    (d / "pgbouncer.ini").write_text(f"""[databases]
* = host=127.0.0.1 port={pg_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {d / "users.txt"}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
logfile = {d / "pgbouncer.log"}
pidfile = {d / "pgbouncer.pid"}
""")
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        for p in (d, d / "users.txt", d / "pgbouncer.ini"):
            shutil.chown(p, "postgres")
    proc = subprocess.Popen(_as_postgres([exe, str(d / "pgbouncer.ini")]))
    try:
        deadline = __import__("time").monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if __import__("time").monotonic() > deadline or proc.poll() is not None:
                    log = (d / "pgbouncer.log").read_text() if (d / "pgbouncer.log").exists() else ""
                    raise RuntimeError(f"pgbouncer did not start: {log[-2000:]}") from None
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def moto_s3(logdir: Path, secret: str = "x") -> Iterator[dict[str, str]]:
    """moto's standalone S3 server (a real HTTP S3 API on a local port) for the test's life, with
    the usual AWS_* variables set in this process; yields them for child processes. Its log is
    `logdir/moto.log`."""
    import sys

    from procs import wait_for

    port = free_port()
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = open(logdir / "moto.log", "wb")  # noqa: SIM115 (the server's whole life)
    moto = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "scanfill-test", "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        def up() -> bool:
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, timeout=60, what="moto_server to listen")
        yield env
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
