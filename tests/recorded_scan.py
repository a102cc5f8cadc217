"""Recorded Scan answers served over real HTTP, as a scan would: the real pages of the default suite.

A test-only server, kept out of the package: it serves the recorded MainNet answers and the Splice
docs' examples of `tests/fixtures/real-scan/` (each with its PROVENANCE) and nothing the project
invented, so the loaders meet what a real scan sent. What a scan derives from its history is
derived here from the recorded updates, as Scan derives it: updates-before and `/v2/updates` page
over the recorded transactions (newest first, oldest first), migration-info reports their range,
`/v0/events` pages over the recorded events. Answers recorded whole (the ACS page, the holdings
state and summary) are served as recorded.

`docs_updates()` makes whole updates of the docs' fragments; what it adds to the verbatim events is
listed in `tests/fixtures/real-scan/splice-docs/PROVENANCE.txt`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from scanfill.timeutil import format_us, parse_us

FIXTURES = Path(__file__).parent / "fixtures" / "real-scan"
GENESIS = FIXTURES / "mainnet-genesis"
RAXOL = FIXTURES / "raxol-mainnet-20260914"
DOCS = FIXTURES / "splice-docs"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


@dataclass
class Recorded:
    """One network's recorded answers. `updates`: transactions (served as the recorded JSON, keys in
    recorded order, compact: what the tests expect stored byte for byte); `events`: `/v0/events`
    items; `previous`: each migration's previous_migration_id."""

    updates: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[int, int | None] = field(default_factory=dict)
    acs: dict[str, Any] | None = None  # a recorded /v1/state/acs page (its request's record time)
    holdings: dict[str, Any] | None = None  # a recorded /v1/holdings/summary answer
    version: dict[str, Any] | None = None

    def migrations(self) -> list[int]:
        return sorted({int(u["migration_id"]) for u in self.updates})


def _key(u: dict[str, Any]) -> tuple[int, int, str]:
    return int(u["migration_id"]), parse_us(u["record_time"]), str(u["synchronizer_id"])


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class RecordedScan:
    """The aiohttp application over one `Recorded` network."""

    def __init__(self, rec: Recorded) -> None:
        self.rec = rec
        self.updates = sorted(rec.updates, key=_key)
        self.url = ""
        self.requests: dict[str, int] = {}

    def _page(self, items: list[dict[str, Any]], key: str = "transactions") -> web.Response:
        body = b'{"' + key.encode() + b'":[' + b",".join(orjson.dumps(i) for i in items) + b"]}"
        return web.Response(body=body, content_type="application/json")

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        return await handler(request)  # type: ignore[no-any-return]

    async def migrations_last(self, request: web.Request) -> web.Response:
        return web.json_response({"migration_id": max(self.rec.migrations())})

    async def migration_info(self, request: web.Request) -> web.Response:
        m = int((await request.json())["migration_id"])
        mine = [u for u in self.updates if u["migration_id"] == m]
        if not mine:
            return _error(404, f"No data for migration {m}")
        ranges: dict[str, list[str]] = {}
        for u in mine:  # in record-time order: the first is min, the last max
            ranges.setdefault(u["synchronizer_id"], []).append(u["record_time"])
        return web.json_response({
            "previous_migration_id": self.rec.previous.get(m),
            "record_time_range": [{"synchronizer_id": s, "min": ts[0], "max": ts[-1]} for s, ts in ranges.items()],
            "last_import_update_id": None, "complete": True, "import_updates_complete": True})  # fmt: skip

    async def updates_before(self, request: web.Request) -> web.Response:
        body = await request.json()
        m, sync, count = int(body["migration_id"]), body["synchronizer_id"], int(body["count"])
        before = parse_us(body["before"])
        after = parse_us(body["at_or_after"]) if body.get("at_or_after") else None
        got = [u for u in reversed(self.updates) if u["migration_id"] == m and u["synchronizer_id"] == sync
               and parse_us(u["record_time"]) < before and (after is None or parse_us(u["record_time"]) >= after)]
        return self._page(got[:count])  # fmt: skip

    async def import_updates(self, request: web.Request) -> web.Response:
        return self._page([])

    def _forward(self, body: dict[str, Any], items: list[tuple[tuple[int, int, str], Any]]) -> list[Any]:
        size = int(body["page_size"])
        after = body.get("after")
        if after is None:
            return [x for _, x in items][:size]
        am, at = int(after["after_migration_id"]), parse_us(after["after_record_time"])
        return [x for k, x in items if (k[0], k[1]) > (am, at)][:size]

    async def updates_v2(self, request: web.Request) -> web.Response:
        body = await request.json()
        return self._page(self._forward(body, [(_key(u), u) for u in self.updates]))

    async def events(self, request: web.Request) -> web.Response:
        body = await request.json()
        keyed = []
        for e in self.rec.events:
            where = e.get("update") or e["verdict"]
            keyed.append(((int(where["migration_id"]), parse_us(where["record_time"]), ""), e))
        return self._page(self._forward(body, keyed), "events")

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"complete": True})

    async def scans(self, request: web.Request) -> web.Response:
        sync = self.updates[0]["synchronizer_id"]
        return web.json_response({"scans": [{"domainId": sync, "scans": [{"publicUrl": self.url, "svName": "recorded"}]}]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(self.rec.version or {"version": "recorded"})

    async def snapshot_timestamp(self, request: web.Request) -> web.Response:
        if self.rec.acs is None:
            return _error(404, "No snapshots")
        return web.json_response({"record_time": self.rec.acs["record_time"]})

    async def acs(self, request: web.Request) -> web.Response:
        body = await request.json()
        page = self.rec.acs
        if page is None or body.get("record_time") != page["record_time"]:
            return _error(404, "No snapshot at that time recorded")
        if body.get("after") is None:
            return web.json_response(page)
        if body["after"] == page.get("next_page_token"):  # the recording holds one page: it ends there
            return web.json_response({"record_time": page["record_time"], "migration_id": page["migration_id"],
                                      "created_events": []})  # fmt: skip
        return _error(400, f"no page after {body['after']} recorded")

    async def holdings_summary(self, request: web.Request) -> web.Response:
        if self.rec.holdings is None:
            return _error(404, "No holdings recorded")
        return web.json_response(self.rec.holdings)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count])
        for p in ("", "/api/scan"):
            app.router.add_get(p + "/v0/migrations/last", self.migrations_last)
            app.router.add_post(p + "/v0/backfilling/migration-info", self.migration_info)
            app.router.add_post(p + "/v0/backfilling/updates-before", self.updates_before)
            app.router.add_post(p + "/v0/backfilling/import-updates", self.import_updates)
            app.router.add_get(p + "/v0/backfilling/status", self.status)
            app.router.add_post(p + "/v2/updates", self.updates_v2)
            app.router.add_post(p + "/v0/events", self.events)
            app.router.add_get(p + "/v0/scans", self.scans)
            app.router.add_get(p + "/version", self.version)
            app.router.add_get(p + "/v0/state/acs/snapshot-timestamp", self.snapshot_timestamp)
            app.router.add_post(p + "/v1/state/acs", self.acs)
            app.router.add_post(p + "/v1/holdings/summary", self.holdings_summary)
        return app


@contextmanager
def serving(rec: Recorded) -> Iterator[RecordedScan]:
    """The recorded network on 127.0.0.1 (a free port) in a background thread; `.url` is its base."""
    scan = RecordedScan(rec)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(scan.app())

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        scan.url = f"http://127.0.0.1:{port}/api/scan"
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True, name="recorded-scan")
    thread.start()
    ready.wait(30)
    try:
        yield scan
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


# ----- the recorded networks ---------------------------------------------------------------------


def mainnet_genesis() -> Recorded:
    """MainNet's first 25 updates (sv-1's Scan, Splice 0.5.5) and their /v0/events items."""
    return Recorded(updates=load(GENESIS / "scan.v2.updates.json")["transactions"],
                    events=load(GENESIS / "scan.v0.events.json")["events"], previous={0: None},
                    version=load(GENESIS / "scan.common.version.json"))  # fmt: skip


def _fragment(path: Path) -> dict[str, Any]:
    """A docs code-block holding `"<event id>": {...},` members: those members, verbatim."""
    text = path.read_text().strip().rstrip(",")
    return dict(json.loads("{" + text + "}"))


MIGRATION_4_SYNC = "global-domain::1220b1431ef217342db44d516bb9befde802be7d8899637d290895fa58880f19accc"
DOCS_SYNC = "global-domain::122084177677350389dd0710d6516f700a33fe348c5f2702dffef6d36e1dedcbfc17"  # block_02's


def _transaction(uid: str, m: int, sync: str, at: str, events: dict[str, dict[str, Any]], roots: list[str]
                 ) -> dict[str, Any]:  # fmt: skip
    """A whole transaction around events (the envelope is of our making: record time = `at`)."""
    t = format_us(parse_us(at))
    return {"update_id": uid, "migration_id": m, "workflow_id": "", "record_time": t, "synchronizer_id": sync,
            "effective_at": t, "root_event_ids": roots, "events_by_id": events}  # fmt: skip


def _created(e: dict[str, Any]) -> dict[str, Any]:
    """A recorded ACS contract as the created event of a transaction: its id without the ACS `#`."""
    return {**e, "event_id": e["event_id"].lstrip("#")}


def mainnet_migration_4() -> Recorded:
    """MainNet migration 4 as far as the recordings show it: every contract of the recorded ACS page
    (2026-01-30T06:00:00Z) and of the raxol holdings state, each created by a transaction at its
    `created_at` (grouped by the update id in its event id), and the three OpenMiningRounds open
    when the summary was recorded, each created at its `created_at`. The contracts are verbatim;
    the transactions around them are of our making (PROVENANCE)."""
    acs = load(GENESIS / "scan.v0.state_acs.json")
    raxol = load(RAXOL / "holdings_state.json")["created_events"]
    by_update: dict[str, list[dict[str, Any]]] = {}
    for e in [*acs["created_events"], *raxol]:
        by_update.setdefault(e["event_id"].lstrip("#").split(":")[0], []).append(_created(e))
    updates = [_transaction(uid, 4, MIGRATION_4_SYNC, max(e["created_at"] for e in es),
                            {e["event_id"]: e for e in es}, [e["event_id"] for e in es])
               for uid, es in by_update.items()]  # fmt: skip
    rounds = load(GENESIS / "scan.v0.open_and_issuing_mining_rounds.json")["open_mining_rounds"]
    for _n, r in enumerate(rounds.values()):
        c = r["contract"]
        uid = "1220" + hashlib.sha256(c["contract_id"].encode()).hexdigest()  # an id of our making
        e = {"event_type": "created_event", "event_id": f"{uid}:0", "contract_id": c["contract_id"],
             "template_id": c["template_id"], "package_name": "splice-amulet", "create_arguments": c["payload"],
             "created_at": c["created_at"], "signatories": [c["payload"]["dso"]], "observers": []}  # fmt: skip
        updates.append(_transaction(uid, 4, MIGRATION_4_SYNC, c["created_at"], {e["event_id"]: e}, [e["event_id"]]))
    return Recorded(updates=sorted(updates, key=_key), previous={4: 3}, acs=acs,
                    holdings=load(GENESIS / "scan.v0.holdings_summary.json"))  # fmt: skip


# ----- the docs' examples, made whole --------------------------------------------------------------

PLACEHOLDER = "<...>"
SENDER = "docs-sender::1220" + "a" * 64  # parties of our making where the docs elide them
RECEIVER = "docs-receiver::1220" + "b" * 64
RATE = {"rate": "0.0000190259"}  # a holding fee rate of our making for the amulets we add


def _amulet(pkg: str, uid: str, n: int, cid: str, dso: str, owner: str, amount: str, rnd: str) -> dict[str, Any]:
    return {"event_type": "created_event", "event_id": f"{uid}:{n}", "contract_id": cid,
            "template_id": f"{pkg}:Splice.Amulet:Amulet", "package_name": "splice-amulet",
            "create_arguments": {"dso": dso, "owner": owner,
                                 "amount": {"initialAmount": amount, "createdAt": {"number": rnd}, "ratePerRound": RATE}},
            "created_at": "", "signatories": [dso, owner], "observers": []}  # fmt: skip


def _archive(pkg: str, uid: str, n: int, cid: str, actor: str) -> dict[str, Any]:
    return {"event_type": "exercised_event", "event_id": f"{uid}:{n}", "contract_id": cid,
            "template_id": f"{pkg}:Splice.Amulet:Amulet", "package_name": "splice-amulet", "choice": "Archive",
            "choice_argument": {}, "child_event_ids": [], "exercise_result": {}, "consuming": True,
            "acting_parties": [actor], "interface_id": None}  # fmt: skip


def _cid(seed: str) -> str:
    return "00" + hashlib.sha256(seed.encode()).hexdigest() + "ca1012" + hashlib.sha256(seed[::-1].encode()).hexdigest()


def _whole(events: dict[str, dict[str, Any]], at: str) -> None:
    for e in events.values():
        if e.get("created_at") == "":
            e["created_at"] = at


DOCS_DSO = "DSO::122084177677350389dd0710d6516f700a33fe348c5f2702dffef6d36e1dedcbfc17"  # the docs' network


def docs_updates() -> list[dict[str, Any]]:
    """The docs' four burn examples (blocks 08-11), each event verbatim, made whole transactions: the
    placeholders the loaders read (parties, child ids) filled in, and the holdings the summary says
    were created and burnt added as events (see PROVENANCE for the list)."""
    out = []
    # 08: AmuletRules_BuyMemberTraffic, splice-amulet 0.1.6. The 0.1.6 choice transfers amuletPaid to
    # the DSO with receiverFeeRatio 1.0 (the DSO's output is amuletPaid minus the output fees) and
    # archives that amulet; the sender keeps its change.
    (eid, ex), = _fragment(DOCS / "block_08.json.txt").items()
    uid, pkg = eid.split(":")[0], ex["template_id"].split(":")[0]
    buyer, s = ex["acting_parties"][0], ex["exercise_result"]["summary"]
    ex["choice_argument"]["provider"] = buyer
    at = "2025-02-20T10:00:00.000001Z"
    dso_out = str(Decimal(ex["exercise_result"]["amuletPaid"]) - Decimal(s["outputFees"][0]))
    ev = {eid: ex,
          f"{uid}:2": _amulet(pkg, uid, 2, _cid(uid + "dso"), DOCS_DSO, DOCS_DSO, dso_out, "10470"),
          f"{uid}:3": _archive(pkg, uid, 3, _cid(uid + "dso"), DOCS_DSO),
          f"{uid}:4": _amulet(pkg, uid, 4, ex["exercise_result"]["senderChangeAmulet"], DOCS_DSO, buyer,
                              s["senderChangeAmount"], "10470")}  # fmt: skip
    ex["child_event_ids"] = [f"{uid}:2", f"{uid}:3", f"{uid}:4"]
    _whole(ev, at)
    out.append(_transaction(uid, 4, DOCS_SYNC, at, ev, [eid]))
    # 09: AmuletRules_Transfer, 0.1.6: one output to a receiver, change to the sender
    (eid, ex), = _fragment(DOCS / "block_09.json.txt").items()
    uid, pkg = eid.split(":")[0], ex["template_id"].split(":")[0]
    t, r, s = ex["choice_argument"]["transfer"], ex["exercise_result"], ex["exercise_result"]["summary"]
    t["sender"], t["provider"], t["outputs"][0]["receiver"], ex["acting_parties"] = SENDER, SENDER, RECEIVER, [SENDER]
    at = "2025-02-20T10:00:00.000002Z"
    ev = {eid: ex,
          f"{uid}:3": _amulet(pkg, uid, 3, r["createdAmulets"][0]["value"], DOCS_DSO, RECEIVER,
                              t["outputs"][0]["amount"], "10468"),
          f"{uid}:4": _amulet(pkg, uid, 4, r["senderChangeAmulet"], DOCS_DSO, SENDER, s["senderChangeAmount"], "10468")}
    ex["child_event_ids"] = [f"{uid}:3", f"{uid}:4"]
    _whole(ev, at)
    out.append(_transaction(uid, 4, DOCS_SYNC, at, ev, [eid]))
    # 10: a CNS entry's initial payment, 0.1.7: the payment's transfer (:13) sends 200 CC to the DSO
    # (:17), which the CNS rules archive in the same transaction (:18, our making: the docs say to find it)
    frag = _fragment(DOCS / "block_10.json.txt")
    collect, created, transfer = frag.values()
    uid = collect["event_id"].split(":")[0]
    pkg = transfer["template_id"].split(":")[0]
    dso = created["create_arguments"]["dso"]
    created["create_arguments"]["owner"] = dso
    created["create_arguments"]["amount"]["createdAt"] = {"number": transfer["exercise_result"]["round"]["number"]}
    created["create_arguments"]["amount"]["ratePerRound"] = RATE
    created["signatories"] = [dso]
    t = transfer["choice_argument"]["transfer"]
    t["sender"], t["provider"] = SENDER, SENDER
    collect["acting_parties"], transfer["acting_parties"] = [dso], [SENDER]
    collect["child_event_ids"], transfer["child_event_ids"] = [transfer["event_id"]], [created["event_id"]]
    burn = _archive(pkg, uid, 18, created["contract_id"], dso)
    ev = {**frag, burn["event_id"]: burn}
    out.append(_transaction(uid, 4, DOCS_SYNC, created["created_at"], ev, [collect["event_id"], burn["event_id"]]))
    # 11: AmuletRules_CreateTransferPreapproval, 0.1.7: amuletPaid split off to the provider and archived
    (eid, ex), = _fragment(DOCS / "block_11.json.txt").items()
    uid, pkg = eid.split(":")[0], ex["template_id"].split(":")[0]
    r = ex["exercise_result"]["transferResult"]
    provider = r["summary"]["balanceChanges"][0][0]
    ex["choice_argument"]["provider"], ex["choice_argument"]["receiver"] = provider, RECEIVER
    ex["acting_parties"] = [provider]
    at = "2025-02-20T10:00:00.000003Z"
    split = _cid(uid + "split")
    ev = {eid: ex,
          f"{uid}:1": _amulet(pkg, uid, 1, split, DOCS_DSO, provider, ex["exercise_result"]["amuletPaid"], "32"),
          f"{uid}:2": _archive(pkg, uid, 2, split, provider),
          f"{uid}:3": _amulet(pkg, uid, 3, r["senderChangeAmulet"], DOCS_DSO, provider, r["summary"]["senderChangeAmount"], "32")}
    ex["child_event_ids"] = [f"{uid}:1", f"{uid}:2", f"{uid}:3"]
    _whole(ev, at)
    out.append(_transaction(uid, 4, DOCS_SYNC, at, ev, [eid]))
    return sorted(out, key=_key)


def docs_network() -> Recorded:
    return Recorded(updates=docs_updates(), previous={4: 3})
