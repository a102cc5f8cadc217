"""`scanfill export` to a Delta Lake and `verify --lake`, read back by real engines (DuckDB through
the Delta log's committed files, chDB's ClickHouse over the same files), against PostgreSQL and
the simulator (real PostgreSQL, the simulator over HTTP, `scanfill` as processes)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbcheck import assert_db_matches
from procs import finish, scanfill, wait_for
from scanfill.lake.layout import Lake
from scanfill.lake.read import add_actions, table
from scanfill.sim import Ledger, SimConfig, Simulator
from shared import DAYS, SMALL

RUN = ("--no-progress", "--concurrency", "3")


def pg_rows(db: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    with psycopg.connect(db) as conn:
        u = conn.execute("SELECT update_id, migration_id, synchronizer_id, (extract(epoch FROM record_time) * 1e6)"
                         "::bigint, kind, event_count, update_json::text FROM ledger_updates").fetchall()
        e = conn.execute("SELECT event_id, update_id, migration_id, (extract(epoch FROM record_time) * 1e6)::bigint, "
                         "event_type, contract_id, payload::text, signatories FROM ledger_events").fetchall()
    return set(u), {(*r[:7], tuple(r[7]) if r[7] is not None else None) for r in e}


def duck_rows(root: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    con.register("e", table(Lake(root), "events").to_pyarrow_dataset())
    u = con.execute("SELECT update_id, migration_id, synchronizer_id, epoch_us(record_time), kind, event_count, "
                    "update_json FROM u").fetchall()
    e = con.execute("SELECT event_id, update_id, migration_id, epoch_us(record_time), event_type, contract_id, payload, "
                    "signatories FROM e").fetchall()
    return u, [(*r[:7], tuple(r[7]) if r[7] is not None else None) for r in e]


def export(db: str, urls: list[str], root: str) -> str:
    p = scanfill("export", "--to", root, dsn=db, urls=urls)
    out = finish(p, 240, db)
    assert p.returncode == 0, out
    return out


def test_an_export_reads_back_exactly_in_duckdb_and_clickhouse_and_twice_writes_nothing(db: str,
                                                                                        tmp_path: Path) -> None:
    import chdb

    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert finish(p := scanfill("run", *RUN, "--import-updates", dsn=db, urls=sim.urls), 240, db) and p.returncode == 0
        out = export(db, sim.urls, root)
        assert "exported" in out
        versions = {t: table(Lake(root), t).version() for t in ("updates", "events")}
        files = sorted(add_actions(table(Lake(root), "updates"))["path"])
        again = export(db, sim.urls, root)
        v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
        nowhere = scanfill("verify", "--lake", str(tmp_path / "no-lake-here"), "--json", dsn=db, urls=sim.urls)
        said = json.loads(finish(nowhere, 120, db))
    assert nowhere.returncode == 1 and "no Delta table there: run `scanfill export --to" in said[0]["detail"], said
    assert_db_matches(db, Ledger(SMALL), imports=True)  # the copy the lake must equal
    assert "nothing changed" in again and "contract state" in out
    with psycopg.connect(db) as conn:
        want_c = set(conn.execute("SELECT contract_id, template_id, created_pos, archived_pos, "
                                  "coalesce(payload_exact::text, payload::text) FROM contracts").fetchall())  # fmt: skip
    import duckdb

    con = duckdb.connect()
    con.register("c", table(Lake(root), "contracts").to_pyarrow_dataset())
    got_c = con.execute("SELECT contract_id, template_id, created_pos, archived_pos, payload FROM c").fetchall()
    assert len(got_c) == len(want_c) > 0 and set(got_c) == want_c  # the payloads too, exactly as stored
    assert {t: table(Lake(root), t).version() for t in ("updates", "events")} == versions
    assert sorted(add_actions(table(Lake(root), "updates"))["path"]) == files
    assert v.returncode == 0 and all(c["ok"] for c in checks), checks
    # DuckDB, through the Delta log: every row exactly once, microsecond record times, the JSON as stored
    want_u, want_e = pg_rows(db)
    got_u, got_e = duck_rows(root)
    assert len(got_u) == len(want_u) and set(got_u) == want_u
    assert len(got_e) == len(want_e) and set(got_e) == want_e
    # Hive partitions, import updates in their own partition per migration
    parts = {(p.split("/")[0], p.split("/")[1]) for p in files}
    assert ("migration_id=4", "record_date=0001-01-01") in parts and ("migration_id=0", "record_date=2024-06-24") in parts
    # ClickHouse (chDB) over the committed files only, with the manifests' sha256 checked by hand
    union = " UNION ALL ".join(f"SELECT update_id, migration_id, event_count FROM file('{root}/updates/{p}', Parquet, "
                               "'update_id String, migration_id Int64, event_count Int32')" for p in files)  # fmt: skip
    got = chdb.query(f"SELECT count(), uniqExact(update_id, migration_id), sum(event_count) FROM ({union})", "CSV")
    assert got.data().strip() == f"{len(want_u)},{len(want_u)},{len(want_e)}", got.data()
    import hashlib

    for m in (tmp_path / "lake" / "_manifests" / "updates").rglob("*.json"):
        doc = json.loads(m.read_text())
        assert doc["rows"] == sum(f["rows"] for f in doc["files"])
        for f in doc["files"]:
            assert hashlib.sha256((tmp_path / "lake" / f["path"]).read_bytes()).hexdigest() == f["sha256"]


def test_an_export_killed_midway_and_run_again_is_exact_and_only_changed_days_are_written_again(db: str,
                                                                                                tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=DAYS)) as sim:
        assert finish(p := scanfill("run", *RUN, dsn=db, urls=sim.urls), 240, db) and p.returncode == 0
        k = scanfill("export", "--to", root, dsn=db, urls=sim.urls)
        wait_for(lambda: _exported(db) >= 2, timeout=120, what="two partitions exported")
        k.send_signal(signal.SIGKILL)
        k.wait(timeout=60)
        out = export(db, sim.urls, root)
        assert "exported" in out
        # a day loaded again (refetch): only its partition is written again
        before = table(Lake(root), "updates").version()
        assert finish(p := scanfill("run", *RUN, "--refetch", "2024-06-22T00:00:00Z/2024-06-23T00:00:00Z", dsn=db,
                                    urls=sim.urls), 240, db) and p.returncode == 0  # fmt: skip
        out = export(db, sim.urls, root)
        v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
    assert "exported 1 partition(s)" in out, out
    dt = table(Lake(root), "updates")
    written = [json.loads(h["scanfill"])["record_date"] for h in dt.history() if h.get("version", 0) > before
               and "scanfill" in h]  # fmt: skip
    assert written == ["2024-06-22"], written
    assert v.returncode == 0 and all(c["ok"] for c in checks), checks
    want_u, want_e = pg_rows(db)
    got_u, got_e = duck_rows(root)
    assert len(got_u) == len(want_u) and set(got_u) == want_u and len(got_e) == len(want_e)
    assert_db_matches(db, Ledger(DAYS))


def _exported(db: str) -> int:
    from procs import count_of

    return count_of(db, "lake_exports")


def lake_snapshot(root: str) -> tuple[list[tuple[str, int, int]], dict[tuple[str, int], int]]:
    """(update_id, migration_id, event_count) of every update, and events per update, as a reader
    following the Delta log sees them: the updates table read first, then the events table."""
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    ups = con.execute("SELECT update_id, migration_id, event_count FROM u").fetchall()
    con.register("e", table(Lake(root), "events").to_pyarrow_dataset())
    evs = dict(((uid, m), n) for uid, m, n in con.execute("SELECT update_id, migration_id, count(*) FROM e GROUP BY 1, 2"
                                                            ).fetchall())  # fmt: skip
    return ups, evs


def test_a_run_into_the_lake_with_kills_is_exact_and_readers_never_see_a_partial_page(db: str, tmp_path: Path) -> None:
    """`run --lake`: workers SIGKILLed at random moments, the run resumed; the lake then equals the
    simulator's ledger exactly (DuckDB), and a reader polling the lake during the load never saw
    an update twice or an update without all its events."""
    import random
    import threading

    from procs import loaded
    from scanfill.sim import FaultConfig

    root = str(tmp_path / "lake")
    ledger = Ledger(SMALL)
    total = ledger.total_updates()
    seen: list[str] = []  # what the reader found wrong
    reads = [0]
    stop = threading.Event()

    def reader() -> None:
        from scanfill.lake.read import exists

        while not stop.is_set():
            if not (exists(Lake(root), "updates") and exists(Lake(root), "events")):
                continue
            ups, evs = lake_snapshot(root)
            reads[0] += 1
            if len(ups) != len({(u, m) for u, m, _ in ups}):
                seen.append(f"an update twice in a snapshot of {len(ups)}")
            partial = [u for u, m, n in ups if evs.get((u, m), 0) != n]
            if partial:
                seen.append(f"{len(partial)} update(s) without all their events, e.g. {partial[0]}")

    rnd = random.Random(3)
    args = ("run", *RUN, "--import-updates", "--lake", root, "--page-size", "20", "--batch-rows", "40", "--lease", "2")
    with Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(latency_ms=10, rate_503=0.05))) as sim:
        assert finish(scanfill("init", dsn=db, urls=sim.urls), 60, db) is not None
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            for _ in range(2):
                victim = scanfill(*args, dsn=db, urls=sim.urls)
                floor = loaded(db)
                wait_for(lambda: loaded(db) >= floor + rnd.randint(total // 8, total // 4), timeout=120,  # noqa: B023
                         what="progress before the kill")  # fmt: skip
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=60)
            p = scanfill(*args, dsn=db, urls=sim.urls)
            out = finish(p, 240, db)
            assert p.returncode == 0 and "history complete" in out, out
        finally:
            stop.set()
            t.join(60)
        v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
    assert not seen, seen[:5]
    assert reads[0] > 3  # the reader really read while loading
    assert v.returncode == 0 and all(c["ok"] for c in checks), checks
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    got = con.execute("SELECT update_id, migration_id, synchronizer_id, epoch_us(record_time), kind, event_count FROM u "
                      "WHERE kind <> 'import'").fetchall()  # fmt: skip
    want = [(h.update_id, h.migration_id, h.synchronizer_id, h.record_us, h.kind, h.event_count)
            for h in ledger.expected_all()]  # fmt: skip
    assert len(got) == len(want) == total and set(got) == set(want)
    imports = con.execute("SELECT count(*), count(DISTINCT (update_id, migration_id)) FROM u WHERE kind = 'import'"
                          ).fetchone()  # fmt: skip
    assert imports is not None and imports[0] == imports[1] == sum(len(ledger.import_ids(m)) for m in (0, 4))
    ups, evs = lake_snapshot(root)
    assert all(evs.get((u, m), 0) == n for u, m, n in ups)
    with psycopg.connect(db) as conn:  # the ledger tables stayed empty: the rows went to the lake
        assert conn.execute("SELECT count(*) FROM ledger_updates").fetchone() == (0,)
        contracts = conn.execute("SELECT count(*) FROM contracts").fetchone()
    with Simulator(SimConfig(ledger=SMALL)) as sim:  # export to it: contract state only, the ledger untouched
        before = table(Lake(root), "updates").version()
        out = export(db, sim.urls, root)
    assert "contract state only" in out and table(Lake(root), "updates").version() == before
    assert contracts is not None and table(Lake(root), "contracts").to_pyarrow_table().num_rows == contracts[0] > 0
    # the killed commits' files and the small files compaction replaced: on disk, in no version; vacuum
    on_disk = {str(p.relative_to(tmp_path / "lake" / "updates")) for p in (tmp_path / "lake" / "updates").rglob("*.parquet")}
    live = set(add_actions(table(Lake(root), "updates"))["path"])
    assert on_disk > live
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        p = scanfill("export", "--to", root, "--vacuum", "0", dsn=db, urls=sim.urls)
        out = finish(p, 240, db)
    assert p.returncode == 0 and "vacuum:" in out, out
    on_disk = {str(p.relative_to(tmp_path / "lake" / "updates")) for p in (tmp_path / "lake" / "updates").rglob("*.parquet")}
    assert on_disk == live
    ups, evs = lake_snapshot(root)
    assert len(ups) == len(want) + imports[0] and all(evs.get((u, m), 0) == n for u, m, n in ups)


def test_a_run_into_an_s3_bucket_on_a_real_s3_compatible_server(db: str, tmp_path: Path) -> None:
    """Object storage: moto's standalone S3 server (`moto_server`, a real HTTP S3 API on a local port),
    credentials and endpoint from the usual AWS_* variables; the secret never appears in any output."""
    import duckdb

    from servers import moto_s3

    secret = "s3cr3t-never-shown-9f2c"
    with moto_s3(tmp_path, secret) as env:
        import boto3

        boto3.client("s3").create_bucket(Bucket="ledger-lake")
        root = "s3://ledger-lake/canton"
        with Simulator(SimConfig(ledger=SMALL)) as sim:
            p = scanfill("run", *RUN, "--lake", root, dsn=db, urls=sim.urls, env=env)
            out = finish(p, 240, db)
            v = scanfill("verify", "--lake", root, dsn=db, urls=sim.urls, env=env)
            vout = finish(v, 120, db)
        if p.returncode:
            bad = [ln for ln in (tmp_path / "moto.log").read_text().splitlines() if "POST" in ln or "rror" in ln]
            raise AssertionError(out[-1500:] + "\n".join(bad[-40:]))
        assert "history complete" in out, out
        assert v.returncode == 0, vout
        assert secret not in out + vout
        con = duckdb.connect()
        con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
        got = con.execute("SELECT update_id, migration_id, epoch_us(record_time), event_count FROM u").fetchall()
        want = [(h.update_id, h.migration_id, h.record_us, h.event_count) for h in Ledger(SMALL).expected_all()]
        assert len(got) == len(want) and set(got) == set(want)


def test_following_into_the_lake_keeps_it_exact_and_compacts_on_stop(db: str, tmp_path: Path) -> None:
    """`run --lake` then `follow --lake` on a ledger that grows: every update exactly once in the
    lake, the small files of following compacted when the follower stops."""
    from procs import lines_of

    root = str(tmp_path / "lake")
    ledger = Ledger(SMALL)
    total = ledger.total_updates()
    with Simulator(SimConfig(ledger=SMALL, grow=50, grow_updates=60)) as sim:
        assert finish(p := scanfill("run", *RUN, "--lake", root, dsn=db, urls=sim.urls), 240, db) is not None
        assert p.returncode == 0
        f = scanfill("follow", "--lake", root, "--poll", "0.2", "--lease", "4", dsn=db, urls=sim.urls)
        said = lines_of(f)

        def caught_up() -> bool:
            with psycopg.connect(db) as conn:
                row = conn.execute("SELECT coalesce(sum(updates), 0) FROM completeness").fetchone()
            return bool(sim.stats()["grown"]) and row is not None and int(row[0]) == total

        wait_for(caught_up, timeout=120, what="the follower to store the grown ledger")
        f.terminate()
        assert f.wait(timeout=120) == 0, said
        v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
    assert v.returncode == 0 and all(c["ok"] for c in checks), checks
    # the lake's copy against the scans, window by window: equal to an honest scan, not to a faulty one
    from scanfill.sim import InstanceConfig

    with Simulator(SimConfig(ledger=SMALL)) as honest:
        a = scanfill("verify", "--lake", root, "--against-scan", dsn=db, urls=honest.urls)
        honest_out = finish(a, 240, db)
    with Simulator(SimConfig(ledger=SMALL, instances=(InstanceConfig("sv-bad", alter_every=53),))) as faulty:
        b = scanfill("verify", "--lake", root, "--against-scan", dsn=db, urls=faulty.urls)
        faulty_out = finish(b, 240, db)
    assert a.returncode == 0, honest_out
    assert b.returncode == 1 and "with other content" in faulty_out, faulty_out
    import duckdb

    con = duckdb.connect()
    con.register("u", table(Lake(root), "updates").to_pyarrow_dataset())
    got = con.execute("SELECT update_id, migration_id, epoch_us(record_time), event_count FROM u").fetchall()
    want = [(h.update_id, h.migration_id, h.record_us, h.event_count) for h in ledger.expected_all()]
    assert len(got) == len(want) and set(got) == set(want)
    files = add_actions(table(Lake(root), "updates"))["path"]
    partitions = {p.rsplit("/", 1)[0] for p in files}
    assert len(files) == len(partitions), files  # compacted: one file per partition at this size


@pytest.mark.slow
def test_a_local_spark_session_reads_the_lake_exactly(db: str, tmp_path: Path) -> None:
    """Spark (pyspark, local[2], Java 17) over the committed files the Delta log lists, partition
    columns from the Hive paths: the same rows as the simulator's ledger."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        pytest.fail("this test needs pyspark: pip install 'scanfill[spark]' (and a Java 17 runtime)")
    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=SMALL)) as sim:
        assert finish(p := scanfill("run", *RUN, "--lake", root, dsn=db, urls=sim.urls), 240, db) is not None
        assert p.returncode == 0
    spark = SparkSession.builder.master("local[2]").appName("scanfill-lake-test").getOrCreate()
    try:
        rows = {}
        for t in ("updates", "events"):
            files = table(Lake(root), t).file_uris()
            rows[t] = spark.read.option("basePath", f"{root}/{t}").parquet(*files)
        got = {(r.update_id, r.migration_id, r.event_count) for r in
               rows["updates"].select("update_id", "migration_id", "event_count").collect()}  # fmt: skip
        days = {str(r.record_date) for r in rows["updates"].select("record_date").distinct().collect()}
        n_events = rows["events"].count()
    finally:
        spark.stop()
    want = {(h.update_id, h.migration_id, h.event_count) for h in Ledger(SMALL).expected_all()}
    assert got == want and len(got) == Ledger(SMALL).total_updates()
    assert days == {"2024-06-24", "2024-06-25"}
    assert n_events == sum(h.event_count for h in Ledger(SMALL).expected_all())
