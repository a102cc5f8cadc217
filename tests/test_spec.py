"""Splice's published Scan spec as the simulator's contract (tests/spec/scan-api.schema.json says
which spec, path and commit it follows), and scanfill's own requests held against it too."""

from __future__ import annotations

import itertools
import json
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from helpers import call, get_json, post_json
from scanfill.sim import FaultConfig, InstanceConfig, Ledger, LedgerConfig, MigrationSpec, SimConfig, Simulator
from scanfill.timeutil import MIN_US, format_us, parse_us

SCHEMA = json.loads((Path(__file__).parent / "spec" / "scan-api.schema.json").read_text())
_REGISTRY = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))

LEDGER = LedgerConfig(
    seed=5,
    migrations=(
        MigrationSpec(0, "2024-06-24T21:08:00Z", 300),
        MigrationSpec(2, "2024-06-25T00:00:00Z", 400, synchronizers=3, import_updates=12),
    ),
    reassignment_rate=0.1,
    interface_rate=0.5,
    external_hash_rate=0.2,
)


def check(name: str, instance: Any) -> None:
    """Validate against one definition of the schema; the error names the failing path."""
    validator = jsonschema.Draft202012Validator({"$ref": f"{SCHEMA['$id']}#/$defs/{name}"}, registry=_REGISTRY)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def _events(page: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in page["transactions"]:
        out.extend(item.get("events_by_id", {}).values())
        if "event" in item and "created_event" in item["event"]:
            out.append(item["event"]["created_event"])
    return out


@pytest.fixture(scope="module")
def sim() -> Any:
    config = SimConfig(ledger=LEDGER, instances=(InstanceConfig("sv-1"), InstanceConfig("sv-2", late_join=0.3)))
    with Simulator(config) as s:
        yield s


def test_discovery_endpoints_match_the_spec(sim: Simulator) -> None:
    url = sim.url
    check("GetMigrationsLastResponse", get_json(url + "/v0/migrations/last"))
    check("ListDsoScansResponse", get_json(url + "/v0/scans"))
    check("ListDsoSequencersResponse", get_json(url + "/v0/dso-sequencers"))
    check("GetBackfillingStatusResponse", get_json(url + "/v0/backfilling/status"))
    check("AcsSnapshotTimestampResponse",
          get_json(url + "/v0/state/acs/snapshot-timestamp?before=2024-06-25T03:00:01Z&migration_id=2"))  # fmt: skip
    for u in sim.urls:  # the complete scan and the late joiner
        for m in (0, 2):
            info = post_json(u + "/v0/backfilling/migration-info", {"migration_id": m})
            check("GetMigrationInfoResponse", info)
            assert info["previous_migration_id"] == (None if m == 0 else 0)  # null, not absent
        status, _, body = call(u + "/v0/backfilling/migration-info", {"migration_id": 1})
        assert status == 404
        check("ErrorResponse", json.loads(body))
    info = post_json(url + "/v0/backfilling/migration-info", {"migration_id": 0})
    assert info["last_import_update_id"] is None and "last_import_update_id" in info


def test_trimmed_instants_are_printed_as_the_real_server_does(sim: Simulator) -> None:
    """min/max and created_at drop trailing zeros (`.5528`, `.13`): a client must parse them, never echo them."""
    ledger = Ledger(LEDGER)
    info = post_json(sim.url + "/v0/backfilling/migration-info", {"migration_id": 2})
    for r in info["record_time_range"]:
        s = ledger.sync_index(2, r["synchronizer_id"])
        assert s is not None
        lo, hi = ledger.range_us(2, s)
        for text, us in ((r["min"], lo), (r["max"], hi)):
            frac = format_us(us)[20:26].rstrip("0")
            assert text == (format_us(us)[:19] + (f".{frac}" if frac else "") + "Z")


def test_updates_before_pages_match_the_spec(sim: Simulator) -> None:
    ledger = Ledger(LEDGER)
    kinds: Counter[str] = Counter()
    interfaces = hashes = 0
    for m in ledger.migration_ids():
        for sid in ledger.synchronizers(m):
            before = "9999-12-31T23:59:59.999999Z"
            while True:
                body = {"migration_id": m, "synchronizer_id": sid, "before": before, "count": 97}
                check("GetUpdatesBeforeRequest", body)
                page = post_json(sim.url + "/v0/backfilling/updates-before", body)
                check("GetUpdatesBeforeResponse", page)
                for ev in _events(page):
                    assert ev.get("signatories", []) == sorted(ev.get("signatories", []))
                    assert ev.get("observers", []) == sorted(ev.get("observers", []))
                    interfaces += ev.get("interface_id") is not None
                for item in page["transactions"]:
                    kinds["assignment" if "created_event" in item.get("event", {}) else
                          "unassignment" if "event" in item else "transaction"] += 1  # fmt: skip
                    hashes += "external_transaction_hash" in item
                if len(page["transactions"]) < 97:
                    break
                before = page["transactions"][-1]["record_time"]
    # the shapes a real ledger has were all served and validated
    assert kinds["transaction"] > 500 and kinds["assignment"] > 5 and kinds["unassignment"] > 5
    assert interfaces > 20 and hashes > 20
    # import updates come with at_or_after at the beginning of time, on the first synchronizer
    body = {"migration_id": 2, "synchronizer_id": ledger.synchronizer_id(0), "before": format_us(MIN_US + 1),
            "at_or_after": format_us(MIN_US), "count": 1000}  # fmt: skip
    check("GetUpdatesBeforeRequest", body)
    page = post_json(sim.url + "/v0/backfilling/updates-before", body)
    check("GetUpdatesBeforeResponse", page)
    assert len(page["transactions"]) == len(ledger.import_ids(2)) > 0


def test_import_updates_and_unlabelled_values_match_the_spec(sim: Simulator) -> None:
    after, got = "", 0
    while True:
        body = {"migration_id": 2, "after_update_id": after, "limit": 5}
        check("GetImportUpdatesRequest", body)
        page = post_json(sim.url + "/v0/backfilling/import-updates", body)
        check("GetImportUpdatesResponse", page)
        got += len(page["transactions"])
        if not page["transactions"]:
            break
        after = page["transactions"][-1]["update_id"]
    assert got == len(Ledger(LEDGER).import_ids(2)) > 0
    unlabelled = LedgerConfig(seed=2, migrations=(MigrationSpec(0, "2024-06-24T21:08:00Z", 60),), labels=False)
    with Simulator(SimConfig(ledger=unlabelled)) as s:
        sid = Ledger(unlabelled).synchronizer_id(0)
        page = post_json(
            s.url + "/v0/backfilling/updates-before",
            {"migration_id": 0, "synchronizer_id": sid, "before": "2030-01-01T00:00:00Z", "count": 60},
        )
    check("GetUpdatesBeforeResponse", page)
    assert len(page["transactions"]) == 60


def test_v2_updates_match_the_spec_in_both_encodings(sim: Simulator) -> None:
    for encoding in ("protobuf_json", "compact_json"):
        after: dict[str, Any] | None = None
        seen = 0
        for _ in range(4):
            body: dict[str, Any] = {"page_size": 150, "daml_value_encoding": encoding}
            if after:
                body["after"] = after
            check("UpdateHistoryRequestV2", body)
            page = post_json(sim.url + "/v2/updates", body)
            check("UpdateHistoryResponseV2", page)
            for item in page["transactions"]:
                if "events_by_id" in item:
                    keys = list(item["events_by_id"])
                    assert keys == sorted(keys)  # /v2 sorts events_by_id by id (as strings)
                    if encoding == "protobuf_json":
                        for ev in item["events_by_id"].values():
                            check("TreeEvent", ev)
            seen += len(page["transactions"])
            last = page["transactions"][-1]
            mig = last.get("migration_id", last.get("event", {}).get("migration_id"))
            after = {"after_migration_id": mig, "after_record_time": last["record_time"]}
        assert seen == 600
    uid = Ledger(LEDGER).update_id(2, 1, 7)
    check("UpdateHistoryItemV2", get_json(sim.url + f"/v2/updates/{uid}?daml_value_encoding=protobuf_json"))


def test_errors_have_the_real_servers_shapes(sim: Simulator) -> None:
    ledger = Ledger(LEDGER)
    ub = sim.url + "/v0/backfilling/updates-before"
    sid = ledger.synchronizer_id(0)
    for bad in ({"migration_id": 0, "synchronizer_id": sid, "before": "2030-01-01T00:00:00Z", "count": 0},
                {"migration_id": 0, "synchronizer_id": sid, "before": "2030-01-01T00:00:00Z", "count": 1001},
                {"migration_id": 0, "synchronizer_id": sid, "before": "yesterday", "count": 10}):  # fmt: skip
        status, headers, body = call(ub, bad)
        assert status == 400 and headers["content-type"].startswith("application/json")
        check("ErrorResponse", json.loads(body))
    # a body that is not the request type is rejected before any handler: text/plain, not JSON
    for raw in (b"{not json", b"[1, 2]", json.dumps({"migration_id": "zero"}).encode()):
        status, headers, body = call(ub, None, method="POST", data=raw)
        assert status == 400 and headers["content-type"].startswith("text/plain"), (raw, headers)
        assert body.startswith(b"The request content was malformed")
    # the late joiner cannot serve /v2/updates
    status, _, body = call(sim.urls[1] + "/v2/updates", {"page_size": 10})
    assert status == 503
    check("ErrorResponse", json.loads(body))


@pytest.mark.parametrize("header", [True, False])
def test_rate_limited_answers_with_and_without_retry_after(header: bool) -> None:
    """Scan's own limiter answers 429 text/plain without Retry-After; an ingress may add one."""
    faults = FaultConfig(client_rps=1.0, rate_limit_retry_after=header, retry_after_s=2)
    with Simulator(SimConfig(ledger=LEDGER, faults=faults)) as s:
        body = {"migration_id": 0, "synchronizer_id": Ledger(LEDGER).synchronizer_id(0),
                "before": "2030-01-01T00:00:00Z", "count": 5}  # fmt: skip
        answers = [call(s.url + "/v0/backfilling/updates-before", body) for _ in range(3)]
    limited = [a for a in answers if a[0] == 429]
    assert limited, [a[0] for a in answers]
    for _, headers, text in limited:
        assert headers["content-type"].startswith("text/plain") and text.startswith(b"Too Many Requests")
        assert ("retry-after" in headers) == header


def test_record_times_are_unique_within_a_migration_unless_broken_on_purpose() -> None:
    """Scan: "for a given migration id, each update has a unique record time" (across synchronizers)."""
    ledger = Ledger(LEDGER)
    times = [h.record_us for h in ledger.expected_all() if h.migration_id == 2]
    assert len(times) == 1200 and len(set(times)) == len(times)
    # still 1 us neighbours on every synchronizer (what breaks millisecond-rounding clients)
    for sid in ledger.synchronizers(2):
        ts = [h.record_us for h in ledger.expected(2, sid)]
        assert sum(b - a == 1 for a, b in itertools.pairwise(ts)) >= 5
    broken = Ledger(LedgerConfig(seed=5, migrations=LEDGER.migrations, shared_microseconds=True))
    times = [h.record_us for h in broken.expected_all() if h.migration_id == 2]
    assert len(set(times)) < len(times) - 20


def test_v2_order_is_strict_within_a_migration(sim: Simulator) -> None:
    page = post_json(sim.url + "/v2/updates", {"page_size": 1000, "after": {"after_migration_id": 2,
                     "after_record_time": "2000-01-01T00:00:00Z"}})  # fmt: skip
    times = [t["record_time"] for t in page["transactions"]]
    assert len(times) == 1000 and times == sorted(times) and len(set(times)) == len(times)


def test_scanfill_sends_requests_the_spec_accepts(db: str) -> None:
    from scanfill.db import Database
    from scanfill.load.run import RunOptions, run
    from scanfill.load.worker import WorkerSettings
    from scanfill.scan.client import ScanConfig

    with Simulator(SimConfig(ledger=LEDGER)) as s:
        scan = ScanConfig(urls=tuple(s.urls), backoff_base_s=0.01, backoff_cap_s=0.2)
        ws = WorkerSettings(db=Database(db), scan=scan, concurrency=4, page_size=200, imports=True)
        summary = run(RunOptions(worker=ws, progress=False))
        bodies = s.stats()["bodies"]
    assert summary.complete
    names = {"/v0/backfilling/migration-info": "GetMigrationInfoRequest",
             "/v0/backfilling/updates-before": "GetUpdatesBeforeRequest",
             "/v0/backfilling/import-updates": "GetImportUpdatesRequest"}  # fmt: skip
    assert set(names) <= set(bodies)
    for path, name in names.items():
        for body in bodies[path]:
            check(name, body)


def test_acs_snapshots_and_holdings_match_the_spec(sim: Simulator) -> None:
    """Snapshot timestamps, ACS pages and holdings summaries: shapes, paging, matching, errors."""
    ledger = Ledger(LEDGER)
    end = ledger.migration_end_us(2)
    q = urllib.parse.urlencode({"before": format_us(end + 3_600_000_000), "migration_id": 2})
    snap = get_json(f"{sim.url}/v0/state/acs/snapshot-timestamp?{q}")
    check("AcsSnapshotTimestampResponse", snap)
    t = parse_us(snap["record_time"])
    assert t <= end and t % ledger.snapshot_period_us == 0
    q = urllib.parse.urlencode({"after": format_us(ledger.specs[0].start_us), "migration_id": 0})
    first = get_json(f"{sim.url}/v0/state/acs/snapshot-timestamp-after?{q}")
    check("AcsSnapshotTimestampResponse", first)
    assert parse_us(first["record_time"]) > ledger.specs[0].start_us
    # paged: every page valid, tokens move on, the pages together are the ledger's active set
    got, after = [], None
    while True:
        body: dict[str, Any] = {"migration_id": 2, "record_time": snap["record_time"], "page_size": 7}
        if after is not None:
            body["after"] = after
        check("AcsRequest", body)
        page = post_json(sim.url + "/v1/state/acs", body)
        check("AcsResponseV1", page)
        got += page["created_events"]
        after = page.get("next_page_token")
        if after is None:
            break
    assert [c["contract_id"] for c in got] == [cid for cid, _ in ledger.acs(2, t)] and len(got) > 7
    assert any("created_in_update_id" not in c for c in got)  # carried from migration 0
    # at_or_before finds the snapshot; exact needs one
    body = {"migration_id": 2, "record_time": format_us(t + 1), "page_size": 1000}
    status, _, raw = call(sim.url + "/v1/state/acs", body)
    assert status == 404
    check("ErrorResponse", json.loads(raw))
    page = post_json(sim.url + "/v1/state/acs", {**body, "record_time_match": "at_or_before"})
    assert len(page["created_events"]) == len(got)
    # filters by template and party
    amulets = post_json(sim.url + "/v1/state/acs", {**body, "record_time_match": "at_or_before",
                                                    "templates": ["splice-amulet:Splice.Amulet:Amulet"]})  # fmt: skip
    assert amulets["created_events"] and all(c["template_id"].endswith(":Splice.Amulet:Amulet")
                                             for c in amulets["created_events"])  # fmt: skip
    owners = sorted({c["create_arguments"]["owner"] for c in amulets["created_events"]})
    req = {"migration_id": 2, "record_time": snap["record_time"], "owner_party_ids": owners}
    check("HoldingsSummaryRequestV1", req)
    summary = post_json(sim.url + "/v1/holdings/summary", req)
    check("HoldingsSummaryResponseV1", summary)
    assert {s["party_id"] for s in summary["summaries"]} == set(owners)
    assert all(s["total_coin_holdings"] != "0.0000000000" for s in summary["summaries"])


def test_v1_updates_match_the_spec_in_both_encodings(sim: Simulator) -> None:
    """POST /v1/updates, as Splice's scan_txlog.py pages it: V1 items (each transaction with its
    offset); protobuf_json items also hold against the strict V1 transaction of updates-before."""
    for encoding in (None, "compact_json", "protobuf_json"):
        body: dict[str, Any] = {"page_size": 200, "after": {"after_migration_id": 2,
                                                            "after_record_time": "2024-06-25T00:00:00+00:00"}}  # fmt: skip
        if encoding:
            body["daml_value_encoding"] = encoding
        check("UpdateHistoryRequestV1", body)
        page = post_json(sim.url + "/v1/updates", body)
        check("UpdateHistoryResponseV1", page)
        assert len(page["transactions"]) == 200
        if encoding == "protobuf_json":
            for item in page["transactions"]:
                check("UpdateHistoryItem", item)
    status, _, raw = call(sim.urls[1] + "/v1/updates", {"page_size": 10})  # the late joiner
    assert status == 503
    check("ErrorResponse", json.loads(raw))


def test_v0_state_acs_and_the_registry_match_the_spec(sim: Simulator) -> None:
    """POST /v0/state/acs (next_page_token on every page, null on the last) and the Token Standard
    registry's instrument (at the root) with its totalSupply."""
    ledger = Ledger(LEDGER)
    q = urllib.parse.urlencode({"before": format_us(ledger.migration_end_us(2)), "migration_id": 2})
    snap = get_json(f"{sim.url}/v0/state/acs/snapshot-timestamp?{q}")["record_time"]
    after, pages = None, 0
    while True:
        body: dict[str, Any] = {"migration_id": 2, "record_time": snap, "page_size": 5,
                                "templates": ["splice-amulet:Splice.Amulet:Amulet"]}  # fmt: skip
        if after is not None:
            body["after"] = after
        check("AcsRequest", body)
        page = post_json(sim.url + "/v0/state/acs", body)
        check("AcsResponse", page)
        pages += 1
        after = page["next_page_token"]
        if after is None:
            break
    assert pages > 1
    root = sim.url.removesuffix("/api/scan")
    instrument = get_json(root + "/registry/metadata/v1/instruments/Amulet")
    check("Instrument", instrument)
    assert "totalSupply" in instrument
    check("ListInstrumentsResponse", get_json(root + "/registry/metadata/v1/instruments"))
    check("GetRegistryInfoResponse", get_json(root + "/registry/metadata/v1/info"))
    status, _, raw = call(root + "/registry/metadata/v1/instruments/CC", None, method="GET")
    assert status == 404
    check("ErrorResponse", json.loads(raw))


def test_events_and_verdict_only_items_match_the_spec(sim: Simulator) -> None:
    """/v0/events in both encodings: updates with their verdicts, reassignments without, and the
    items that bear only a verdict (`"update": null`)."""
    kinds: Counter[str] = Counter()
    for encoding in ("compact_json", "protobuf_json"):
        after: dict[str, Any] | None = None
        for _ in range(6):
            body: dict[str, Any] = {"page_size": 200, "daml_value_encoding": encoding}
            if after:
                body["after"] = after
            check("EventHistoryRequest", body)
            page = post_json(sim.url + "/v0/events", body)
            check("EventHistoryResponse", page)
            for item in page["events"]:
                kinds["verdict only" if item["update"] is None else "reassignment" if "event" in item["update"]
                      else "transaction"] += 1  # fmt: skip
            last = page["events"][-1]
            where = last["verdict"] or last["update"]
            mig = where.get("migration_id", where.get("event", {}).get("migration_id"))
            after = {"after_migration_id": mig, "after_record_time": where["record_time"]}
    assert min(kinds.values()) > 0 and set(kinds) == {"verdict only", "reassignment", "transaction"}, kinds
