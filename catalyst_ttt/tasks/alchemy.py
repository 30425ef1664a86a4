"""`alchemy`, after DataAlchemy (arXiv 2508.01191): compositions of letter transformations.

An element is a string of `length` letters from the first `alphabet_size` capitals. A problem
applies k atomic ops in order; the gold trace has one step per op, `op INPUT>OUTPUT`.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from catalyst_ttt.tasks import TASKS
from catalyst_ttt.tasks.base import Problem, Task, insert_noise, sample_unique


def _shift_letters(element: str, by: int, alphabet_size: int) -> str:
    return "".join(chr(ord("A") + (ord(c) - ord("A") + by) % alphabet_size) for c in element)


def apply_op(op: str, element: str, alphabet_size: int) -> str:
    if op == "rot":  # ROT-13 generalised: half-way round the alphabet
        return _shift_letters(element, alphabet_size // 2, alphabet_size)
    if op == "inc":
        return _shift_letters(element, 1, alphabet_size)
    if op == "shf":  # cyclic shift of positions by one
        return element[1:] + element[:1]
    if op == "rev":
        return element[::-1]
    raise ValueError(f"unknown alchemy op {op!r}")


OPS = ("rot", "shf", "rev", "inc")


def format_step(op: str, source: str, target: str) -> str:
    return f"{op} {source}>{target}"


def parse_step(step: str) -> tuple[str, str, str] | None:
    op, _, rest = step.partition(" ")
    source, arrow, target = rest.partition(">")
    if not arrow or not op:
        return None
    return op, source, target


@dataclass
class AlchemyConfig:
    alphabet_size: int = 10
    length: int = 4
    ops: list[str] = field(default_factory=lambda: list(OPS))
    min_ops: int = 1
    max_ops: int = 3
    heldout_composition_frac: float = 0.2
    shift_length: int = 5
    shift_steps: int = 4
    noise_chars: int = 2
    n_train: int = 2000
    n_id: int = 128
    n_heldout: int = 128
    n_shift: int = 64
    n_base_single: int = 10000
    n_base_chain: int = 12000
    n_base_answer_only: int = 8000
    seed: int = 1234


@TASKS.register("alchemy")
class Alchemy(Task):
    name = "alchemy"
    config_class = AlchemyConfig

    def __init__(self, cfg: AlchemyConfig):
        self.cfg = cfg
        unknown = sorted(set(cfg.ops) - set(OPS))
        if unknown:
            from catalyst_ttt.errors import UserError

            raise UserError(f"task.ops has unknown ops {unknown}; valid: {', '.join(OPS)}")
        longest = max(cfg.max_ops, cfg.shift_steps)
        step_chars = len("rot ") + 2 * max(cfg.length, cfg.shift_length) + 2
        self.max_completion_chars = longest * step_chars + max(cfg.length, cfg.shift_length) + 2
        rng = random.Random(cfg.seed)
        compositions = [c for k in range(cfg.min_ops, cfg.max_ops + 1) for c in itertools.product(cfg.ops, repeat=k)]
        multi = [c for c in compositions if len(c) > 1]
        n_held = round(len(multi) * cfg.heldout_composition_frac)
        self.heldout_compositions = set(rng.sample(multi, n_held))
        self.seen_compositions = [c for c in compositions if c not in self.heldout_compositions]

    # -- problems -------------------------------------------------------------------------

    def _element(self, rng: random.Random, length: int) -> str:
        return "".join(chr(ord("A") + rng.randrange(self.cfg.alphabet_size)) for _ in range(length))

    def make_problem(self, start: str, ops: tuple[str, ...], noise_rng: random.Random | None = None) -> Problem:
        steps, current = [], start
        for op in ops:
            nxt = apply_op(op, current, self.cfg.alphabet_size)
            steps.append(format_step(op, current, nxt))
            current = nxt
        prompt = f"{start} {','.join(ops)}"
        if noise_rng is not None:
            prompt = insert_noise(prompt, noise_rng, self.cfg.noise_chars)
        prompt += ":"  # after any noise: the closing ':' stays where the model expects it
        uid = f"{start}:{'.'.join(ops)}" + (":noisy" if noise_rng else "")
        return Problem(
            uid=uid, prompt=prompt, steps=tuple(steps), answer=current, spec={"start": start, "ops": list(ops)}
        )

    def _sample(self, rng, n, compositions, length, taken: set, split: str, noisy=False) -> list[Problem]:
        allowed = set(compositions)
        keys = sample_unique(
            rng,
            n,
            lambda r: (self._element(r, length), r.choice(compositions)),
            taken,
            in_space=lambda key: len(key[0]) == length and key[1] in allowed,
            space=self.cfg.alphabet_size**length * len(allowed),
            split=split,
        )
        return [self.make_problem(start, ops, rng if noisy else None) for start, ops in keys]

    def splits(self) -> dict[str, list[Problem]]:
        cfg, taken = self.cfg, set()
        rng = random.Random(cfg.seed + 1)
        seen = self.seen_compositions
        longer = list(itertools.product(cfg.ops, repeat=cfg.shift_steps))
        return {
            "train": self._sample(rng, cfg.n_train, seen, cfg.length, taken, "train"),
            "id": self._sample(rng, cfg.n_id, seen, cfg.length, taken, "id"),
            "heldout": self._sample(rng, cfg.n_heldout, seen, cfg.length, taken, "heldout"),
            "shift_compose": self._sample(
                rng, cfg.n_shift, sorted(self.heldout_compositions), cfg.length, taken, "shift_compose"
            ),
            "shift_length": self._sample(rng, cfg.n_shift, seen, cfg.shift_length, taken, "shift_length"),
            "shift_steps": self._sample(rng, cfg.n_shift, longer, cfg.length, taken, "shift_steps"),
            "shift_format": self._sample(rng, cfg.n_shift, seen, cfg.length, taken, "shift_format", noisy=True),
        }

    def base_corpus(self) -> list[str]:
        """Single ops, chained runs of ops (no prompt, no answer), and answer-only problems."""
        cfg = self.cfg
        rng = random.Random(cfg.seed + 2)
        texts = []
        for _ in range(cfg.n_base_single):
            texts.append(self.make_problem(self._element(rng, cfg.length), (rng.choice(cfg.ops),)).steps[0])
        for _ in range(cfg.n_base_chain):
            ops = tuple(rng.choice(cfg.ops) for _ in range(rng.randint(2, 3)))
            texts.append(";".join(self.make_problem(self._element(rng, cfg.length), ops).steps))
        for _ in range(cfg.n_base_answer_only):
            problem = self.make_problem(self._element(rng, cfg.length), rng.choice(self.seen_compositions))
            texts.append(problem.prompt + self.render((), problem.answer))
        return texts

    # -- verification ---------------------------------------------------------------------

    def step_valid(self, problem: Problem, index: int, step: str, previous: str | None) -> bool:
        ops = problem.spec["ops"]
        parsed = parse_step(step)
        if parsed is None or index >= len(ops):
            return False
        op, source, target = parsed
        if index == 0:
            expected_source = problem.spec["start"]
        else:
            before = parse_step(previous) if previous is not None else None
            expected_source = before[2] if before else None
        return op == ops[index] and source == expected_source and target == apply_op(op, source, self.cfg.alphabet_size)

    def expected_steps(self, problem: Problem) -> int:
        return len(problem.spec["ops"])

    def illogical_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """Same op names and step count; each output is a *different* op applied to the input,
        so the chain is internally consistent in form but every step's value is wrong."""
        steps, current = [], problem.spec["start"]
        for op in problem.spec["ops"]:
            right = apply_op(op, current, self.cfg.alphabet_size)
            wrong = [apply_op(o, current, self.cfg.alphabet_size) for o in OPS if o != op]
            wrong = [w for w in wrong if w != right] or [_shift_letters(right, 1, self.cfg.alphabet_size)]
            out = rng.choice(wrong)
            steps.append(format_step(op, current, out))
            current = out
        return tuple(steps)
