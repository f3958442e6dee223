"""A provider's ``[providers.NAME]`` table read into its settings struct, and the registry's
``check`` built from a provider's own probe: one spelling of both for every engine.

A provider writes one *probe*: ``options`` in, its settings out, or :class:`ProviderUnavailable`
saying why the engine cannot run (not installed, no model, no key) and how to fix it.
:func:`check_from` turns the probe into the ``check`` of its :class:`~asrhub.engine.registry.ProviderSpec`
(``None``, or the why), so the CLI and the server report exactly what the probe says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from asrhub.plugin import ProviderUnavailable

S = TypeVar("S")


def read_settings(name: str, options: Mapping[str, Any] | None, kind: type[S], *, strict: bool = True) -> S:
    """``options`` as ``kind`` (a msgspec Struct); a table that does not fit raises
    :class:`ProviderUnavailable` naming ``[providers.NAME]`` and what is wrong in it."""
    try:
        return msgspec.convert(dict(options or {}), kind, strict=strict)
    except msgspec.ValidationError as exc:
        raise ProviderUnavailable(f"invalid [providers.{name}] settings: {exc}") from None


def check_from(probe: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], str | None]:
    """The ``ProviderSpec.check`` of a probe: None when ``probe(options)`` passes, else the text
    of the :class:`ProviderUnavailable` it raised."""

    def check(options: dict[str, Any]) -> str | None:
        try:
            probe(options)
        except ProviderUnavailable as exc:
            return str(exc)
        return None

    return check
