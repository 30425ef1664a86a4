"""`arith`: multi-digit addition, one step per column (digit + digit + carry = partial sum).

Prompt `347+485:`; gold completion `7+5+0=12;4+8+1=13;3+4+1=8#832`. Column i (right to left)
adds the operands' i-th digits and the carry of column i-1 (the tens of its partial sum).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from catalyst_ttt.tasks.base import (
    TASKS,
    AtomicProbe,
    Problem,
    SyntheticSplits,
    Task,
    insert_noise,
    sample_unique,
)


@dataclass
class ArithConfig(SyntheticSplits):
    """Column addition; its base corpus's chains are column steps, and its answer-only problems have fewer
    digits than any evaluated split."""

    digits: int = 3
    shift_digits: int = 5
    n_base_facts: int = 10000


def column_steps(a: int, b: int) -> tuple[str, ...]:
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(digits_a), len(digits_b))):
        x = int(digits_a[i]) if i < len(digits_a) else 0
        y = int(digits_b[i]) if i < len(digits_b) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total}")
        carry = total // 10
    return tuple(steps)


def parse_step(step: str) -> tuple[int, int, int, int] | None:
    left, eq, total = step.partition("=")
    parts = left.split("+")
    if not eq or len(parts) != 3:
        return None
    try:
        x, y, carry = (int(p) for p in parts)
        return x, y, carry, int(total)
    except ValueError:
        return None


def true_fact(step: str) -> bool:
    """Whether the step adds two digits and a carry of 0 or 1, and states their sum."""
    parsed = parse_step(step)
    if parsed is None:
        return False
    x, y, carry, total = parsed
    return 0 <= x <= 9 and 0 <= y <= 9 and carry in (0, 1) and total == x + y + carry


@TASKS.register("arith")
class Arith(Task):
    name = "arith"
    config_class = ArithConfig

    def __init__(self, cfg: ArithConfig):
        self.cfg = cfg
        longest = max(cfg.digits, cfg.shift_digits) + 1
        self.max_completion_chars = longest * len("9+9+1=19;") + longest + 2

    def make_problem(self, a: int, b: int, noise_rng: random.Random | None = None) -> Problem:
        prompt = f"{a}+{b}"
        if noise_rng is not None:
            prompt = insert_noise(prompt, noise_rng, self.cfg.noise_chars)
        return Problem(
            uid=f"{a}+{b}" + (":noisy" if noise_rng else ""),
            prompt=prompt + ":",
            steps=column_steps(a, b),
            answer=str(a + b),
            spec={"a": a, "b": b},
        )

    def _sample(self, rng, n, digits, taken, split: str, noisy=False) -> list[Problem]:
        low, high = 10 ** (digits - 1), 10**digits - 1
        keys = sample_unique(
            rng,
            n,
            lambda r: (r.randint(low, high), r.randint(low, high)),
            taken,
            in_space=lambda key: low <= key[0] <= high,
            space=(high - low + 1) ** 2,
            split=split,
        )
        return [self.make_problem(a, b, rng if noisy else None) for a, b in keys]

    @functools.cached_property
    def _splits(self) -> dict[str, list[Problem]]:
        cfg, taken = self.cfg, set()
        rng = random.Random(cfg.seed + 1)
        return {
            "train": self._sample(rng, cfg.n_train, cfg.digits, taken, "train"),
            "reader": self._sample(rng, cfg.n_reader, cfg.digits, taken, "reader"),
            "id": self._sample(rng, cfg.n_id, cfg.digits, taken, "id"),
            "heldout": self._sample(rng, cfg.n_heldout, cfg.digits, taken, "heldout"),
            "shift_length": self._sample(rng, cfg.n_shift, cfg.shift_digits, taken, "shift_length"),
            "shift_format": self._sample(rng, cfg.n_shift, cfg.digits, taken, "shift_format", noisy=True),
        }

    def splits(self) -> dict[str, list[Problem]]:
        return dict(self._splits)

    def base_corpus(self) -> list[str]:
        """Single-column facts, chained column steps of fresh problems, and answer-only problems with
        fewer digits than any evaluated split: never a prompt followed by its steps, nor an item of a split."""
        cfg = self.cfg
        rng = random.Random(cfg.seed + 2)
        facts = []
        for _ in range(cfg.n_base_facts):
            x, y, carry = rng.randrange(10), rng.randrange(10), rng.randrange(2)
            facts.append(f"{x}+{y}+{carry}={x + y + carry}")
        items = {(p.spec["a"], p.spec["b"]) for split in self._splits.values() for p in split}
        low, high = 10 ** (cfg.digits - 1), 10**cfg.digits - 1
        chains = []
        while len(chains) < cfg.n_base_chain:
            a, b = rng.randint(low, high), rng.randint(low, high)
            if (a, b) not in items:
                chains.append(";".join(column_steps(a, b)))
        short = 10 ** (cfg.digits - 1) - 1  # the largest operand with fewer digits than the task's
        answers = []
        for _ in range(cfg.n_base_answer_only):
            problem = self.make_problem(rng.randint(0, short), rng.randint(0, short))
            answers.append(problem.prompt + self.render((), problem.answer))
        return facts + chains + answers

    def expected_steps(self, problem: Problem) -> int:
        return max(len(str(problem.spec["a"])), len(str(problem.spec["b"])))

    def trace_answer(self, steps: tuple[str, ...]) -> str | None:
        """Each column's stated sum's ones digit, right to left, after the last column's carry."""
        sums = [parse_step(step) for step in steps]
        if not sums or None in sums:
            return None
        digits = "".join(str(total % 10) for *_, total in reversed(sums))
        return str(int(str(sums[-1][3] // 10) + digits))

    def atomic_probes(self, n: int) -> list[AtomicProbe]:
        """Column facts `x+y+c=` that no split's trace and no base corpus text states. The fact table
        has 200 entries; the default base corpus states every one, so arith then has no probe."""
        stated = {step for split in self._splits.values() for p in split for step in p.steps}
        stated |= {step for text in self.base_corpus() for step in text.partition(":")[0].split(";")}
        facts = [f"{x}+{y}+{c}={x + y + c}" for x in range(10) for y in range(10) for c in (0, 1)]
        unseen = [fact.partition("=") for fact in facts if fact not in stated]
        picked = random.Random(self.cfg.seed + 3).sample(unseen, min(n, len(unseen)))
        return [AtomicProbe(left + eq, total) for left, eq, total in picked]

    def is_answer(self, text: str) -> bool:
        """An integer."""
        return re.fullmatch(r"-?\d+", text) is not None

    def step_valid(self, problem: Problem, index: int, step: str, previous: str | None, local: bool = False) -> bool:
        """Local: the column's arithmetic is right and its carry is the previous partial sum's tens
        (0 in the first column). Full: also the operands' digits of column `index`."""
        if not true_fact(step):
            return False
        x, y, carry, _ = parse_step(step)
        before = parse_step(previous) if previous is not None else None
        want_carry = 0 if index == 0 else (before[3] // 10 if before else None)
        if carry != want_carry:
            return False
        digits_a, digits_b = str(problem.spec["a"])[::-1], str(problem.spec["b"])[::-1]
        if local:
            return True
        if index >= max(len(digits_a), len(digits_b)):
            return False
        want_x = int(digits_a[index]) if index < len(digits_a) else 0
        want_y = int(digits_b[index]) if index < len(digits_b) else 0
        return (x, y) == (want_x, want_y)

    def illogical_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """The gold columns' digits, every sum true, every carry the wrong one: the first column
        adds a carry of 1, each later column the opposite of what its predecessor's sum carries."""
        steps, carry = [], 1
        for gold in problem.steps:
            x, y, _, _ = parse_step(gold)
            steps.append(f"{x}+{y}+{carry}={x + y + carry}")
            carry = 1 - (x + y + carry) // 10
        return tuple(steps)

    def corrupted_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """Right digits, carries that follow the wrong partial sums, every partial sum off by 1-3."""
        steps, carry = [], 0
        for gold in problem.steps:
            x, y, _, _ = parse_step(gold)
            wrong = max(0, x + y + carry + rng.choice([-3, -2, -1, 1, 2, 3]))
            if wrong == x + y + carry:
                wrong += 1
            steps.append(f"{x}+{y}+{carry}={wrong}")
            carry = wrong // 10
        return tuple(steps)
