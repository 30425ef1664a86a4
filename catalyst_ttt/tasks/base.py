"""What every task provides: problems with gold traces, a parser, a process verifier."""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field, replace

from catalyst_ttt.errors import UserError

# The default completion format: steps separated by STEP_SEP, then ANSWER_MARK and the answer.
STEP_SEP = ";"
ANSWER_MARK = "#"
NOISE_CHAR = "_"  # inserted into prompts for the `shift_format` split (DataAlchemy's format shift)


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
        if key not in taken:
            taken.add(key)
            keys.append(key)
    return keys


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
class Parsed:
    """A completion split into steps and answer; `answer` is None when none was given."""

    steps: tuple[str, ...]
    answer: str | None


class Task(abc.ABC):
    """A problem family. Subclasses build splits and check steps and answers."""

    name: str
    config_class: type  # the dataclass its `conf/task/<name>.yaml` is checked against
    # Generation budget: characters of the longest gold completion plus slack.
    max_completion_chars: int

    @abc.abstractmethod
    def splits(self) -> dict[str, list[Problem]]:
        """Every split by name; `id` holds the TTT prompts, `train` the catalyst pool."""

    @abc.abstractmethod
    def base_corpus(self) -> list[str]:
        """Texts that give latent skill without any prompt -> trace -> answer example."""

    @abc.abstractmethod
    def step_valid(self, problem: Problem, index: int, step: str, previous: str | None) -> bool:
        """Whether step `index` of a completion is valid, given the previous step's text."""

    def render(self, steps: tuple[str, ...] | list[str], answer: str) -> str:
        """A completion in the task's format; `render(steps, "")` is the context before the answer."""
        return STEP_SEP.join(steps) + ANSWER_MARK + answer

    def parse(self, text: str) -> Parsed:
        """Split a completion into steps and answer. Never raises: garbage has neither."""
        body, mark, tail = text.partition(ANSWER_MARK)
        steps = tuple(s.strip() for s in body.split(STEP_SEP) if s.strip())
        answer = tail.split("\n")[0].strip() if mark else None
        return Parsed(steps=steps, answer=answer or None)

    def answers_equal(self, predicted: str | None, gold: str) -> bool:
        return predicted is not None and predicted == gold

    def step_validity(self, problem: Problem, steps: tuple[str, ...]) -> list[bool]:
        """Per-step validity. A trace of the wrong length gets its extra/missing steps invalid."""
        flags = []
        previous = None
        for i, step in enumerate(steps):
            flags.append(self.step_valid(problem, i, step, previous))
            previous = step
        missing = max(0, (self.expected_steps(problem) or 0) - len(steps))
        return flags + [False] * missing

    def expected_steps(self, problem: Problem) -> int | None:
        """How many steps a full trace has, if the prompt alone tells (None otherwise)."""
        return None

    @abc.abstractmethod
    def illogical_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """The gold structure (same ops, count, format) with wrong intermediate values."""
