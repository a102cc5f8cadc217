"""The pipeline's pure parts: what a corrupting proxy can do to a page and how decoding refuses it,
agreement through a transient 503, the memory budget, liveness across PID namespaces, the one
normalisation between /v2 and updates-before. No database, no HTTP: seconds."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys

import orjson
import pytest

from scanfill import host
from scanfill.errors import MalformedPage, ScanHTTPError
from scanfill.load.agree import agreed_page, agreed_prefix
from scanfill.load.budget import ByteBudget
from scanfill.load.decode import decode_events_page, decode_page, decode_stream_page
from scanfill.ops.verify import normalize
from scanfill.sim import Ledger, LedgerConfig, MigrationSpec
from scanfill.sim.corrupt import BOGUS_SYNCHRONIZER, FAR_FUTURE, KINDS, spoil
from scanfill.sim.ledger import to_v2

LEDGER = Ledger(LedgerConfig(seed=5, migrations=(MigrationSpec(2, "2024-06-24T21:08:00Z", 60),)))
SYNC = LEDGER.synchronizer_id(0)
FORWARD = orjson.dumps({"transactions": [to_v2(LEDGER.update(2, 0, i), False) for i in range(10)]})
BACKWARD = orjson.dumps({"transactions": [LEDGER.update(2, 0, i) for i in range(9, -1, -1)]})
EVENTS = orjson.dumps({"events": [LEDGER.event_item(2, 0, i, False) for i in range(10)]})
CHECKED_LATER = {"migration", "synchronizer", "time"}  # forward pages: against what the scans announce


def spoiled(kind: str, body: bytes) -> bytes:
    """`body` spoiled by `kind`: every kind must find something to spoil in these pages (an empty
    body instead would be refused for the wrong reason)."""
    got = spoil(kind, body)
    assert got is not None, f"{kind} left the page unspoiled"
    assert got[0] != body
    return got[0]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_spoiled_backward_page_is_refused_whole(kind: str) -> None:
    body = spoiled(kind, BACKWARD)
    after, before = LEDGER.record_us(2, 0, 0), LEDGER.record_us(2, 0, 9) + 1
    with pytest.raises(MalformedPage):
        decode_page(body, 2, SYNC, before, after)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_spoiled_forward_page_is_refused_or_left_to_the_scans_check(kind: str) -> None:
    body = spoiled(kind, FORWARD)
    if kind in CHECKED_LATER:  # well-formed and ascending: only the scans know it is wrong
        batch = decode_stream_page(body, None)
        last = batch.updates[-1]
        assert last.migration_id == 99 or last.synchronizer_id == BOGUS_SYNCHRONIZER or last.record_time == FAR_FUTURE
        return
    with pytest.raises(MalformedPage):
        decode_stream_page(body, None)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_spoiled_events_page_is_refused_or_left_to_the_scans_check(kind: str) -> None:
    body = spoiled(kind, EVENTS)
    if kind in CHECKED_LATER:
        page = decode_events_page(body, None)
        _, m, sync, t = page.positions[-1]
        assert m == 99 or sync == BOGUS_SYNCHRONIZER or t > LEDGER.record_us(2, 0, 59)
        return
    with pytest.raises(MalformedPage):
        decode_events_page(body, None)


def test_agreement_asks_a_scan_again_after_a_503() -> None:
    calls: dict[str, int] = {}

    async def fetch(url: str) -> bytes:
        calls[url] = calls.get(url, 0) + 1
        if url == "a" and calls[url] == 1:
            raise ScanHTTPError(503, url, b"busy")
        return BACKWARD

    got = asyncio.run(agreed_page(fetch, ["a", "b"], 2, "r"))
    assert sorted(got.urls) == ["a", "b"] and calls == {"a": 2, "b": 1}
    got = asyncio.run(agreed_prefix(fetch, ["a", "b"], 2, "r"))  # "a" answers at once now
    assert got.body.count(b"update_id") >= 10


def test_agreement_raises_the_503_when_scans_keep_answering_it_so_the_page_shrinks() -> None:
    async def fetch(url: str) -> bytes:
        raise ScanHTTPError(503, url, b"busy")

    with pytest.raises(ScanHTTPError):
        asyncio.run(agreed_page(fetch, ["a", "b", "c"], 2, "r"))


def test_a_garbage_body_disagrees_instead_of_breaking_agreement() -> None:
    async def fetch(url: str) -> bytes:
        return b"<html>oops</html>" if url == "bad" else FORWARD

    class AsGiven(random.Random):
        def shuffle(self, x: list[str]) -> None:  # type: ignore[override]
            """The garbage scan is asked first."""

    got = asyncio.run(agreed_prefix(fetch, ["bad", "a", "b"], 2, "r", rng=AsGiven()))
    assert sorted(got.urls) == ["a", "b"] and [d.url for d in got.disagreements] == ["bad"]
    got2 = asyncio.run(agreed_page(fetch, ["bad", "a", "b"], 2, "r", rng=AsGiven()))
    assert sorted(got2.urls) == ["a", "b"] and [d.url for d in got2.disagreements] == ["bad"]


def test_the_memory_budget_holds_and_lets_a_page_larger_than_it_through_alone() -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        b = ByteBudget(100)
        order: list[str] = []
        await b.acquire(60)
        waiting = asyncio.create_task(b.acquire(60))  # 120 > 100: waits
        await asyncio.sleep(0)
        order.append(f"waiting={not waiting.done()}")
        b.release(60)
        await waiting
        order.append(f"used={b.used}")
        b.release(60)
        await b.acquire(500)  # larger than the budget, nothing held: through, alone
        return b.stats.peak, b.stats.waits, order

    peak, waits, order = asyncio.run(scenario())
    assert order == ["waiting=True", "used=60"] and waits == 1 and peak == 500


def test_a_pid_is_judged_only_inside_its_own_namespace() -> None:
    mine = host.pid_namespace()
    assert mine and not host.known_dead(os.getpid(), mine)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert host.known_dead(gone.pid, mine)
    assert not host.known_dead(gone.pid, "pid:[1]")  # another namespace: never presumed dead here
    assert not host.known_dead(gone.pid, None)  # recorded before namespaces were: left to expire


def test_normalize_removes_only_what_the_two_endpoints_differ_in() -> None:
    item = LEDGER.update(2, 0, 3)
    assert "offset" in item
    v2 = to_v2(item, False)
    assert normalize(item) == normalize(v2)
    assert normalize({**item, "external_transaction_hash": None}) == normalize(v2)
    assert normalize({**item, "external_transaction_hash": "ab"}) != normalize(v2)
    assert normalize({**item, "workflow_id": "other"}) != normalize(v2)
