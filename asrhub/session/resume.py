"""Resumable streaming sessions (a protocol extension, see docs/protocol.md, "Extensions").

A client that opens its session with ``{"type": "session.start", …, "resume": true}`` gets a
``resume_token`` in ``session.started``. If its connection then *drops* — no WebSocket close
frame, no Socket.io disconnect packet: a reset, a vanished network, a missed heartbeat — the
session is **detached**, not closed: it keeps running (utterances already received still get
their finals; no audio arrives, and the idle timeout still applies) for
``limits.resume_window_s``. A new connection that sends
``{"type": "session.resume", "token": …, "last_segment_id": N}`` gets ``session.resumed``, then
every final (or per-utterance error) with a ``segment_id`` above ``N`` that the session emitted,
in order, then the session's live events, and may stream audio again. A connection closed on
purpose (a close frame, ``session.end`` delivered, a fatal error) closes its session at once, as
without resume.

::

    conn 1:  start(resume) ─ started(token) ─ audio ─ F1 ─ F2 ──X (drop; F2 never arrived)
    session: ─────────────────────────────────── F1 ─ F2 ─ F3 ───────── F4 ──▶ (detached: F3 logged)
    conn 2:                                          resume(token, 1) ─ resumed ─ F2 ─ F3 ─ audio ─ F4

What a session keeps for that (:class:`ResumeLog`): the events a client must not miss — every
``transcript.final``, every ``error`` that names a ``segment_id`` (the utterance it replaced),
and the terminal ones (a fatal ``error``, ``session.closed``). Partials, VAD and wake-word
events are not kept (they are superseded, or only meaningful live). The log holds at most
:data:`LOG_SIZE` utterance events: at the bound the oldest is evicted, and a resume that asks
for an evicted one gets ``"complete": false`` in ``session.resumed`` (the finals still held are
replayed). A resume also acknowledges: what the client says it has (``<= last_segment_id``) is
dropped from the log.

A draining hub with a cluster hands its sessions over (:meth:`Resumes.hand_over`): each
connection delivers what it had queued, then ``session.handover``, and closes; the session stays
open here — its utterance in flight not finalized — until another node claims it.

Everything here runs on the event loop thread; no method awaits, so two connections racing to
resume the same token cannot both win: the second one takes the session over from the first.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from asrhub.frames import ErrorEvent, Event, SessionClosed, SessionHandover, SessionUpdated, segment_of
from asrhub.session.session import Session, State

if TYPE_CHECKING:
    from reactivex.abc import DisposableBase

LOG_SIZE = 32
"""Utterance events (finals, per-utterance errors) a resumable session keeps for its client. A
client misses at most what was in flight when its connection dropped plus what the session
finished while detached (no audio arrives then: at most ``limits.max_pending_segments`` + 1)."""


TOKEN_BYTES = 24
TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{32}")
"""A resume token: ``TOKEN_BYTES`` random bytes, URL-safe base64 without padding (32 characters).
Anything else is not a token this hub issued (the cluster checks it before building a key)."""


def valid_token(token: str) -> bool:
    return TOKEN_FORMAT.fullmatch(token) is not None


class Owner(Protocol):
    """The connection currently delivering a held session's events."""

    def handed_over(self) -> None:
        """Another connection resumed the session: stop delivering it and close, leaving it open."""

    def hand_off(self, notice: SessionHandover) -> bool:
        """The hub drains: deliver what is queued, then ``notice``, then close, leaving the
        session open for a resume on another node. False: the connection is ending the session
        anyway (``session.end`` came, or it is closing): the hub flushes it instead."""


class ResumeLog:
    """The events of one session that its client must receive, in emission order (bounded)."""

    __slots__ = ("_items", "evicted_max", "maxlen")

    def __init__(self, maxlen: int = LOG_SIZE) -> None:
        self.maxlen = maxlen
        self._items: deque[Event] = deque()
        self.evicted_max: int | None = None
        """The highest segment id evicted at the bound (None: nothing was)."""

    def __len__(self) -> int:
        return len(self._items)

    def record(self, event: Event) -> bool:
        """Keep ``event`` if a client must not miss it (returns whether it was kept)."""
        if segment_of(event) is not None:
            if len(self._items) >= self.maxlen:
                self._evict()
            self._items.append(event)
            return True
        if isinstance(event, SessionClosed) or (isinstance(event, ErrorEvent) and event.fatal):
            self._items.append(event)  # at most two, once: the session's last events
            return True
        return False

    def _evict(self) -> None:
        for i, old in enumerate(self._items):
            seg = segment_of(old)
            if seg is not None:
                del self._items[i]
                self.evicted_max = seg if self.evicted_max is None else max(self.evicted_max, seg)
                return

    def since(self, last_segment_id: int | None) -> tuple[list[Event], bool]:
        """The events a client that has every utterance up to ``last_segment_id`` (None: none)
        still needs, and whether the log still holds all of them."""
        missed = [e for e in self._items if after_segment(e, last_segment_id)]
        evicted = self.evicted_max
        complete = evicted is None or (last_segment_id is not None and last_segment_id >= evicted)
        return missed, complete

    def events(self) -> list[Event]:
        return list(self._items)

    def ack(self, last_segment_id: int | None) -> None:
        """The client has every utterance up to ``last_segment_id``: forget those."""
        if last_segment_id is not None:
            self._items = deque(e for e in self._items if after_segment(e, last_segment_id))


def after_segment(event: Event, last_segment_id: int | None) -> bool:
    """Whether a client that has every utterance up to ``last_segment_id`` still needs ``event``."""
    seg = segment_of(event)
    return seg is None or last_segment_id is None or seg > last_segment_id


@dataclass(eq=False)
class Held:
    """One resumable session: its token, its log and who delivers it now (None: detached)."""

    token: str
    session: Session
    key: str | None
    log: ResumeLog
    owner: Owner | None
    subscription: DisposableBase | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    position: Any = None
    """Cluster only (:class:`asrhub.cluster.resume.Position`): the record's byte position and
    epoch; None for a session kept on this process only."""


class Hooks(Protocol):
    """The cluster side (:class:`asrhub.cluster.resume.ClusterResumes`), when configured."""

    def registered(self, held: Held) -> None: ...
    def recorded(self, held: Held, event: Event) -> None: ...
    def reconfigured(self, held: Held, config: dict[str, Any]) -> None: ...
    def dropped(self, held: Held) -> None: ...


class Resumes:
    """The resumable sessions of one hub, by token. At most the open sessions plus those that
    closed or were detached within the last ``window_s``."""

    def __init__(self, window_s: float, *, log_size: int = LOG_SIZE) -> None:
        self.window_s = window_s
        self.log_size = log_size
        self._held: dict[str, Held] = {}
        self.hooks: Hooks | None = None
        self._moving: set[str] = set()
        """Tokens of the sessions handed over (:meth:`hand_over`) and still here."""
        self._moved: asyncio.Event | None = None

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    @property
    def moving(self) -> int:
        """How many sessions handed over (:meth:`hand_over`) no node has claimed yet."""
        return len(self._moving)

    def __len__(self) -> int:
        return len(self._held)

    @property
    def detached(self) -> int:
        return sum(1 for held in self._held.values() if held.owner is None)

    def register(
        self,
        session: Session,
        key: str | None,
        owner: Owner,
        *,
        token: str | None = None,
        position: Any = None,
        history: list[Event] | None = None,
    ) -> Held:
        """Make ``session`` resumable; its log starts now (subscribe it after the owner's queue,
        which must be the session's first subscriber). ``token``, ``position`` and ``history``:
        a session claimed from the cluster keeps its token, record position and logged events."""
        log = ResumeLog(self.log_size)
        for event in history or ():
            log.record(event)
        held = Held(token or secrets.token_urlsafe(TOKEN_BYTES), session, key, log, owner, position=position)
        hooks = self.hooks
        if hooks is not None and position is not None:

            def record(event: Event) -> None:
                if log.record(event):
                    hooks.recorded(held, event)
                elif isinstance(event, SessionUpdated):  # a node that rebuilds it must use this
                    hooks.reconfigured(held, event.config)

            held.subscription = session.events.subscribe(on_next=record)
            hooks.registered(held)
        else:

            def keep(event: Event) -> None:
                log.record(event)

            held.subscription = session.events.subscribe(on_next=keep)
        self._held[held.token] = held
        return held

    def get(self, token: str) -> Held | None:
        return self._held.get(token)

    def all(self) -> list[Held]:
        return list(self._held.values())

    def surrender(self, token: str) -> None:
        """Another node claimed this session (the cluster): stop it here, tell its connection."""
        held = self._held.get(token)
        if held is None:
            return
        owner, held.owner = held.owner, None
        held.position = None  # its record is the other node's now: never touch it again
        self._drop(held)
        if owner is not None:
            owner.handed_over()
        held.session.close("resumed")

    def claim(self, token: str, key: str | None, owner: Owner) -> tuple[Held, Owner | None] | None:
        """Hand the session of ``token`` to ``owner``. Returns it and the connection that had it
        (to be told :meth:`Owner.handed_over`), or None: unknown, expired, or another key's."""
        held = self._held.get(token)
        if held is None or held.key != key:
            return None
        previous, held.owner = held.owner, owner
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        return held, (previous if previous is not owner else None)

    def detach(self, held: Held, owner: Owner) -> None:
        """``owner``'s connection dropped: keep the session for the window."""
        if held.owner is not owner or self._held.get(held.token) is not held:
            return
        held.owner = None
        held.timer = asyncio.get_running_loop().call_later(self.window_s, self._expire, held)

    def forget(self, held: Held, owner: Owner | None) -> None:
        """``owner`` is done with the session (closed on purpose): drop its token."""
        if held.owner is owner:
            self._drop(held)

    def hand_over(self) -> list[Held]:
        """A graceful shutdown, when another node can continue the sessions (the cluster keeps
        their records): every open session with a cluster record is handed over — its
        connection, if any, delivers what is queued, tells its client to resume elsewhere
        (:class:`~asrhub.frames.SessionHandover`) and closes; the session stays here, open, its
        utterance in flight not finalized, its idle timeout stopped. Each goes the moment
        another node claims it (:meth:`surrender`), when its resume window ends (as for a
        dropped connection), or when the hub lets go (:meth:`let_go`). Returns them; the
        others (no record: compressed audio, no cluster; or ending) are left to the flush."""
        moved = []
        for held in list(self._held.values()):
            session, position = held.session, held.position
            if position is None or session.state is not State.OPEN:
                continue
            seg = int(position.seg)
            notice = SessionHandover(
                session_id=session.id,
                resume_token=held.token,
                last_segment_id=seg or None,
                resume_from_bytes=int(position.pos),
            )
            owner = held.owner
            if owner is not None:
                if not owner.hand_off(notice):
                    continue
                self.detach(held, owner)
            session.suspend_idle()
            self._moving.add(held.token)
            moved.append(held)
        return moved

    async def wait_moved(self) -> None:
        """Returns once every session handed over has gone from here (claimed elsewhere,
        expired, or let go)."""
        if not self._moving:
            return
        if self._moved is None:
            self._moved = asyncio.Event()
        await self._moved.wait()

    def let_go(self) -> None:
        """The hub stops with sessions handed over and not yet claimed: close them here without
        ending them in the cluster — their records stay resumable on any node until they
        expire (``resume_window_s`` + ``lease_s`` after the last renewal)."""
        for token in list(self._moving):
            held = self._held.get(token)
            if held is None:
                self._moving.discard(token)
                continue
            held.position = None  # no tombstone: the record is for the node that resumes it
            self._drop(held)
            held.session.close("handover")

    def _expire(self, held: Held) -> None:
        held.timer = None
        if held.owner is None:
            held.session.close("disconnected")
            self._drop(held)

    def _drop(self, held: Held) -> None:
        if self._held.get(held.token) is held:
            del self._held[held.token]
            if self.hooks is not None and held.position is not None:
                self.hooks.dropped(held)
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        if held.subscription is not None:
            held.subscription.dispose()
            held.subscription = None
        if held.token in self._moving:
            self._moving.discard(held.token)
            if not self._moving and self._moved is not None:
                self._moved.set()

    def clear(self) -> None:
        """Hub shutdown: close the detached sessions, forget every token."""
        for held in list(self._held.values()):
            if held.owner is None:
                held.session.close("shutdown")
            self._drop(held)
