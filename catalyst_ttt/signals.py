"""Test-time training signals: GRPO rewards and self-training rules on unlabeled prompts.

A signal sees `RewardBatch`. Its `problems` carry no gold trace or answer unless the signal
declares that it uses labels; only then is `gold` filled. The harness reads gold answers for
diagnostics outside the signal (see `training.make_reward_function`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from catalyst_ttt.config import SignalConfig
from catalyst_ttt.registry import Registry
from catalyst_ttt.scoring import completion_token_stats, continuation_logprobs
from catalyst_ttt.tasks.base import Parsed, Problem, Task


@dataclass
class RewardBatch:
    prompts: list[str]
    completions: list[str]
    completion_ids: list[list[int]]
    parsed: list[Parsed]
    problems: list[Problem]
    group_size: int
    task: Task
    model: object = None
    tokenizer: object = None
    gold: list[str] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def groups(self) -> list[range]:
        return [range(s, s + self.group_size) for s in range(0, len(self.completions), self.group_size)]


@dataclass(frozen=True)
class Signal:
    name: str
    trainer: str | None  # "grpo", "sft" or None (no TTT)
    reward: Callable[[RewardBatch, SignalConfig], list[float]] | None
    labels: Callable[[SignalConfig], bool] = lambda cfg: False
    description: str = ""

    def uses_labels(self, cfg: SignalConfig) -> bool:
        return self.labels(cfg)

    def labels_note(self) -> str:
        """For listings: whether the signal reads gold answers, and when."""
        if self.labels(SignalConfig(reference="majority")):
            return "uses labels"
        return "uses labels with reference=gold" if self.labels(SignalConfig(reference="gold")) else "label-free"


SIGNALS: Registry[Signal] = Registry("signal")


def majority_answer(answers: list[str | None]) -> str | None:
    """The most common parsed answer; ties go to the answer that appears first; None if none."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def group_majorities(batch: RewardBatch) -> list[str | None]:
    """Per completion, the majority answer of its generation group."""
    out: list[str | None] = []
    for group in batch.groups():
        answer = majority_answer([batch.parsed[i].answer for i in group])
        out.extend([answer] * len(group))
    return out


def references(batch: RewardBatch, cfg: SignalConfig) -> list[str | None]:
    return list(batch.gold) if cfg.reference == "gold" else group_majorities(batch)


def _majority(batch, cfg):
    return [float(p.answer is not None and p.answer == m) for p, m in zip(batch.parsed, group_majorities(batch))]


def _oracle(batch, cfg):
    return [float(batch.task.answers_equal(p.answer, g)) for p, g in zip(batch.parsed, batch.gold)]


def _process(batch, cfg):
    rewards = []
    for problem, parsed in zip(batch.problems, batch.parsed):
        flags = batch.task.step_validity(problem, parsed.steps)
        rewards.append(sum(flags) / len(flags) if flags and parsed.steps else 0.0)
    return rewards


def _trace_contexts(batch: RewardBatch) -> list[str]:
    """Prompt + the generated trace, up to where the answer goes."""
    return [p + batch.task.render(parsed.steps, "") for p, parsed in zip(batch.prompts, batch.parsed)]


def _reference_logprobs(batch, cfg) -> tuple[list[str | None], list[float]]:
    """log pi(y_ref | x, trace) where there is a reference and the completion parses at all."""
    refs = references(batch, cfg)
    scored = [i for i, r in enumerate(refs) if r is not None and (batch.parsed[i].steps or batch.parsed[i].answer)]
    contexts = _trace_contexts(batch)
    lps = continuation_logprobs(batch.model, batch.tokenizer, [contexts[i] for i in scored], [refs[i] for i in scored])
    full = [float("-inf")] * len(refs)
    for i, lp in zip(scored, lps):
        full[i] = lp
    return refs, full


def _verifree(batch, cfg):
    _, lps = _reference_logprobs(batch, cfg)
    return [math.exp(lp) for lp in lps]


def _predictive(batch, cfg):
    refs, with_trace = _reference_logprobs(batch, cfg)
    scored = [i for i, lp in enumerate(with_trace) if lp != float("-inf")]
    without = continuation_logprobs(
        batch.model,
        batch.tokenizer,
        [batch.prompts[i] + batch.task.render((), "") for i in scored],
        [refs[i] for i in scored],
    )
    rewards = [0.0] * len(refs)
    for i, lp0 in zip(scored, without):
        rewards[i] = with_trace[i] - lp0
    return rewards


def _self_certainty(batch, cfg):
    _, certainty = completion_token_stats(batch.model, batch.tokenizer, batch.prompts, batch.completion_ids)
    return certainty


def _entropy(batch, cfg):
    entropy, _ = completion_token_stats(batch.model, batch.tokenizer, batch.prompts, batch.completion_ids)
    return [-e for e in entropy]


def _random(batch, cfg):
    return [float(batch.rng.random() < 0.5) for _ in batch.completions]


def _reference_is_gold(cfg: SignalConfig) -> bool:
    return cfg.reference == "gold"


for _signal in (
    Signal("none", None, None, description="no test-time training"),
    Signal("self_sft", "sft", None, description="SFT on own completions that agree with the majority answer"),
    Signal("majority", "grpo", _majority, description="1 if the answer equals the group's majority (TTRL)"),
    Signal("process", "grpo", _process, description="fraction of steps the task's verifier accepts"),
    Signal("verifree", "grpo", _verifree, _reference_is_gold, "pi(y_ref | x, trace) (VeriFree)"),
    Signal(
        "predictive",
        "grpo",
        _predictive,
        _reference_is_gold,
        "log pi(y_ref | x, trace) - log pi(y_ref | x) (Quiet-STaR-style)",
    ),
    Signal("self_certainty", "grpo", _self_certainty, description="mean KL(uniform || p) (Intuitor)"),
    Signal("entropy", "grpo", _entropy, description="minus mean token entropy (EM-RL)"),
    Signal("random", "grpo", _random, description="Bernoulli(0.5) spurious-reward control"),
    Signal("oracle", "grpo", _oracle, lambda cfg: True, "1 if the answer equals the gold answer (RLVR ceiling)"),
):
    SIGNALS.register(_signal.name)(_signal)
