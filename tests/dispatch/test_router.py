"""Router: weighted choice among the providers serving a country, avoiding failed ones."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from smsgw.dispatch.router import Route, Router
from smsgw.providers.console import ConsoleProvider
from smsgw.settings import BreakerSettings, ConsoleProviderSettings

pytestmark = pytest.mark.timeout(30)


def route(name: str, weight: float = 1.0, countries: tuple[str, ...] = ()) -> Route:
    provider = ConsoleProvider(ConsoleProviderSettings(name=name))
    return Route(provider=provider, weight=weight, countries=frozenset(countries))


def picks(router: Router, country: str, n: int, avoid: tuple[str, ...] = ()) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        provider = router.pick(country, avoid=avoid)
        counts[provider.name if provider else "none"] += 1
    return counts


def test_weighted_choice_is_roughly_proportional() -> None:
    router = Router([route("a", 60), route("b", 30), route("c", 10)], rng=random.Random(1234))
    counts = picks(router, "US", 10_000)
    assert set(counts) == {"a", "b", "c"}
    assert 5700 <= counts["a"] <= 6300
    assert 2700 <= counts["b"] <= 3300
    assert 800 <= counts["c"] <= 1200


def test_same_seed_same_choices() -> None:
    routes = [route("a", 1), route("b", 1)]

    def sequence(seed: int) -> list[str]:
        router = Router(routes, rng=random.Random(seed))
        return [p.name if p else "none" for p in (router.pick("US") for _ in range(50))]

    assert sequence(7) == sequence(7)
    assert set(sequence(7)) == {"a", "b"}
    assert sequence(7) != sequence(8)


def test_only_providers_serving_the_country_are_chosen() -> None:
    router = Router(
        [route("us-only", 10, ("US", "CA")), route("in-only", 10, ("IN",)), route("anywhere", 1)],
        rng=random.Random(5),
    )
    us = picks(router, "US", 2000)
    assert set(us) == {"us-only", "anywhere"}
    assert us["us-only"] > us["anywhere"] * 4  # weights 10:1 among the two
    assert set(picks(router, "IN", 500)) == {"in-only", "anywhere"}
    assert set(picks(router, "FR", 200)) == {"anywhere"}


def test_no_provider_for_a_country_gives_none() -> None:
    router = Router([route("us", 1, ("US",)), route("in", 1, ("IN",))])
    assert router.pick("FR") is None
    assert router.pick("FR", avoid=("us",)) is None


def test_serves() -> None:
    router = Router([route("us", 1, ("US",)), route("gb", 1, ("GB",))])
    assert router.serves("US")
    assert router.serves("GB")
    assert not router.serves("FR")
    assert Router([route("all")]).serves("FR")


def test_route_serves() -> None:
    assert route("all").serves("ZZ")
    assert route("us", countries=("US",)).serves("US")
    assert not route("us", countries=("US",)).serves("CA")


def test_avoided_providers_are_skipped_while_others_serve() -> None:
    router = Router([route("a", 1000), route("b", 1), route("c", 1)], rng=random.Random(3))
    assert set(picks(router, "US", 500, avoid=("a",))) == {"b", "c"}
    assert set(picks(router, "US", 200, avoid=("a", "b"))) == {"c"}


def test_avoid_only_counts_providers_serving_the_country() -> None:
    router = Router([route("us", 1, ("US",)), route("in", 1, ("IN",))])
    # "in" is fresh but does not serve US: the avoided "us" is still the fallback.
    assert set(picks(router, "US", 50, avoid=("us",))) == {"us"}


def test_falls_back_to_avoided_providers_when_nothing_else_serves() -> None:
    router = Router([route("a", 3), route("b", 1)], rng=random.Random(11))
    fallback = picks(router, "US", 2000, avoid=("a", "b"))
    assert set(fallback) == {"a", "b"}  # still weighted among all of them
    assert fallback["a"] > fallback["b"]
    single = Router([route("only")])
    assert set(picks(single, "US", 20, avoid=("only",))) == {"only"}


def test_providers_lists_every_route_in_order() -> None:
    router = Router([route("a"), route("b"), route("c")])
    assert [p.name for p in router.providers] == ["a", "b", "c"]


def test_at_least_one_route_is_needed() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Router([])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_open_circuit_is_skipped_then_probed_once_after_the_cooldown() -> None:
    clock = Clock()
    settings = BreakerSettings(failure_threshold=2, cooldown_s=30.0)
    router = Router(
        [route("a", 1000), route("b", 1)], rng=random.Random(3), breaker=settings, clock=clock
    )
    router.report("a", "failed")
    router.report("a", "failed")
    assert router.breaker_states()["a"] == "open"
    assert picks(router, "US", 200) == Counter({"b": 200})
    assert router.transitions[("a", "open")] == 1

    clock.now += 30.0
    probe = router.pick("US")
    assert probe is not None
    assert probe.name == "a"  # weight 1000: the probe goes to a
    assert router.breaker_states()["a"] == "half_open"
    # While the probe is out, everything else goes to b.
    assert picks(router, "US", 50) == Counter({"b": 50})
    router.report("a", "ok")
    assert router.breaker_states()["a"] == "closed"
    assert picks(router, "US", 200)["a"] > 150


def test_a_throttled_probe_gives_the_probe_back() -> None:
    clock = Clock()
    router = Router(
        [route("a")], breaker=BreakerSettings(failure_threshold=1, cooldown_s=5.0), clock=clock
    )
    router.report("a", "failed")
    assert router.pick("US") is None  # open, and nothing else serves US
    clock.now += 5.0
    assert router.pick("US") is not None  # the probe
    assert router.pick("US") is None  # one probe at a time
    router.report("a", "none")  # throttled: no verdict
    assert router.pick("US") is not None  # another message may probe


def test_a_provider_with_all_its_share_in_flight_yields_to_another() -> None:
    router = Router([route("a", 1000), route("b", 1)], rng=random.Random(5), max_in_flight=2)
    picked = [router.pick("US") for _ in range(3)]
    assert [p.name for p in picked if p] == ["a", "a", "b"]  # a holds its share: b takes it
    router.report("a", "ok")
    again = router.pick("US")
    assert again is not None
    assert again.name == "a"


def test_the_only_provider_is_never_capped() -> None:
    router = Router([route("a")], max_in_flight=1)
    assert all(router.pick("US") is not None for _ in range(5))
