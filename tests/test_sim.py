"""Contract tests of the Scan simulator, over real HTTP: every rule a client relies on."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from helpers import call, get_json, post_json
from scanfill.sim import (
    FaultConfig,
    InstanceConfig,
    Ledger,
    LedgerConfig,
    MigrationSpec,
    SimConfig,
    Simulator,
)
from scanfill.sim.ledger import EconomyConfig
from scanfill.timeutil import format_us, parse_us

SMALL = LedgerConfig(
    seed=7,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 300),
        MigrationSpec(2, "2024-06-25T00:00:00Z", 250, synchronizers=2, import_updates=12),
    ),
)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(ledger=SMALL)) as s:
        yield s


def info(url: str, m: int) -> dict:
    return post_json(url + "/v0/backfilling/migration-info", {"migration_id": m})  # type: ignore[no-any-return]


def before(url: str, m: int, sync: str, b: str, count: int = 1000, after: str | None = None) -> list[dict]:
    body = {"migration_id": m, "synchronizer_id": sync, "before": b, "count": count}
    if after is not None:
        body["at_or_after"] = after
    return post_json(url + "/v0/backfilling/updates-before", body)["transactions"]  # type: ignore[no-any-return]


def rt(item: dict) -> str:
    return item["record_time"]  # type: ignore[no-any-return]


def eff_sync(item: dict) -> str:
    if "event" in item:
        ev = item["event"]
        return ev["target_synchronizer"] if "created_event" in ev else ev["source_synchronizer"]
    return item["synchronizer_id"]  # type: ignore[no-any-return]


def page_all(url: str, m: int, sync: str, rng: dict, count: int) -> list[dict]:
    """Backward paging exactly as scan-api.md section 3 prescribes."""
    cursor = format_us(parse_us(rng["max"]) + 1)
    out: list[dict] = []
    while True:
        page = before(url, m, sync, cursor, count, after=rng["min"])
        if not page:
            return out
        out.extend(page)
        cursor = rt(page[-1])


def test_discovery_chain_and_ranges(sim: Simulator) -> None:
    assert get_json(sim.url + "/v0/migrations/last") == {"migration_id": 2}
    i2 = info(sim.url, 2)
    assert i2["previous_migration_id"] == 0 and i2["complete"] is True
    assert len(i2["record_time_range"]) == 2
    assert i2["last_import_update_id"] == max(Ledger(SMALL).import_ids(2))
    i0 = info(sim.url, 0)
    assert i0["previous_migration_id"] is None and i0["last_import_update_id"] is None
    status, _, body = call(sim.url + "/v0/backfilling/migration-info", {"migration_id": 1})
    assert status == 404 and json.loads(body) == {"error": "No data for migration 1"}
    assert get_json(sim.url + "/v0/backfilling/status") == {"complete": True}


def test_paging_returns_exactly_the_announced_ledger(sim: Simulator) -> None:
    ledger = Ledger(SMALL)
    for m in (0, 2):
        for rng in info(sim.url, m)["record_time_range"]:
            sync = rng["synchronizer_id"]
            items = page_all(sim.url, m, sync, rng, count=37)
            times = [parse_us(rt(x)) for x in items]
            assert times == sorted(times, reverse=True) and len(set(times)) == len(times)
            assert all(len(rt(x)) == 27 and rt(x).endswith("Z") and rt(x)[19] == "." for x in items)
            assert times[0] == parse_us(rng["max"]) and times[-1] == parse_us(rng["min"])
            assert all(eff_sync(x) == sync for x in items)
            expected = ledger.expected(m, sync)
            assert [x["update_id"] for x in reversed(items)] == [h.update_id for h in expected]
            gaps = [a - b for a, b in itertools.pairwise(times)]
            assert min(gaps) == 1  # neighbours exactly 1 us apart exist


def test_before_is_exclusive_and_at_or_after_inclusive(sim: Simulator) -> None:
    rng = info(sim.url, 0)["record_time_range"][0]
    sync = rng["synchronizer_id"]
    all_items = page_all(sim.url, 0, sync, rng, 1000)
    t50 = rt(all_items[50])
    page = before(sim.url, 0, sync, t50, 5)
    assert [x["update_id"] for x in page] == [x["update_id"] for x in all_items[51:56]]
    page = before(sim.url, 0, sync, rt(all_items[40]), 1000, after=t50)
    assert [x["update_id"] for x in page] == [x["update_id"] for x in all_items[41:51]]
    assert before(sim.url, 0, sync, rng["max"], 1)[0]["update_id"] == all_items[1]["update_id"]


def test_request_validation(sim: Simulator) -> None:
    url = sim.url + "/v0/backfilling/updates-before"
    sync = info(sim.url, 0)["record_time_range"][0]["synchronizer_id"]
    ok = {"migration_id": 0, "synchronizer_id": sync, "before": "2030-01-01T00:00:00Z", "count": 10}
    for bad, msg in [
        ({"count": 1001}, "Exceeded limit maximum (1001 > 1000)."),
        ({"count": 0}, "Limit must be at least 1."),
        ({"before": "yesterday"}, "Invalid timestamp"),
        ({"synchronizer_id": "nonsense"}, "Invalid synchronizer id"),
    ]:
        status, hdrs, body = call(url, {**ok, **bad})
        assert status == 400 and hdrs["content-type"].startswith("application/json")
        assert msg in json.loads(body)["error"]
    assert post_json(url, {**ok, "synchronizer_id": "other::1220ab"}) == {"transactions": []}
    assert post_json(url, {**ok, "migration_id": 9}) == {"transactions": []}
    assert len(post_json(url, ok)["transactions"]) == 10


def test_update_shape_v1(sim: Simulator) -> None:
    rng = info(sim.url, 0)["record_time_range"][0]
    items = before(sim.url, 0, rng["synchronizer_id"], "2030-01-01T00:00:00Z", 200)
    tx = next(x for x in items if len(x.get("events_by_id", {})) >= 11)
    assert list(tx)[:7] == [
        "update_id",
        "migration_id",
        "workflow_id",
        "record_time",
        "synchronizer_id",
        "effective_at",
        "offset",
    ]
    assert tx["offset"] == "000000000000000001" and len(tx["update_id"]) == 68
    ids = set(tx["events_by_id"])
    n = len(ids)
    assert ids == {f"{tx['update_id']}:{k}" for k in range(n)}
    root = tx["events_by_id"][tx["root_event_ids"][0]]
    assert root["event_id"].endswith(":0")
    # preorder: every child id is larger than its parent's
    for ev in tx["events_by_id"].values():
        for child in ev.get("child_event_ids", []):
            assert int(child.rsplit(":", 1)[1]) > int(ev["event_id"].rsplit(":", 1)[1])
    created = [e for e in tx["events_by_id"].values() if e["event_type"] == "created_event"]
    assert all(e["signatories"] == sorted(e["signatories"]) for e in created)
    assert all(len(e["contract_id"]) == 138 for e in created)
    shapes = {x["events_by_id"][x["root_event_ids"][0]]["choice"] for x in items if "events_by_id" in x}
    assert {"TransferPreapproval_Send", "FeaturedAppRight_CreateActivityMarker"} <= shapes
    assert any(
        e.get("choice") == "Archive" and e["consuming"] for x in items for e in x.get("events_by_id", {}).values()
    )


def test_reassignments_belong_to_their_effective_synchronizer(sim: Simulator) -> None:
    kinds = set()
    for rng in info(sim.url, 2)["record_time_range"]:
        for x in page_all(sim.url, 2, rng["synchronizer_id"], rng, 1000):
            if "event" in x:
                assert "synchronizer_id" not in x and "migration_id" not in x
                assert x["event"]["migration_id"] == 2
                kinds.add("assign" if "created_event" in x["event"] else "unassign")
    assert kinds == {"assign", "unassign"}


def test_determinism_across_two_processes() -> None:
    cfg = SimConfig(ledger=SMALL)
    bodies = []
    for _ in range(2):
        with Simulator(cfg, mode="process") as s:
            assert s.pid != os.getpid()  # benchmarks measure the simulator's CPU through it
            sync = info(s.url, 2)["record_time_range"][1]["synchronizer_id"]
            req = {"migration_id": 2, "synchronizer_id": sync, "before": "2030-01-01T00:00:00Z", "count": 100}
            bodies.append(call(s.url + "/v0/backfilling/updates-before", req)[2])
    assert bodies[0] == bodies[1] and len(bodies[0]) > 100_000


def test_v2_updates_ascending_across_migrations(sim: Simulator) -> None:
    ledger = Ledger(SMALL)
    out: list[dict] = []
    after = None
    while True:
        body: dict = {"page_size": 97}
        if after:
            body["after"] = after
        page = post_json(sim.url + "/v2/updates", body)["transactions"]
        out.extend(page)
        if len(page) < 97:
            break
        last = page[-1]
        mig = last.get("migration_id", last.get("event", {}).get("migration_id"))
        after = {"after_migration_id": mig, "after_record_time": rt(last)}
    assert len(out) == ledger.total_updates()
    keys = [(x.get("migration_id", x.get("event", {}).get("migration_id")), parse_us(rt(x))) for x in out]
    assert keys == sorted(keys)
    tx = next(x for x in out if "events_by_id" in x)
    assert "offset" not in tx and list(tx["events_by_id"]) == sorted(tx["events_by_id"])
    created = next(e for e in tx["events_by_id"].values() if e["event_type"] == "created_event")
    assert "record" not in json.dumps(created["create_arguments"])  # compact_json by default
    status, _, _ = call(sim.url + "/v2/updates", {"page_size": 0})
    assert status == 400


def test_update_by_id_and_import_updates(sim: Simulator) -> None:
    uid = Ledger(SMALL).update_id(0, 0, 5)
    assert get_json(f"{sim.url}/v2/updates/{uid}")["update_id"] == uid
    status, _, body = call(f"{sim.url}/v2/updates/1220deadbeef")
    assert status == 404 and "not found" in json.loads(body)["error"]
    got: list[dict] = []
    cursor = ""
    while True:
        page = post_json(
            sim.url + "/v0/backfilling/import-updates", {"migration_id": 2, "after_update_id": cursor, "limit": 5}
        )["transactions"]
        if not page:
            break
        got.extend(page)
        cursor = page[-1]["update_id"]
    ids = [x["update_id"] for x in got]
    assert ids == sorted(ids) == Ledger(SMALL).import_ids(2)
    assert all(x["record_time"] == "0001-01-01T00:00:00.000000Z" for x in got)
    assert got[0]["workflow_id"] == f"canton-network-acs-import-{ids[0]}"


def test_snapshot_timestamp(sim: Simulator) -> None:
    q = urllib.parse.urlencode({"before": "2024-06-25T00:17:00Z", "migration_id": 2})
    assert get_json(f"{sim.url}/v0/state/acs/snapshot-timestamp?{q}") == {"record_time": "2024-06-25T00:00:00Z"}
    # a migration is snapshotted while it has updates: asked long after its end, its last snapshot
    end = Ledger(SMALL).migration_end_us(2)
    q = urllib.parse.urlencode({"before": "2024-06-26T05:17:00Z", "migration_id": 2})
    last = parse_us(get_json(f"{sim.url}/v0/state/acs/snapshot-timestamp?{q}")["record_time"])
    assert end - 3 * 3_600_000_000 < last <= end
    q = urllib.parse.urlencode({"before": "2024-06-24T23:59:00Z", "migration_id": 2})
    assert call(f"{sim.url}/v0/state/acs/snapshot-timestamp?{q}")[0] == 404


def test_labels_can_be_switched_off() -> None:
    cfg = SimConfig(
        ledger=LedgerConfig(seed=3, labels=False, migrations=(MigrationSpec(0, "2024-01-01T00:00:00Z", 20),))
    )
    with Simulator(cfg) as s:
        sync = info(s.url, 0)["record_time_range"][0]["synchronizer_id"]
        _, _, raw = call(
            s.url + "/v0/backfilling/updates-before",
            {"migration_id": 0, "synchronizer_id": sync, "before": "2030-01-01T00:00:00Z", "count": 20},
        )
        assert b'"fields"' in raw and b'"label"' not in raw


def test_several_scans_and_a_late_joiner() -> None:
    cfg = SimConfig(ledger=SMALL, instances=(InstanceConfig("sv-1"), InstanceConfig("sv-2", late_join=0.5)))
    with Simulator(cfg) as s:
        listed = [x["publicUrl"] for x in get_json(s.urls[1] + "/v0/scans")["scans"][0]["scans"]]
        assert listed == s.urls
        full, late = info(s.urls[0], 0), info(s.urls[1], 0)
        assert full["complete"] and not late["complete"]
        assert parse_us(late["record_time_range"][0]["min"]) > parse_us(full["record_time_range"][0]["min"])
        assert late["record_time_range"][0]["max"] == full["record_time_range"][0]["max"]
        assert get_json(s.urls[1] + "/v0/backfilling/status") == {"complete": False}
        status, _, body = call(s.urls[1] + "/v2/updates", {"page_size": 10})
        assert status == 503 and "not yet" in json.loads(body)["error"]
        sync = full["record_time_range"][0]["synchronizer_id"]
        assert len(before(s.urls[1], 0, sync, "2030-01-01T00:00:00Z")) == 150
        assert len(before(s.urls[0], 0, sync, "2030-01-01T00:00:00Z")) == 300


# ----- faults ------------------------------------------------------------------------------------


def faulty(**kw: object) -> Simulator:
    return Simulator(SimConfig(ledger=SMALL, faults=FaultConfig(**kw)))  # type: ignore[arg-type]


def ub_request(s: Simulator, count: int = 50) -> dict:
    sync = Ledger(SMALL).synchronizer_id(0)
    return {"migration_id": 0, "synchronizer_id": sync, "before": "2030-01-01T00:00:00Z", "count": count}


@pytest.mark.parametrize(
    ("name", "status", "ctype"),
    [
        ("429", 429, "text/plain"),
        ("503", 503, "application/json"),
        ("502", 502, "application/json"),
        ("403", 403, "text/html"),
    ],
)
def test_error_faults(name: str, status: int, ctype: str) -> None:
    with faulty(**{f"every_{name}": 2}, retry_after_s=3) as s:
        url = s.url + "/v0/backfilling/updates-before"
        results = [call(url, ub_request(s)) for _ in range(6)]
        assert [r[0] for r in results] == [200, status] * 3
        bad = results[1]
        assert bad[1]["content-type"].startswith(ctype)
        if name == "429":
            assert bad[1]["retry-after"] == "3" and b"Too Many Requests" in bad[2]
        if ctype == "application/json":
            assert "error" in json.loads(bad[2])
        assert s.stats()["faults"] == {name: 3}
        # discovery endpoints are not subject to faults by default
        assert all(call(s.url + "/v0/migrations/last")[0] == 200 for _ in range(4))


def test_fault_rates_are_seeded_and_replayable() -> None:
    seen = []
    for _ in range(2):
        with faulty(rate_503=0.3, seed=5) as s:
            url = s.url + "/v0/backfilling/updates-before"
            seen.append([call(url, ub_request(s, 1))[0] for _ in range(40)])
    assert seen[0] == seen[1] and 503 in seen[0] and 200 in seen[0]


def test_connection_dropped_mid_body() -> None:
    with faulty(every_drop=1) as s:
        u = urllib.parse.urlparse(s.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request(
            "POST",
            u.path + "/v0/backfilling/updates-before",
            body=json.dumps(ub_request(s)),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()


def test_hung_request_times_out_and_latency_is_added() -> None:
    with faulty(every_hang=1, hang_s=30) as s, pytest.raises((TimeoutError, socket.timeout, OSError)):
        call(s.url + "/v0/backfilling/updates-before", ub_request(s), timeout=0.5)
    with faulty(latency_ms=150) as s:
        t0 = time.monotonic()
        assert call(s.url + "/v0/backfilling/updates-before", ub_request(s, 1))[0] == 200
        assert time.monotonic() - t0 >= 0.15


def test_gzip_when_asked() -> None:
    with faulty() as s:
        url = s.url + "/v0/backfilling/updates-before"
        status, hdrs, body = call(url, ub_request(s), headers={"Accept-Encoding": "gzip"})
        assert status == 200 and hdrs.get("content-encoding") == "gzip"
        _, plain_hdrs, plain = call(url, ub_request(s))
        assert "content-encoding" not in plain_hdrs and plain == body
    with faulty(gzip=False) as s:
        _, hdrs, _ = call(s.url + "/v0/backfilling/updates-before", ub_request(s), headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in hdrs


def test_client_rate_limit_and_page_cap() -> None:
    with faulty(client_rps=3, max_page=7) as s:
        url = s.url + "/v0/backfilling/updates-before"
        codes = [call(url, ub_request(s), headers={"X-Client-Id": "a"})[0] for _ in range(8)]
        assert codes[:3] == [200, 200, 200] and 429 in codes
        assert call(url, ub_request(s), headers={"X-Client-Id": "b"})[0] == 200  # per client
        s.set_faults(FaultConfig(max_page=7))
        assert len(post_json(url, ub_request(s))["transactions"]) == 7


def test_mainnet_shaped_scans_pace_bytes_add_page_latency_and_share_one_limiter() -> None:
    """The MainNet benchmark's scans: per-1000-updates latency, an egress cap, a network-wide limiter."""
    faults = FaultConfig(latency_per_1000_ms=5000, bandwidth_mb_s=0.5)
    two = (InstanceConfig("sv-1"), InstanceConfig("sv-2"))
    with Simulator(SimConfig(ledger=SMALL, faults=faults, instances=two)) as s:
        url = s.urls[0] + "/v0/backfilling/updates-before"
        t0 = time.monotonic()
        status, _, body = call(url, ub_request(s, 20))
        took = time.monotonic() - t0
        items = len(json.loads(body)["transactions"])
        assert status == 200 and items == 20
        assert took >= 0.1 + len(body) / 0.5e6 * 0.9  # 20 updates at 5 s/1000, then the bytes at 0.5 MB/s
        assert json.loads(body) == post_json(s.urls[1] + "/v0/backfilling/updates-before", ub_request(s, 20))
    with Simulator(SimConfig(ledger=SMALL, instances=two, network_rps=3)) as s:
        codes = [call(u + "/v0/backfilling/updates-before", ub_request(s, 1))[0] for u in s.urls * 4]
        assert codes[:3] == [200, 200, 200] and codes.count(429) >= 3  # one bucket for both scans
        stats = [get_json(u.removesuffix("/api/scan") + "/sim/stats") for u in s.urls]
        assert sum(st["faults"].get("network_rate_limit", 0) for st in stats) == codes.count(429)


def test_the_mainnet_shape_from_the_command_line() -> None:
    """`scanfill sim --mainnet-shape`: ten scans, one refusing everything, one never answering pages."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "scanfill.cli", "sim", "--mainnet-shape", "--rows", "2000"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = []
        for line in proc.stdout:
            if line.strip().startswith("serving "):
                urls.append(line.split()[-1])
            if line.startswith("Ctrl+C"):
                break
        assert len(urls) == 10
        assert len(get_json(urls[0] + "/v0/scans")["scans"][0]["scans"]) == 10
        assert call(urls[8] + "/v0/dso")[0] == 403  # refuses even discovery
        info = post_json(urls[9] + "/v0/backfilling/migration-info", {"migration_id": 0})  # answers discovery...
        sync = info["record_time_range"][0]["synchronizer_id"]
        page = {"migration_id": 0, "synchronizer_id": sync, "before": "2030-01-01T00:00:00Z", "count": 5}
        with pytest.raises((TimeoutError, socket.timeout, OSError)):  # ...but never a page
            call(urls[9] + "/v0/backfilling/updates-before", page, timeout=1.5)
        t0 = time.monotonic()
        assert len(post_json(urls[0] + "/v0/backfilling/updates-before", page)["transactions"]) == 5
        assert time.monotonic() - t0 >= 0.005  # 1 s per 1000 updates at the fastest scan
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----- what real clients read: Splice's scan_txlog.py, the Token Standard registry ----------------

CLIENTS = LedgerConfig(
    seed=11,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 260),
        MigrationSpec(2, "2024-06-24T21:15:00Z", 240, synchronizers=2, import_updates=12),
    ),
    acs_snapshot_hours=0.05,  # every 3 minutes: the last migration has several
)


@pytest.fixture(scope="module")
def clients() -> Iterator[Simulator]:
    with Simulator(SimConfig(ledger=CLIENTS)) as s:
        yield s


def migration_of(item: dict) -> int:
    return int(item["migration_id"] if "migration_id" in item else item["event"]["migration_id"])


def forward_all(url: str, path: str, size: int, key: str = "transactions", **extra: object) -> list[dict]:
    """A forward stream paged as Splice's scan_txlog.py pages /v1/updates: `after` is the last item's
    migration and its record time as Python's `datetime.isoformat` prints it (`+00:00`, no fraction
    when it is zero)."""
    from datetime import datetime

    out: list[dict] = []
    after = None
    while True:
        body: dict = {"page_size": size, **extra}
        if after is not None:
            body["after"] = after
        page = post_json(url + path, body)[key]
        out += page
        if len(page) < size:
            return out
        last = page[-1]
        where = last["verdict"] or last["update"] if key == "events" else last
        after = {"after_migration_id": migration_of(where),
                 "after_record_time": datetime.fromisoformat(where["record_time"]).isoformat()}  # fmt: skip


def test_v1_updates_are_v2s_items_with_offsets_in_the_v1_encoding(clients: Simulator) -> None:
    """POST /v1/updates (what scan_txlog.py replays): /v2/updates' items in the same order, each with
    its `offset`, compact_json unless protobuf_json is asked for, which is the updates-before rendering."""
    ledger = Ledger(CLIENTS)
    v1 = forward_all(clients.url, "/v1/updates", 100)
    v2 = forward_all(clients.url, "/v2/updates", 1000)
    assert [u["update_id"] for u in v1] == [u["update_id"] for u in v2] and len(v1) == ledger.total_updates()
    assert all(u["offset"] for u in v1)
    txs = [u for u in v1 if "events_by_id" in u]
    assert all("offset" not in u for u in v2 if "events_by_id" in u) and len(txs) > 400
    creates = [ev for u in txs for ev in u["events_by_id"].values() if ev["event_type"] == "created_event"]
    assert creates and all("record" not in ev["create_arguments"] for ev in creates)  # compact: keyed by label
    raw = post_json(clients.url + "/v1/updates", {"page_size": 50, "daml_value_encoding": "protobuf_json"})
    assert raw["transactions"] == [ledger.update(0, 0, i) for i in range(50)]


def test_v0_state_acs_always_has_next_page_token(clients: Simulator) -> None:
    """POST /v0/state/acs as scan_txlog.py reads it (`page["next_page_token"] is None` ends it): the
    token on every page, null on the last; the contracts of /v1/state/acs in the same order, each
    with the V0 id of the event that created it (`#` + the update's event id; an import's for a
    contract an earlier migration made)."""
    q = urllib.parse.urlencode({"before": "2030-01-01T00:00:00Z", "migration_id": 2})
    snap = get_json(f"{clients.url}/v0/state/acs/snapshot-timestamp?{q}")["record_time"]
    templates = ["splice-amulet:Splice.Amulet:Amulet", "splice-amulet:Splice.Amulet:LockedAmulet",
                 "splice-amulet:Splice.Amulet:FeaturedAppRight"]  # fmt: skip
    pages, after = [], None
    while True:
        body: dict = {"migration_id": 2, "record_time": snap, "page_size": 4, "templates": templates}
        if after is not None:
            body["after"] = after
        page = post_json(clients.url + "/v0/state/acs", body)
        assert "next_page_token" in page
        pages.append(page)
        after = page["next_page_token"]
        if after is None:
            break
    got = [c for p in pages for c in p["created_events"]]
    v1 = post_json(clients.url + "/v1/state/acs", {"migration_id": 2, "record_time": snap, "page_size": 1000,
                                                   "templates": templates})  # fmt: skip
    assert v1["next_page_token"] is None and len(pages) > 2
    assert [c["contract_id"] for c in got] == [c["contract_id"] for c in v1["created_events"]]
    for c, a in zip(got, v1["created_events"], strict=True):
        assert {k: c[k] for k in a if k != "created_in_update_id"} == {k: v for k, v in a.items()
                                                                       if k != "created_in_update_id"}  # fmt: skip
        uid = a.get("created_in_update_id")
        if uid is None:  # made before this migration: its create is this migration's import of it
            assert c["event_id"] == f"#{c['contract_id']}:0"
            continue
        update = get_json(f"{clients.url}/v2/updates/{uid}")
        events = update.get("events_by_id") or {update["event"]["created_event"]["event_id"]: update["event"]["created_event"]}
        made = [k for k, ev in events.items() if ev.get("contract_id") == c["contract_id"] and "create_arguments" in ev]
        assert [c["event_id"]] == [f"#{k}" for k in made]
    assert any(c["event_id"] == f"#{c['contract_id']}:0" for c in got)


def test_registry_total_supply_is_the_newest_snapshots_amulet(clients: Simulator) -> None:
    """The Token Standard registry, at the server's root: `totalSupply` is the locked and unlocked
    amulet (initial amounts) of the newest ACS snapshot of the current migration, as of its time."""
    root = clients.url.removesuffix("/api/scan")
    q = urllib.parse.urlencode({"before": "2030-01-01T00:00:00Z", "migration_id": 2})
    snap = get_json(f"{clients.url}/v0/state/acs/snapshot-timestamp?{q}")["record_time"]
    acs = post_json(clients.url + "/v1/state/acs", {"migration_id": 2, "record_time": snap, "page_size": 1000})
    expected = 0
    for c in acs["created_events"]:
        entity = c["template_id"].rsplit(":", 1)[-1]
        if entity in ("Amulet", "LockedAmulet"):
            a = c["create_arguments"]["amulet"] if entity == "LockedAmulet" else c["create_arguments"]
            whole, frac = a["amount"]["initialAmount"].split(".")
            expected += int(whole) * 10**10 + int(frac)
    instrument = get_json(root + "/registry/metadata/v1/instruments/Amulet")
    assert expected > 0 and instrument["totalSupply"] == f"{expected // 10**10}.{expected % 10**10:010d}"
    assert instrument["totalSupplyAsOf"] == snap and instrument["id"] == "Amulet" and instrument["decimals"] == 10
    assert get_json(root + "/registry/metadata/v1/instruments")["instruments"] == [instrument]
    assert get_json(root + "/registry/metadata/v1/info")["adminId"] == Ledger(CLIENTS).dso
    status, _, body = call(root + "/registry/metadata/v1/instruments/Bitcoin", None, method="GET")
    assert status == 404 and json.loads(body) == {"error": "No instrument with id Bitcoin found"}


def test_events_interleave_verdict_only_items(clients: Simulator) -> None:
    """/v0/events also serves items that bear only a verdict (`"update": null`: a transaction wholly
    private to others, or rejected), as MainNet does for 40-50 % of its items: in (migration, record
    time) order with the updates, every record time its own, the same at any page size, and never an
    update this scan serves."""
    ledger = Ledger(CLIENTS)
    small = forward_all(clients.url, "/v0/events", 7, key="events")
    assert small == forward_all(clients.url, "/v0/events", 1000, key="events")
    where = [(migration_of(e["verdict"] or e["update"]), parse_us((e["verdict"] or e["update"])["record_time"]))
             for e in small]  # fmt: skip
    assert where == sorted(where) and len(set(where)) == len(where)
    only = [e for e in small if e["update"] is None]
    updates = {u.update_id for u in ledger.expected_all()}
    assert len(small) == len(updates) + len(only)
    for m in (0, 2):
        ids = [e["verdict"]["update_id"] for e in only if e["verdict"]["migration_id"] == m]
        assert ids == ledger.verdict_only_ids(m) and not set(ids) & updates
    share = sum(1 for e in only if e["verdict"]["migration_id"] == 0) / sum(1 for m, _ in where if m == 0)
    assert 0.40 <= share <= 0.50, share  # one synchronizer, as on MainNet
    assert {e["verdict"]["verdict_result"] for e in only} == {"VERDICT_RESULT_ACCEPTED", "VERDICT_RESULT_REJECTED"}
    assert all(e["traffic_summary"] for e in only)
    assert all(e["app_activity_records"] is None for e in only if e["verdict"]["verdict_result"].endswith("REJECTED"))


ECONOMY_SMALL = LedgerConfig(
    seed=43,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 200),
        MigrationSpec(1, "2024-06-24T21:20:00Z", 150, import_updates=1),
        MigrationSpec(3, "2024-06-24T21:30:00Z", 150, import_updates=1),
    ),
    economy=EconomyConfig(per_round=24, upgrades=(3, 6)),
)


@pytest.mark.parametrize("config", [SMALL, CLIENTS, LedgerConfig.for_rows(20_000), ECONOMY_SMALL],
                         ids=["small", "two-synchronizers", "default", "economy"])  # fmt: skip
def test_import_updates_end_at_the_id_migration_info_announces(config: LedgerConfig) -> None:
    """Paged to the end, /v0/backfilling/import-updates serves last exactly the
    `last_import_update_id` migration-info announces, for every migration (Splice: both are the
    greatest contract id of the migration's imports)."""
    with Simulator(SimConfig(ledger=config)) as s:
        for m in sorted(spec.migration_id for spec in config.migrations):
            announced = info(s.url, m)["last_import_update_id"]
            after, served = "", []
            while True:
                page = post_json(s.url + "/v0/backfilling/import-updates",
                                 {"migration_id": m, "after_update_id": after, "limit": 7})["transactions"]  # fmt: skip
                if not page:
                    break
                served += [u["update_id"] for u in page]
                after = served[-1]
            assert served == sorted(set(served))
            assert (served[-1] if served else None) == announced, (m, len(served))
            if m > min(spec.migration_id for spec in config.migrations):
                assert served


def test_the_economy_serves_verdict_only_items_too() -> None:
    """The economy ledger's /v0/events (one synchronizer, as MainNet): 40-50 % verdict-only items,
    their activity records in the round of the update before them."""
    from scanfill.sim.economy import make_ledger

    ledger = make_ledger(ECONOMY_SMALL)
    with Simulator(SimConfig(ledger=ECONOMY_SMALL)) as s:
        items = forward_all(s.url, "/v0/events", 1000, key="events")
    only = [e for e in items if e["update"] is None]
    assert len(items) == ledger.total_updates() + len(only)
    assert 0.40 <= len(only) / len(items) <= 0.50, len(only) / len(items)
    assert [e["verdict"]["update_id"] for e in only] == [u for m in ledger.migration_ids()
                                                        for u in ledger.verdict_only_ids(m)]  # fmt: skip
    rounds = {h.round for h in ledger.expected_all()}
    assert {e["app_activity_records"]["round_number"] for e in only if e["app_activity_records"]} <= rounds
