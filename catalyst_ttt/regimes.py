"""Catalyst data regimes: pure functions of (gold problems, seed) -> prompt/completion rows."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable

from catalyst_ttt.registry import Registry
from catalyst_ttt.schema import RegimeConfig
from catalyst_ttt.tasks.base import Problem, Task

Regime = Callable[[list[Problem], Task, RegimeConfig, int], list[dict]]
REGIMES: Registry[Regime] = Registry("regime")
# The traces whose IG under the reader calibrates the metric: gold must score above the corruptions.
CALIBRATION_REGIMES = ("correct", "swapped", "illogical", "corrupted")


def _row(task: Task, problem: Problem, steps: tuple[str, ...]) -> dict:
    """A catalyst row always keeps the problem's own gold answer."""
    return {"prompt": problem.prompt, "completion": task.render(steps, problem.answer)}


@REGIMES.register("none")
def no_catalyst(problems, task, cfg, seed) -> list[dict]:
    """The control: no catalyst phase at all."""
    return []


@REGIMES.register("answer_only")
def answer_only(problems, task, cfg, seed) -> list[dict]:
    """Prompt -> gold answer, no trace."""
    return [_row(task, p, ()) for p in problems]


@REGIMES.register("correct")
def correct(problems, task, cfg, seed) -> list[dict]:
    """Prompt -> gold trace -> gold answer."""
    return [_row(task, p, p.steps) for p in problems]


@REGIMES.register("swapped")
def swapped(problems, task, cfg, seed) -> list[dict]:
    """Each problem gets another problem's gold trace and keeps its own answer (Stechly et al.).

    Within a pool (same step count when `match_steps`), a random order is rotated by one, so no
    row keeps its own trace. Problems alone in their pool borrow from the whole set.
    """
    rng = random.Random(seed)
    pools: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        pools[p.num_steps if cfg.match_steps else 0].append(i)
    donor = {}
    for members in pools.values():
        order = rng.sample(members, len(members))
        for i, j in zip(order, order[1:] + order[:1]):
            donor[i] = j
    for i, j in donor.items():
        if i == j or problems[j].steps == problems[i].steps:
            others = [k for k in range(len(problems)) if problems[k].steps != problems[i].steps]
            donor[i] = rng.choice(others)
    return [_row(task, p, problems[donor[i]].steps) for i, p in enumerate(problems)]


@REGIMES.register("illogical")
def illogical(problems, task, cfg, seed) -> list[dict]:
    """True facts in a broken chain, gold answer (Schaeffer et al., arXiv 2307.10573): every step's
    output is its op applied to its stated input, but no step follows from the one before."""
    rng = random.Random(seed)
    return [_row(task, p, task.illogical_steps(p, rng)) for p in problems]


@REGIMES.register("corrupted")
def corrupted(problems, task, cfg, seed) -> list[dict]:
    """The gold structure (same ops, step count, format) with false step outputs, gold answer."""
    rng = random.Random(seed)
    return [_row(task, p, task.corrupted_steps(p, rng)) for p in problems]


def answer_leak(task: Task, problems: list[Problem], rows: list[dict]) -> dict[str, float]:
    """Share of rows whose trace ends in its problem's gold answer (the trace's own answer is it) and
    whose trace text holds that answer anywhere the prompt does not already show it: a corrupted trace
    that hands the answer over is a disguised correct one (docs/regimes.md)."""
    traces = [task.parse(row["completion"]).steps for row in rows]
    ends = [task.answers_equal(task.trace_answer(t), p.answer) for t, p in zip(traces, problems)]
    holds = [bool(t) and p.answer in task.render(t, "") and p.answer not in p.prompt for t, p in zip(traces, problems)]
    count = max(1, len(rows))
    return {"ends_in_answer": sum(ends) / count, "holds_answer": sum(holds) / count}


def catalyst_sample(pool: list[Problem], n: int, seed: int) -> list[Problem]:
    """The seeded sample of n problems of the catalyst pool a cell's catalyst is built from. A cell never
    asks for more than the pool holds (`config.check_sizes` refuses it)."""
    return random.Random(seed).sample(pool, min(n, len(pool)))
