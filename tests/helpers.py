"""Plain-HTTP helpers for tests: the standard library, so tests do not share scanfill's client."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any


def call(
    url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30,
    method: str | None = None, data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """`body` is sent as JSON; `data` as raw bytes (to send what is not valid JSON)."""
    if data is None and body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method or ("GET" if data is None else "POST"),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        hdrs = {k.lower(): v for k, v in exc.headers.items()}
        status = exc.code
    if hdrs.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    return status, hdrs, raw


def post_json(url: str, body: Any) -> Any:
    status, _, raw = call(url, body)
    assert status == 200, (status, raw[:300])
    return json.loads(raw)


def get_json(url: str) -> Any:
    status, _, raw = call(url)
    assert status == 200, (status, raw[:300])
    return json.loads(raw)
