"""The router: per utterance, the ordered engines of a ``provider: "auto"`` session.

    language  hint, or identified (:mod:`.language_id`)      → the table's order (:mod:`.rules`)
    policy    the key's allowed engines, quality or cost     → filtered, maybe re-ordered
    health    an open circuit breaker                        → that engine left out ("skipped");
              a degraded one (failed within the window)      → after the healthy ones
    load      first engine with ≥ max_queue calls in flight  → a less busy candidate goes first

The result is a :class:`~asrhub.plugin.Route`: the candidates go to the one failover loop
(:mod:`asrhub.engine.failover`: an engine that fails mid-call is still failed over), the reason
goes on the final as ``route``::

    {"reason": "language", "language": "ko", "language_source": "identified",
     "language_probability": 0.91, "candidates": ["vosk", "whisper:base"]}

``reason`` names what decided the first candidate: ``language`` (its row of the table),
``default`` (the ``*`` row: no row for the language, or the language unknown — identified
with a probability below ``routing.confident``, reported as ``language_guess``), ``policy``,
``health``, ``load``. A recovered engine (its breaker closed again) is back in the next route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asrhub.config import SessionConfig, base_language
from asrhub.frames import Samples
from asrhub.plugin import CircuitBreakers, Provider, Route
from asrhub.routing.language_id import Identified, Identify, SessionLanguage
from asrhub.routing.policy import apply, policy_of
from asrhub.routing.rules import ANY, LanguageRules
from asrhub.routing.stats import EngineStats
from asrhub.settings.schema import KeyRouting, RoutingSettings


class Router:
    """The hub's router (one per hub; its figures and breakers are the hub's)."""

    def __init__(
        self,
        engines: Mapping[str, Provider],
        settings: RoutingSettings,
        *,
        breakers: CircuitBreakers,
        stats: EngineStats,
        identify: Identify | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.engines, self.settings, self.breakers, self.stats = dict(engines), settings, breakers, stats
        self.rules = LanguageRules(settings.languages, self.engines)
        self.identify, self.timeout_s = identify, timeout_s

    def session(self, key: str | None, log: Any = None) -> SessionRouter:
        """The router of one session of the caller ``key``."""
        language = SessionLanguage(
            self.identify, confident=self.settings.confident, timeout_s=self.timeout_s, log=log
        )
        return SessionRouter(self, policy_of(self.settings, key), language)

    def knows(self, language: str) -> bool:
        """Whether an engine of this hub transcribes ``language``."""
        return bool(self.rules.ordered(base_language(language))[0])

    def default_engines(self) -> tuple[Provider, ...]:
        """The engines of an utterance of unknown language (what a routed session's chain is
        built for before its first route)."""
        names, _ = self.rules.ordered(None)
        return tuple(self.engines[n] for n in names) or tuple(self.engines.values())

    def plan(self, found: Identified, policy: KeyRouting) -> Route:
        """The route for an utterance in ``found.language`` under ``policy``."""
        language = found.language if found.confident else None  # unsure: the ``*`` row
        names, own = self.rules.ordered(language)
        reason = "language" if own else "default"
        allowed = apply(policy, names, self.settings.costs)
        if allowed[:1] != names[:1]:
            reason = "policy"
        rank = {"closed": 0, "degraded": 1, "open": 2}  # the failover loop's order too
        states = {n: self.breakers.of(self.engines[n]).state for n in allowed}
        healthy = sorted((n for n in allowed if states[n] != "open"), key=lambda n: rank[states[n]])
        skipped = [n for n in allowed if states[n] == "open"]
        if healthy[:1] != allowed[:1]:
            reason = "health"
        ordered = self.by_load(healthy)
        if ordered[:1] != healthy[:1]:
            reason = "load"
        why: dict[str, Any] = {"reason": reason, "language": language, "language_source": found.source}
        if language is None and found.language is not None:
            why["language_guess"] = found.language
        if found.probability is not None:
            why["language_probability"] = found.probability
        why["candidates"] = ordered
        if skipped:
            why["skipped"] = skipped
        # every engine open: failover says why each one is skipped (and probes go on)
        chosen = ordered or skipped
        options = {"language": found.language} if found.confident and found.source != "hint" else {}
        return Route(tuple(self.engines[n] for n in chosen), why, options)

    def by_load(self, names: list[str]) -> list[str]:
        """``names`` with the least busy first when the first has ``max_queue`` calls in flight
        (busy: calls in flight × its time per audio second)."""
        if len(names) < 2 or self.stats.of(names[0]).in_flight < self.settings.max_queue:
            return names
        free = [n for n in names[1:] if self.stats.of(n).in_flight < self.settings.max_queue]
        if not free:
            return names
        best = min(free, key=lambda n: (self.stats.of(n).in_flight + 1) * (self.stats.of(n).rtf or 1.0))
        return [best, *(n for n in names if n != best)]

    def table(self) -> dict[str, Any]:
        """The routing table with live figures (``GET /v1/routing``, ``asrhub providers``)."""
        languages = {}
        for language in self.rules.table:
            names, _ = self.rules.ordered(None if language == ANY else language)
            languages[language] = names
        engines = {}
        for name, engine in self.engines.items():
            langs = engine.capabilities.languages
            shown: list[str] | int | str = (
                "any" if langs is None else list(langs) if len(langs) <= 8 else len(langs)
            )
            engines[name] = {
                "state": self.breakers.of(engine).state,
                "languages": shown,
                **self.stats.of(name).as_dict(),
            }
        return {
            "languages": languages,
            "detect_with": self.settings.detect_with if self.identify is not None else None,
            "detect_among": list(self.settings.detect_among),
            "engines": engines,
        }


class SessionRouter:
    """One session's :class:`~asrhub.plugin.UtteranceRouter`: its key's policy and its language."""

    def __init__(self, router: Router, policy: KeyRouting, language: SessionLanguage) -> None:
        self.router, self.policy, self.language = router, policy, language
        self.latest: Route | None = None
        """The session's latest route: its first engine makes the partials of the next utterance."""

    async def route(self, samples: Samples, config: SessionConfig) -> Route:
        hint = config.fixed_language
        if hint is not None:
            found = Identified(base_language(hint), "hint", None, True)
        else:
            among = tuple(base_language(x) for x in config.languages) or self.router.settings.detect_among
            found = await self.language.of(samples, among)
        self.latest = route = self.router.plan(found, self.policy)
        return route

    def partial(self, samples: Samples, **options: Any) -> Any:
        route = self.latest
        hint = options.get("language")
        if route is None and isinstance(hint, str):  # the client named the language: route now
            route = self.latest = self.router.plan(
                Identified(base_language(hint), "hint", None, True), self.policy
            )
        if route is None or not route.providers:
            return None
        engine = route.providers[0]
        start = getattr(engine, "try_partial", None)  # an engine that re-decodes (whisper)
        if start is None or self.router.breakers.of(engine).state != "closed":
            return None
        return start(samples, **{**options, **route.options})
