from __future__ import annotations

import math

import pytest

from llmopt import errors
from llmopt.inference.routing import (
    BUCKETS,
    ChampionChallengerRouter,
    TrafficMode,
    TrafficPolicy,
    Variant,
    bucket_of,
)

SPLIT10 = TrafficPolicy("m", TrafficMode.SPLIT, 10.0)


def _bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def test_split_10_percent_of_10000_random_requests_is_within_bounds() -> None:
    router = ChampionChallengerRouter(seed=123)
    hits = sum(router.choose(SPLIT10, True) is Variant.CHALLENGER for _ in range(10_000))
    lo, hi = _bounds(10_000, 0.10)
    assert lo <= hits <= hi


def test_split_10_percent_over_10000_distinct_routing_keys_is_within_bounds() -> None:
    router = ChampionChallengerRouter(seed=1)
    hits = sum(
        router.choose(SPLIT10, True, f"user-{i}") is Variant.CHALLENGER for i in range(10_000)
    )
    lo, hi = _bounds(10_000, 0.10)
    assert lo <= hits <= hi


def test_sticky_keys_get_the_same_variant_every_time_and_across_routers() -> None:
    a, b = ChampionChallengerRouter(seed=1), ChampionChallengerRouter(seed=2)
    for i in range(500):
        key = f"k{i}"
        first = a.choose(SPLIT10, True, key)
        assert all(a.choose(SPLIT10, True, key) is first for _ in range(5))
        assert b.choose(SPLIT10, True, key) is first


def test_raising_the_share_only_moves_keys_to_the_challenger() -> None:
    router = ChampionChallengerRouter()
    low = TrafficPolicy("m", TrafficMode.SPLIT, 10.0)
    high = TrafficPolicy("m", TrafficMode.SPLIT, 30.0)
    for i in range(2_000):
        if router.choose(low, True, str(i)) is Variant.CHALLENGER:
            assert router.choose(high, True, str(i)) is Variant.CHALLENGER


def test_buckets_depend_on_the_model() -> None:
    keys = [str(i) for i in range(200)]
    assert [bucket_of("a", k) for k in keys] != [bucket_of("b", k) for k in keys]


@pytest.mark.parametrize(
    ("policy", "has_challenger", "expected"),
    [
        (TrafficPolicy("m", TrafficMode.OFF, 50.0), True, Variant.CHAMPION),
        (TrafficPolicy("m", TrafficMode.SHADOW, 50.0), True, Variant.CHAMPION),
        (TrafficPolicy("m", TrafficMode.SPLIT, 100.0), False, Variant.CHAMPION),
        (TrafficPolicy("m", TrafficMode.SPLIT, 100.0), True, Variant.CHALLENGER),
        (TrafficPolicy("m", TrafficMode.SPLIT, 0.0), True, Variant.CHAMPION),
    ],
)
def test_modes(policy: TrafficPolicy, has_challenger: bool, expected: Variant) -> None:
    router = ChampionChallengerRouter(seed=0)
    assert all(router.choose(policy, has_challenger) is expected for _ in range(200))


def test_resolution_is_one_hundredth_of_a_percent() -> None:
    assert TrafficPolicy("m", TrafficMode.SPLIT, 0.01).challenger_buckets == 1
    assert TrafficPolicy("m", TrafficMode.SPLIT, 33.33).challenger_buckets == 3333
    for bad in (-0.01, 100.01, 10.005, float("nan")):
        with pytest.raises(errors.InvalidArgument, match="challenger_percent"):
            TrafficPolicy("m", TrafficMode.SPLIT, bad)


def _key_in_bucket(model: str, bucket: int) -> str:
    """A routing key whose sticky bucket is ``bucket`` (found by search: no table to read)."""
    for i in range(2_000_000):
        if bucket_of(model, f"key-{i}") == bucket:
            return f"key-{i}"
    raise AssertionError(f"no key found for bucket {bucket}")


class _FixedDraw:
    """A stand-in generator whose draw lands in one chosen bucket."""

    def __init__(self, bucket: int) -> None:
        self.value = (bucket + 0.5) / BUCKETS

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("percent", "last_challenger", "first_champion"),
    [
        (0.0, None, 0),
        (0.01, 0, 1),
        (33.33, 3332, 3333),
        (50.0, 4999, 5000),
        (100.0, BUCKETS - 1, None),
    ],
)
def test_the_share_boundary_buckets_route_exactly(
    percent: float, last_challenger: int | None, first_champion: int | None
) -> None:
    """Buckets below the share go to the challenger, the share's own bucket to the champion:
    a 1-in-10,000 bias at the boundary, which no statistical bound can see, fails here."""
    policy = TrafficPolicy("m", TrafficMode.SPLIT, percent)
    router = ChampionChallengerRouter(seed=0)
    cases = [(last_challenger, Variant.CHALLENGER), (first_champion, Variant.CHAMPION)]
    for bucket, expected in cases:
        if bucket is None:
            continue
        key = _key_in_bucket("m", bucket)
        assert router.choose(policy, True, key) is expected, (bucket, "sticky")
        router._rng = _FixedDraw(bucket)  # type: ignore[assignment]
        assert router.choose(policy, True) is expected, (bucket, "random")


def test_docstring_examples() -> None:
    import doctest

    from llmopt.inference import routing

    failures, tried = doctest.testmod(routing, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
