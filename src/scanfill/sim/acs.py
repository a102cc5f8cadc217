"""The simulator's ACS snapshots: `/v0/state/acs/snapshot-timestamp(-after)`, `POST /v1/state/acs`
and `POST /v1/holdings/summary`, computed from the same ledger (`Ledger.acs`) as every update."""

from __future__ import annotations

from typing import Any

from scanfill.sim.ledger import Ledger, to_compact
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

    def contracts(self, m: int, t: int) -> list[dict[str, Any]]:
        key = (m, t)
        if key not in self._cache:
            out = []
            for cid, ref in self.ledger.acs(m, t):
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

    def page(self, body: dict[str, Any]) -> dict[str, Any]:
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
        out: dict[str, Any] = {"record_time": body["record_time"], "migration_id": m,
                               "created_events": items[start : start + size]}  # fmt: skip
        if start + size < len(items):
            out["next_page_token"] = start + size
        return out

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


def _decimal(units: int) -> str:
    """Units of 10^-10 as Daml's Numeric 10 prints them (as the ledger's own values are written)."""
    return str(Ledger._num(units)["numeric"])


def _units(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 10**10 + int(frac.ljust(10, "0")[:10])

