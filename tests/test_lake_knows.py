"""A database loaded with `run --lake` knows its ledger is in the lake (issue 29, items 4 and 5):
every command that would read or write the empty ledger tables instead refuses in one line naming
the lake and the command that works, `verify` and `status` say where the ledger is, and
`abort --truncate` leaves nothing that makes the next `run --lake` store a row twice;
`rebuild-state` reads the ledger from the lake (real PostgreSQL, the simulator over HTTP,
`scanfill` as processes)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from procs import finish, scanfill
from scanfill.lake.layout import Lake
from scanfill.lake.read import add_actions, table
from scanfill.sim import Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.sim.ledger import EconomyConfig
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
    from scanfill.lake.known import _remove_tables
    from servers import moto_s3

    with moto_s3(tmp_path):
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


# a ledger with real round economics, so transfer facts are there to derive (two migrations, imports;
# the economy simulator runs one synchronizer per migration: SMALL has two, and moves between them)
ECONOMY = LedgerConfig(
    seed=41,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 300),
        MigrationSpec(1, "2024-06-25T01:30:00Z", 250, import_updates=2),
    ),
    economy=EconomyConfig(per_round=24, upgrades=(4, 8, 12)),
)
# every column, in a form equal rows compare equal in (payload_exact is json: its text)
CONTRACTS = "SELECT c.*, c.payload_exact::text AS exact FROM contracts c ORDER BY contract_id"
TRANSFERS = "SELECT * FROM amulet_transfers ORDER BY event_id"


def _table(db: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db) as conn:
        cur = conn.execute(query)
        return [tuple(v for d, v in zip(cur.description or [], r, strict=True) if d.name != "payload_exact")
                for r in cur.fetchall()]  # fmt: skip


def _spoil(db: str) -> tuple[int, int]:
    """Half the contracts gone, others wrong, one that never was; transfer facts likewise."""
    with psycopg.connect(db) as conn:
        conn.execute("DELETE FROM contracts WHERE md5(contract_id) < '8'")
        conn.execute("UPDATE contracts SET archived_pos = NULL, archived_choice = NULL, payload = '{}' "
                     "WHERE md5(contract_id) > 'c'")  # fmt: skip
        conn.execute("INSERT INTO contracts (contract_id, template_id, created_pos) SELECT 'bogus', template_id, "
                     "created_pos FROM contracts LIMIT 1")  # fmt: skip
        conn.execute("DELETE FROM amulet_transfers WHERE md5(event_id) < '8'")
        conn.execute("UPDATE amulet_transfers SET app_rewards = app_rewards + 1, party = 'someone'")
    return _counts(db)[2], _counts(db)[3]


@pytest.mark.parametrize("ledger", [ECONOMY, SMALL], ids=["economy", "two-synchronizers"])
def test_rebuild_state_derives_contract_state_and_transfer_facts_from_the_lake(
        db: str, tmp_path: Path, ledger: LedgerConfig) -> None:  # fmt: skip
    """Issue 29: a database loaded with `run --lake` has empty ledger tables; `rebuild-state` reads
    the ledger from its lake and derives exactly the contract state and transfer facts the load kept.
    A lake missing rows the database committed there is refused, and one it cannot read is one
    line: either way nothing is changed (one transaction)."""
    root = str(tmp_path / "lake")
    with Simulator(SimConfig(ledger=ledger)) as sim:
        p = scanfill("run", *RUN, "--import-updates", "--lake", root, dsn=db, urls=sim.urls)
        out = finish(p, 300, db)
        assert p.returncode == 0 and "history complete" in out, out
        counts = _counts(db)
        contracts, transfers = _table(db, CONTRACTS), _table(db, TRANSFERS)
        assert counts[:2] == (0, 0) and counts[4] > 0, counts  # the ledger is in the lake only
        with psycopg.connect(db) as conn:  # ends, not only creates; moves between synchronizers
            ends, moved = conn.execute("SELECT count(archived_pos), count(*) FILTER (WHERE synchronizer_pos <> "
                                       "created_pos) FROM contracts").fetchone() or (0, 0)  # fmt: skip
        assert len(contracts) > 300 and ends > 50, (len(contracts), ends)
        if ledger is ECONOMY:
            assert len(transfers) > 50, len(transfers)
        else:
            assert moved > 0, moved

        # a lake missing rows this database committed there (here: one file more recorded than it holds)
        with psycopg.connect(db) as conn:
            conn.execute("INSERT INTO lake_files (target, lake_table, path, migration_id, day, rows, bytes, published) "
                         "SELECT target, lake_table, path || '.gone', migration_id, day, rows, bytes, true "
                         "FROM lake_files WHERE lake_table = 'updates' LIMIT 1")  # fmt: skip
        spoiled = _spoil(db)
        p = scanfill("rebuild-state", dsn=db, urls=[])
        out = finish(p, 120, db)
        assert p.returncode == 2 and _refused(out, root, "verify --lake", "nothing done"), out
        assert (_counts(db)[2], _counts(db)[3]) == spoiled
        with psycopg.connect(db) as conn:
            conn.execute("DELETE FROM lake_files WHERE path LIKE '%.gone'")

        # a lake that cannot be read: one of its committed files missing
        victim = tmp_path / "lake" / "events" / max(add_actions(table(Lake(root), "events"))["path"])
        aside = tmp_path / "aside.parquet"
        victim.rename(aside)
        p = scanfill("rebuild-state", dsn=db, urls=[])
        out = finish(p, 120, db)
        assert p.returncode == 2 and _refused(out, root, "cannot be read", "nothing was changed"), out
        assert (_counts(db)[2], _counts(db)[3]) == spoiled
        aside.rename(victim)

        p = scanfill("rebuild-state", dsn=db, urls=[])
        out = finish(p, 300, db)
        assert p.returncode == 0 and f"contract state rebuilt from the lake {root}:" in out, out
        assert f"{len(contracts):,} contracts, {len(transfers):,} transfer summaries" in out, out
        assert _table(db, CONTRACTS) == contracts
        assert _table(db, TRANSFERS) == transfers
        assert _counts(db) == counts
        v = scanfill("verify", "--lake", root, "--json", dsn=db, urls=sim.urls)
        checks = json.loads(finish(v, 120, db))
        assert v.returncode == 0 and all(c["ok"] for c in checks), checks
