"""Prometheus metrics of a worker process (`scanfill run --metrics-port`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from scanfill.timeutil import parse_us


class Metrics:
    """The worker's hooks: every commit, request and lease takeover lands here."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.rows = Counter("scanfill_rows_loaded", "Rows committed", ["table"], registry=r)
        self.pages = Counter("scanfill_pages_loaded", "Pages committed", registry=r)
        self.bytes = Counter("scanfill_json_bytes_loaded", "Bytes of JSON committed", registry=r)
        self.requests = Histogram("scanfill_scan_request_seconds", "Scan request latency", ["url", "status"],
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=r)  # fmt: skip
        self.errors = Counter("scanfill_scan_errors", "Failed Scan requests (retried)", ["url", "status"], registry=r)
        self.commit = Histogram("scanfill_batch_commit_seconds", "Time to COPY and commit one batch",
                                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)  # fmt: skip
        self.takeovers = Counter("scanfill_lease_takeovers", "Slices taken over from expired or dead workers",
                                 registry=r)  # fmt: skip
        self.cursor = Gauge("scanfill_cursor_position_seconds", "Record time (epoch s) of each slice's cursor",
                            ["slice"], registry=r)  # fmt: skip
        self.follow_cursor = Gauge("scanfill_follow_cursor_seconds",
                                   "Record time (epoch s) of the newest update the follower committed", registry=r)
        self.follow_lag = Gauge("scanfill_follow_lag_seconds",
                                "Now minus the record time of the newest followed update", registry=r)
        self.follow_lag.set_function(self._lag)
        self._follow_us: int | None = None
        self.disagreements = Counter("scanfill_scan_disagreements", "Pages a scan served that K other scans did not",
                                     ["url"], registry=r)  # fmt: skip
        self.refused = Counter("scanfill_pages_refused", "Pages refused whole (garbage, or a position no scan "
                               "announces) and asked again", ["url"], registry=r)  # fmt: skip
        self.follow_problems = Counter("scanfill_follow_problems", "Times the follower could not get a page past "
                                       "the pipeline's retries and asked again later", ["stream"], registry=r)  # fmt: skip

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def on_commit(self, cursor_name: str, batch: Any, pages: int, seconds: float, result: Any) -> None:
        self.rows.labels("ledger_updates").inc(len(batch.updates))
        self.rows.labels("ledger_events").inc(batch.events)
        self.pages.inc(pages)
        self.bytes.inc(batch.nbytes)
        self.commit.observe(seconds)
        self.cursor.labels(cursor_name).set(parse_us(result.last_before) / 1e6)

    def on_request(self, url: str, outcome: str, seconds: float) -> None:
        self.requests.labels(url, outcome).observe(seconds)
        if outcome != "200":
            self.errors.labels(url, outcome).inc()

    def on_takeover(self) -> None:
        self.takeovers.inc()

    def on_disagreement(self, url: str) -> None:
        self.disagreements.labels(url).inc()

    def on_refused(self, url: str) -> None:
        self.refused.labels(url).inc()

    def on_follow_problem(self, stream: str) -> None:
        self.follow_problems.labels(stream).inc()

    def on_follow(self, position: tuple[int, int]) -> None:
        self._follow_us = position[1]
        self.follow_cursor.set(position[1] / 1e6)

    def _lag(self) -> float:
        import time

        return time.time() - self._follow_us / 1e6 if self._follow_us is not None else float("nan")
