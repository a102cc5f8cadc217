"""PostgreSQL binary COPY framing, built in bulk from decoded fields.

Why not psycopg's `Copy.write_row`: it frames a row field by field through its dumpers (Python
ones for arrays), which cost the loader more CPU than decoding the page. Here each update becomes
one `bytes` for its `ledger_updates` row and one for all its `ledger_events` rows; a batch is sent
as their concatenation between `HEADER` and `TRAILER`. Values that repeat across rows (template
ids, parties, synchronizer ids, event kinds, timestamps shared by an update's events) are framed
once and looked up afterwards. `parse` is the inverse, to inspect what would be stored.

Formats (PostgreSQL's `*send` functions): a field is its int32 length (-1 for NULL) then its
bytes; text is UTF-8; int8/int4 big-endian; bool one byte; timestamptz int64 microseconds since
2000-01-01 UTC; a 1-D text[] is ndim, has-null flag, element oid, length, lower bound, then each
element framed as a field; `json` columns take the served bytes as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"
TRUE = b"\x00\x00\x00\x01\x01"
FALSE = b"\x00\x00\x00\x01\x00"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
TEXT_OID = 25
CACHE_LIMIT = 100_000  # entries per cache; cleared when exceeded, so memory stays bounded

length = struct.Struct(">i").pack
_int8 = struct.Struct(">iq").pack
_int4 = struct.Struct(">ii").pack
_array_head = struct.Struct(">iiiiii").pack
_count = struct.Struct(">h").pack
EMPTY_TEXT_ARRAY = length(12) + struct.pack(">iii", 0, 0, TEXT_OID)

texts: dict[str, bytes] = {}  # framed values that recur; read directly by the hot loop
arrays: dict[tuple[str, ...] | None, bytes] = {}


def field_count(n: int) -> bytes:
    return _count(n)


def text(s: str | None) -> bytes:
    """A text field (unique values: ids)."""
    if s is None:
        return NULL
    b = s.encode()
    return length(len(b)) + b


def common_text(s: str | None) -> bytes:
    """A text field whose value recurs across rows (template ids, synchronizers, kinds): framed once."""
    if s is None:
        return NULL
    got = texts.get(s)
    if got is None:
        if len(texts) >= CACHE_LIMIT:
            texts.clear()
        b = s.encode()
        got = texts[s] = length(len(b)) + b
    return got


def int8(v: int | None) -> bytes:
    return NULL if v is None else _int8(8, v)


def int4(v: int) -> bytes:
    return _int4(4, v)


def timestamp_us(us: int | None) -> bytes:
    """A timestamptz from Unix microseconds."""
    return NULL if us is None else _int8(8, us - PG_EPOCH_US)


def json_parts(raw: Any) -> tuple[bytes, Any]:
    """A json field holding the served bytes (any buffer), as (length, the buffer itself) to go into a
    join, so the payload is copied once; an absent or `null` value is NULL."""
    n = len(raw)
    if n == 0 or (n == 4 and bytes(raw) == b"null"):
        return NULL, b""
    return length(n), raw


def text_array(values: tuple[str, ...] | None) -> bytes:
    """A text[] whose value recurs (signatories, observers, acting parties): framed once."""
    got = arrays.get(values)
    if got is None:
        if len(arrays) >= CACHE_LIMIT:
            arrays.clear()
        got = arrays[values] = unique_text_array(values)
    return got


def unique_text_array(values: tuple[str, ...] | None) -> bytes:
    """A text[] of values that do not recur (child event ids)."""
    if values is None:
        return NULL
    if not values:
        return EMPTY_TEXT_ARRAY
    body = b"".join([text(v) for v in values])
    return _array_head(20 + len(body), 1, 0, TEXT_OID, len(values), 1) + body


def frame(chunks: Iterable[bytes]) -> bytes:
    """A whole COPY stream of already framed rows."""
    return b"".join((HEADER, *chunks, TRAILER))


# ----- the inverse, to inspect a batch (tests, debugging); not on the load path --------------------

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _parse_array(b: bytes) -> list[str]:
    ndim, _flags, _oid = struct.unpack_from(">iii", b, 0)
    if ndim == 0:
        return []
    (n, _lb), at, out = struct.unpack_from(">ii", b, 12), 20, []
    for _ in range(n):
        (k,) = struct.unpack_from(">i", b, at)
        out.append(b[at + 4 : at + 4 + k].decode())
        at += 4 + k
    return out


_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "text": bytes.decode,
    "int8": lambda b: struct.unpack(">q", b)[0],
    "int4": lambda b: struct.unpack(">i", b)[0],
    "bool": lambda b: b == b"\x01",
    "timestamptz": lambda b: _EPOCH + timedelta(microseconds=struct.unpack(">q", b)[0]),
    "bytea": bytes,
    "text[]": _parse_array,
    "jsonb": lambda b: b[1:].decode(),  # version byte, then the JSON text
}


def parse(data: bytes, types: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The rows of framed row data (no header or trailer), each field as psycopg would load it."""
    rows, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from(">h", data, at)
        if n != len(types):
            raise ValueError(f"row at byte {at} has {n} fields, expected {len(types)}")
        at += 2
        row: list[Any] = []
        for t in types:
            (k,) = struct.unpack_from(">i", data, at)
            at += 4
            if k < 0:
                row.append(None)
                continue
            row.append(_PARSERS[t](data[at : at + k]))
            at += k
        rows.append(tuple(row))
    return rows
