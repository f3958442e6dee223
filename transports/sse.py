"""HTTP streaming sessions with Server-Sent Events.

::

    POST /v1/sessions                 {"config": {…}}  → 201 {"session_id", "config"}
    POST /v1/sessions/{id}/audio      binary body      → 204 once the session can take more
    POST /v1/sessions/{id}/end        flush            → 200 {"session_id", "reason"} after the flush
    POST /v1/sessions/{id}/update     {"config": {…}}  → 200 {"session_id", "config"}  (extension:
                                      live reconfiguration; ``session.updated`` also on the stream)
    DELETE /v1/sessions/{id}          drop now         → 204                         (extension)
    GET  /v1/sessions/{id}/events     text/event-stream: ``event: <type>`` / ``data: <json>``

The session's :class:`~asrhub.session.delivery.EventQueue` is subscribed when the session is created,
so nothing is lost before the event stream connects: the queue keeps (up to its bound) whatever
happened in between, and keeps it again if the stream drops and reconnects (the event whose write
failed is sent first on the next stream). One subscriber at a
time (a second one gets 409, unless the first one's client has already hung up: then the new one
takes over at once). Each subscriber first gets ``session.started``; the stream ends
after ``session.closed``; ``: keep-alive`` comments flow every ``server.heartbeat_s``. The
session lives until ``end``, ``DELETE``, an idle timeout (no audio for ``limits.idle_timeout_s``)
or a queue overflow (``slow_consumer``). A closed session's last events wait
``limits.resume_window_s`` for a subscriber, then are forgotten.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from reactivex.abc import DisposableBase

from asrhub.errors import HubError
from asrhub.frames import Event, SessionStarted
from asrhub.protocol import StartMessage, UpdateMessage, parse_message, sse_frame
from asrhub.session.delivery import EventQueue

from .common import HUB, KEY_ID, SETTINGS, HTTPHubError, read_limited, reset
from .json_input import MAX_BYTES, check_depth
from .worker_routes import PEERS

MIN_LINGER_S = 5.0


@dataclass(eq=False)
class HttpSession:
    session_id: str
    key: str | None
    queue: EventQueue
    started: bytes
    """The ``session.started`` frame every subscriber gets first, encoded once: a record lingers
    after its session closed, so it holds bytes, not the config's dicts."""
    watch: DisposableBase | None = None
    subscriber: asyncio.Task[Any] | None = None
    linger: asyncio.TimerHandle | None = None
    transport: Any = field(default=None, repr=False)
    unsent: Event | None = None
    """Taken from the queue, but its stream dropped while writing it: the next subscriber's first."""


class HttpSessions:
    """The HTTP sessions of one app: at most the hub's open sessions plus recently closed ones
    whose last events wait for their subscriber."""

    def __init__(self, linger_s: float) -> None:
        self.linger_s = linger_s
        self._items: dict[str, HttpSession] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, rec: HttpSession) -> None:
        self._items[rec.session_id] = rec

    def find(self, session_id: str, key: str | None) -> HttpSession:
        rec = self._items.get(session_id)
        if rec is None or rec.key != key:  # another key's session does not exist for you
            message = f"no session {session_id!r} (it ended or never existed)"
            raise HTTPHubError("bad_message", message, status=404)
        return rec

    def forget(self, rec: HttpSession) -> None:
        if self._items.get(rec.session_id) is rec:
            del self._items[rec.session_id]
        if rec.linger is not None:
            rec.linger.cancel()
        if rec.watch is not None:
            rec.watch.dispose()
        rec.queue.close()

    def closed(self, rec: HttpSession) -> None:
        """The session ended: its events wait a while for a subscriber, then go.

        Only the events wait: the watch's callbacks hold the session (and through it the whole
        pipeline — decoder, VAD, buffers). Dropped here, the closed session is freed now, not
        ``linger_s`` later; kept, every abandoned session's graph outlived it by the linger and
        the interleaved lifetimes left ~5 KB of Python arenas behind per session."""
        rec.watch = None  # already disposed: it completed
        loop = asyncio.get_running_loop()
        rec.linger = loop.call_later(self.linger_s, self._expire, rec)

    def _expire(self, rec: HttpSession) -> None:
        if rec.subscriber is None:
            self.forget(rec)
        else:  # a stream is still attached (it may drop before the end): look again later
            rec.linger = asyncio.get_running_loop().call_later(self.linger_s, self._expire, rec)


SESSIONS = web.AppKey("http_sessions", HttpSessions)


async def create(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = await read_limited(request, MAX_BYTES, "session request")
    check_depth(body)
    message = parse_message(body or b"{}", event=StartMessage.type)
    assert isinstance(message, StartMessage)
    peers = request.app.get(PEERS)  # --workers: the id names this worker (its requests come here)
    session_id = peers.new_id() if peers is not None else None
    session = await hub.open_async(
        message.config, key=request[KEY_ID], transport="sse", session_id=session_id
    )
    sessions = request.app[SESSIONS]
    started = SessionStarted(session_id=session.id, config=session.config.to_dict())
    rec = HttpSession(
        session_id=session.id,
        key=request[KEY_ID],
        queue=session.queue(hub.limits.subscriber_queue),
        started=sse_frame(started),
    )

    def after_event(_event: Event) -> None:
        if rec.queue.overflowed and not session.closed:
            session.close("slow_consumer")  # nobody reads: stop producing
            reset(rec.transport)

    rec.watch = session.events.subscribe(on_next=after_event, on_completed=lambda: sessions.closed(rec))
    sessions.add(rec)
    return web.json_response(
        {"session_id": session.id, "config": started.config},
        status=201,
        headers={"Location": f"/v1/sessions/{session.id}"},
    )


async def audio(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    rec = request.app[SESSIONS].find(request.match_info["session_id"], request[KEY_ID])
    data = await read_limited(request, hub.limits.max_frame_bytes, "audio frame")
    session = hub.get(rec.session_id)
    if session is None:
        raise HTTPHubError("bad_message", "the session has ended", status=409)
    try:
        await session.feed(data)
    except HubError as exc:
        if exc.code == "bad_message":
            raise HTTPHubError(exc.code, exc.message, status=409) from None
        raise
    return web.Response(status=204)


async def end(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    rec = request.app[SESSIONS].find(request.match_info["session_id"], request[KEY_ID])
    session = hub.get(rec.session_id)
    reason = await session.end() if session is not None else "closed"
    return web.json_response({"session_id": rec.session_id, "reason": reason})


async def update(request: web.Request) -> web.Response:
    """``session.update`` over HTTP: the body is ``{"config": {…}}`` (``"type"`` optional)."""
    hub = request.app[HUB]
    rec = request.app[SESSIONS].find(request.match_info["session_id"], request[KEY_ID])
    body = await read_limited(request, MAX_BYTES, "update request")
    check_depth(body)
    message = parse_message(body or b"{}", event=UpdateMessage.type)
    assert isinstance(message, UpdateMessage)
    session = hub.get(rec.session_id)
    if session is None:
        raise HTTPHubError("bad_message", "the session has ended", status=409)
    config = hub.update(session, message.config)
    return web.json_response({"session_id": rec.session_id, "config": config.to_dict()})


async def delete(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    rec = request.app[SESSIONS].find(request.match_info["session_id"], request[KEY_ID])
    session = hub.get(rec.session_id)
    if session is not None:
        session.close("closed")
    return web.Response(status=204)


async def events(request: web.Request) -> web.StreamResponse:
    sessions, settings = request.app[SESSIONS], request.app[SETTINGS]
    rec = sessions.find(request.match_info["session_id"], request[KEY_ID])
    previous = rec.subscriber
    if previous is not None:
        if rec.transport is not None and not rec.transport.is_closing():
            message = "this session's event stream already has a subscriber"
            raise HTTPHubError("bad_message", message, status=409)
        # Its client is gone but the stream has not written since (it learns on its next write,
        # up to a keep-alive later): a reconnecting client takes over now instead of a 409.
        previous.cancel()
        await asyncio.wait([previous])
    rec.subscriber = asyncio.current_task()
    rec.transport = request.transport
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        await resp.write(rec.started)
        keepalive = settings.server.heartbeat_s
        while True:
            event, rec.unsent = rec.unsent, None
            if event is None:
                try:
                    event = await asyncio.wait_for(rec.queue.get(), keepalive)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
            try:
                await resp.write(sse_frame(event))
            except (ConnectionError, asyncio.CancelledError):
                rec.unsent = event
                raise
        sessions.forget(rec)  # session.closed was delivered
        await resp.write_eof()
        return resp
    except ConnectionError:  # the client went away (it may come back): no traceback
        return resp
    finally:
        if rec.subscriber is asyncio.current_task():
            rec.subscriber = None
            rec.transport = None


def setup(app: web.Application) -> None:
    limits = app[HUB].limits
    app[SESSIONS] = HttpSessions(linger_s=max(MIN_LINGER_S, limits.resume_window_s))
    app.router.add_post("/v1/sessions", create)
    app.router.add_post("/v1/sessions/{session_id}/audio", audio)
    app.router.add_post("/v1/sessions/{session_id}/end", end)
    app.router.add_post("/v1/sessions/{session_id}/update", update)
    app.router.add_delete("/v1/sessions/{session_id}", delete)
    app.router.add_get("/v1/sessions/{session_id}/events", events)
