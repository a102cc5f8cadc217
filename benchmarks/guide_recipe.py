"""The seed guide's recipe, as its Node.js script does it, re-created in Python for comparison:
one sequential stream per synchronizer, pages of 500, rows COPYed into a staging table and then
`INSERT ... ON CONFLICT DO NOTHING` per 500 rows, cursor per (migration, synchronizer)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import psycopg

from scanfill.timeutil import format_us, parse_us

UPD_COLS = (
    "update_id, migration_id, synchronizer_id, record_time, effective_at, workflow_id, kind, event_count, update_json"
)
EV_COLS = (
    "event_id, update_id, migration_id, synchronizer_id, record_time, event_type, contract_id, template_id, "
    "package_name, choice, consuming, payload, exercise_result, signatories, observers, acting_parties"
)


def _post(url: str, body: dict[str, Any]) -> Any:
    """POST with the Node script's retry: wait a second after a 429 or 5xx and ask again."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    for _ in range(60):
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 429 and exc.code < 500:
                raise
            time.sleep(1)
    raise RuntimeError(f"{url}: still refused after 60 attempts")


def stream(dsn: str, base: str, migration: int, sync: str, min_text: str, max_text: str, page: int = 500) -> int:
    """Load one (migration, synchronizer); returns rows written."""
    rows = 0
    before = format_us(parse_us(max_text) + 1)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE stage_u (LIKE ledger_updates) ON COMMIT DELETE ROWS")
        conn.execute("CREATE TEMP TABLE stage_e (LIKE ledger_events) ON COMMIT DELETE ROWS")
        conn.commit()
        while True:
            items = _post(base + "/v0/backfilling/updates-before", {
                "migration_id": migration, "synchronizer_id": sync, "before": before, "at_or_after": min_text,
                "count": page})["transactions"]  # fmt: skip
            if not items:
                break
            ups, evs = [], []
            for it in items:
                if "event" in it:
                    ev = it["event"]
                    created = ev.get("created_event")
                    eff = ev["target_synchronizer"] if created else ev["source_synchronizer"]
                    events = [created] if created else []
                    kind = "assignment" if created else "unassignment"
                else:
                    eff, events, kind = it["synchronizer_id"], list(it["events_by_id"].values()), "transaction"
                rt = datetime.fromisoformat(it["record_time"])
                eff_at = datetime.fromisoformat(it["effective_at"]) if it.get("effective_at") else None
                ups.append((it["update_id"], migration, eff, rt, eff_at, it.get("workflow_id"), kind, len(events),
                            json.dumps(it)))  # fmt: skip
                for e in events:
                    payload = e.get("create_arguments", e.get("choice_argument"))
                    evs.append((e["event_id"], it["update_id"], migration, eff, rt, e["event_type"],
                                e.get("contract_id"), e.get("template_id"), e.get("package_name"), e.get("choice"),
                                e.get("consuming"), json.dumps(payload), json.dumps(e.get("exercise_result")),
                                e.get("signatories"), e.get("observers"), e.get("acting_parties")))  # fmt: skip
            with conn.cursor() as cur:
                with cur.copy(f"COPY stage_u ({UPD_COLS}) FROM STDIN") as cp:
                    for r in ups:
                        cp.write_row(r)
                with cur.copy(f"COPY stage_e ({EV_COLS}) FROM STDIN") as cp:
                    for r in evs:
                        cp.write_row(r)
                cur.execute(f"INSERT INTO ledger_updates ({UPD_COLS}) SELECT {UPD_COLS} FROM stage_u "
                            "ON CONFLICT (update_id) DO NOTHING")  # fmt: skip
                cur.execute(f"INSERT INTO ledger_events ({EV_COLS}) SELECT {EV_COLS} FROM stage_e "
                            "ON CONFLICT (event_id) DO NOTHING")  # fmt: skip
                cur.execute(
                    "INSERT INTO guide_cursors VALUES (%s, %s, %s) ON CONFLICT (migration_id, synchronizer_id) "
                    "DO UPDATE SET last_before = EXCLUDED.last_before",
                    (migration, sync, items[-1]["record_time"]),
                )
            conn.commit()
            rows += len(ups) + len(evs)
            before = items[-1]["record_time"]
    return rows


def prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS guide_cursors (migration_id bigint, synchronizer_id text, "
                     "last_before text, PRIMARY KEY (migration_id, synchronizer_id))")  # fmt: skip


def ranges(base: str) -> list[tuple[int, str, str, str]]:
    out = []
    with urllib.request.urlopen(base + "/v0/migrations/last") as r:
        m: int | None = json.loads(r.read())["migration_id"]
    while m is not None:
        info = _post(base + "/v0/backfilling/migration-info", {"migration_id": m})
        out += [(m, x["synchronizer_id"], x["min"], x["max"]) for x in info["record_time_range"]]
        m = info["previous_migration_id"]
    return out


def _one(args: tuple[str, str, int, str, str, str]) -> int:
    return stream(*args)


def run_streams(dsn: str, base: str, streams: list[tuple[int, str, str, str]], processes: int) -> int:
    """The guide's workers: each process takes whole synchronizers (one stream each)."""
    import multiprocessing as mp

    prepare(dsn)
    jobs = [(dsn, base, m, s, lo, hi) for m, s, lo, hi in streams]
    with mp.get_context("spawn").Pool(processes) as pool:
        return sum(pool.map(_one, jobs))
