"""TRL trainers for the three training phases: base pretraining, catalyst SFT, and TTT."""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
from typing import Callable

import torch
from datasets import Dataset
from peft import PeftModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from catalyst_ttt.anchors import Anchor
from catalyst_ttt.device import precision_args
from catalyst_ttt.generation import generate
from catalyst_ttt.schema import ModelConfig, SignalConfig, TTTConfig
from catalyst_ttt.signals import RewardBatch, Signal, consensus_rows, group_majorities
from catalyst_ttt.tasks.base import Problem, Task
from catalyst_ttt.votes import distinct_answers


class Diverged(RuntimeError):
    def __init__(self, step: int | None, what: str, phase: str = "TTT"):
        super().__init__(f"{what} is NaN at {phase} step {step}" if step is not None else f"{what} is NaN")
        self.step = step


# What torch says when it samples from NaN (or inf) logits: the model diverged, the code did not fail.
NAN_SAMPLING = "probability tensor contains either `inf`, `nan` or element < 0"


def divergence_of(err: BaseException) -> Diverged | None:
    """`err` as a divergence: a Diverged, or sampling that died on NaN logits; None for a real failure."""
    if isinstance(err, Diverged):
        return err
    if isinstance(err, RuntimeError) and NAN_SAMPLING in str(err):
        return Diverged(None, "sampling from NaN logits")
    return None


class NanGuard(TrainerCallback):
    """A NaN training loss (needs `logging_nan_inf_filter=False`) or NaN weights after a step stop
    the phase as diverged: nothing trained on NaN is cached or evaluated as if it were a model."""

    def __init__(self, phase: str):
        self.phase = phase

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):  # every step: logging_steps=1
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise Diverged(state.global_step, "loss", self.phase)
        if model is not None and not all(torch.isfinite(p).all() for p in model.parameters()):
            raise Diverged(state.global_step, "a weight", self.phase)


_PROGRESS: list[Progress] = []  # the progress display of `training_progress`, while one is open


@contextlib.contextmanager
def training_progress(console: Console):
    """Within this block every trainer draws a progress bar with an ETA (`cttt run`)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        _PROGRESS.append(progress)
        try:
            yield
        finally:
            _PROGRESS.remove(progress)


class ProgressBar(TrainerCallback):
    def __init__(self, progress: Progress, label: str):
        self.progress, self.label, self.task = progress, label, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.task = self.progress.add_task(self.label, total=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)


def _callbacks(callbacks, phase: str, steps: int) -> list[TrainerCallback]:
    shown = [ProgressBar(_PROGRESS[-1], f"{phase} {steps} steps")] if _PROGRESS else []
    return [NanGuard(phase), *callbacks, *shown]


def _common_args(
    model, output_dir: str, steps: int, batch_size: int, lr: float, seed: int, micro_batch_size: int | None = None
) -> dict:
    """Arguments every trainer shares. A step trains on `batch_size` rows, accumulated over passes of
    `micro_batch_size` (None: one pass); the trainer runs where `model` is, in its device's precision."""
    micro = micro_batch_size or batch_size
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch_size // micro,
        learning_rate=lr,
        seed=seed,
        data_seed=seed,
        **precision_args(next(model.parameters()).device),
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL defaults it on: a ~1M-parameter model only pays its recompute
        logging_nan_inf_filter=False,  # else a NaN step loss is logged as the running mean and never seen
    )


def sft(
    model,
    tokenizer,
    dataset: Dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_length: int,
    schedule: str = "cosine",
    callbacks: list[TrainerCallback] = (),
    packed: bool = False,
    micro_batch_size: int | None = None,
) -> None:
    """SFT in place; prompt/completion rows train on the completion only (TRL's default).

    `packed`: rows are packed best-fit into blocks of `max_length` tokens, each row attending to itself
    alone (TRL's padding-free `bfd` packing: no token is padding), and a step takes as many blocks as
    hold `batch_size` rows of the dataset's mean length."""
    if steps == 0:  # HF reads max_steps=0 as "train for num_train_epochs" instead
        return
    packing = {}
    if packed:
        rows = _mean_tokens(tokenizer, dataset)
        batch_size = max(1, round(batch_size * rows / max_length))
        packing = {"packing": True, "packing_strategy": "bfd"}
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            **_common_args(model, scratch, steps, batch_size, lr, seed, micro_batch_size),
            lr_scheduler_type=schedule,
            warmup_steps=min(100, steps // 10),
            max_length=max_length,
            **packing,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=_callbacks(callbacks, "SFT", steps),
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    _drop_patched_forward(model)


def _mean_tokens(tokenizer, dataset: Dataset) -> float:
    """Mean tokens per row (with its end-of-sequence token), from up to 2,000 rows."""
    texts = dataset[: min(2000, len(dataset))]["text"]
    return sum(len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) / len(texts)


def make_reward_function(
    signal: Signal,
    task: Task,
    problems: dict[str, Problem],
    model,
    tokenizer,
    *,
    signal_cfg: SignalConfig,
    ttt: TTTConfig,
    seed: int,
) -> Callable:
    """A TRL reward function for `signal` scoring with `model` (the policy GRPO trains in place),
    plus diagnostics that read gold answers.

    The gold answers are read here, after the signal has scored the batch; a signal whose access
    class is not "gold" is given unlabeled problems and no gold list.
    """
    uses_labels = signal.uses_labels(signal_cfg)
    rng = random.Random(seed)
    memory: dict = {}  # per-prompt state a signal keeps across the steps of this TTT run

    def reward(prompts, completions, completion_ids, log_metric=None, trainer_state=None, **_):
        parsed = [task.parse(c) for c in completions]
        items = [problems[p] for p in prompts]
        gold = [p.answer for p in items]
        batch = RewardBatch(
            prompts=list(prompts),
            completions=list(completions),
            completion_ids=[list(c) for c in completion_ids],
            parsed=parsed,
            problems=items if uses_labels else [p.unlabeled() for p in items],
            group_size=ttt.num_generations,
            task=task,
            model=model,
            tokenizer=tokenizer,
            gold=gold if uses_labels else None,
            rng=rng,
            memory=memory,
            temperature=ttt.temperature,
        )
        rewards = signal.rewards(batch, signal_cfg)
        step = trainer_state.global_step if trainer_state is not None else 0
        if any(math.isnan(r) for r in rewards):  # TRL would read NaN as "abstain" and train on
            raise Diverged(step + 1, f"{signal.name} reward")
        if log_metric is not None:
            diagnostics = ttrl_diagnostics(batch, gold, rewards, task) | reward_diagnostics(batch, rewards)
            for name, value in diagnostics.items():
                log_metric(name, value)
        return rewards

    reward.__name__ = signal.name
    return reward


def reward_diagnostics(batch: RewardBatch, rewards: list[float]) -> dict[str, float]:
    """Label-free, per batch. ttt/frac_zero_std: share of groups whose rewards are all equal (GRPO learns
    nothing from them); ttt/distinct_answers: distinct answers per group (votes use `answers_equal`),
    the answer diversity the early-warning predictor reads (metrics/stability.predictor_step)."""
    flat = [len({rewards[i] for i in group}) == 1 for group in batch.groups()]
    distinct = [len(distinct_answers([batch.parsed[i].answer for i in group], batch.task)) for group in batch.groups()]
    return {"ttt/frac_zero_std": sum(flat) / len(flat), "ttt/distinct_answers": sum(distinct) / len(distinct)}


def ttrl_diagnostics(batch: RewardBatch, gold: list[str], rewards: list[float], task: Task) -> dict[str, float]:
    """From gold answers, outside the signal (votes use `answers_equal`, as the rewards do).

    label_acc: the group's majority answer is right; majority_ratio: share of the group that
    voted for it; reward_acc: the reward (>= 0.5) agrees with the oracle; oracle_acc: answers
    right; local_valid_wrong: every step locally valid but the answer wrong (how often the
    `process` check is satisfied by a chain that does not solve the problem).
    """
    majorities = group_majorities(batch)
    label_hits, ratios = [], []
    for group in batch.groups():
        majority = majorities[group[0]]
        label_hits.append(float(task.answers_equal(majority, gold[group[0]])))
        votes = sum(task.answers_equal(batch.parsed[i].answer, majority) for i in group) if majority else 0
        ratios.append(votes / len(group))
    oracle = [task.answers_equal(p.answer, g) for p, g in zip(batch.parsed, gold)]
    agree = [float((r >= 0.5) == o) for r, o in zip(rewards, oracle)]
    local_valid = [
        bool(flags) and all(flags)
        for flags in (task.step_validity(q, p.steps, local=True) for q, p in zip(batch.problems, batch.parsed))
    ]
    hacked = [v and not o for v, o in zip(local_valid, oracle)]
    return {
        "ttrl/label_acc": sum(label_hits) / len(label_hits),
        "ttrl/majority_ratio": sum(ratios) / len(ratios),
        "ttrl/reward_acc": sum(agree) / len(agree),
        "ttrl/oracle_acc": sum(oracle) / len(oracle),
        "ttrl/local_valid_wrong": sum(hacked) / len(hacked),
    }


def grpo(
    model,
    tokenizer,
    prompts: list[str],
    reward_fn: Callable,
    max_completion_length: int,
    callbacks: list[TrainerCallback],
    *,
    ttt: TTTConfig,
    anchor: Anchor,
    seed: int,
    trust_remote_code: bool,
) -> None:
    """GRPO on unlabeled prompts, training `model` in place (rewards may score with it), with the cell's
    anchor: a KL to the start checkpoint, and replay of catalyst rows (anchors.py).

    Under a LoRA adapter (`model` a PeftModel) TRL takes the KL reference from a frozen copy of the
    fresh adapter, whose update is zero: the adapter-free start point, with no second model loaded.
    `trust_remote_code`: the KL reference loads like the policy."""
    replay = (
        {
            "replay": ReplayBatches(
                anchor.replay_rows, tokenizer, anchor.replay_batch_size, anchor.replay_max_length, seed
            ),
            "replay_weight": anchor.replay_weight,
        }
        if anchor.replays
        else {}
    )
    with tempfile.TemporaryDirectory() as scratch:
        args = GRPOConfig(
            **_common_args(
                model,
                scratch,
                ttt.steps,
                ttt.prompts_per_step * ttt.num_generations,
                ttt.lr,
                seed,
                ttt.micro_batch_size,
            ),
            num_generations=ttt.num_generations,
            max_completion_length=max_completion_length,
            temperature=ttt.temperature,
            top_k=0,
            top_p=1.0,
            beta=anchor.beta,
            trust_remote_code=trust_remote_code,
            lr_scheduler_type="constant",
            use_vllm=ttt.use_vllm,  # in TRL's colocate mode: vLLM shares the training GPU
        )
        trainer = (ReplayGRPOTrainer if replay else GRPOTrainer)(
            model=model,
            reward_funcs=[reward_fn],
            args=args,
            processing_class=tokenizer,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            callbacks=_callbacks(callbacks, "TTT", ttt.steps),
            **replay,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    _drop_patched_forward(model)


def _drop_patched_forward(model) -> None:
    """TRL's trainers set `forward` on the model (under a LoRA adapter, on its base model) to a closure
    over that object's original bound forward; a deep copy of the model would keep running the
    original's weights, so restore the class's."""
    vars(model.get_base_model() if isinstance(model, PeftModel) else model).pop("forward", None)


class StepHook(TrainerCallback):
    """Forwards trainer logs, checks for NaN, and runs `on_eval(step)` every `every` steps."""

    def __init__(
        self, on_log: Callable[[int, dict], None], on_eval: Callable[[int], None], every: int, step_offset: int = 0
    ):
        self.on_log_fn, self.on_eval_fn, self.every, self.offset = on_log, on_eval, every, step_offset

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step + self.offset
        logs = dict(logs or {})
        for key in ("loss", "reward"):
            if key in logs and isinstance(logs[key], float) and math.isnan(logs[key]):
                raise Diverged(step, key)
        self.on_log_fn(step, {k if k.startswith(("ttrl/", "ttt/")) else f"ttt/{k}": v for k, v in logs.items()})

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step + self.offset
        if step % self.every == 0:
            self.on_eval_fn(step)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def sft_max_length(model: ModelConfig) -> int:
    """Catalyst and self-SFT sequence budget: the tiny model's positions, or 1024 for a HF model."""
    return model.max_positions if model.kind == "tiny" else 1024


def self_train(
    model,
    tokenizer,
    prompts: list[str],
    task: Task,
    hook: StepHook,
    tracker,
    *,
    ttt: TTTConfig,
    signal_cfg: SignalConfig,
    seed: int,
    generation_batch_size: int,
    max_length: int,
) -> int:
    """self_sft: rounds of sample -> keep the completions that agree with their majority -> SFT on them.
    Returns the number of SFT steps taken."""
    per_round = max(1, ttt.steps // signal_cfg.rounds)
    for round_index in range(signal_cfg.rounds):
        samples = generate(
            model,
            tokenizer,
            prompts,
            task.max_completion_chars,
            samples=signal_cfg.samples,
            temperature=ttt.temperature,
            batch_size=generation_batch_size,
            seed=seed * 1000 + round_index,
        )
        rows = consensus_rows(task, prompts, samples)
        tracker.log_step(round_index * per_round, {"ttt/consensus_rows": len(rows)})
        if rows:
            hook.offset = round_index * per_round
            sft(
                model,
                tokenizer,
                Dataset.from_list(rows),
                steps=per_round,
                batch_size=ttt.prompts_per_step * ttt.num_generations,
                lr=ttt.lr,
                seed=seed + round_index,
                max_length=max_length,
                schedule="constant",
                callbacks=[hook],
                micro_batch_size=ttt.micro_batch_size,
            )
    return per_round * signal_cfg.rounds


class ReplayBatches:
    """The catalyst's prompt/completion rows as padded batches, in a seeded order, cycling forever.

    Like the catalyst's SFT (TRL's prompt/completion default): the loss covers the completion and its
    end-of-sequence token only; a row is cut to `max_length` tokens.
    """

    def __init__(self, rows: list[dict], tokenizer, batch_size: int, max_length: int, seed: int):
        self.examples = []
        for row in rows:
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            ids = (prompt + completion + [tokenizer.eos_token_id])[:max_length]
            labels = ([-100] * len(prompt) + completion + [tokenizer.eos_token_id])[:max_length]
            self.examples.append((ids, labels))
        self.batch_size, self.pad = min(batch_size, len(self.examples)), tokenizer.pad_token_id
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self, device) -> dict[str, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size:
            if not self.order:
                self.order = self.rng.sample(range(len(self.examples)), len(self.examples))
            picked.append(self.examples[self.order.pop()])
        width = max(len(ids) for ids, _ in picked)
        ids = [ids + [self.pad] * (width - len(ids)) for ids, _ in picked]
        labels = [labels + [-100] * (width - len(labels)) for _, labels in picked]
        mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in picked]
        return {
            "input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "labels": torch.tensor(labels, device=device),
        }


class ReplayGRPOTrainer(GRPOTrainer):
    """GRPO whose every step also minimises `weight` x the mean token NLL of a batch of catalyst rows.

    Why an auxiliary loss per step rather than interleaved SFT steps: both losses then move the same
    optimizer step under the same learning rate and schedule, TTT keeps its step count (trajectories
    and collapse steps stay comparable across anchors), and no second trainer (with its own optimizer
    state) runs between GRPO steps.
    """

    def __init__(self, *args, replay: ReplayBatches, replay_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.replay, self.replay_weight = replay, replay_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.model.training:
            return loss
        nll = model(**self.replay.next(loss.device)).loss
        self._metrics["train"]["replay_nll"].append(nll.item())
        # GRPO's loss is already divided for gradient accumulation (TRL scales its own aux loss the same way)
        return loss + self.replay_weight * nll / self.current_gradient_accumulation_steps
