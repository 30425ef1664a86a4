"""Stability of a cell over its TTT trajectory, and aggregation over seeds."""

from __future__ import annotations

import math
import statistics

from catalyst_ttt.config import StabilityConfig

# Two-sided 95% Student-t quantiles by degrees of freedom (normal beyond the table).
T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def trajectory_stability(steps: list[int], correct: list[list[bool]]) -> dict[str, float]:
    """start/peak/final/drawdown/auc of accuracy, and per-item flips between evaluations."""
    accuracy = [sum(c) / len(c) if c else 0.0 for c in correct]
    if len(steps) > 1:
        area = sum((b - a) * (x + y) / 2 for a, b, x, y in zip(steps, steps[1:], accuracy, accuracy[1:]))
        auc = area / (steps[-1] - steps[0])
    else:
        auc = accuracy[0] if accuracy else 0.0
    c2w = w2c = 0
    for before, after in zip(correct, correct[1:]):
        c2w += sum(b and not a for b, a in zip(before, after))
        w2c += sum(a and not b for b, a in zip(before, after))
    return {
        "stab/start": accuracy[0] if accuracy else 0.0,
        "stab/peak": max(accuracy, default=0.0),
        "stab/final": accuracy[-1] if accuracy else 0.0,
        "stab/drawdown": max(accuracy, default=0.0) - (accuracy[-1] if accuracy else 0.0),
        "stab/auc": auc,
        "stab/flips_c2w": float(c2w),
        "stab/flips_w2c": float(w2c),
    }


def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean, sample std and the half-width of a 95% t-interval (0 for one value)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": math.nan, "std": math.nan, "ci95": math.nan, "n": 0}
    n = len(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    df = n - 1
    t = T_975.get(df) or (T_975[max(k for k in T_975 if k <= df)] if df > 0 else 0.0)
    if df > 30:
        t = 1.96
    return {"mean": statistics.fmean(values), "std": std, "ci95": t * std / math.sqrt(n) if n > 1 else 0.0, "n": n}


def stability_verdict(
    start: float, final: float, drawdown: float, seed_std: float, collapse: float, rule: StabilityConfig
) -> tuple[bool, list[str]]:
    """Whether a (regime, signal) group is stable, and the reasons it is not."""
    reasons = []
    if final < start - rule.max_drop:
        reasons.append(f"final {final:.3f} < start {start:.3f} - {rule.max_drop}")
    if drawdown > rule.max_drawdown:
        reasons.append(f"drawdown {drawdown:.3f} > {rule.max_drawdown}")
    if seed_std > rule.max_seed_std:
        reasons.append(f"seed std {seed_std:.3f} > {rule.max_seed_std}")
    if collapse > rule.max_collapse:
        reasons.append(f"collapse {collapse:.3f} > {rule.max_collapse}")
    return not reasons, reasons


def describe_rule(rule: StabilityConfig) -> str:
    return (
        f"stable = final >= start - {rule.max_drop}, drawdown <= {rule.max_drawdown}, "
        f"seed std of final <= {rule.max_seed_std}, collapse <= {rule.max_collapse}"
    )
