"""Every Scan endpoint scanfill calls, once: its path and the body it is sent.

The shapes follow Splice's published Scan OpenAPI (`scan.yaml`) and `docs/scan-api.md`; the
response types that are decoded in bulk live with their decoders (`load.decode`), the small ones
are read where they are used. No other module writes a Scan path.
"""

from __future__ import annotations

from typing import Any

from scanfill.timeutil import format_us

MIGRATION_INFO = "/v0/backfilling/migration-info"
UPDATES_BEFORE = "/v0/backfilling/updates-before"
IMPORT_UPDATES = "/v0/backfilling/import-updates"
BACKFILL_STATUS = "/v0/backfilling/status"
UPDATES_V2 = "/v2/updates"
EVENTS = "/v0/events"
MIGRATIONS_LAST = "/v0/migrations/last"
DSO_SEQUENCERS = "/v0/dso-sequencers"
SCANS = "/v0/scans"


def migration_info(migration_id: int) -> dict[str, Any]:
    return {"migration_id": migration_id}


def updates_before(migration_id: int, synchronizer_id: str, before: str, at_or_after_us: int | None,
                   count: int) -> dict[str, Any]:  # fmt: skip
    """`before` is the exact record-time text of the oldest update stored (the cursor), never reformatted."""
    body: dict[str, Any] = {"migration_id": migration_id, "synchronizer_id": synchronizer_id, "before": before,
                            "count": count}  # fmt: skip
    if at_or_after_us is not None:
        body["at_or_after"] = format_us(at_or_after_us)
    return body


def import_updates(migration_id: int, after_update_id: str, limit: int) -> dict[str, Any]:
    return {"migration_id": migration_id, "after_update_id": after_update_id, "limit": limit}


def forward(after: tuple[int, int] | None, page_size: int) -> dict[str, Any]:
    """`/v2/updates` and `/v0/events`: the page after (migration, record time), re-reading the
    boundary microsecond (`after` - 1 us): another synchronizer's update may share it."""
    body: dict[str, Any] = {"page_size": page_size, "daml_value_encoding": "protobuf_json"}
    if after is not None:
        body["after"] = {"after_migration_id": after[0], "after_record_time": format_us(after[1] - 1)}
    return body


ACS_SNAPSHOT_BEFORE = "/v0/state/acs/snapshot-timestamp"
ACS = "/v1/state/acs"
HOLDINGS_SUMMARY = "/v1/holdings/summary"


def acs_snapshot_before(migration_id: int, before_us: int) -> str:
    """The newest ACS snapshot of a migration at or before a time (a GET: the query is the request)."""
    from urllib.parse import urlencode

    return f"{ACS_SNAPSHOT_BEFORE}?{urlencode({'before': format_us(before_us), 'migration_id': migration_id})}"


def acs(migration_id: int, record_time: str, page_size: int, after: int | None) -> dict[str, Any]:
    """A page of the snapshot taken exactly at `record_time` (as the scan printed it)."""
    body: dict[str, Any] = {"migration_id": migration_id, "record_time": record_time, "record_time_match": "exact",
                            "page_size": page_size}  # fmt: skip
    if after is not None:
        body["after"] = after
    return body


def holdings_summary(migration_id: int, record_time: str, owners: list[str]) -> dict[str, Any]:
    return {"migration_id": migration_id, "record_time": record_time, "record_time_match": "exact",
            "owner_party_ids": owners}  # fmt: skip


ROUND_TOTALS = "/v0/round-totals"  # removed in Splice 0.6.7; older scans (and archives) still answer
ROUND_PARTY_TOTALS = "/v0/round-party-totals"
ROUND_TOTALS_MAX = 200  # rounds a request may span
ROUND_PARTY_TOTALS_MAX = 50


def round_range(start_round: int, end_round: int) -> dict[str, Any]:
    return {"start_round": start_round, "end_round": end_round}
