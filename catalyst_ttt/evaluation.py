"""The eval suite: batched generation on every split, then accuracy, process and sample metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from catalyst_ttt.config import EvalConfig
from catalyst_ttt.metrics.accuracy import agreement, maj_at_k, pass_at_k
from catalyst_ttt.metrics.process import process_item
from catalyst_ttt.results import TRAJECTORY
from catalyst_ttt.tasks.base import Problem, Task


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    *,
    samples: int = 0,
    temperature: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
) -> list[list[str]]:
    """Greedy completion (samples=0) or `samples` sampled completions per prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    per_batch = max(1, batch_size // max(1, samples))
    out: list[list[str]] = []
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples)
            if samples
            else dict(do_sample=False)
        )
        ids = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **kwargs,
        )
        texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        group = samples or 1
        out += [texts[i : i + group] for i in range(0, len(texts), group)]
    model.train(was_training)
    return out


@dataclass
class SplitResult:
    metrics: dict[str, float]
    correct: list[bool]  # greedy correctness per item, for flips between evaluations
    examples: list[dict]


def evaluate_split(
    task: Task, problems: list[Problem], model, tokenizer, cfg: EvalConfig, seed: int, sampled: bool = True
) -> SplitResult:
    prompts = [p.prompt for p in problems]
    budget = task.max_completion_chars
    greedy = [g[0] for g in generate(model, tokenizer, prompts, budget, batch_size=cfg.batch_size)]
    samples = (
        generate(
            model,
            tokenizer,
            prompts,
            budget,
            samples=cfg.k,
            temperature=cfg.temperature,
            batch_size=cfg.batch_size,
            seed=seed,
        )
        if sampled
        else None
    )
    rows: list[dict[str, float]] = []
    correct: list[bool] = []
    for i, problem in enumerate(problems):
        parsed = task.parse(greedy[i])
        right = task.answers_equal(parsed.answer, problem.answer)
        correct.append(right)
        row = {"acc/greedy": float(right), **process_item(task, problem, parsed, right)}
        if samples is not None:
            answers = [task.parse(s).answer for s in samples[i]]
            hits = sum(task.answers_equal(a, problem.answer) for a in answers)
            row |= {
                f"acc/mean@{cfg.k}": hits / cfg.k,
                f"acc/maj@{cfg.k}": maj_at_k(answers, problem.answer, task.answers_equal),
                f"acc/pass@{cfg.k}": pass_at_k(cfg.k, hits, cfg.k),
            } | agreement(answers, hits)
        rows.append(row)
    metrics = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} if rows else {}
    examples = [{"prompt": p.prompt, "completion": g, "gold": p.answer} for p, g in zip(problems[:8], greedy)]
    return SplitResult(metrics=metrics, correct=correct, examples=examples)


class Trajectory:
    """Greedy accuracy on fixed id and heldout subsets, kept per item, at chosen TTT steps."""

    SPLITS = ("id", "heldout")

    def __init__(
        self, task: Task, splits: dict[str, list[Problem]], cfg: EvalConfig, seed: int, tokenizer, tracker, store
    ):
        self.task, self.cfg, self.seed, self.tokenizer = task, cfg, seed, tokenizer
        self.subsets = {name: splits[name][: cfg.trajectory_size] for name in self.SPLITS}
        self.tracker, self.store = tracker, store
        self.rows: list[dict] = []

    def record(self, step: int, model) -> None:
        if self.rows and self.rows[-1]["step"] == step:
            return
        row: dict = {"step": step}
        for name, problems in self.subsets.items():
            res = evaluate_split(self.task, problems, model, self.tokenizer, self.cfg, self.seed, sampled=False)
            row[name] = {
                "acc": res.metrics["acc/greedy"],
                "step_validity": res.metrics["process/step_validity"],
                "correct": res.correct,
            }
        self.rows.append(row)
        self.store.write(TRAJECTORY, self.rows)
        self.tracker.log_step(
            step, {f"traj/{name}/{key}": row[name][key] for name in self.subsets for key in ("acc", "step_validity")}
        )

    def steps(self) -> list[int]:
        return [row["step"] for row in self.rows]

    def correct(self, split: str) -> list[list[bool]]:
        return [row[split]["correct"] for row in self.rows]
