"""What one update says about contracts: a create starts a life, the first consuming exercise ends
it, an assignment moves it. Import updates say nothing (they re-create contracts that already
live), an unassignment leaves the contract where it was until its assignment.

A position is one bigint, `migration_id * 10^16 + record time in microseconds since 1970`, so
lifespans compare across migrations whose record times overlap (`scanfill.ledger_position()` in SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import orjson

from scanfill.errors import MalformedPage
from scanfill.state.compact import ValueError_, arguments
from scanfill.timeutil import TimestampError, dt_to_us, parse_us, us_to_dt

POSITION_SCALE = 10**16


def position(migration_id: int, t_us: int) -> int:
    return migration_id * POSITION_SCALE + t_us


def template_name(template_id: str | None) -> str | None:
    """`<module>:<entity>` of `<package>:<module>:<entity>` (module names hold dots, never colons)."""
    if template_id is None:
        return None
    parts = template_id.rsplit(":", 2)
    return ":".join(parts[-2:]) if len(parts) >= 2 else template_id


class Fact(NamedTuple):
    """One row of the merge into `contracts`: any of its three halves may be empty (None)."""

    contract_id: str
    template_id: str | None
    package_name: str | None
    template_name: str | None
    created_update_id: str | None
    created_migration_id: int | None
    created_synchronizer_id: str | None
    created_record_time: datetime | None
    created_at: datetime | None
    created_pos: int | None
    payload: str | None  # compact JSON text
    signatories: list[str] | None
    observers: list[str] | None
    archived_update_id: str | None
    archived_migration_id: int | None
    archived_synchronizer_id: str | None
    archived_record_time: datetime | None
    archived_choice: str | None
    archived_pos: int | None
    synchronizer_id: str | None  # where it is: its creation's, or its newest assignment's target
    synchronizer_pos: int | None


SQL_TYPES = ("text", "text", "text", "text", "text", "int8", "text", "timestamptz", "timestamptz", "int8", "jsonb",
             "text[]", "text[]", "text", "int8", "text", "timestamptz", "text", "int8", "text", "int8")  # fmt: skip
assert len(SQL_TYPES) == len(Fact._fields)
_EMPTY = Fact._make([None] * len(Fact._fields))


class EventLike(Protocol):
    event_type: str
    contract_id: str | None
    template_id: str | None
    package_name: str | None
    created_at: str | None
    signatories: tuple[str, ...] | None
    observers: tuple[str, ...] | None
    choice: str | None
    consuming: bool | None

    @property
    def create_arguments(self) -> Any: ...


def _instant(uid: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return us_to_dt(parse_us(text))
    except TimestampError as exc:
        raise MalformedPage(f"update {uid}: bad created_at: {exc}") from None


def _payload(uid: str, raw: Any) -> str | None:
    b = bytes(raw)
    if not b or b == b"null":
        return None
    try:
        return orjson.dumps(arguments(orjson.loads(b))).decode()
    except (orjson.JSONDecodeError, ValueError_) as exc:
        raise MalformedPage(f"update {uid}: create_arguments are not protobuf_json: {exc}") from None


def of_update(kind: str, uid: str, m: int, sync: str, t_us: int, events: Sequence[EventLike]) -> list[Fact]:
    """The facts of one decoded update (`kind` as stored in ledger_updates)."""
    if kind == "import" or kind == "unassignment":
        return []
    pos = position(m, t_us)
    t = us_to_dt(t_us)
    out: list[Fact] = []
    for ev in events:
        cid = ev.contract_id
        if cid is None:
            continue
        if kind == "assignment":
            out.append(_EMPTY._replace(contract_id=cid, template_id=ev.template_id, package_name=ev.package_name,
                                       template_name=template_name(ev.template_id), synchronizer_id=sync,
                                       synchronizer_pos=pos))  # fmt: skip
        elif ev.event_type == "created_event":
            out.append(Fact(cid, ev.template_id, ev.package_name, template_name(ev.template_id), uid, m, sync, t,
                            _instant(uid, ev.created_at), pos, _payload(uid, ev.create_arguments),
                            list(ev.signatories or ()), list(ev.observers or ()), None, None, None, None, None, None,
                            sync, pos))  # fmt: skip
        elif ev.event_type == "exercised_event" and ev.consuming:
            out.append(_EMPTY._replace(contract_id=cid, template_id=ev.template_id, package_name=ev.package_name,
                                       template_name=template_name(ev.template_id), archived_update_id=uid,
                                       archived_migration_id=m, archived_synchronizer_id=sync,
                                       archived_record_time=t, archived_choice=ev.choice, archived_pos=pos))  # fmt: skip
    return out


def of_stored(kind: str, uid: str, m: int, sync: str, t: datetime, event_type: str, cid: str, template_id: str | None,
              package_name: str | None, created_at: datetime | None, signatories: list[str] | None,
              observers: list[str] | None, choice: str | None, consuming: bool | None,
              payload: str | None) -> Fact | None:  # fmt: skip
    """The fact of one stored ledger_events row (joined with its update's kind): `rebuild` derives
    the state from the copy with the rules `of_update` applies to pages."""
    if kind in ("import", "unassignment"):
        return None
    pos = position(m, dt_to_us(t))
    tn = template_name(template_id)
    if kind == "assignment":
        return _EMPTY._replace(contract_id=cid, template_id=template_id, package_name=package_name, template_name=tn,
                               synchronizer_id=sync, synchronizer_pos=pos)  # fmt: skip
    if event_type == "created_event":
        return Fact(cid, template_id, package_name, tn, uid, m, sync, t, created_at, pos,
                    _payload(uid, payload.encode()) if payload is not None else None, signatories or [],
                    observers or [], None, None, None, None, None, None, sync, pos)  # fmt: skip
    if consuming:
        return _EMPTY._replace(contract_id=cid, template_id=template_id, package_name=package_name, template_name=tn,
                               archived_update_id=uid, archived_migration_id=m, archived_synchronizer_id=sync,
                               archived_record_time=t, archived_choice=choice, archived_pos=pos)  # fmt: skip
    return None


_CREATE = slice(1, 13)
_ARCHIVE = slice(13, 19)


def _earlier(a: int | None, b: int | None) -> bool:
    return a is not None and (b is None or a < b)


def merge(facts: Iterable[Fact]) -> list[Fact]:
    """One fact per contract (a statement may touch a row once), sorted by contract id (every
    writer locks contract rows in the same order, so concurrent pages cannot deadlock). Rules, the
    same as the SQL merge: the earliest create, the earliest consuming exercise, the newest move."""
    by: dict[str, Fact] = {}
    for f in facts:
        old = by.get(f.contract_id)
        if old is None:
            by[f.contract_id] = f
            continue
        by[f.contract_id] = combine(old, f)
    return [by[k] for k in sorted(by)]


def combine(old: Fact, new: Fact) -> Fact:
    row: list[Any] = list(old)
    got: list[Any] = list(new)
    if _earlier(new.created_pos, old.created_pos):
        row[_CREATE] = got[_CREATE]
    elif old.template_id is None and new.template_id is not None:
        row[1:4] = got[1:4]
    if _earlier(new.archived_pos, old.archived_pos):
        row[_ARCHIVE] = got[_ARCHIVE]
    if new.synchronizer_pos is not None and (old.synchronizer_pos is None or new.synchronizer_pos > old.synchronizer_pos):
        row[19:21] = got[19:21]
    return Fact._make(row)
