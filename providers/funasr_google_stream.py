"""Kept for imports written before the remote streaming stage moved into the core: see
:mod:`asrhub.engine.stream_stage`."""

from asrhub.engine.stream_stage import Recognize, stream_stage

stream_utterances = stream_stage

__all__ = ["Recognize", "stream_stage", "stream_utterances"]
