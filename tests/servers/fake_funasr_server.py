"""FakeFunasrServer: a protocol-faithful stand-in for FunASR's runtime WebSocket server.

No Paraformer or SenseVoice weights can be installed here, so the FunASR provider is tested
against this server. It follows FunASR's documented protocol (runtime/docs/websocket_protocol.md)
and the behaviour of its servers (runtime/websocket/bin/websocket-server.cpp for
``funasr-wss-server``, websocket-server-2pass.cpp for ``funasr-wss-server-2pass``), quirks
included:

* client → server: a JSON config (``mode``, ``chunk_size``, ``chunk_interval``, ``wav_name``,
  ``is_speaking: true``, ``hotwords``, ``itn``, ``audio_fs``, ``wav_format``, ``svs_lang``…),
  binary PCM16 frames, then ``{"is_speaking": false}``; the connection may carry another
  utterance afterwards (the servers reset their buffer after each end of audio);
* ``offline``: one ``{"mode": "offline", …, "is_final": false}`` answer per end of audio — the
  offline server really sends ``is_final: false`` there — with ``timestamp`` (a *string*
  ``"[[start_ms,end_ms],…]"``, one pair per token) and ``stamp_sents``;
* ``2pass``: incremental ``2pass-online`` pieces every ``chunk_size[1]`` × 60 ms of audio,
  a ``2pass-offline`` sentence (``is_final: false``) whenever the server's own VAD closes a
  sentence, and one last message with ``is_final: true`` after the end of audio;
* ``online``: the 2pass server labels these results ``2pass-online`` too, ``is_final: true``
  on the last one.

What is real: speech regions come from FunASR's FSMN-VAD model (``fsmn_vad``), and every text
from faster-whisper ``tiny.en`` run on the audio received (``tiny_whisper``); ``stamp_sents``
are the VAD regions, token times the recogniser's word times. ``hotwords`` (FunASR's JSON
string ``{"word": weight}``) are passed to the recogniser as hot words. Faults are injected by
setting :attr:`FakeFunasrServer.fault`: ``drop`` (the TCP connection is cut), ``error`` (closed
with WebSocket code 1011), ``hang`` (audio accepted, no answer ever), each after
:attr:`fault_after_bytes` bytes of audio on a connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from aiohttp import WSMsgType, web

from tests.servers import fsmn_vad, tiny_whisper

Fault = Literal["drop", "error", "hang"] | None
RATE = 16_000


@dataclass
class _Conn:
    """One WebSocket connection's state (the C++ servers' FUNASR_MESSAGE)."""

    config: dict[str, Any] = field(
        default_factory=lambda: {
            "mode": "2pass",
            "wav_name": "wav-default-id",
            "wav_format": "pcm",
            "itn": True,
            "audio_fs": RATE,
            "chunk_size": [5, 10, 5],
        }
    )
    buf: bytearray = field(default_factory=bytearray)
    """PCM of the current sentence (2pass/online) or utterance (offline)."""
    offset_ms: int = 0
    """Audio before ``buf`` since the utterance began (timestamps count from there)."""
    online_words: int = 0
    since_step: int = 0
    total_bytes: int = 0
    ending: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class FakeFunasrServer:
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.fault: Fault = None
        self.fault_after_bytes = 0
        self.configs: list[dict[str, Any]] = []
        """Every JSON message received, in order (tests check what the client sent)."""
        self.connections = 0
        self.sent: list[dict[str, Any]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fake-funasr")
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"{'wss' if self.ssl_context else 'ws'}://{host}:{bound}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ connection

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=16 << 20)
        await ws.prepare(request)
        self.connections += 1
        conn = _Conn()
        worker = asyncio.create_task(self._work(ws, conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    self.configs.append(data)
                    conn.config.update({k: v for k, v in data.items() if k != "is_speaking"})
                    if data.get("is_speaking") is False or data.get("is_finished") is True:
                        conn.ending = True
                        conn.wake.set()
                elif msg.type == WSMsgType.BINARY:
                    conn.buf += msg.data
                    conn.since_step += len(msg.data)
                    conn.total_bytes += len(msg.data)
                    if self.fault and conn.total_bytes > self.fault_after_bytes:
                        if self.fault == "drop":
                            assert request.transport is not None
                            request.transport.close()
                            break
                        if self.fault == "error":
                            await ws.close(code=1011, message=b"fake fault: decoder error")
                            break
                        continue  # hang: keep reading, never answer
                    conn.wake.set()
        finally:
            worker.cancel()
        return ws

    async def _work(self, ws: web.WebSocketResponse, conn: _Conn) -> None:
        """Decode in order, one step at a time (the servers' per-connection strand)."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            if self.fault == "hang" and conn.total_bytes > self.fault_after_bytes:
                continue
            mode = conn.config.get("mode", "2pass")
            step = int(conn.config["chunk_size"][1]) * 60 * RATE // 1000 * 2
            if mode != "offline" and not conn.ending and conn.since_step >= step:
                conn.since_step = 0
                if mode == "2pass":
                    await self._close_sentences(ws, conn)
                await self._online_piece(ws, conn, final=False)
            if conn.ending:
                conn.ending = False
                await self._finish(ws, conn, mode)

    async def _finish(self, ws: web.WebSocketResponse, conn: _Conn, mode: str) -> None:
        if mode == "2pass":
            await self._close_sentences(ws, conn)
        pcm = bytes(conn.buf)
        if mode == "offline":
            await self._send(ws, conn, await self._recognize(conn, pcm), "offline", False)
        elif mode == "online":
            await self._online_piece(ws, conn, final=True)
        else:
            await self._send(ws, conn, await self._recognize(conn, pcm), "2pass-offline", True)
        del conn.buf[: len(pcm)]  # audio of a next utterance may already be arriving
        conn.offset_ms = conn.online_words = conn.since_step = 0

    async def _close_sentences(self, ws: web.WebSocketResponse, conn: _Conn) -> None:
        """2pass: every sentence the VAD has closed gets its ``2pass-offline`` result."""
        audio = _samples(bytes(conn.buf))
        regions = await self._run(fsmn_vad.speech_segments, audio)
        buffered_ms = len(audio) * 1000 // RATE
        for _start, end in regions:
            if end >= buffered_ms - 200:
                break  # still open (the detector closes the last region at the buffer's end)
            cut = end * RATE // 1000 * 2
            sentence, conn.buf[:] = bytes(conn.buf[:cut]), conn.buf[cut:]
            await self._send(ws, conn, await self._recognize(conn, sentence), "2pass-offline", False)
            conn.offset_ms += end
            conn.online_words = 0
            return

    async def _online_piece(self, ws: web.WebSocketResponse, conn: _Conn, *, final: bool) -> None:
        """The streaming model's incremental text: words not sent yet (the last one may still be
        cut mid-word, so it waits unless the audio has ended)."""
        text = await self._run(tiny_whisper.transcribe_text, _samples(bytes(conn.buf)))
        words = text.split()
        new = words[conn.online_words :] if final else words[conn.online_words : -1]
        if new or final:
            conn.online_words += len(new)
            piece = " ".join(new) + (" " if new and not final else "")
            await self._send(ws, conn, {"text": piece}, "2pass-online", final)

    async def _recognize(self, conn: _Conn, pcm: bytes) -> dict[str, Any]:
        """The offline pipeline: VAD regions → recogniser per region → text + timestamps."""
        audio = _samples(pcm)
        hotwords = _hotword_list(conn.config.get("hotwords"))
        regions = await self._run(fsmn_vad.speech_segments, audio)
        texts: list[str] = []
        stamps: list[list[int]] = []
        sents: list[dict[str, Any]] = []
        for start, end in regions:
            piece = audio[start * RATE // 1000 : end * RATE // 1000]
            words = await self._run(tiny_whisper.transcribe_words, piece, hotwords=hotwords)
            if not words:
                continue
            base = conn.offset_ms + start
            ts = [[base + round(w.start * 1000), base + round(w.end * 1000)] for w in words]
            tokens = [w.word.strip(".,!?;:") or w.word for w in words]
            last = words[-1].word
            punc = last[-1] if last[-1] in ".,!?;:" else ""
            texts.append(" ".join(w.word for w in words))
            stamps.extend(ts)
            sents.append(
                {
                    "text_seg": " ".join(tokens),
                    "punc": punc,
                    "start": conn.offset_ms + start,
                    "end": conn.offset_ms + end,
                    "ts_list": ts,
                }
            )
        result: dict[str, Any] = {"text": " ".join(texts)}
        if stamps:
            result["timestamp"] = json.dumps(stamps, separators=(",", ":"))
            result["stamp_sents"] = sents
        return result

    async def _send(
        self, ws: web.WebSocketResponse, conn: _Conn, result: dict[str, Any], mode: str, is_final: bool
    ) -> None:
        message = {"mode": mode, **result, "wav_name": conn.config.get("wav_name"), "is_final": is_final}
        self.sent.append(message)
        if not ws.closed:
            await ws.send_str(json.dumps(message, ensure_ascii=False))

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))


def _samples(pcm: bytes) -> np.ndarray:
    usable = len(pcm) - len(pcm) % 2
    return np.frombuffer(pcm[:usable], "<i2").astype(np.float32) / 32768.0


def _hotword_list(hotwords: Any) -> str | None:
    """FunASR sends hot words as a JSON string ``{"word": weight}`` (or plain words)."""
    if not hotwords:
        return None
    if isinstance(hotwords, str):
        try:
            hotwords = json.loads(hotwords)
        except json.JSONDecodeError:
            return hotwords
    if isinstance(hotwords, dict):
        return " ".join(hotwords)
    return str(hotwords)
