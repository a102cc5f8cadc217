"""A corrupting proxy's repertoire: the ways a page can arrive spoiled between Scan and scanfill
(a captive portal's HTML, a cut connection, a buggy middlebox or scan). Each takes the body of a
valid 200 answer of a paging endpoint and returns the spoiled body and its content type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

BOGUS_SYNCHRONIZER = "bogus-synchronizer::1220" + "0" * 64
FAR_FUTURE = "2099-01-01T00:00:00.000000Z"


def _items(page: dict[str, Any]) -> tuple[str, list[Any]]:
    key = "events" if "events" in page else "transactions"
    return key, page.get(key) or []


def _updates(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The dicts that carry an update's identity: the item itself, or an events item's update and verdict."""
    if "update_id" in item:
        return [item]
    return [d for d in (item.get("update"), item.get("verdict")) if isinstance(d, dict)]


def _last_transaction(items: list[Any]) -> dict[str, Any] | None:
    for item in reversed(items):
        for u in _updates(item):
            if "events_by_id" in u or "verdict" in item or "update_id" in u:
                return item  # type: ignore[no-any-return]
    return None


def _edit(body: bytes, fn: Callable[[list[Any]], bool]) -> bytes | None:
    page = orjson.loads(body)
    key, items = _items(page)
    if not items or not fn(items):
        return None
    page[key] = items
    return orjson.dumps(page)


def _set(field: str, value: Any) -> Callable[[list[Any]], bool]:
    def fn(items: list[Any]) -> bool:
        item = _last_transaction(items)
        if item is None:
            return False
        for u in _updates(item):
            u[field] = value
            if field == "synchronizer_id" and "domain_id" in u:  # a verdict names it so
                u["domain_id"] = value
            if field == "migration_id" and isinstance(u.get("event"), dict):
                u["event"]["migration_id"] = value
        return True

    return fn


def _drop_record_time(items: list[Any]) -> bool:
    for u in _updates(items[0]):
        u.pop("record_time", None)
    return True


def _duplicate(items: list[Any]) -> bool:
    items.append(items[-1])
    return True


def _swap(items: list[Any]) -> bool:
    if len(items) < 2:
        return False
    items[0], items[-1] = items[-1], items[0]
    return True


KINDS: dict[str, Callable[[bytes], bytes | None]] = {  # those that need two items first: a backfill page has them
    "swap": lambda b: _edit(b, _swap),
    "duplicate": lambda b: _edit(b, _duplicate),
    "html": lambda b: b"<html><head><title>502</title></head><body>Gateway error</body></html>",
    "truncated": lambda b: b[: max(1, len(b) // 2)],
    "invalid": lambda b: b[:-1] + b",}" if len(b) > 2 else b"{,}",
    "empty": lambda b: b"",
    "missing": lambda b: _edit(b, _drop_record_time),
    "migration": lambda b: _edit(b, _set("migration_id", 99)),
    "synchronizer": lambda b: _edit(b, _set("synchronizer_id", BOGUS_SYNCHRONIZER)),
    "time": lambda b: _edit(b, _set("record_time", FAR_FUTURE)),
}


def spoil(kind: str, body: bytes) -> tuple[bytes, str] | None:
    """The body spoiled this way, or None when this page offers nothing to spoil (an empty page)."""
    got = KINDS[kind](body)
    if got is None:
        return None
    return got, "text/html" if kind == "html" else "application/json"
