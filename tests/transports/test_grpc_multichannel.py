"""Google's separate recognition per channel through the official ``google-cloud-speech``
client on a real hub (faster-whisper tiny.en) and real stereo audio (two recordings, one per
channel): ``audio_channel_count=2`` + ``enable_separate_recognition_per_channel`` gives results
with ``channel_tag`` 1 and 2, each side's words only under its own tag, for Recognize,
StreamingRecognize and LongRunningRecognize; without the flag the channels are mixed
(``channel_tag`` 0); more channels than ``limits.max_channels`` is INVALID_ARGUMENT. Before
issue 27 the flag was ignored (every result had ``channel_tag`` 0), so these tests fail there."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.cloud import speech_v1

from tests.stereo_audio import LEFT_WORDS, RIGHT_WORDS, stereo_pcm, stereo_wav, words_of
from tests.transports.test_grpc_long_running import POLL
from tests.transports.test_grpc_speech import Encoding, Hub, audio_requests, hub, streaming_config

__all__ = ["hub"]  # the module's gRPC server fixture, shared


def config(**kw: object) -> speech_v1.RecognitionConfig:
    fields = {
        "encoding": Encoding.LINEAR16,
        "sample_rate_hertz": 16_000,
        "language_code": "en-US",
        "audio_channel_count": 2,
        "enable_separate_recognition_per_channel": True,
        "enable_word_time_offsets": True,
    }
    return speech_v1.RecognitionConfig(**{**fields, **kw})


def by_tag(
    results: list[speech_v1.SpeechRecognitionResult] | list[speech_v1.StreamingRecognitionResult],
) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for r in results:
        out.setdefault(r.channel_tag, set()).update(words_of(r.alternatives[0].transcript))
    return out


def assert_sides(words: dict[int, set[str]]) -> None:
    assert set(words) == {1, 2}, words
    assert len(words[1] & LEFT_WORDS) >= 2 and not words[1] & RIGHT_WORDS, words
    assert len(words[2] & RIGHT_WORDS) >= 2 and not words[2] & LEFT_WORDS, words


def test_recognize_separate_channels(hub: Hub) -> None:
    client = hub.client()
    response = client.recognize(config=config(), audio=speech_v1.RecognitionAudio(content=stereo_pcm()))
    assert_sides(by_tag(list(response.results)))
    right = [r for r in response.results if r.channel_tag == 2]
    assert right[0].alternatives[0].words[0].start_time.total_seconds() >= 1.5  # 2 s in
    # a WAV (LINEAR16 without a rate): the header says 2 channels
    wav = client.recognize(
        config=config(sample_rate_hertz=0), audio=speech_v1.RecognitionAudio(content=stereo_wav())
    )
    assert_sides(by_tag(list(wav.results)))
    mixed = client.recognize(
        config=config(enable_separate_recognition_per_channel=False),
        audio=speech_v1.RecognitionAudio(content=stereo_pcm()),
    )
    assert {r.channel_tag for r in mixed.results} == {0}
    heard = set().union(*(words_of(r.alternatives[0].transcript) for r in mixed.results))
    assert heard & LEFT_WORDS and heard & RIGHT_WORDS, heard
    assert hub.grpc_sessions() == 0


def test_streaming_separate_channels(hub: Hub) -> None:
    stream = streaming_config(
        interim_results=True,
        config={"audio_channel_count": 2, "enable_separate_recognition_per_channel": True},
    )
    responses = list(hub.client().streaming_recognize(stream, audio_requests(stereo_pcm())))
    results = [r for resp in responses for r in resp.results]
    finals = [r for r in results if r.is_final]
    assert_sides(by_tag(finals))
    assert {r.channel_tag for r in results} == {1, 2}  # partials tagged too
    for tag in (1, 2):
        ends = [r.result_end_time.total_seconds() for r in finals if r.channel_tag == tag]
        assert ends == sorted(ends)
    assert hub.grpc_sessions() == 0


def test_long_running_separate_channels(hub: Hub) -> None:
    operation = hub.client().long_running_recognize(
        config=config(), audio=speech_v1.RecognitionAudio(content=stereo_pcm())
    )
    response = operation.result(timeout=120, polling=POLL)
    assert_sides(by_tag(list(response.results)))
    ends = [r.result_end_time.total_seconds() for r in response.results]
    assert ends == sorted(ends)


def test_too_many_channels_is_invalid_argument(hub: Hub) -> None:
    with pytest.raises(gexc.InvalidArgument, match="at most 8"):
        hub.client().recognize(
            config=config(audio_channel_count=9), audio=speech_v1.RecognitionAudio(content=bytes(36))
        )
