"""`alchemy`, after DataAlchemy (arXiv 2508.01191): compositions of letter transformations.

An element is a string of `length` letters from the first `alphabet_size` capitals. A problem
applies k atomic ops in order; the gold trace has one step per op, `op INPUT>OUTPUT`.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass, field

from catalyst_ttt.errors import UserError
from catalyst_ttt.tasks.base import (
    TASKS,
    AtomicProbe,
    Problem,
    SyntheticSplits,
    Task,
    insert_noise,
    sample_unique,
)


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


def true_fact(step: str, alphabet_size: int) -> bool:
    """Whether the step's output is its (known) op applied to its stated input."""
    parsed = parse_step(step)
    if parsed is None or parsed[0] not in OPS:
        return False
    op, source, target = parsed
    return bool(source) and target == apply_op(op, source, alphabet_size)


@dataclass
class AlchemyConfig(SyntheticSplits):
    alphabet_size: int = 10
    length: int = 4
    ops: list[str] = field(default_factory=lambda: list(OPS))
    # Two-op compositions: the tiny base learns them directly too (task.latent=direct; measured: 3-op
    # compositions reached 0.23 / 0.05 direct accuracy for base seeds 0 / 1 after 1,000 base steps)
    max_ops: int = 2
    heldout_composition_frac: float = 0.2  # multi-op compositions kept for `shift_compose` only
    # Of the other multi-op compositions, the share the base sees answered directly (`ABCD rot,rev:#...`,
    # never with a trace); the rest are the catalyst/TTT/eval compositions, which the base never sees answered.
    answer_only_frac: float = 0.5
    shift_length: int = 5
    shift_steps: int = 3
    n_base_single: int = 10000
    # The latent skill the base holds (docs/testbed.md). `steps`: every op, alone and in chains, and no
    # evaluated composition ever answered. `direct`: also `n_base_direct` task compositions answered
    # directly in a form the base is never prompted with (`rot,rev,inc ABCD>JIHG`, see `direct_prompt`).
    latent: str = "steps"
    n_base_direct: int = 24000


LATENT_KINDS = ("steps", "direct")


def direct_prompt(start: str, ops: tuple[str, ...] | list[str]) -> str:
    """The learnt form of a direct answer: the whole composition as one step (`rot,rev,inc ABCD>`)."""
    return format_step(",".join(ops), start, "")


@TASKS.register("alchemy")
class Alchemy(Task):
    name = "alchemy"
    config_class = AlchemyConfig

    def __init__(self, cfg: AlchemyConfig):
        self.cfg = cfg
        unknown = sorted(set(cfg.ops) - set(OPS))
        if unknown:
            raise UserError(f"task.ops has unknown ops {unknown}; valid: {', '.join(OPS)}")
        if cfg.latent not in LATENT_KINDS:
            raise UserError(f"task.latent={cfg.latent!r} is not valid; valid: {', '.join(LATENT_KINDS)}")
        longest = max(cfg.max_ops, cfg.shift_steps)
        step_chars = len("rot ") + 2 * max(cfg.length, cfg.shift_length) + 2
        self.max_completion_chars = longest * step_chars + max(cfg.length, cfg.shift_length) + 2
        rng = random.Random(cfg.seed)
        multi = [c for k in range(2, cfg.max_ops + 1) for c in itertools.product(cfg.ops, repeat=k)]
        self.heldout_compositions = sorted(rng.sample(multi, round(len(multi) * cfg.heldout_composition_frac)))
        seen = [c for c in multi if c not in set(self.heldout_compositions)]
        rng.shuffle(seen)
        cut = round(len(seen) * cfg.answer_only_frac)
        # The base may answer single ops and these compositions directly; no split ever uses them.
        self.answer_only_compositions = [(op,) for op in cfg.ops] + sorted(seen[:cut])
        # Catalyst, TTT and in-distribution eval: compositions the base has never seen answered.
        self.task_compositions = sorted(seen[cut:])
        if not self.task_compositions:
            raise UserError(
                f"task.answer_only_frac={cfg.answer_only_frac} leaves no composition for the task splits "
                f"({len(seen)} seen multi-op compositions); use a smaller fraction or a larger task.max_ops"
            )

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

    @functools.cached_property
    def _splits(self) -> dict[str, list[Problem]]:
        cfg, taken = self.cfg, set()
        rng = random.Random(cfg.seed + 1)
        ttt = self.task_compositions
        longer = list(itertools.product(cfg.ops, repeat=cfg.shift_steps))
        return {
            "train": self._sample(rng, cfg.n_train, ttt, cfg.length, taken, "train"),
            "reader": self._sample(rng, cfg.n_reader, ttt, cfg.length, taken, "reader"),
            "id": self._sample(rng, cfg.n_id, ttt, cfg.length, taken, "id"),
            "heldout": self._sample(rng, cfg.n_heldout, ttt, cfg.length, taken, "heldout"),
            "shift_compose": self._sample(
                rng, cfg.n_shift, self.heldout_compositions, cfg.length, taken, "shift_compose"
            ),
            "shift_length": self._sample(rng, cfg.n_shift, ttt, cfg.shift_length, taken, "shift_length"),
            "shift_steps": self._sample(rng, cfg.n_shift, longer, cfg.length, taken, "shift_steps"),
            "shift_format": self._sample(rng, cfg.n_shift, ttt, cfg.length, taken, "shift_format", noisy=True),
        }

    def splits(self) -> dict[str, list[Problem]]:
        return dict(self._splits)

    def base_corpus(self) -> list[str]:
        """Single ops, chained runs of ops (no prompt, no answer), and answer-only problems of the
        answer-only compositions. No text reproduces an item of any split (its answer or its trace)."""
        cfg = self.cfg
        rng = random.Random(cfg.seed + 2)
        items = {(p.spec["start"], tuple(p.spec["ops"])) for split in self._splits.values() for p in split}

        def fresh(ops_of) -> Problem:
            while True:
                start, ops = self._element(rng, cfg.length), ops_of()
                if (start, ops) not in items:
                    return self.make_problem(start, ops)

        texts = [fresh(lambda: (rng.choice(cfg.ops),)).steps[0] for _ in range(cfg.n_base_single)]
        texts += [
            ";".join(fresh(lambda: tuple(rng.choice(cfg.ops) for _ in range(rng.randint(2, 3)))).steps)
            for _ in range(cfg.n_base_chain)
        ]
        for _ in range(cfg.n_base_answer_only):
            problem = fresh(lambda: rng.choice(self.answer_only_compositions))
            texts.append(problem.prompt + self.render((), problem.answer))
        if cfg.latent == "direct":  # drawn last: the `steps` corpus is the same in both kinds
            for _ in range(cfg.n_base_direct):
                problem = fresh(lambda: rng.choice(self.task_compositions))
                texts.append(direct_prompt(problem.spec["start"], problem.spec["ops"]) + problem.answer)
        return texts

    # -- verification ---------------------------------------------------------------------

    def is_answer(self, text: str) -> bool:
        """An element: letters of the task's alphabet only."""
        return all("A" <= c < chr(ord("A") + self.cfg.alphabet_size) for c in text)

    def step_valid(self, problem: Problem, index: int, step: str, previous: str | None, local: bool = False) -> bool:
        parsed = parse_step(step)
        if parsed is None or not true_fact(step, self.cfg.alphabet_size):
            return False
        op, source, _ = parsed
        before = parse_step(previous) if previous is not None else None
        expected_source = problem.spec["start"] if index == 0 else (before[2] if before else None)
        if source != expected_source:
            return False
        ops = problem.spec["ops"]
        return local or (index < len(ops) and op == ops[index])

    def completion_budget(self, problems: list[Problem]) -> int:
        """The longest completion the prompts' structure allows (each prompt's ops and element length fix its
        gold completion's length: no gold is read) plus one character."""

        def length(problem: Problem) -> int:
            element = "X" * len(problem.spec["start"])
            return len(self.render([format_step(op, element, element) for op in problem.spec["ops"]], element))

        return max(map(length, problems)) + 1 if problems else 0

    def expected_steps(self, problem: Problem) -> int:
        return len(problem.spec["ops"])

    def with_output(self, step: str, output: str) -> str | None:
        parsed = parse_step(step)
        return format_step(parsed[0], parsed[1], output) if parsed else None

    def trace_answer(self, steps: tuple[str, ...]) -> str | None:
        last = parse_step(steps[-1]) if steps else None
        return last[2] if last else None

    # -- probes ---------------------------------------------------------------------------

    def atomic_probes(self, n: int) -> list[AtomicProbe]:
        """Single ops `op INPUT>` on task-length inputs: no split's trace and no base corpus text
        (a step, or an answer-only problem's first op) applies that op to that input."""
        cfg = self.cfg
        steps = [step for split in self._splits.values() for problem in split for step in problem.steps]
        seen = {parse_step(step)[:2] for step in steps}
        for text in self.base_corpus():
            prompt, answered, _ = text.partition(":")
            if answered:  # an answer-only problem: `START OP,OP:#ANSWER`
                start, _, ops = prompt.partition(" ")
                seen.add((ops.split(",")[0], start))
            else:
                seen |= {parse_step(step)[:2] for step in text.split(";")}

        def in_space(key: tuple[str, str]) -> bool:
            return key[0] in cfg.ops and len(key[1]) == cfg.length

        space = len(cfg.ops) * cfg.alphabet_size**cfg.length
        keys = sample_unique(
            random.Random(cfg.seed + 3),
            min(n, space - sum(map(in_space, seen))),
            lambda r: (r.choice(cfg.ops), self._element(r, cfg.length)),
            seen,
            in_space,
            space,
            "atomic probes",
        )
        return [
            AtomicProbe(format_step(op, source, ""), apply_op(op, source, cfg.alphabet_size)) for op, source in keys
        ]

    def latent_probes(self, problems: list[Problem]) -> list[AtomicProbe]:
        return [AtomicProbe(direct_prompt(p.spec["start"], p.spec["ops"]), p.answer) for p in problems]

    # -- corrupted catalysts --------------------------------------------------------------

    def illogical_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """The prompt's ops in order, each applied truly to an input the chain does not lead to.

        Step 0 starts from an element other than the prompt's, every later step from an element other
        than the previous step's output; inputs are drawn from the problem's own elements (its start, its
        gold intermediates, the trace's outputs so far), so every step is a true fact about the problem
        while no step follows from the one before (Schaeffer et al.). No step states the gold answer, as
        input or output (`_leak_free`): a broken chain must not hand the answer over.
        """
        alphabet, answer = self.cfg.alphabet_size, problem.answer
        start = problem.spec["start"]
        elements = [start] + [parse_step(s)[2] for s in problem.steps]
        steps, required = [], start
        for op in problem.spec["ops"]:
            others = sorted({e for e in elements if e != required and _leak_free(op, e, answer, alphabet)})
            source = rng.choice(others) if others else self._fresh_source(op, required, answer, rng)
            target = apply_op(op, source, alphabet)
            steps.append(format_step(op, source, target))
            elements.append(target)
            required = target
        return tuple(steps)

    def _fresh_source(self, op: str, avoid: str, answer: str, rng: random.Random) -> str:
        """A random element other than `avoid` that, under `op`, neither is nor gives the answer."""
        while True:
            source = self._element(rng, len(avoid))
            if source != avoid and _leak_free(op, source, answer, self.cfg.alphabet_size):
                return source

    def corrupted_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """Same op names and step count, each input the previous output; each output is a *different* op
        applied to the input (or a letter shift of the true output), so every step's stated value is false,
        and none states the gold answer."""
        alphabet, answer = self.cfg.alphabet_size, problem.answer
        steps, current = [], problem.spec["start"]
        for op in problem.spec["ops"]:
            right = apply_op(op, current, alphabet)
            wrong = {apply_op(o, current, alphabet) for o in OPS if o != op}
            wrong |= {_shift_letters(right, by, alphabet) for by in (1, 2)}
            out = rng.choice(sorted(wrong - {right, answer}))
            steps.append(format_step(op, current, out))
            current = out
        return tuple(steps)


def _leak_free(op: str, source: str, answer: str, alphabet_size: int) -> bool:
    """A step `op source>…` neither starts from the gold answer nor arrives at it."""
    return source != answer and apply_op(op, source, alphabet_size) != answer
