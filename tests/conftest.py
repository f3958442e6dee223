"""Options for the whole suite (registered here so that ``pytest --long`` works from the
repository root as well as with ``pytest tests/reliability --long``), and the fixtures more
than one test folder uses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from asrhub.providers.whisper import WhisperProvider


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="reliability: run the long storms and fuzz runs (thousands of cycles / inputs)",
    )


@pytest.fixture
async def whisper() -> AsyncIterator[WhisperProvider]:
    """The in-process whisper engine on its defaults (the bundled tiny.en), started and closed
    per test; the process caches the loaded model."""
    from asrhub.providers.whisper import WhisperProvider

    provider = WhisperProvider()
    await provider.start()
    yield provider
    await provider.close()
