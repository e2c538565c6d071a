"""Summaries of repeated measurements, and the goals they are held to.

p99 is the nearest-rank percentile: with fewer than 100 samples it is the
largest, which is the honest reading of "the worst 1 %" of a short run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` 0.99 for p99) of a non-empty sample."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    """n, median, p99, min and max of `samples`, each multiplied by `scale` (1000: s -> ms)."""
    return {"n": len(samples),
            "median": round(statistics.median(samples) * scale, digits),
            "p99": round(percentile(samples, 0.99) * scale, digits),
            "min": round(min(samples) * scale, digits),
            "max": round(max(samples) * scale, digits)}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else math.inf


def verdict(value: float, *, at_most: float | None = None, at_least: float | None = None) -> str:
    """"met" or "missed" against one bound (the goals say which way each one goes)."""
    if at_most is not None and value > at_most:
        return "missed"
    if at_least is not None and value < at_least:
        return "missed"
    return "met"


def goal(name: str, value: float, unit: str, *, at_most: float | None = None,
         at_least: float | None = None) -> dict[str, Any]:
    """One figure held to its goal, as it appears in the JSON and the closing table."""
    bound = f"<= {at_most:g}" if at_most is not None else f">= {at_least:g}"
    return {"name": name, "value": value, "unit": unit, "goal": f"{bound} {unit}".strip(),
            "verdict": verdict(value, at_most=at_most, at_least=at_least)}
