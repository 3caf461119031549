"""The latency sketch's percentiles stay within its stated error of the exact ones, also after merging and subtracting."""

from __future__ import annotations

import random

import pytest

from tracetui.model import sketch
from tracetui.query.stats import percentile

QUANTILES = (0, 1, 50, 90, 95, 99, 99.9, 100)


def _latencies(rng: random.Random, n: int) -> list[int]:
    """Call durations in ns as agent traffic has them: mostly 0.2-3 s, a long tail, some zeros and 1 ns values."""
    values = [int(rng.lognormvariate(20.5, 0.8)) for _ in range(n)]
    values += [0] * (n // 50) + [1] * (n // 100) + [int(rng.uniform(60e9, 120e9)) for _ in range(n // 200)]
    return values


def _within_bound(approx: float | None, exact: float | None) -> bool:
    assert approx is not None and exact is not None
    return abs(approx - exact) <= sketch.ALPHA * exact * (1 + 1e-9) + 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_within_the_stated_error(seed):
    rng = random.Random(seed)
    values = _latencies(rng, rng.randint(1, 5000))
    counts = sketch.add({}, values)
    ordered = sorted(values)
    for q in QUANTILES:
        assert _within_bound(sketch.percentile(counts, q), percentile(ordered, q)), q


def test_merged_and_subtracted_sketches_equal_the_sketch_of_what_remains():
    rng = random.Random(7)
    kept, gone = _latencies(rng, 3000), _latencies(rng, 1000)
    everything = sketch.merge(sketch.add({}, kept), sketch.add({}, gone))
    remaining = sketch.merge(everything, {index: -count for index, count in sketch.add({}, gone).items()})
    assert remaining == sketch.add({}, kept)
    for q in QUANTILES:
        assert _within_bound(sketch.percentile(remaining, q), percentile(sorted(kept), q))


def test_empty_and_single_value():
    assert sketch.percentile({}, 50) is None
    assert sketch.percentile(sketch.merge({3: 1}, {3: -1}), 50) is None
    only = sketch.add({}, [1_234_567])
    assert _within_bound(sketch.percentile(only, 99), 1_234_567)
    assert sketch.percentile(sketch.add({}, [0, 0]), 50) == 0.0


def test_a_bad_quantile_is_refused():
    with pytest.raises(ValueError):
        sketch.percentile({0: 1}, 101)
