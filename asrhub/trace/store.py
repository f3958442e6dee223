"""Where finished traces go: a folder (one ``<session id>.trace`` file each) or Redis (one key
each, expiring). Both read back only for the key that recorded the session: a trace of another
key, or of no key on a hub that has keys, reads as missing — the caller cannot tell the two
apart (see :meth:`TraceStore.read`)."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

from asrhub.trace.records import TraceError, header_of

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,16})?$")
"""What a session id looks like (``secrets.token_urlsafe``, and under ``--workers N`` an HTTP
session's ``.w<index>`` suffix): nothing else names a trace, so a path never leaves the folder."""


class TraceStore(Protocol):
    async def put(self, session_id: str, data: bytes) -> None: ...

    async def get(self, session_id: str) -> bytes | None: ...

    async def close(self) -> None: ...


async def read(store: TraceStore, session_id: str, key: str | None) -> bytes | None:
    """The trace of ``session_id`` if ``key`` (a key fingerprint; None: no key) recorded it;
    None otherwise — missing, another key's, or damaged, all alike."""
    if not SESSION_ID.match(session_id):
        return None
    data = await store.get(session_id)
    if data is None:
        return None
    try:
        header = header_of(data)
    except TraceError:
        return None
    return data if header.key == key else None


class DirStore:
    """Trace files in a folder (``trace.dir``), written off the event loop, atomically (a
    reader never sees half a file)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, session_id: str) -> Path:
        if not SESSION_ID.match(session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        return self.folder / f"{session_id}.trace"

    async def put(self, session_id: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self.path(session_id), data)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o600)  # traces carry audio: the hub's user only
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, session_id: str) -> bytes | None:
        path = self.path(session_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def close(self) -> None:
        pass


class RedisStore:
    """Traces in the cluster's Redis (``trace.redis``): key ``<prefix>:trace:<session id>``,
    expiring after ``ttl_s``, so any node serves a trace whichever node recorded it."""

    def __init__(self, url: str, *, prefix: str, ttl_s: float, timeout_s: float) -> None:
        from redis.asyncio import Redis

        self.redis: Any = Redis.from_url(url, socket_timeout=max(timeout_s, 5.0))
        self.prefix, self.ttl_ms = prefix, int(ttl_s * 1000)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:trace:{session_id}"

    async def put(self, session_id: str, data: bytes) -> None:
        await self.redis.set(self._key(session_id), data, px=self.ttl_ms)

    async def get(self, session_id: str) -> bytes | None:
        data = await self.redis.get(self._key(session_id))
        return bytes(data) if data is not None else None

    async def close(self) -> None:
        await self.redis.aclose()
