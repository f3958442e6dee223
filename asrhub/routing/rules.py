"""The language table (``[routing] languages``): which engines serve a language, best first.

``ordered("ko")`` is the Korean row, then the ``*`` row (every language's fallback), then
any other engine of the hub that knows Korean — so an utterance always has somewhere to go while
one engine that can hear it is healthy. Engines the hub does not run are left out.
"""

from __future__ import annotations

from collections.abc import Mapping

from asrhub.config import base_language
from asrhub.plugin import Provider
from asrhub.routing.engines import knows

ANY = "*"


class LanguageRules:
    def __init__(self, table: Mapping[str, tuple[str, ...]], engines: Mapping[str, Provider]) -> None:
        self.table = {(k if k == ANY else base_language(k)): tuple(v) for k, v in table.items()}
        self.engines = engines

    def ordered(self, language: str | None) -> tuple[list[str], bool]:
        """Every engine of the hub that knows ``language``, best first, and whether the first
        comes from the language's own row (False: the ``*`` row or another engine)."""
        own = self.table.get(language, ()) if language is not None else ()
        names = [*own, *self.table.get(ANY, ()), *self.others()]
        seen: list[str] = []
        for name in names:
            engine = self.engines.get(name)
            if engine is None or name in seen:
                continue
            if knows(engine, language) and _open_to(engine, language):
                seen.append(name)
        return seen, bool(seen) and seen[0] in own

    def others(self) -> list[str]:
        """The hub's engines the table does not name: model engines (``whisper:base``) rather
        than their bare provider, which is one of its models under another name."""
        return [n for n, e in self.engines.items() if ":" in n or not e.capabilities.models]


def _open_to(engine: Provider, language: str | None) -> bool:
    """An utterance of unknown language goes only to engines of more than one language."""
    languages = engine.capabilities.languages
    return language is not None or languages is None or len(languages) > 1
