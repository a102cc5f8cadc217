"""Decode a Scan page into database rows, and refuse a page that breaks the paging contract.

msgspec decodes into typed structs and passes payloads through as raw bytes (`msgspec.Raw`), so no
Python objects are built for Daml values that are only stored; only the one payload per update
that carries its round is parsed.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import orjson

from scanfill.errors import MalformedPage
from scanfill.load.rows import EventRow, UpdateRow
from scanfill.timeutil import TimestampError, parse_us, us_to_dt

TRANSFER_CHOICES = frozenset({"AmuletRules_Transfer", "AmuletRules_BuyMemberTraffic"})
ROUND_TEMPLATES = frozenset({
    "OpenMiningRound", "IssuingMiningRound", "SummarizingMiningRound", "ClosedMiningRound",
    "AppRewardCoupon", "ValidatorRewardCoupon", "SvRewardCoupon", "ValidatorFaucetCoupon",
    "ValidatorLivenessActivityRecord", "UnclaimedReward",
})  # fmt: skip
AMULET_TEMPLATES = {
    "Amulet": ("amount", "createdAt", "number"),
    "LockedAmulet": ("amulet", "amount", "createdAt", "number"),
}


_NONE = msgspec.Raw(b"")


class Event(msgspec.Struct):
    event_type: str
    event_id: str
    contract_id: str | None = None
    template_id: str | None = None
    package_name: str | None = None
    create_arguments: msgspec.Raw = _NONE
    created_at: str | None = None
    signatories: list[str] | None = None
    observers: list[str] | None = None
    choice: str | None = None
    choice_argument: msgspec.Raw = _NONE
    child_event_ids: list[str] | None = None
    exercise_result: msgspec.Raw = _NONE
    consuming: bool | None = None
    acting_parties: list[str] | None = None
    interface_id: str | None = None  # set when the choice was exercised through an interface


class KnownEvent(Event, forbid_unknown_fields=True):
    """An event with no field beyond those `ledger_events` has columns for: only such events may be
    cut out of `update_json` (`--update-json envelope`) without losing anything."""


class Reassignment(msgspec.Struct):
    source_synchronizer: str
    target_synchronizer: str
    migration_id: int
    created_event: Event | None = None
    contract_id: str | None = None


class Item(msgspec.Struct):
    update_id: str
    record_time: str
    migration_id: int | None = None
    workflow_id: str | None = None
    synchronizer_id: str | None = None
    effective_at: str | None = None
    offset: str | None = None
    events_by_id: msgspec.Raw = _NONE  # decoded separately: its bytes are also what `lean` cuts out
    event: Reassignment | None = None


class Page(msgspec.Struct):
    transactions: list[msgspec.Raw]


_page_decoder = msgspec.json.Decoder(Page)
_item_decoder = msgspec.json.Decoder(Item)
_events_decoder = msgspec.json.Decoder(dict[str, Event])
_known_events_decoder = msgspec.json.Decoder(dict[str, KnownEvent])


def _decode_events(raw: msgspec.Raw, lean: bool) -> tuple[dict[str, Event], bool]:
    """The events of a transaction, and whether its update JSON may drop them (`lean`): not when an
    event carries a field a newer Scan added that no column holds."""
    if lean:
        try:
            return dict(_known_events_decoder.decode(raw)), True
        except msgspec.ValidationError:
            pass
    return _events_decoder.decode(raw), False


def _lean(raw: bytes, events: msgspec.Raw) -> bytes:
    """The update as served with `events_by_id` emptied: its events are all in ledger_events, and
    storing them twice costs the server's JSON work and space (`--update-json envelope`)."""
    cut = bytes(events)
    at = raw.find(cut)
    return raw if at < 0 else raw[:at] + b"{}" + raw[at + len(cut) :]




@dataclass
class Batch:
    """Rows decoded from one or more consecutive pages of one slice, newest first."""

    updates: list[UpdateRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    oldest: str | None = None  # exact record-time string of the oldest update: the next `before`
    oldest_us: int | None = None
    items: int = 0
    nbytes: int = 0
    times: list[tuple[int, str]] = field(default_factory=list)  # per update, in page order
    last_position: tuple[int, int] | None = None  # a followed page's last (migration, record time)

    @property
    def rows(self) -> int:
        return len(self.updates) + len(self.events)

    def extend(self, other: Batch) -> None:
        self.updates.extend(other.updates)
        self.events.extend(other.events)
        if other.oldest is not None:
            self.oldest, self.oldest_us = other.oldest, other.oldest_us
        self.items += other.items
        self.nbytes += other.nbytes
        self.times.extend(other.times)

    def drop_older_than(self, lo_us: int) -> None:
        """Keep only rows at or after `lo_us` (after the slice's lower bound was raised by a split)."""
        keep = {u.update_id for u, (t, _) in zip(self.updates, self.times, strict=True) if t >= lo_us}
        self.updates = [u for u in self.updates if u.update_id in keep]
        self.events = [e for e in self.events if e.update_id in keep]
        self.times = [tt for tt in self.times if tt[0] >= lo_us]
        self.oldest_us, self.oldest = self.times[-1] if self.times else (None, None)


def _ts(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise MalformedPage(f"invalid timestamp {text!r}") from None


def _clean(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: write it as the JSON escape (the json columns keep the original)."""
    return s.replace("\x00", "\\u0000") if s is not None and "\x00" in s else s


def _clean_list(v: list[str] | None) -> list[str] | None:
    return [_clean(x) or "" for x in v] if v is not None else None


# ----- rounds ------------------------------------------------------------------------------------


def _int_of(v: Any) -> int | None:
    if isinstance(v, dict):
        v = v.get("int64", v.get("number"))
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    return None


def _first_round_record(v: Any, depth: int) -> int | None:
    """Label-less records: the first nested record made of exactly one int64 is a `Round`."""
    if depth < 0 or not isinstance(v, dict):
        return None
    if "record" in v:
        fields = v["record"].get("fields") or []
        if len(fields) == 1 and isinstance(fields[0].get("value"), dict) and "int64" in fields[0]["value"]:
            return _int_of(fields[0]["value"])
        for f in fields:
            got = _first_round_record(f.get("value"), depth - 1)
            if got is not None:
                return got
    return None


def find_number(value: Any, path: tuple[str, ...]) -> int | None:
    """The integer at `path` in a protobuf_json (labelled or positional) or compact_json value."""
    if isinstance(value, dict) and "record" in value:
        fields = value["record"].get("fields") or []
        if fields and "label" not in fields[0]:
            return _first_round_record(value, depth=4)
        cur: Any = value
        for name in path:
            rec = cur.get("record") if isinstance(cur, dict) else None
            if not rec:
                return None
            cur = next((f.get("value") for f in rec.get("fields") or [] if f.get("label") == name), None)
            if cur is None:
                return None
        return _int_of(cur)
    cur = value
    for name in path:
        if not isinstance(cur, dict) or name not in cur:
            return None
        cur = cur[name]
    return _int_of(cur)


def _entity(template_id: str | None) -> str:
    return template_id.rsplit(":", 1)[-1] if template_id else ""


def _preorder(key: str) -> int:
    tail = key.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def derive_round(events: list[Event]) -> int | None:
    """scan-api.md section 4: transfer results, then round-bearing contracts, then Amulet `createdAt`.

    Never wall-clock time: an update without a round in its payload gets NULL.
    """
    for ev in events:
        if ev.choice in TRANSFER_CHOICES and ev.exercise_result:
            value = orjson.loads(bytes(ev.exercise_result))
            got = find_number(value, ("round", "number"))
            if got is None:
                got = find_number(value, ("transferResult", "round", "number"))
            if got is not None:
                return got
    for ev in events:
        if ev.event_type == "created_event" and _entity(ev.template_id) in ROUND_TEMPLATES and ev.create_arguments:
            got = find_number(orjson.loads(bytes(ev.create_arguments)), ("round", "number"))
            if got is not None:
                return got
    for ev in events:
        path = AMULET_TEMPLATES.get(_entity(ev.template_id))
        if ev.event_type == "created_event" and path and ev.create_arguments:
            got = find_number(orjson.loads(bytes(ev.create_arguments)), path)
            if got is not None:
                return got
    return None


# ----- rows --------------------------------------------------------------------------------------


def _event_row(ev: Event, uid: str, mig: int, sync: str, rt: datetime, rnd: int | None) -> EventRow:
    created = ev.event_type == "created_event"
    payload = ev.create_arguments if created else ev.choice_argument
    return EventRow(
        ev.event_id, uid, mig, sync, rt, ev.event_type, ev.contract_id, ev.template_id, ev.package_name,
        ev.choice, ev.consuming, _raw(payload), _raw(ev.exercise_result),
        ev.signatories, ev.observers, ev.acting_parties, ev.child_event_ids, _ts(ev.created_at), rnd, ev.interface_id,
    )  # fmt: skip


def _raw(v: msgspec.Raw) -> bytes | None:
    b = bytes(v)
    return None if not b or b == b"null" else b


def _clean_event_row(r: EventRow) -> EventRow:
    c, cl = _clean, _clean_list
    return r._replace(
        event_id=c(r.event_id) or "", update_id=c(r.update_id) or "", synchronizer_id=c(r.synchronizer_id) or "",
        event_type=c(r.event_type) or "", contract_id=c(r.contract_id), template_id=c(r.template_id),
        package_name=c(r.package_name), choice=c(r.choice), interface_id=c(r.interface_id),
        signatories=cl(r.signatories), observers=cl(r.observers), acting_parties=cl(r.acting_parties),
        child_event_ids=cl(r.child_event_ids),
    )  # fmt: skip


def _clean_update_row(row: UpdateRow) -> UpdateRow:
    return row._replace(update_id=_clean(row.update_id) or "", synchronizer_id=_clean(row.synchronizer_id) or "",
                        offset=_clean(row.offset), workflow_id=_clean(row.workflow_id))  # fmt: skip


def decode_page(
    body: bytes,
    migration_id: int,
    synchronizer_id: str,
    before_us: int | None = None,
    at_or_after_us: int | None = None,
    imports: bool = False,
    lean: bool = False,
) -> Batch:
    """Rows of an updates-before (or import-updates) page, checked against the request it answers.

    Every item must belong to the requested migration and effective synchronizer, lie inside
    [at_or_after, before) and come strictly newest first; otherwise nothing of the page is used.
    """
    gc_was = gc.isenabled()
    gc.disable()  # decoding allocates many small objects that are never cyclic
    try:
        return _decode(body, migration_id, synchronizer_id, before_us, at_or_after_us, imports, lean)
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise MalformedPage(f"not a valid updates page: {exc}") from None
    finally:
        if gc_was:
            gc.enable()


def _item(raw: msgspec.Raw, imports: bool, lean: bool) -> tuple[UpdateRow, list[EventRow], int, str]:
    """One served update as its rows, its record time in microseconds and as served."""
    item = _item_decoder.decode(raw)
    uid = item.update_id
    try:
        t_us = parse_us(item.record_time)
    except TimestampError as exc:
        raise MalformedPage(f"update {uid}: bad record_time: {exc}") from None
    rt = us_to_dt(t_us)
    if item.event is not None:
        ev = item.event
        created = ev.created_event
        kind = "assignment" if created is not None else "unassignment"
        eff_sync = ev.target_synchronizer if created is not None else ev.source_synchronizer
        item_mig = ev.migration_id
        events = [created] if created is not None else []
        cut = False
    elif item.events_by_id and bytes(item.events_by_id) != b"null":
        kind = "import" if imports else "transaction"
        eff_sync = item.synchronizer_id or ""
        item_mig = item.migration_id if item.migration_id is not None else -1
        by_id, cut = _decode_events(item.events_by_id, lean)
        events = [by_id[k] for k in sorted(by_id, key=_preorder)]
    else:
        raise MalformedPage(f"update {uid}: neither a transaction (events_by_id) nor a reassignment (event)")
    rnd = derive_round(events) if kind in ("transaction", "import") else None
    row = UpdateRow(
        uid, item_mig, eff_sync, rt, _ts(item.effective_at), item.offset, item.workflow_id, kind, rnd,
        len(events), _lean(bytes(raw), item.events_by_id) if cut else bytes(raw),
    )  # fmt: skip
    return row, [_event_row(e, uid, item_mig, eff_sync, rt, rnd) for e in events], t_us, item.record_time


def _decode(
    body: bytes, mig: int, sync: str, before_us: int | None, after_us: int | None, imports: bool, lean: bool
) -> Batch:
    page = _page_decoder.decode(body)
    batch = Batch(nbytes=len(body))
    prev_us: int | None = None
    for raw in page.transactions:
        row, events, t_us, text = _item(raw, imports, lean)
        uid = row.update_id
        if row.migration_id != mig:
            raise MalformedPage(f"update {uid} belongs to migration {row.migration_id}, not the requested {mig}")
        if not imports:
            if row.synchronizer_id != sync:
                raise MalformedPage(f"update {uid} belongs to synchronizer {row.synchronizer_id}, not the requested {sync}")
            if before_us is not None and t_us >= before_us:
                raise MalformedPage(f"update {uid} at {text} is not before the requested cursor")
            if after_us is not None and t_us < after_us:
                raise MalformedPage(f"update {uid} at {text} is older than the slice's lower bound")
            if prev_us is not None and t_us >= prev_us:
                raise MalformedPage(f"update {uid} at {text} breaks newest-first order")
        prev_us = t_us
        batch.updates.append(row)
        batch.events.extend(events)
        batch.oldest, batch.oldest_us = text, t_us
        batch.times.append((t_us, text))
        batch.items += 1
    _clean_nul(batch, body)
    return batch


def _clean_nul(batch: Batch, body: bytes) -> None:
    if b"\\u0000" in body:
        batch.updates = [_clean_update_row(u) for u in batch.updates]
        batch.events = [_clean_event_row(e) for e in batch.events]


def decode_stream_page(body: bytes, after: tuple[int, int] | None, lean: bool = False) -> Batch:
    """Rows of a `/v2/updates` page, checked against the request: ascending by (migration, record
    time), none at or before the re-read boundary `after - 1 us`. `batch.times` holds each update's
    position and `last_position` where the next request goes on from."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        page = _page_decoder.decode(body)
        batch = Batch(nbytes=len(body))
        prev = (after[0], after[1] - 1) if after is not None else (-1, 0)
        for raw in page.transactions:
            row, events, t_us, text = _item(raw, False, lean)
            pos = (row.migration_id, t_us)
            if pos < prev or (after is not None and pos <= (after[0], after[1] - 1)):
                raise MalformedPage(f"update {row.update_id} at migration {pos[0]}, {text} breaks ascending order "
                                    f"after {prev}")  # fmt: skip
            prev = pos
            batch.updates.append(row)
            batch.events.extend(events)
            batch.times.append((t_us, text))
            batch.items += 1
        batch.last_position = prev if batch.items else after
        _clean_nul(batch, body)
        return batch
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise MalformedPage(f"not a valid updates page: {exc}") from None
    finally:
        if gc_was:
            gc.enable()
