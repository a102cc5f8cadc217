"""What users ask of contract state, outside SQL: the active contracts at a time (`scanfill acs`),
Amulet holdings with their holding fees (`scanfill holdings`), and the proof that the state is
Scan's own (`verify --acs-at`: a scan's ACS snapshot against `active()` at that exact position)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from psycopg import sql
from psycopg.rows import dict_row

from scanfill.db import Database
from scanfill.errors import ConfigError, ScanError, ScanHTTPError
from scanfill.ops.verify import Check
from scanfill.scan import endpoints as ep
from scanfill.scan.client import ScanClient, ScanConfig, redact_url
from scanfill.timeutil import TimestampError, format_us, parse_us, us_to_dt

PAGE = 1000
ACS_CHECK = "contract state equals the scans' ACS snapshot"


@dataclass(frozen=True)
class Position:
    """(migration, record time) as the user asked for it and as the database resolved it."""

    migration_id: int
    t_us: int | None  # None: the end of the migration (or now)

    def __str__(self) -> str:
        return f"migration {self.migration_id} at {format_us(self.t_us) if self.t_us is not None else 'its end'}"


def _at(pos: Position | None) -> tuple[int | None, Any]:
    """The (at_migration, at_time) arguments of the SQL functions for a position (None: now)."""
    return (None, None) if pos is None else (pos.migration_id, us_to_dt(pos.t_us) if pos.t_us is not None else None)


def _rows(db: Database, application: str, q: sql.Composed, args: Any) -> list[dict[str, Any]]:
    with db.connect(autocommit=True, application=application) as conn:
        return conn.cursor(row_factory=dict_row).execute(q, args).fetchall()


def resolve(db: Database, at_us: int | None, migration: int | None) -> Position:
    """The migration a bare time means (the newest whose history had begun then), as `active()` does."""
    if migration is not None:
        return Position(migration, at_us)
    with db.connect(autocommit=True, application="scanfill state") as conn:
        if at_us is None:
            row = conn.execute(sql.SQL("SELECT max(migration_id) FROM {}").format(db.t("backfill_ranges"))).fetchone()
        else:
            row = conn.execute(sql.SQL("SELECT {}.migration_at(%s)").format(sql.Identifier(db.schema)),
                               (us_to_dt(at_us),)).fetchone()  # fmt: skip
    return Position(int(row[0]) if row and row[0] is not None else 0, at_us)


def active(db: Database, pos: Position | None, template: str | None = None, party: str | None = None,
           limit: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of `active()` at a position (None: now), filtered by stakeholder."""
    if template is not None and ":" not in template:
        raise ConfigError(f"a template is <module>:<entity>, <package-name>:<module>:<entity> or "
                          f"<package id>:<module>:<entity> (e.g. Splice.Amulet:Amulet), not {template!r}")  # fmt: skip
    s = sql.Identifier(db.schema)
    q = sql.SQL(
        "SELECT c.contract_id, c.template_id, c.package_name, c.created_migration_id, c.created_record_time, "
        "c.created_update_id, c.synchronizer_id, c.signatories, c.observers, "
        "coalesce(c.payload_exact::text, c.payload::text) AS payload "
        "FROM {}.active(%(t)s, %(m)s, %(at)s) c WHERE %(p)s::text IS NULL OR %(p)s = ANY(c.signatories) "
        "OR %(p)s = ANY(c.observers)" + (" LIMIT %(n)s" if limit else "")
    ).format(s)
    m, at = _at(pos)
    return _rows(db, "scanfill acs", q, {"t": template, "m": m, "at": at, "p": party, "n": limit})


def holdings(db: Database, pos: Position | None, party: str | None = None,
             as_of_round: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per holding (`holdings()` in SQL): owner, amounts at creation, fees accrued as of a round
    (None: Scan's default, the earliest open round now), what is left."""
    q = sql.SQL("SELECT * FROM {}.holdings(%s, %s, %s, %s)").format(sql.Identifier(db.schema))
    return _rows(db, "scanfill holdings", q, (*_at(pos), party, as_of_round))


def per_owner(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holdings summed per owner, exactly (Decimal), locked and unlocked apart."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        o = out.setdefault(r["owner"], {"owner": r["owner"], "holdings": 0, "locked": 0, "round": r["at_round"],
                                        "unlocked_initial": Decimal(0), "locked_initial": Decimal(0),
                                        "holding_fees": Decimal(0), "amount": Decimal(0)})  # fmt: skip
        o["holdings"] += 1
        o["locked"] += bool(r["locked"])
        o["locked_initial" if r["locked"] else "unlocked_initial"] += r["initial_amount"]
        o["holding_fees"] += r["holding_fees"]
        o["amount"] += r["amount"]
    return sorted(out.values(), key=lambda o: o["owner"])


# ----- verify --acs-at ---------------------------------------------------------------------------

_DECIMAL = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _loads(text: str) -> Any:
    """A stored payload: orjson refuses a lone surrogate (`\\ud800`), which a Daml text may hold and
    payload_exact keeps; the standard library reads it as Python does."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def normalize(v: Any) -> Any:
    """A compact JSON value compared as Daml sees it: a Numeric by its value ("0E-10" is "0.0000000000"),
    an instant by its microseconds; everything else as it is."""
    if isinstance(v, dict):
        return {k: normalize(x) for k, x in v.items()}
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, str):
        if _DECIMAL.match(v):
            try:
                return ("numeric", str(Decimal(v).normalize()))
            except InvalidOperation:
                return v
        if _INSTANT.match(v):
            try:
                return ("instant", parse_us(v))
            except TimestampError:
                return v
    return v


@dataclass
class Snapshot:
    url: str
    record_time: str
    contracts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def digest(self) -> str:
        h = hashlib.sha256()
        for cid in sorted(self.contracts):
            c = self.contracts[cid]
            h.update(orjson.dumps([cid, c["template_id"], normalize(c["create_arguments"])], option=orjson.OPT_SORT_KEYS))
        return h.hexdigest()


async def _snapshot(client: ScanClient, url: str, m: int, at_us: int) -> Snapshot | str:
    """One scan's snapshot at or before the time, every page of it; or why it has none."""
    only = {url}
    try:
        data, _ = await client.request("GET", ep.acs_snapshot_before(m, at_us), only=only, what="ACS snapshot time")
    except ScanHTTPError as exc:
        if exc.status == 404:
            return f"{redact_url(url)} has no ACS snapshot of migration {m} at or before {format_us(at_us)}"
        raise
    snap = Snapshot(url, str(orjson.loads(data)["record_time"]))
    after: int | None = None
    while True:
        page = await client.post_json(ep.ACS, ep.acs(m, snap.record_time, PAGE, after), only=only)
        for c in page.get("created_events", []):
            snap.contracts[str(c["contract_id"])] = c
        after = page.get("next_page_token")
        if after is None:
            return snap


async def agreed_snapshot(client: ScanClient, m: int, at_us: int, agree: int) -> tuple[Snapshot, list[str]]:
    """The snapshot `agree` scans serve identically (the same record time and contracts); the notes
    say which scans had none or disagreed."""
    notes: list[str] = []
    groups: dict[tuple[str, str], list[Snapshot]] = {}
    for url in client.urls:
        try:
            got = await _snapshot(client, url, m, at_us)
        except ScanError as exc:
            got = f"{redact_url(url)}: {exc}"
        if isinstance(got, str):
            notes.append(got)
            continue
        key = (got.record_time, got.digest())
        groups.setdefault(key, []).append(got)
        if len(groups[key]) >= agree:
            others = [s for k, g in groups.items() if k != key for s in g]
            notes += [f"{redact_url(s.url)} served another snapshot ({len(s.contracts)} contracts at "
                      f"{s.record_time})" for s in others]  # fmt: skip
            return groups[key][0], notes
    raise AcsUnavailable(f"no {agree} scan(s) served the same ACS snapshot of migration {m} at or before "
                         f"{format_us(at_us)}" + (": " + "; ".join(notes) if notes else ""))  # fmt: skip


class AcsUnavailable(Exception):
    """No (agreeing) snapshot to compare with."""


def _decimal(v: Any) -> Decimal:
    return Decimal(str(v))


async def verify_acs(db: Database, scan: ScanConfig, at_us: int, migration: int | None, agree: int = 1) -> Check:
    """The scans' ACS snapshot at or before `at` against `active()` at exactly its position: contract
    ids, templates and compact payloads, then the holdings summary of every owner in it."""
    pos = resolve(db, at_us, migration)
    async with ScanClient(scan) as client:
        try:
            snap, notes = await agreed_snapshot(client, pos.migration_id, at_us, agree)
        except AcsUnavailable as exc:
            return Check(ACS_CHECK, False, str(exc))
        return await _compare(db, client, snap, Position(pos.migration_id, parse_us(snap.record_time)), agree, notes)


async def _compare(db: Database, client: ScanClient, snap: Snapshot, at: Position, agree: int,
                   notes: list[str]) -> Check:  # fmt: skip
    ours = {r["contract_id"]: r for r in active(db, at)}
    theirs = snap.contracts
    missing = sorted(set(theirs) - set(ours))
    extra = sorted(set(ours) - set(theirs))
    differ = []
    for cid in sorted(set(theirs) & set(ours)):
        c, r = theirs[cid], ours[cid]
        if c["template_id"] != r["template_id"]:
            differ.append(f"{cid}: template {r['template_id']} here, {c['template_id']} at the scan")
        elif normalize(_loads(r["payload"])) != normalize(c["create_arguments"]):
            differ.append(f"{cid}: payload differs")
    rows = ([f"missing here (active at the scan): {cid} ({theirs[cid]['template_id']})" for cid in missing]
            + [f"extra here (not active at the scan): {cid} ({ours[cid]['template_id']})" for cid in extra]
            + [f"differs: {d}" for d in differ])  # fmt: skip
    owners = _owners(theirs)
    held = await _holdings_diff(client, snap, at, db, owners)
    rows += held
    detail = (f"{at}: {len(theirs):,} contracts at {redact_url(snap.url)}"
              + (f" (agreed by {agree})" if agree > 1 else "")
              + f", {len(ours):,} here; {len(missing)} missing, {len(extra)} extra, {len(differ)} differ; "
              + f"holdings of {len(owners)} owner(s) " + ("differ" if held else "equal"))  # fmt: skip
    if notes:
        detail += "; " + "; ".join(notes)
    return Check(ACS_CHECK, not rows, detail, rows)


def _owners(contracts: dict[str, dict[str, Any]]) -> list[str]:
    out = set()
    for c in contracts.values():
        entity = str(c["template_id"]).rsplit(":", 1)[-1]
        a = c["create_arguments"]
        if entity == "LockedAmulet" and isinstance(a, dict):
            a = a.get("amulet")
        if entity in ("Amulet", "LockedAmulet") and isinstance(a, dict) and isinstance(a.get("owner"), str):
            out.add(a["owner"])
    return sorted(out)


async def _holdings_diff(client: ScanClient, snap: Snapshot, at: Position, db: Database,
                         owners: list[str]) -> list[str]:  # fmt: skip
    if not owners:
        return []
    mine: dict[str, tuple[Decimal, Decimal]] = {}
    for o in per_owner(holdings(db, at)):
        mine[o["owner"]] = (o["unlocked_initial"], o["locked_initial"])
    fees: dict[int, dict[str, Decimal]] = {}  # per as-of round: each owner's holding fees here
    out = []
    for k in range(0, len(owners), 100):
        chunk = owners[k : k + 100]
        page = await client.post_json(ep.HOLDINGS_SUMMARY, ep.holdings_summary(at.migration_id, snap.record_time,
                                                                               chunk), only={snap.url})  # fmt: skip
        asof = page.get("computed_as_of_round")
        for s in page.get("summaries", []):
            got = (_decimal(s["total_unlocked_coin"]), _decimal(s["total_locked_coin"]))
            have = mine.get(str(s["party_id"]), (Decimal(0), Decimal(0)))
            if got != have:
                out.append(f"holdings of {s['party_id']}: unlocked {have[0]} / locked {have[1]} here, "
                           f"{got[0]} / {got[1]} at the scan")  # fmt: skip
            if asof is None or s.get("accumulated_holding_fees_total") is None:
                continue  # a scan that does not say (Scan always does: both are required fields)
            if int(asof) not in fees:
                fees[int(asof)] = {o["owner"]: o["holding_fees"] for o in per_owner(holdings(db, at, None, int(asof)))}
            want, ours = _decimal(s["accumulated_holding_fees_total"]), fees[int(asof)].get(str(s["party_id"]), Decimal(0))
            if want != ours:
                out.append(f"holding fees of {s['party_id']} as of round {asof}: {ours} here, {want} at the scan")
    return out


def run_verify_acs(db: Database, scan: ScanConfig, at_us: int, migration: int | None, agree: int) -> Check:
    return asyncio.run(verify_acs(db, scan, at_us, migration, agree))
