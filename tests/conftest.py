"""Options for the whole suite (registered here so that ``pytest --long`` works from the
repository root as well as with ``pytest tests/reliability --long``)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="reliability: run the long storms and fuzz runs (thousands of cycles / inputs)",
    )
