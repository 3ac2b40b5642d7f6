"""Choose a provider for a destination: weighted random among the healthy ones serving its
country, each behind its own circuit breaker."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from smsgw.dispatch.breaker import CircuitBreaker, Transition
from smsgw.providers.base import Provider
from smsgw.settings import BreakerSettings

__all__ = ["Route", "Router", "Verdict"]

_log = structlog.get_logger("smsgw.dispatch")

# What a send said about the provider's health: "none" for answers that say nothing
# (throttled, or the message was dropped before the call).
Verdict = Literal["ok", "failed", "none"]


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    weight: float
    countries: frozenset[str]  # ISO codes; empty means every country
    breaker: CircuitBreaker | None = field(default=None, compare=False)
    # The most segments one message may take at this provider; None: no limit of its own.
    max_segments: int | None = None

    def serves(self, country: str, segments: int = 1) -> bool:
        if self.max_segments is not None and segments > self.max_segments:
            return False
        return not self.countries or country in self.countries


class Router:
    def __init__(
        self,
        routes: Sequence[Route],
        rng: random.Random | None = None,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int | None = None,
    ) -> None:
        """`max_in_flight`: sends one provider may have open while another provider could
        take the message instead (a bulkhead: a provider that hangs cannot hold every
        dispatcher worker). A provider that is the only choice is never capped."""
        if not routes:
            raise ValueError("at least one provider route is needed")
        if breaker is not None:
            routes = [
                Route(
                    r.provider,
                    r.weight,
                    r.countries,
                    self._breaker(r.provider, breaker, clock),
                    r.max_segments,
                )
                for r in routes
            ]
        self._routes = tuple(routes)
        self._by_name = {route.provider.name: route for route in self._routes}
        self._rng = rng or random.Random()
        self._by_country: dict[tuple[str, int], tuple[Route, ...]] = {}
        self._max_in_flight = max_in_flight
        self.in_flight: Counter[str] = Counter()
        # (provider, new state) -> how often; for health output and metrics.
        self.transitions: Counter[tuple[str, str]] = Counter()

    @property
    def providers(self) -> tuple[Provider, ...]:
        return tuple(route.provider for route in self._routes)

    def serves(self, country: str, segments: int = 1) -> bool:
        return bool(self._candidates(country, segments))

    def max_segments(self, country: str) -> int | None:
        """The longest message (in segments) some provider serving `country` accepts;
        None if one of them sets no limit."""
        limits = [r.max_segments for r in self._candidates(country, 1)]
        if not limits or None in limits:
            return None
        return max(limit for limit in limits if limit is not None)

    def is_open(self, provider: str) -> bool:
        """Whether `provider`'s circuit is open (it gets no traffic until a probe)."""
        breaker = self._by_name[provider].breaker
        return breaker is not None and breaker.state == "open"

    def breaker_states(self) -> dict[str, str]:
        return {
            name: route.breaker.state if route.breaker is not None else "closed"
            for name, route in self._by_name.items()
        }

    def pick(self, country: str, avoid: Collection[str] = (), segments: int = 1) -> Provider | None:
        """A provider for `country` whose circuit lets a call through now, preferring ones
        not in `avoid` (those that failed this message); None if none can take it now.

        Falls back to an avoided provider when nothing else serves the country: a second try
        at the same provider beats giving up on the message. The caller must report() the
        call's verdict: in half-open state the pick is the provider's one probe.
        """
        serving = self._candidates(country, segments)
        if len(serving) == 1:
            # The common case, without the filtering below: with one provider the in-flight
            # cap and `avoid` would fall back to it anyway.
            route = serving[0]
            if route.breaker is not None and not route.breaker.allow():
                return None
            self.in_flight[route.provider.name] += 1
            return route.provider
        candidates = tuple(r for r in serving if _may_call(r))
        if self._max_in_flight is not None and len(candidates) > 1:
            cap = self._max_in_flight
            roomy = tuple(r for r in candidates if self.in_flight[r.provider.name] < cap)
            candidates = roomy or candidates
        if avoid:
            fresh = tuple(route for route in candidates if route.provider.name not in avoid)
            candidates = fresh or candidates
        while candidates:
            if len(candidates) == 1:
                chosen = candidates[0]
            else:
                weights = [r.weight for r in candidates]
                chosen = self._rng.choices(candidates, weights=weights)[0]
            if chosen.breaker is None or chosen.breaker.allow():
                self.in_flight[chosen.provider.name] += 1
                return chosen.provider
            # Its probe went to another message meanwhile: choose among the rest.
            candidates = tuple(r for r in candidates if r is not chosen)
        return None

    def report(self, provider: str, verdict: Verdict) -> None:
        self.in_flight[provider] -= 1
        breaker = self._by_name[provider].breaker
        if breaker is None:
            return
        if verdict == "ok":
            breaker.record_success()
        elif verdict == "failed":
            breaker.record_failure()
        else:
            breaker.release()

    def _candidates(self, country: str, segments: int) -> tuple[Route, ...]:
        cached = self._by_country.get((country, segments))
        if cached is None:
            cached = tuple(route for route in self._routes if route.serves(country, segments))
            self._by_country[(country, segments)] = cached
        return cached

    def _breaker(
        self, provider: Provider, settings: BreakerSettings, clock: Callable[[], float]
    ) -> CircuitBreaker:
        name = provider.name

        def on_transition(transition: Transition) -> None:
            self.transitions[(name, transition.new)] += 1
            log = _log.warning if transition.new == "open" else _log.info
            log(
                "circuit_breaker",
                provider=name,
                old=transition.old,
                new=transition.new,
                reason=transition.reason,
            )

        return CircuitBreaker(
            settings.failure_threshold,
            settings.error_rate,
            settings.window_s,
            settings.min_calls,
            settings.cooldown_s,
            clock,
            on_transition=on_transition,
        )


def _may_call(route: Route) -> bool:
    return route.breaker is None or route.breaker.would_allow()
