"""A closed HTTP session is freed when it closes, not when its last events stop waiting.

Its events linger (``limits.resume_window_s``, at least 5 s) for a late event-stream subscriber;
the session object — and with it the pipeline's decoder, VAD and buffers — must not. Kept alive
by the linger, every abandoned session's graph outlived it by seconds, and in ``asrhub serve``
the interleaved lifetimes left ~5 KB of Python memory arenas behind per session (the SSE storm
of tests/reliability/test_vanishing.py)."""

from __future__ import annotations

import gc
import weakref

import aiohttp

from asrhub.session.session import Session
from asrhub.transports.sse import SESSIONS

from .conftest import KEY, ServerThread, speech

HEADERS = {"Authorization": f"Bearer {KEY}"}
NONE = {"config": {"provider": "none"}}


def session_ref(server: ServerThread, sid: str) -> weakref.ref[Session]:
    return server.call(lambda: weakref.ref(server.hub.sessions[sid]))


def freed_while_lingering(server: ServerThread, sid: str, ref: weakref.ref[Session]) -> tuple[bool, bool]:
    def check() -> tuple[bool, bool]:
        gc.collect()
        lingering = sid in server.app[SESSIONS]._items
        return lingering, ref() is None

    return server.call(check)


async def test_a_deleted_http_session_is_freed_while_its_events_linger(whisper_server: ServerThread) -> None:
    pcm, _ = speech("quick_fox.wav")
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        async with http.post(whisper_server.http + "/v1/sessions", json=NONE) as r:
            sid = (await r.json())["session_id"]
        ref = session_ref(whisper_server, sid)
        async with http.post(f"{whisper_server.http}/v1/sessions/{sid}/audio", data=pcm[:32000]) as r:
            assert r.status == 204
        async with http.delete(f"{whisper_server.http}/v1/sessions/{sid}") as r:
            assert r.status == 204
    lingering, freed = freed_while_lingering(whisper_server, sid, ref)
    assert lingering, "its events still wait for a subscriber (the test looks inside the linger)"
    assert freed, "the closed session (its pipeline and buffers) is still referenced"


async def test_an_ended_http_session_is_freed_while_its_events_linger(whisper_server: ServerThread) -> None:
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        async with http.post(whisper_server.http + "/v1/sessions", json=NONE) as r:
            sid = (await r.json())["session_id"]
        ref = session_ref(whisper_server, sid)
        async with http.post(f"{whisper_server.http}/v1/sessions/{sid}/end") as r:
            assert r.status == 200
    lingering, freed = freed_while_lingering(whisper_server, sid, ref)
    assert lingering and freed
