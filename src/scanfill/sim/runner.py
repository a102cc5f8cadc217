"""Starting a simulator: in a background thread, in a child process, or in the foreground."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from types import TracebackType
from typing import Any

import msgspec

from scanfill.sim.config import FaultConfig, SimConfig
from scanfill.sim.server import Simulation


class Simulator:
    """Context manager yielding a running simulator; `urls` lists each scan's base URL.

    `mode="thread"` shares this process (cheap, for tests); `mode="process"` runs it in a child
    process so a benchmark's loader does not share the interpreter's lock with the server.
    """

    def __init__(self, config: SimConfig | None = None, mode: str = "thread") -> None:
        self.config = config or SimConfig()
        self.mode = mode
        self.urls: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.simulation: Simulation | None = None

    @property
    def url(self) -> str:
        return self.urls[0]

    def __enter__(self) -> Simulator:
        if self.mode == "process":
            self._start_process()
        else:
            self._start_thread()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start_thread(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self.simulation = Simulation(self.config)
                runners = loop.run_until_complete(self.simulation.start())
                self.urls = self.simulation.urls
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                for r in runners:
                    loop.run_until_complete(r.cleanup())
                pending = asyncio.all_tasks(loop)  # hung requests: cancel them rather than leak them
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="scanfill-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def _start_process(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "scanfill.sim", self.config.to_json().decode()],
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise RuntimeError(f"simulator process exited with code {code} before it was ready")
        self.urls = json.loads(line)["urls"]

    def set_faults(self, faults: FaultConfig, instance: int | None = None) -> None:
        """Replace the faults of one scan (or all) while it runs."""
        targets = self.urls if instance is None else [self.urls[instance]]
        for url in targets:
            root = url.removesuffix("/api/scan")
            req = urllib.request.Request(root + "/sim/faults", data=msgspec.json.encode(faults), method="POST")
            with urllib.request.urlopen(req, timeout=10, context=self._control_tls()) as resp:
                resp.read()

    @property
    def pid(self) -> int:
        """The simulator's process (mode="process"), to measure what serving costs."""
        if self._proc is None:
            raise RuntimeError("the simulator runs in this process (mode='thread'): it has no pid of its own")
        return self._proc.pid

    def stats(self, instance: int = 0) -> dict[str, Any]:
        root = self.urls[instance].removesuffix("/api/scan")
        with urllib.request.urlopen(root + "/sim/stats", timeout=10, context=self._control_tls()) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def _control_tls(self) -> ssl.SSLContext | None:
        """The simulator's own control endpoints over its self-signed test certificate."""
        if not self.config.tls_cert:
            return None
        ctx = ssl.create_default_context(cafile=self.config.tls_cert)
        ctx.check_hostname = False
        return ctx

    def close(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def serve_forever(config: SimConfig, announce: Any = None) -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM."""

    async def main() -> None:
        sim = Simulation(config)
        runners = await sim.start()
        if announce is not None:
            announce(sim.urls)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for r in runners:
            await r.cleanup()

    asyncio.run(main())


def announce_json(urls: list[str]) -> None:
    """First stdout line of a child simulator: how its parent finds the ports."""
    sys.stdout.write(json.dumps({"urls": urls, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
