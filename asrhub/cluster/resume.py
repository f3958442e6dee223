"""Resume anywhere: resumable sessions kept in Redis, so any node can continue them.

Every resumable session (``"resume": true``, raw PCM audio) has a record in Redis, written by
the node that runs it (its *owner*) through the cluster's ordered writer::

    asrhub:resume:<token>      sid, key (hashed), config, owner, epoch, pos, seg, evicted,
                               trace (the session span's traceparent, for the ``resume`` span),
                               spk (a ``diarize`` session's speaker trackers, "" for none:
                               :class:`~asrhub.diarize.tracker.SpeakerMemory`)
                               (config: the latest, rewritten after ``session.update``s)
                               or, once the session ended, a tombstone: gone, epoch, owner
    asrhub:resume:<token>:log  "<segment_id>|<event JSON>" for every final, per-utterance error
                               and terminal event, at most LOG_SIZE utterances (oldest evicted)

``<token>`` is checked against the format this hub issues (:data:`~asrhub.session.resume.TOKEN_FORMAT`)
before it is put in a key name. ``pos`` is the offset in the client's audio byte stream just
after the end of the last final, ``seg`` the highest segment id logged. Both keys expire
``limits.resume_window_s + cluster.lease_s`` after the owner stops renewing them (it renews while
it holds the session, attached or detached), so a dead node's sessions stay resumable for the
window; a tombstone lasts as long.

A resume that reaches a node which does not hold the token *claims* it (one Lua script): the
epoch goes up, the owner changes, the claim is published on ``asrhub:takeover`` and the record
and log come back. The new owner then opens the session again with the same id, shifted
(:func:`continuation`) so that segment ids continue after ``max(seg, last_segment_id)`` and
stream times from ``resume_from_bytes`` = ``max(pos, audio_from_bytes)``, its live speaker
labels from ``spk`` (written with each final that changed it, like ``seg`` and ``pos``); the
client re-sends its audio from there and the utterance that was in flight is transcribed again.

Fencing (:data:`FENCE`): every write carries the writer's epoch, and the higher epoch wins — an
append, a config rewrite or a restore from a node whose epoch is lower than the record's, or
equal to it but another node's, is refused, and that node closes its copy. A claim raises the
epoch to Redis's clock (ms), so even after Redis lost everything a later claim outranks an
earlier one. A node re-creates a record that is missing or older than its own copy (Redis
restarted empty; a stale node re-created it first). Ending a session leaves a tombstone with its
epoch, which no restore at that epoch or below and no claim gets past. Pub/sub is lossy, so
the takeover message is only the fast path: each renewal (``lease_s / 3``) checks every record
a node holds, and a node that missed a takeover lets its copy go then. A record a node had to
re-create is provisional for :attr:`ClusterResumes.settle_s`: a resume reaching it waits that
long (every node with a copy has re-created its own by then) and asks Redis again. So a stale
copy does not answer a resume while the owner reaches Redis, and each utterance gets exactly
one final that counts.

::

    node A: start ─ F1 ─ F2 ─ (in flight: u3) ──X SIGKILL
    Redis:  rec(pos=end(F2), seg=2) log[F1, F2]
    node B:                          claim ─ open(id, seg+2, t+end(F2)) ─ re-sent audio ─ F3 ─ …
    client:                          resume(last=2) ─ resumed(from=pos) ─ re-send ─ F3

Redis unavailable: a resume is answered from this node only (its own sessions); records are
re-created from the node's own state when Redis answers again (:meth:`ClusterResumes.restore_ops`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reactivex import Observable, abc

from asrhub.cluster.leases import Cluster, Done, Op, key_hash, queue_script
from asrhub.diarize.tracker import SpeakerMemory
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
from asrhub.session.resume import LOG_SIZE, Held, Resumes, valid_token
from asrhub.telemetry import traceparent

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from asrhub.config import SessionConfig

FENCE = """
local function fence(key, node, epoch)
  local f = redis.call('HMGET', key, 'owner', 'epoch', 'gone')
  if not f[2] then return -1 end
  local stored = tonumber(f[2])
  if stored > epoch then return 0 end
  if stored < epoch then return -1 end
  if f[1] == node and not f[3] then return 1 end
  return 0
end
"""
"""The fencing rule every write of a session's record goes through (prepended to each script).
``fence(record, node, epoch)``: 1 the record is this writer's (same owner, same epoch); 0 the
writer is fenced off — a higher epoch, a tombstone at the same epoch or higher, or the same
epoch held by another node (the record that is there wins a tie); -1 no record, or an older
epoch than the writer's (Redis lost it, or a stale node re-created it): the writer re-creates
it from its own copy."""

APPEND = (
    FENCE
    + """
local v = fence(KEYS[1], ARGV[1], tonumber(ARGV[2]))
if v ~= 1 then return v end
redis.call('RPUSH', KEYS[2], ARGV[3])
local seg = tonumber(ARGV[4])
if seg > tonumber(redis.call('HGET', KEYS[1], 'seg')) then redis.call('HSET', KEYS[1], 'seg', seg) end
local pos = tonumber(ARGV[5])
if pos > tonumber(redis.call('HGET', KEYS[1], 'pos')) then redis.call('HSET', KEYS[1], 'pos', pos) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'spk', ARGV[8]) end
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
)
"""KEYS: record, log; ARGV: node, epoch, entry, seg (-1: none), pos (-1: none), ttl_ms, maxlen,
spk (the speaker trackers' state; "": unchanged).
1 appended; 0 fenced (another node owns the session now, or it was forgotten); -1 no record or
an older one (the writer re-creates it: its restore carries this entry)."""

RESTORE = (
    FENCE
    + """
local v = fence(KEYS[1], ARGV[1], tonumber(ARGV[2]))
if v == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i]) end
for i = 5 + 2 * n, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
if v == 1 then return 1 end
return 2
"""
)
"""Create or re-create a record this node owns: the higher epoch wins. KEYS: record, log; ARGV:
node, epoch, ttl_ms, n fields, n (name, value) pairs, then the log entries. 1 rewritten (it was
this node's); 2 re-created over nothing or over an older epoch; 0 fenced (a higher epoch or a
tombstone is there: another node owns the session, or it ended)."""

CLAIM = """
local f = redis.call('HMGET', KEYS[1], 'key', 'epoch', 'gone')
if not f[2] or f[3] or f[1] ~= ARGV[1] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = math.max(tonumber(f[2]) + 1, now)
redis.call('HSET', KEYS[1], 'epoch', string.format('%d', epoch), 'owner', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. ARGV[2])
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
"""
"""KEYS: record, log; ARGV: key hash, node, takeover channel, token. Nil: unknown token, a
tombstone (the session ended) or another key's; else the record's fields (the epoch already
raised: to Redis's clock in ms, or one more if that is not higher, so a claim made after Redis
lost everything still outranks every epoch given out before) and its log."""

CHECK = (
    FENCE
    + """
return fence(KEYS[1], ARGV[1], tonumber(ARGV[2]))
"""
)
"""KEYS: record; ARGV: node, epoch. The :data:`FENCE` verdict."""

RENEW = (
    FENCE
    + """
local out = {}
for i = 4, #ARGV, 2 do
  local record = ARGV[1] .. ARGV[i]
  local v = fence(record, ARGV[2], tonumber(ARGV[i + 1]))
  if v == 1 then
    redis.call('PEXPIRE', record, ARGV[3])
    redis.call('PEXPIRE', record .. ':log', ARGV[3])
  end
  out[#out + 1] = v
end
return out
"""
)
"""Every renewal: extend the records this node holds, and tell it which are not its own any
more. ARGV: record key prefix, node, ttl_ms, then (token, epoch) pairs. One verdict per token."""

RECONFIGURE = (
    FENCE
    + """
local v = fence(KEYS[1], ARGV[1], tonumber(ARGV[2]))
if v ~= 1 then return v end
redis.call('HSET', KEYS[1], 'config', ARGV[3])
return 1
"""
)
"""KEYS: record; ARGV: node, epoch, config JSON. 1 written; 0 fenced; -1 no record or an older
one (the writer re-creates it, with the current config)."""

FORGET = (
    FENCE
    + """
local v = fence(KEYS[1], ARGV[1], tonumber(ARGV[2]))
if v == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'gone', '1', 'epoch', ARGV[2], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)
"""The session ended here: its record becomes a tombstone (``gone``, the epoch, the owner) for
ttl_ms, so a stale node cannot bring it back, nor a client resume it elsewhere. KEYS: record,
log; ARGV: node, epoch, ttl_ms. 0: another node owns it (nothing written)."""

RENEW_CHUNK = 500
"""Records checked by one renewal script call (a few ms of Redis time at most)."""


@dataclass(slots=True)
class Position:
    """Where a resumable session stands, in the client's byte stream (its cluster record), and
    this node's bookkeeping of that record."""

    bytes_per_second: int
    frame_bytes: int
    pos: int = 0
    """Offset just after the end of the last final."""
    seg: int = 0
    """Highest segment id logged (0: none)."""
    epoch: int = 1
    """The fencing epoch this node writes with (1 for a new session; a claim raises it)."""
    provisional_until: float = 0.0
    """Loop time until which the record this node re-created (Redis had lost it, or held an
    older epoch) is not yet proof of ownership: a node with a higher epoch may still re-create
    its own (see :meth:`ClusterResumes.confirm_local`)."""
    config: dict[str, Any] | None = None
    """The latest ``session.update`` config not yet written (coalesced, see ``reconfigured``)."""
    config_queued: bool = False
    restore_queued: bool = False

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
    trace: str = ""
    """The ``traceparent`` of the session's span on the node that ran it ("": not traced)."""
    speakers: SpeakerMemory | None = None
    """A ``diarize`` session's speaker trackers as the record left them (None: none)."""


class ClusterResumes:
    """The cluster half of :class:`~asrhub.session.resume.Resumes` (installed as its ``hooks``).

    Fencing, in short (docs/cluster.md, "Fencing"): every write carries the writer's epoch and
    goes through :data:`FENCE`; the higher epoch wins, a tie goes to the record already there;
    an ended session leaves a tombstone for ``resume_window_s + lease_s``; each renewal
    (``lease_s / 3``) checks every record this node holds, so a node that missed a takeover
    message lets its copy go within one renewal; a record this node had to re-create is
    provisional for :attr:`settle_s`."""

    def __init__(self, cluster: Cluster, resumes: Resumes, window_s: float) -> None:
        self.cluster = cluster
        self.resumes = resumes
        self.ttl_ms = int((window_s + cluster.settings.lease_s) * 1000)
        """How long a record outlives its last renewal, and how long a tombstone lasts."""
        settings = cluster.settings
        self.settle_s = settings.lease_s / 3 + 2 * settings.redis_timeout_s
        """A renewal period and two round trips: by then every live node that holds a copy of a
        session whose record Redis lost has re-created it (the higher epoch winning)."""
        redis = cluster.redis
        self._append = redis.register_script(APPEND)
        self._restore = redis.register_script(RESTORE)
        self._claim = redis.register_script(CLAIM)
        self._check = redis.register_script(CHECK)
        self._renew = redis.register_script(RENEW)
        self._reconfigure = redis.register_script(RECONFIGURE)
        self._forget = redis.register_script(FORGET)
        resumes.hooks = self
        cluster.on_restore(self.restore_ops)
        cluster.on_renew(self.renew_ops)
        cluster.on_takeover(self.taken_over)

    def _keys(self, token: str) -> list[str]:
        record = self.cluster.key("resume", token)
        return [record, record + ":log"]

    def _verdict(self, held: Held, result: Any, *, fenced_only: bool = False) -> None:
        """Act on a fenced write's answer: 0 this copy must stop; -1 re-create the record."""
        if held.position is None or isinstance(result, BaseException):
            return
        if result == 0:
            self.resumes.surrender(held.token)
        elif result == -1 and not fenced_only:
            self._queue_restore(held)

    # ------------------------------------------------------------------ Resumes hooks

    def registered(self, held: Held) -> None:
        """A session became resumable here (new, or claimed from another node)."""
        if held.position is not None:
            self._queue_restore(held, fresh=True)

    def recorded(self, held: Held, event: Event) -> None:
        """The session emitted an event its client must not miss: log it in Redis."""
        position = held.position
        if position is None:
            return
        seg = _segment_of(event)
        pos = -1
        speakers = ""
        if isinstance(event, FinalTranscript):
            pos = position.offset(event.end)
            position.pos = max(position.pos, pos)
            memory = held.session.ctx.speakers
            if memory.changed():  # the final's labels went into the trackers
                speakers = memory.encode()
        if seg > position.seg:
            position.seg = seg
        keys = self._keys(held.token)
        args = [
            self.cluster.node,
            position.epoch,
            entry(event),
            seg,
            pos,
            self.ttl_ms,
            LOG_SIZE + 2,
            speakers,
        ]
        self.cluster.writer.put(
            lambda pipe: queue_script(pipe, self._append, keys, args), lambda r: self._verdict(held, r)
        )

    def reconfigured(self, held: Held, config: dict[str, Any]) -> None:
        """The session took a ``session.update``: a node that rebuilds it from the record (after
        this one died) must rebuild it with the new config, not the one it started with.

        Coalesced: at most one rewrite per session waits in the writer's queue; a burst of
        updates replaces its config (the latest wins) until the writer takes it."""
        position = held.position
        if position is None:
            return
        position.config = config
        if position.config_queued:
            return
        position.config_queued = True
        keys = self._keys(held.token)[:1]

        def op(pipe: Pipeline) -> None:
            position.config_queued = False
            args = [self.cluster.node, position.epoch, json.dumps(position.config)]
            queue_script(pipe, self._reconfigure, keys, args)

        self.cluster.writer.put(op, lambda r: self._verdict(held, r))

    def dropped(self, held: Held) -> None:
        """The session is gone here (closed on purpose, expired): its record becomes a
        tombstone, unless another node owns it by now."""
        if held.position is None:
            return
        keys, args = self._keys(held.token), [self.cluster.node, held.position.epoch, self.ttl_ms]
        self.cluster.writer.put(lambda pipe: queue_script(pipe, self._forget, keys, args))

    # ------------------------------------------------------------------ renewal / restore

    def renew_ops(self) -> list[tuple[Op, Done | None]]:
        """One fenced check per :data:`RENEW_CHUNK` records: extend the ones still this node's,
        re-create the ones Redis lost, let go of the ones another node took."""
        held = [h for h in self.resumes.all() if h.position is not None]
        return [self._renew_op(held[i : i + RENEW_CHUNK]) for i in range(0, len(held), RENEW_CHUNK)]

    def _renew_op(self, chunk: list[Held]) -> tuple[Op, Done | None]:
        args: list[Any] = [self.cluster.key("resume", ""), self.cluster.node, self.ttl_ms]
        for held in chunk:
            args += [held.token, held.position.epoch]

        def done(result: Any) -> None:
            if isinstance(result, list):
                for held, verdict in zip(chunk, result, strict=False):
                    self._verdict(held, verdict)

        return (lambda pipe: queue_script(pipe, self._renew, [], args)), done

    def restore_ops(self) -> list[tuple[Op, Done | None]]:
        """After writes were lost (an outage, or the writer's queue overflowed, which may have
        dropped a queued config rewrite): re-send every record this node holds (fenced)."""
        ops = []
        for held in self.resumes.all():
            if held.position is not None:
                held.position.config_queued = False
                ops.append(self._restore_op(held))
        return ops

    def _queue_restore(self, held: Held, *, fresh: bool = False) -> None:
        position = held.position
        if position is None or position.restore_queued:
            return  # the one queued carries every event recorded before it, appends follow it
        self.cluster.writer.put(*self._restore_op(held, fresh=fresh))

    def _restore_op(self, held: Held, *, fresh: bool = False) -> tuple[Op, Done | None]:
        """Create (or re-create) the record of a session this node owns, from its own state.
        The log, position and epoch are taken now (appends queued after this one follow it);
        the config when the write is sent (the latest, whatever updates came meanwhile)."""
        position = held.position
        assert position is not None
        position.restore_queued = True
        session = held.session
        fields: dict[str, Any] = {
            "sid": session.id,
            "key": key_hash(held.key),
            "config": "",
            "owner": self.cluster.node,
            "epoch": position.epoch,
            "pos": position.pos,
            "seg": position.seg,
            "evicted": held.log.evicted_max or 0,
            "trace": traceparent(session.ctx.span),
            "spk": "",
        }
        entries = [entry(e) for e in held.log.events()]
        keys = self._keys(held.token)

        def op(pipe: Pipeline) -> None:
            position.restore_queued = False
            fields["config"] = json.dumps(session.config.to_dict())
            fields["spk"] = session.ctx.speakers.encode()
            pairs: list[Any] = [item for pair in fields.items() for item in pair]
            args = [self.cluster.node, position.epoch, self.ttl_ms, len(fields), *pairs, *entries]
            queue_script(pipe, self._restore, keys, args)

        def done(result: Any) -> None:
            if result == 2 and not fresh and held.position is not None:
                loop = asyncio.get_running_loop()
                held.position.provisional_until = loop.time() + self.settle_s
            self._verdict(held, result, fenced_only=True)

        return op, done

    def taken_over(self, token: str, _node: str) -> None:
        self.resumes.surrender(token)

    # ------------------------------------------------------------------ resume

    async def confirm_local(self, held: Held) -> bool:
        """A resume found the session here: is this node still its owner?

        * the record is this node's (same owner and epoch): yes;
        * a higher epoch or a tombstone is there: no (the caller lets the copy go);
        * no record, or an older epoch (Redis lost it; a node that missed a takeover re-created
          it): this node re-creates it from its copy, fenced, and, as for any record it had to
          re-create, waits :attr:`settle_s` — by then a node with a higher epoch has re-created
          its own — then asks again;
        * Redis does not answer: yes (the node's own copy is then the truth)."""
        position = held.position
        if position is None:
            return True
        loop = asyncio.get_running_loop()
        try:
            verdict = await self._ask(held, position)
            if verdict == -1:
                verdict = await self._restore_now(held)
            wait = position.provisional_until - loop.time()
            if verdict != 0 and wait > 0:
                await asyncio.sleep(wait)
                if held.position is None:  # let go meanwhile
                    return False
                verdict = await self._ask(held, position)
        except Exception as exc:  # no answer in time, or an outage: the local copy is the truth
            self.cluster.failed(exc)
            return True
        return verdict != 0 and held.position is not None

    async def _ask(self, held: Held, position: Position) -> int:
        args: list[Any] = [self.cluster.node, position.epoch]
        keys = self._keys(held.token)[:1]
        return int(await self.cluster.call(self._check(keys=keys, args=args)))

    async def _restore_now(self, held: Held) -> int:
        """Re-create the record through the ordered writer and wait for its answer."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        op, done = self._restore_op(held)

        def settle(result: Any) -> None:
            if done is not None:
                done(result)
            if not answer.done():
                answer.set_result(result)

        self.cluster.writer.put(op, settle)
        result = await asyncio.wait_for(answer, 4 * self.cluster.settings.redis_timeout_s + self.settle_s)
        if isinstance(result, BaseException):
            raise result
        return 0 if result == 0 else 1

    async def claim(self, token: str, key: str | None) -> Claimed | None:
        """Take a session over from the cluster log; None: unknown, expired, ended, another
        key's, or Redis unavailable (then ``resume_failed``: only a node that holds it could
        resume it). A token not in the format this hub issues never reaches Redis."""
        if not valid_token(token):
            raise HubError(
                "resume_failed",
                "malformed resume token: a token is the 32 characters (A-Z, a-z, 0-9, '-', '_') "
                "that session.started gave",
            )
        cluster = self.cluster
        args: list[Any] = [key_hash(key), cluster.node, cluster.key("takeover"), token]
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
            evicted = int(fields["evicted"])
            speakers = SpeakerMemory.decode(fields.get("spk", ""))
            trace = fields.get("trace", "")
            return Claimed(fields["sid"], config, events, evicted, position, trace, speakers)
        except (KeyError, ValueError, TypeError) as exc:
            raise HubError(
                "resume_failed", f"the cluster's record of this session is unreadable: {exc}"
            ) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
