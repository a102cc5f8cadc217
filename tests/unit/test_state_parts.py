"""Contract-state parts without a database: compact JSON, facts of an update, the order-free merge."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from scanfill.state.compact import ValueError_, arguments, compact
from scanfill.state.facts import Fact, combine, merge, position, template_name


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


def _fact(cid: str, **kw: object) -> Fact:
    base = dict.fromkeys(Fact._fields)
    base["contract_id"] = cid
    base.update(kw)
    return Fact(**base)  # type: ignore[arg-type]


def test_the_merge_is_the_same_in_any_order_and_twice() -> None:
    t = datetime(2024, 6, 24, tzinfo=UTC)
    facts = [
        _fact("c1", template_id="p:M:T", template_name="M:T", created_update_id="u1", created_pos=position(0, 10),
              created_record_time=t, synchronizer_id="s0", synchronizer_pos=position(0, 10), payload="{}"),
        _fact("c1", template_id="p:M:T", template_name="M:T", archived_update_id="u3", archived_pos=position(1, 5),
              archived_choice="Archive"),
        _fact("c1", template_id="p:M:T", template_name="M:T", archived_update_id="u9", archived_pos=position(1, 9),
              archived_choice="Late"),  # a second consuming exercise (a broken ledger): the first one counts
        _fact("c1", template_id="p:M:T", synchronizer_id="s1", synchronizer_pos=position(0, 20)),
        _fact("c1", template_id="p:M:T", synchronizer_id="s2", synchronizer_pos=position(1, 1)),
        _fact("c2", template_id="p:M:U", template_name="M:U", created_update_id="u2", created_pos=position(0, 3),
              archived_update_id="u2", archived_pos=position(0, 3)),  # transient
    ]  # fmt: skip
    want = None
    rng = random.Random(1)
    for _ in range(50):
        order = facts * rng.randint(1, 2)
        rng.shuffle(order)
        got = merge(order)
        assert [f.contract_id for f in got] == ["c1", "c2"]
        want = want or got
        assert got == want
    c1 = want[0]
    assert (c1.created_update_id, c1.archived_update_id, c1.archived_choice, c1.synchronizer_id) == ("u1", "u3", "Archive", "s2")
    assert combine(combine(facts[1], facts[0]), facts[2]) == combine(facts[0], combine(facts[2], facts[1]))


def test_positions_order_migrations_before_record_times() -> None:
    assert position(1, 0) > position(0, 2_000_000_000_000_000)  # a later migration, earlier record time
    assert template_name("abc123:Splice.Amulet:Amulet") == template_name("Splice.Amulet:Amulet") == "Splice.Amulet:Amulet"
