"""What the hub tells a Wyoming client that sends ``describe``, and the streaming-chunk policy.

``info``:

* **asr**: one program per hub provider, the default provider first (Home Assistant uses the
  first program: it gets the hub's default), with the provider's models (``transcribe``'s
  ``name`` may name one) and their languages; a provider without a choice of model has one
  model named as the provider. A provider that takes any language is listed with
  :data:`ANY_LANGUAGES`. ``supports_transcript_streaming`` is true for engines with partials;
  ``requires_external_vad`` stays true: the client (Home Assistant) decides when the command
  ends and sends ``audio-stop``.
* **wake**: one program, ``openwakeword``, whose models are the wake words installed in the
  hub's model directory. Home Assistant lists the models of the first wake program only, so
  they are models of one program, not one program each.

Streaming text (``transcript-chunk``) is append-only on the wire, while a batch engine's
partials are re-decodes that may still change. :class:`AgreedText` sends a partial's
``stable`` words (the hub's LocalAgreement, docs/protocol.md: never rewritten before the final)
as they grow — for an engine whose partials carry none, a word once two successive partials
agree on it, the same rule — and at the utterance's final the rest of the final. The ``transcript`` event that
follows is the authority; the chunks join into it except where a final overrules words two
decodes had agreed on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from wyoming.info import AsrModel, AsrProgram, Attribution, Info, WakeModel, WakeProgram

from asrhub.hub import Hub

ATTRIBUTION = Attribution(name="ASR Hub", url="https://pypi.org/project/asrhub/")
OWW_ATTRIBUTION = Attribution(
    name="openWakeWord (David Scripka)", url="https://github.com/dscripka/openWakeWord"
)
WAKE_PROGRAM = "openwakeword"
ANY_LANGUAGES = (
    "en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "cs", "sv", "da", "fi", "no",
    "el", "tr", "ar", "he", "hi", "zh", "ja", "ko", "vi", "id", "th", "ro", "hu", "ca",
)  # fmt: skip
"""Listed for an engine that takes any language (Home Assistant needs a list to offer)."""
_PUNCT = re.compile(r"[^\w']+")


def describe(hub: Hub, wake_words: Iterable[str]) -> Info:
    names = sorted(hub.providers, key=lambda n: (n != hub.default_provider, n))
    asr = []
    for name in names:
        caps = hub.providers[name].capabilities
        models = caps.models or {name: caps.languages}  # no choice of model: one, named as the provider
        asr_models = [
            AsrModel(
                name=model,
                attribution=ATTRIBUTION,
                installed=True,
                description=f"{name} {model}" if model != name else f"ASR Hub provider {name}",
                version=None,
                languages=list(languages) if languages is not None else list(ANY_LANGUAGES),
            )
            for model, languages in models.items()
        ]
        asr.append(
            AsrProgram(
                name=name,
                attribution=ATTRIBUTION,
                installed=True,
                description=f"ASR Hub: {name}" + (" (default)" if name == hub.default_provider else ""),
                version=None,
                models=asr_models,
                supports_transcript_streaming=caps.partials,
            )
        )
    wake_models = [
        WakeModel(
            name=word,
            attribution=OWW_ATTRIBUTION,
            installed=True,
            description=word.replace("_", " "),
            version=None,
            languages=["en"],
            phrase=word.replace("_", " "),
        )
        for word in sorted(wake_words)
    ]
    wake = []
    if wake_models:
        wake.append(
            WakeProgram(
                name=WAKE_PROGRAM,
                attribution=OWW_ATTRIBUTION,
                installed=True,
                description="ASR Hub wake-word detection (openWakeWord models)",
                version=None,
                models=wake_models,
            )
        )
    return Info(asr=asr, wake=wake)


class AgreedText:
    """Append-only text out of revisable partials (see the module docstring)."""

    def __init__(self) -> None:
        self.sent = False  # anything sent yet: later chunks start with a space
        self._segment: int | None = None
        self._previous: list[str] = []
        self._committed = 0  # words of the current utterance already sent

    def _reset(self, segment_id: int) -> None:
        if segment_id != self._segment:
            self._segment, self._previous, self._committed = segment_id, [], 0

    def _chunk(self, words: list[str]) -> str | None:
        if not words:
            return None
        text = " ".join(words)
        if self.sent:
            text = " " + text
        self.sent = True
        return text

    def partial(self, segment_id: int, text: str, stable: str | None = None) -> str | None:
        """The chunk to send for this partial, if two decodes now agree on more words
        (``stable``: the words the hub says two decodes agreed on)."""
        self._reset(segment_id)
        if stable is not None:
            words = stable.split()
            new = words[self._committed :]
            self._committed = max(self._committed, len(words))
            return self._chunk(new)
        words = text.split()
        norm = [_PUNCT.sub("", w).lower() for w in words]  # "Friday." agrees with "friday"
        agreed = 0
        for a, b in zip(self._previous, norm, strict=False):
            if a != b:
                break
            agreed += 1
        self._previous = norm
        if agreed <= self._committed:
            return None
        new = words[self._committed : agreed]
        self._committed = agreed
        return self._chunk(new)

    def final(self, segment_id: int, text: str) -> str | None:
        """The rest of the utterance, once its final is known."""
        self._reset(segment_id)
        words = text.split()
        rest = words[self._committed :]
        self._segment, self._previous, self._committed = None, [], 0
        return self._chunk(rest)
