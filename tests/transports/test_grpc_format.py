"""Google's formatting fields through the official ``google-cloud-speech`` client on a real
hub (faster-whisper tiny.en) and real speech made at set-up: ``profanity_filter`` masks as
Google does (``b*******``), ``enable_automatic_punctuation`` keeps the engine's punctuation and
its absence (Google's default) removes it — on Recognize and LongRunningRecognize. Before
issue 27 both fields were ignored: the masks and the missing punctuation fail there."""

from __future__ import annotations

import re

from google.cloud import speech_v1

from tests.format.recordings import MONEY, PROFANITY, recording
from tests.transports.test_grpc_speech import Hub, hub  # noqa: F401  (the module's gRPC server)

Encoding = speech_v1.RecognitionConfig.AudioEncoding
MASKED = re.compile(r"\b[a-zA-Z]\*{3,}")


def config(**fields: object) -> speech_v1.RecognitionConfig:
    return speech_v1.RecognitionConfig(
        encoding=Encoding.LINEAR16,
        sample_rate_hertz=16_000,
        language_code="en-US",
        enable_word_time_offsets=True,
        **fields,
    )


def transcript(response: speech_v1.RecognizeResponse | speech_v1.LongRunningRecognizeResponse) -> str:
    return " ".join(r.alternatives[0].transcript for r in response.results)


def test_profanity_filter_and_punctuation_on_recognize(hub: Hub) -> None:  # noqa: F811
    pcm, _ = recording(MONEY, PROFANITY)
    audio = speech_v1.RecognitionAudio(content=pcm)
    client = hub.client()
    masked = transcript(
        client.recognize(config=config(profanity_filter=True, enable_automatic_punctuation=True), audio=audio)
    )
    assert MASKED.search(masked) and "bullshit" not in masked.lower(), masked
    assert re.search(r"[.,]", masked), masked  # punctuation asked for: the engine's kept
    plain = transcript(client.recognize(config=config(), audio=audio))
    assert "bullshit" in plain.lower() and not MASKED.search(plain), plain
    assert not re.search(r"[.,?!]", plain), plain  # Google's default: no punctuation
    assert hub.grpc_sessions() == 0


def test_profanity_filter_on_long_running_recognize(hub: Hub) -> None:  # noqa: F811
    pcm, _ = recording(PROFANITY)
    operation = hub.client().long_running_recognize(
        config=config(profanity_filter=True), audio=speech_v1.RecognitionAudio(content=pcm)
    )
    response = operation.result(timeout=120)
    text = transcript(response)
    assert MASKED.search(text) and "bullshit" not in text.lower(), text
    words = [w.word for r in response.results for w in r.alternatives[0].words]
    assert any(MASKED.fullmatch(w) for w in words), words
