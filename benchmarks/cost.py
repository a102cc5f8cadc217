"""The cost of a row on each side of the wire, measured side by side in one run:

python benchmarks/cost.py --rows 200000 --reps 3

Server: CPU seconds of every PostgreSQL process of the benchmark server (the postmaster's own and
reaped children's times, plus its live background processes, from /proc via psutil) per row
stored, for a raw binary COPY of the same rows from memory (the floor), scanfill's default,
scanfill in bulk-load mode (prepare), scanfill `--update-json envelope`, and the guide's recipe.
Loader: CPU seconds of this process per row for scanfill's default, against the floor of only
decoding the same pages with msgspec (no rows built). Min and median over the repetitions.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import psutil
import psycopg

from common import drop_db, fresh_db, postgres, raw_pages, table
from run import copy_ceiling, decode_pages, guide_run, scanfill_run
from scanfill.coord import schema
from scanfill.db import Database
from scanfill.load.decode import Event, Item, Page
from scanfill.ops import maintenance
from scanfill.sim import Ledger, LedgerConfig, SimConfig, Simulator

_page, _item, _events = (msgspec.json.Decoder(Page), msgspec.json.Decoder(Item),
                         msgspec.json.Decoder(dict[str, Event]))  # fmt: skip


def server_cpu(admin: str) -> float:
    """CPU seconds the server has used so far (live processes plus reaped backends)."""
    with psycopg.connect(admin) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").fetchone()
    assert row is not None
    master = psutil.Process(row[0]).parent()  # the checkpointer lives as long as the server
    t = master.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in master.children():
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def loader_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(admin: str, fn: Callable[[str], int], prepare: bool = False) -> tuple[float, float, int]:
    """(server us/row, loader us/row, rows) of `fn(dsn)`, which returns the rows it stored."""
    dsn = fresh_db(admin)
    schema.init(Database(dsn))
    if prepare:
        maintenance.prepare(Database(dsn), echo=lambda _: None)
    time.sleep(0.5)  # let the setup's own backends exit and be reaped
    s0, l0 = server_cpu(admin), loader_cpu()
    rows = fn(dsn)
    time.sleep(0.5)
    s1, l1 = server_cpu(admin), loader_cpu()
    drop_db(admin, dsn)
    return (s1 - s0) / rows * 1e6, (l1 - l0) / rows * 1e6, rows


def profiled_run(admin: str, url: str) -> dict[str, float]:
    """Loader CPU of one scanfill run, split by thread CPU time: page decoding and framing (on the
    event loop), the commit (COPY and cursor SQL, on the database threads), and the rest of the
    event loop thread (HTTP, asyncio, leases). us per row."""
    import scanfill.load.pipeline as worker_mod  # where pages are decoded
    import scanfill.load.sink as sink_mod

    spent = {"decode": 0.0, "copy": 0.0, "commit": 0.0}

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.thread_time() - t

        return wrapper

    saved = worker_mod.decode_page, sink_mod.Sink.copy_rows, sink_mod.Sink.commit
    worker_mod.decode_page = timed("decode", saved[0])  # type: ignore[assignment]
    sink_mod.Sink.copy_rows = timed("copy", saved[1])  # type: ignore[method-assign]
    sink_mod.Sink.commit = timed("commit", saved[2])  # type: ignore[method-assign]
    try:
        dsn = fresh_db(admin)
        schema.init(Database(dsn))
        l0, m0 = loader_cpu(), time.thread_time()
        rows = scanfill_run(dsn, [url], 16)[1]
        total, main_thread = loader_cpu() - l0, time.thread_time() - m0
        drop_db(admin, dsn)
    finally:
        worker_mod.decode_page, sink_mod.Sink.copy_rows, sink_mod.Sink.commit = saved  # type: ignore[method-assign]
    per = {k: v / rows * 1e6 for k, v in spent.items()}
    return {
        "decode + framing (event loop)": per["decode"],
        "COPY send (database threads)": per["copy"],
        "cursor lock and advance SQL (database threads)": per["commit"] - per["copy"],
        "HTTP, asyncio, leases (rest of the event loop)": (main_thread / rows * 1e6) - per["decode"],
        "other threads and the kernel's share": (total - main_thread) / rows * 1e6 - per["commit"],
        "total": total / rows * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    ledger_cfg = LedgerConfig.for_rows(a.rows, ids=(0,))
    results: dict[str, list[tuple[float, float]]] = {}
    profile: dict[str, list[float]] = {}
    with postgres() as admin, Simulator(SimConfig(ledger=ledger_cfg, prerender=True), mode="process") as sim:
        url = sim.urls[0]
        pages = raw_pages(url, Ledger(ledger_cfg))  # fetched once: every case and floor reads these
        batches = decode_pages(pages)
        page_rows = sum(b.rows for b in batches)

        def decode_alone() -> float:
            """decode_page (typed decode, checks, rounds, COPY framing) of the same pages, alone."""
            t0 = loader_cpu()
            decode_pages(pages)
            return (loader_cpu() - t0) / page_rows * 1e6

        def decode_floor() -> float:
            """Loader floor: only msgspec-decoding the same pages (no rows built), us per row."""
            t0 = loader_cpu()
            for *_, data in pages:  # scanfill's typed structs, payloads left as raw bytes, no rows built
                for raw in _page.decode(data).transactions:
                    item = _item.decode(raw)
                    if item.events_by_id:
                        _events.decode(item.events_by_id)
            return (loader_cpu() - t0) / page_rows * 1e6

        cases: dict[str, tuple[Callable[[str], int], bool]] = {
            "raw binary COPY (floor)": (lambda dsn: (copy_ceiling(dsn, batches, 2), sum(b.rows for b in batches))[1],
                                        False),
            "scanfill default": (lambda dsn: scanfill_run(dsn, [url], 16)[1], False),
            "scanfill bulk-load mode (prepare)": (lambda dsn: scanfill_run(dsn, [url], 16)[1], True),
            "scanfill --update-json envelope": (lambda dsn: scanfill_run(dsn, [url], 16, update_json="envelope")[1],
                                                False),
            "the guide's recipe": (lambda dsn: guide_run(dsn, url)[1], False),
        }  # fmt: skip
        for rep in range(a.reps):
            for name, (fn, prep) in cases.items():
                s_us, l_us, rows = measure(admin, fn, prep)
                results.setdefault(name, []).append((s_us, l_us))
                print(f"rep {rep + 1} {name}: server {s_us:.1f} us/row, loader {l_us:.1f} us/row ({rows:,} rows)",
                      flush=True)  # fmt: skip
            results.setdefault("loader floor: msgspec typed decode only (no rows)", []).append((0.0, decode_floor()))
            results.setdefault("decode_page alone: typed decode, checks, rounds, COPY framing", []).append(
                (0.0, decode_alone()))
            for part, us in profiled_run(admin, url).items():
                profile.setdefault(part, []).append(us)
    floor = min(s for s, _ in results["raw binary COPY (floor)"])
    out: list[list[Any]] = []
    for name, vals in results.items():
        srv, ld = [s for s, _ in vals], [v for _, v in vals]
        out.append([name, f"{min(srv):.1f}", f"{statistics.median(srv):.1f}",
                    f"{min(srv) / floor:.2f}" if min(srv) else "-", f"{min(ld):.1f}", f"{statistics.median(ld):.1f}"])  # fmt: skip
    print(table(["case", "server us/row min", "median", "min vs raw COPY", "loader us/row min", "median"], out))
    print()
    print(table(["where a scanfill run's loader CPU goes", "us/row min", "median"],
                [[k, f"{min(v):.1f}", f"{statistics.median(v):.1f}"] for k, v in profile.items()]))  # fmt: skip


if __name__ == "__main__":
    main()
