"""`scanfill report`: one self-contained HTML file (inline SVG and CSS, no scripts, no network) a
person opens on purpose: what is provably whole (a calendar of days by status, the watermark, the
gaps and why), how the load went (rate, rows, ETA, the follower's lag, over time), which scans
disagreed, and the ranges."""

from __future__ import annotations

import html
import math
from datetime import date, datetime, timedelta
from typing import Any

from scanfill.coord.records import DayStatus, Watermark
from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.ops.monitor import status

COLORS = ["#2563eb", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#65a30d"]  # no status color
STATUS_COLORS = {"complete": "#16a34a", "in progress": "#38bdf8", "gap": "#dc2626", "not yet loaded": "#cbd5e1"}
WORST = ("gap", "in progress", "not yet loaded", "complete")  # a day's cell shows the worst of its ranges
MAX_POINTS = 600  # per series: enough to see a stall, small enough to open anywhere


# ----- numbers and axes ---------------------------------------------------------------------------


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def short(v: float) -> str:
    """A tick label: 40k, 1.5M, 0.25, 120."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.{0 if (v / div) == int(v / div) else 1}f}{suffix}"
    return f"{v:.0f}" if v == int(v) or a >= 10 else f"{v:.2g}"


def duration(s: float) -> str:
    s = max(0, int(s))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def thin(points: list[tuple[float, float]], n: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about 2n points: each of n buckets keeps its lowest and highest point, in order, so a
    stall or a spike stays visible however long the load."""
    if len(points) <= 2 * n:
        return points
    size = len(points) / n
    out: list[tuple[float, float]] = []
    for k in range(n):
        bucket = points[int(k * size) : int((k + 1) * size)]
        if bucket:
            lo, hi = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
            out.extend(sorted({lo, hi}))
    return out


def chart(title: str, series: dict[str, list[tuple[float, float]]], unit: str, time_axis: bool = True,
          w: int = 900, h: int = 240) -> str:  # fmt: skip
    """A line chart: round ticks on both axes, elapsed time (or a value) along x, a legend."""
    pts = [p for s in series.values() for p in s]
    head = f'<h3>{html.escape(title)} <small>({html.escape(unit)})</small></h3>'
    if len(pts) < 2:
        return f'{head}<p class="empty">not enough samples yet</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    ystep = nice_step(max(p[1] for p in pts) or 1.0)
    y1 = ystep * math.ceil((max(p[1] for p in pts) or 1.0) / ystep)
    left, bottom, top, right = 56, 26, 8, 12

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def sy(y: float) -> float:
        return top + (1 - y / y1) * (h - top - bottom)

    parts = [f'<svg viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(title)}">',
             f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" class="plot"/>']  # fmt: skip
    y = 0.0
    while y <= y1 + ystep / 2:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{short(y)}</text>')  # fmt: skip
        y += ystep
    xstep = nice_step(x1 - x0, 6) if not time_axis else _time_step(x1 - x0)
    x = math.ceil(x0 / xstep) * xstep
    while x <= x1:
        label = duration(x) if time_axis else short(x)  # x: seconds since the report's first sample
        parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{h - bottom}" class="grid"/>'
                     f'<text x="{sx(x):.1f}" y="{h - 8}" text-anchor="middle">{label}</text>')  # fmt: skip
        x += xstep
    legend = []
    for i, (name, s) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in thin(s))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{path}"/>')
        legend.append(f'<span style="color:{color}">&#9632;</span> {html.escape(name)}')
    parts.append("</svg>")
    return f'{head}{"".join(parts)}<div class="legend">{" &nbsp; ".join(legend)}</div>'


def _time_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= 8:
            return float(step)
    return 86400.0 * nice_step(span / 86400, 8)


# ----- the calendar -----------------------------------------------------------------------------


def calendar(days: list[DayStatus]) -> str:
    """Days as cells, a column per week (Monday on top), colored by the worst status of the day's
    ranges; hovering a cell lists each range's status and counts."""
    if not days:
        return '<p class="empty">no ranges planned yet</p>'
    by_day: dict[date, list[DayStatus]] = {}
    for d in days:
        by_day.setdefault(d.day, []).append(d)
    first, last = min(by_day), max(by_day)
    start = first - timedelta(days=first.weekday())
    weeks = (last - start).days // 7 + 1
    cell = 24 if weeks <= 26 else 14 if weeks <= 60 else 10  # a long history still fits the page
    gap, left, top = 3, 34, 22
    w, h = left + weeks * (cell + gap) + 10, top + 7 * (cell + gap) + 6
    parts = [f'<svg class="calendar" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             'aria-label="days by status">']  # fmt: skip
    for i, name in enumerate(("Mon", "", "Wed", "", "Fri", "", "Sun")):
        if name:
            parts.append(f'<text x="0" y="{top + i * (cell + gap) + cell / 2 + 4}">{name}</text>')
    month = None
    for k in range(weeks * 7):
        day = start + timedelta(days=k)
        x, y = left + (k // 7) * (cell + gap), top + (k % 7) * (cell + gap)
        if day.month != month and k % 7 == 0:
            month = day.month
            parts.append(f'<text x="{x}" y="12">{day:%b %Y}</text>')
        rows = by_day.get(day)
        if not rows:
            if first <= day <= last:
                parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" class="none"/>')
            continue
        worst = min((r.status for r in rows), key=WORST.index)
        tip = f"{day}: {worst}\n" + "\n".join(
            f"migration {r.migration_id} {r.synchronizer_id.split('::')[0]}: {r.status}, {r.updates:,} updates"
            + (f" ({r.detail})" if r.detail else "") for r in rows)  # fmt: skip
        parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" rx="3" fill="{STATUS_COLORS[worst]}" '
                     f'data-day="{day}" data-status="{worst}"><title>{html.escape(tip)}</title></rect>')  # fmt: skip
        if cell >= 20:
            parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" class="dom">'
                         f"{day.day}</text>")
    parts.append("</svg>")
    legend = " &nbsp; ".join(f'<span class="key" style="background:{c}"></span>{s}' for s, c in STATUS_COLORS.items())
    return "".join(parts) + f'<div class="legend">{legend}</div>'


# ----- the page ---------------------------------------------------------------------------------


def build(db: Database) -> str:
    st = status(db)
    with db.connect(autocommit=True, application="scanfill report") as conn:
        store = Store(db)
        samples = store.samples(conn)
        slices = store.slices_completed(conn)
        total_span = store.planned_span_s(conn)
        days = store.days(conn)
        mark = store.complete_through(conn)
        lags = store.lag_samples(conn)
        disagreements = store.disagreements(conn)
    starts = [s.sampled_at for s in samples[:1]] + [c.completed_at for c in slices[:1]] + [a for a, _ in lags[:1]]
    t0: datetime | None = min(starts) if starts else None
    rate, cumulative, per_worker = _rates(samples, t0)
    covered, eta = _coverage(slices, total_span, t0)
    lag = [((at - t0).total_seconds(), v) for at, v in lags] if t0 else []
    tt = st["totals"]
    duration_s = cumulative[-1][0] if cumulative else 0.0
    avg = tt["rows"] / duration_s if duration_s else 0.0
    counts = {s: sum(1 for d in days if d.status == s) for s in STATUS_COLORS}
    state = ('<b class="ok">complete</b>' if tt["complete"] else "in progress")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>scanfill report</title>
<style>
body{{font-family:system-ui,-apple-system,sans-serif;margin:0 auto;padding:1.5em;max-width:960px;color:#0f172a}}
h1{{font-size:22px;margin:0 0 .2em}} h2{{font-size:17px;margin:1.6em 0 .4em;border-bottom:1px solid #e2e8f0}}
h3{{font-size:14px;margin:1.2em 0 .2em}} small{{color:#64748b;font-weight:normal}}
svg{{width:100%;height:auto;font-size:11px;fill:#334155}} svg.calendar{{width:auto;max-width:100%}} .dom{{fill:#fff;font-size:10px;pointer-events:none}}
.plot{{fill:#f8fafc;stroke:#cbd5e1}} .grid{{stroke:#e2e8f0}} rect.none{{fill:#f1f5f9}}
table{{border-collapse:collapse;width:100%;table-layout:fixed;font-size:12.5px}}
td,th{{border-bottom:1px solid #e2e8f0;padding:3px 6px;text-align:left;overflow-wrap:anywhere}}
th{{background:#f8fafc}} td.n{{text-align:right;font-variant-numeric:tabular-nums}}
.legend{{font-size:12px;color:#334155;margin:.3em 0}} .key{{display:inline-block;width:11px;height:11px;
border-radius:2px;margin-right:4px;vertical-align:-1px}}
.summary{{font-size:15px;line-height:1.6}} .empty{{color:#64748b}} .ok{{color:#16a34a}} .bad{{color:#dc2626}}
.grid2{{display:grid;grid-template-columns:repeat(auto-fit,minmax(120px,1fr));gap:8px;margin:.6em 0}}
.tile{{background:#f8fafc;border:1px solid #e2e8f0;border-radius:6px;padding:6px 10px}}
.tile b{{display:block;font-size:18px}}
</style></head><body>
<h1>scanfill report</h1>
<p class="summary">{tt["rows"]:,} rows ({tt["updates"]:,} updates, {tt["events"]:,} events), {state};
{100 * tt["fraction"]:.1f}% of the planned time range, {tt["slices_done"]:,}/{tt["slices"]:,} slices,
{len(per_worker)} loader(s), {duration(duration_s)} sampled, {short(avg)} rows/s on average.</p>
<h2>What is provably whole</h2>
<p class="summary">Complete through: <b>{_mark(mark)}</b></p>
<div class="grid2">{"".join(f'<div class="tile"><b style="color:{STATUS_COLORS[s] if n else "#94a3b8"}">{n:,}</b>'
                            f'{s}</div>' for s, n in counts.items())}</div>
{calendar(days)}
{_gaps(days)}
<h2>How the load went</h2>
{chart("rate", rate, "rows per second, per loader")}
{chart("rows stored", {"all loaders": cumulative}, "rows")}
{chart("time range covered", {"covered": covered}, "percent of the planned record time")}
{chart("estimated time to finish", {"ETA": eta}, "seconds, from the coverage rate over the last minute")}
{chart("follower lag", {"lag": lag}, "seconds behind the newest record time it stored") if lag else ""}
<h2>Scans that disagreed</h2>
{_disagreements(disagreements)}
<h2>Ranges</h2>
{_ranges(st["ranges"])}
</body></html>
"""


def _mark(w: Watermark | None) -> str:
    if w is None:
        return "nothing yet"
    return html.escape(f"migration {w.migration_id}, {w.record_time:%Y-%m-%d %H:%M:%S.%f} UTC")


def _rates(samples: list[Any], t0: datetime | None) -> tuple[dict[str, list[tuple[float, float]]],
                                                             list[tuple[float, float]], dict[str, int]]:  # fmt: skip
    """Rows/s per loader over a short trailing window (so two samples a moment apart make no spike),
    cumulative rows over all loaders, and each loader's last count."""
    points: dict[str, list[tuple[float, int]]] = {}
    per_worker: dict[str, int] = {}
    cumulative: list[tuple[float, float]] = []
    for wid, at, rows in samples:
        assert t0 is not None
        x = (at - t0).total_seconds()
        points.setdefault(wid, []).append((x, rows))
        per_worker[wid] = rows
        cumulative.append((x, float(sum(per_worker.values()))))
    span = cumulative[-1][0] - cumulative[0][0] if cumulative else 0.0
    window = max(1.0, span / 150)
    rate: dict[str, list[tuple[float, float]]] = {}
    for wid, pts in points.items():
        j = 0
        for x, rows in pts:
            while j + 1 < len(pts) and pts[j + 1][0] <= x - window:
                j += 1
            x0, r0 = pts[j]
            if x - x0 >= window * 0.5:
                rate.setdefault(wid, []).append((x, max(0.0, (rows - r0) / (x - x0))))
    return rate, cumulative, per_worker


def _coverage(slices: list[Any], total_span: float, t0: datetime | None) -> tuple[list[tuple[float, float]],
                                                                                list[tuple[float, float]]]:  # fmt: skip
    covered: list[tuple[float, float]] = []
    eta: list[tuple[float, float]] = []
    acc = 0.0
    for at, secs in slices:
        assert t0 is not None
        acc += float(secs)
        x, f = (at - t0).total_seconds(), min(1.0, acc / total_span) if total_span else 0.0
        covered.append((x, 100 * f))
        back = [p for p in covered if p[0] >= x - 60] or covered
        dx, df = x - back[0][0], (100 * f - back[0][1]) / 100
        if dx > 0 and df > 0 and f < 1:
            eta.append((x, (1 - f) * dx / df))
        elif f >= 1:
            eta.append((x, 0.0))
    return covered, eta


def _gaps(days: list[DayStatus]) -> str:
    gaps = [d for d in days if d.status == "gap"]
    if not gaps:
        return '<p class="ok">No gaps.</p>'
    day = gaps[0].day
    rows = "".join(f"<tr><td>{d.day}</td><td class=n>{d.migration_id}</td><td>{_sync(d.synchronizer_id)}</td>"
                   f"<td class=n>{d.updates:,}</td><td>{html.escape(d.detail or '')}</td></tr>" for d in gaps)  # fmt: skip
    return (f'<h3 class="bad">{len(gaps)} gap(s)</h3><table><colgroup><col style="width:12%"><col style="width:6%">'
            '<col style="width:24%"><col style="width:10%"><col></colgroup><tr><th>day</th><th>mig</th>'
            f"<th>synchronizer</th><th>updates</th><th>why</th></tr>{rows}</table>"
            f"<p>Repair, once a scan serves it again: <code>scanfill run --refetch {day}T00:00:00Z/"
            f"{day + timedelta(days=1)}T00:00:00Z</code>, then <code>scanfill verify --against-scan --days {day}"
            "</code> (each gap alike).</p>")  # fmt: skip


def _sync(sync: str) -> str:
    name, _, fp = sync.partition("::")
    return f'<span title="{html.escape(sync)}">{html.escape(name)}{"::" + html.escape(fp[:8]) + "…" if fp else ""}</span>'


def _disagreements(rows: list[tuple[datetime, str, str, int]]) -> str:
    if not rows:
        return '<p class="ok">None recorded.</p>'
    body = "".join(f"<tr><td>{at:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(url)}</td><td>{html.escape(req)}</td>"
                   f"<td class=n>{n:,}</td></tr>" for at, url, req, n in rows)  # fmt: skip
    return ('<table><colgroup><col style="width:17%"><col style="width:28%"><col><col style="width:10%"></colgroup>'
            f"<tr><th>when</th><th>scan</th><th>request</th><th>ids</th></tr>{body}</table>")  # fmt: skip


def _ranges(ranges: list[dict[str, Any]]) -> str:
    body = "".join(
        f"<tr><td class=n>{r['migration_id']}</td><td>{_sync(r['synchronizer_id'])}</td><td>{r['min'][:19]}</td>"
        f"<td>{r['max'][:19]}</td><td class=n>{r['slices_done']}/{r['slices']}</td>"
        f"<td class=n>{100 * r['covered']:.1f}%</td><td class=n>{r['updates']:,}</td>"
        f"<td class=n>{r['events']:,}</td></tr>" for r in ranges)  # fmt: skip
    return ('<table><colgroup><col style="width:5%"><col style="width:21%"><col style="width:17%">'
            '<col style="width:17%"><col style="width:9%"><col style="width:9%"><col style="width:10%"><col>'
            "</colgroup><tr><th>mig</th><th>synchronizer</th><th>from</th><th>to</th><th>slices</th><th>covered</th>"
            f"<th>updates</th><th>events</th></tr>{body}</table>")  # fmt: skip


def write(db: Database, path: str) -> dict[str, Any]:
    text = build(db)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return {"path": path, "bytes": len(text)}
