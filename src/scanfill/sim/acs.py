"""The simulator's ACS snapshots: `/v0/state/acs/snapshot-timestamp(-after)`, `POST /v1/state/acs`
and `POST /v1/holdings/summary`, computed from the same ledger (`Ledger.acs`) as every update."""

from __future__ import annotations

from typing import Any

from scanfill.sim.ledger import Ledger, to_compact
from scanfill.sim.lifecycle import Ref
from scanfill.timeutil import TimestampError, format_trimmed, parse_us


class NotFound(Exception):
    """Answered 404 with Scan's `{"error": ...}`."""


class Invalid(Exception):
    """Answered 400."""


def _time(body: dict[str, Any], key: str) -> int:
    try:
        return parse_us(str(body[key]))
    except (KeyError, TimestampError) as exc:
        raise Invalid(f"Invalid {key}: {exc}") from None


def _snapshot(ledger: Ledger, body: dict[str, Any]) -> tuple[int, int]:
    """(migration, snapshot time) a request names, by `record_time_match` (exact by default)."""
    m = body.get("migration_id")
    if not isinstance(m, int) or m not in ledger.specs:
        raise NotFound(f"No snapshots found for migration id {m}")
    t = _time(body, "record_time")
    snap = ledger.snapshot_before(m, t)
    match = body.get("record_time_match", "exact")
    if match not in ("exact", "at_or_before"):
        raise Invalid(f"Invalid record_time_match {match!r}")
    if snap is None or (match == "exact" and snap != t):
        raise NotFound(f"No snapshot found for migration {m} at record time {body['record_time']}")
    return m, snap


class Snapshots:
    """Snapshots computed once each (a scan stores them)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._cache: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self._refs: dict[str, Ref] = {}  # where each contract of a computed snapshot was created
        self._create_eids: dict[str, str] = {}

    def contracts(self, m: int, t: int) -> list[dict[str, Any]]:
        key = (m, t)
        if key not in self._cache:
            out = []
            for cid, ref in self.ledger.acs(m, t):
                self._refs[cid] = ref
                ev = self.ledger.created_event(ref, "")
                item = {
                    "contract_id": cid,
                    "template_id": ev["template_id"],
                    "package_name": ev["package_name"],
                    "create_arguments": to_compact(ev["create_arguments"]),
                    "created_at": ev["created_at"],
                    "signatories": ev["signatories"],
                    "observers": ev["observers"],
                }
                if ref.m == m:  # absent for a contract an earlier migration created
                    item = {"created_in_update_id": self.ledger.update_id(ref.m, ref.s, ref.i), **item}
                out.append(item)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = out
        return self._cache[key]

    @staticmethod
    def _query(query: dict[str, str], key: str) -> tuple[int, int]:
        try:
            return int(query["migration_id"]), parse_us(query[key])
        except (KeyError, ValueError, TimestampError) as exc:
            raise Invalid(f"Invalid query: {exc}") from None

    def before(self, query: dict[str, str]) -> dict[str, Any]:
        snap = self.ledger.snapshot_before(*self._query(query, "before"))
        if snap is None:
            raise NotFound(f"No snapshots found before {query['before']}")
        return {"record_time": format_trimmed(snap)}

    def after(self, query: dict[str, str]) -> dict[str, Any]:
        got = self.ledger.snapshot_after(*self._query(query, "after"))
        if got is None:
            raise NotFound(f"No snapshots found after {query['after']}")
        return {"record_time": format_trimmed(got[1])}

    def _selected(self, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]], int, int]:
        """(migration, the snapshot's contracts the request's filters keep, start, page size)."""
        m, t = _snapshot(self.ledger, body)
        size = body.get("page_size")
        if not isinstance(size, int) or size < 1:
            raise Invalid("page_size must be a positive integer")
        start = body.get("after") or 0
        if not isinstance(start, int) or start < 0:
            raise Invalid("Invalid after token")
        items = self.contracts(m, t)
        parties, templates = body.get("party_ids"), body.get("templates")
        if parties:
            want = set(parties)
            items = [c for c in items if want & (set(c["signatories"]) | set(c["observers"]))]
        if templates:
            names = set(templates)
            items = [c for c in items if f"{c['package_name']}:{c['template_id'].split(':', 1)[1]}" in names]
        return m, items, start, size

    def page(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/state/acs`: ActiveContracts, `created_in_update_id` where this migration made them;
        `next_page_token` null on the last page, as Scan's encoder writes an absent option."""
        m, items, start, size = self._selected(body)
        return {"record_time": body["record_time"], "migration_id": m, "created_events": items[start : start + size],
                "next_page_token": start + size if start + size < len(items) else None}  # fmt: skip

    def page_v0(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /v0/state/acs` (deprecated; what Splice's scan_txlog.py reads): CreatedEvents with
        Scan's V0 event id (`#<update id>:<node>`), and `next_page_token` always present."""
        m, items, start, size = self._selected(body)
        events = [{"event_type": "created_event", "event_id": self._v0_event_id(m, c), **{
            k: c[k] for k in ("contract_id", "template_id", "package_name", "create_arguments", "created_at",
                              "signatories", "observers")}} for c in items[start : start + size]]  # fmt: skip
        return {"record_time": body["record_time"], "migration_id": m, "created_events": events,
                "next_page_token": start + size if start + size < len(items) else None}  # fmt: skip

    def _v0_event_id(self, m: int, c: dict[str, Any]) -> str:
        """The V0 id of the event that created `c` in migration m: its create in the update that made it,
        or, for a contract an earlier migration made, its create in m's import update (id: the contract id)."""
        uid = c.get("created_in_update_id")
        if uid is None:
            return f"#{c['contract_id']}:0"
        eid = self._create_eids.get(c["contract_id"])
        if eid is None:
            ref = self._refs[c["contract_id"]]
            update = self.ledger.update(ref.m, ref.s, ref.i)
            events = update.get("events_by_id") or {"": update["event"].get("created_event") or {}}
            eid = next((k for k, ev in events.items()
                        if ev.get("contract_id") == c["contract_id"] and ev.get("event_type") == "created_event"),
                       f"{uid}:0")  # fmt: skip
            if len(self._create_eids) > 100_000:
                self._create_eids.clear()
            self._create_eids[c["contract_id"]] = eid
        return f"#{eid}"

    def holdings(self, body: dict[str, Any]) -> dict[str, Any]:
        m, t = _snapshot(self.ledger, body)
        owners = body.get("owner_party_ids")
        if not isinstance(owners, list) or not owners:
            raise Invalid("owner_party_ids must name at least one party")
        totals = {p: [0, 0] for p in owners}
        for c in self.contracts(m, t):
            entity = c["template_id"].rsplit(":", 1)[-1]
            if entity not in ("Amulet", "LockedAmulet"):
                continue
            a = c["create_arguments"]["amulet"] if entity == "LockedAmulet" else c["create_arguments"]
            if a["owner"] in totals:
                totals[a["owner"]][entity == "LockedAmulet"] += _units(a["amount"]["initialAmount"])
        return {"record_time": body["record_time"], "migration_id": m, "summaries": [
            {"party_id": p, "total_unlocked_coin": _decimal(u), "total_locked_coin": _decimal(lk),
             "total_coin_holdings": _decimal(u + lk)} for p, (u, lk) in totals.items()]}  # fmt: skip


    def instrument(self, m: int, now_us: int) -> dict[str, Any]:
        """The Token Standard registry's Amulet instrument (`/registry/metadata/v1/instruments/Amulet`):
        `totalSupply` is what Scan reads off its latest ACS snapshot of the current migration, the
        initial amounts of every Amulet and LockedAmulet in it (holding fees not deducted), as of
        that snapshot's time; both absent before the first snapshot."""
        out: dict[str, Any] = {"id": "Amulet", "name": "Amulet", "symbol": "AMT", "decimals": 10}
        snap = self.ledger.snapshot_before(m, now_us)
        if snap is not None:
            total = 0
            for c in self.contracts(m, snap):
                entity = c["template_id"].rsplit(":", 1)[-1]
                if c["package_name"] == "splice-amulet" and entity in ("Amulet", "LockedAmulet"):
                    a = c["create_arguments"]["amulet"] if entity == "LockedAmulet" else c["create_arguments"]
                    total += _units(a["amount"]["initialAmount"])
            out |= {"totalSupply": _decimal(total), "totalSupplyAsOf": format_trimmed(snap)}
        return out | {"supportedApis": {f"splice-api-token-{api}": 1 for api in (
            "metadata-v1", "holding-v1", "transfer-instruction-v1", "allocation-v1", "allocation-instruction-v1")}}

    @staticmethod
    def registry_info(admin: str) -> dict[str, Any]:
        """`/registry/metadata/v1/info`: the registry's admin party (the DSO) and its registry-wide APIs."""
        return {"adminId": admin, "supportedApis": {"splice-api-token-metadata-v1": 1}}


def _decimal(units: int) -> str:
    """Units of 10^-10 as Daml's Numeric 10 prints them (as the ledger's own values are written)."""
    return str(Ledger._num(units)["numeric"])


def _units(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 10**10 + int(frac.ljust(10, "0")[:10])

