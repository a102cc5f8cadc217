"""Daml values from Scan's `protobuf_json` to the compact JSON of the Daml JSON API, the encoding
Scan's ACS endpoints serve (so `payload->>'owner'` works and snapshots compare as JSON values).

Where the compact form would lose something, it takes the JSON API's lossless variant instead:
- a record without field labels (positional) becomes an array of its fields in order, which the
  JSON API also accepts for records; the labelled original stays in `ledger_events.payload`;
- an optional inside an optional is `[]` (Some None) or `[x]` (Some (Some x)), as the JSON API does;
- a timestamp becomes Java `Instant` text (as Scan prints instants), a date `YYYY-MM-DD`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from scanfill.timeutil import format_instant

_EPOCH_DAY = date(1970, 1, 1)


class ValueError_(ValueError):
    """A value that is not protobuf_json (a scan serving something else)."""


def _record(v: dict[str, Any]) -> Any:
    out = {}
    for f in v.get("fields") or ():
        label = f.get("label")
        if not label:  # positional: the fields in order
            return [compact(g["value"]) for g in v["fields"]]
        out[label] = compact(f["value"])
    return out


def _optional(v: dict[str, Any]) -> Any:
    if "value" not in v or v["value"] is None:
        return None
    inner = v["value"]
    if "optional" in inner:  # nested: keep Some None apart from None
        got = _optional(inner["optional"])
        return [] if got is None else [got]
    return compact(inner)


def _timestamp(v: Any) -> str:
    return format_instant(int(v))


def _date(v: Any) -> str:
    if isinstance(v, str) and "-" in v:
        return v
    return (_EPOCH_DAY + timedelta(days=int(v))).isoformat()


_SAME: Callable[[Any], Any] = lambda v: v  # noqa: E731
_RULES: dict[str, Callable[[Any], Any]] = {
    "record": _record,
    "optional": _optional,
    "list": lambda v: [compact(e) for e in v.get("elements") or ()],
    "variant": lambda v: {"tag": v["constructor"], "value": compact(v["value"])},
    "enum": lambda v: v["constructor"],
    "textMap": lambda v: {e["key"]: compact(e["value"]) for e in v.get("entries") or ()},
    "genMap": lambda v: [[compact(e["key"]), compact(e["value"])] for e in v.get("entries") or ()],
    "timestamp": _timestamp,
    "date": _date,
    "unit": lambda v: {},
    "numeric": _SAME, "int64": _SAME, "text": _SAME, "party": _SAME, "contractId": _SAME, "bool": _SAME,
}  # fmt: skip
_IDS = ("recordId", "variantId", "enumId")
_SCALARS = frozenset({"numeric", "int64", "text", "party", "contractId", "bool"})


def compact(value: Any) -> Any:
    """One protobuf_json value in the compact encoding (see the module docstring)."""
    if type(value) is not dict:
        raise ValueError_(f"not a protobuf_json value: {str(value)[:60]!r}")
    if len(value) == 1:  # the usual case, on the loader's hot path: no id fields
        for tag, v in value.items():
            if tag in _SCALARS:
                return v
            if tag == "record" and type(v) is dict:
                try:
                    return _record(v)
                except (KeyError, TypeError, AttributeError) as exc:
                    raise ValueError_(f"malformed record value: {exc}") from None
    for tag, v in value.items():
        if tag in _IDS:
            continue
        rule = _RULES.get(tag)
        if rule is None:
            raise ValueError_(f"unknown protobuf_json value kind {tag!r}")
        try:
            return rule(v if v is not None else {})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError_(f"malformed {tag} value: {exc}") from None
    raise ValueError_("an empty protobuf_json value")


def arguments(value: Any) -> Any:
    """Create arguments in the compact encoding. They are a record, so protobuf_json is exactly
    `{"record": {...}}`; anything else is already compact (a scan asked for compact_json) and kept."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("record"), dict):
        return compact(value)
    return value
