"""`scanfill status`: the guide's monitoring queries computed for the user, cheap enough to refresh
every second on 84M rows (counters the loaders keep, catalog estimates, never `count(*)`)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.ops.maintenance import LEDGER_TABLES, catalog_snapshot, table_oid

RATE_WINDOW_S = 300


def status(db: Database) -> dict[str, Any]:
    with db.connect(autocommit=True, application="scanfill status") as conn:
        t = db.t
        store = Store(db)
        ranges = store.all(conn, "range_progress")
        rate_rows = store.all(conn, "rates", window_s=RATE_WINDOW_S)
        workers = store.all(conn, "workers_live", stale_s=120)
        overall = store.progress(conn)
        fol = store.follow_state(conn)
        disagreed = store.all(conn, "disagreements_by_scan")
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        snap = catalog_snapshot(db, conn)
        oids = [table_oid(db, conn, x) for x in LEDGER_TABLES]
        est: dict[str, int] = dict(
            conn.execute("SELECT relname, reltuples::bigint FROM pg_class WHERE oid = ANY(%s)", (oids,)).fetchall()
        )
        builds = conn.execute(
            "SELECT coalesce(nullif(p.index_relid, 0)::regclass::text, substring(a.query FROM 'INDEX\\s+(\\S+)\\s+ON'), '?'), p.phase, p.blocks_done, p.blocks_total, p.tuples_done, "
            "p.tuples_total FROM pg_stat_progress_create_index p JOIN pg_stat_activity a ON a.pid = p.pid "
            "WHERE p.datname = current_database()"
        ).fetchall()
        phase = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = 'phase'").format(t("scanfill_meta"))).fetchone()
    out_ranges = []
    tot = {"updates": 0, "events": 0, "span": 0.0, "covered": 0.0, "slices": 0, "done": 0}
    for m, sync, lo, hi, src, n, done, active, upd, ev, span, covered in ranges:
        out_ranges.append({
            "migration_id": m, "synchronizer_id": sync, "min": lo, "max": hi, "source_complete": src,
            "slices": n, "slices_done": done, "slices_active": active, "slices_waiting": n - done - active,
            "updates": int(upd), "events": int(ev), "covered": float(covered) / float(span) if span else 0.0,
        })  # fmt: skip
        tot["updates"] += int(upd)
        tot["events"] += int(ev)
        tot["span"] += float(span)
        tot["covered"] += float(covered)
        tot["slices"] += n
        tot["done"] += done
    rate = 0.0
    for _, t0, t1, r0, r1 in rate_rows:
        if t1 > t0:
            rate += (r1 - r0) / (t1 - t0).total_seconds()
    rows = tot["updates"] + tot["events"]
    fraction = tot["covered"] / tot["span"] if tot["span"] else 0.0
    eta = None
    if rate > 0 and 0 < fraction < 1:
        eta = (rows / fraction - rows) / rate
    return {
        "ranges": out_ranges,
        "totals": {"updates": tot["updates"], "events": tot["events"], "rows": rows, "fraction": fraction,
                   "slices": tot["slices"], "slices_done": tot["done"],
                   "complete": overall.complete, "imports_open": overall.imports_open},
        "rate_rows_per_s": rate if rate > 0 else None,
        "eta_s": eta,
        "workers": [{"worker_id": w[0], "host": w[1], "pid": w[2], "started_at": w[3].isoformat(),
                     "heartbeat": w[4].isoformat(), "rows_loaded": w[5], "leases": w[6]} for w in workers],
        "tables": {name: {"persistence": "UNLOGGED" if info["persistence"] == "u" else "LOGGED",
                          "indexes": [i[0] for i in info["indexes"]],
                          "autovacuum": "off" if "autovacuum_enabled=false" in (info["reloptions"] or []) else "on",
                          "estimated_rows": int(est.get(name, 0) or 0)} for name, info in snap.items()},
        "index_builds": [{"index": b[0], "phase": b[1],
                          "percent": 100.0 * (b[4] / b[5] if b[5] else b[2] / b[3] if b[3] else 0.0)} for b in builds],
        "phase": phase[0] if phase else None,
        "follower": _follower(fol, now),
        "disagreeing_scans": [{"url": u, "pages": int(n), "last": last.isoformat(), "updates": int(ids or 0)}
                              for u, n, last, ids in disagreed],
    }  # fmt: skip


def _follower(row: Any, now: Any) -> dict[str, Any] | None:
    """Who follows, where its cursors are, how far behind (now - newest stored record time)."""
    if row is None or (row[0] is None and row[9] is None):
        return None
    owner, host, pid, since, beat, active, _upd, ev, mig, rec_text, rec_time, upd, ev_text, _ev_items, n_events = row
    seconds = (beat - since).total_seconds() if beat and since else 0.0
    return {
        "follower": owner, "host": host, "pid": pid, "active": bool(active and owner),
        "since": since.isoformat() if since else None, "cursor_migration": mig, "cursor": rec_text,
        "lag_s": (now - rec_time).total_seconds() if rec_time else None,
        "updates": int(upd or 0), "events": int(ev or 0),  # updates: counted with each commit
        "updates_per_s": int(upd or 0) / seconds if seconds > 0 else None,
        "events_cursor": ev_text, "scan_events": int(n_events or 0),
    }  # fmt: skip


def render(st: dict[str, Any]) -> Any:
    """A rich renderable of `status`."""
    from rich.console import Group
    from rich.table import Table

    tt = st["totals"]
    rate = st["rate_rows_per_s"]
    eta = st["eta_s"]
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]{tt['rows']:,}[/] rows ({tt['updates']:,} updates, {tt['events']:,} events)",
        f"{100 * tt['fraction']:.1f}% of the time range",
        f"{rate:,.0f} rows/s" if rate else "rate: not measured yet",
        f"ETA {_dur(eta)}" if eta else ("[green]complete[/]" if tt["complete"] else "ETA: -"),
    )
    ranges = Table(title="ranges (migration, synchronizer)")
    for col in ("mig", "synchronizer", "min", "max", "slices done/active/waiting", "covered", "updates", "events",
                "scan complete"):  # fmt: skip
        ranges.add_column(col)
    for r in st["ranges"]:
        ranges.add_row(str(r["migration_id"]), r["synchronizer_id"][:40], r["min"], r["max"],
                       f"{r['slices_done']}/{r['slices_active']}/{r['slices_waiting']}", f"{100 * r['covered']:.1f}%",
                       f"{r['updates']:,}", f"{r['events']:,}", "yes" if r["source_complete"] else "[red]no[/]")  # fmt: skip
    workers = Table(title=f"live workers ({len(st['workers'])})")
    for col in ("worker", "host", "pid", "leases", "rows", "heartbeat"):
        workers.add_column(col)
    for w in st["workers"]:
        workers.add_row(w["worker_id"], w["host"], str(w["pid"]), str(w["leases"]), f"{w['rows_loaded']:,}",
                        w["heartbeat"][11:19])  # fmt: skip
    tables = Table(title="tables" + (f" (phase: {st['phase']})" if st["phase"] else ""))
    for col in ("table", "persistence", "indexes", "autovacuum", "estimated rows"):
        tables.add_column(col)
    for name, info in st["tables"].items():
        tables.add_row(name, info["persistence"], ", ".join(info["indexes"]) or "[yellow]none (dropped)[/]",
                       info["autovacuum"], f"{info['estimated_rows']:,}")  # fmt: skip
    parts: list[Any] = [head, ranges, workers, tables]
    if st.get("disagreeing_scans"):
        bad = Table(title="[red]scans that served pages others did not agree with[/]")
        for col in ("scan", "pages", "updates differing", "last"):
            bad.add_column(col)
        for d in st["disagreeing_scans"]:
            bad.add_row(d["url"], str(d["pages"]), f"{d['updates']:,}", d["last"][:19])
        parts.append(bad)
    f = st.get("follower")
    if f:
        fol = Table(title="follower" + ("" if f["active"] else " ([yellow]none active[/])"))
        for col in ("follower", "host", "cursor (migration, record time)", "lag", "updates/s", "verdicts kept"):
            fol.add_column(col)
        fol.add_row(f["follower"] or "-", f["host"] or "-", f"{f['cursor_migration']}, {f['cursor']}",
                    _dur(f["lag_s"]) if f["lag_s"] is not None else "-",
                    f"{f['updates_per_s']:,.1f}" if f["updates_per_s"] else "-", f"{f['scan_events']:,}")  # fmt: skip
        parts.append(fol)
    if st["index_builds"]:
        builds = Table(title="index builds in progress")
        for col in ("index", "phase", "percent"):
            builds.add_column(col)
        for b in st["index_builds"]:
            builds.add_row(b["index"], b["phase"], f"{b['percent']:.0f}%")
        parts.append(builds)
    return Group(*parts)


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
