"""What one update says about contracts: a create starts a life, the first consuming exercise ends
it, an assignment moves it. Import updates say nothing (they re-create contracts that already
live), an unassignment leaves the contract where it was until its assignment.

A position is one bigint, `migration_id * 10^16 + record time in microseconds since 1970`, so
lifespans compare across migrations whose record times overlap (`scanfill.ledger_position()` in SQL).

A fact carries its columns already framed for binary COPY, in three parts (the create with its
template, the end, the place), so merging facts picks parts and writing one joins them: the
loader's hot path builds no per-column Python values twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import orjson

from scanfill import framing
from scanfill.errors import MalformedPage, Unstorable
from scanfill.state.compact import ValueError_, arguments
from scanfill.timeutil import TimestampError, dt_to_us, parse_us

POSITION_SCALE = 10**16

# the columns of `contracts`, in COPY order, and how each part of a fact frames them
COLUMNS = ("contract_id", "template_id", "package_name", "template_name",
           "created_update_id", "created_migration_id", "created_synchronizer_id", "created_record_time",
           "created_at", "created_pos", "payload", "payload_exact", "signatories", "observers",
           "archived_update_id", "archived_migration_id", "archived_synchronizer_id", "archived_record_time",
           "archived_choice", "archived_pos", "synchronizer_id", "synchronizer_pos")  # fmt: skip
_FIELDS = framing.field_count(len(COLUMNS))
_NO_TEMPLATE, _NO_CREATE, _NO_END, _NO_PLACE = framing.NULL * 3, framing.NULL * 10, framing.NULL * 6, framing.NULL * 2


def position(migration_id: int, t_us: int) -> int:
    return migration_id * POSITION_SCALE + t_us


def template_name(template_id: str | None) -> str | None:
    """`<module>:<entity>` of `<package>:<module>:<entity>` (module names hold dots, never colons)."""
    if template_id is None:
        return None
    parts = template_id.rsplit(":", 2)
    return ":".join(parts[-2:]) if len(parts) >= 2 else template_id


class Fact(NamedTuple):
    """What is known of one contract: any of its parts may be missing (None)."""

    contract_id: str
    created_pos: int | None
    archived_pos: int | None
    synchronizer_pos: int | None
    template: bytes | None  # template_id, package_name, template_name
    create: bytes | None  # created_update_id ... observers
    end: bytes | None  # archived_update_id ... archived_pos
    place: bytes | None  # synchronizer_id, synchronizer_pos
    payload_bytes: int = 0  # what its compact payload weighs (the memory budget counts it)


def frame(f: Fact) -> bytes:
    """A fact as one binary COPY row of `contracts`."""
    return b"".join((_FIELDS, framing.text(f.contract_id), f.template or _NO_TEMPLATE, f.create or _NO_CREATE,
                     f.end or _NO_END, f.place or _NO_PLACE))  # fmt: skip


def where(uid: str, m: int, sync: str, t_us: int) -> bytes:
    """The (update id, migration, synchronizer, record time) columns a create and an end both start with."""
    return b"".join((framing.text(uid), framing.int8(m), framing.common_text(sync), framing.timestamp_us(t_us)))


_templates: dict[tuple[str | None, str | None], bytes] = {}


def _template(template_id: str | None, package_name: str | None) -> bytes:
    got = _templates.get((template_id, package_name))
    if got is None:
        if len(_templates) >= framing.CACHE_LIMIT:
            _templates.clear()
        got = _templates[(template_id, package_name)] = b"".join((
            framing.common_text(template_id), framing.common_text(package_name),
            framing.common_text(template_name(template_id))))  # fmt: skip
    return got


def created(cid: str, template_id: str | None, package_name: str | None, at: bytes, pos: int, created_at: bytes,
            payload: str | Payload | None, signatories: Sequence[str] | None, observers: Sequence[str] | None,
            sync: str) -> Fact:  # fmt: skip
    """A create at `at` (`where(...)`, framed) and position `pos`; `created_at` framed timestamptz;
    `payload` the compact JSON, or a `Payload` when jsonb cannot hold it as it is."""
    exact = payload.exact.encode() if isinstance(payload, Payload) and payload.exact is not None else None
    text = payload.jsonb if isinstance(payload, Payload) else payload
    body = text.encode() if text is not None else None
    create = b"".join((at, created_at, framing.int8(pos),
                       framing.NULL if body is None else framing.length(len(body) + 1) + b"\x01" + body,
                       framing.NULL if exact is None else framing.length(len(exact)) + exact,
                       framing.text_array(tuple(signatories or ())), framing.text_array(tuple(observers or ()))))  # fmt: skip
    return Fact(cid, pos, None, pos, _template(template_id, package_name), create, None,
                framing.common_text(sync) + framing.int8(pos), len(body or b"") + len(exact or b""))  # fmt: skip


def ended(cid: str, template_id: str | None, package_name: str | None, at: bytes, pos: int, choice: str | None) -> Fact:
    return Fact(cid, None, pos, None, _template(template_id, package_name), None,
                at + framing.common_text(choice) + framing.int8(pos), None)  # fmt: skip


def moved(cid: str, template_id: str | None, package_name: str | None, sync: str, pos: int) -> Fact:
    return Fact(cid, None, None, pos, _template(template_id, package_name), None, None,
                framing.common_text(sync) + framing.int8(pos))  # fmt: skip


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


class Payload(NamedTuple):
    """A payload jsonb cannot hold as it is (text with NUL or a lone surrogate): `jsonb` with those
    characters written as their JSON escape text (`\\u0000`, `\\ud800`: six characters), `exact` the
    compact JSON itself (for the `json` column `payload_exact`)."""

    jsonb: str
    exact: str | None


# what may stand for a character jsonb refuses: only an escape brings one into a payload's JSON
_MAYBE_UNFIT = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]")
_UNFIT = re.compile("[\x00\ud800-\udfff]")


def _escaped(v: Any) -> Any:
    """The value with every NUL and lone surrogate in its texts (and map keys) written as the six
    characters of its JSON escape."""
    if isinstance(v, str):
        return _UNFIT.sub(lambda m: f"\\u{ord(m.group()):04x}", v) if _UNFIT.search(v) else v
    if isinstance(v, list):
        return [_escaped(x) for x in v]
    if isinstance(v, dict):
        return {_escaped(k): _escaped(x) for k, x in v.items()}
    return v


def _unfit(v: Any) -> bool:
    if isinstance(v, str):
        return _UNFIT.search(v) is not None
    if isinstance(v, list):
        return any(_unfit(x) for x in v)
    if isinstance(v, dict):
        return any(_unfit(k) or _unfit(x) for k, x in v.items())
    return False


def _payload(uid: str, raw: Any) -> str | Payload | None:
    """Create arguments as compact JSON text for `contracts.payload` (jsonb); a `Payload` when a
    text holds what jsonb cannot (NUL, a lone surrogate): escaped there, exact in `payload_exact`."""
    b = bytes(raw)
    if not b or b == b"null":
        return None
    maybe = _MAYBE_UNFIT.search(b) is not None
    try:
        try:
            value = orjson.loads(b)
        except orjson.JSONDecodeError:
            if not maybe:
                raise
            value = json.loads(b)  # the standard library keeps a lone surrogate (orjson refuses it)
        got = arguments(value)
        if maybe and _unfit(got):
            return Payload(orjson.dumps(_escaped(got)).decode(), json.dumps(got, separators=(",", ":")))
        return orjson.dumps(got).decode()
    except RecursionError:
        raise Unstorable(f"update {uid}: create_arguments nested past what can be read, far beyond Daml-LF's limit of "
                         "100 nested values: no Daml ledger holds it; nothing of the page was stored. Ask the "
                         "scan's operator, or report the update id to the scanfill project") from None  # fmt: skip
    except (ValueError, ValueError_) as exc:  # orjson's and json's decode errors are ValueErrors
        raise MalformedPage(f"update {uid}: create_arguments are not protobuf_json: {exc}") from None


def _instant(uid: str, text: str | None) -> bytes:
    if text is None:
        return framing.NULL
    try:
        return framing.timestamp_us(parse_us(text))
    except TimestampError as exc:
        raise MalformedPage(f"update {uid}: bad created_at: {exc}") from None


def of_update(kind: str, uid: str, m: int, sync: str, t_us: int, events: Sequence[EventLike], at: bytes | None = None,
              instant: Callable[[str | None], bytes] | None = None) -> list[Fact]:  # fmt: skip
    """The facts of one decoded update (`kind` as stored in ledger_updates). `at` (`where(...)`) and
    `instant` (created_at text -> framed) let the decoder share what it framed already."""
    if kind == "import" or kind == "unassignment":
        return []
    pos = position(m, t_us)
    at = at if at is not None else where(uid, m, sync, t_us)
    out: list[Fact] = []
    for ev in events:
        cid = ev.contract_id
        if cid is None:
            continue
        if kind == "assignment":
            out.append(moved(cid, ev.template_id, ev.package_name, sync, pos))
        elif ev.event_type == "created_event":
            when = instant(ev.created_at) if instant is not None else _instant(uid, ev.created_at)
            out.append(created(cid, ev.template_id, ev.package_name, at, pos, when,
                               _payload(uid, ev.create_arguments), ev.signatories, ev.observers, sync))  # fmt: skip
        elif ev.event_type == "exercised_event" and ev.consuming:
            out.append(ended(cid, ev.template_id, ev.package_name, at, pos, ev.choice))
    return out


def of_stored(kind: str, uid: str, m: int, sync: str, t: datetime, event_type: str, cid: str, template_id: str | None,
              package_name: str | None, created_at: datetime | None, signatories: list[str] | None,
              observers: list[str] | None, choice: str | None, consuming: bool | None,
              payload: str | None) -> Fact | None:  # fmt: skip
    """The fact of one stored ledger_events row (joined with its update's kind): `rebuild` derives
    the state from the copy with the rules `of_update` applies to pages."""
    if kind in ("import", "unassignment"):
        return None
    t_us = dt_to_us(t)
    pos = position(m, t_us)
    if kind == "assignment":
        return moved(cid, template_id, package_name, sync, pos)
    if event_type == "created_event":
        when = framing.timestamp_us(dt_to_us(created_at)) if created_at is not None else framing.NULL
        return created(cid, template_id, package_name, where(uid, m, sync, t_us), pos, when,
                       _payload(uid, payload.encode()) if payload is not None else None, signatories, observers, sync)  # fmt: skip
    if consuming:
        return ended(cid, template_id, package_name, where(uid, m, sync, t_us), pos, choice)
    return None


def _earlier(a: int | None, b: int | None) -> bool:
    return a is not None and (b is None or a < b)


def merge(facts: Iterable[Fact]) -> list[Fact]:
    """One fact per contract (a statement may touch a row once), sorted by contract id (every
    writer locks contract rows in the same order, so concurrent pages cannot deadlock). Rules, the
    same as the SQL merge: the earliest create, the earliest consuming exercise, the newest move."""
    by: dict[str, Fact] = {}
    for f in facts:
        old = by.get(f.contract_id)
        by[f.contract_id] = f if old is None else combine(old, f)
    return [by[k] for k in sorted(by)]


def combine(old: Fact, new: Fact) -> Fact:
    c = new if _earlier(new.created_pos, old.created_pos) else old
    e = new if _earlier(new.archived_pos, old.archived_pos) else old
    p = new if new.synchronizer_pos is not None and (old.synchronizer_pos is None
                                                     or new.synchronizer_pos > old.synchronizer_pos) else old  # fmt: skip
    template = c.template if c.create is not None else (old.template or new.template)
    return Fact(old.contract_id, c.created_pos, e.archived_pos, p.synchronizer_pos, template, c.create, e.end,
                p.place, c.payload_bytes)  # fmt: skip
