"""Pieces of the transports' door, without a server: client JSON at the edge, Wyoming's
framing read from a hostile peer, the Deepgram keep-alive, the Wyoming address rule."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from asrhub.errors import HubError
from asrhub.hub import Hub
from asrhub.settings.schema import ServerSettings, Settings
from asrhub.transports.json_input import MAX_DEPTH, check_depth, load, load_object
from asrhub.transports.relay import Relay
from asrhub.transports.wyoming_wire import read_event
from asrhub.wiring import build_pipeline


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 10_000,
        '{"a":' * 10_000,
        '{"type": "ping", "id": ' + "[" * (MAX_DEPTH) + "]" * MAX_DEPTH + "}",
        "]" * 40 + "[" * 40,
    ],
)
def test_deep_or_unbalanced_json_is_bad_message(raw: str) -> None:
    with pytest.raises(HubError) as refused:
        check_depth(raw)
    assert refused.value.code == "bad_message"
    with pytest.raises(HubError):
        load(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "ping", "id": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}",
        '["' + "[" * 1000 + '"]',  # brackets in a string are text
        '["\\"' + "{" * 1000 + '"]',
        "[[],[[]],{}]" * 500,
        "",
    ],
)
def test_shallow_json_passes_the_depth_check(raw: str) -> None:
    check_depth(raw)


def test_load_bounds_size_and_syntax() -> None:
    assert load_object(b'{"a": [1, {"b": "c"}]}') == {"a": [1, {"b": "c"}]}
    for raw, code in (
        (b"{", "bad_message"),
        (b"\xff{}", "bad_message"),
        (b"[1]", "bad_message"),
        (b" " * 70_000, "too_large"),
    ):
        with pytest.raises(HubError) as refused:
            load_object(raw)
        assert refused.value.code == code, raw[:10]


async def wyoming_read(raw: bytes, max_payload: int = 1024) -> Any:
    reader = asyncio.StreamReader(limit=64 * 1024 + 1)
    reader.feed_data(raw)
    reader.feed_eof()
    return await read_event(reader, max_payload=max_payload)


def header(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


async def test_wyoming_events_are_read_with_every_bound_checked() -> None:
    event = await wyoming_read(
        header({"type": "audio-chunk", "data": {"rate": 16000}, "data_length": 13, "payload_length": 4})
        + b'{"width": 2}\n'
        + b"\x00\x01\x02\x03"
    )
    assert (
        event.type == "audio-chunk"
        and event.data == {"rate": 16000, "width": 2}
        and event.payload == b"\x00\x01\x02\x03"
    )
    assert await wyoming_read(b"") is None
    for raw, code in (
        (b"[1]\n", "bad_message"),
        (b"{\n", "bad_message"),
        (b"[" * 10_000 + b"\n", "bad_message"),
        (header({"data": {}}), "bad_message"),
        (header({"type": "x", "data": [1]}), "bad_message"),
        (header({"type": "x", "data_length": "12"}), "bad_message"),
        (header({"type": "x", "payload_length": -1}), "bad_message"),
        (header({"type": "x", "payload_length": True}), "bad_message"),
        (header({"type": "x", "payload_length": 1025}), "too_large"),
        (header({"type": "x", "data_length": 70_000}), "too_large"),
        (header({"type": "x", "data_length": 3}) + b"[1]", "bad_message"),
        (b'{"type": "' + b"x" * 70_000 + b'"}\n', "too_large"),
    ):
        with pytest.raises(HubError) as refused:
            await wyoming_read(raw)
        assert refused.value.code == code, raw[:60]
    with pytest.raises(asyncio.IncompleteReadError):  # the peer hung up mid-event
        await wyoming_read(header({"type": "x", "payload_length": 10}) + b"abc")


async def test_a_keep_alive_starts_no_task_whatever_the_session_is_doing() -> None:
    """Deepgram's ``KeepAlive`` restarts the idle clock; it used to start a ``feed(b"")`` task
    per message, which waited with the session while the engine held it back: 1000 keep-alives
    were 1000 tasks (this test fails on that code)."""
    hub = Hub(providers={}, pipeline_factory=build_pipeline)

    async def deliver(_event: Any, _offset: float) -> None:
        return None

    relay = Relay(
        hub,
        transport="deepgram",
        key=None,
        config={"provider": "none"},
        deliver=deliver,
        bytes_per_second=32_000,
    )
    await relay.open()
    before = len(asyncio.all_tasks())
    for _ in range(1000):
        relay.touch()
    assert len(asyncio.all_tasks()) == before
    relay.release()
    await hub.shutdown(0.0)


def test_wyoming_off_loopback_with_keys_needs_the_explicit_flag() -> None:
    from aiohttp import web

    from asrhub.door import Door
    from asrhub.transports.common import SETTINGS, ListenError
    from asrhub.transports.door import DOOR
    from asrhub.transports.listeners import _check_wyoming_address

    def app(**server: Any) -> web.Application:
        settings = Settings(server=msgspec.structs.replace(ServerSettings(wyoming_port=10300), **server))
        application = web.Application()
        application[SETTINGS] = settings
        application[DOOR] = Door.from_settings(settings)
        return application

    _check_wyoming_address(app(wyoming_host="127.0.0.1", api_keys=("k",)))  # loopback: fine
    _check_wyoming_address(app(wyoming_host="0.0.0.0"))  # no keys: nothing to bypass
    with pytest.raises(ListenError, match="wyoming_unauthenticated"):
        _check_wyoming_address(app(wyoming_host="0.0.0.0", api_keys=("k",)))
    _check_wyoming_address(app(wyoming_host="0.0.0.0", api_keys=("k",), wyoming_unauthenticated=True))


async def test_a_handler_bug_is_logged_and_answered_in_the_protocols_shape(caplog: Any) -> None:
    """A handler that raises something unexpected (a fake: routes that raise KeyError) gets the
    contract's ``internal_error`` — 500, in the OpenAI error shape under ``/v1/audio/`` and as
    the hub's ``error`` event elsewhere — and its traceback in the log, not aiohttp's bare text."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from asrhub.door import Door
    from asrhub.transports.door import DOOR, mark_prepared, middleware, register_refusal
    from asrhub.transports.openai_errors import refusal

    async def broken(_request: web.Request) -> web.Response:
        raise KeyError("a bug")

    settings = Settings(server=ServerSettings(api_keys=("k",)))
    app = web.Application(middlewares=[middleware])
    app[DOOR] = Door.from_settings(settings)
    app.on_response_prepare.append(mark_prepared)
    register_refusal(app, "/v1/audio/", refusal)
    app.router.add_post("/v1/audio/transcriptions", broken)
    app.router.add_post("/v1/transcribe", broken)
    async with TestClient(TestServer(app)) as client:
        headers = {"Authorization": "Bearer k"}
        resp = await client.post("/v1/audio/transcriptions", data=b"x", headers=headers)
        body = await resp.json()
        assert resp.status == 500 and body["error"]["type"] == "server_error"
        assert "KeyError" in body["error"]["message"] and "a bug" not in body["error"]["message"]
        resp = await client.post("/v1/transcribe", data=b"x", headers=headers)
        body = await resp.json()
        assert resp.status == 500 and body["type"] == "error" and body["code"] == "internal_error"
        resp = await client.post("/v1/transcribe", data=b"x")  # the door still comes first
        assert resp.status == 401
    failures = [r for r in caplog.records if "request failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info and r.exc_info[0] is KeyError for r in failures)
