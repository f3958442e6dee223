"""Resume anywhere: resumable sessions kept in Redis, so any node can continue them.

Every resumable session (``"resume": true``, raw PCM audio) has a record in Redis, written by
the node that runs it (its *owner*) through the cluster's ordered writer::

    asrhub:resume:<token>      sid, key (hashed), config, owner, epoch, pos, t, seg, evicted, fmt
                               (config: the latest, rewritten on every ``session.update``)
    asrhub:resume:<token>:log  "<segment_id>|<event JSON>" for every final, per-utterance error
                               and terminal event, at most LOG_SIZE utterances (oldest evicted)

``pos`` is the offset in the client's audio byte stream just after the end of the last final
(``t`` the same in stream seconds), ``seg`` the highest segment id logged. Both keys expire
``limits.resume_window_s`` after the owner stops renewing them (it renews while it holds the
session, attached or detached), so a dead node's sessions stay resumable for the window.

A resume that reaches a node which does not hold the token *claims* it (one Lua script): the
epoch goes up, the owner changes, the claim is published on ``asrhub:takeover`` and the record
and log come back. The new owner then opens the session again with the same id, shifted
(:func:`continuation`) so that segment ids continue after ``max(seg, last_segment_id)`` and
stream times from ``resume_from_bytes`` = ``max(pos, audio_from_bytes)``; the client re-sends
its audio from there and the utterance that was in flight is transcribed again. Every append
is fenced by the epoch: a previous owner that is still alive (the client merely reconnected
elsewhere) has its later appends refused and closes its copy when it hears of the takeover —
so each utterance gets exactly one final that counts.

::

    node A: start ─ F1 ─ F2 ─ (in flight: u3) ──X SIGKILL
    Redis:  rec(pos=end(F2), seg=2) log[F1, F2]
    node B:                          claim ─ open(id, seg+2, t+end(F2)) ─ re-sent audio ─ F3 ─ …
    client:                          resume(last=2) ─ resumed(from=pos) ─ re-send ─ F3

Redis unavailable: a resume is answered from this node only (its own sessions); records are
re-created from the node's own state when Redis answers again (:meth:`ClusterResumes.restore_ops`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reactivex import Observable, abc

from asrhub.cluster.leases import Cluster, Done, Op, key_hash, queue_script
from asrhub.errors import HubError
from asrhub.frames import (
    ErrorEvent,
    Event,
    FinalTranscript,
    Frame,
    PartialTranscript,
    SpeechEnded,
    SpeechStarted,
    WakeWordDetected,
    event_from_dict,
    segment_of,
)
from asrhub.plugin import Operator
from asrhub.session.resume import LOG_SIZE, Held, Resumes

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from asrhub.config import SessionConfig

APPEND = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  return 0
end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
local seg = tonumber(ARGV[4])
if seg > tonumber(redis.call('HGET', KEYS[1], 'seg')) then redis.call('HSET', KEYS[1], 'seg', seg) end
local pos = tonumber(ARGV[5])
if pos > tonumber(redis.call('HGET', KEYS[1], 'pos')) then redis.call('HSET', KEYS[1], 'pos', pos) end
while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[7]) do
  local old = redis.call('LPOP', KEYS[2])
  local s = tonumber(string.match(old, '^(-?%d+)|'))
  if s and s > tonumber(redis.call('HGET', KEYS[1], 'evicted')) then
    redis.call('HSET', KEYS[1], 'evicted', s)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""
"""KEYS: record, log; ARGV: node, epoch, entry, seg (-1: none), pos (-1: none), ttl_ms, maxlen.
1 appended; 0 another node owns the session now; -1 no record (Redis lost it)."""

RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 and (redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1]
   or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i]) end
for i = 5 + 2 * n, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1
"""
"""Create or re-create a record this node owns. KEYS: record, log; ARGV: node, epoch, ttl_ms,
n fields, n (name, value) pairs, then the log entries. 0: another node owns it now."""

CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'key') ~= ARGV[1] then
  return false
end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[2])
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
"""
"""KEYS: record, log; ARGV: key hash, node, takeover channel, token. Nil: unknown token or
another key's; else the record's fields (epoch already raised) and its log."""

CHECK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local owner, epoch = redis.call('HGET', KEYS[1], 'owner'), redis.call('HGET', KEYS[1], 'epoch')
if owner == ARGV[1] and epoch == ARGV[2] then
  return 1
end
return 0
"""

RECONFIGURE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'config', ARGV[3])
return 1
"""
"""KEYS: record; ARGV: node, epoch, config JSON. 1 written; 0 another node owns the session now;
-1 no record (Redis lost it: the restore after reconnecting writes the current config)."""

FORGET = """
local owner, epoch = redis.call('HGET', KEYS[1], 'owner'), redis.call('HGET', KEYS[1], 'epoch')
if owner == ARGV[1] and epoch == ARGV[2] then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
"""


@dataclass(slots=True)
class Position:
    """Where a resumable session stands, in the client's byte stream (its cluster record)."""

    bytes_per_second: int
    frame_bytes: int
    pos: int = 0
    """Offset just after the end of the last final."""
    seg: int = 0
    """Highest segment id logged (0: none)."""
    epoch: int = 1

    def offset(self, seconds: float) -> int:
        frames = round(seconds * self.bytes_per_second / self.frame_bytes)
        return max(0, frames * self.frame_bytes)


def pcm_position(config: SessionConfig) -> Position | None:
    """The byte geometry of raw PCM audio; None for an encoding that cannot be cut anywhere."""
    audio = config.audio
    width = {"pcm_s16le": 2, "pcm_f32le": 4}.get(audio.encoding)
    if width is None:
        return None
    frame = width * audio.channels
    return Position(bytes_per_second=frame * audio.sample_rate, frame_bytes=frame)


def _segment_of(event: Event) -> int:
    """:func:`~asrhub.frames.segment_of`, -1 for none (the log entry's prefix is an integer)."""
    seg = segment_of(event)
    return -1 if seg is None else seg


def entry(event: Event) -> str:
    return f"{_segment_of(event)}|{json.dumps(event.to_dict(), separators=(',', ':'))}"


def parse_entry(raw: bytes | str) -> Event:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return event_from_dict(json.loads(text.partition("|")[2]))


# ---------------------------------------------------------------------------------- continuation


def continuation(segment_base: int, time_offset: float) -> Operator:
    """Shift a rebuilt session's events so they continue the original ones: segment ids after
    ``segment_base``, stream times from ``time_offset``. Internal frames pass untouched."""

    def shift(event: Event) -> Event:
        if isinstance(event, FinalTranscript):
            words = event.words
            if words is not None:
                words = tuple(w.shifted(time_offset) for w in words)
            return replace(
                event,
                segment_id=event.segment_id + segment_base,
                start=event.start + time_offset,
                end=event.end + time_offset,
                words=words,
            )
        if isinstance(event, PartialTranscript):
            return replace(
                event,
                segment_id=event.segment_id + segment_base,
                start=event.start + time_offset,
                end=event.end + time_offset,
            )
        if isinstance(event, SpeechStarted | SpeechEnded | WakeWordDetected):
            return replace(event, t=event.t + time_offset)
        if isinstance(event, ErrorEvent) and event.segment_id is not None:
            return replace(event, segment_id=event.segment_id + segment_base)
        return event

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            def on_next(frame: Frame) -> None:
                observer.on_next(shift(frame) if isinstance(frame, Event) else frame)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator


# ---------------------------------------------------------------------------------- records


@dataclass(slots=True)
class Claimed:
    """A session claimed from the cluster log: what the resuming connection needs."""

    session_id: str
    config: dict[str, Any]
    events: list[Event]
    evicted: int
    position: Position


class ClusterResumes:
    """The cluster half of :class:`~asrhub.session.resume.Resumes` (installed as its ``hooks``)."""

    def __init__(self, cluster: Cluster, resumes: Resumes, window_s: float) -> None:
        self.cluster = cluster
        self.resumes = resumes
        self.ttl_ms = int((window_s + cluster.settings.lease_s) * 1000)
        redis = cluster.redis
        self._append = redis.register_script(APPEND)
        self._restore = redis.register_script(RESTORE)
        self._claim = redis.register_script(CLAIM)
        self._check = redis.register_script(CHECK)
        self._reconfigure = redis.register_script(RECONFIGURE)
        self._forget = redis.register_script(FORGET)
        resumes.hooks = self
        cluster.on_restore(self.restore_ops)
        cluster.on_renew(self.renew_ops)
        cluster.on_takeover(self.taken_over)

    def _keys(self, token: str) -> list[str]:
        record = self.cluster.key("resume", token)
        return [record, record + ":log"]

    # ------------------------------------------------------------------ Resumes hooks

    def registered(self, held: Held) -> None:
        """A session became resumable here (new, or claimed from another node)."""
        if held.position is not None:
            self.cluster.writer.put(*self._restore_op(held))

    def recorded(self, held: Held, event: Event) -> None:
        """The session emitted an event its client must not miss: log it in Redis."""
        position = held.position
        if position is None:
            return
        seg = _segment_of(event)
        pos = -1
        if isinstance(event, FinalTranscript):
            pos = position.offset(event.end)
            position.pos = max(position.pos, pos)
        if seg > position.seg:
            position.seg = seg
        keys = self._keys(held.token)
        args = [self.cluster.node, position.epoch, entry(event), seg, pos, self.ttl_ms, LOG_SIZE + 2]

        def done(result: Any) -> None:
            if result == 0:  # another node claimed it: this copy must stop
                self.resumes.surrender(held.token)

        self.cluster.writer.put(lambda pipe: queue_script(pipe, self._append, keys, args), done)

    def reconfigured(self, held: Held, config: dict[str, Any]) -> None:
        """The session took a ``session.update``: a node that rebuilds it from the record (after
        this one died) must rebuild it with the new config, not the one it started with."""
        position = held.position
        if position is None:
            return
        keys = self._keys(held.token)[:1]
        args = [self.cluster.node, position.epoch, json.dumps(config)]

        def done(result: Any) -> None:
            if result == 0:
                self.resumes.surrender(held.token)

        self.cluster.writer.put(lambda pipe: queue_script(pipe, self._reconfigure, keys, args), done)

    def dropped(self, held: Held) -> None:
        """The session is gone here (closed on purpose, expired): delete its record, unless
        another node owns it by now."""
        if held.position is None:
            return
        keys, args = self._keys(held.token), [self.cluster.node, held.position.epoch]
        self.cluster.writer.put(lambda pipe: queue_script(pipe, self._forget, keys, args))

    # ------------------------------------------------------------------ renewal / restore

    def renew_ops(self) -> list[tuple[Op, Done | None]]:
        ops: list[tuple[Op, Done | None]] = []
        for held in self.resumes.all():
            if held.position is not None:
                for key in self._keys(held.token):
                    ops.append((self._expire_op(key), None))
        return ops

    def _expire_op(self, key: str) -> Op:
        def op(pipe: Pipeline) -> None:
            pipe.pexpire(key, self.ttl_ms)

        return op

    def restore_ops(self) -> list[tuple[Op, Done | None]]:
        return [self._restore_op(held) for held in self.resumes.all() if held.position is not None]

    def _restore_op(self, held: Held) -> tuple[Op, Done | None]:
        """Create (or re-create) the record of a session this node owns, from its own state."""
        position = held.position
        assert position is not None
        session = held.session
        fields = {
            "sid": session.id,
            "key": key_hash(held.key),
            "config": json.dumps(session.config.to_dict()),
            "owner": self.cluster.node,
            "epoch": position.epoch,
            "pos": position.pos,
            "seg": position.seg,
            "evicted": held.log.evicted_max or 0,
        }
        pairs: list[Any] = []
        for name, value in fields.items():
            pairs += [name, value]
        entries = [entry(e) for e in held.log.events()]
        keys = self._keys(held.token)
        args = [self.cluster.node, position.epoch, self.ttl_ms, len(fields), *pairs, *entries]

        def done(result: Any) -> None:
            if result == 0:  # another node claimed it meanwhile
                self.resumes.surrender(held.token)

        return (lambda pipe: queue_script(pipe, self._restore, keys, args)), done

    def taken_over(self, token: str, _node: str) -> None:
        self.resumes.surrender(token)

    # ------------------------------------------------------------------ resume

    async def confirm_local(self, held: Held) -> bool:
        """A resume found the session here: is this node still its owner? (True when Redis
        does not answer, or lost the record: the node's own copy is then the truth.)"""
        if held.position is None:
            return True
        try:
            verdict = await self.cluster.call(
                self._check(keys=self._keys(held.token)[:1], args=[self.cluster.node, held.position.epoch])
            )
        except Exception as exc:
            self.cluster.failed(exc)
            return True
        return int(verdict) != 0

    async def claim(self, token: str, key: str | None) -> Claimed | None:
        """Take a session over from the cluster log; None: unknown, expired, another key's, or
        Redis unavailable (then ``resume_failed``: only a node that holds it could resume it)."""
        cluster = self.cluster
        args = [key_hash(key), cluster.node, cluster.key("takeover"), token]
        try:
            found = await cluster.call(self._claim(keys=self._keys(token), args=args))
        except Exception as exc:
            cluster.failed(exc)
            return None
        if not found:
            return None
        raw_fields, raw_log = found
        fields = {_text(raw_fields[i]): _text(raw_fields[i + 1]) for i in range(0, len(raw_fields), 2)}
        try:
            config = json.loads(fields["config"])
            events = [parse_entry(item) for item in raw_log]
            from asrhub.config import parse_session_config

            position = pcm_position(parse_session_config(config))
            if position is None:
                return None
            position.pos, position.seg, position.epoch = (
                int(fields["pos"]),
                int(fields["seg"]),
                int(fields["epoch"]),
            )
            return Claimed(fields["sid"], config, events, int(fields["evicted"]), position)
        except (KeyError, ValueError, TypeError) as exc:
            raise HubError(
                "resume_failed", f"the cluster's record of this session is unreadable: {exc}"
            ) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
