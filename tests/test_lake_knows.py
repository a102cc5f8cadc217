"""A database loaded with `run --lake` knows its ledger is in the lake (issue 29, items 4 and 5):
every command that would read or write the empty ledger tables instead refuses in one line naming
the lake and the command that works, `verify` and `status` say where the ledger is, and
`abort --truncate` leaves nothing that makes the next `run --lake` store a row twice (real
PostgreSQL, the simulator over HTTP, `scanfill` as processes)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from procs import finish, scanfill
from scanfill.lake.layout import Lake
from scanfill.lake.read import table
from scanfill.sim import Ledger, SimConfig, Simulator
from shared import SMALL, drop_database, new_database

RUN = ("--no-progress", "--concurrency", "3")


def _counts(db: str) -> tuple[int, ...]:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM ledger_updates), (SELECT count(*) FROM ledger_events), "
                           "(SELECT count(*) FROM contracts), (SELECT count(*) FROM amulet_transfers), "
                           "(SELECT count(*) FROM lake_files)").fetchone()  # fmt: skip
    assert row is not None
    return tuple(int(x) for x in row)


def _lake_updates(root: str) -> list[tuple[object, ...]]:
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    return con.execute("SELECT update_id, migration_id, synchronizer_id, epoch_us(record_time), kind, event_count "
                       "FROM u").fetchall()  # fmt: skip


def _refused(out: str, *names: str) -> bool:
    """One line, an error naming the lake and what works."""
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in names)


def test_a_lake_loaded_database_refuses_what_would_split_or_empty_it_and_truncates_with_its_lake(
        db: str, pg_admin_dsn: str, tmp_path: Path) -> None:  # fmt: skip
    root = str(tmp_path / "lake")
    other = str(tmp_path / "other-lake")
    ledger = Ledger(SMALL)
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        p = scanfill("run", *RUN, "--lake", root, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0 and "history complete" in out, out
        before = _counts(db)
        assert before[:2] == (0, 0) and before[2] > 0 and before[4] > 0, before  # rows in the lake, state in PostgreSQL

        # plain verify: checks what the database holds, names the lake, marks no day from the empty tables
        v = scanfill("verify", "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
        assert v.returncode == 0 and all(c["ok"] for c in checks), checks
        assert f"scanfill verify --lake {root}" in checks[0]["detail"], checks[0]

        # every command that would act on the ledger tables instead: refused, nothing done (in parallel)
        cases = {
            "rebuild-state": (("rebuild-state",), ("verify --lake",)),
            "refetch": (("run", *RUN, "--refetch", "2024-06-24T00:00:00Z/2024-06-25T00:00:00Z"), ("run --lake",)),
            "run": (("run", *RUN), (f"scanfill run --lake {root}",)),
            "follow": (("follow", "--once"), (f"scanfill follow --lake {root}",)),
            "rewind": (("follow", "--once", "--rewind"), (f"scanfill follow --lake {root}",)),
            "second lake": (("run", *RUN, "--lake", other), (f"scanfill run --lake {root}",)),
            "against-scan": (("verify", "--against-scan"), (f"scanfill verify --lake {root} --against-scan",)),
            "prepare": (("prepare",), ("run --lake",)),
            "export elsewhere": (("export", "--to", other), (other, f"scanfill export --to {root}")),
            "restore": (("restore",), ("verify --lake",)),
            "truncate": (("abort", "--truncate", "--yes", "--wait", "5"), (f"abort --truncate --lake {root}",)),
            "truncate another lake": (("abort", "--truncate", "--yes", "--lake", other), (other,)),
        }
        procs = {k: scanfill(*args, dsn=db, urls=sim.urls) for k, (args, _) in cases.items()}
        outs = {k: finish(p, 120, db) for k, p in procs.items()}
        for k, (_, names) in cases.items():
            assert procs[k].returncode == 2 and _refused(outs[k], root, *names), (k, outs[k])
        assert _counts(db) == before  # contract state, transfer facts and the lake's bookkeeping untouched
        assert not (tmp_path / "other-lake").exists()

        # status says where the ledger is; no day became a gap
        s = scanfill("status", "--json", dsn=db, urls=sim.urls)
        st = json.loads(finish(s, 60, db))
        assert st["ledger"]["where"] == "lake" and st["ledger"]["lakes"][0]["lake"] == root, st["ledger"]
        assert st["ledger"]["lakes"][0]["updates"] == ledger.total_updates() and st["days"]["gap"] == 0, st
        text = finish(scanfill("status", dsn=db, urls=sim.urls), 60, db)
        assert f"ledger: in the lake {root}" in " ".join(text.split()), text
        found = json.loads(finish(scanfill("doctor", "--json", dsn=db, urls=sim.urls), 60, db))
        where = [f for f in found if f["check"] == "where the ledger is"]
        assert where and f"in the lake {root} (" in where[0]["finding"] and "verify --lake" in where[0]["fix"], found

        # abort --truncate naming the lake: the lake's tables go with the rest, and the next run stores each row once
        a = scanfill("abort", "--truncate", "--yes", "--wait", "5", "--lake", root + "/", dsn=db, urls=sim.urls)
        out = finish(a, 120, db)
        assert a.returncode == 0 and f"lake {root}: scanfill's tables there removed" in out, out
        assert f"scanfill run --lake {root}" in out and not (tmp_path / "lake" / "updates").exists(), out
        assert _counts(db) == (0, 0, 0, 0, 0)
        p = scanfill("run", *RUN, "--lake", root, dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
        assert p.returncode == 0 and "history complete" in out, out
        v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
        assert v.returncode == 0 and all(c["ok"] for c in checks), checks

        # another database: not into a lake holding rows it did not write, nor beside its own ledger tables
        db2 = new_database(pg_admin_dsn)
        try:
            p = scanfill("run", *RUN, "--lake", root + "/", dsn=db2, urls=sim.urls)
            out = finish(p, 120, db2)
            assert p.returncode == 2 and _refused(out, root, f"holds {ledger.total_updates():,} updates this database did not write"), out
            p = scanfill("run", *RUN, dsn=db2, urls=sim.urls)
            out = finish(p, 240, db2)
            assert p.returncode == 0 and "history complete" in out, out
            p = scanfill("run", *RUN, "--lake", other, dsn=db2, urls=sim.urls)
            out = finish(p, 120, db2)
            assert p.returncode == 2 and _refused(out, other, f"scanfill export --to {other}"), out
            assert _counts(db2)[4] == 0 and not (tmp_path / "other-lake").exists()
        finally:
            drop_database(pg_admin_dsn, db2)
    got = _lake_updates(root)
    want = [(h.update_id, h.migration_id, h.synchronizer_id, h.record_us, h.kind, h.event_count)
            for h in ledger.expected_all()]  # fmt: skip
    assert len(got) == len(want) == ledger.total_updates() and set(got) == set(want)  # exactly once
    assert _counts(db)[2:4] == before[2:4]  # contract state and transfer facts derived again, the same


def test_abort_removes_only_scanfills_tables_under_the_lakes_prefix_on_a_real_s3_server(tmp_path: Path) -> None:
    """`abort --truncate --lake s3://...`'s removal on moto's standalone S3 server (real HTTP): every
    object of the lake's tables and manifests goes (more than one listing page), nothing else in
    the bucket does, and a second removal finds nothing."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    from procs import wait_for
    from scanfill.lake.known import _remove_tables

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 (the server's whole life)
    moto = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "scanfill-test", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        def up() -> bool:
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, timeout=60, what="moto_server to listen")
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lake-bucket")
        ours = [f"canton/updates/migration_id=0/record_date=2024-06-24/part-{k}.parquet" for k in range(1005)]
        ours += ["canton/updates/_delta_log/00000000000000000000.json", "canton/events/_delta_log/0.json",
                 "canton/_manifests/updates/migration_id=0/record_date=2024-06-24.json", "canton/contracts/x.parquet"]
        kept = ["canton/notes/updates/readme.txt", "canton/updates-old/x", "other/updates/x", "cantonx/events/y",
                "canton/README"]  # fmt: skip
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:  # more than one page of a listing and of a batch delete
            list(pool.map(lambda key: s3.put_object(Bucket="lake-bucket", Key=key, Body=b"1"), ours + kept))
        assert _remove_tables(Lake("s3a://lake-bucket/canton/")) == len(ours)
        left = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-bucket")
                      for o in page.get("Contents", []))  # fmt: skip
        assert left == sorted(kept)
        assert _remove_tables(Lake("s3://lake-bucket/canton")) == 0
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
