"""Shared set-up of the benchmarks: an embedded PostgreSQL, fresh databases, a pre-rendered simulator."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scanfill.embedded import start_embedded
from scanfill.sim import Ledger
from scanfill.timeutil import format_us


class _Item(msgspec.Struct):
    record_time: str


class _Page(msgspec.Struct):
    transactions: list[_Item]


RawPage = tuple[int, str, int, int, bytes]  # migration, synchronizer, at_or_after us, before us, body


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


def alternating(cfg: Any, load: Callable[[str, list[str], bool], tuple[float, int, str]], what: str,
                shown: str) -> str:  # fmt: skip
    """Six loads of `cfg` into fresh databases, alternating with (True) and without (False) what is
    measured, side by side against one simulator: `load(dsn, urls, on)` returns (seconds, rows, the
    `shown` column). The machine is shared and noisy, so the ratio is taken pairwise."""
    from scanfill.sim import SimConfig, Simulator

    lines, rates = [], {True: [], False: []}  # type: ignore[var-annotated]
    with postgres() as admin, Simulator(SimConfig(ledger=cfg, prerender=True), mode="process") as sim:
        dsn = fresh_db(admin)
        load(dsn, sim.urls, True)  # a warm-up, not counted: the first load pays for cold caches on both sides
        drop_db(admin, dsn)
        for on in (True, False, True, False, True, False):
            dsn = fresh_db(admin)
            secs, n, extra = load(dsn, sim.urls, on)
            drop_db(admin, dsn)
            rates[on].append(n / secs)
            lines.append(["kept" if on else "off", f"{n:,}", f"{secs:.1f}", f"{n / secs:,.0f}", extra])
    ratio = [a / b for a, b in zip(rates[True], rates[False], strict=True)]
    return (table([what, "rows", "s", "rows/s", shown], lines) + f"\n\nrows/s with the {what} / without, pairwise: "
            + ", ".join(f"{r:.2f}" for r in ratio) + f" (mean {sum(ratio) / len(ratio):.2f})")  # fmt: skip


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def raw_pages(url: str, ledger: Ledger) -> list[RawPage]:
    """Every updates-before page of the ledger's ranges as served (1000 updates each), newest first."""
    import urllib.request

    from scanfill.timeutil import parse_us

    out = []
    for m, sid, lo, hi in ledger.ranges():
        before = format_us(hi + 1)
        while True:
            body = (f'{{"migration_id":{m},"synchronizer_id":"{sid}","before":"{before}",'
                    f'"at_or_after":"{format_us(lo)}","count":1000}}').encode()  # fmt: skip
            req = urllib.request.Request(url + "/v0/backfilling/updates-before", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req) as r:
                data = r.read()
            items = msgspec.json.decode(data, type=_Page).transactions
            if not items:
                break
            out.append((m, sid, lo, parse_us(before), data))
            before = items[-1].record_time
    return out
