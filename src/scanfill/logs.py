"""Logging set-up shared by every command: rich on a terminal, plain lines elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import Any


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)


def dump_tasks_on_sigusr2(loop: Any) -> None:
    """`kill -USR2 <pid>`: every asyncio task's stack on stderr (SIGUSR1 dumps the threads), for a
    loader that hangs; what each task awaits is what a thread dump cannot show."""
    import asyncio
    import contextlib
    import io
    import signal

    def dump() -> None:
        out = io.StringIO()
        for task in asyncio.all_tasks(loop):
            out.write(f"--- {task.get_name()}: {task!r}\n")
            task.print_stack(file=out)
        sys.stderr.write(out.getvalue())
        sys.stderr.flush()

    if hasattr(signal, "SIGUSR2"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR2, dump)
