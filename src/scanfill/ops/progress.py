"""Live progress of a run (rows, rows/s, percent of the time range, ETA), read from the database
so it shows every worker's work, on this machine or any other."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from scanfill.db import Database


class RateWindow:
    """rows/s over the last `window` seconds; no rate (and no ETA) until one has been measured."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.samples: list[tuple[float, int]] = []

    def add(self, t: float, rows: int) -> None:
        self.samples.append((t, rows))
        while len(self.samples) > 2 and self.samples[0][0] < t - self.window:
            self.samples.pop(0)

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, r0), (t1, r1) = self.samples[0], self.samples[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 and r1 > r0 else None


class ProgressDisplay:
    """A rich progress bar refreshed from the cursors table once a second, in a thread."""

    def __init__(self, db: Database, console: Console | None = None, interval: float = 1.0) -> None:
        self.db = db
        self.console = console or Console(stderr=True)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rate = RateWindow()

    def start(self, state: Any) -> None:
        self.progress = Progress(
            TextColumn("[bold]backfill"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rows]} rows  {task.fields[rate]}  slices {task.fields[slices]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )  # fmt: skip
        self.base_rows = state.updates + state.events
        self.task = self.progress.add_task("load", total=1000, rows="0", rate="-", slices="")
        self.progress.start()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="scanfill-progress")
        self._thread.start()

    def _loop(self) -> None:
        from scanfill.load.run import overall_state

        while not self._stop.wait(self.interval):
            try:
                st = overall_state(self.db)
            except Exception:  # a transient database error must not kill the display
                continue
            rows = st.updates + st.events
            self.rate.add(time.monotonic(), rows)
            r = self.rate.rate()
            self.progress.update(
                self.task, completed=int(st.fraction * 1000), rows=f"{rows:,}",
                rate=f"{r:,.0f} rows/s" if r else "measuring", slices=f"{st.slices_done}/{st.slices}",
            )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.progress.stop()
