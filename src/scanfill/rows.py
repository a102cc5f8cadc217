"""The rows scanfill writes, named: the decoder builds them, the schema and the COPY statements
take their column lists from them, so no two modules agree on positions by convention.

Each field's PostgreSQL type for binary COPY is in `COPY_TYPES`. JSON columns are sent as `bytea`
on purpose: the binary bytea dumper passes the served bytes through untouched, and the server's
json receive function reads exactly those bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class UpdateRow(NamedTuple):
    update_id: str
    migration_id: int
    synchronizer_id: str  # effective: target of an assignment, source of an unassignment
    record_time: datetime
    effective_at: datetime | None
    offset: str | None
    workflow_id: str | None
    kind: str  # transaction | assignment | unassignment | import
    round: int | None
    event_count: int
    update_json: bytes


class EventRow(NamedTuple):
    event_id: str
    update_id: str
    migration_id: int
    synchronizer_id: str
    record_time: datetime
    event_type: str
    contract_id: str | None
    template_id: str | None
    package_name: str | None
    choice: str | None
    consuming: bool | None
    payload: bytes | None  # create_arguments of a created event, choice_argument of an exercise
    exercise_result: bytes | None
    signatories: list[str] | None
    observers: list[str] | None
    acting_parties: list[str] | None
    child_event_ids: list[str] | None
    created_at_ts: datetime | None
    round: int | None
    interface_id: str | None


COPY_TYPES: dict[type[tuple[object, ...]], tuple[str, ...]] = {
    UpdateRow: ("text", "int8", "text", "timestamptz", "timestamptz", "text", "text", "text", "int8", "int4", "bytea"),
    EventRow: ("text", "text", "int8", "text", "timestamptz", "text", "text", "text", "text", "text", "bool", "bytea",
               "bytea", "text[]", "text[]", "text[]", "text[]", "timestamptz", "int8", "text"),
}  # fmt: skip
assert all(len(types) == len(row._fields) for row, types in COPY_TYPES.items())  # type: ignore[attr-defined]
