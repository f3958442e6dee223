"""Which of a provider's models serves a language, for the APIs whose clients name a language but
rarely a model (Google's ``language_code``, Home Assistant's ``transcribe``).

A request that names no model gets the provider's default model when it knows the language, else
the provider's first model that does (``de`` with whisper: ``base``, not the English-only
``tiny.en``). A named model is never replaced; a language no model knows is left for the hub to
refuse with its own message.
"""

from __future__ import annotations

from asrhub.hub import NO_PROVIDER, Hub


def model_for_language(hub: Hub, provider: str | None, model: str | None, language: str | None) -> str | None:
    """The model for a request that names ``provider`` (None: the hub's default), maybe a
    ``model``, and a ``language``: :meth:`asrhub.plugin.Capabilities.model_for`, the one rule."""
    if model is not None or language is None:
        return model
    name = provider or hub.default_provider
    engine = hub.providers.get(name) if name != NO_PROVIDER else None
    return engine.capabilities.model_for(language) if engine is not None else None
