"""Choose a provider for a destination: weighted random among those serving its country."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from smsgw.providers.base import Provider

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    weight: float
    countries: frozenset[str]  # ISO codes; empty means every country

    def serves(self, country: str) -> bool:
        return not self.countries or country in self.countries


class Router:
    def __init__(self, routes: Sequence[Route], rng: random.Random | None = None) -> None:
        if not routes:
            raise ValueError("at least one provider route is needed")
        self._routes = tuple(routes)
        self._rng = rng or random.Random()
        self._by_country: dict[str, tuple[Route, ...]] = {}

    @property
    def providers(self) -> tuple[Provider, ...]:
        return tuple(route.provider for route in self._routes)

    def serves(self, country: str) -> bool:
        return bool(self._candidates(country))

    def pick(self, country: str, avoid: Collection[str] = ()) -> Provider | None:
        """A provider for `country`, preferring ones not in `avoid` (those that failed it).

        Falls back to an avoided provider when nothing else serves the country: a second try
        at the same provider beats giving up on the message.
        """
        candidates = self._candidates(country)
        if avoid:
            fresh = tuple(route for route in candidates if route.provider.name not in avoid)
            candidates = fresh or candidates
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0].provider
        chosen = self._rng.choices(candidates, weights=[r.weight for r in candidates])[0]
        return chosen.provider

    def _candidates(self, country: str) -> tuple[Route, ...]:
        cached = self._by_country.get(country)
        if cached is None:
            cached = tuple(route for route in self._routes if route.serves(country))
            self._by_country[country] = cached
        return cached
