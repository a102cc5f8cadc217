"""`scanfill report`: one self-contained HTML file (inline SVG, no scripts, no network) with the
run's throughput per worker, cumulative rows, time range covered, and a summary."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from scanfill.coord.store import Store
from scanfill.db import Database
from scanfill.ops.monitor import status

COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]


def _chart(title: str, series: dict[str, list[tuple[float, float]]], unit: str, w: int = 860, h: int = 260) -> str:
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f'<h2>{html.escape(title)}</h2><p class="empty">no samples yet</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1
    left, bottom, top, right = 70, 30, 10, 10

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def sy(y: float) -> float:
        return top + (1 - y / y1) * (h - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="#f8fafc" stroke="#cbd5e1"/>']  # fmt: skip
    for k in range(5):
        yv = y1 * k / 4
        parts.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="11">{yv:,.0f}</text>')
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#e2e8f0"/>')
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="11">0 s</text>')
    parts.append(f'<text x="{w - right}" y="{h - 8}" font-size="11" text-anchor="end">{x1 - x0:,.0f} s</text>')
    legend = []
    for i, (name, s) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        legend.append(f'<span style="color:{color}">&#9632; {html.escape(name)}</span>')
    parts.append("</svg>")
    return f'<h2>{html.escape(title)} <small>({html.escape(unit)})</small></h2>{"".join(parts)}<div class="legend">{" ".join(legend)}</div>'


def build(db: Database) -> str:
    st = status(db)
    with db.connect(autocommit=True, application="scanfill report") as conn:
        store = Store(db)
        samples = store.samples(conn)
        slices = store.slices_completed(conn)
        total_span = store.planned_span_s(conn)
    t0: datetime | None = samples[0].sampled_at if samples else (slices[0].completed_at if slices else None)
    rate: dict[str, list[tuple[float, float]]] = {}
    last: dict[str, tuple[float, int]] = {}
    per_worker_total: dict[str, int] = {}
    cumulative: list[tuple[float, float]] = []
    for wid, at, rows in samples:
        assert t0 is not None
        x = (at - t0).total_seconds()
        if wid in last and x > last[wid][0]:
            rate.setdefault(wid, []).append((x, (rows - last[wid][1]) / (x - last[wid][0])))
        last[wid] = (x, rows)
        per_worker_total[wid] = rows
        cumulative.append((x, float(sum(per_worker_total.values()))))
    covered: list[tuple[float, float]] = []
    acc = 0.0
    for at, secs in slices:
        assert t0 is not None
        acc += float(secs)
        covered.append(((at - t0).total_seconds(), 100 * min(1.0, acc / total_span) if total_span else 0.0))
    tt = st["totals"]
    rows_html = "".join(
        f"<tr><td>{r['migration_id']}</td><td>{html.escape(r['synchronizer_id'])}</td><td>{r['min']}</td>"
        f"<td>{r['max']}</td><td>{r['slices_done']}/{r['slices']}</td><td>{100 * r['covered']:.1f}%</td>"
        f"<td>{r['updates']:,}</td><td>{r['events']:,}</td></tr>" for r in st["ranges"])  # fmt: skip
    duration = cumulative[-1][0] if cumulative else 0.0
    avg = tt["rows"] / duration if duration else 0.0
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scanfill report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#0f172a}}table{{border-collapse:collapse}}
td,th{{border:1px solid #cbd5e1;padding:4px 8px;font-size:13px}}.legend span{{margin-right:1em;font-size:12px}}
.summary{{font-size:18px}}.empty{{color:#64748b}}</style></head><body>
<h1>scanfill backfill report</h1>
<p class="summary"><b>{tt["rows"]:,}</b> rows ({tt["updates"]:,} updates, {tt["events"]:,} events),
{100 * tt["fraction"]:.1f}% of the time range, {tt["slices_done"]}/{tt["slices"]} slices,
{'<b style="color:#16a34a">complete</b>' if tt["complete"] else "in progress"};
{duration:,.0f} s sampled, {avg:,.0f} rows/s on average, {len(per_worker_total)} worker(s).</p>
{_chart("rows/s per worker", rate, "rows per second")}
{_chart("cumulative rows", {"all workers": cumulative}, "rows")}
{_chart("time range covered", {"covered": covered}, "percent of the ranges' time span")}
<h2>ranges</h2><table><tr><th>migration</th><th>synchronizer</th><th>min</th><th>max</th><th>slices</th>
<th>covered</th><th>updates</th><th>events</th></tr>{rows_html}</table>
</body></html>
"""


def write(db: Database, path: str) -> dict[str, Any]:
    text = build(db)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return {"path": path, "bytes": len(text)}
