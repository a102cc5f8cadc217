"""The pure parts of the completeness ledger and its reports: a commit's day counts, the report's
round ticks and thinning, and `--days` parsing (no PostgreSQL, no HTTP)."""

from __future__ import annotations

from datetime import date

import click
import pytest

from scanfill.cli.ops import parse_days
from scanfill.load.decode import Batch, Update
from scanfill.load.sink import day_counts
from scanfill.ops.report import nice_step, short, thin
from scanfill.timeutil import MIN_US, parse_us


def update(uid: str, m: int, sync: str, t: str, events: int) -> Update:
    return Update(uid, m, sync, parse_us(t) if t else MIN_US, t, events, b"", b"", [], [])


def test_day_counts_group_a_commit_by_migration_synchronizer_and_utc_day_sorted() -> None:
    b = Batch()
    for u in (update("a", 1, "s2", "2024-06-25T00:00:00Z", 3), update("b", 1, "s1", "2024-06-24T23:59:59.999999Z", 2),
              update("c", 1, "s1", "2024-06-24T01:00:00Z", 1), update("d", 0, "s1", "2024-06-25T12:00:00Z", 0),
              update("imp", 1, "s1", "", 7)):  # an import update (0001-01-01) belongs to no day
        b.add(u)
    got = [(d.migration_id, d.synchronizer_id, d.day, d.updates, d.events, d.first_record_time.isoformat(),
            d.last_record_time.isoformat()) for d in day_counts(b)]  # fmt: skip
    assert got == [
        (0, "s1", date(2024, 6, 25), 1, 0, "2024-06-25T12:00:00+00:00", "2024-06-25T12:00:00+00:00"),
        (1, "s1", date(2024, 6, 24), 2, 3, "2024-06-24T01:00:00+00:00", "2024-06-24T23:59:59.999999+00:00"),
        (1, "s2", date(2024, 6, 25), 1, 3, "2024-06-25T00:00:00+00:00", "2024-06-25T00:00:00+00:00"),
    ]


@pytest.mark.parametrize(("span", "step"), [(42_137, 10_000), (1, 0.2), (980, 200), (5e6, 1e6), (0, 1.0)])
def test_ticks_are_round(span: float, step: float) -> None:
    assert nice_step(span) == pytest.approx(step)


def test_tick_labels_are_short() -> None:
    assert [short(v) for v in (0, 500, 1500, 40_000, 1_500_000, 2e9, 0.25, 770.5)] == [
        "0", "500", "1.5k", "40k", "1.5M", "2G", "0.25", "770"]  # fmt: skip


def test_thinning_keeps_a_stall_and_a_spike() -> None:
    pts = [(float(x), 100.0) for x in range(10_000)]
    pts[5_000] = (5_000.0, 0.0)  # a stall: the rate drops to zero for one sample
    pts[7_000] = (7_000.0, 900.0)
    out = thin(pts, 100)
    assert len(out) <= 200 and (7_000.0, 900.0) in out and (5_000.0, 0.0) in out
    assert [p[0] for p in out] == sorted(p[0] for p in out)
    assert thin(pts[:150], 100) == pts[:150]


def test_days_parse_lists_and_ranges_and_refuse_nonsense() -> None:
    assert parse_days("2026-02-05") == [date(2026, 2, 5)]
    assert parse_days("2026-02-01..2026-02-03,2026-01-30") == [date(2026, 1, 30), date(2026, 2, 1), date(2026, 2, 2),
                                                              date(2026, 2, 3)]  # fmt: skip
    for bad in ("yesterday", "2026-02-05..2026-02-01", "2026-13-01"):
        with pytest.raises(click.BadParameter):
            parse_days(bad)
