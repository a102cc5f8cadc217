"""Storage takes anything a scan serves (issue 28, items 3 and 5): text jsonb cannot hold, lone
surrogates, multi-megabyte texts, amounts that are not a Daml Numeric 10, nesting past Daml-LF's
limit, a database error that recurs. Each is stored exactly, or stops only its slice (or the
follower, which cannot skip) with one line naming the update, shown in status and the
completeness ledger; never asked for without end. Real PostgreSQL, the simulator over HTTP behind
a real proxy (`hostile.py`) that serves the hostile value the same way to every request."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from helpers import post_json
from hostile import add_text_field, events_of, hostile_proxy, nested_record, replace_arguments
from procs import finish, scanfill
from scanfill.errors import db_error_kind
from scanfill.sim import LedgerConfig, MigrationSpec, SimConfig, Simulator
from shared import drop_database, new_database

CFG = LedgerConfig(seed=5, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 240),))
RUN = ("--no-progress", "--no-discover", "--slices", "6", "--concurrency", "3")
NUL = b'"nul\\u0000here"'
LONE = b'"lone\\ud800here \\ud83d\\ude00 pair kept"'
BIG = b'"' + b"x" * 3_000_000 + b'\\u0000 end"'


def served(url: str) -> list[dict[str, Any]]:
    """Every update as the simulator serves it (protobuf_json), oldest first."""
    return post_json(url + "/v2/updates", {"page_size": 1000, "daml_value_encoding": "protobuf_json"})["transactions"]  # type: ignore[no-any-return]


def with_create(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if any(e["event_type"] == "created_event" for e in events_of(i))]


def rows(dsn: str, q: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(q, args or None).fetchall()


def run(dsn: str, urls: list[str], *extra: str, timeout: float = 180) -> tuple[int, str]:
    p = scanfill("run", *RUN, *extra, dsn=dsn, urls=urls)
    out = finish(p, timeout, dsn)
    return p.returncode, out


def first_create(item: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in events_of(item) if e["event_type"] == "created_event")


def check_exact(dsn: str, item: dict[str, Any], placeholder: str, raw: bytes, escaped: str) -> None:
    """The ledger row holds the served bytes; contract state the documented form, queryable."""
    ev = first_create(copy.deepcopy(item))
    args = ev["create_arguments"]
    args["record"]["fields"].append({"label": "note", "value": {"text": placeholder}})
    want = orjson.dumps(args).replace(orjson.dumps(placeholder), raw)  # what the proxy served, byte for byte
    ((stored,),) = rows(dsn, "SELECT payload::text FROM ledger_events WHERE event_id = %s", ev["event_id"])
    assert stored.encode() == want
    ((note, exact),) = rows(dsn, "SELECT payload->>'note', payload_exact::text FROM contracts WHERE contract_id = %s",
                            ev["contract_id"])  # fmt: skip
    assert note == escaped  # jsonb: the characters it cannot hold as their escape text
    assert json.loads(exact)["note"] == json.loads(raw.decode())  # json: the value itself, read as text
    assert rows(dsn, "SELECT count(*) FROM contracts WHERE payload->>'note' = %s", escaped) == [(1,)]


def test_text_jsonb_cannot_hold_loads_exactly_by_backfill_and_follower(db: str, pg_admin_dsn: str, tmp_path: Path) -> None:
    with Simulator(SimConfig(ledger=CFG)) as sim:
        items = with_create(served(sim.urls[0]))
        nul, lone, big = items[10], items[len(items) // 2], items[-10]
        edits = {nul["update_id"]: add_text_field("note", "PH_NUL"), lone["update_id"]: add_text_field("note", "PH_LONE"),
                 big["update_id"]: add_text_field("note", "PH_BIG")}  # fmt: skip
        raw = {"PH_NUL": NUL, "PH_LONE": LONE, "PH_BIG": BIG}
        follower_db = new_database(pg_admin_dsn, "hostile_follow")
        try:
            with hostile_proxy(sim.urls[0], edits, raw) as proxy:
                code, out = run(db, [proxy.url])
                assert code == 0, out
                p = scanfill("follow", "--once", "--start", "beginning", dsn=follower_db, urls=[proxy.url])
                fout = finish(p, 180, follower_db)
                assert p.returncode == 0, fout
            for dsn in (db, follower_db):
                assert rows(dsn, "SELECT count(*) FROM ledger_updates") == [(240,)]
                check_exact(dsn, nul, "PH_NUL", NUL, "nul\\u0000here")
                check_exact(dsn, lone, "PH_LONE", LONE, "lone\\ud800here \U0001f600 pair kept")
                check_exact(dsn, big, "PH_BIG", BIG, "x" * 3_000_000 + "\\u0000 end")
                # the update's own JSON keeps the served escapes too, and contracts without such text stay exact
                ((uj,),) = rows(dsn, "SELECT update_json::text FROM ledger_updates WHERE update_id = %s", lone["update_id"])
                assert LONE.decode() in uj
                assert rows(dsn, "SELECT count(*) FROM contracts WHERE payload_exact IS NOT NULL") == [(3,)]
            exact_everywhere(db, tmp_path, [(nul, NUL), (lone, LONE), (big, BIG)])
        finally:
            drop_database(pg_admin_dsn, follower_db)


def exact_everywhere(dsn: str, tmp_path: Path, served: list[tuple[dict[str, Any], bytes]]) -> None:
    """What reads contract state back (`scanfill acs`, `verify --acs-at`'s comparison, `export`'s
    lake) gets the value itself, not jsonb's escape text."""
    import deltalake

    from scanfill.db import Database
    from scanfill.lake.export import export
    from scanfill.ops.state import Position, _loads, active
    from scanfill.timeutil import parse_us

    want = {first_create(i)["contract_id"]: json.loads(raw.decode()) for i, raw in served}
    ours = {}
    for item, _ in served:  # active just after its create (the simulator may archive it later)
        at = Position(item["migration_id"], parse_us(item["record_time"]))
        ours |= {r["contract_id"]: _loads(r["payload"])["note"] for r in active(Database(dsn), at) if r["contract_id"] in want}
    assert ours == want
    export(Database(dsn), str(tmp_path / "lake"))
    got = deltalake.DeltaTable(str(tmp_path / "lake" / "contracts")).to_pyarrow_table(columns=["contract_id", "payload"])
    lake = {c: _loads(p)["note"] for c, p in zip(*(got.column(n).to_pylist() for n in ("contract_id", "payload")), strict=True)
            if c in want}  # fmt: skip
    assert lake == want


def test_nesting_past_daml_stops_only_its_slice_and_the_follower(db: str, pg_admin_dsn: str) -> None:
    with Simulator(SimConfig(ledger=CFG)) as sim:
        items = served(sim.urls[0])
        deep = with_create(items)[len(items) // 3]
        uid = deep["update_id"]
        follower_db = new_database(pg_admin_dsn, "hostile_follow")
        try:
            with hostile_proxy(sim.urls[0], {uid: replace_arguments("PH_DEEP")}, {"PH_DEEP": nested_record(3000)}) as proxy:
                code, out = run(db, [proxy.url])
                asked = proxy.served[uid]
                p = scanfill("follow", "--start", "beginning", "--poll", "0.2", dsn=follower_db, urls=[proxy.url])
                fout = finish(p, 120, follower_db)  # not --once: it must stop by itself
                status = json.loads(finish(scanfill("status", "--json", dsn=db, urls=[proxy.url]), 60, db))
                table = finish(scanfill("status", dsn=db, urls=[proxy.url]), 60, db)
                ftable = finish(scanfill("status", dsn=follower_db, urls=[proxy.url]), 60, follower_db)
                days = json.loads(finish(scanfill("report", "--completeness", "--format", "json", dsn=db,
                                                  urls=[proxy.url]), 60, db))["days"]  # fmt: skip
            assert code == 1, out
            said = [ln for ln in out.splitlines() if uid in ln and "Daml-LF" in ln]
            assert said and "Traceback" not in out and "RecursionError" not in out, out
            assert asked <= 6, asked  # refused (3 tries, other scans first), never asked again without end
            # only that slice stopped: every other slice is complete, every update outside it stored
            ((failed, lo, before),) = rows(db, "SELECT cursor_name, min_time, last_before FROM backfill_cursors "
                                               "WHERE NOT complete")  # fmt: skip
            outside = [i for i in items if not (lo.isoformat() <= i["record_time"].replace("Z", "+00:00") < before.replace("Z", "+00:00"))]
            stored = {r[0] for r in rows(db, "SELECT update_id FROM ledger_updates")}
            assert {i["update_id"] for i in outside} <= stored and uid not in stored
            assert [f["slice"] for f in status["failed_slices"]] == [failed] and uid in status["failed_slices"][0]["failure"]
            assert "slice stopped" in table and uid in table.replace("\n", "")
            gaps = [d for d in days if d["status"] == "gap"]
            assert gaps and all(uid in (d.get("detail") or "") for d in gaps), gaps
            # the follower cannot skip it: it stops with the same one line, non-zero, status says so
            assert p.returncode != 0 and any(uid in ln and "Daml-LF" in ln for ln in fout.splitlines()), fout
            assert "the follower stopped" in ftable and uid in ftable.replace("\n", ""), ftable
        finally:
            drop_database(pg_admin_dsn, follower_db)


def _summary_field(item: dict[str, Any], label: str, value: str | None) -> None:
    """Set (None: remove) a field of the item's outermost AmuletRules_Transfer's TransferSummary."""
    ev = next(e for e in events_of(item) if e.get("choice") == "AmuletRules_Transfer")
    res = ev["exercise_result"]["record"]["fields"]
    summary = next(f for f in res if f["label"] == "summary")["value"]["record"]["fields"]
    if value is None:
        summary[:] = [f for f in summary if f["label"] != label]
    else:
        next(f for f in summary if f["label"] == label)["value"] = {"numeric": value}


def test_amounts_that_are_not_numeric10_are_named_never_rounded_never_stall(db: str) -> None:
    with Simulator(SimConfig(ledger=CFG)) as sim:
        items = served(sim.urls[0])
        transfers = [i for i in items if any(e.get("choice") == "AmuletRules_Transfer" for e in events_of(i))
                     and not any(e.get("choice") in ("TransferPreapproval_Send", "AmuletRules_BuyMemberTraffic")
                                 for e in events_of(i))]  # fmt: skip
        cases = {"inputAmuletAmount": "abc", "holdingFees": "1e30", "senderChangeAmount": "1.00000000001",
                 "amuletPrice": None}  # fmt: skip
        picked = dict(zip(cases, transfers[5::7], strict=False))
        edits = {i["update_id"]: (lambda item, f=f: _summary_field(item, f, cases[f])) for f, i in picked.items()}
        with hostile_proxy(sim.urls[0], edits) as proxy:  # type: ignore[arg-type]
            code, out = run(db, [proxy.url])
            asked = dict(proxy.served)
    assert code == 0, out
    assert all(n <= 2 for n in asked.values()), asked  # each page asked for once (no commit rolled back)
    got = {r[0]: r[1:] for r in rows(db, "SELECT update_id, readable, problem, input_amulets, holding_fees, "
                                         "sender_change_amount FROM amulet_transfers")}  # fmt: skip
    readable, problem, inputs, fees, change = got[picked["inputAmuletAmount"]["update_id"]]
    assert not readable and inputs is None and "inputAmuletAmount 'abc': not a decimal number" in problem
    readable, problem, inputs, fees, change = got[picked["holdingFees"]["update_id"]]
    assert not readable and fees is None and "holdingFees '1e30'" in problem
    readable, problem, inputs, fees, change = got[picked["senderChangeAmount"]["update_id"]]
    assert not readable and change is None and "more than 10 decimals" in problem  # not rounded to 1.0000000000
    readable, problem, *_ = got[picked["amuletPrice"]["update_id"]]
    assert problem.startswith("TransferSummary lacks ") and "amuletPrice" in problem, problem
    others = {r[0] for r in rows(db, "SELECT problem FROM amulet_transfers WHERE update_id <> ALL(%s)",
                                 [i["update_id"] for i in picked.values()])}  # fmt: skip
    assert not any("amuletPrice" in (o or "") or "'" in (o or "") for o in others), others
    check = rows(db, "SELECT detail FROM rounds_check() WHERE rule = 'readable summary'")
    assert any("inputAmuletAmount 'abc'" in r[0] for r in check), check
    # the ledger keeps the served amount as served
    assert rows(db, "SELECT count(*) FROM ledger_events WHERE exercise_result::text LIKE '%\"abc\"%'") == [(1,)]


def _refuse(dsn: str, table: str, column: str, value: str) -> None:
    """A real recurring database error: a trigger refusing one row with SQLSTATE 22P05, as jsonb does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"""CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.{column} = '{value}' THEN RAISE EXCEPTION 'unsupported Unicode escape sequence'
            USING ERRCODE = '22P05'; END IF; RETURN NEW; END $$""")
        conn.execute(f"CREATE TRIGGER refuse_one BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_one()")


@pytest.mark.parametrize("lake", [False, True], ids=["postgres", "lake"])
def test_a_recurring_database_error_stops_its_slice_not_the_load(db: str, tmp_path: Path, lake: bool) -> None:
    with psycopg.connect(db, autocommit=True) as conn:  # the classification, on errors of a real server
        for q, kind in (("SELECT '\"\\u0000\"'::jsonb", "permanent"), ("SELECT 1e30::numeric(38,10)", "permanent"),
                        ("SET statement_timeout = 1; SELECT pg_sleep(1)", "transient")):  # fmt: skip
            with pytest.raises(psycopg.Error) as err:
                conn.execute(q)
            assert db_error_kind(err.value) == kind, (q, err.value.sqlstate)
        conn.execute("SET statement_timeout = 0")
    p = scanfill("init", dsn=db, urls=[])  # the tables, to put the trigger on
    assert p.wait(timeout=60) == 0
    with Simulator(SimConfig(ledger=CFG)) as sim:
        item = with_create(served(sim.urls[0]))[100]
        uid, cid = item["update_id"], first_create(item)["contract_id"]
        if lake:
            _refuse(db, "contracts", "contract_id", cid)
        else:
            _refuse(db, "ledger_updates", "update_id", uid)
        with hostile_proxy(sim.urls[0], {uid: lambda _: None}) as proxy:
            code, out = run(db, [proxy.url], *(("--lake", str(tmp_path / "lake")) if lake else ()))
            asked = proxy.served[uid]
    assert code == 1, out
    line = next(ln for ln in out.splitlines() if "SQLSTATE 22P05" in ln)
    assert "refuses it every time" in line and "run the same command again" in line
    if not lake:
        assert f"update {uid}, table ledger_updates" in line, line  # named from the COPY's line number
    assert asked <= 2, asked  # not sent again and again
    assert rows(db, "SELECT count(*) FROM backfill_cursors WHERE NOT complete") == [(1,)]
    if lake:
        files = list((tmp_path / "lake").rglob("*.parquet"))
        assert len(files) < 40, len(files)  # a page's files at most, not one set per retry
