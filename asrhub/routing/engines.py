"""The engines a route names: a provider (``vosk``), or one model of a provider
(``whisper:base``). A model engine is the provider with its ``model`` option fixed, under a
name of its own — so it has its own circuit breaker and figures, and the final's ``provider``
says which model served it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from asrhub.frames import Samples
from asrhub.plugin import Capabilities, Operator, Priority, Provider, SessionContext, Transcription


class ModelEngine:
    """``provider`` with ``model`` fixed (a :class:`~asrhub.plugin.Provider` itself)."""

    def __init__(self, provider: Provider, model: str) -> None:
        self.provider, self.model = provider, model
        self.name = f"{provider.name}:{model}"

    @property
    def capabilities(self) -> Capabilities:
        caps = self.provider.capabilities  # the provider's, as it stands (a model loaded later)
        return dataclasses.replace(caps, languages=caps.languages_of(self.model), models={})

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        raise AttributeError(f"{self.name}: its capabilities are its provider's")

    async def start(self) -> None:
        """The provider is started by the hub."""

    async def close(self) -> None:
        """The provider is closed by the hub."""

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        options["model"] = self.model
        return await self.provider.transcribe(
            samples, language=language, prompt=prompt, priority=priority, **options
        )

    def try_partial(self, samples: Samples, **options: Any) -> Any:
        """The provider's partial decode (when it has one) with ``model`` fixed; else None."""
        start = getattr(self.provider, "try_partial", None)
        return None if start is None else start(samples, **{**options, "model": self.model})

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return self.provider.stage(ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider.name, "model": self.model}


def engine_table(providers: Mapping[str, Provider]) -> dict[str, Provider]:
    """Every engine of a hub by name: each provider, and each model of a provider that offers
    a choice (``whisper:tiny.en``, ``whisper:base``)."""
    table: dict[str, Provider] = {}
    for name, provider in providers.items():
        table[name] = provider
        for model in provider.capabilities.models:
            table[f"{name}:{model}"] = ModelEngine(provider, model)
    return table


def knows(engine: Provider, language: str | None) -> bool:
    """Whether ``engine`` transcribes ``language`` (None, not known yet: any engine may)."""
    if language is None:
        return True
    languages = engine.capabilities.languages
    return languages is None or language in languages
