"""The pipeline of one cell, top to bottom: base -> catalyst -> ttt -> eval.

`run_cell` is the recipe; the helpers below it are its phases. Base, catalyst and IG-reader
checkpoints come from the phase cache, so cells of a sweep share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from catalyst_ttt.anchors import kl_beta, replay_weight
from catalyst_ttt.cache import beside_checkpoint, cached_checkpoint
from catalyst_ttt.config import build_task, task_key
from catalyst_ttt.device import device_record, resolve_device
from catalyst_ttt.evaluation import SplitResult, Trajectory, evaluate_split
from catalyst_ttt.metrics.information_gain import information_gain
from catalyst_ttt.metrics.probes import catalyst_probes
from catalyst_ttt.models import (
    char_tokenizer,
    load_pretrained,
    load_tokenizer,
    new_tiny_model,
    save_checkpoint,
    untrained_checkpoint,
    with_chat_template,
    with_lora,
)
from catalyst_ttt.record import CellRecord
from catalyst_ttt.regimes import CALIBRATION_REGIMES, REGIMES, catalyst_rows
from catalyst_ttt.signals import SIGNALS
from catalyst_ttt.tasks.base import TRAINING_SPLITS, Problem, Task
from catalyst_ttt.training import (
    StepHook,
    grpo,
    make_reward_function,
    self_train,
    set_threads,
    sft,
    sft_max_length,
)


def run_cell(cfg: DictConfig) -> dict:
    """Run one cell (or return its finished result); `result.json` is written atomically."""
    record = CellRecord(cfg)
    if finished := record.finished():
        return finished | {"skipped": True}
    task = build_task(cfg)  # bad data is the user's error: raised before anything is written
    device = resolve_device(cfg.device, cfg.ttt.use_vllm)  # so is asking for a GPU that is not there
    set_threads(cfg.threads)
    set_seed(cfg.seed)
    with record.running() as (result, tracker):
        result["device"] = device_record(device)
        # 1. base: the model before any catalyst (cached, shared by every cell of a base seed)
        with record.phase("base"):
            base_ref, result["phases"]["base"] = base_checkpoint(cfg, task, record.name, device)
        splits = with_chat_template(task.splits(), load_tokenizer(base_ref, cfg.model))
        # 2. catalyst: SFT on the regime's rows (cached per base, regime, budget, seed)
        with record.phase("catalyst"):
            start_ref, result["phases"]["catalyst"] = catalyst_checkpoint(
                cfg, task, splits, base_ref, record.name, device
            )
        model, tokenizer = load_pretrained(start_ref, cfg.model, device)
        with record.phase("pre_ttt"):
            result["pre_ttt"], result["items"] = pre_ttt_accuracy(cfg, task, splits["id"], model, base_ref, tokenizer)
        result["ignition"] = result["pre_ttt"]["acc/greedy"] - result["pre_ttt"]["base_acc/greedy"]
        result["probes"] = start_probes(cfg, task, splits, model, start_ref, base_ref, tokenizer)
        # 3. ttt: the signal on the unlabeled id prompts (training a LoRA adapter with ttt.lora), with the
        # trajectory recorded
        model = with_lora(model, cfg.ttt.lora)
        trajectory = Trajectory(task, splits, cfg.eval, cfg.seed, tokenizer, tracker, record.store)
        result["anchor"], replay = anchor_of(cfg, task, splits)
        with record.phase("ttt"):
            trajectory.record(0, model)
            last_step = train_at_test_time(cfg, task, splits["id"], model, tokenizer, trajectory, tracker, replay)
            trajectory.record(last_step, model)
        result["ttt"] = tracker.means(("ttt/", "ttrl/"))  # TTT diagnostics, averaged over logged steps
        result["timing"]["trajectory_s"] = trajectory.seconds  # part of ttt_s
        # 4. eval: every split, information gain under the reader, stability over the trajectory
        with record.phase("eval"):
            evaluated = evaluate_splits(cfg, task, splits, model, tokenizer)
        with record.phase("ig"):
            reader = ig_reader(cfg, task, splits, base_ref, record.name, result["phases"], device)
            result["ig"] = cell_information_gain(cfg, task, splits["id"], evaluated["id"], reader, tokenizer)
            result["ig_calibration"] = ig_calibration(cfg, task, splits["heldout"], reader, tokenizer)
        record.add_evaluation(evaluated, trajectory)
    return record.result


def start_probes(cfg, task, splits, model, start_ref: str, base_ref: str, tokenizer) -> dict:
    """The probes of the TTT start point (metrics/probes.py), measured once per cached checkpoint."""
    start = Path(start_ref)
    directory = start if start.is_relative_to(Path(cfg.cache_dir)) else None
    key = [_plain(cfg.metrics.probes), cfg.eval.max_per_split]
    return beside_checkpoint(
        directory, "probes", key, lambda: catalyst_probes(cfg, task, splits, model, base_ref, tokenizer)
    )


def evaluate_splits(cfg: DictConfig, task: Task, splits: dict[str, list[Problem]], model, tokenizer) -> dict:
    """Every split but the training pools, each cut to `eval.max_per_split` (None: every item); samples
    on `eval.sampled_splits`."""
    return {
        name: evaluate_split(
            task, items[: cfg.eval.max_per_split], model, tokenizer, cfg.eval, cfg.seed, name in cfg.eval.sampled_splits
        )
        for name, items in splits.items()
        if name not in TRAINING_SPLITS
    }


def base_checkpoint(cfg: DictConfig, task: Task, owner: str, device: str) -> tuple[str, str]:
    """The tiny model pretrained from scratch on the task's base corpus, or the given HF model."""
    if cfg.model.kind == "hf":
        return str(cfg.model.name_or_path), "pretrained"

    def build(directory: Path) -> None:
        tokenizer = char_tokenizer()
        model = new_tiny_model(cfg.model, tokenizer, cfg.base.seed).to(device)
        sft(
            model,
            tokenizer,
            Dataset.from_dict({"text": task.base_corpus()}),
            steps=cfg.base.steps,
            batch_size=cfg.base.batch_size,
            lr=cfg.base.lr,
            seed=cfg.base.seed,
            max_length=cfg.model.max_positions,
        )
        save_checkpoint(model, tokenizer, directory)

    path, built = cached_checkpoint(cfg.cache_dir, "base", base_key(cfg), build, owner, cfg.lock_timeout)
    return str(path), "trained" if built else "cached"


def base_key(cfg: DictConfig) -> dict:
    """Exactly what determines a tiny base model (a cell's `seed` does not: `base.seed` does)."""
    return {"task": task_key(cfg), "model": _plain(cfg.model), "base": _plain(cfg.base)}


def catalyst_key(cfg: DictConfig, base_name: str) -> dict:
    """Exactly what determines a catalyst checkpoint."""
    return {
        "base": base_name,
        "task": task_key(cfg),
        "regime": _plain(cfg.regime),
        "catalyst": _plain(cfg.catalyst),
        "seed": cfg.seed,
    }


def catalyst_checkpoint(
    cfg: DictConfig, task: Task, splits: dict, base_ref: str, owner: str, device: str
) -> tuple[str, str]:
    rows = catalyst_rows(cfg.regime.name, splits["train"], task, cfg.regime, cfg.catalyst.n, cfg.seed)
    if not rows:
        return base_ref, "skipped"
    c = cfg.catalyst
    origin = untrained_checkpoint(cfg, owner) if c.from_scratch else base_ref
    key = catalyst_key(cfg, base_name(cfg, origin))
    schedule = (c.steps, c.batch_size, c.lr, cfg.seed)
    path, built = fine_tuned(cfg, origin, rows, schedule, "catalyst", key, owner, device)
    return path, "trained" if built else "cached"


def fine_tuned(cfg, base_ref: str, rows: list[dict], schedule: tuple, kind: str, key: dict, owner: str, device: str):
    """The base SFT'd on `device` on prompt/completion `rows` with (steps, batch_size, lr, seed), from the
    phase cache."""
    steps, batch_size, lr, seed = schedule

    def build(directory: Path) -> None:
        model, tokenizer = load_pretrained(base_ref, cfg.model, device)
        sft(
            model,
            tokenizer,
            Dataset.from_list(rows),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            max_length=sft_max_length(cfg),
        )
        save_checkpoint(model, tokenizer, directory)

    path, built = cached_checkpoint(cfg.cache_dir, kind, key, build, owner, cfg.lock_timeout)
    return str(path), built


def base_name(cfg: DictConfig, base_ref: str) -> str:
    return Path(base_ref).name if cfg.model.kind == "tiny" else base_ref


def pre_ttt_accuracy(cfg, task, problems, model, base_ref, tokenizer) -> tuple[dict, dict]:
    """Greedy id accuracy of the TTT start point and of the base (regime `none`), per item: ignition."""
    problems = problems[: cfg.eval.max_per_split]
    start = evaluate_split(task, problems, model, tokenizer, cfg.eval, cfg.seed, sampled=False)
    if cfg.regime.name == "none":
        base = start
    else:
        base_model = load_pretrained(base_ref, cfg.model, model.device)[0]
        base = evaluate_split(task, problems, base_model, tokenizer, cfg.eval, cfg.seed, sampled=False)
    metrics = {
        "acc/greedy": start.metrics["acc/greedy"],
        "base_acc/greedy": base.metrics["acc/greedy"],
        "process/step_validity": start.metrics["process/step_validity"],
    }
    return metrics, {"id": {"base": base.correct, "start": start.correct}}


def anchor_of(cfg: DictConfig, task: Task, splits: dict) -> tuple[dict, list[dict]]:
    """The anchor's resolved weights for result.json, and the rows replay trains on: the very rows the
    catalyst was trained on (none for regime `none`, where replay is a no-op, noted)."""
    weight = replay_weight(cfg.ttt)
    rows = catalyst_rows(cfg.regime.name, splits["train"], task, cfg.regime, cfg.catalyst.n, cfg.seed) if weight else []
    info = {"anchor": cfg.ttt.anchor, "beta": kl_beta(cfg.ttt), "replay_weight": weight, "replay_rows": len(rows)}
    if weight and not rows:
        info["note"] = f"regime {cfg.regime.name} has no catalyst rows: replay is a no-op"
    return info, rows


def train_at_test_time(cfg, task: Task, problems, model, tokenizer, trajectory, tracker, replay=()) -> int:
    """Train on the id prompts without their labels (GRPO replays `replay` rows when its anchor says
    so); returns the number of TTT steps taken."""
    signal = SIGNALS.get(cfg.signal.name)
    if signal.trainer is None or cfg.ttt.steps == 0:
        return 0
    hook = StepHook(
        on_log=tracker.log_step,
        on_eval=lambda step: trajectory.record(step, model),
        every=cfg.ttt.eval_every if cfg.eval.trajectory else cfg.ttt.steps + 1,
    )
    prompts = [p.prompt for p in problems]
    if signal.trainer == "grpo":
        reward_fn = make_reward_function(signal, cfg, task, {p.prompt: p for p in problems}, model, tokenizer)
        grpo(model, tokenizer, prompts, reward_fn, cfg, task.max_completion_chars, [hook], replay)
        return cfg.ttt.steps
    return self_train(model, tokenizer, prompts, task, cfg, hook, tracker)


@dataclass
class Reader:
    """The fixed scorer of information gain, and its cache directory (None for a given scorer)."""

    model: Any
    directory: Path | None


def ig_reader(
    cfg: DictConfig, task: Task, splits: dict, base_ref: str, owner: str, phases: dict, device: str
) -> Reader | None:
    """The fixed scorer of information gain: the base fine-tuned once on correct traces of the
    `reader` pool (disjoint from every catalyst row and evaluated item), or `metrics.ig.scorer`."""
    ig = cfg.metrics.ig
    if not ig.enabled:
        return None
    if ig.scorer:
        phases["reader"] = "given"
        return Reader(load_pretrained(ig.scorer, cfg.model, device)[0], None)
    rows = REGIMES.get("correct")(splits["reader"], task, cfg.regime, 0)
    schedule = (ig.reader_steps, ig.reader_batch_size, ig.reader_lr, 0)
    key = {"base": base_name(cfg, base_ref), "task": task_key(cfg), "reader": list(schedule)}
    path, built = fine_tuned(cfg, base_ref, rows, schedule, "reader", key, owner, device)
    phases["reader"] = "trained" if built else "cached"
    return Reader(load_pretrained(path, cfg.model, device)[0], Path(path))


def cell_information_gain(cfg, task, problems, final: SplitResult, reader: Reader | None, tokenizer) -> dict:
    """IG of the cell's own greedy traces on id (the final eval's completions), with the gold answer,
    under the reader."""
    if reader is None:
        return {}
    count = cfg.metrics.ig.max_items
    problems, completions = problems[:count], final.completions[:count]
    traces = [task.parse(c).steps for c in completions]
    answers = [p.answer for p in problems]
    return information_gain(task, reader.model, tokenizer, [p.prompt for p in problems], traces, answers)


def ig_calibration(cfg, task, problems, reader: Reader | None, tokenizer) -> dict:
    """ig/total under the reader of gold, swapped, illogical and corrupted traces of `heldout` items:
    IG is interpretable when gold > 0 and gold > every corruption (report.IGCalibration).

    It depends on the reader and the regimes' options only, so a cached reader keeps it beside its
    weights and every cell of that reader reads it back."""
    if reader is None:
        return {}

    def measure() -> dict:
        chosen = problems[: cfg.metrics.ig.max_items]
        prompts, answers = [p.prompt for p in chosen], [p.answer for p in chosen]
        out = {}
        for name in CALIBRATION_REGIMES:
            if name in REGIMES:
                rows = REGIMES.get(name)(chosen, task, cfg.regime, 0)
                traces = [task.parse(row["completion"]).steps for row in rows]
                out[name] = information_gain(task, reader.model, tokenizer, prompts, traces, answers)["ig/total"]
        return out

    options = {k: v for k, v in _plain(cfg.regime).items() if k != "name"}
    return beside_checkpoint(reader.directory, "calibration", [options, cfg.metrics.ig.max_items], measure)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)
