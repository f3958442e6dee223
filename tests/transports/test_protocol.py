"""The shared parser/encoder of the wire contract (asrhub.protocol)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asrhub.errors import HubError
from asrhub.frames import EVENT_TYPES, FinalTranscript, SpeechStarted, Word, event_from_dict
from asrhub.protocol import (
    MAX_MESSAGE_BYTES,
    EndMessage,
    PingMessage,
    ResumeMessage,
    StartMessage,
    encode_event,
    event_payload,
    parse_message,
    sse_frame,
)
from asrhub.transports.door import status_of
from asrhub.transports.openai_errors import openai_error


def code_of(raw: Any, **kw: Any) -> str:
    with pytest.raises(HubError) as info:
        parse_message(raw, **kw)
    assert info.value.message
    assert info.value.fatal is False or info.value.code == "too_large"
    return info.value.code


def test_the_three_client_messages() -> None:
    assert parse_message('{"type": "session.start", "config": {"language": "en"}}') == StartMessage(
        config={"language": "en"}
    )
    assert parse_message(b'{"type": "session.start"}') == StartMessage(config=None)
    assert parse_message('{"type": "session.end"}') == EndMessage()
    assert parse_message('{"type": "ping", "id": 7}') == PingMessage(id=7)
    assert parse_message('{"type": "ping"}') == PingMessage(id=None)


@pytest.mark.parametrize(
    "raw",
    [
        '{"action": {"type": "session.start", "payload": {}}}',
        '{"data": {"type": "session.start"}}',
        '{"type": "session.start", "data": {"config": {}}}',
        '{"event": "audio", "payload": "AAAA"}',
    ],
)
def test_wrapped_formats_are_bad_messages(raw: str) -> None:
    assert code_of(raw) == "bad_message"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '"session.start"',
        "null",
        '{"type": 5}',
        '{"config": {}}',
        '{"type": "start"}',
        '{"type": "audio", "audio": "UklGRg=="}',
        '{"type": "session.start", "config": "en"}',
    ],
)
def test_malformed_messages_are_bad_messages(raw: str) -> None:
    assert code_of(raw) == "bad_message"


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"type": "ping", "id": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"type": "session.start", "config": {"prompt": ' + "[" * 10_000 + "]" * 10_000 + "}}",
    ],
    ids=["bare", "in-a-ping", "in-a-config"],
)
def test_json_nested_ten_thousand_deep_is_a_bad_message(raw: str) -> None:
    """Both json.loads and msgspec raise RecursionError on such input: it must come out as the
    contract's bad_message, never as an exception escaping the parser."""
    assert len(raw) < MAX_MESSAGE_BYTES
    assert code_of(raw) == "bad_message"


def test_a_deep_socketio_payload_parses_or_is_a_bad_message() -> None:
    deep = nested(100_000)
    assert parse_message({"id": deep}, event="ping") == PingMessage(id=deep)
    assert code_of({"token": deep}, event="session.resume") == "bad_message"


def test_field_types_are_checked_where_the_message_is_decoded() -> None:
    assert code_of('{"type": "session.start", "resume": 1}') == "bad_message"
    assert code_of('{"type": "session.resume", "token": ""}') == "bad_message"
    assert code_of('{"type": "session.resume", "token": "t", "last_segment_id": true}') == "bad_message"
    assert code_of('{"type": "session.resume", "token": "t", "audio_from_bytes": -1}') == "bad_message"
    assert code_of('{"type": "session.update"}') == "bad_message"
    resumed = parse_message('{"type": "session.resume", "token": "t", "last_segment_id": 3}')
    assert resumed == ResumeMessage(token="t", last_segment_id=3)


def test_oversized_control_message() -> None:
    big = json.dumps({"type": "ping", "id": "x" * MAX_MESSAGE_BYTES})
    assert code_of(big) == "too_large"


def test_socketio_payload_takes_the_event_name() -> None:
    assert parse_message({"config": {"partials": False}}, event="session.start") == StartMessage(
        config={"partials": False}
    )
    assert parse_message(None, event="session.end") == EndMessage()
    assert code_of({"type": "session.end"}, event="session.start") == "bad_message"
    assert code_of({"type": "hello"}, event="hello") == "bad_message"


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_is_a_message_or_a_bad_message(value: Any) -> None:
    raw = json.dumps(value)
    try:
        message = parse_message(raw)
    except HubError as exc:
        assert exc.code == "bad_message"
        return
    assert isinstance(value, dict) and value["type"] in ("session.start", "session.end", "ping")
    assert not {"action", "data", "payload", "event"} & set(value)
    assert isinstance(message, StartMessage | EndMessage | PingMessage)


@given(st.binary(max_size=200))
def test_any_bytes_never_raise_anything_but_hub_errors(raw: bytes) -> None:
    try:
        parse_message(raw)
    except HubError as exc:
        assert exc.code == "bad_message"


def test_events_round_trip_through_every_encoding() -> None:
    import numpy as np

    final = FinalTranscript(
        segment_id=3,
        text="hello there",
        start=np.float32(0.5),
        end=1.25,
        provider="whisper",
        language="en",
        words=(Word("hello", 0.5, 0.8, np.float64(0.9)), Word("there", 0.8, 1.25, 0.8)),
    )
    text = encode_event(final)
    data = json.loads(text)
    assert data["type"] == "transcript.final" and data["start"] == 0.5
    assert event_from_dict(data).to_dict() == data
    assert event_payload(final) == data
    frame = sse_frame(SpeechStarted(t=1.5)).decode()
    assert frame == 'event: vad.speech_started\ndata: {"type":"vad.speech_started","t":1.5}\n\n'
    assert set(EVENT_TYPES) >= {"session.started", "transcript.final", "error", "pong", "session.closed"}


def test_http_statuses_and_openai_error_shape() -> None:
    assert [
        status_of(HubError(c, "x")) for c in ("bad_message", "unauthorized", "too_large", "capacity")
    ] == [
        400,
        401,
        413,
        503,
    ]
    body = openai_error(HubError("too_large", "the file is too big"))
    assert body == {
        "error": {
            "message": "the file is too big",
            "type": "invalid_request_error",
            "param": None,
            "code": "too_large",
        }
    }
    assert openai_error(HubError("capacity", "busy"))["error"]["type"] == "server_error"
