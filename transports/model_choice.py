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
    if model is not None or language is None:
        return model
    name = provider or hub.default_provider
    engine = hub.providers.get(name) if name != NO_PROVIDER else None
    if engine is None or not engine.capabilities.models:
        return None
    models = engine.capabilities.models
    default = next(iter(models))
    if models[default] is None or language in (models[default] or ()):
        return None
    return next((m for m, langs in models.items() if langs is None or language in langs), None)
