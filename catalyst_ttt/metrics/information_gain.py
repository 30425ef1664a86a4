"""Information gain of a reasoning trace under a fixed reader (after Wu et al., arXiv 2506.02126).

ℓ_i = log p_reader(answer | prompt, s_1..s_i) per answer token, for every prefix i = 0..n of a trace. The
reader is trained to finish the computation from any stated state (`reader_rows`), so a step that states a
true intermediate raises ℓ (fewer ops are left to do mentally), while a false step lowers it (the reader
carries on from a wrong state).

* `ig/total`: the mean over the trace's prefixes of ℓ_i − ℓ_0 — the information the steps carry about the
  answer, averaged along the trace. A trace that only states the answer at its end (a false chain that
  lands on it, a post-hoc rationalisation) gains late and scores low; a faithful chain gains from its first
  step. This is what separates faithful from unfaithful right answers.
* `ig/end`: ℓ_n − ℓ_0, Wu et al.'s total. It telescopes to the last prefix alone, so any trace whose last
  step states the answer scores like gold: close to accuracy, reported beside it.
* `ig/per_step`, `ig/positive_frac`: mean step gain ℓ_i − ℓ_{i−1}, and the share of positive ones.
* `ig/wu_ppl`: (PPL_0 − PPL_n) / (n + 1) with perplexity over the whole "prompt + steps + answer", as Wu et
  al.'s code computes it.
* `ig/traced`: the share of items with a trace; items without one have no IG ("no trace", never 0).
* `ig/acc_corr`: the item-level correlation of `ig/total` with correctness, where both vary.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np

from catalyst_ttt.scoring import continuation_logprobs, sequence_perplexities
from catalyst_ttt.tasks.base import Problem, Task


def reader_rows(task: Task, problems: list[Problem]) -> list[dict]:
    """Every prefix of each gold trace followed by the gold answer: the reader learns to finish the
    computation from any stated state, not only to copy the last step."""
    return [
        {"prompt": p.prompt, "completion": task.render(p.steps[:i], p.answer)}
        for p in problems
        for i in range(p.num_steps + 1)
    ]


def unfaithful_steps(task: Task, problem: Problem, rng: random.Random) -> tuple[str, ...] | None:
    """A right answer after invalid steps: the corrupted trace, its last stated output replaced by the gold
    answer (where the task can restate a step's output). The hardest case for a reader that copies."""
    steps = task.corrupted_steps(problem, rng)
    last = task.with_output(steps[-1], problem.answer) if steps else None
    return None if last is None else (*steps[:-1], last)


def item_prefix_logprobs(
    task: Task, scorer, tokenizer, prompts: list[str], traces: list[tuple[str, ...]], answers: list[str], batch_size
) -> list[list[float]]:
    """Per item, ℓ_0..ℓ_n: the mean log-probability per answer token after each prefix of its trace."""
    contexts, targets, spans = [], [], []
    for prompt, steps, answer in zip(prompts, traces, answers):
        spans.append((len(contexts), len(steps)))
        for i in range(len(steps) + 1):
            contexts.append(prompt + task.render(steps[:i], ""))
            targets.append(answer)
    lengths = [max(1, len(tokenizer(t, add_special_tokens=False)["input_ids"])) for t in targets]
    logprobs = continuation_logprobs(scorer, tokenizer, contexts, targets, batch_size)
    per_token = [lp / n for lp, n in zip(logprobs, lengths)]
    return [per_token[offset : offset + n + 1] for offset, n in spans]


def information_gain(
    task: Task,
    scorer,
    tokenizer,
    prompts: list[str],
    traces: list[tuple[str, ...]],
    answers: list[str],
    correct: list[int] | None = None,
    batch_size: int = 64,
) -> dict[str, float | None]:
    """Means over the items that have a trace (see the module docstring); None where no item has one."""
    ells = item_prefix_logprobs(task, scorer, tokenizer, prompts, traces, answers, batch_size)
    traced = [i for i, steps in enumerate(traces) if steps]
    out: dict[str, float | None] = {"ig/traced": len(traced) / max(1, len(traces))}
    if not traced:
        return out | dict.fromkeys(
            ("ig/total", "ig/end", "ig/per_step", "ig/positive_frac", "ig/wu_ppl", "ig/acc_corr")
        )
    totals = [_total(ells[i]) for i in traced]
    gains = [b - a for i in traced for a, b in zip(ells[i], ells[i][1:])]
    texts = [
        t
        for i in traced
        for t in (prompts[i] + task.render((), answers[i]), prompts[i] + task.render(traces[i], answers[i]))
    ]
    ppls = sequence_perplexities(scorer, tokenizer, texts, batch_size)
    return out | {
        "ig/total": _mean(totals),
        "ig/end": _mean([ells[i][-1] - ells[i][0] for i in traced]),
        "ig/per_step": _mean([_mean([b - a for a, b in zip(ells[i], ells[i][1:])]) for i in traced]),
        "ig/positive_frac": sum(g > 0 for g in gains) / len(gains),
        "ig/wu_ppl": _mean([(ppls[2 * k] - ppls[2 * k + 1]) / (len(traces[i]) + 1) for k, i in enumerate(traced)]),
        "ig/acc_corr": _correlation(totals, [correct[i] for i in traced]) if correct is not None else None,
    }


def calibration(
    task: Task, scorer, tokenizer, problems: list[Problem], kinds: dict[str, Callable], batch_size: int = 64
) -> dict[str, float]:
    """`ig/total` of each kind of trace of `problems`, with the gold answer: IG reads as information when
    gold traces gain (> 0) and gain more than every other kind (docs/metrics.md)."""
    out = {}
    for name, build in kinds.items():
        kept = [(p, t) for p, t in zip(problems, build(problems)) if t]
        if kept:
            prompts, steps, answers = [p.prompt for p, _ in kept], [t for _, t in kept], [p.answer for p, _ in kept]
            ells = item_prefix_logprobs(task, scorer, tokenizer, prompts, steps, answers, batch_size)
            out[name] = _mean([_total(ell) for ell in ells])
    return out


def _total(ell: list[float]) -> float:
    """`ig/total` of one item from its ℓ_0..ℓ_n: the mean gain of its prefixes over the bare prompt."""
    return _mean([x - ell[0] for x in ell[1:]])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _correlation(x: list[float], y: list[int]) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
