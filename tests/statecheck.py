"""What contract state a loaded copy must hold, computed by replaying the simulator's ledger (every
rendered update, in position order): independent of scanfill's merge and of the simulator's own
inverse rules, so a test compares a derivation with what was served."""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from scanfill.sim import Ledger


class Life(NamedTuple):
    created_update_id: str | None
    created_pos: int | None
    archived_update_id: str | None
    archived_pos: int | None
    synchronizer_id: str | None


def pos(m: int, t_us: int) -> int:
    return m * 10**16 + t_us


def replay(ledger: Ledger) -> dict[str, Life]:
    lives: dict[str, dict[str, Any]] = {}
    for m in ledger.migration_ids():
        order = sorted((ledger.record_us(m, s, i), s, i) for s in range(ledger.specs[m].synchronizers)
                       for i in range(ledger.specs[m].updates))  # fmt: skip
        for t, s, i in order:
            u = ledger.update(m, s, i)
            p = pos(m, t)
            if "event" in u:
                e = u["event"]
                if "created_event" in e:
                    life = lives[e["created_event"]["contract_id"]]
                    life["synchronizer_id"] = e["target_synchronizer"]
                continue
            evs = u["events_by_id"]
            for ev in (evs[k] for k in sorted(evs, key=lambda k: int(k.rsplit(":", 1)[1]))):  # tree pre-order
                cid = ev["contract_id"]
                if ev["event_type"] == "created_event":
                    assert cid not in lives, f"created twice: {cid}"
                    lives[cid] = {"created_update_id": u["update_id"], "created_pos": p, "archived_update_id": None,
                                  "archived_pos": None, "synchronizer_id": u["synchronizer_id"]}  # fmt: skip
                elif ev["consuming"]:
                    assert cid in lives and lives[cid]["archived_pos"] is None, f"consumed unknown/twice: {cid}"
                    lives[cid].update(archived_update_id=u["update_id"], archived_pos=p)
    return {cid: Life(**v) for cid, v in lives.items()}


def stored(dsn: str) -> dict[str, Life]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT contract_id, created_update_id, created_pos, archived_update_id, archived_pos, "
                            "synchronizer_id FROM contracts").fetchall()  # fmt: skip
    return {r[0]: Life(*r[1:]) for r in rows}


def assert_state_matches(dsn: str, ledger: Ledger) -> dict[str, Life]:
    """Every contract the ledger created, with its exact lifespan and current synchronizer; no other."""
    want, got = replay(ledger), stored(dsn)
    missing, extra = set(want) - set(got), set(got) - set(want)
    assert not missing and not extra, (len(missing), len(extra), sorted(missing)[:2], sorted(extra)[:2])
    wrong = [(cid, want[cid], got[cid]) for cid in want if want[cid] != got[cid]]
    assert not wrong, (len(wrong), wrong[:2])
    return want
