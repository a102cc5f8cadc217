"""What a change to the loader costs a backfill, side by side in one run: this tree against an
earlier revision of it, each as a `scanfill run` process of its own, alternating into fresh databases
of one embedded PostgreSQL against one simulator (served by this tree).

python benchmarks/release_ab.py --rev 3eb209d --rows 300000

`on` is this tree, `off` the revision (checked out once into a temporary worktree). Rows/s come from
the copy's own count and the process's wall time; loader CPU per row from the child's rusage.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from common import alternating
from scanfill.sim import LedgerConfig, MigrationSpec

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="3eb209d", help="the earlier revision (default: before issue 28)")
    ap.add_argument("--rows", type=int, default=300_000, help="about this many ledger rows (updates + events)")
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    updates = max(a.rows // 9, 1000)
    cfg = LedgerConfig(seed=7, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", updates // 2),
                                           MigrationSpec(1, "2024-06-26T21:08:00Z", updates - updates // 2)))
    with tempfile.TemporaryDirectory(prefix="scanfill-ab-") as d:
        old = Path(d) / "tree"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(old), a.rev], check=True,
                       capture_output=True)  # fmt: skip
        try:
            trees = {True: HERE / "src", False: old / "src"}

            def load(dsn: str, urls: list[str], on: bool) -> tuple[float, int, str]:
                env = {**os.environ, "PYTHONPATH": str(trees[on]), "DATABASE_URL": dsn, "SCAN_URL": ",".join(urls)}
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, "-m", "scanfill.cli", "run", "--no-progress", "--concurrency",
                                    str(a.concurrency)], env=env, capture_output=True, text=True)  # fmt: skip
                secs = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                assert p.returncode == 0 and "history complete" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
                with psycopg.connect(dsn) as conn:
                    n = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                            for t in ("ledger_updates", "ledger_events"))
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                return secs, n, f"{cpu / n * 1e6:.1f}"

            print(alternating(cfg, load, f"tree (off: {a.rev})", "loader CPU us/row"))
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
