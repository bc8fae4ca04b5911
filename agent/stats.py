"""Confidence intervals for success rates (Wilson score interval).

Why Wilson: with the small episode counts of robot evaluation (tens to hundreds) and rates near 0 or 1,
the normal approximation gives intervals outside [0, 1] or of zero width; Wilson's does not.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval [low, high] for `successes` out of `trials` (trials >= 1)."""
    if trials < 1:
        raise ValueError(f"wilson_interval: need at least one trial, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval: successes must be in [0, {trials}], got {successes}")
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # At 0 or `trials` successes the bound is exactly 0 or 1; computed, it may miss by a rounding error.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def rate_summary(successes: int, trials: int) -> dict:
    """{"success_rate", "episodes", "successes", "ci95": [low, high]} rounded for a results file."""
    low, high = wilson_interval(successes, trials)
    return {"success_rate": round(successes / trials, 4), "episodes": int(trials), "successes": int(successes),
            "ci95": [round(low, 4), round(high, 4)]}
