"""Fixtures of the reliability suite.

SHORT mode (default) runs each test for a few seconds, for CI on 2 cores. LONG mode
(``RELIABILITY_LONG=1``, ``make reliability-long``) runs the durations of the issue
(a minute of load per scenario, 2000 slowloris connections, 10,000 idle connections).

Every test records one summary line (sent/ok/errors/failed and what else it measured);
they are printed together at the end of the run, pass or fail.

This directory is a package (``__init__.py``) so that this conftest does not shadow
``tests/conftest.py`` as the module ``conftest`` that other test files import from.
"""

import os
import sys
from pathlib import Path

import pytest

from conftest import APPS, HERE  # tests/conftest.py (its fixtures apply here too)

REL = Path(__file__).parent
REL_APPS = REL / "apps"
TOOLS = REL / "tools"

LONG = os.environ.get("RELIABILITY_LONG", "").strip().lower() not in ("", "0", "no", "false")

_SUMMARIES = []


def dur(short, long):
    """A duration (or size) for the current mode."""
    return long if LONG else short


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a reliability test that takes more than ~15 s even in short mode (deselect with -m 'not slow')"
    )


def pytest_terminal_summary(terminalreporter):
    if not _SUMMARIES:
        return
    terminalreporter.section(f"reliability summary ({'LONG' if LONG else 'SHORT'} mode)")
    for name, line in _SUMMARIES:
        terminalreporter.write_line(f"{name}: {line}")


@pytest.fixture
def report(request):
    """report("sent=... ok=...") -> printed now and in the end-of-run summary."""

    def rep(line):
        name = request.node.name
        _SUMMARIES.append((name, line))
        print(f"RELIABILITY {name}: {line}", file=sys.stderr)

    return rep


def rel_env(extra=None):
    paths = [str(REL_APPS), str(APPS), str(HERE.parent)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {"PYTHONPATH": os.pathsep.join(paths)}
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def rel_server(start_server):
    """rel_server("-w", "2", ...) -> a running server of rel_app:app (tests/conftest.py's
    start_server, with the reliability apps importable)."""

    def start(*args, app="rel_app:app", env=None, **kw):
        return start_server(*args, app, env=rel_env(env), **kw)

    return start
