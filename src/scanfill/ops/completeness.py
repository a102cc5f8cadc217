"""What is provably whole, per (migration, synchronizer, UTC day), and the watermark: read from the
completeness ledger the loaders keep and the coordination tables (`coord/completeness.sql`), shown
as a table, CSV or JSON (`scanfill report --completeness`), and checked by `verify`."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import date
from typing import Any

from scanfill.coord.records import DayStatus, Watermark
from scanfill.coord.store import Store
from scanfill.db import Database

STATUSES = ("complete", "in progress", "gap", "not yet loaded")
COLUMNS = ("day", "migration_id", "synchronizer_id", "status", "updates", "events", "first_record_time",
           "last_record_time", "sources", "agreed_by", "disagreements", "verified_at", "verified_by", "detail")  # fmt: skip


def days(db: Database, from_day: date | None = None, to_day: date | None = None) -> list[DayStatus]:
    with db.connect(autocommit=True, application="scanfill report") as conn:
        return Store(db).days(conn, from_day, to_day)


def watermark(db: Database) -> Watermark | None:
    with db.connect(autocommit=True, application="scanfill status") as conn:
        return Store(db).complete_through(conn)


def watermark_json(w: Watermark | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {"migration_id": w.migration_id, "record_time": w.record_time.isoformat(),
            "ledger_position": w.ledger_position}  # fmt: skip


def row_json(d: DayStatus) -> dict[str, Any]:
    """One day as JSON (times ISO-8601 UTC, lists as lists)."""
    out: dict[str, Any] = {}
    for col in COLUMNS:
        v = getattr(d, col)
        out[col] = v.isoformat() if hasattr(v, "isoformat") else v
    return out


def to_json(rows: list[DayStatus], w: Watermark | None) -> str:
    counts = Counter(d.status for d in rows)
    return json.dumps({"complete_through": watermark_json(w), "days": [row_json(d) for d in rows],
                       "summary": {s: counts.get(s, 0) for s in STATUSES}}, indent=2)  # fmt: skip


def to_csv(rows: list[DayStatus]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    for d in rows:
        j = row_json(d)
        out.writerow(["|".join(v) if isinstance(v, list) else "" if v is None else v
                      for v in (j[c] for c in COLUMNS)])  # fmt: skip
    return buf.getvalue()


STYLE = {"complete": "green", "in progress": "cyan", "gap": "bold red", "not yet loaded": "dim"}


def how(d: DayStatus) -> str:
    """How a day's rows came, in a few characters: sources, agreement above one scan, verification."""
    out = "+".join(d.sources) or "-"
    if d.agreed_by and d.agreed_by > 1:
        out += f" agreed:{d.agreed_by}"
    if d.verified_by:
        out += f" verified:{len(d.verified_by)}"
    return out


def render(rows: list[DayStatus], w: Watermark | None) -> Any:
    """A rich table that reads at 80 columns: one line per (day, migration, synchronizer)."""
    from rich.console import Group

    from scanfill.ops.monitor import narrow_table, short_sync

    t = narrow_table("completeness per UTC day", "day", "mig", "synchronizer", "status", "updates", "how",
                     right=("mig", "updates"))
    for d in rows:
        t.add_row(d.day.isoformat(), str(d.migration_id), short_sync(d.synchronizer_id),
                  f"[{STYLE[d.status]}]{d.status}[/]", f"{d.updates:,}", how(d))  # fmt: skip
    counts = Counter(d.status for d in rows)
    head = "complete through: " + (f"migration {w.migration_id}, {w.record_time:%Y-%m-%d %H:%M:%S.%f} UTC" if w
                                   else "nothing yet")  # fmt: skip
    lines: list[Any] = [head, t, ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)]
    for d in rows:
        if d.status == "gap" and d.detail:
            lines.append(f"[red]gap[/] {d.day} migration {d.migration_id} {short_sync(d.synchronizer_id)}: {d.detail}")
    return Group(*lines)
