"""The decoder against every shape the Scan spec allows (no database, no HTTP: pure and fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from scanfill.coord.schema import EVENT_COLUMNS, UPDATE_COLUMNS
from scanfill.errors import MalformedPage
from scanfill.load.decode import decode_page
from scanfill.sim import Ledger, LedgerConfig, MigrationSpec
from scanfill.sim.ledger import event_to_compact

FIXTURES = Path(__file__).parent.parent / "fixtures"
EV = {name: k for k, name in enumerate(EVENT_COLUMNS)}
UP = {name: k for k, name in enumerate(UPDATE_COLUMNS)}
LEDGER = Ledger(LedgerConfig(seed=9, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 200),), interface_rate=0.5))
SYNC = LEDGER.synchronizer_id(0)


def page(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"transactions": list(items)})


def newest_first(n: int = 20) -> list[dict[str, Any]]:
    return [LEDGER.update(0, 0, i) for i in range(n - 1, -1, -1)]


def test_a_mainnet_shaped_compact_page_decodes() -> None:
    """A /v2/updates page of the shape a public repository recorded from MainNet (compact_json)."""
    items = json.loads((FIXTURES / "v2_updates_compact_mainnet_shape.json").read_text())["transactions"]
    sync = items[0]["synchronizer_id"]
    batch = decode_page(page(*reversed(items)), 0, sync)
    assert batch.items == 2 and batch.events == 4
    boot = next(e for e in batch.event_rows() if e[EV["choice"]] == "DsoBootstrap_Bootstrap")
    assert boot[EV["exercise_result"]] == b'"DsoBootstrap_BootstrapResult"' and boot[EV["payload"]] == b"{}"
    assert boot[EV["interface_id"]] is None and boot[EV["consuming"]] is True
    created = [e for e in batch.event_rows() if e[EV["event_type"]] == "created_event"]
    assert {e[EV["created_at_ts"]].microsecond for e in created} == {469232}
    assert all(u[UP["round"]] is None for u in batch.update_rows())  # no round in these payloads: NULL, never invented


def test_interface_id_is_kept_in_its_column() -> None:
    batch = decode_page(page(*newest_first(40)), 0, SYNC)
    want = {e["event_id"]: e.get("interface_id") for u in newest_first(40) for e in u["events_by_id"].values()}
    got = {e[EV["event_id"]]: e[EV["interface_id"]] for e in batch.event_rows()}
    assert got == want and sum(v is not None for v in got.values()) >= 5


def test_optional_fields_absent_or_null_decode_the_same() -> None:
    full = newest_first(5)
    stripped = json.loads(json.dumps(full))
    for u in stripped:
        u["workflow_id"] = None
        u.pop("external_transaction_hash", None)
        for e in u["events_by_id"].values():
            if e.get("interface_id") is None:
                e.pop("interface_id", None)
    nulled = json.loads(json.dumps(full))
    for u in nulled:
        for e in u["events_by_id"].values():
            e.setdefault("interface_id", None)
    a, b = decode_page(page(*stripped), 0, SYNC), decode_page(page(*nulled), 0, SYNC)
    assert [e[:-1] for e in a.event_rows()] == [e[:-1] for e in b.event_rows()]
    assert [e[EV["interface_id"]] for e in a.event_rows()] == [e[EV["interface_id"]] for e in b.event_rows()]


def test_fields_added_by_newer_releases_are_tolerated_and_never_lost() -> None:
    items = newest_first(6)
    items[1]["a_field_from_2027"] = {"nested": [1, 2]}
    ev = next(iter(items[2]["events_by_id"].values()))
    ev["new_event_field"] = "kept"
    batch = decode_page(page(*items), 0, SYNC)
    assert batch.items == 6
    lean = decode_page(page(*items), 0, SYNC, lean=True)
    by_id = {u[0]: u[UP["update_json"]] for u in lean.update_rows()}
    # envelope mode cuts events_by_id only where every field of every event has a column
    assert b'"new_event_field":"kept"' in by_id[items[2]["update_id"]]
    assert b'"a_field_from_2027"' in by_id[items[1]["update_id"]]
    assert b'"events_by_id":{}' in by_id[items[1]["update_id"]]
    assert b'"events_by_id":{}' in by_id[items[3]["update_id"]]


def test_compact_values_give_the_same_rounds() -> None:
    items = newest_first(30)
    compact = []
    for u in items:
        c = dict(u)
        c["events_by_id"] = {k: event_to_compact(e) for k, e in u["events_by_id"].items()}
        compact.append(c)
    a, b = decode_page(page(*items), 0, SYNC), decode_page(page(*compact), 0, SYNC)
    assert [u[UP["round"]] for u in a.update_rows()] == [u[UP["round"]] for u in b.update_rows()]
    assert any(u[UP["round"]] is not None for u in a.update_rows())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda u: u.update(record_time="2024-06-24T21:08:00.1234567Z"), "record_time"),
        (lambda u: u.update(migration_id=3), "migration 3"),
        (lambda u: u.update(synchronizer_id="other::1220ab"), "synchronizer"),
        (lambda u: u.pop("events_by_id"), "neither a transaction"),
        (lambda u: u.update(events_by_id=None), "neither a transaction"),
    ],
)
def test_refusals_name_the_update(mutate: Any, message: str) -> None:
    items = newest_first(3)
    mutate(items[1])
    with pytest.raises(MalformedPage, match=message):
        decode_page(page(*items), 0, SYNC)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda good: b"<html><body>502 Bad Gateway</body></html>", "not a valid updates page"),
        (lambda good: good[: len(good) // 2], "not a valid updates page"),
        (lambda good: b'{"transactions":' + orjson.dumps([orjson.loads(good)["transactions"][0], *orjson.loads(good)[
            "transactions"]]) + b"}", "breaks newest-first order"),
        (lambda good: b'{"transactions":' + orjson.dumps(list(reversed(orjson.loads(good)["transactions"]))) + b"}",
         "breaks newest-first order"),
    ],
    ids=["html-with-200", "truncated", "duplicated-item", "oldest-first"],
)
def test_garbage_pages_are_refused_whole(make: Any, message: str) -> None:
    good = page(*newest_first(4))
    with pytest.raises(MalformedPage, match=message):
        decode_page(make(good), 0, SYNC)


def test_an_item_outside_the_requested_window_is_refused() -> None:
    items = newest_first(4)
    from scanfill.timeutil import parse_us

    before = parse_us(items[1]["record_time"])  # the first item is not before this
    with pytest.raises(MalformedPage, match="not before the requested cursor"):
        decode_page(page(*items), 0, SYNC, before_us=before)
    lo = parse_us(items[1]["record_time"])  # the last two are older than this lower bound
    with pytest.raises(MalformedPage, match="older than the slice's lower bound"):
        decode_page(page(*items), 0, SYNC, at_or_after_us=lo)


@pytest.mark.parametrize("shape", ["labelled", "compact", "positional"])
def test_rounds_read_lazily_equal_the_full_parse(shape: str) -> None:
    """`number_at` skips what it does not need; it must answer exactly what parsing everything does."""
    from scanfill.load.rounds import AMULET_TEMPLATES, find_number, number_at

    ledger = LEDGER if shape != "positional" else Ledger(LedgerConfig(seed=9, labels=False, migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 200),)))  # fmt: skip
    paths = [("round", "number"), ("transferResult", "round", "number"), *AMULET_TEMPLATES.values(), ("nope",)]
    values = []
    for i in range(200):
        for ev in ledger.update(0, 0, i)["events_by_id"].values():
            ev = event_to_compact(ev) if shape == "compact" else ev
            values += [ev[k] for k in ("create_arguments", "choice_argument", "exercise_result") if k in ev]
    values += [{"record": {"fields": []}}, {"record": None}, "a text", 7, {"round": 3}, {"round": {"number": "x"}}]
    found = 0
    for v in values:
        raw = orjson.dumps(v)
        for path in paths:
            try:
                want = find_number(v, path)
            except AttributeError:
                continue  # a shape the full parse itself cannot read
            assert number_at(raw, path) == want, (v, path)
            found += want is not None
    assert found >= 20


def _events_stream(n: int) -> list[dict[str, Any]]:
    """The first /v0/events items of LEDGER in stream order: updates and the verdict-only items between them."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(LEDGER.event_item(0, 0, i, compact=True))
        if LEDGER.verdict_only_us(0, i) is not None:
            out.append(LEDGER.verdict_only_item(0, i))
    return out


def test_verdict_only_events_items_are_rows_keyed_by_their_verdicts_update_id() -> None:
    """An events item with `"update": null` (MainNet: 40-50 % of them) is placed by its verdict and
    kept whole under the update id the verdict names; a page may end on one, and the next page,
    re-reading that microsecond, may serve it again."""
    from scanfill.load.decode import decode_events_page
    from scanfill.timeutil import parse_us

    items = _events_stream(30)
    only = [e for e in items if e["update"] is None]
    assert 8 < len(only) < len(items) - 8
    got = decode_events_page(orjson.dumps({"events": items}), None)
    assert got.served == len(items) and [r[0] for r in got.rows] == [(e["verdict"] or e["update"])["update_id"]
                                                                     for e in items]  # fmt: skip
    rows = {r[0]: r for r in got.rows}
    for e in only:
        v = e["verdict"]
        _, m, domain, _, verdict, traffic, activity = rows[v["update_id"]]
        assert (m, domain, orjson.loads(verdict), orjson.loads(traffic)) == (0, SYNC, v, e["traffic_summary"])
        assert (activity is None) == (e["app_activity_records"] is None)
    # a page ending on a verdict-only item: the cursor is its position, and the next page starts there
    k = max(k for k, e in enumerate(items[:-1]) if e["update"] is None)
    first = decode_events_page(orjson.dumps({"events": items[: k + 1]}), None)
    at = (0, parse_us(items[k]["verdict"]["record_time"]))
    assert first.last == at
    again = decode_events_page(orjson.dumps({"events": items[k:]}), at)  # the boundary microsecond re-read
    assert again.rows[0][0] == items[k]["verdict"]["update_id"] and again.last[1] > at[1]
    with pytest.raises(MalformedPage, match="breaks ascending order"):
        decode_events_page(orjson.dumps({"events": items[k - 1 :]}), at)  # an item before the boundary
    with pytest.raises(MalformedPage, match="neither an update nor a verdict"):
        decode_events_page(orjson.dumps({"events": [{**only[0], "verdict": None}]}), None)
