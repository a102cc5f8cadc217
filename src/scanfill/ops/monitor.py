"""`scanfill status`: the guide's monitoring queries computed for the user, cheap enough to refresh
every second on 84M rows (counters the loaders keep, catalog estimates, never `count(*)`)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from scanfill.coord.records import FollowState
from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.ops.maintenance import LEDGER_TABLES, catalog_snapshot, table_oid
from scanfill.scan.client import redact_url

RATE_WINDOW_S = 300


def status(db: Database) -> dict[str, Any]:
    with db.connect(autocommit=True, application="scanfill status") as conn:
        t = db.t
        store = Store(db)
        ranges = store.range_progress(conn)
        rate_rows = store.rates(conn, RATE_WINDOW_S)
        workers = store.live_workers(conn)
        overall = store.progress(conn)
        fol = store.follow_state(conn)
        disagreed = store.disagreements_by_scan(conn)
        failed = store.failed_slices(conn)
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
        mark = store.complete_through(conn)
        day_counts = dict(store.all(conn, "days_by_status"))
        lakes = store.lake_ledger(conn)  # `run --lake`: the ledger's rows are there, the ledger tables empty
    out_ranges = []
    tot = {"updates": 0, "events": 0, "span": 0.0, "covered": 0.0, "slices": 0, "done": 0}
    for r in ranges:
        out_ranges.append({
            "migration_id": r.migration_id, "synchronizer_id": r.synchronizer_id, "min": r.min_text,
            "max": r.max_text, "source_complete": r.source_complete, "slices": r.slices, "slices_done": r.slices_done,
            "slices_active": r.slices_active, "slices_waiting": r.slices - r.slices_done - r.slices_active,
            "updates": int(r.updates), "events": int(r.events),
            "covered": float(r.covered_s) / float(r.span_s) if r.span_s else 0.0,
        })  # fmt: skip
        tot["updates"] += int(r.updates)
        tot["events"] += int(r.events)
        tot["span"] += float(r.span_s)
        tot["covered"] += float(r.covered_s)
        tot["slices"] += r.slices
        tot["done"] += r.slices_done
    rate = 0.0
    for w in rate_rows:
        if w.last_at > w.first_at:
            rate += (w.last_rows - w.first_rows) / (w.last_at - w.first_at).total_seconds()
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
        "workers": [{"worker_id": w.worker_id, "host": w.host, "pid": w.pid, "started_at": w.started_at.isoformat(),
                     "heartbeat": w.heartbeat.isoformat(), "rows_loaded": w.rows_loaded, "leases": w.leases}
                    for w in workers],
        "tables": {name: {"persistence": "UNLOGGED" if info["persistence"] == "u" else "LOGGED",
                          "indexes": [i[0] for i in info["indexes"]],
                          "autovacuum": "off" if "autovacuum_enabled=false" in (info["reloptions"] or []) else "on",
                          "estimated_rows": int(est.get(name, 0) or 0)} for name, info in snap.items()},
        "index_builds": [{"index": b[0], "phase": b[1],
                          "percent": 100.0 * (b[4] / b[5] if b[5] else b[2] / b[3] if b[3] else 0.0)} for b in builds],
        "phase": phase[0] if phase else None,
        "ledger": {"where": "lake" if lakes else "tables",
                   "lakes": [{"lake": redact_url(x), "updates": u, "events": e} for x, u, e in lakes]},
        "complete_through": None if mark is None else {
            "migration_id": mark.migration_id, "record_time": mark.record_time.isoformat(),
            "ledger_position": mark.ledger_position},
        "days": {s: int(day_counts.get(s, 0)) for s in ("complete", "in progress", "gap", "not yet loaded")},
        "follower": _follower(fol, now),
        "disagreeing_scans": [{"url": d.url, "pages": int(d.pages), "last": d.last_seen.isoformat(),
                               "updates": int(d.updates or 0)} for d in disagreed],
        "failed_slices": [{"slice": f.cursor_name, "migration_id": f.migration_id, "synchronizer_id": f.synchronizer_id,
                           "failed_at": f.failed_at.isoformat(), "failure": f.failure} for f in failed],
    }  # fmt: skip


def _follower(f: FollowState | None, now: Any) -> dict[str, Any] | None:
    """Who follows, where its cursors are, how far behind (now - newest stored record time)."""
    if f is None or (f.owner is None and f.cursor_text is None and not f.last_problem):
        return None
    seconds = (f.heartbeat - f.since).total_seconds() if f.heartbeat and f.since else 0.0
    return {
        "follower": f.owner, "host": f.host, "pid": f.pid, "active": bool(f.active and f.owner),
        "since": f.since.isoformat() if f.since else None, "cursor_migration": f.cursor_migration,
        "cursor": f.cursor_text, "lag_s": (now - f.cursor_time).total_seconds() if f.cursor_time else None,
        "updates": int(f.cursor_items or 0), "events": int(f.events_loaded or 0),  # updates: counted with each commit
        "updates_per_s": int(f.cursor_items or 0) / seconds if seconds > 0 else None,
        "events_cursor": f.events_cursor_text, "scan_events": int(f.scan_events or 0),
        "problems": int(f.problems or 0), "last_problem": f.last_problem,
        "last_problem_at": f.last_problem_at.isoformat() if f.last_problem_at else None,
    }  # fmt: skip


def narrow_table(title: str, *cols: str, right: tuple[str, ...] = ()) -> Any:
    """A rich table that reads at 80 columns: no rules between columns, no padding, a line a row."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False, show_edge=False)
    for c in cols:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=True, overflow="ellipsis")
    return t


def short_sync(sync: str) -> str:
    """`global-domain::1220ccc9`: the name and enough of the fingerprint to tell two apart."""
    name, _, fp = sync.partition("::")
    return f"{name}::{fp[:8]}" if fp else name


def _when(text: str | None) -> str:
    return "-" if not text else f"{text[:10]} {text[11:16]}"


def render(st: dict[str, Any]) -> Any:
    """A rich renderable of `status` that reads at 80 columns (a log, a pipe): no vertical rules,
    short ids, one line per range."""
    from rich.console import Group

    table = narrow_table

    tt = st["totals"]
    rate, eta = st["rate_rows_per_s"], st["eta_s"]
    loading = bool(st["workers"]) or bool((st.get("follower") or {}).get("active"))
    done = ("[green]complete[/]" if tt["complete"] else f"ETA {_dur(eta)}" if eta and loading
            else "ETA -" if loading else "[yellow]nothing loading[/]")  # fmt: skip
    rate = rate if loading else None
    parts: list[Any] = [
        f"[bold]{tt['rows']:,}[/] rows ({tt['updates']:,} updates, {tt['events']:,} events)",
        f"{100 * tt['fraction']:.1f}% of the time range, {tt['slices_done']:,}/{tt['slices']:,} slices, "
        + (f"{rate:,.0f} rows/s, " if rate else "") + done,
    ]
    for x in (st.get("ledger") or {}).get("lakes") or ():
        parts.append(f"ledger: in the lake {x['lake']} ({x['updates']:,} updates, {x['events']:,} events committed "
                     "there; the ledger tables are empty by design): `scanfill verify --lake` checks it")  # fmt: skip
    mark, days = st.get("complete_through"), st.get("days") or {}
    if days:
        parts.append("complete through: " + (f"migration {mark['migration_id']}, {mark['record_time'][:19]} UTC"
                                             if mark else "nothing yet"))  # fmt: skip
        parts.append(f"days: {days.get('complete', 0)} complete, {days.get('in progress', 0)} in progress, "
                     f"[{'bold red' if days.get('gap') else 'default'}]{days.get('gap', 0)} gap[/], "
                     f"{days.get('not yet loaded', 0)} not yet loaded")  # fmt: skip
        if days.get("gap"):
            parts.append("[red]gaps[/]: `scanfill report --completeness` lists them and why")
    ranges = table(f"ranges ({st['ranges'][0]['min'][:4] if st['ranges'] else '-'}, UTC)", "mig", "synchronizer", "record times", "slices", "covered", "updates",
                   right=("mig", "covered", "updates"))  # fmt: skip
    for r in st["ranges"]:
        cov = f"{100 * r['covered']:.1f}%" + ("" if r["source_complete"] else " [red]![/]")
        ranges.add_row(str(r["migration_id"]), short_sync(r["synchronizer_id"]),
                       f"{_when(r['min'])[5:]}..{_when(r['max'])[5:]}",
                       f"{r['slices_done']}/{r['slices_active']}/{r['slices_waiting']}", cov, f"{r['updates']:,}")  # fmt: skip
    parts.append(ranges)
    if any(not r["source_complete"] for r in st["ranges"]):
        parts.append("[red]![/] no scan reporting a complete history serves this range")
    parts.append("[dim]slices: done/active/waiting[/]")
    if st["workers"]:
        workers = table(f"live workers ({len(st['workers'])})", "worker", "leases", "rows", "heartbeat",
                        right=("leases", "rows"))  # fmt: skip
        for w in st["workers"]:
            workers.add_row(w["worker_id"], str(w["leases"]), f"{w['rows_loaded']:,}", w["heartbeat"][11:19])
        parts.append(workers)
    else:
        parts.append("live workers: none")
    tables = table("tables" + (f" (phase: {st['phase']})" if st["phase"] else ""), "table", "persistence", "indexes",
                   "autovacuum", "estimated rows", right=("indexes", "estimated rows"))  # fmt: skip
    for name, info in st["tables"].items():
        tables.add_row(name, info["persistence"], str(len(info["indexes"])) if info["indexes"] else "[yellow]dropped[/]",
                       info["autovacuum"], f"{max(0, info['estimated_rows']):,}")  # fmt: skip
    parts.append(tables)
    if st.get("disagreeing_scans"):
        bad = table("[red]scans that served pages others did not agree with[/]", "scan", "pages", "updates", "last",
                    right=("pages", "updates"))  # fmt: skip
        for d in st["disagreeing_scans"]:
            bad.add_row(d["url"], str(d["pages"]), f"{d['updates']:,}", d["last"][:19])
        parts.append(bad)
    f = st.get("follower")
    if f:
        fol = table("follower" + ("" if f["active"] else " ([yellow]none active[/])"), "follower", "cursor", "lag",
                    "updates/s", "verdicts", right=("lag", "updates/s", "verdicts"))  # fmt: skip
        fol.add_row(f["follower"] or "-", f"m{f['cursor_migration']} {_when(f['cursor'])}" if f["cursor"] else "-",
                    _dur(f["lag_s"]) if f["lag_s"] is not None else "-",
                    f"{f['updates_per_s']:,.1f}" if f["updates_per_s"] else "-", f"{f['scan_events']:,}")  # fmt: skip
        parts.append(fol)
        stopped = (f.get("last_problem") or "").startswith("stopped: ")
        if stopped:
            parts.append(f"[red]the follower stopped ({(f['last_problem_at'] or '')[:19]}): "
                         f"{f['last_problem'][len('stopped: '):]}[/]")  # fmt: skip
        elif f.get("problems"):
            parts.append(f"[yellow]the follower asked again {f['problems']:,} time(s) after the scans could not serve "
                         f"a page; last ({(f['last_problem_at'] or '')[:19]}): {f['last_problem']}[/]")  # fmt: skip
    for x in st.get("failed_slices") or ():
        parts.append(f"[red]slice stopped[/] ({x['failed_at'][:19]}): {x['slice']} (migration {x['migration_id']}, "
                     f"{short_sync(x['synchronizer_id'])}): {x['failure']}")  # fmt: skip
    if st["index_builds"]:
        builds = table("index builds in progress", "index", "phase", "percent", right=("percent",))
        for b in st["index_builds"]:
            builds.add_row(b["index"], b["phase"], f"{b['percent']:.0f}%")
        parts.append(builds)
    return Group(*parts)


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
