"""What one update minted and burnt: a row per `TransferSummary` (and per DevNet tap), read from
the exercise's argument and result as the loader decodes the page.

Splice's own rules, from `docs/round-economics.md`:
- the summary-bearing choices are listed in SUMMARY_CHOICES; a wrapper such as
  `TransferPreapproval_Send` holds an `AmuletRules_Transfer` child, and a summary-bearing choice may
  hold another (`AmuletRules_BuyMemberTraffic` pays by a transfer): only the outermost summary of a
  subtree counts, as Scan's parser stopped descending there;
- the party a summary is attributed to is the transfer's sender (`provider` for traffic purchases
  and preapprovals, `validator` for external-party setups, else the acting party), as Scan did;
- every amount is kept as served text, so sums in `numeric` are exact.

A row is keyed by its event id, so a page stored twice (a retry, a refetch) writes it once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import msgspec
import orjson

from scanfill.economy.packages import version_of
from scanfill.state.facts import position

SUMMARY_CHOICES = frozenset({
    "AmuletRules_Transfer", "AmuletRules_BuyMemberTraffic", "AmuletRules_CreateTransferPreapproval",
    "AmuletRules_CreateExternalPartySetupProposal", "TransferPreapproval_Renew", "TransferPreapproval_SendV2",
})  # fmt: skip
TAP_CHOICES = frozenset({"AmuletRules_DevNet_Tap", "AmuletRules_Mint"})
CHOICES = SUMMARY_CHOICES | TAP_CHOICES
# where a choice's TransferSummary-bearing result sits inside its exercise result
# (Splice's AmuletRules.daml result types; `amuletPaid`, where a choice has it, is beside the transfer result)
_RESULT_PATH = {"TransferPreapproval_Renew": ("transferResult",), "TransferPreapproval_SendV2": ("result",),
                "AmuletRules_CreateTransferPreapproval": ("transferResult",),
                "AmuletRules_CreateExternalPartySetupProposal": ("transferResult",)}  # fmt: skip
_PARTY_FIELD = {"AmuletRules_BuyMemberTraffic": "provider", "AmuletRules_CreateTransferPreapproval": "provider",
                "AmuletRules_CreateExternalPartySetupProposal": "validator"}  # fmt: skip

COLUMNS = ("event_id", "update_id", "migration_id", "synchronizer_id", "record_time", "pos", "choice", "package_id", "amulet_version",
           "round", "party", "provider", "input_amulets", "app_rewards", "validator_rewards", "faucet_rewards",
           "sv_rewards", "unclaimed_activity_rewards", "dev_fund_rewards", "holding_fees", "output_fees",
           "sender_change_fee", "sender_change_amount", "amulet_price", "amulet_paid", "tapped", "traffic_bytes",
           "readable", "problem")  # fmt: skip
# each column's PostgreSQL type (the sink's upsert casts to them, the lake maps them to Arrow)
_NOT_NUMERIC = {"event_id": "text", "update_id": "text", "migration_id": "bigint", "synchronizer_id": "text",
                "record_time": "timestamptz", "pos": "bigint", "choice": "text", "package_id": "text",
                "amulet_version": "text", "round": "bigint", "party": "text", "provider": "text",
                "traffic_bytes": "bigint", "readable": "boolean", "problem": "text"}  # fmt: skip
TYPES = {c: _NOT_NUMERIC.get(c, "numeric") for c in COLUMNS}  # amounts: numeric(38,10)


class TransferRow(NamedTuple):
    """One row of `amulet_transfers` (numerics as their exact decimal text)."""

    event_id: str
    update_id: str
    migration_id: int
    synchronizer_id: str
    record_time: datetime
    pos: int
    choice: str
    package_id: str | None
    amulet_version: str | None
    round: int | None
    party: str | None
    provider: str | None
    input_amulets: str | None
    app_rewards: str | None
    validator_rewards: str | None
    faucet_rewards: str | None
    sv_rewards: str | None
    unclaimed_activity_rewards: str | None
    dev_fund_rewards: str | None
    holding_fees: str | None
    output_fees: str | None
    sender_change_fee: str | None
    sender_change_amount: str | None
    amulet_price: str | None
    amulet_paid: str | None
    tapped: str | None
    traffic_bytes: int | None
    readable: bool  # False: no field labels (positional records), no input amount, or an amount refused
    problem: str | None = None  # what could not be read, by field (None: all of it was)


class Exercise(Protocol):
    """What the rules read of an event (`load.decode.Event` is one)."""

    event_type: str
    event_id: str
    template_id: str | None
    choice: str | None
    child_event_ids: tuple[str, ...] | None
    acting_parties: tuple[str, ...] | None


_SCALARS = frozenset({"numeric", "int64", "text", "party", "contractId", "bool", "timestamp", "date", "enum"})


# protobuf_json (what Scan serves unless asked for compact JSON) decoded by msgspec in C into these
# structs, the kinds the rules never read (variants, maps) skipped: 3x cheaper than parsing the
# payload into dicts and walking them (measured 8.9 us against 29 us a summary).
class _Field(msgspec.Struct):
    value: _Val | None = None
    label: str = ""


class _Rec(msgspec.Struct):
    fields: list[_Field] = []


class _Opt(msgspec.Struct):
    value: _Val | None = None


class _List(msgspec.Struct):
    elements: list[_Val] = []


class _Val(msgspec.Struct):
    record: _Rec | None = None
    numeric: str | None = None
    int64: str | None = None
    party: str | None = None
    text: str | None = None
    contractId: str | None = None
    optional: _Opt | None = None
    list: _List | None = None


_typed = msgspec.json.Decoder(_Val)


def _value(v: Any) -> Any:
    """A value's content (a scalar's text, an optional's value, a list's elements); records stay
    as they are. Compact values pass through unchanged."""
    if type(v) is _Val:
        while v is not None and v.record is None:
            if v.optional is not None:
                v = v.optional.value
                continue
            if v.list is not None:
                return [_value(e) for e in v.list.elements]
            return v.numeric or v.int64 or v.party or v.text or v.contractId
        return v
    while type(v) is dict and len(v) == 1:
        ((tag, x),) = v.items()
        if tag in _SCALARS:
            return x
        if tag == "optional":
            v = x.get("value") if type(x) is dict else None
            continue
        if tag == "list":
            return [_value(e) for e in (x.get("elements") or ())] if type(x) is dict else []
        break
    return v


def _rec(v: Any) -> dict[str, Any]:
    """A record's fields by label, in either encoding (an unlabelled protobuf_json record has none)."""
    v = _value(v)
    if type(v) is _Val:
        return {f.label: f.value for f in v.record.fields if f.label} if v.record is not None else {}
    if type(v) is not dict:
        return {}
    rec = v.get("record")
    if type(rec) is dict and len(v) == 1:
        return {f["label"]: f.get("value") for f in rec.get("fields") or () if f.get("label")}
    return v


def _get(v: Any, *path: str) -> Any:
    """The field at `path` of a payload in either encoding, read lazily: only the records on the
    path are looked at, so a large result (balance changes, created amulets) costs nothing."""
    for k in path:
        v = _rec(v).get(k)
    return _value(v)


def _num(v: Any) -> str | None:
    """A Decimal as served (text), or None; `Some x` of an optional arrives as x."""
    if type(v) is _Val and v.numeric is not None:
        return v.numeric  # the usual case, first
    v = _value(v)
    if isinstance(v, list):  # Some (Some x) in the compact encoding
        v = v[0] if v else None
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return str(v)
    return None


def _sum(vs: Any) -> str | None:
    """Σ of a list of Decimals, exact (as text; PostgreSQL adds them again exactly)."""
    vs = _value(vs)
    if not isinstance(vs, list):
        return None
    if len(vs) == 1 and isinstance(vs[0], str):
        return vs[0]  # one output, the usual transfer: nothing to add
    try:
        return str(sum((Decimal(str(x)) for x in vs), Decimal(0)))
    except ArithmeticError:
        return None


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def row_of(ev: Exercise, arg: Any, result: Any, uid: str, m: int, sync: str, t: datetime, t_us: int) -> TransferRow:
    """The row of one summary-bearing (or tap) exercise, from its parsed argument and result."""
    choice = ev.choice or ""
    pkg = ev.template_id.split(":", 1)[0] if ev.template_id else None
    version = version_of(ev.template_id)
    acting = (ev.acting_parties or (None,))[0]
    where = (ev.event_id, uid, m, sync, t, position(m, t_us), choice, pkg, version)
    if choice in TAP_CHOICES:
        rnd = _int(_get(result, "amuletSum", "round", "number"))
        owner = _get(arg, "receiver") or acting
        amount = _num(_get(arg, "amount"))
        return _checked(TransferRow._make((*where, rnd, owner, None, *([None] * 13), amount, None, amount is not None,
                                           None if amount is not None else "the tap's amount is missing")), None)
    res = _rec(_get(result, *_RESULT_PATH.get(choice, ())))
    s = _rec(res.get("summary"))
    a = _rec(arg)
    transfer = _rec(a.get("transfer"))
    field = _PARTY_FIELD.get(choice)
    who = (_value(a.get(field)) if field else _value(transfer.get("sender")) or _value(a.get("sender"))) or acting
    provider = _value(transfer.get("provider") if transfer else a.get("provider"))
    return _checked(TransferRow(
        *where, _int(_get(res, "round", "number")), who, provider,
        _num(s.get("inputAmuletAmount")), _num(s.get("inputAppRewardAmount")),
        _num(s.get("inputValidatorRewardAmount")), _num(s.get("inputValidatorFaucetAmount")),
        _num(s.get("inputSvRewardAmount")), _num(s.get("inputUnclaimedActivityRecordAmount")),
        _num(s.get("inputDevelopmentFundAmount")), _num(s.get("holdingFees")), _sum(s.get("outputFees")),
        _num(s.get("senderChangeFee")), _num(s.get("senderChangeAmount")), _num(s.get("amuletPrice")),
        _num(_get(result, "amuletPaid")), None,
        _int(_value(a.get("trafficAmount"))) if choice == "AmuletRules_BuyMemberTraffic" else None,
        "inputAmuletAmount" in s,
    ), s)  # fmt: skip


# Daml's Decimal is Numeric 10: at most 38 digits, 10 of them decimals (Daml-LF; numeric(38,10) holds
# exactly that). Scan prints it as plain digits; anything else is not one.
_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_ZERO_EXP = re.compile(r"-?0(?:\.0*)?E[-+]?[0-9]{1,2}")
# the amounts of a row and the field each is read from (`outputFees` is a list: each element checked)
_FIELDS = {"input_amulets": "inputAmuletAmount", "app_rewards": "inputAppRewardAmount",
           "validator_rewards": "inputValidatorRewardAmount", "faucet_rewards": "inputValidatorFaucetAmount",
           "sv_rewards": "inputSvRewardAmount", "unclaimed_activity_rewards": "inputUnclaimedActivityRecordAmount",
           "dev_fund_rewards": "inputDevelopmentFundAmount", "holding_fees": "holdingFees",
           "sender_change_fee": "senderChangeFee", "sender_change_amount": "senderChangeAmount",
           "amulet_price": "amuletPrice", "amulet_paid": "amuletPaid", "tapped": "amount"}  # fmt: skip
# TransferSummary's fields that are not Optional in Splice's Daml (splice-amulet, Splice.AmuletRules)
_REQUIRED = ("inputAppRewardAmount", "inputValidatorRewardAmount", "inputSvRewardAmount", "inputAmuletAmount",
             "holdingFees", "outputFees", "senderChangeFee", "senderChangeAmount", "amuletPrice")  # fmt: skip
_BIGINT = 2**63
# Amounts as Scan serves them, all at once: a run of Numeric 10 values (no more than 28 integer digits
# nor 10 decimals, or a zero as "0E-10") each ended by '|'; when it does not match, each is checked
# alone and named with its reason.
_ALL_NUMERIC10 = re.compile(r"(?:(?:-?[0-9]{1,28}(?:\.[0-9]{1,10})?|-?0(?:\.0*)?E[-+]?[0-9]{1,2})\|)*")


def not_numeric10(text: str) -> str | None:
    """Why a served amount is not a Daml Numeric 10 (None: it is, and numeric(38,10) holds it exactly)."""
    m = _DECIMAL.fullmatch(text)
    if m is None and _ZERO_EXP.fullmatch(text):
        return None  # Scan serves a zero as Java's BigDecimal prints it, "0E-10" (Splice's docs, blocks 08-11)
    if m is None:
        return "not a decimal number"
    if len(m.group(1).lstrip("0")) > 28:
        return "more than 28 integer digits (Numeric 10 holds 38 digits, 10 of them decimals)"
    if len((m.group(2) or "").rstrip("0")) > 10:
        return "more than 10 decimals (Numeric 10 has 10; storing it would round it)"
    return None


def _shown(v: Any) -> str:
    text = v if isinstance(v, str) else orjson.dumps(v, default=str).decode() if not isinstance(v, _Val) else "a record"
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _checked(row: TransferRow, s: dict[str, Any] | None) -> TransferRow:
    """The row with every amount a Numeric 10 and every count a bigint: one that is not is named in
    `problem` (field and value) and left NULL, and the row is unreadable; never rounded, never a
    commit the database refuses. A summary's missing fields are named too (`s`: its fields by label;
    None for a tap, which has none)."""
    fees = _value(s.get("outputFees")) if s else None  # each fee checked: their sum would hide which
    fees = fees if isinstance(fees, list) else []
    texts = [v for v in (getattr(row, col) for col in _FIELDS) if v is not None]
    texts += [_num(fee) or "?" for fee in fees]
    joined = "".join(f"{t}|" for t in texts)  # a '|' inside a value makes the count differ
    fits = joined.count("|") == len(texts) and _ALL_NUMERIC10.fullmatch(joined) is not None  # the common case
    bad: list[str] = []
    fixes: dict[str, Any] = {}
    for col, name in () if fits else _FIELDS.items():
        v = getattr(row, col)
        why = not_numeric10(v) if v is not None else None
        if why is not None:
            bad.append(f"{name} {_shown(v)}: {why}")
            fixes[col] = None
    for i, fee in enumerate(() if fits else fees):
        text = _num(fee)
        why = "not a decimal number" if text is None else not_numeric10(text)
        if why is not None:
            bad.append(f"outputFees[{i}] {_shown(text if text is not None else _value(fee))}: {why}")
            fixes["output_fees"] = None
    for col in ("round", "traffic_bytes"):
        v = getattr(row, col)
        if v is not None and not -_BIGINT <= v < _BIGINT:
            bad.append(f"{col} {_shown(str(v))}: beyond a 64-bit integer")
            fixes[col] = None
    missing = [f for f in _REQUIRED if f not in s] if s else []
    notes = [*bad, *([f"TransferSummary lacks {', '.join(missing)}"] if missing else [])]
    if s is not None and not s:
        notes.append("no TransferSummary with field labels (a positional record, or none)")
    if bad:
        fixes["readable"] = False
    if notes:
        fixes["problem"] = "; ".join([*([row.problem] if row.problem else []), *notes])
    return row._replace(**fixes) if fixes else row


def _load(raw: Any) -> Any:
    """A served payload (raw bytes or text) parsed: protobuf_json into `_Val`s, anything else
    (compact JSON) into plain JSON values."""
    if isinstance(raw, (bytes, bytearray, memoryview, msgspec.Raw, str)):
        b = raw.encode() if isinstance(raw, str) else bytes(raw)
        if not b:
            return None
        try:
            got = _typed.decode(b)
            if got.record is not None:
                return got
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        return orjson.loads(b)
    return raw


def of_update(uid: str, m: int, sync: str, t: datetime, t_us: int, events: Sequence[Any]) -> list[TransferRow]:
    """The rows of one transaction's events (in tree pre-order): outermost summaries and taps only.
    An event's payloads may be served bytes or stored text."""
    out: list[TransferRow] = []
    inside: set[str] = set()
    for ev in events:
        if ev.event_type != "exercised_event":
            continue  # a create has no children
        if inside and ev.event_id in inside:
            inside.update(ev.child_event_ids or ())
            continue
        if ev.choice not in CHOICES:
            continue
        out.append(row_of(ev, _load(ev.choice_argument), _load(ev.exercise_result), uid, m, sync, t, t_us))
        inside.update(ev.child_event_ids or ())
    return out


def wanted(events: Sequence[Any]) -> bool:
    """Whether any event is one the rules read (most updates hold none: nothing is parsed)."""
    return any(ev.choice in CHOICES for ev in events if ev.event_type == "exercised_event")
