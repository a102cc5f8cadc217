"""Amulet round rules: which mining round an update belongs to, read from its payloads.

Kept apart from page decoding (`load.decode`), which only calls `derive_round`: these are Splice's
rules, not Scan's paging contract (`docs/scan-api.md` section 4). Payloads are parsed lazily:
`number_at` decodes only the records on the round's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import orjson

from scanfill import framing

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


class RoundEvent(Protocol):
    """What the round rules read of an event (`load.decode.Event` is one)."""

    @property
    def event_type(self) -> str: ...
    @property
    def template_id(self) -> str | None: ...
    @property
    def choice(self) -> str | None: ...
    @property
    def create_arguments(self) -> msgspec.Raw: ...
    @property
    def exercise_result(self) -> msgspec.Raw: ...


_NONE = msgspec.Raw(b"")



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


class _Field(msgspec.Struct):
    label: str | msgspec.UnsetType = msgspec.UNSET
    value: msgspec.Raw = _NONE


class _Record(msgspec.Struct):
    fields: list[_Field] | None = None


class _Labelled(msgspec.Struct, forbid_unknown_fields=True):
    record: _Record


_labelled_decoder = msgspec.json.Decoder(_Labelled)
_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def number_at(raw: Any, path: tuple[str, ...]) -> int | None:
    """`find_number` of a served value without building it: only the records on `path` are
    decoded, every other field is skipped by msgspec as raw bytes. Shapes off the common path
    (positional records, odd types) take the full parse, so the answer is always `find_number`'s."""
    try:
        try:
            fields = _labelled_decoder.decode(raw).record.fields or []
        except msgspec.ValidationError:  # compact_json: {"round": {"number": "12"}, ...}
            cur = _object_decoder.decode(raw)
            if "record" in cur:
                raise ValueError("an odd record") from None
            for name in path[:-1]:
                if name not in cur:
                    return None
                cur = _object_decoder.decode(cur[name])
            return _int_of(orjson.loads(bytes(cur[path[-1]]))) if path[-1] in cur else None
        if fields and fields[0].label is msgspec.UNSET:
            raise ValueError("positional record")
        value: msgspec.Raw | None = None
        for name in path:
            if value is not None:
                fields = _labelled_decoder.decode(value).record.fields or []
            value = next((f.value for f in fields if f.label == name), None)
            if value is None or bytes(value) == b"null":
                return None
        return _int_of(orjson.loads(bytes(value))) if value is not None else None
    except (msgspec.ValidationError, ValueError):
        return find_number(orjson.loads(bytes(raw)), path)


def _entity(template_id: str | None) -> str:
    return template_id.rsplit(":", 1)[-1] if template_id else ""


_kinds: dict[str | None, int] = {}  # template id -> 1 round-bearing, 2 Amulet, 0 neither
_ROUND, _AMULET = 1, 2


def _kind(template_id: str | None) -> int:
    got = _kinds.get(template_id)
    if got is None:
        entity = _entity(template_id)
        got = _ROUND if entity in ROUND_TEMPLATES else _AMULET if entity in AMULET_TEMPLATES else 0
        if len(_kinds) >= framing.CACHE_LIMIT:
            _kinds.clear()
        _kinds[template_id] = got
    return got


def derive_round(events: Sequence[RoundEvent]) -> int | None:
    """scan-api.md section 4: transfer results, then round-bearing contracts, then Amulet `createdAt`.

    Never wall-clock time: an update without a round in its payload gets NULL. One pass notes the
    candidates of each rule; payloads are parsed only for those, in the rules' order.
    """
    transfers, rounds, amulets = [], [], []
    for ev in events:
        if ev.choice in TRANSFER_CHOICES and ev.exercise_result:
            transfers.append(ev)
        elif ev.event_type == "created_event" and ev.create_arguments:
            k = _kind(ev.template_id)
            if k == _ROUND:
                rounds.append(ev)
            elif k == _AMULET:
                amulets.append(ev)
    for ev in transfers:
        got = number_at(ev.exercise_result, ("round", "number"))
        if got is None:
            got = number_at(ev.exercise_result, ("transferResult", "round", "number"))
        if got is not None:
            return got
    for ev in rounds:
        got = number_at(ev.create_arguments, ("round", "number"))
        if got is not None:
            return got
    for ev in amulets:
        got = number_at(ev.create_arguments, AMULET_TEMPLATES[_entity(ev.template_id)])
        if got is not None:
            return got
    return None
