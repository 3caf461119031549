"""A mergeable latency sketch with a stated error: logarithmic buckets (issue 19).

The Stats screen's percentiles are exact today because it reads every call. To
read aggregates instead (per time bucket and group, summed in SQL), a
percentile must come from counts that can be added and subtracted. This sketch
is those counts: a value ``v >= 1`` goes to bucket ``ceil(log_gamma(v))`` with
``gamma = (1 + ALPHA) / (1 - ALPHA)``. Every value in bucket ``i`` lies in
``(gamma**(i-1), gamma**i]``, and the bucket's representative value
``2 * gamma**i / (gamma + 1)`` is within ``ALPHA`` (relative) of every value in it.
Values below 1 (zero durations) have a bucket of their own, read as 0.

**Error bound**, precisely: :func:`percentile` uses the same definition as
``tracetui.query.stats.percentile`` (linear interpolation between the two
closest ranks, ``h = (n - 1) * q / 100``). The sketch knows every rank exactly
(counts are exact), so it picks the same two calls; each one's value is known within
``ALPHA`` relative, and so is any weighted mean of the two. The result is
within ``ALPHA`` (1 %) of the exact percentile, with no rank error. The only
extra error is floating-point rounding at bucket edges (about 1e-12 relative).
Labels on screen and in JSON: :data:`METHOD`.

Sketches merge by adding counts per bucket and subtract by taking them away again
(a trace whose calls change), so they can be kept per time bucket by the writer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Relative error of every value read back from the sketch.
ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
#: The bucket of values below 1 (read back as 0).
ZERO_BUCKET = -1
#: How percentiles from this sketch are labelled (the Stats screen, ``tracetui stats --json``).
METHOD = f"log-bucket sketch, within {ALPHA:.0%} of the exact value"


def bucket(value: float) -> int:
    """The bucket of ``value`` (nanoseconds, or any unit where 1 is the smallest value that matters)."""
    if value < 1:
        return ZERO_BUCKET
    return max(0, math.ceil(math.log(value) / _LOG_GAMMA))


def representative(index: int) -> float:
    """The value read back for bucket ``index``: within ALPHA of every value the bucket holds."""
    if index == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


def add(counts: dict[int, int], values: Iterable[float]) -> dict[int, int]:
    """Count ``values`` into ``counts`` (in place; returned for convenience)."""
    for value in values:
        index = bucket(value)
        counts[index] = counts.get(index, 0) + 1
    return counts


def merge(*sketches: Mapping[int, int]) -> dict[int, int]:
    """The sum of sketches; buckets whose count drops to zero are left out (subtracting is adding negatives)."""
    out: dict[int, int] = {}
    for sketch in sketches:
        for index, count in sketch.items():
            out[index] = out.get(index, 0) + count
    return {index: count for index, count in out.items() if count}


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0..100) of the sketched values, within ALPHA of the exact one; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], not {q!r}")
    ordered = sorted((index, count) for index, count in counts.items() if count > 0)
    n = sum(count for _, count in ordered)
    if n == 0:
        return None
    h = (n - 1) * q / 100
    lo = math.floor(h)
    low = _value_at(ordered, lo)
    if lo >= n - 1:
        return low
    return low + (h - lo) * (_value_at(ordered, lo + 1) - low)


def sample(counts: Mapping[int, int], size: int) -> list[float]:
    """At most ``size`` values at evenly spaced ranks, ascending: the distribution's shape (for a histogram)."""
    ordered = sorted((index, count) for index, count in counts.items() if count > 0)
    n = sum(count for _, count in ordered)
    if n == 0 or size <= 0:
        return []
    m = min(n, size)
    out: list[float] = []
    seen, position = 0, 0
    for index, count in ordered:
        seen += count
        value = representative(index)
        while position < m and (position * n + n // 2) // m < seen:  # rank of the position-th value
            out.append(value)
            position += 1
    return out


def _value_at(ordered: list[tuple[int, int]], rank: int) -> float:
    """The representative value of the call at 0-based ``rank`` in ascending order."""
    seen = 0
    for index, count in ordered:
        seen += count
        if rank < seen:
            return representative(index)
    return representative(ordered[-1][0])
