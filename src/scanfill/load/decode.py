"""Decode a Scan page into database rows, and refuse a page that breaks the paging contract.

msgspec decodes into typed structs and passes payloads through as raw bytes (`msgspec.Raw`), so no
Python objects are built for Daml values that are only stored; only the one payload per update
that carries its round is parsed.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import orjson

from scanfill import framing
from scanfill.economy import transfers as economy
from scanfill.economy.transfers import TransferRow
from scanfill.errors import MalformedPage, Unstorable
from scanfill.load.rounds import derive_round
from scanfill.rows import COPY_TYPES, EventRow, UpdateRow
from scanfill.state.facts import Fact, of_update
from scanfill.timeutil import TimestampError, dt_to_us, parse_us, us_to_dt

_NONE = msgspec.Raw(b"")


class Event(msgspec.Struct):
    event_type: str
    event_id: str
    contract_id: str | None = None
    template_id: str | None = None
    package_name: str | None = None
    create_arguments: msgspec.Raw = _NONE
    created_at: str | None = None
    signatories: tuple[str, ...] | None = None  # tuples: hashable, so each party set is framed once
    observers: tuple[str, ...] | None = None
    choice: str | None = None
    choice_argument: msgspec.Raw = _NONE
    child_event_ids: tuple[str, ...] | None = None
    exercise_result: msgspec.Raw = _NONE
    consuming: bool | None = None
    acting_parties: tuple[str, ...] | None = None
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




class Update(NamedTuple):
    """One served update: what the paging checks and the commit need, and its rows, COPY-framed."""

    update_id: str
    migration_id: int
    synchronizer_id: str  # effective: target of an assignment, source of an unassignment
    t_us: int
    record_time: str  # exactly as served: the next `before` when this is a page's oldest
    event_count: int
    row: bytes  # its ledger_updates row
    event_rows: bytes  # its ledger_events rows, in tree pre-order
    facts: list[Fact]  # what it says about contracts (empty when contract state is off)
    transfers: list[TransferRow]  # what it minted and burnt (empty when contract state is off)


@dataclass
class Batch:
    """Updates decoded from one or more consecutive pages of one slice, newest first."""

    updates: list[Update] = field(default_factory=list)
    nbytes: int = 0
    events: int = 0  # rows for ledger_events
    last_position: tuple[int, int] | None = None  # a followed page's last (migration, record time)

    def add(self, u: Update) -> None:
        self.updates.append(u)
        self.events += u.event_count

    @property
    def framed_bytes(self) -> int:
        """What the batch's rows weigh in memory (their COPY framing), for the memory budget."""
        return sum(len(u.row) + len(u.event_rows) + sum(f.payload_bytes for f in u.facts) for u in self.updates)

    @property
    def items(self) -> int:
        return len(self.updates)

    @property
    def rows(self) -> int:
        return len(self.updates) + self.events

    @property
    def oldest(self) -> str | None:
        """Exact record-time string of the last (oldest when paging backwards) update."""
        return self.updates[-1].record_time if self.updates else None

    @property
    def oldest_us(self) -> int | None:
        return self.updates[-1].t_us if self.updates else None

    def extend(self, other: Batch) -> None:
        self.updates.extend(other.updates)
        self.events += other.events
        self.nbytes += other.nbytes

    def keep(self, updates: list[Update]) -> Batch:
        """A batch of some of these updates (same page bytes, for accounting)."""
        return Batch(updates, self.nbytes, sum(u.event_count for u in updates), self.last_position)

    def drop_older_than(self, lo_us: int) -> None:
        """Keep only rows at or after `lo_us` (after the slice's lower bound was raised by a split)."""
        kept = self.keep([u for u in self.updates if u.t_us >= lo_us])
        self.updates, self.events = kept.updates, kept.events

    def update_rows(self) -> list[UpdateRow]:
        """The ledger_updates rows as they will be stored (parsed back from the framing)."""
        return [UpdateRow(*r) for u in self.updates for r in framing.parse(u.row, COPY_TYPES[UpdateRow])]

    def event_rows(self) -> list[EventRow]:
        return [EventRow(*r) for u in self.updates for r in framing.parse(u.event_rows, COPY_TYPES[EventRow])]


_instants: dict[str, bytes] = {}


def _instant(text: str | None) -> bytes:
    """A served instant (`effective_at`, `created_at`: Java `Instant` text, trailing zeros trimmed)
    as a framed timestamptz; an update's events mostly share one, so each is parsed once."""
    if text is None:
        return framing.NULL
    got = _instants.get(text)
    if got is None:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise MalformedPage(f"invalid timestamp {text!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        if len(_instants) >= framing.CACHE_LIMIT:
            _instants.clear()
        got = _instants[text] = framing.timestamp_us(dt_to_us(dt))
    return got


def _record_us(uid: str, text: str) -> int:
    """A record time in microseconds, exactly; Scan's own form (`2024-06-24T21:08:00.123456Z`) on a
    fast path, anything else through the strict parser (which refuses sub-microsecond digits)."""
    if len(text) == 27 and text[26] == "Z" and text[19] == "." and text[10] == "T":
        try:
            return dt_to_us(datetime.fromisoformat(text))
        except ValueError:
            pass
    try:
        return parse_us(text)
    except TimestampError as exc:
        raise MalformedPage(f"update {uid}: bad record_time: {exc}") from None


def _clean(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: write it as the JSON escape (the json columns keep the original)."""
    return s.replace("\x00", "\\u0000") if s is not None and "\x00" in s else s


def _clean_all(v: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return tuple(_clean(x) or "" for x in v) if v is not None else None


def _clean_event(ev: Event) -> Event:
    c, ca = _clean, _clean_all
    return msgspec.structs.replace(
        ev, event_id=c(ev.event_id) or "", event_type=c(ev.event_type) or "", contract_id=c(ev.contract_id),
        template_id=c(ev.template_id), package_name=c(ev.package_name), choice=c(ev.choice),
        interface_id=c(ev.interface_id), signatories=ca(ev.signatories), observers=ca(ev.observers),
        acting_parties=ca(ev.acting_parties), child_event_ids=ca(ev.child_event_ids),
    )  # fmt: skip


# ----- what msgspec cannot take: lone surrogates, nesting past its recursion limit ----------------

# in JSON text: an escaped backslash (consumed first, so what follows it is not an escape), a
# surrogate pair (kept), or a lone surrogate escape (one half of a pair, alone)
_SURROGATES = re.compile(rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_MARKERS = range(0xE000, 0xF900)  # private-use code points a lone surrogate stands in for while decoding
Restore = Callable[[bytes], bytes]


def _lone_surrogates(body: bytes) -> tuple[bytes, Restore] | None:
    """A body with its lone surrogate escapes (`\\ud800` alone: valid JSON text that msgspec, orjson
    and jsonb all refuse) replaced by escapes of private-use code points the body does not hold, the
    same length, and the function that puts the served escapes back into raw JSON bytes: so the
    ledger rows keep the served bytes exactly. None when the body holds none."""
    found = [m for m in _SURROGATES.finditer(body) if len(m.group()) == 6]
    if not found:
        return None
    low = body.lower()
    free = (c for c in _MARKERS if f"\\u{c:04x}".encode() not in low and chr(c).encode() not in body)
    try:
        swap = {old: f"\\u{next(free):04x}".encode() for old in sorted({m.group() for m in found})}
    except StopIteration:
        raise MalformedPage("a page holding every private-use code point and lone surrogates") from None
    back = {new: old for old, new in swap.items()}
    parts, at = [], 0
    for m in found:  # where they were found: the same text in a pair or after an escaped backslash stays
        parts += [body[at : m.start()], swap[m.group()]]
        at = m.end()
    body = b"".join([*parts, body[at:]])

    def restore(raw: bytes) -> bytes:
        for new, old in back.items():
            if new in raw:
                raw = raw.replace(new, old)
        return raw

    return body, restore


def _escapes(body: bytes) -> tuple[bytes, bool, Restore | None]:
    """The body to decode, whether it holds a NUL escape, and how to restore lone surrogates (see
    `_lone_surrogates`): one scan of the page when it holds no escape at all, the common case (each
    scan of a page costs about a nanosecond a byte)."""
    if b"\\u" not in body:
        return body, False, None
    lone = _lone_surrogates(body) if b"\\ud" in body or b"\\uD" in body else None
    if lone is not None:
        body = lone[0]
    return body, b"\\u0000" in body, lone[1] if lone is not None else None


_DAML_DEPTH = 100  # Daml-LF's limit on value nesting
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')


def _too_deep(body: bytes) -> str:
    """Where a page nests past what msgspec decodes (the recursion limit, ~1,000 JSON levels, far
    beyond Daml-LF's 100 value levels): the update and the field path, for the one-line refusal."""
    depth, uid = 0, "?"
    keys: list[str] = []  # keys[i]: the key being read inside the container at depth i + 1 ("" in arrays)
    for m in _TOKENS.finditer(body):
        tok = m.group()
        if tok in (b"{", b"["):
            depth += 1
            if depth > 900:
                path = ".".join(k for k in keys[:10] if k)
                return (f"update {uid}: a value nested more than {depth} JSON levels deep (at {path}...), far past "
                        f"Daml-LF's limit of {_DAML_DEPTH} nested values: no Daml ledger holds it, so this is not a "
                        "page of one; nothing of it was stored. Ask the scan's operator, or report the update id "
                        "to the scanfill project")  # fmt: skip
        elif tok in (b"}", b"]"):
            depth -= 1
            del keys[depth:]
        elif tok.endswith(b":"):
            key = tok.rstrip(b": \t\r\n")[1:-1].decode("utf-8", "replace")
            del keys[depth - 1 :]
            keys.extend([""] * (depth - 1 - len(keys)))
            keys.append(key)
            if key == "update_id" and depth <= 4:
                got = re.match(rb'\s*"([^"]*)"', body[m.end() :])
                uid = got.group(1).decode("utf-8", "replace") if got else uid
    return "a value nested past what can be decoded (more than ~1,000 JSON levels), far past Daml-LF's limit of 100"


def _preorder(key: str) -> int:
    """Event ids are `<update>:<n>` numbered in tree pre-order (served sorted as text: 0, 1, 10, 11, 2)."""
    try:
        return int(key[key.rindex(":") + 1 :])
    except ValueError:
        return 1 << 30


# ----- rows --------------------------------------------------------------------------------------

_UPDATE_FIELDS = framing.field_count(len(UpdateRow._fields))
_EVENT_FIELDS = framing.field_count(len(EventRow._fields))


def _event_rows(events: list[Event], shared: bytes, rnd: bytes) -> bytes:
    """The events' ledger_events rows (columns in `EventRow` order); `shared` frames the update's
    id, migration, synchronizer and record time, `rnd` its round.

    This loop is the loader's hottest code, so it is written out flat: cached framings are looked
    up inline, payloads go into the join as the served buffers (copied once, by the join)."""
    null, length, texts, arrays, json = framing.NULL, framing.length, framing.texts, framing.arrays, framing.json_parts
    common, array = framing.common_text, framing.text_array
    parts: list[Any] = []
    add = parts.extend
    for ev in events:
        t = ev.event_type
        eid = ev.event_id.encode()
        consuming = ev.consuming
        add((
            _EVENT_FIELDS, length(len(eid)), eid, shared, texts.get(t) or common(t), framing.text(ev.contract_id),
            common(ev.template_id), common(ev.package_name), common(ev.choice),
            null if consuming is None else framing.TRUE if consuming else framing.FALSE,
            *json(ev.create_arguments if t == "created_event" else ev.choice_argument), *json(ev.exercise_result),
            arrays.get(ev.signatories) or array(ev.signatories), arrays.get(ev.observers) or array(ev.observers),
            arrays.get(ev.acting_parties) or array(ev.acting_parties),
            framing.unique_text_array(ev.child_event_ids), _instant(ev.created_at), rnd, common(ev.interface_id),
        ))  # fmt: skip
    return b"".join(parts)


def decode_page(
    body: bytes,
    migration_id: int,
    synchronizer_id: str,
    before_us: int | None = None,
    at_or_after_us: int | None = None,
    imports: bool = False,
    lean: bool = False,
    facts: bool = True,
) -> Batch:
    """Rows of an updates-before (or import-updates) page, checked against the request it answers.

    Every item must belong to the requested migration and effective synchronizer, lie inside
    [at_or_after, before) and come strictly newest first; otherwise nothing of the page is used.
    """
    gc_was = gc.isenabled()
    gc.disable()  # decoding allocates many small objects that are never cyclic
    body, clean, restore = _escapes(body)
    try:
        return _decode(body, migration_id, synchronizer_id, before_us, at_or_after_us, imports, lean, facts,
                       clean, restore)  # fmt: skip
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise MalformedPage(f"not a valid updates page: {exc}") from None
    except RecursionError:
        raise Unstorable(_too_deep(body)) from None
    finally:
        if gc_was:
            gc.enable()


def _served(raw: msgspec.Raw | bytes, restore: Restore | None) -> msgspec.Raw | bytes:
    return raw if restore is None else restore(bytes(raw))


def _restored(ev: Event, restore: Restore) -> Event:
    """An event with the served bytes of its payloads (see `_lone_surrogates`)."""
    return msgspec.structs.replace(
        ev, create_arguments=msgspec.Raw(restore(bytes(ev.create_arguments))),
        choice_argument=msgspec.Raw(restore(bytes(ev.choice_argument))),
        exercise_result=msgspec.Raw(restore(bytes(ev.exercise_result))),
    )  # fmt: skip


def _item(raw: msgspec.Raw, imports: bool, lean: bool, clean: bool, facts: bool = True,
          restore: Restore | None = None) -> Update:  # fmt: skip
    """One served update, its rows framed; `clean` when the page holds a NUL escape (rare), `restore`
    when it held lone surrogates (rarer)."""
    item = _item_decoder.decode(raw)
    if clean:
        item = msgspec.structs.replace(item, update_id=_clean(item.update_id) or "", offset=_clean(item.offset),
                                       workflow_id=_clean(item.workflow_id),
                                       synchronizer_id=_clean(item.synchronizer_id))  # fmt: skip
    uid = item.update_id
    t_us = _record_us(uid, item.record_time)
    if item.event is not None:
        ev = item.event
        created = ev.created_event
        kind = "assignment" if created is not None else "unassignment"
        eff_sync = ev.target_synchronizer if created is not None else ev.source_synchronizer
        if clean:
            eff_sync = _clean(eff_sync) or ""
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
    if clean:
        events = [_clean_event(e) for e in events]
    if restore is not None:
        events = [_restored(e, restore) for e in events]
    rnd = framing.int8(derive_round(events) if kind in ("transaction", "import") else None)
    shared = b"".join((framing.text(uid), framing.int8(item_mig), framing.common_text(eff_sync),
                       framing.timestamp_us(t_us)))  # fmt: skip
    row = b"".join((
        _UPDATE_FIELDS, shared, _instant(item.effective_at), framing.text(item.offset), framing.text(item.workflow_id),
        framing.common_text(kind), rnd, framing.int4(len(events)),
        *framing.json_parts(_served(_lean(bytes(raw), item.events_by_id) if cut else raw, restore)),
    ))  # fmt: skip
    told = of_update(kind, uid, item_mig, eff_sync, t_us, events, shared, _instant) if facts else []
    minted = (economy.of_update(uid, item_mig, eff_sync, us_to_dt(t_us), t_us, events)
              if facts and kind == "transaction" and economy.wanted(events) else [])  # fmt: skip
    return Update(uid, item_mig, eff_sync, t_us, item.record_time, len(events), row, _event_rows(events, shared, rnd),
                  told, minted)


def _decode(
    body: bytes, mig: int, sync: str, before_us: int | None, after_us: int | None, imports: bool, lean: bool,
    facts: bool, clean: bool, restore: Restore | None = None,
) -> Batch:
    page = _page_decoder.decode(body)
    batch = Batch(nbytes=len(body))
    prev_us: int | None = None
    for raw in page.transactions:
        u = _item(raw, imports, lean, clean, facts, restore)
        uid, t_us, text = u.update_id, u.t_us, u.record_time
        if u.migration_id != mig:
            raise MalformedPage(f"update {uid} belongs to migration {u.migration_id}, not the requested {mig}")
        if not imports:
            if u.synchronizer_id != sync:
                raise MalformedPage(f"update {uid} belongs to synchronizer {u.synchronizer_id}, not the requested {sync}")
            if before_us is not None and t_us >= before_us:
                raise MalformedPage(f"update {uid} at {text} is not before the requested cursor")
            if after_us is not None and t_us < after_us:
                raise MalformedPage(f"update {uid} at {text} is older than the slice's lower bound")
            if prev_us is not None and t_us >= prev_us:
                raise MalformedPage(f"update {uid} at {text} breaks newest-first order")
        prev_us = t_us
        batch.add(u)
    return batch


def decode_items(body: bytes) -> list[dict[str, Any]]:
    """A page's items as served (JSON objects, each with its record time), for comparing copies."""
    try:
        items = orjson.loads(body)["transactions"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise MalformedPage(f"not a valid updates page: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and "record_time" in i for i in items):
        raise MalformedPage("not a valid updates page: items are not updates with a record time")
    return items


def decode_stream_page(body: bytes, after: tuple[int, int] | None, lean: bool = False, facts: bool = True) -> Batch:
    """Rows of a `/v2/updates` page, checked against the request: ascending by (migration, record
    time), none at or before the re-read boundary `after - 1 us`. `last_position` is where the next
    request goes on from."""
    gc_was = gc.isenabled()
    gc.disable()
    served = body
    body, clean, restore = _escapes(body)
    try:
        page = _page_decoder.decode(body)
        batch = Batch(nbytes=len(body))
        prev = (after[0], after[1] - 1) if after is not None else (-1, 0)
        seen: set[str] = set()
        for raw in page.transactions:
            u = _item(raw, False, lean, clean, facts, restore)
            pos = (u.migration_id, u.t_us)
            if pos < prev or (after is not None and pos <= (after[0], after[1] - 1)):
                raise MalformedPage(f"update {u.update_id} at migration {pos[0]}, {u.record_time} breaks ascending "
                                    f"order after {prev}")  # fmt: skip
            if u.update_id in seen:
                raise MalformedPage(f"update {u.update_id} is served twice in one page")
            seen.add(u.update_id)
            prev = pos
            batch.add(u)
        batch.last_position = prev if batch.items else after
        return batch
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise MalformedPage(f"not a valid updates page: {exc}") from None
    except RecursionError:
        raise Unstorable(_too_deep(served)) from None
    finally:
        if gc_was:
            gc.enable()


# ----- /v0/events pages -------------------------------------------------------------------------



class _EventItem(msgspec.Struct):
    update: msgspec.Raw = _NONE  # `null` arrives as the raw bytes b"null"
    verdict: msgspec.Raw = _NONE
    traffic_summary: msgspec.Raw = _NONE
    app_activity_records: msgspec.Raw = _NONE


class _EventsPage(msgspec.Struct):
    events: list[_EventItem]


class _Where(msgspec.Struct):
    update_id: str
    record_time: str
    migration_id: int | None = None
    synchronizer_id: str | None = None
    domain_id: str | None = None
    event: dict[str, Any] | None = None


_events_item_page = msgspec.json.Decoder(_EventsPage)
_where_decoder = msgspec.json.Decoder(_Where)


def _raw(v: msgspec.Raw) -> bytes | None:
    """A served sub-document's bytes; absent and `null` are both None."""
    b = bytes(v)
    return None if not b or b == b"null" else b


@dataclass
class EventsPage:
    """A `/v0/events` page: its `scan_events` rows, where the next request goes on from, how many
    items it served, and every item's (update id, migration, synchronizer, record time) for the
    pipeline's checks against what the scans know."""

    rows: list[tuple[Any, ...]]
    last: tuple[int, int]
    served: int
    positions: list[tuple[str, int, str | None, int]] = field(default_factory=list)


def decode_events_page(body: bytes, after: tuple[int, int] | None) -> EventsPage:
    """The page checked against the request: ascending, nothing at or before the re-read boundary."""
    lone = _lone_surrogates(body) if b"\\u" in body else None  # stand-ins while decoding, see _item
    try:
        page = _events_item_page.decode(lone[0] if lone else body)
        rows: list[tuple[Any, ...]] = []
        positions: list[tuple[str, int, str | None, int]] = []
        floor = (after[0], after[1] - 1) if after is not None else None
        last = after or (-1, 0)
        seen: set[str] = set()
        for item in page.events:
            src = item.verdict if _raw(item.verdict) else item.update
            if not _raw(src):
                raise MalformedPage("an events item with neither an update nor a verdict")
            w = _where_decoder.decode(src)
            m = w.migration_id if w.migration_id is not None else int((w.event or {}).get("migration_id", -1))
            t = parse_us(w.record_time)
            if (m, t) < last or (floor is not None and (m, t) <= floor):
                raise MalformedPage(f"events item {w.update_id} at {w.record_time} breaks ascending order after {last}")
            last = (m, t)
            if w.update_id in seen:
                raise MalformedPage(f"events item {w.update_id} is served twice in one page")
            seen.add(w.update_id)
            positions.append((w.update_id, m, w.domain_id or w.synchronizer_id, t))
            if not (_raw(item.verdict) or _raw(item.traffic_summary) or _raw(item.app_activity_records)):
                continue  # a reassignment: nothing beyond the update, which the updates stream stores
            rows.append((w.update_id, m, w.domain_id or w.synchronizer_id, us_to_dt(t), _raw(item.verdict),
                         _raw(item.traffic_summary), _raw(item.app_activity_records)))  # fmt: skip
        if lone is not None:  # the stored documents as served
            rows = [tuple(lone[1](x) if isinstance(x, bytes) else x for x in r) for r in rows]
        return EventsPage(rows, last, len(page.events), positions)
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise MalformedPage(f"not a valid /v0/events page: {exc}") from None
    except RecursionError:
        raise Unstorable(_too_deep(body)) from None
