"""Estimates, tests and multiplicity over replicates whose unit of inference is the base model
(docs/statistics.md).

A replicate is one (base seed, seed) pair. Replicates that share a base are not independent: the
base-to-base variance dominates the tiny testbed, and the `none` arm of ignition is one base for
every cell seed. So a metric is first averaged within each **unit**, then compared across units
with a t distribution (the two-stage, summary-statistic form of a random-effects model):

* with ≥ MIN_UNITS base seeds the unit is the base (its cell seeds and items averaged first): the
  claim holds *over base initialisations*;
* with fewer base seeds but ≥ MIN_UNITS replicates the unit is the replicate: the claim holds
  *for these bases* only (cell seeds are then the random part);
* with fewer than MIN_UNITS units there is no interval and no verdict.

Every p-value of a report is adjusted together (Benjamini–Hochberg, `adjust`). The whole verdict
machinery is checked by simulation under a known truth (`catalyst_ttt.simulation`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special  # scipy.stats is imported where used: it alone doubles a dry run's start-up

# Every verdict is a one-sided test at ALPHA (equivalence: two of them, TOST); intervals are the matching
# 1 - 2 * ALPHA = 90% two-sided intervals, so "the interval lies within / below / above" is the test.
ALPHA = 0.05
COVERAGE = 1 - 2 * ALPHA
POWER = 0.80  # the power the minimal detectable effect is quoted at
MIN_UNITS = 3  # fewer units: no interval, no verdict
BASES, REPLICATES = "over base initialisations", "for these bases"
NO_INTERVAL = f"n<{MIN_UNITS} units: no interval"

ACCURACY = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)
UNBOUNDED = (-math.inf, math.inf)

Replicate = tuple[int, int]  # (base seed, seed)


@dataclass(frozen=True)
class Estimate:
    """A mean over units with its 90% t interval (none below MIN_UNITS units)."""

    mean: float
    low: float | None
    high: float | None
    n: int  # units
    scope: str  # BASES or REPLICATES ("" when there is no unit)
    sd: float | None = None  # between-unit standard deviation

    @property
    def has_interval(self) -> bool:
        return self.low is not None


def units(values: Mapping[Replicate, float]) -> tuple[list[float], str]:
    """The unit means of per-replicate values and the claim's scope (see the module docstring)."""
    finite = {r: v for r, v in values.items() if not math.isnan(v)}
    by_base: dict[int, list[float]] = defaultdict(list)
    for (base_seed, _), value in sorted(finite.items()):
        by_base[base_seed].append(value)
    if len(by_base) >= MIN_UNITS:
        return [sum(v) / len(v) for v in by_base.values()], BASES
    return [finite[r] for r in sorted(finite)], REPLICATES if finite else ""


def estimate(values: Mapping[Replicate, float], bounds: tuple[float, float] = UNBOUNDED) -> Estimate:
    """Mean over units with the 90% t interval, clipped to the metric's range."""
    means, scope = units(values)
    if not means:
        return Estimate(math.nan, None, None, 0, "")
    mean = float(np.mean(means))
    if len(means) < MIN_UNITS:
        return Estimate(mean, None, None, len(means), scope)
    sd = float(np.std(means, ddof=1))
    half = t_quantile(1 - ALPHA, len(means) - 1) * sd / math.sqrt(len(means))
    return Estimate(mean, _clip(mean - half, bounds), _clip(mean + half, bounds), len(means), scope, sd)


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def t_quantile(q: float, dof: int) -> float:
    """Student's t quantile (scipy's `stdtrit`: `stats.t.ppf` without its per-call overhead)."""
    return float(special.stdtrit(dof, q))


def one_sided_p(means: Sequence[float], null: float, alternative: str) -> float:
    """p of a one-sided one-sample t test of the unit means against `null` ("greater" or "less"): what
    `scipy.stats.ttest_1samp` gives (tested), through `special.stdtr` since simulations call it millions
    of times."""
    data = np.asarray(means, dtype=float)
    if len(data) < MIN_UNITS:
        return 1.0
    sd = float(np.std(data, ddof=1))
    if sd == 0:  # no spread: the t statistic is infinite or undefined
        beyond = data[0] > null if alternative == "greater" else data[0] < null
        return 0.0 if beyond else 1.0
    t = (float(data.mean()) - null) / (sd / math.sqrt(len(data)))
    return float(special.stdtr(len(data) - 1, -t if alternative == "greater" else t))


def adjust(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values over one family (a report's every test)."""
    from scipy import stats

    if not len(pvalues):
        return []
    return [float(p) for p in stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")]


def floor_p(new: Sequence[int], old: Sequence[int]) -> float:
    """One replicate, same items: the exact one-sided McNemar p that `new` is right more often than `old`
    (the gate of a TTT cell: is its start above the base it came from?)."""
    from scipy import stats

    up = sum(a > b for a, b in zip(new, old, strict=True))
    down = sum(a < b for a, b in zip(new, old, strict=True))
    return float(stats.binomtest(up, up + down, 0.5, alternative="greater").pvalue) if up + down else 1.0


def detectable_effect(sd: float | None, n: int) -> float | None:
    """The smallest true mean a one-sided t test over n units with between-unit sd `sd` finds with
    probability POWER at level ALPHA (the usual approximation to the noncentral t)."""
    if sd is None or n < MIN_UNITS:
        return None
    dof = n - 1
    return (t_quantile(1 - ALPHA, dof) + t_quantile(POWER, dof)) * sd / math.sqrt(n)


def units_to_decide(mean: float, sd: float | None, margin: float) -> int | None:
    """About how many units an interval of this mean and sd needs to lie within ±margin (|mean| < margin)
    or below -margin (mean < -margin); None where more units would not decide it."""
    from scipy import stats

    distance = margin - abs(mean) if abs(mean) < margin else -margin - mean
    if sd is None or sd == 0 or distance <= 0:
        return None
    n = max(MIN_UNITS, math.ceil((stats.norm.ppf(1 - ALPHA) * sd / distance) ** 2))
    while t_quantile(1 - ALPHA, n - 1) * sd / math.sqrt(n) >= distance:
        n += 1
    return n


def format_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else "<0.001"


def variance_components(values: dict[Replicate, float]) -> dict[str, float | None]:
    """Split the between-replicate variance of a metric into base-to-base and cell-to-cell parts.

    `values` maps (base seed, seed) to the replicate's value. Cell-to-cell: the pooled variance across
    seeds within a base seed. Base-to-base: the variance of the base-seed means minus the part that
    cell-to-cell noise alone puts there (one-way random-effects moments estimate, floored at 0).
    None where the design cannot tell (one base seed; no base seed with two seeds).
    """
    by_base: dict[int, list[float]] = defaultdict(list)
    for (base_seed, _), value in sorted(values.items()):
        if not math.isnan(value):
            by_base[base_seed].append(value)
    dof = sum(len(v) - 1 for v in by_base.values())
    squares = sum(sum((x - sum(v) / len(v)) ** 2 for x in v) for v in by_base.values())
    cell = squares / dof if dof else None
    base = None
    if len(by_base) > 1:
        means = [sum(v) / len(v) for v in by_base.values()]
        between = float(np.var(means, ddof=1))
        per_base = len(by_base) / sum(1 / len(v) for v in by_base.values())  # harmonic mean of seeds per base
        base = max(0.0, between - (cell or 0.0) / per_base)
    total = (base or 0.0) + (cell or 0.0)
    share = base / total if base is not None and cell is not None and total > 0 else None
    return {"base": base, "cell": cell, "base_share": share}
