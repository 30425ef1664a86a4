"""The eval suite: greedy and sampled completions of every split, then accuracy, process and sample metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from catalyst_ttt.generation import generate
from catalyst_ttt.metrics.accuracy import agreement, maj_at_k, pass_at_k
from catalyst_ttt.metrics.process import process_item
from catalyst_ttt.schema import EvalConfig
from catalyst_ttt.tasks.base import Problem, Task


@dataclass
class SplitResult:
    metrics: dict[str, float]
    correct: list[int]  # greedy correctness per item (0/1), in split order: pairs across cells and steps
    examples: list[dict]
    completions: list[str]  # the greedy completion of every item, in split order


def evaluate_split(
    task: Task, problems: list[Problem], model, tokenizer, cfg: EvalConfig, seed: int, sampled: bool = True
) -> SplitResult:
    """Greedy accuracy and process metrics; with `sampled`, mean/maj/pass@k from `cfg.samples` samples."""
    prompts = [p.prompt for p in problems]
    budget = task.completion_budget(problems)
    greedy = [g[0] for g in generate(model, tokenizer, prompts, budget, batch_size=cfg.batch_size)]
    samples = (
        generate(
            model,
            tokenizer,
            prompts,
            budget,
            samples=cfg.samples,
            temperature=cfg.temperature,
            batch_size=cfg.batch_size,
            seed=seed,
        )
        if sampled
        else None
    )
    rows: list[dict[str, float]] = []
    for i, problem in enumerate(problems):
        parsed = task.parse(greedy[i])
        right = task.answers_equal(parsed.answer, problem.answer)
        row = {"acc/greedy": float(right), **process_item(task, problem, parsed, right)}
        if samples is not None:
            row |= sample_metrics(task, [task.parse(s).answer for s in samples[i]], problem.answer, cfg.k)
        rows.append(row)
    metrics = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} if rows else {}
    examples = [{"prompt": p.prompt, "completion": g, "gold": p.answer} for p, g in zip(problems[:8], greedy)]
    correct = [int(r["acc/greedy"]) for r in rows]
    return SplitResult(metrics=metrics, correct=correct, examples=examples, completions=greedy)


def sample_metrics(task: Task, answers: list[str | None], gold: str, k: int) -> dict[str, float]:
    """mean@k, and pass@k and maj@k as unbiased estimates from n >= k samples: pass@k by Chen et al.'s
    formula, maj@k as the mean over every k-subset of the n samples (counted in closed form)."""
    n = len(answers)
    hits = sum(task.answers_equal(a, gold) for a in answers)
    return {
        f"acc/mean@{k}": hits / n,
        f"acc/maj@{k}": maj_at_k(answers, gold, task.answers_equal, k),
        f"acc/pass@{k}": pass_at_k(n, hits, k),
    } | agreement(answers, hits)


class Trajectory:
    """Greedy accuracy on fixed id and heldout subsets, kept per item, at chosen TTT steps."""

    SPLITS = ("id", "heldout")

    def __init__(self, task: Task, splits: dict[str, list[Problem]], cfg: EvalConfig, seed: int, tokenizer, tracker):
        self.task, self.cfg, self.seed, self.tokenizer = task, cfg, seed, tokenizer
        self.subsets = {name: splits[name][: cfg.trajectory_size] for name in self.SPLITS}
        self.tracker = tracker
        self.rows: list[dict] = []
        self.seconds = 0.0  # spent evaluating, for the cell's timing

    def record(self, step: int, model) -> list[dict]:
        """Evaluate the subsets at `step` (once per step) and log them; returns every row so far, which the
        cell's record keeps in the results store."""
        if self.rows and self.rows[-1]["step"] == step:
            return self.rows
        started = time.perf_counter()
        row: dict = {"step": step}
        for name, problems in self.subsets.items():
            res = evaluate_split(self.task, problems, model, self.tokenizer, self.cfg, self.seed, sampled=False)
            row[name] = {
                "acc": res.metrics["acc/greedy"],
                "step_validity": res.metrics["process/step_validity"],
                "correct": res.correct,
            }
        self.rows.append(row)
        self.seconds += time.perf_counter() - started
        self.tracker.log_step(
            step, {f"traj/{name}/{key}": row[name][key] for name in self.subsets for key in ("acc", "step_validity")}
        )
        return self.rows

    def steps(self) -> list[int]:
        return [row["step"] for row in self.rows]

    def correct(self, split: str) -> list[list[bool]]:
        return [row[split]["correct"] for row in self.rows]
