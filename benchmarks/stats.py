"""Small statistics: the median of repeated runs with their spread, and percentiles."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 1, scale: float = 1.0) -> str:
        if not self.runs:
            return "n/a"
        m, lo, hi = (v * scale for v in (self.median, self.low, self.high))
        if self.runs == 1:
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


class Percentiles:
    """p50 and p99 of a run's ``samples``, for the run dataclasses that carry them."""

    samples: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank: an observed value, never interpolated."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ratio(value: float, reference: float) -> float:
    if not reference or reference != reference or value != value:
        return float("nan")
    return value / reference
