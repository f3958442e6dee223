"""``LongRunningRecognize``'s job: a whole file on the hub's upload path.

The request is checked like ``Recognize`` before the operation exists (key, ``uri``, empty
content, encoding, model, language: the call's own status). The job then decodes
``audio.content`` off the event loop (raw LINEAR16 gets a WAV header from the config's rate and
channels; containers describe themselves) to 16 kHz mono and runs :meth:`Hub.transcribe`: jobs of
at most 30 s at upload priority, so live sessions' finals never wait behind a long file. Each
timed piece of the merged transcription, cut again where its words pause for the VAD's
``silence_ms`` (an engine may give one piece for 30 s with long silences in it), is one
``SpeechRecognitionResult`` (``result_end_time``, ``language_code``, words with offsets when
asked); ``total_billed_time`` is the audio's length rounded up to the second. With
``enable_separate_recognition_per_channel`` (a LINEAR16 file of 2+ channels) each channel is
transcribed on its own and its results carry ``channel_tag`` 1…N, all ordered by their end.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc
from google.cloud import speech_v1
from google.protobuf.message import Message

from asrhub.engine.finals import file_finals
from asrhub.errors import HubError
from asrhub.format import format_file
from asrhub.frames import FinalTranscript, Word
from asrhub.hub import Hub

from .batch import pcm16_wav, transcribe_channels, transcribe_upload
from .google_speech_config import SpeechOptions
from .google_speech_results import all_words_result, recognize_result
from .grpc_operations import SHUTTING_DOWN, Job, OperationFailed, Progress

HUB_FIELDS = ("provider", "model", "language", "keyterms")
"""The session-config fields that mean something for a whole file."""


def utterances(finals: list[FinalTranscript], pause_s: float) -> list[FinalTranscript]:
    """Each timed piece cut at its words' pauses of ``pause_s`` or more (the VAD's rule for the
    end of an utterance): an engine may give one piece for 30 s of speech with long silences."""
    cut: list[FinalTranscript] = []
    for final in finals:
        words = final.words or ()
        groups: list[list[Word]] = []
        for word in words:
            if groups and word.start - groups[-1][-1].end < pause_s:
                groups[-1].append(word)
            else:
                groups.append([word])
        if len(groups) <= 1:
            cut.append(final)
            continue
        cut += [
            replace(
                final,
                text=" ".join(w.word.strip() for w in group),
                start=group[0].start,
                end=group[-1].end,
                words=tuple(group),
            )
            for group in groups
        ]
    return cut


def diarize_fields(options: SpeechOptions) -> dict[str, Any]:
    """``diarizationConfig`` as :meth:`asrhub.hub.Hub.transcribe` takes it."""
    if not options.diarize:
        return {}
    return {"diarize": True, "min_speakers": options.min_speakers, "max_speakers": options.max_speakers}


def file_fields(options: SpeechOptions) -> dict[str, Any]:
    return {k: options.session[k] for k in HUB_FIELDS if k in options.session}


def file_job(hub: Hub, content: bytes, options: SpeechOptions, status_of: Any) -> Job:
    """The operation's job; a hub error fails it with the status ``status_of(code, hub)``."""

    async def run(progress: Progress) -> Message:
        audio = options.session["audio"]
        data = content
        if audio["encoding"] == "pcm_s16le":  # raw: the config says what it is
            data = await asyncio.to_thread(pcm16_wav, content, audio["sample_rate"], audio["channels"])
        fields = file_fields(options)
        kwargs: dict[str, Any] = {
            "provider": fields.get("provider"),
            "language": fields.get("language"),
            "prompt": None,
            "model": fields.get("model"),
            "keyterms": tuple(fields.get("keyterms", ())),
            **diarize_fields(options),
        }
        try:
            if options.session.get("multichannel"):  # each channel on its own: channel_tag 1…N
                name, transcriptions, duration = await transcribe_channels(hub, data, **kwargs)
            else:
                name, result, duration = await transcribe_upload(
                    hub,
                    data,
                    **kwargs,
                    progress=lambda done, total: progress(done / total if total else 1.0),
                )
                transcriptions = [result]
        except HubError as exc:
            if not hub.accepting:  # the engines went away under it: retry elsewhere
                raise OperationFailed(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN) from None
            raise OperationFailed(status_of(exc.code, hub), exc.message) from None
        pause_s = hub.resolve_config(fields).vad.silence_ms / 1000
        tagged = len(transcriptions) > 1 or bool(options.session.get("multichannel"))
        finals: list[FinalTranscript] = []
        for channel, raw in enumerate(transcriptions):
            result = await format_file(raw, options.formatting, fields.get("language"))
            finals += [
                replace(final, channel=channel) if tagged else final
                for final in utterances(file_finals(name, result, duration), pause_s)
                if final.text
            ]
        finals.sort(key=lambda f: (f.end, f.channel or 0))
        results = [
            recognize_result(final, word_offsets=options.word_offsets, language_code=options.language_code)
            for final in finals
        ]
        if options.diarize:
            results.append(all_words_result(finals, language_code=options.language_code))
        response = speech_v1.LongRunningRecognizeResponse(
            results=results, total_billed_time=timedelta(seconds=math.ceil(duration))
        )
        return speech_v1.LongRunningRecognizeResponse.pb(response)

    return run
