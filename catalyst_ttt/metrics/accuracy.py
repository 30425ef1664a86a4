"""Answer accuracy over greedy and sampled completions."""

from __future__ import annotations

from math import comb
from typing import Callable

from catalyst_ttt.signals import majority_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def maj_at_k(answers: list[str | None], gold: str, equal: Callable[[str | None, str], bool]) -> float:
    """1 if the majority of the sampled answers equals the gold one under the task's `equal`
    (votes and ties as the `majority` reward counts them)."""
    return float(equal(majority_answer(answers, equal), gold))


def agreement(answers: list[str | None], hits: int) -> dict[str, float]:
    """collapse: all k samples give the same wrong answer; diversity: distinct answers given."""
    distinct = {a for a in answers if a is not None}
    collapsed = len(distinct) == 1 and None not in answers and hits == 0
    return {"samples/collapse": float(collapsed), "samples/diversity": float(len(distinct))}
