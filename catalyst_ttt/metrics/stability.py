"""Stability of one cell over its TTT trajectory (the verdicts over replicates: metrics/aggregate.py)."""

from __future__ import annotations

import math

from catalyst_ttt.tracking import STEP

# The label-free early warning (`predictor_step`): per-step TTT diagnostics it reads, and its rule.
MAJORITY_RATIO, DISTINCT_ANSWERS = "ttrl/majority_ratio", "ttt/distinct_answers"  # neither reads a label
PREDICTOR_WINDOW = 3  # logged steps per window
PREDICTOR_RISE = 0.10  # the majority ratio's rise over the first window, absolute
PREDICTOR_FALL = 0.25  # the distinct answers' fall below the first window, as a share of it


def noise_allowance(accuracy: float, items: int) -> float:
    """Two binomial standard errors of an accuracy on `items` items, and never less than one item."""
    if items == 0:
        return 0.0
    return max(2 * math.sqrt(accuracy * (1 - accuracy) / items), 1 / items)


def trajectory_stability(steps: list[int], correct: list[list[bool]]) -> dict[str, float | int | None]:
    """start/peak/final/drawdown/auc of accuracy, per-item flips, and the step accuracy collapsed at.

    `stab/collapse_step` is the first evaluated TTT step from which accuracy stays below the start by
    more than `noise_allowance` of the start accuracy until the last evaluation; None if it never does.
    """
    accuracy = [sum(c) / len(c) if c else 0.0 for c in correct]
    if not accuracy:
        accuracy, steps = [0.0], [0]
    if len(steps) > 1:
        area = sum((b - a) * (x + y) / 2 for a, b, x, y in zip(steps, steps[1:], accuracy, accuracy[1:]))
        auc = area / (steps[-1] - steps[0])
    else:
        auc = accuracy[0]
    c2w = w2c = 0
    for before, after in zip(correct, correct[1:]):
        c2w += sum(b and not a for b, a in zip(before, after))
        w2c += sum(a and not b for b, a in zip(before, after))
    peak = max(accuracy)
    floor = accuracy[0] - noise_allowance(accuracy[0], len(correct[0]) if correct else 0)
    collapse_step = None
    for index in range(len(accuracy) - 1, 0, -1):  # walk back while accuracy stays below the floor
        if accuracy[index] >= floor:
            break
        collapse_step = steps[index]
    return {
        "stab/start": accuracy[0],
        "stab/peak": peak,
        "stab/peak_step": steps[accuracy.index(peak)],
        "stab/final": accuracy[-1],
        "stab/drawdown": peak - accuracy[-1],
        "stab/auc": auc,
        "stab/flips_c2w": float(c2w),
        "stab/flips_w2c": float(w2c),
        "stab/collapse_step": collapse_step,
    }


def predictor_step(history: list[dict]) -> int | None:
    """The first TTT step at which the label-free early warning fires, after URLVR's signs of model
    collapse (arXiv 2603.08660): answers converge while their diversity shrinks.

    Over the last PREDICTOR_WINDOW logged steps, the mean majority ratio has risen by PREDICTOR_RISE or
    more above its mean over the first PREDICTOR_WINDOW steps, and the mean number of distinct answers
    per group has fallen by PREDICTOR_FALL of its first-window mean or more. The two windows never
    overlap. None if it never fires, or fewer than two windows of steps were logged.
    """
    rows = [row for row in history if MAJORITY_RATIO in row and DISTINCT_ANSWERS in row]
    width = PREDICTOR_WINDOW

    def mean(key: str, window: list[dict]) -> float:
        return sum(row[key] for row in window) / len(window)

    first = rows[:width]
    for end in range(2 * width, len(rows) + 1):
        window = rows[end - width : end]
        converging = mean(MAJORITY_RATIO, window) >= mean(MAJORITY_RATIO, first) + PREDICTOR_RISE
        narrowing = mean(DISTINCT_ANSWERS, window) <= (1 - PREDICTOR_FALL) * mean(DISTINCT_ANSWERS, first)
        if converging and narrowing:
            return window[-1][STEP]
    return None


def early_warning(collapse_step: int | None, history: list[dict]) -> dict[str, int | None]:
    """stab/predictor_step, and stab/warning_lead: collapse step minus predictor step (> 0: it warned
    that many steps before the collapse; None unless both happened)."""
    fired = predictor_step(history)
    lead = None if fired is None or collapse_step is None else collapse_step - fired
    return {"stab/predictor_step": fired, "stab/warning_lead": lead}
