"""`Pipeline`'s steps without a network: a stand-in for the client's request method answers from
a script (bodies built by the simulator's ledger, errors as the client raises them), so each step
(shrink on 503, refuse and ask again, give up, check against what the scans announce) is exact and
fast. The same steps over real HTTP: tests/test_pipeline.py."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from scanfill.errors import MalformedPage, ScanHTTPError
from scanfill.load.pipeline import Pipeline
from scanfill.scan.client import ScanConfig
from scanfill.sim import Ledger, LedgerConfig, MigrationSpec
from scanfill.sim.ledger import to_v2
from scanfill.timeutil import format_us

LEDGER = Ledger(LedgerConfig(seed=5, migrations=(MigrationSpec(2, "2024-06-24T21:08:00Z", 60),)))
SYNC = LEDGER.synchronizer_id(0)
LO, HI = LEDGER.record_us(2, 0, 0), LEDGER.record_us(2, 0, 9) + 1
PAGE = orjson.dumps({"transactions": [LEDGER.update(2, 0, i) for i in range(9, -1, -1)]})
HTML = b"<html><body>Bad gateway</body></html>"


class Client:
    """The client's seam as the pipeline uses it: `request` answers from `script` in turn (an
    exception is raised), `bench` is recorded, migration-info says what `heads` says."""

    def __init__(self, script: list[Any], urls: tuple[str, ...] = ("http://a", "http://b"),
                 head: int = HI) -> None:  # fmt: skip
        self.config = ScanConfig(urls=urls, backoff_base_s=0.0, max_attempts=6)
        self.urls = list(urls)
        self.script = list(script)
        self.asked: list[dict[str, Any]] = []
        self.benched: list[str] = []
        self.head = head

    async def request(self, method: str, path: str, body: dict[str, Any], **kw: Any) -> tuple[bytes, str]:
        self.asked.append(body)
        got = self.script.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    def bench(self, url: str, seconds: float) -> None:
        self.benched.append(url)

    async def migration_info_all(self, m: int) -> dict[str, Any]:
        ranges = [{"synchronizer_id": SYNC, "min": format_us(LO), "max": format_us(self.head)}]
        return {u: {"record_time_range": ranges} for u in self.urls}


def backward(client: Client, count: int = 10) -> Any:
    pipeline = Pipeline(client)  # type: ignore[arg-type]
    batch = asyncio.run(pipeline.backward(2, SYNC, format_us(HI), LO, [count], None))
    return pipeline, batch


def test_a_503_halves_the_page_and_asks_again() -> None:
    client = Client([ScanHTTPError(503, "http://a", b"timeout"), (PAGE, "http://a")])
    pipeline, batch = backward(client, count=10)
    assert len(batch.updates) == 10 and pipeline.report.shrinks == 1
    assert [b["count"] for b in client.asked] == [10, 5]


def test_a_malformed_page_benches_its_scan_and_is_asked_again() -> None:
    client = Client([(HTML, "http://a"), (PAGE, "http://b")])
    pipeline, batch = backward(client)
    assert len(batch.updates) == 10
    assert pipeline.report.malformed == 1 and pipeline.report.pages == 1 and client.benched == ["http://a"]


def test_a_page_malformed_three_times_in_a_row_is_an_error_that_names_it() -> None:
    client = Client([(HTML, "http://a"), (b"{", "http://b"), (HTML, "http://a"), (PAGE, "http://b")])
    with pytest.raises(MalformedPage, match=r"malformed page from http://a, 3 times in a row.*nothing of it was stored"):
        backward(client)
    assert client.benched == ["http://a", "http://b", "http://a"] and len(client.script) == 1


def test_a_503_of_a_page_that_cannot_shrink_is_raised() -> None:
    client = Client([ScanHTTPError(503, "http://a", b"busy")])
    pipeline = Pipeline(client)  # type: ignore[arg-type]
    with pytest.raises(ScanHTTPError):
        asyncio.run(pipeline.imports(2, "", 10, None))


FORWARD = orjson.dumps({"transactions": [to_v2(LEDGER.update(2, 0, i), False) for i in range(10)]})


def test_a_forward_page_within_what_the_scans_announce_is_taken() -> None:
    client = Client([(FORWARD, "http://a")])
    pipeline = Pipeline(client)  # type: ignore[arg-type]
    batch = asyncio.run(pipeline.forward(None, 10))
    assert len(batch.updates) == 10 and pipeline.report.malformed == 0 and not client.benched


def test_a_forward_page_past_what_the_scans_announce_is_refused_whole() -> None:
    client = Client([(FORWARD, "http://a"), (FORWARD, "http://b"), (FORWARD, "http://a")],
                    head=LEDGER.record_us(2, 0, 5))  # fmt: skip
    pipeline = Pipeline(client)  # type: ignore[arg-type]
    with pytest.raises(MalformedPage, match="beyond the newest record time any scan reports"):
        asyncio.run(pipeline.forward(None, 10))
    assert pipeline.report.malformed == 3 and pipeline.report.pages == 0
    assert client.benched == ["http://a", "http://b", "http://a"]
