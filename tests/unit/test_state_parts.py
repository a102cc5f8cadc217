"""Contract-state parts without a database: compact JSON, facts of an update, the order-free merge."""

from __future__ import annotations

import random

import pytest

from scanfill import framing
from scanfill.state.compact import ValueError_, arguments, compact
from scanfill.state.facts import COLUMNS, created, ended, frame, merge, moved, position, template_name, where


def rec(*fields: tuple[str | None, dict]) -> dict:
    return {"record": {"fields": [{"label": k, "value": v} if k else {"value": v} for k, v in fields]}}


def test_every_value_kind_in_the_json_api_encoding() -> None:
    v = rec(
        ("n", {"numeric": "1.5000000000"}), ("i", {"int64": "-7"}), ("t", {"text": "x"}), ("p", {"party": "a::1"}),
        ("c", {"contractId": "00ab"}), ("b", {"bool": False}), ("u", {"unit": {}}),
        ("ts", {"timestamp": "1719263280123000"}), ("d", {"date": 19898}),
        ("none", {"optional": {}}), ("some", {"optional": {"value": {"int64": "1"}}}),
        ("someNone", {"optional": {"value": {"optional": {}}}}),
        ("someSome", {"optional": {"value": {"optional": {"value": {"text": "y"}}}}}),
        ("l", {"list": {"elements": [{"int64": "1"}, {"int64": "2"}]}}), ("empty", {"list": {}}),
        ("tm", {"textMap": {"entries": [{"key": "k", "value": {"int64": "3"}}]}}),
        ("gm", {"genMap": {"entries": [{"key": {"party": "a"}, "value": {"int64": "4"}}]}}),
        ("v", {"variant": {"constructor": "InputAmulet", "value": {"contractId": "00cd"}, "variantId": {}}}),
        ("e", {"enum": {"constructor": "Red"}}),
        ("tuple", rec(("_1", {"int64": "1"}), ("_2", {"text": "z"}))),
    )  # fmt: skip
    assert compact(v) == {
        "n": "1.5000000000", "i": "-7", "t": "x", "p": "a::1", "c": "00ab", "b": False, "u": {},
        "ts": "2024-06-24T21:08:00.123Z", "d": "2024-06-24", "none": None, "some": "1", "someNone": [],
        "someSome": ["y"], "l": ["1", "2"], "empty": [], "tm": {"k": "3"}, "gm": [["a", "4"]],
        "v": {"tag": "InputAmulet", "value": "00cd"}, "e": "Red", "tuple": {"_1": "1", "_2": "z"},
    }  # fmt: skip


def test_positional_records_become_arrays_in_field_order() -> None:
    v = rec((None, {"party": "a"}), (None, rec((None, {"int64": "5"}))), (None, {"optional": {}}))
    assert compact(v) == ["a", ["5"], None]
    assert compact(rec()) == {}


def test_already_compact_arguments_are_kept_and_garbage_is_refused() -> None:
    assert arguments({"owner": "a", "amount": {"initialAmount": "1.0"}}) == {"owner": "a", "amount": {"initialAmount": "1.0"}}
    assert arguments(rec(("owner", {"party": "a"}))) == {"owner": "a"}
    for bad in ({"record": {"fields": [{"label": "x", "value": {"wat": 1}}]}}, {"record": {"fields": [{"label": "x"}]}},
                {"record": {"fields": [{"label": "x", "value": 3}]}}):  # fmt: skip
        with pytest.raises(ValueError_):
            arguments(bad)


def test_the_merge_is_the_same_in_any_order_and_twice() -> None:
    def at(uid: str, m: int, t: int) -> bytes:
        return where(uid, m, "s0", t)

    facts = [
        created("c1", "p:M:T", "p", at("u1", 0, 10), position(0, 10), framing.NULL, "{}", ["a"], [], "s0"),
        ended("c1", "p:M:T", "p", at("u3", 1, 5), position(1, 5), "Archive"),
        ended("c1", "p:M:T", "p", at("u9", 1, 9), position(1, 9), "Late"),  # a second one (a broken ledger): the first counts
        moved("c1", "p:M:T", "p", "s1", position(0, 20)),
        moved("c1", "p:M:T", "p", "s2", position(1, 1)),
        created("c2", "p:M:U", "p", at("u2", 0, 3), position(0, 3), framing.NULL, None, [], [], "s0"),
        ended("c2", "p:M:U", "p", at("u2", 0, 3), position(0, 3), "Archive"),  # transient
        ended("c3", "p:M:V", "p", at("u4", 0, 7), position(0, 7), "Archive"),  # its create not loaded yet
    ]  # fmt: skip
    want = None
    rng = random.Random(1)
    for _ in range(50):
        order = facts * rng.randint(1, 2)
        rng.shuffle(order)
        got = merge(order)
        assert [f.contract_id for f in got] == ["c1", "c2", "c3"]
        want = want or got
        assert got == want
    c1, c2, c3 = want
    assert (c1.created_pos, c1.archived_pos, c1.synchronizer_pos) == (position(0, 10), position(1, 5), position(1, 1))
    assert c1.create == facts[0].create and c1.end == facts[1].end and c1.place == facts[4].place
    assert c2.created_pos == c2.archived_pos and c3.created_pos is None and c3.template == facts[-1].template
    types = ("text",) * 5 + ("int8", "text", "timestamptz", "timestamptz", "int8", "jsonb", "text", "text[]", "text[]",
                             "text", "int8", "text", "timestamptz", "text", "int8", "text", "int8")  # fmt: skip
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in framing.parse(b"".join(frame(f) for f in want), types)]
    assert rows[0]["archived_choice"] == "Archive" and rows[0]["synchronizer_id"] == "s2"
    assert rows[0]["created_update_id"] == "u1" and rows[0]["signatories"] == ["a"] and rows[2]["created_pos"] is None


def test_positions_order_migrations_before_record_times() -> None:
    assert position(1, 0) > position(0, 2_000_000_000_000_000)  # a later migration, earlier record time
    assert template_name("abc123:Splice.Amulet:Amulet") == template_name("Splice.Amulet:Amulet") == "Splice.Amulet:Amulet"
