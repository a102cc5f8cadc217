"""System packages a few tests need beyond pip: installed at the start of the test run where that
is possible (root with apt-get), otherwise named in one line at the start, never discovered late.

A test declares what it needs with `@pytest.mark.needs("chromium")`; the names are Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PG15 = Path("/usr/lib/postgresql/15/bin")

# name (Debian package) -> (is it there?, what it is for)
PACKAGES: dict[str, tuple[Callable[[], bool], str]] = {
    "postgresql-15": (lambda: (PG15 / "initdb").exists(), "tests against a second server version"),
    "pgbouncer": (
        lambda: bool(shutil.which("pgbouncer")) or Path("/usr/sbin/pgbouncer").exists(),
        "the pooler (transaction mode) test",
    ),
    "chromium": (
        lambda: bool(shutil.which("chromium") or shutil.which("chromium-browser")),
        "rendering the HTML report in a browser",
    ),
}


def missing() -> list[str]:
    return [name for name, (present, _) in PACKAGES.items() if not present()]


def can_install() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("apt-get")) and os.environ.get("SCANFILL_NO_APT") != "1"


def ensure(say: Callable[[str], None]) -> list[str]:
    """Install what is missing when root with apt-get; return what is still missing."""
    need = missing()
    if need and can_install():
        say(f"scanfill tests: installing {', '.join(need)} with apt-get (needed by a few tests; once per machine)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=900)
            subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True, env=env, capture_output=True,
                           timeout=1800)  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out = getattr(exc, "stderr", b"") or b""
            say(f"scanfill tests: apt-get failed ({exc}): {out.decode(errors='replace')[-500:]}")
    return missing()


def explain(still: list[str]) -> str:
    """One line: which tests cannot run and how to get what they need."""
    what = "; ".join(f"{name} ({PACKAGES[name][1]})" for name in still)
    return (f"scanfill tests: cannot run the tests that need {what}: install with "
            f"`sudo apt-get install {' '.join(still)}` (as root the test run installs them itself)")  # fmt: skip
