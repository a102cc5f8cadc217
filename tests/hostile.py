"""A real HTTP proxy in front of the simulator that serves hostile values: each chosen update is
edited the same way on every endpoint and every request (so all scans agree on it, it is not a
disagreement), the rest of each page passes through as served. It counts the answers that held a
hostile update, so a test can bound how often the same page was asked for."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import ClientSession, web

# an edit puts placeholders (strings) into the item; the proxy then writes each placeholder's raw
# JSON text in its place, which may be what no JSON library writes (a lone surrogate escape)
Edit = Callable[[dict[str, Any]], None]


class HostileProxy:
    def __init__(self, upstream: str, edits: dict[str, Edit], raw: dict[str, bytes]) -> None:
        self.upstream = upstream.rstrip("/")  # the simulator's base URL (.../api/scan)
        self.edits = edits  # update id -> what to do to its item
        self.raw = {orjson.dumps(k): v for k, v in raw.items()}  # '"placeholder"' -> raw JSON text
        self.served: Counter[str] = Counter()  # update id -> answers that held it, edited
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/scan"

    def _edit_page(self, body: bytes) -> bytes:
        if not any(uid.encode() in body for uid in self.edits):
            return body
        page = orjson.loads(body)
        for key in ("transactions", "events"):
            for item in page.get(key) or ():
                for u in (item, item.get("update")) if key == "events" else (item,):
                    if isinstance(u, dict) and u.get("update_id") in self.edits:
                        self.edits[u["update_id"]](u)
                        self.served[u["update_id"]] += 1
        if "update_id" in page and page["update_id"] in self.edits:  # update-by-id
            self.edits[page["update_id"]](page)
            self.served[page["update_id"]] += 1
        out = orjson.dumps(page)
        for placeholder, text in self.raw.items():
            out = out.replace(placeholder, text)
        return out

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        url = self.upstream + request.path_qs[len("/api/scan") :]
        data = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json"),
                   "Accept-Encoding": "identity"}  # fmt: skip
        async with self._session.request(request.method, url, data=data or None, headers=headers) as resp:
            body = await resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "application/json")
            extra = {k: v for k, v in resp.headers.items() if k.lower() == "retry-after"}
        if status == 200 and ctype.startswith("application/json"):
            body = self._edit_page(body)
        return web.Response(status=status, body=body, headers={"Content-Type": ctype, **extra})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> web.AppRunner:
            self._session = ClientSession()
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return runner

        self._runner = self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def down() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def hostile_proxy(upstream: str, edits: dict[str, Edit], raw: dict[str, bytes] | None = None) -> Iterator[HostileProxy]:
    proxy = HostileProxy(upstream, edits, raw or {})
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


# ----- edits -----------------------------------------------------------------------------------


def events_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    return list((item.get("events_by_id") or {}).values())


def add_text_field(label: str, placeholder: str) -> Edit:
    """A text field added to the item's first create's arguments (protobuf_json or compact)."""

    def edit(item: dict[str, Any]) -> None:
        ev = next(e for e in events_of(item) if e.get("event_type") == "created_event")
        args = ev["create_arguments"]
        if isinstance(args, dict) and isinstance(args.get("record"), dict):
            args["record"]["fields"].append({"label": label, "value": {"text": placeholder}})
        else:
            args[label] = placeholder

    return edit


def replace_arguments(placeholder: str) -> Edit:
    """The item's first create's arguments replaced (by raw JSON text, through a placeholder)."""

    def edit(item: dict[str, Any]) -> None:
        ev = next(e for e in events_of(item) if e.get("event_type") == "created_event")
        ev["create_arguments"] = placeholder

    return edit


def nested_record(depth: int) -> bytes:
    """A protobuf_json record nested `depth` records deep (no JSON library writes this deep)."""
    return b'{"record":{"fields":[{"label":"inner","value":' * depth + b'{"text":"bottom"}' + b"}]}}" * depth
