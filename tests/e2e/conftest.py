"""End-to-end tests: the browser UI (web/) against a real hub process, in headless Chromium."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "browser: end-to-end test in headless Chromium against a hub subprocess "
        "(needs /usr/bin/chromium and /usr/bin/chromedriver)",
    )
