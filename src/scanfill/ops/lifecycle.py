"""The guide's phases as one command: prepare (bulk-load mode), load, restore once complete."""

from __future__ import annotations

from typing import Any

from scanfill.coord import schema
from scanfill.load.run import RunOptions, RunSummary, run
from scanfill.ops import maintenance


def lifecycle(opts: RunOptions, prepare: bool, restore: bool, echo: Any, on_summary: Any,
              display: Any = None, index_progress: Any = None) -> tuple[RunSummary, bool]:
    """The guide's phases as stages: prepare (bulk-load mode), load, restore once complete.
    Returns the summary and whether the tables were restored; `on_summary` sees the load's summary
    before any restore starts (the user reads the load's result first)."""
    if prepare:
        schema.init(opts.worker.db)
        maintenance.prepare(opts.worker.db, echo=echo)
    summary = run(opts, display=display)
    on_summary(summary)
    if not (restore and summary.complete):
        return summary, False
    maintenance.restore(opts.worker.db, echo=echo, progress=index_progress)
    return summary, True
