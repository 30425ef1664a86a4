"""Probes that explain an ignition result: greedy forward passes on the catalyst checkpoint, no training.

* skill retention (`skill/base`, `skill/start`): greedy accuracy on held-out single-op items
  (`Task.atomic_probes`) before the catalyst (the base) and after it (the TTT start). Does the
  catalyst overwrite the atomic skill?
* trace dependence (`trace/<kind>/follows_trace`, `trace/<kind>/gold_answer`): after an id prompt
  the model is handed a trace (teacher-forced) — the gold trace, a donor's gold trace (`swapped`)
  or a `corrupted` one — and writes the answer greedily. The share of answers equal to the answer
  the trace's own outputs lead to vs the share equal to the gold answer: does the model read its trace?
* latent direct skill (`latent/base`, `latent/start`): greedy accuracy on the id problems asked in the
  form a `direct` base learnt them in (`Task.latent_probes`): is the direct skill there, and does the
  catalyst keep it?
* format rate (`format/start`): share of greedy id completions that parse with an answer and the
  expected number of steps.

Definitions and the scoring choice: docs/metrics.md.
"""

from __future__ import annotations

from typing import Any, Callable

from catalyst_ttt.generation import generate
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.schema import ProbesConfig, RegimeConfig
from catalyst_ttt.tasks.base import AtomicProbe, Problem, Task

# Trace kind -> the regime that writes it (None: the problem's own gold trace). Default regime settings
# and seed 0 whatever the cell's regime: every cell is probed with the same traces, so cells compare.
TRACE_KINDS = {"gold": None, "donor": "swapped", "corrupted": "corrupted"}


def catalyst_probes(
    cfg: ProbesConfig,
    task: Task,
    problems: list[Problem],
    model,
    tokenizer,
    batch_size: int,
    base_model: Callable[[], Any],
) -> dict:
    """Every probe of the TTT start `model` on the id `problems` (and, for skill retention and the latent
    skill, of its base, which `base_model()` loads when a probe needs it), as flat numbers."""
    if not cfg.enabled:
        return {}
    out = {"format/start": format_rate(task, problems, model, tokenizer, batch_size)}
    base = None
    for name, probes in (
        ("skill", task.atomic_probes(cfg.atomic_items)),
        ("latent", task.latent_probes(problems)),
    ):
        if probes:
            base = base or base_model()
            out[f"{name}/base"] = skill_accuracy(task, probes, base, tokenizer, batch_size)
            out[f"{name}/start"] = skill_accuracy(task, probes, model, tokenizer, batch_size)
    return out | trace_dependence(task, problems, model, tokenizer, batch_size)


def leading_answer(task: Task, text: str) -> str | None:
    """The longest non-empty prefix of `text` that has the form of an answer."""
    for end in range(len(text), 0, -1):
        if task.is_answer(text[:end]):
            return text[:end]
    return None


def skill_accuracy(task: Task, probes: list[AtomicProbe], model, tokenizer, batch_size: int) -> float:
    """Share of probes whose greedy continuation starts with exactly the op's result (then a non-answer
    character or the end): what greedy decoding writes, scored like an answer."""
    budget = max(len(p.answer) for p in probes) + 1  # one character past the result: a longer one is wrong
    written = generate(model, tokenizer, [p.prompt for p in probes], budget, batch_size=batch_size)
    return sum(leading_answer(task, w[0]) == p.answer for p, w in zip(probes, written)) / len(probes)


def format_rate(task: Task, problems: list[Problem], model, tokenizer, batch_size: int) -> float:
    """Share of greedy completions with an answer and, where the prompt tells it, the expected step count."""
    budget = task.completion_budget(problems)
    written = generate(model, tokenizer, [p.prompt for p in problems], budget, batch_size=batch_size)
    parsed = [task.parse(w[0]) for w in written]
    expected = [task.expected_steps(p) for p in problems]
    ok = [q.answer is not None and (e is None or len(q.steps) == e) for q, e in zip(parsed, expected)]
    return sum(ok) / len(ok)


def probe_traces(task: Task, problems: list[Problem], kind: str) -> list[tuple[str, ...]]:
    regime = TRACE_KINDS[kind]
    if regime is None:
        return [p.steps for p in problems]
    rows = REGIMES.get(regime)(problems, task, RegimeConfig(name=regime), 0)
    return [task.parse(row["completion"]).steps for row in rows]


def trace_dependence(task: Task, problems: list[Problem], model, tokenizer, batch_size: int) -> dict:
    """Per trace kind: the greedy answer after the teacher-forced trace, equal to the trace's own answer
    vs to the gold answer. Donor and corrupted items whose trace leads to the gold answer anyway are left
    out, so the two shares never count the same answer; items whose trace answer the task cannot tell
    count toward the gold share only."""
    out = {}
    for kind in TRACE_KINDS:
        traces = probe_traces(task, problems, kind)
        contexts = [p.prompt + task.render(t, "") for p, t in zip(problems, traces)]
        led_to = [task.trace_answer(t) for t in traces]
        kept = [
            i
            for i, (p, answer) in enumerate(zip(problems, led_to))
            if kind == "gold" or answer is None or not task.answers_equal(answer, p.answer)
        ]
        if not kept:
            continue
        budget = max(len(x) for i in kept for x in (problems[i].answer, led_to[i] or "")) + 1
        written = generate(model, tokenizer, [contexts[i] for i in kept], budget, batch_size=batch_size)
        answers = [task.parse(task.render(traces[i], "") + w[0]).answer for i, w in zip(kept, written)]
        known = [(a, led_to[i]) for a, i in zip(answers, kept) if led_to[i] is not None]
        out[f"trace/{kind}/gold_answer"] = sum(
            task.answers_equal(a, problems[i].answer) for a, i in zip(answers, kept)
        ) / len(kept)
        if known:
            out[f"trace/{kind}/follows_trace"] = sum(task.answers_equal(a, led) for a, led in known) / len(known)
    return out
