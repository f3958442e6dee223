"""Logs: one structured line per event, session lines carry their context, none per audio frame."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from asrhub import logging as hub_logging
from asrhub.hub import Hub
from asrhub.settings.schema import LogSettings
from tests.ops.conftest import pcm_chunks


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    assert hub_logging.configure(LogSettings(level="debug", format="auto"), stream=stream) == "json"
    try:
        yield stream
    finally:
        hub_logging.reset()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_session_lines_carry_their_context(vad_hub: Hub, captured: io.StringIO) -> None:
    session = vad_hub.open({"provider": "none"}, transport="test-log")
    chunks = pcm_chunks("silences.wav")
    for chunk in chunks:
        await session.feed(chunk)
    session.ctx.log.info("checkpoint", note="from a stage")  # what operators and providers use
    assert await session.end() == "end"
    other = vad_hub.open({"provider": "none"}, transport="other")
    other.close()

    records = lines(captured)
    mine = [r for r in records if r.get("session_id") == session.id]
    events = [r["event"] for r in mine]
    assert "session opened" in events and "session closed" in events and "checkpoint" in events
    for record in mine:
        assert record["provider"] == "none"
        assert record["transport"] == "test-log"
        assert {"timestamp", "level", "logger", "event"} <= record.keys()
    # no line per audio frame: a few lines for a session that received hundreds of frames
    assert len(chunks) > 200 and len(mine) < 10
    assert not any(r.get("session_id") == other.id and r.get("transport") != "other" for r in records)


def test_stdlib_loggers_share_the_format_and_level(captured: io.StringIO) -> None:
    logging.getLogger("aiohttp.server").warning("handler failed: %s", "boom")
    logging.getLogger("socketio.server").error("emit failed")
    structlog.get_logger("asrhub.test").debug("structured", answer=42)
    records = lines(captured)
    assert {"event": "handler failed: boom", "logger": "aiohttp.server", "level": "warning"}.items() <= (
        records[0].items()
    )
    assert records[1]["logger"] == "socketio.server" and records[1]["level"] == "error"
    assert records[2]["answer"] == 42 and records[2]["level"] == "debug"


def test_level_filters_and_access_log_is_quiet() -> None:
    stream = io.StringIO()
    hub_logging.configure(LogSettings(level="info", format="json"), stream=stream)
    try:
        structlog.get_logger("asrhub.test").debug("hidden")
        logging.getLogger("aiohttp.access").info("GET /v1/sessions/x/audio 200")  # one per frame
        structlog.get_logger("asrhub.test").info("shown")
        try:
            raise ValueError("bad")
        except ValueError:
            structlog.get_logger("asrhub.test").exception("failed")
    finally:
        hub_logging.reset()
    records = lines(stream)
    assert [r["event"] for r in records] == ["shown", "failed"]
    assert "ValueError: bad" in str(records[1]["exception"])


def test_console_on_a_terminal() -> None:
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as terminal:
        try:
            assert hub_logging.configure(LogSettings(), stream=terminal) == "console"
            structlog.get_logger("asrhub.test").info("hello", session_id="s1")
            terminal.flush()
        finally:
            hub_logging.reset()
        text = os.read(master, 4096).decode()
    os.close(master)
    assert "hello" in text and "session_id" in text and not text.lstrip().startswith("{")


def test_configure_twice_keeps_one_handler() -> None:
    try:
        hub_logging.configure(LogSettings(format="json"), stream=io.StringIO())
        hub_logging.configure(LogSettings(format="json"), stream=io.StringIO())
        ours = [h for h in logging.getLogger().handlers if h.get_name() == hub_logging.HANDLER_NAME]
        assert len(ours) == 1
    finally:
        hub_logging.reset()


def test_in_process_use_without_logging_set_up_prints_warnings_only() -> None:
    """A program that embeds a Hub and sets no logging up sees no debug lines on stdout (the
    structlog default) — only warnings and errors, on stderr, as stdlib logging's defaults do —
    and the hub configured nothing global: structlog is as the program left it."""
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent(
        """
        import asyncio
        import numpy as np
        import structlog
        from asrhub.hub import Hub
        from asrhub.logging import get_logger
        from asrhub.wiring import build_pipeline

        async def main():
            hub = Hub(providers={}, pipeline_factory=build_pipeline)
            session = hub.open({"provider": "none"})
            await session.feed(np.zeros(16000, np.int16).tobytes())
            await session.end()
            get_logger("asrhub.embedded").warning("something to see")
            print("configured" if structlog.is_configured() else "", end="")

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "something to see" in done.stderr and "session opened" not in done.stderr


def test_one_shot_commands_log_warnings_unless_a_level_is_set() -> None:
    """``transcribe``, ``stream`` and ``providers`` print their result; a hub's info lines are
    for a server's operator (issue 29 item 6). ``log.level`` set anywhere still wins."""
    from asrhub.settings.loader import Override, load

    stream = io.StringIO()
    try:
        hub_logging.configure_command(load(None, env={}), stream=stream)
        assert logging.getLogger().level == logging.WARNING
        hub_logging.configure_command(load(None, env={"ASRHUB_LOG_LEVEL": "info"}), stream=stream)
        assert logging.getLogger().level == logging.INFO
        flag = Override("log.level", "debug", "--log-level")
        hub_logging.configure_command(load(None, env={}, overrides=[flag]), stream=stream)
        assert logging.getLogger().level == logging.DEBUG
        hub_logging.configure_command(None, stream=stream)
        assert logging.getLogger().level == logging.WARNING
    finally:
        hub_logging.reset()
