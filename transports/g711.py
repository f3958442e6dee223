"""G.711 μ-law / A-law (8-bit telephone audio) → PCM16, for the compatible APIs that accept it
(Deepgram ``encoding=mulaw|alaw``, OpenAI Realtime ``audio/pcmu|audio/pcma``).

The hub's decoder takes PCM16; a G.711 byte maps to one PCM16 sample through a 256-entry
table. The table is FFmpeg's own (PyAV's ``pcm_mulaw`` / ``pcm_alaw`` decoders run once over
all 256 byte values), so the hub writes no codec of its own.
"""

from __future__ import annotations

from functools import cache

import av
import numpy as np
import numpy.typing as npt

CODECS = {"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


@cache
def _table(law: str) -> npt.NDArray[np.int16]:
    ctx = av.CodecContext.create(CODECS[law], "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    frames = ctx.decode(av.Packet(bytes(range(256))))
    table = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype("<i2")
    assert table.shape == (256,)
    return table


def to_pcm16(data: bytes, law: str) -> bytes:
    """``law`` (``mulaw`` or ``alaw``) bytes → little-endian PCM16 bytes, twice as long."""
    return _table(law)[np.frombuffer(data, np.uint8)].tobytes()
