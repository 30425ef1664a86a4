"""Test-time training signals: GRPO rewards and self-training rules on unlabeled prompts.

A signal is a small function registered with `@signal(name, trainer=..., access=...)`; its
docstring says what it rewards and cites its source. A GRPO reward function gets a
`RewardBatch` and returns, per completion, a float or None: None means "not scored" (the
completion has no answer of the task's form), and the registered reward turns it into the
signal's floor (0, or the group's minimum for a signal with signed rewards), so garbage is
never rewarded above a well-formed completion.

Access classes say what a signal may read (docs/signals.md). Its `problems` carry no gold trace
or answer, and `gold` is None, unless the class is "gold" for the config. The harness reads
gold answers for diagnostics outside the signal (see `training.make_reward_function`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

from catalyst_ttt.errors import UserError
from catalyst_ttt.registry import Registry
from catalyst_ttt.schema import ACCESS_CLASSES, SignalConfig, TTTConfig
from catalyst_ttt.tasks.base import TASKS, Parsed, Problem, Task
from catalyst_ttt.votes import majority_answer, votes_of

# Sequences per generate call for cross_view's views (a default GRPO step's views fit in one call). Not
# eval.batch_size: the batch shapes which samples a seed draws, so tying the two would change the rewards.
CROSS_VIEW_BATCH = 256


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
    memory: dict = field(default_factory=dict)  # per-prompt state kept across the steps of one TTT run
    temperature: float = 1.0  # TTT's sampling temperature, for signals that sample more completions

    def groups(self) -> list[range]:
        return [range(s, s + self.group_size) for s in range(0, len(self.completions), self.group_size)]


@dataclass(frozen=True)
class Signal:
    name: str
    trainer: str | None  # "grpo", "sft" or None (no TTT)
    rule: Callable  # the registered function. grpo: (RewardBatch, SignalConfig) -> [float | None]; sft: row filter
    access: str = "intrinsic"  # its class with the default config
    reads_reference: bool = False  # `signal.reference=gold` makes it read gold answers
    needs_full_verifier: bool = False
    needs_format_shift: bool = False
    unscored: str = "zero"  # what a completion without an answer gets: "zero" or "group_min"
    reward_varies: bool = True  # False: a control whose reward never varies (no "did not train" verdict for it)

    @property
    def description(self) -> str:
        """The first sentence of the rule's docstring."""
        return " ".join((self.rule.__doc__ or "").strip().split("\n\n")[0].split())

    def rewards(self, batch: RewardBatch, cfg: SignalConfig) -> list[float]:
        """What GRPO trains on: the rule's rewards, with every unscored completion (None) at the signal's floor."""
        raw = self.rule(batch, cfg)
        rewards: list[float] = []
        for group in batch.groups():
            scored = [raw[i] for i in group if raw[i] is not None]
            floor = min(scored) if self.unscored == "group_min" and scored else 0.0
            rewards += [floor if raw[i] is None else float(raw[i]) for i in group]
        return rewards

    def access_of(self, cfg: SignalConfig) -> str:
        """The access class under this config: one of ACCESS_CLASSES."""
        return "gold" if self.reads_reference and cfg.reference == "gold" else self.access

    def uses_labels(self, cfg: SignalConfig) -> bool:
        return self.access_of(cfg) == "gold"

    def access_note(self) -> str:
        """For listings: the access class, and when it changes."""
        return self.access + (" (gold with reference=gold)" if self.reads_reference else "")

    def check_task(self, task: Task | type[Task]) -> None:
        """Refuse a task this signal cannot score (before any compute)."""
        needs = (
            (self.needs_full_verifier, "has_full_verifier", "a full step verifier"),
            (self.needs_format_shift, "has_format_shift", "a format shift of its prompts"),
        )
        for needed, capability, what in needs:
            if needed and not getattr(task, capability):
                able = [n for n in TASKS.names() if getattr(TASKS.get(n), capability)]
                raise UserError(
                    f"signal {self.name} needs {what}, which task {task.name} lacks; tasks with one: {', '.join(able)}"
                )


SIGNALS: Registry[Signal] = Registry("signal")


def trains_at_test_time(signal: SignalConfig, ttt: TTTConfig) -> bool:
    """The cell's signal has a trainer and the cell gives it steps."""
    return SIGNALS.get(signal.name).trainer is not None and ttt.steps > 0


def signal(name: str, *, trainer: str | None, access: str = "intrinsic", **fields) -> Callable:
    """Register the decorated function as signal `name` (its reward, or its rule for SFT)."""
    if access not in ACCESS_CLASSES:
        raise ValueError(f"signal {name}: unknown access class {access!r}")

    def register(rule: Callable) -> Callable:
        SIGNALS.register(name)(Signal(name, trainer, rule, access=access, **fields))
        return rule

    return register


def group_majorities(batch: RewardBatch) -> list[str | None]:
    """Per completion, the majority answer of its generation group."""
    out: list[str | None] = []
    for group in batch.groups():
        answer = majority_answer([batch.parsed[i].answer for i in group], batch.task.answers_equal)
        out.extend([answer] * len(group))
    return out


def references(batch: RewardBatch, cfg: SignalConfig) -> list[str | None]:
    return list(batch.gold) if cfg.reference == "gold" else group_majorities(batch)


@signal("none", trainer=None)
def no_ttt() -> None:
    """No test-time training: the model is evaluated as the catalyst left it (control)."""


@signal("self_sft", trainer="sft")
def consensus_rows(task: Task, prompts: list[str], samples: list[list[str]]) -> list[dict]:
    """SFT on own completions whose answer agrees with the prompt's majority answer (LMSI,
    arXiv 2210.11610).

    Votes use the task's `answers_equal`, ties as in `majority_answer`.
    """
    rows = []
    for prompt, completions in zip(prompts, samples):
        parsed = [task.parse(c) for c in completions]
        majority = majority_answer([p.answer for p in parsed], task.answers_equal)
        rows += [
            {"prompt": prompt, "completion": c}
            for c, p in zip(completions, parsed)
            if majority is not None and task.answers_equal(p.answer, majority)
        ]
    return rows


@signal("majority", trainer="grpo")
def majority(batch, cfg):
    """1 if the answer equals its group's majority answer, else 0 (TTRL, arXiv 2504.16084).

    Votes use the task's `answers_equal`; ties go to the answer seen first.
    """
    return [
        None if p.answer is None else float(batch.task.answers_equal(p.answer, m))
        for p, m in zip(batch.parsed, group_majorities(batch))
    ]


def _valid_step_share(batch: RewardBatch, local: bool) -> list[float | None]:
    rewards: list[float | None] = []
    for problem, parsed in zip(batch.problems, batch.parsed):
        flags = batch.task.step_validity(problem, parsed.steps, local=local)
        rewards.append(None if parsed.answer is None else (sum(flags) / len(flags) if flags else 0.0))
    return rewards


@signal("process", trainer="grpo", access="partial verifier")
def process(batch, cfg):
    """Fraction of locally valid steps: output = op(input) and inputs chain from the prompt;
    the ops' order is not checked.

    A calculator check, not a plan check, in the spirit of process rewards (Lightman et al.,
    arXiv 2305.20050): a chain of true facts that does not solve the problem still scores 1.
    """
    return _valid_step_share(batch, local=True)


@signal("majority_x_process", trainer="grpo", access="partial verifier")
def majority_x_process(batch, cfg):
    """`majority` gated by `process`: an answer that equals its group's majority earns its share of
    locally valid steps, any other answer 0.

    Neither a vote won by a broken chain nor a valid chain to a minority answer is rewarded: the
    vote guards the local check's blind spot (a true chain that does not solve the problem) and the
    check guards the vote's (a confident wrong consensus written without valid steps).
    """
    votes, steps = majority(batch, cfg), _valid_step_share(batch, local=True)
    return [None if vote is None else vote * share for vote, share in zip(votes, steps)]


@signal("verifier", trainer="grpo", access="perfect verifier", needs_full_verifier=True)
def verifier(batch, cfg):
    """Fraction of fully valid steps: also the prompt's ops in order; an all-valid chain fixes
    the answer.

    RLVR-style with a rule-based step verifier (Lightman et al., arXiv 2305.20050): on alchemy and
    arith this is a perfect verifier in disguise, marked ‡ in tables.
    """
    return _valid_step_share(batch, local=False)


def _reference_logprobs(batch: RewardBatch, cfg: SignalConfig) -> list[float | None]:
    """log pi(y_ref | x, trace) for each completion with an answer and a reference; None otherwise."""
    refs = references(batch, cfg)
    scored = [i for i, r in enumerate(refs) if r is not None and batch.parsed[i].answer is not None]
    contexts = [batch.prompts[i] + batch.task.render(batch.parsed[i].steps, "") for i in scored]
    from catalyst_ttt.scoring import continuation_logprobs  # torch: loaded when a model scores, not by configs

    logprobs = continuation_logprobs(batch.model, batch.tokenizer, contexts, [refs[i] for i in scored])
    out: list[float | None] = [None] * len(refs)
    for i, lp in zip(scored, logprobs):
        out[i] = lp
    return out


@signal("guarded_majority", trainer="grpo")
def guarded_majority(batch, cfg):
    """`majority` with two guards after TTRL-Guard (arXiv 2605.19444): a minority answer earns its votes
    relative to the majority's instead of 0, and a prompt whose majority answer changed since its last
    visit is skipped (every completion gets 0, so GRPO makes no update on it).

    Each prompt's last majority is kept in `batch.memory` for one TTT run; a new majority that holds
    on the next visit is trained on. Votes use the task's `answers_equal`, ties as in `majority`.
    """
    last_majority = batch.memory.setdefault("guarded_majority", {})
    rewards: list[float | None] = []
    for group in batch.groups():
        answers = [batch.parsed[i].answer for i in group]
        votes = votes_of(answers, batch.task.answers_equal)
        if not votes:
            rewards += [None] * len(group)
            continue
        majority_vote = max(votes, key=len)
        previous = last_majority.get(batch.prompts[group[0]])
        flipped = previous is not None and not batch.task.answers_equal(majority_vote[0], previous)
        last_majority[batch.prompts[group[0]]] = majority_vote[0]
        for answer in answers:
            if answer is None:
                rewards.append(None)
            elif flipped:
                rewards.append(0.0)
            else:
                vote = next(v for v in votes if batch.task.answers_equal(answer, v[0]))
                rewards.append(len(vote) / len(majority_vote))
    return rewards


@signal("cross_view", trainer="grpo", needs_format_shift=True)
def cross_view(batch, cfg):
    """1 if the answer equals the majority answer the policy gives to a format-shifted view of the same
    prompt, else 0 (Co-rewarding-I, arXiv 2508.00410): a single view cannot reward itself.

    Per group, the view is the prompt with the task's `shift_format` noise, and `group_size` completions
    of it are sampled from the policy at TTT's temperature; a view with no answer rewards no completion.
    """
    from catalyst_ttt.generation import generate  # torch: loaded when a model samples, not by configs

    views = [batch.task.format_view(batch.prompts[group[0]], batch.rng) for group in batch.groups()]
    samples = generate(
        batch.model,
        batch.tokenizer,
        views,
        batch.task.completion_budget(batch.problems),
        batch_size=CROSS_VIEW_BATCH,
        samples=batch.group_size,
        temperature=batch.temperature,
        seed=batch.rng.randrange(2**31),
    )
    rewards: list[float | None] = []
    for group, completions in zip(batch.groups(), samples):
        reference = majority_answer([batch.task.parse(c).answer for c in completions], batch.task.answers_equal)
        rewards += [
            None
            if batch.parsed[i].answer is None
            else float(reference is not None and batch.task.answers_equal(batch.parsed[i].answer, reference))
            for i in group
        ]
    return rewards


@signal("verifree", trainer="grpo", reads_reference=True)
def verifree(batch, cfg):
    """pi(y_ref | x, trace): the policy's probability of the reference answer after the sampled
    trace (VeriFree, arXiv 2505.21493).

    y_ref is the group's majority answer by default (a label-free variant); `reference=gold` is
    the paper's form, as a GRPO reward only (docs/signals.md).
    """
    return [None if lp is None else math.exp(lp) for lp in _reference_logprobs(batch, cfg)]


@signal("predictive", trainer="grpo", reads_reference=True, unscored="group_min")
def predictive(batch, cfg):
    """log pi(y_ref | x, trace) minus its mean over the group's scored traces (Quiet-STaR's
    baseline, arXiv 2403.09629).

    Unparseable completions get the group's minimum.
    """
    logprobs = _reference_logprobs(batch, cfg)
    rewards: list[float | None] = [None] * len(logprobs)
    for group in batch.groups():
        scored = [i for i in group if logprobs[i] is not None]
        baseline = sum(logprobs[i] for i in scored) / len(scored) if scored else 0.0
        for i in scored:
            rewards[i] = logprobs[i] - baseline
    return rewards


def _token_stats(batch: RewardBatch):
    """(mean token entropy, mean KL(uniform || p)) over each answered completion's tokens; None otherwise."""
    scored = [i for i, p in enumerate(batch.parsed) if p.answer is not None]
    from catalyst_ttt.scoring import completion_token_stats  # torch: loaded when a model scores, not by configs

    entropy, certainty = completion_token_stats(
        batch.model, batch.tokenizer, [batch.prompts[i] for i in scored], [batch.completion_ids[i] for i in scored]
    )
    stats = [None] * len(batch.parsed)
    for i, e, c in zip(scored, entropy, certainty):
        stats[i] = (e, c)
    return stats


@signal("self_certainty", trainer="grpo")
def self_certainty(batch, cfg):
    """Mean over completion tokens of KL(uniform || p(.)) (Intuitor, arXiv 2505.19590)."""
    return [None if s is None else s[1] for s in _token_stats(batch)]


@signal("entropy", trainer="grpo")
def entropy(batch, cfg):
    """log|V| minus the mean token entropy over completion tokens (EM-RL's -H, arXiv 2505.15134,
    shifted to be >= 0).

    The shift by log|V| (the entropy of a uniform guess) cancels in GRPO's group normalisation;
    it puts the floor of an unparseable completion at the uniform policy's reward.
    """
    log_vocab = math.log(batch.model.config.vocab_size)
    return [None if s is None else log_vocab - s[0] for s in _token_stats(batch)]


@signal("random", trainer="grpo")
def random_reward(batch, cfg):
    """Bernoulli(0.5) per answered completion (spurious-reward control, arXiv 2506.10947)."""
    draws = [float(batch.rng.random() < 0.5) for _ in batch.completions]
    return [None if p.answer is None else d for p, d in zip(batch.parsed, draws)]


@signal("replay_only", trainer="grpo", reward_varies=False)
def replay_only(batch, cfg):
    """Every completion scores 0, so GRPO makes no update and only the anchor's catalyst replay trains: the
    replay-only control of the anchor study (how much of `replay`'s effect is extra SFT).

    Valid only with an anchor that replays (`ttt.anchor=replay` or `kl+replay`).
    """
    return [0.0] * len(batch.completions)


@signal("oracle", trainer="grpo", access="gold")
def oracle(batch, cfg):
    """1 if the answer equals the gold answer (RLVR ceiling, not a test-time method)."""
    return [
        None if p.answer is None else float(batch.task.answers_equal(p.answer, g))
        for p, g in zip(batch.parsed, batch.gold)
    ]
