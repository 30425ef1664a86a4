"""What every task provides: problems with gold traces, a parser, local and full step checks."""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field, replace

from catalyst_ttt.errors import UserError
from catalyst_ttt.registry import Registry

# The default completion format: steps separated by STEP_SEP, then ANSWER_MARK and the answer.
STEP_SEP = ";"
ANSWER_MARK = "#"
NOISE_CHAR = "_"  # inserted into prompts for the `shift_format` split (DataAlchemy's format shift)
# Pools that are trained on and never evaluated: the catalyst's rows and the IG reader's traces.
TRAINING_SPLITS = ("train", "reader")


TASKS: Registry = Registry("task")  # filled by @TASKS.register in each task module


def insert_noise(text: str, rng: random.Random, count: int) -> str:
    chars = list(text)
    for _ in range(count):
        chars.insert(rng.randrange(len(chars) + 1), NOISE_CHAR)
    return "".join(chars)


def sample_unique(rng: random.Random, n: int, draw, taken: set, in_space, space: int, split: str) -> list:
    """n keys from `draw(rng)` that no earlier call took: splits never share a problem.

    `draw` yields keys from a space of `space` keys (`in_space(key)` tells which taken keys lie in
    it); asking for more than remain is refused here, before the draw could loop forever.
    """
    available = space - sum(1 for key in taken if in_space(key))
    if n > available:
        raise UserError(
            f"split {split!r} asks for {n} distinct problems but the task's settings leave only {available}; "
            "lower its task.n_* size or widen the task"
        )
    keys = []
    while len(keys) < n:
        key = draw(rng)
        if key in taken:
            continue
        taken.add(key)
        keys.append(key)
    return keys


@dataclass
class SyntheticSplits:
    """What the generated tasks (alchemy, arith) draw alike: split sizes, the base corpus's shared parts, the
    format shift's noise and the seed; each task's config adds its own settings."""

    n_train: int = 2000  # the catalyst pool
    n_reader: int = 512  # correct traces for the IG reader: disjoint from every catalyst row and evaluated item
    n_id: int = 128
    n_heldout: int = 128
    n_shift: int = 64
    n_base_chain: int = 12000  # base corpus: runs of chained steps as plain text, no prompt, no answer
    n_base_answer_only: int = 8000  # base corpus: problems answered directly, never an evaluated composition
    noise_chars: int = 2  # characters inserted into each `shift_format` prompt
    seed: int = 1234


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt shown to the model, its gold trace and gold answer.

    `spec` is whatever the task's verifier needs to check a step without the gold answer
    (for alchemy: the start element and the op names; for gsm8k: nothing).
    """

    uid: str
    prompt: str
    steps: tuple[str, ...]
    answer: str
    spec: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def unlabeled(self) -> Problem:
        """What a label-free signal may see: the prompt and spec, no gold trace or answer."""
        return replace(self, steps=(), answer="")


@dataclass(frozen=True)
class AtomicProbe:
    """One application of one op, written as the base corpus writes it: `prompt` is the text before
    the op's result, `answer` the result (alchemy: `rot ABCD>` -> `FGHI`)."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Parsed:
    """A completion split into steps and answer; `answer` is None when none of the task's form was given."""

    steps: tuple[str, ...]
    answer: str | None


class Task(abc.ABC):
    """A problem family. Subclasses build splits, check steps and read answers."""

    name: str
    config_class: type  # the dataclass its `conf/task/<name>.yaml` is checked against
    # Generation budget: characters of the longest gold completion plus slack.
    max_completion_chars: int
    # Whether `step_validity(local=False)` checks the plan (the prompt's ops in order), so that an
    # all-valid chain fixes the answer; a task whose step check is only local (gsm8k's calculator)
    # cannot serve the `verifier` signal.
    has_full_verifier: bool = True
    # Whether `format_view` can shift a prompt as the `shift_format` split does (its cfg has `noise_chars`).
    has_format_shift: bool = True

    @abc.abstractmethod
    def splits(self) -> dict[str, list[Problem]]:
        """Every split by name; `id` holds the TTT prompts, `train` the catalyst pool."""

    @abc.abstractmethod
    def base_corpus(self) -> list[str]:
        """Texts that give latent skill without any prompt -> trace -> answer example."""

    @abc.abstractmethod
    def step_valid(self, problem: Problem, index: int, step: str, previous: str | None, local: bool = False) -> bool:
        """Whether step `index` of a completion is valid, given the previous step's text.

        local: the step is a true fact (its output is its op applied to its stated input) whose
        input chains from the prompt or the previous step; otherwise also the step the prompt's
        plan asks for at `index`.
        """

    @abc.abstractmethod
    def is_answer(self, text: str) -> bool:
        """Whether `text` has the form of an answer of this task (an element, an integer, a number)."""

    def render(self, steps: tuple[str, ...] | list[str], answer: str) -> str:
        """A completion in the task's format; `render(steps, "")` is the context before the answer."""
        return STEP_SEP.join(steps) + ANSWER_MARK + answer

    def parse(self, text: str) -> Parsed:
        """Split a completion into steps and answer. Never raises: garbage has neither."""
        body, mark, tail = text.partition(ANSWER_MARK)
        steps = tuple(s.strip() for s in body.split(STEP_SEP) if s.strip())
        return Parsed(steps=steps, answer=self._answer(tail.split("\n")[0].strip()) if mark else None)

    def _answer(self, text: str) -> str | None:
        """The answer, or None when it is not of the task's form (a stray separator is never an answer)."""
        return text if text and ANSWER_MARK not in text and self.is_answer(text) else None

    def answers_equal(self, predicted: str | None, gold: str) -> bool:
        return predicted is not None and predicted == gold

    def step_validity(self, problem: Problem, steps: tuple[str, ...], local: bool = False) -> list[bool]:
        """Per-step validity, local or full (see `step_valid`).

        The full check also counts the steps the plan asks for and the trace lacks as invalid; the
        local check knows no plan, so it judges only the steps given.
        """
        flags = []
        previous = None
        for i, step in enumerate(steps):
            flags.append(self.step_valid(problem, i, step, previous, local))
            previous = step
        missing = 0 if local else max(0, (self.expected_steps(problem) or 0) - len(steps))
        return flags + [False] * missing

    def format_view(self, prompt: str, rng: random.Random) -> str:
        """The prompt with the `shift_format` split's noise: `noise_chars` noise characters anywhere
        before its closing character, which stays last where the model expects it."""
        return insert_noise(prompt[:-1], rng, self.cfg.noise_chars) + prompt[-1:]

    def completion_budget(self, problems: list[Problem]) -> int:
        """Characters a completion of these problems may take: a longer one cannot be right (`alchemy`: the
        gold completion's structure fixes its length), so generation stops there."""
        return self.max_completion_chars

    def expected_steps(self, problem: Problem) -> int | None:
        """How many steps a full trace has, if the prompt alone tells (None otherwise)."""
        return None

    def trace_answer(self, steps: tuple[str, ...]) -> str | None:
        """The answer a trace's own stated outputs lead to (alchemy: its last output), whether or not
        they are true; None where the task cannot tell."""
        return None

    def with_output(self, step: str, output: str) -> str | None:
        """`step` restated with another output (alchemy: `rot ABCD>` + output); None where the task cannot."""
        return None

    def atomic_probes(self, n: int) -> list[AtomicProbe]:
        """Up to n single-op items whose (input, op) appear in no split's trace and no base corpus text:
        the atomic skill the base learnt, asked on inputs it never saw. None where the task has no ops
        or its base corpus leaves none unseen."""
        return []

    def latent_probes(self, problems: list[Problem]) -> list[AtomicProbe]:
        """The problems asked in the form a `direct` base learnt them in (prompt: that form's text before
        the answer): whether the base holds the direct skill it is never prompted for. None where the
        task has no such form."""
        return []

    @abc.abstractmethod
    def illogical_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """Every step a true fact (output = op applied to its stated input), the chain broken."""

    @abc.abstractmethod
    def corrupted_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """The gold structure (same ops, count, format) with every step's output false."""
