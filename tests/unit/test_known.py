"""`Known`: what the scans announce, and the pages it refuses for going beyond it. The scans'
migration-info answers come from a stand-in of the client's one method Known calls (the
pipeline's seam to the HTTP layer), so each case is exact and fast; the HTTP path itself is
tested against the simulator (tests/test_pipeline.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scanfill.errors import MalformedPage, ScanError, ScanHTTPError
from scanfill.load.pipeline import Known
from scanfill.timeutil import format_us

SYNC_A, SYNC_B = "global-domain::1220aa", "global-domain::1220bb"
T0 = 1_719_266_000_000_000


def info(*ranges: tuple[str, int]) -> dict[str, Any]:
    return {"record_time_range": [{"synchronizer_id": s, "min": format_us(T0), "max": format_us(top)}
                                  for s, top in ranges]}  # fmt: skip


class Scans:
    """migration-info per URL and migration, changeable between calls; counts the calls."""

    def __init__(self, answers: dict[str, dict[int, Any]]) -> None:
        self.answers = answers
        self.calls = 0

    async def migration_info_all(self, m: int) -> dict[str, Any]:
        self.calls += 1
        out: dict[str, Any] = {}
        for url, by_m in self.answers.items():
            got = by_m.get(m, ScanHTTPError(404, url, b"no data for this migration"))
            out[url] = got
        return out


def check(known: Known, *positions: tuple[str, int, str | None, int]) -> None:
    asyncio.run(known.check(list(positions), "page"))


def test_a_page_within_what_the_scans_announce_passes_and_asks_once() -> None:
    scans = Scans({"a": {2: info((SYNC_A, T0 + 100))}, "b": {2: info((SYNC_A, T0 + 90), (SYNC_B, T0 + 50))}})
    known = Known(scans)  # type: ignore[arg-type]
    check(known, ("u1", 2, SYNC_A, T0 + 10), ("u2", 2, SYNC_B, T0 + 100))
    check(known, ("u3", 2, None, T0 + 100))  # the newest time any scan reports is the head, whatever the synchronizer
    assert scans.calls == 1  # read once, then known
    assert known.synchronizers[2] == {SYNC_A, SYNC_B} and known.heads[2] == T0 + 100


def test_a_migration_no_scan_announces_is_refused() -> None:
    known = Known(Scans({"a": {0: info((SYNC_A, T0))}, "b": {}}))  # type: ignore[arg-type]
    with pytest.raises(MalformedPage, match="migration 99, which no scan announces"):
        check(known, ("u1", 99, SYNC_A, T0))


def test_a_synchronizer_no_scan_reports_is_refused() -> None:
    known = Known(Scans({"a": {2: info((SYNC_A, T0 + 100))}}))  # type: ignore[arg-type]
    with pytest.raises(MalformedPage, match="names synchronizer bogus::1220, which no scan reports"):
        check(known, ("u1", 2, SYNC_A, T0), ("u2", 2, "bogus::1220", T0 + 1))


def test_a_position_past_every_head_is_refused_until_a_scan_reports_it() -> None:
    scans = Scans({"a": {2: info((SYNC_A, T0 + 100))}})
    known = Known(scans)  # type: ignore[arg-type]
    with pytest.raises(MalformedPage, match="lies beyond the newest record time any scan reports"):
        check(known, ("u1", 2, SYNC_A, T0 + 101))
    scans.answers["a"][2] = info((SYNC_A, T0 + 500))  # the migration grew: asked again, now it passes
    check(known, ("u1", 2, SYNC_A, T0 + 101))
    assert scans.calls == 2 and known.heads[2] == T0 + 500


def test_no_scan_answering_is_a_scan_error_not_a_refusal() -> None:
    known = Known(Scans({"a": {2: ScanError("connection refused")}, "b": {2: ScanHTTPError(503, "b", b"busy")}}))  # type: ignore[arg-type]
    with pytest.raises(ScanError, match="no scan answered migration-info"):
        check(known, ("u1", 2, SYNC_A, T0))


def test_malformed_ranges_are_skipped_not_believed() -> None:
    bad = {"record_time_range": [{"synchronizer_id": SYNC_A, "max": "not a time"}, {"max": format_us(T0 + 9)},
                                 {"synchronizer_id": SYNC_B, "max": format_us(T0 + 5)}]}  # fmt: skip
    known = Known(Scans({"a": {2: bad}}))  # type: ignore[arg-type]
    check(known, ("u1", 2, SYNC_B, T0 + 5))
    with pytest.raises(MalformedPage, match="names synchronizer"):
        check(known, ("u2", 2, SYNC_A, T0 + 1))  # only announced by an entry that could not be read
