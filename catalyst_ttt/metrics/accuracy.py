"""Answer accuracy over greedy and sampled completions."""

from __future__ import annotations

from math import comb
from typing import Callable

from catalyst_ttt.votes import votes_of


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def maj_at_k(answers: list[str | None], gold: str, equal: Callable[[str | None, str], bool], k: int | None = None):
    """The unbiased maj@k from n >= k sampled answers: the chance that the majority vote of k of them,
    drawn without replacement and kept in order, equals the gold answer under the task's `equal` (votes
    and ties as the `majority` reward counts them: unanswered samples do not vote, a tie goes to the vote
    seen first). k None: all n, a plain majority vote.

    Exact and in closed form: the k-subsets each vote wins are counted, never listed (C(32, 16) is 6e8)."""
    n = len(answers)
    k = n if k is None else k
    if not 1 <= k <= n:
        raise ValueError(f"maj@{k} needs 1 <= k <= {n} samples")
    votes = votes_of(answers, equal)
    vote_of = {answer: index for index, vote in enumerate(votes) for answer in vote}
    positions = [[i for i, answer in enumerate(answers) if vote_of.get(answer) == v] for v in range(len(votes))]
    abstained = answers.count(None)
    won = sum(_subsets_won(v, positions, abstained, k) for v, vote in enumerate(votes) if equal(vote[0], gold))
    return won / comb(n, k)


def _subsets_won(winner: int, positions: list[list[int]], abstained: int, k: int) -> int:
    """How many k-subsets vote `winner` wins: for each of its members as its first drawn one, and t
    votes for it, every other vote gets fewer than t, or exactly t drawn after that first member."""
    won = 0
    mine = positions[winner]
    for rank, first in enumerate(mine):
        later_mine = len(mine) - rank - 1
        for t in range(1, min(k, later_mine + 1) + 1):
            rest = k - t  # drawn from the other votes and the unanswered samples
            ways = [comb(abstained, x) for x in range(rest + 1)]  # coefficient of z^x: x samples drawn
            for other, seats in enumerate(positions):
                if other != winner:
                    after = sum(p > first for p in seats)
                    counts = [comb(len(seats), x) if x < t else comb(after, x) for x in range(min(t, rest) + 1)]
                    ways = _product(ways, counts, rest)
            won += comb(later_mine, t - 1) * ways[rest]
    return won


def _product(a: list[int], b: list[int], degree: int) -> list[int]:
    """The product of two polynomials (coefficient lists), up to `degree`."""
    out = [0] * (degree + 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b[: degree - i + 1]):
                out[i + j] += x * y
    return out


def agreement(answers: list[str | None], hits: int) -> dict[str, float]:
    """collapse: all k samples give the same wrong answer; diversity: distinct answers given."""
    distinct = {a for a in answers if a is not None}
    collapsed = len(distinct) == 1 and None not in answers and hits == 0
    return {"samples/collapse": float(collapsed), "samples/diversity": float(len(distinct))}
