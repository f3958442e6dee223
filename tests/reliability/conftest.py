"""Reliability tests: hostile input, vanishing clients, races, engine faults, nothing lost,
resumable sessions — against real servers on 127.0.0.1 with real clients.

``pytest tests/reliability`` runs the short versions (a few hundred storm cycles per transport,
a bounded fuzz run); ``pytest tests/reliability --long`` (or ``RELIABILITY_LONG=1``) runs
thousands. Each test that measures something records it with the ``figures`` fixture; the
figures are printed at the end of the run (they are what docs/reliability.md quotes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.transports.conftest import ServerThread, make_settings

from .harness import Watch

FIGURE = "reliability figure"
"""The ``user_properties`` name of a figure: reports carry them from pytest-xdist's workers."""


def is_long(config: pytest.Config) -> bool:
    return bool(config.getoption("--long")) or os.environ.get("RELIABILITY_LONG", "") not in ("", "0")


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return is_long(request.config)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Any:
    def record(name: str, value: Any) -> None:
        request.node.user_properties.append((FIGURE, (name, str(value))))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "teardown"  # it carries all the test recorded
        for key, value in getattr(report, "user_properties", ())
        if key == FIGURE
    ]
    if lines:
        terminalreporter.section("reliability figures")
        for name, value in lines:
            terminalreporter.write_line(f"{name}: {value}")


def reliability_settings(**limits: Any) -> Any:
    """No API keys; a short resume window and idle timeout so the leak checks settle fast."""
    base: dict[str, Any] = {"resume_window_s": 2.0, "idle_timeout_s": 20.0}
    return make_settings(keys=(), limits={**base, **limits})


@pytest.fixture(scope="session")
def hub_server() -> Iterator[ServerThread]:
    """faster-whisper tiny.en behind every transport, in this process (state can be inspected)."""
    with ServerThread(reliability_settings()) as server:
        yield server


@pytest.fixture
def watch(hub_server: ServerThread) -> Iterator[Watch]:
    with Watch(hub_server.loop) as w:
        yield w
