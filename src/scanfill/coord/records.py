"""The rows the store's read statements return, named (psycopg's `args_row` builds them in the
order of each statement's columns in `queries.sql`): callers read fields, never `row[n]`."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple


class RangeBounds(NamedTuple):
    migration_id: int
    synchronizer_id: str
    min_text: str
    max_text: str


class RangeProgress(NamedTuple):
    migration_id: int
    synchronizer_id: str
    min_text: str
    max_text: str
    source_complete: bool
    slices: int
    slices_done: int
    slices_active: int
    updates: Decimal
    events: Decimal
    span_s: Decimal
    covered_s: Decimal


class RateWindow(NamedTuple):
    worker_id: str
    first_at: datetime
    last_at: datetime
    first_rows: int
    last_rows: int


class LiveWorker(NamedTuple):
    worker_id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat: datetime
    rows_loaded: int
    leases: int


class ScanDisagreements(NamedTuple):
    url: str
    pages: int
    last_seen: datetime
    updates: int | None


class FailedSlice(NamedTuple):
    cursor_name: str
    migration_id: int
    synchronizer_id: str
    failed_at: datetime
    failure: str


class Sample(NamedTuple):
    worker_id: str
    sampled_at: datetime
    rows: int


class SliceCompleted(NamedTuple):
    completed_at: datetime
    span_s: Decimal


class OpenSlice(NamedTuple):
    cursor_name: str
    last_before: str


class CommittedVsStored(NamedTuple):
    updates_committed: Decimal
    updates_stored: int
    events_committed: Decimal
    events_stored: int

    @property
    def equal(self) -> bool:
        return self.updates_committed == self.updates_stored and self.events_committed == self.events_stored


class RangeCoverage(NamedTuple):
    migration_id: int
    synchronizer_id: str
    min_text: str
    slices_end_text: str  # its top, or where the follower took over
    followed: bool


class RangeSlice(NamedTuple):
    cursor_name: str
    min_time: datetime
    max_time: datetime


class FollowState(NamedTuple):
    owner: str | None
    host: str | None
    pid: int | None
    since: datetime | None
    heartbeat: datetime | None
    active: bool | None
    updates_loaded: int
    events_loaded: int
    cursor_migration: int | None
    cursor_text: str | None
    cursor_time: datetime | None
    cursor_items: int | None
    events_cursor_text: str | None
    events_items: int | None
    scan_events: int
    problems: int
    last_problem: str | None
    last_problem_at: datetime | None


class DayCount(NamedTuple):
    """A commit's updates on one (migration, synchronizer, UTC day)."""

    migration_id: int
    synchronizer_id: str
    day: date
    updates: int
    events: int
    first_record_time: datetime
    last_record_time: datetime


class DayStatus(NamedTuple):
    """One row of `completeness_days()` (completeness.sql says what each status means)."""

    migration_id: int
    synchronizer_id: str
    day: date
    status: str  # complete | in progress | gap | not yet loaded
    updates: int
    events: int
    first_record_time: datetime | None
    last_record_time: datetime | None
    sources: list[str]  # backfill, follow, refetch; counted (recounted from the tables)
    agreed_by: int | None  # the fewest scans that agreed on a page stored into the day
    disagreements: int
    verified_at: datetime | None
    verified_by: list[str] | None
    verified_updates: int | None
    detail: str | None


class DayFinding(NamedTuple):
    """What `verify` proved wrong about a day and the command that repairs it (open until repaired)."""

    migration_id: int
    synchronizer_id: str
    day: date
    finding: str
    repair: str | None
    found_at: datetime


class Watermark(NamedTuple):
    """`complete_through()`: every position up to here is stored."""

    migration_id: int
    record_time: datetime
    ledger_position: int


class ExportPartition(NamedTuple):
    """A (migration, UTC day) partition whose stored rows changed since the last export."""

    migration_id: int
    day: date
    updates: int
    events: int
    mark: str  # the source's counts and last change, recorded once exported


class Exported(NamedTuple):
    migration_id: int
    day: date
    updates: int
    events: int
    delta_version: int | None
    exported_at: datetime
