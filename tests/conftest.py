"""Shared fixtures: one real PostgreSQL server per session (embedded pgserver unless
SCANFILL_TEST_DSN names another), a fresh database per test, and simulators over real HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import system_deps

_MISSING: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*packages): Debian packages the test needs (see system_deps.py)")
    if config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER") or _unit_only(config):
        return
    terminal = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if terminal is not None:
            terminal.write_line(line)
        else:
            print(line, flush=True)

    _MISSING[:] = system_deps.ensure(say)
    if _MISSING:
        say(system_deps.explain(_MISSING))


def _unit_only(config: pytest.Config) -> bool:
    """Only the fast tier asked for (`pytest tests/unit`): it needs no system package, so nothing
    is installed or checked for it."""
    unit = (Path(__file__).parent / "unit").resolve()
    paths = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    return bool(paths) and all(p == unit or unit in p.parents for p in paths)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose packages are missing: skipped with the reason on a developer's machine, failed
    at once in CI (CI=true), where everything must run."""
    lacking = [p for mark in item.iter_markers("needs") for p in mark.args if p in _MISSING]
    if lacking:
        reason = system_deps.explain(lacking)
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dsn = os.environ.get("SCANFILL_TEST_DSN")
    if dsn:
        yield dsn
        return

    from scanfill.embedded import start_embedded

    handle = start_embedded(tmp_path_factory.mktemp("pg"), max_connections=200)
    yield handle.dsn
    handle.stop()


@pytest.fixture
def db(pg_admin_dsn: str) -> Iterator[str]:
    """A DSN of a new, empty database, dropped after the test."""
    from shared import drop_database, new_database

    dsn = new_database(pg_admin_dsn)
    yield dsn
    drop_database(pg_admin_dsn, dsn)
