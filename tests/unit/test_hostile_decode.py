"""The decoder and the rules on hostile values, without a server: lone surrogates keep the served
bytes, nesting past what can be decoded is refused naming the update, payloads jsonb cannot hold
take the documented two forms, amounts that are not a Daml Numeric 10 are named, never rounded."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from scanfill.economy.transfers import not_numeric10
from scanfill.errors import Unstorable, db_error_kind
from scanfill.load.decode import decode_stream_page
from scanfill.state.facts import Payload, _payload

SYNC = "global-domain::1220" + "ab" * 32


def page(args: bytes, uid: str = "1220aa") -> bytes:
    ev = (b'{"event_type":"created_event","event_id":"' + uid.encode() + b':0","contract_id":"00cc",'
          b'"template_id":"p:M:T","package_name":"x","create_arguments":' + args +
          b',"created_at":"2024-06-24T21:08:00Z","signatories":["a::1"],"observers":[]}')  # fmt: skip
    item = (b'{"update_id":"' + uid.encode() + b'","migration_id":0,"record_time":"2024-06-24T21:08:00.000001Z",'
            b'"synchronizer_id":"' + SYNC.encode() + b'","effective_at":"2024-06-24T21:08:00Z","events_by_id":{"'
            + uid.encode() + b':0":' + ev + b"}}")  # fmt: skip
    return b'{"transactions":[' + item + b"]}"


def test_lone_surrogates_decode_and_keep_the_served_bytes() -> None:
    args = b'{"record":{"fields":[{"label":"t","value":{"text":"a\\ud800b \\\\ud800 \\ud83d\\ude00 \\udfff"}}]}}'
    batch = decode_stream_page(page(args), None)
    (ev,) = batch.event_rows()
    assert ev.payload == args  # byte for byte: the lone escapes, the escaped backslash, the pair
    (fact,) = batch.updates[0].facts
    assert b"a\\\\ud800b" in (fact.create or b"")  # jsonb: the escape as text; json: the value
    got = _payload("u", args)
    assert isinstance(got, Payload) and got.exact is not None
    assert json.loads(got.exact) == {"t": "a\ud800b \\ud800 \U0001f600 \udfff"}
    assert orjson.loads(got.jsonb) == {"t": "a\\ud800b \\ud800 \U0001f600 \\udfff"}


def test_nul_takes_two_forms_and_plain_payloads_one() -> None:
    got = _payload("u", b'{"record":{"fields":[{"label":"t","value":{"text":"x\\u0000y"}}]}}')
    assert got == Payload('{"t":"x\\\\u0000y"}', '{"t":"x\\u0000y"}')
    assert _payload("u", b'{"record":{"fields":[{"label":"t","value":{"text":"\\\\u0000"}}]}}') == '{"t":"\\\\u0000"}'


def test_nesting_past_what_can_be_decoded_is_refused_naming_the_update() -> None:
    deep = b'{"record":{"fields":[{"label":"inner","value":' * 3000 + b'{"text":"x"}' + b"}]}}" * 3000
    with pytest.raises(Unstorable) as err:
        decode_stream_page(page(deep, "1220dead"), None)
    assert "update 1220dead" in str(err.value) and "Daml-LF" in str(err.value)
    assert "create_arguments.record.fields" in str(err.value)


@pytest.mark.parametrize(("text", "why"), [
    ("1.0000000000", None), ("-12.5", None), ("1.00000000000000", None), ("9" * 28 + ".9999999999", None),
    ("abc", "not a decimal number"), ("1e30", "not a decimal number"), ("", "not a decimal number"),
    ("1" + "0" * 28, "more than 28 integer digits"), ("1.00000000001", "more than 10 decimals"),
])  # fmt: skip
def test_numeric10(text: str, why: str | None) -> None:
    got = not_numeric10(text)
    assert (got is None) if why is None else (got is not None and got.startswith(why))


class _Err(Exception):
    def __init__(self, sqlstate: str | None, text: str = "") -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("state", "kind"), [
    (None, "transient"), ("08006", "transient"), ("40001", "transient"), ("40P01", "transient"),
    ("57014", "transient"), ("57P01", "transient"), ("55P03", "transient"), ("53300", "transient"),
    ("53100", "resource"), ("53200", "resource"), ("22P05", "permanent"), ("22P02", "permanent"),
    ("22003", "permanent"), ("54000", "permanent"), ("23502", "permanent"), ("42703", "permanent"),
])  # fmt: skip
def test_database_errors_are_classified(state: str | None, kind: str) -> None:
    assert db_error_kind(_Err(state)) == kind


@pytest.mark.parametrize(("state", "text", "kind"), [
    ("42501", 'could not open file "pg_tblspc/1/PG_16/2/3_fsm": Permission denied', "resource"),
    ("58P01", 'could not open file "base/1/2": No such file or directory', "resource"),
    ("42501", "permission denied for table ledger_updates", "permanent"),
    ("58030", "could not write to file: No space left on device", "resource"),
])  # fmt: skip
def test_the_servers_own_files_are_the_operators_to_fix(state: str, text: str, kind: str) -> None:
    """A failed access to the server's files (a tablespace whose permissions changed) is nothing in
    the rows: the load stops for the operator instead of blaming an update."""
    assert db_error_kind(_Err(state, text)) == kind


def _row(**amounts: str | None) -> Any:
    from datetime import UTC, datetime

    from scanfill.economy.transfers import _FIELDS, TransferRow

    base = dict.fromkeys(_FIELDS, None) | {"output_fees": None}
    return TransferRow("e", "u", 0, "s", datetime(2024, 1, 1, tzinfo=UTC), 0, "AmuletRules_Transfer", None, None, 1,
                       "p", None, traffic_bytes=None, readable=True, **(base | amounts))  # fmt: skip


@pytest.mark.parametrize(("amounts", "fees", "named"), [
    ({"input_amulets": "224019632.4829619323", "holding_fees": "0E-10"}, ["209.9976000000"], None),
    ({"input_amulets": "1|2"}, [], "inputAmuletAmount '1|2': not a decimal number"),  # one value, not two
    ({"input_amulets": "1", "holding_fees": "1.00000000001"}, [], "holdingFees '1.00000000001': more than 10"),
    ({"input_amulets": "1"}, ["1e30"], "outputFees[0] '1e30': not a decimal number"),
    ({"input_amulets": "1.50000000000"}, ["0"], None),  # trailing zeros: exact all the same
])  # fmt: skip
def test_every_amount_is_checked_whichever_way_it_is_read(amounts: dict[str, str], fees: list[str],
                                                          named: str | None) -> None:  # fmt: skip
    """The one-match common case and the field-by-field check agree: a value the first cannot take is
    named by the second, never let through."""
    from scanfill.economy.transfers import _REQUIRED, _checked

    summary: dict[str, Any] = {key: {"numeric": "0"} for key in _REQUIRED} | {"outputFees": {"list": {"elements": [
        {"numeric": f} for f in fees]}}}  # fmt: skip
    got = _checked(_row(**amounts), summary)
    assert (got.problem is None) if named is None else (got.problem is not None and named in got.problem), got.problem
    assert got.readable is (named is None)
