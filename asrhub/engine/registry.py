"""Find providers by name through the ``asrhub.providers`` entry-point group.

An entry point names a :class:`ProviderSpec`. The built-in engines register themselves in the
project's own ``pyproject.toml`` exactly like a third-party package would, so the hub core
never imports a concrete engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from asrhub.plugin import Provider, ProviderUnavailable

GROUP = "asrhub.providers"


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    description: str
    factory: Callable[[dict[str, Any]], Provider]
    """Build the provider from its settings table (``[providers.NAME]`` in the config)."""
    check: Callable[[dict[str, Any]], str | None] = field(default=lambda _options: None)
    """Return None when usable with these settings, else why not (with the fix to apply)."""
    extra: str | None = None
    """The ``pip install asrhub[EXTRA]`` that brings its engine, if it is optional."""
    reach: Callable[[dict[str, Any], float], Awaitable[str | None]] | None = None
    """For an engine behind the network (a server, a cloud API): try to reach it within the
    given seconds, with these settings; None when it answered, else what happened (the
    address). None here: the engine runs in this process, and ``check`` says all."""


class UnknownProvider(KeyError):
    pass


class ProviderRegistry:
    def __init__(self, specs: Iterable[ProviderSpec] = ()) -> None:
        self._specs: dict[str, ProviderSpec] = {}
        for spec in specs:
            self.add(spec)

    @classmethod
    def from_entry_points(cls) -> ProviderRegistry:
        registry = cls()
        for ep in entry_points(group=GROUP):
            try:
                spec = ep.load()
            except ImportError as exc:  # an optional engine's module failed to import
                registry.add(_broken_spec(ep.name, exc))
                continue
            registry.add(spec)
        return registry

    def add(self, spec: ProviderSpec) -> None:
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def spec(self, name: str) -> ProviderSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownProvider(name) from None

    def availability(self, name: str, options: dict[str, Any]) -> str | None:
        spec = self.spec(name)
        try:
            return spec.check(options)
        except Exception as exc:  # a check must never take the CLI down
            return f"check failed: {exc}"

    def remote(self, name: str) -> bool:
        """Whether the engine is reached over the network (its spec has a ``reach``)."""
        return self.spec(name).reach is not None

    async def reachability(self, name: str, options: dict[str, Any], timeout_s: float) -> str | None:
        """None when a remote engine answers now (within ``timeout_s``), else why not; None
        for an engine of this process. Bounded even for a probe that ignores its bound."""
        reach = self.spec(name).reach
        if reach is None:
            return None
        try:
            async with asyncio.timeout(timeout_s + 1.0):
                return await reach(options, timeout_s)
        except TimeoutError:
            return f"no answer within {timeout_s:g} s"
        except Exception as exc:  # a probe must never take the CLI down
            return f"probe failed: {type(exc).__name__}: {exc}"

    def create(self, name: str, options: dict[str, Any]) -> Provider:
        spec = self.spec(name)
        problem = self.availability(name, options)
        if problem is not None:
            raise ProviderUnavailable(f"provider {name!r} is not available: {problem}")
        return spec.factory(options)

    def __iter__(self) -> Any:
        return iter(self._specs.values())


def _broken_spec(name: str, exc: ImportError) -> ProviderSpec:
    message = f"cannot import its engine ({exc}); install it with: pip install 'asrhub[{name}]'"

    def factory(_options: dict[str, Any]) -> Provider:
        raise ProviderUnavailable(message)

    return ProviderSpec(name, "(not installed)", factory, check=lambda _o: message, extra=name)
