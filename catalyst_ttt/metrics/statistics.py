"""Intervals and tests over replicates (docs/statistics.md).

A replicate is one (base seed, seed) pair. For one metric it contributes a vector over the items of a
split (greedy 0/1 correctness, or the per-item difference of two such vectors on the same items) or a
single number when the metric has no items (drawdown, collapse, information gain).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # two-sided level of every test and 1 - coverage of every interval
MIN_REPLICATES = 3  # fewer replicates: no interval (a bootstrap over 1-2 replicates has no spread to speak of)
NO_INTERVAL = f"n<{MIN_REPLICATES} replicates: no interval"
BOOTSTRAP_DRAWS = 4000
BOOTSTRAP_SEED = 0  # fixed: the same store always gives the same report

ACCURACY = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)
UNBOUNDED = (-math.inf, math.inf)


@dataclass(frozen=True)
class Estimate:
    """A mean over replicates and items, with its 95% interval when there are enough replicates."""

    mean: float
    low: float | None
    high: float | None
    n: int  # replicates

    @property
    def has_interval(self) -> bool:
        return self.low is not None


def bootstrap(rows: Sequence[Sequence[float]], bounds: tuple[float, float] = UNBOUNDED) -> Estimate:
    """Mean of `rows` (replicates x items) with a percentile interval from a two-way bootstrap.

    Each draw resamples the replicates with replacement and, independently, the item indices — one
    set of indices shared by every replicate, since replicates evaluate the same items (a crossed
    design). A paired difference is bootstrapped by passing its per-item differences: both arms then
    use the same items by construction.
    """
    rows = [list(r) for r in rows if len(r) and not any(math.isnan(v) for v in r)]
    if not rows:
        return Estimate(math.nan, None, None, 0)
    if len({len(r) for r in rows}) > 1:  # replicates on different items cannot be crossed: use their means
        rows = [[sum(r) / len(r)] for r in rows]
    data = np.asarray(rows, dtype=float)
    mean = float(data.mean())
    replicates, items = data.shape
    if replicates < MIN_REPLICATES:
        return Estimate(mean, None, None, replicates)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # Resampling with replacement = multinomial counts; a draw's mean is w' X c / (R I).
    row_counts = rng.multinomial(replicates, [1 / replicates] * replicates, size=BOOTSTRAP_DRAWS)
    item_counts = rng.multinomial(items, [1 / items] * items, size=BOOTSTRAP_DRAWS)
    means = np.einsum("br,ri,bi->b", row_counts, data, item_counts) / (replicates * items)
    low, high = np.percentile(means, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Estimate(mean, _clip(float(low), bounds), _clip(float(high), bounds), replicates)


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def differences(new: Sequence[Sequence[int]], old: Sequence[Sequence[int]]) -> list[list[int]]:
    """Per replicate, per item: new − old (both arms on the same items, in the same order)."""
    return [[a - b for a, b in zip(n, o, strict=True)] for n, o in zip(new, old, strict=True)]


@dataclass(frozen=True)
class PairedTest:
    """Exact McNemar test on pooled discordant pairs: `gains` items right only in the new arm."""

    gains: int
    losses: int
    p: float
    per_replicate: tuple[float, ...]  # each replicate's own exact McNemar p

    @property
    def higher(self) -> bool:
        """The new arm is significantly above the old one."""
        return self.p < ALPHA and self.gains > self.losses

    @property
    def lower(self) -> bool:
        return self.p < ALPHA and self.losses > self.gains

    def describe(self) -> str:
        return f"McNemar p{'' if self.p < 1e-3 else '='}{format_p(self.p)} ({self.gains} up, {self.losses} down)"


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (doubled smaller tail, capped at 1)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2 * tail / 2**n)


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p of k or more successes by chance alone.

    Summed in log space: C(n, i) overflows a float for the item counts of real splits."""
    if k <= 0 or p >= 1:
        return 1.0
    if p <= 0 or k > n:
        return 0.0
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def mcnemar(new: Sequence[Sequence[int]], old: Sequence[Sequence[int]]) -> PairedTest:
    """Exact McNemar per replicate, combined by pooling the discordant pairs of all replicates."""
    per_replicate, gains, losses = [], 0, 0
    for diff in differences(new, old):
        up, down = diff.count(1), diff.count(-1)
        per_replicate.append(binomial_two_sided(up, up + down))
        gains, losses = gains + up, losses + down
    return PairedTest(gains, losses, binomial_two_sided(gains, gains + losses), tuple(per_replicate))


def format_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else "<0.001"


def variance_components(values: dict[tuple[int, int], float]) -> dict[str, float | None]:
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
