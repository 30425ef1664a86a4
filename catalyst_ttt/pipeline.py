"""The pipeline of one cell, top to bottom: base -> catalyst -> ttt -> eval.

`run_cell` is the recipe; the helpers below it are its phases. Base, catalyst and IG-reader
checkpoints come from the phase cache, so cells of a sweep share them.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset
from omegaconf import DictConfig
from transformers import set_seed

from catalyst_ttt.anchors import Anchor, resolve_anchor
from catalyst_ttt.cache import beside_checkpoint, cached_checkpoint
from catalyst_ttt.checkpoints import (
    BASE_EVAL,
    START_EVAL,
    base_eval_key,
    base_key,
    catalyst_key,
    checkpoint_name,
    floor_gate,
    plain,
    reader_key,
    scratch_key,
    start_eval_key,
)
from catalyst_ttt.config import build_task, describe_cell, task_key
from catalyst_ttt.device import device_record, resolve_device
from catalyst_ttt.evaluation import SplitResult, Trajectory, evaluate_split
from catalyst_ttt.metrics.information_gain import calibration, information_gain, reader_rows, unfaithful_steps
from catalyst_ttt.metrics.probes import catalyst_probes
from catalyst_ttt.models import (
    char_tokenizer,
    load_pretrained,
    load_tokenizer,
    new_tiny_model,
    save_checkpoint,
    with_chat_template,
    with_lora,
)
from catalyst_ttt.record import CellRecord
from catalyst_ttt.regimes import CALIBRATION_REGIMES, REGIMES, answer_leak, catalyst_sample
from catalyst_ttt.signals import SIGNALS, trains_at_test_time
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
    record = CellRecord(describe_cell(cfg), cfg.wandb, cfg.lock_timeout)
    if finished := record.finished_or_claim():
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
        rows, result["catalyst_data"] = catalyst_data(cfg, task, splits["train"])
        with record.phase("catalyst"):
            start_ref, result["phases"]["catalyst"] = catalyst_checkpoint(cfg, rows, base_ref, record.name, device)
        model, tokenizer = load_pretrained(start_ref, cfg.model, device)
        with record.phase("pre_ttt"):
            start = start_evaluation(cfg, task, splits, model, start_ref, tokenizer)
            base = (
                base_evaluation(cfg, task, splits["id"], base_ref, tokenizer, device)
                if start_ref != base_ref
                else start["id"]
            )
            result["pre_ttt"], result["items"] = pre_ttt_accuracy(start["id"], base)
            result["probes"] = start_probes(cfg, task, splits, model, start_ref, base_ref, tokenizer)
        result["ignition"] = result["pre_ttt"]["acc/greedy"] - result["pre_ttt"]["base_acc/greedy"]
        # the floor gate: TTT from a start that does not beat its base has nothing to keep, so it is not run
        items = result["items"]["id"]
        if gate := floor_gate(cfg.ttt, cfg.signal, cfg.regime.name, items["start"], items["base"]):
            record.gate(gate)
            return record.result
        # 3. ttt: the signal on the unlabeled id prompts (training a LoRA adapter with ttt.lora), with the
        # trajectory recorded
        model = with_lora(model, cfg.ttt.lora)
        trajectory = Trajectory(task, splits, cfg.eval, cfg.seed, tokenizer, tracker)

        def evaluate_trajectory(step: int) -> None:  # at the start, every ttt.eval_every steps and the end
            record.write_trajectory(trajectory.record(step, model))

        anchor, result["anchor"] = anchor_of(cfg, rows)
        with record.phase("ttt"):
            evaluate_trajectory(0)
            last_step = train_at_test_time(
                cfg, task, splits["id"], model, tokenizer, evaluate_trajectory, tracker, anchor
            )
            evaluate_trajectory(last_step)
        result["ttt"] = tracker.means(("ttt/", "ttrl/"))  # TTT diagnostics, averaged over logged steps
        result["timing"]["trajectory_s"] = trajectory.seconds  # part of ttt_s
        # 4. eval: every split (without TTT the start's), information gain under the reader, stability
        with record.phase("eval"):
            evaluated = evaluate_splits(cfg, task, splits, model, tokenizer) if last_step else start
        with record.phase("ig"):
            reader = ig_reader(cfg, task, splits, base_ref, record.name, result["phases"], device)
            result["ig"] = cell_information_gain(cfg, task, splits["id"], evaluated["id"], reader, tokenizer)
            result["ig_calibration"] = ig_calibration(cfg, task, splits["heldout"], reader, tokenizer)
        record.add_evaluation(evaluated, trajectory)
    return record.result


def cached_beside(cfg: DictConfig, checkpoint: str, name: str, key, compute) -> Any:
    """`compute()` kept beside a checkpoint of the phase cache (computed every time for any other model)."""
    path = Path(checkpoint)
    directory = path if path.is_relative_to(Path(cfg.cache_dir)) else None
    return beside_checkpoint(directory, name, key, compute)


def start_evaluation(cfg, task, splits, model, start_ref: str, tokenizer) -> dict[str, SplitResult]:
    """Every split evaluated on the TTT start, once per checkpoint and sampling seed: the ignition cell
    (signal `none`) and every TTT cell of that start share it."""
    saved = cached_beside(
        cfg,
        start_ref,
        START_EVAL,
        start_eval_key(cfg.eval, cfg.seed),
        lambda: _as_json(evaluate_splits(cfg, task, splits, model, tokenizer)),
    )
    return {name: SplitResult(**split) for name, split in saved.items()}


def base_evaluation(cfg, task, problems: list[Problem], base_ref: str, tokenizer, device) -> SplitResult:
    """Greedy id accuracy of the base, per item (the `none` arm of ignition), once per base checkpoint."""
    problems = problems[: cfg.eval.max_per_split]

    def compute() -> dict:
        base = load_pretrained(base_ref, cfg.model, device)[0]
        return asdict(evaluate_split(task, problems, base, tokenizer, cfg.eval, cfg.seed, sampled=False))

    return SplitResult(**cached_beside(cfg, base_ref, BASE_EVAL, base_eval_key(cfg.eval), compute))


def _as_json(evaluated: dict[str, SplitResult]) -> dict:
    return {name: asdict(split) for name, split in evaluated.items()}


def pre_ttt_accuracy(start: SplitResult, base: SplitResult) -> tuple[dict, dict]:
    """Greedy id accuracy of the TTT start point and of the base (regime `none`), per item: ignition."""
    metrics = {
        "acc/greedy": start.metrics["acc/greedy"],
        "base_acc/greedy": base.metrics["acc/greedy"],
        "process/step_validity": start.metrics["process/step_validity"],
    }
    return metrics, {"id": {"base": base.correct, "start": start.correct}}


def start_probes(cfg, task, splits, model, start_ref: str, base_ref: str, tokenizer) -> dict:
    """The probes of the TTT start point (metrics/probes.py), measured once per cached checkpoint."""
    key = [plain(cfg.metrics.probes), cfg.eval.max_per_split]
    problems = splits["id"][: cfg.eval.max_per_split]

    def base_model():  # the model before the catalyst (regime none: the start itself)
        return model if cfg.regime.name == "none" else load_pretrained(base_ref, cfg.model, model.device)[0]

    def measure() -> dict:
        return catalyst_probes(cfg.metrics.probes, task, problems, model, tokenizer, cfg.eval.batch_size, base_model)

    return cached_beside(cfg, start_ref, "probes", key, measure)


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


def phase_checkpoint(cfg: DictConfig, kind: str, key: dict, build: Callable[[Path], None], owner: str):
    """The `kind` checkpoint for `key` from the phase cache, built by `build(directory)` when absent: its path,
    and how this cell came by it as result.json records it ("trained" or "cached")."""
    path, built = cached_checkpoint(cfg.cache_dir, kind, key, build, owner, cfg.lock_timeout)
    return str(path), "trained" if built else "cached"


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
            packed=cfg.base.packed,
        )
        save_checkpoint(model, tokenizer, directory)

    return phase_checkpoint(cfg, "base", base_key(task_key(cfg), cfg.model, cfg.base), build, owner)


def scratch_checkpoint(cfg: DictConfig, owner: str) -> str:
    """The tiny model as initialised with `base.seed`, never trained, from the phase cache: where a
    `catalyst.from_scratch` catalyst starts (Stechly et al.'s protocol: no base pretraining)."""

    def build(directory: Path) -> None:
        tokenizer = char_tokenizer()
        save_checkpoint(new_tiny_model(cfg.model, tokenizer, cfg.base.seed), tokenizer, directory)

    return phase_checkpoint(cfg, "scratch", scratch_key(cfg.model, cfg.base), build, owner)[0]


def catalyst_data(cfg: DictConfig, task: Task, pool: list[Problem]) -> tuple[list[dict], dict]:
    """The regime's rows for this cell, and what they hold: how many, and how often their trace hands
    over the gold answer (regimes.answer_leak)."""
    sample = catalyst_sample(pool, cfg.catalyst.n, cfg.seed)
    rows = REGIMES.get(cfg.regime.name)(sample, task, cfg.regime, cfg.seed)
    return rows, {"rows": len(rows)} | (answer_leak(task, sample, rows) if rows else {})


def catalyst_checkpoint(cfg: DictConfig, rows: list[dict], base_ref: str, owner: str, device: str) -> tuple[str, str]:
    if not rows:
        return base_ref, "skipped"
    c = cfg.catalyst
    origin = scratch_checkpoint(cfg, owner) if c.from_scratch else base_ref
    key = catalyst_key(checkpoint_name(cfg.model, origin), task_key(cfg), cfg.regime, c, cfg.seed)
    schedule = (c.steps, c.batch_size, c.lr, cfg.seed)
    return sft_checkpoint(cfg, origin, rows, schedule, "catalyst", key, owner, device)


def sft_checkpoint(
    cfg, base_ref: str, rows: list[dict], schedule: tuple, kind: str, key: dict, owner: str, device: str
) -> tuple[str, str]:
    """The base SFT'd on `device` on prompt/completion `rows` with (steps, batch_size, lr, seed), from the
    phase cache (`phase_checkpoint`: its path, and "trained" or "cached")."""
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
            max_length=sft_max_length(cfg.model),
        )
        save_checkpoint(model, tokenizer, directory)

    return phase_checkpoint(cfg, kind, key, build, owner)


def anchor_of(cfg: DictConfig, catalyst: list[dict]) -> tuple[Anchor, dict]:
    """The cell's anchor, resolved once (replay trains on the very rows the catalyst was trained on), and
    what result.json records of it (for regime `none`, which has no rows, replay is a no-op, noted)."""
    anchor = resolve_anchor(cfg.ttt, catalyst, cfg.catalyst.batch_size, sft_max_length(cfg.model))
    info = anchor.summary()
    if anchor.replay_weight and not anchor.replay_rows:
        info["note"] = f"regime {cfg.regime.name} has no catalyst rows: replay is a no-op"
    return anchor, info


def train_at_test_time(
    cfg, task: Task, problems, model, tokenizer, on_eval: Callable[[int], None], tracker, anchor: Anchor
) -> int:
    """Train on the id prompts without their labels (GRPO with the cell's `anchor`), calling `on_eval(step)`
    every `ttt.eval_every` steps; returns the number of TTT steps taken."""
    if not trains_at_test_time(cfg.signal, cfg.ttt):
        return 0
    signal = SIGNALS.get(cfg.signal.name)
    hook = StepHook(
        on_log=tracker.log_step,
        on_eval=on_eval,
        every=cfg.ttt.eval_every if cfg.eval.trajectory else cfg.ttt.steps + 1,
    )
    prompts = [p.prompt for p in problems]
    if signal.trainer == "grpo":
        by_prompt = {p.prompt: p for p in problems}
        reward_fn = make_reward_function(
            signal, task, by_prompt, model, tokenizer, signal_cfg=cfg.signal, ttt=cfg.ttt, seed=cfg.seed
        )
        grpo(
            model,
            tokenizer,
            prompts,
            reward_fn,
            task.completion_budget(problems),
            [hook],
            ttt=cfg.ttt,
            anchor=anchor,
            seed=cfg.seed,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        return cfg.ttt.steps
    return self_train(
        model,
        tokenizer,
        prompts,
        task,
        hook,
        tracker,
        ttt=cfg.ttt,
        signal_cfg=cfg.signal,
        seed=cfg.seed,
        generation_batch_size=cfg.eval.batch_size,
        max_length=sft_max_length(cfg.model),
    )


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
    rows = reader_rows(task, splits["reader"])
    key = reader_key(checkpoint_name(cfg.model, base_ref), task_key(cfg), ig)
    path, phases["reader"] = sft_checkpoint(cfg, base_ref, rows, tuple(key["reader"]), "reader", key, owner, device)
    return Reader(load_pretrained(path, cfg.model, device)[0], Path(path))


def cell_information_gain(cfg, task, problems, final: SplitResult, reader: Reader | None, tokenizer) -> dict:
    """IG of the cell's own greedy traces on id (the final eval's completions), with the gold answer,
    under the reader."""
    if reader is None:
        return {}
    count = cfg.metrics.ig.max_items
    problems, completions = problems[:count], final.completions[:count]
    traces = [task.parse(c).steps for c in completions]
    prompts, answers = [p.prompt for p in problems], [p.answer for p in problems]
    return information_gain(task, reader.model, tokenizer, prompts, traces, answers, final.correct[:count])


def ig_calibration(cfg, task, problems, reader: Reader | None, tokenizer) -> dict:
    """ig/total under the reader of gold, swapped, illogical, corrupted and unfaithful-correct traces of
    `heldout` items, with the gold answer: IG is interpretable when gold > 0 and gold > every other kind.

    It depends on the reader and the regimes' options only, so a cached reader keeps it beside its
    weights and every cell of that reader reads it back."""
    if reader is None:
        return {}

    def regime_traces(name: str):
        def build(chosen: list[Problem]) -> list[tuple[str, ...]]:
            return [task.parse(row["completion"]).steps for row in REGIMES.get(name)(chosen, task, cfg.regime, 0)]

        return build

    def unfaithful(chosen: list[Problem]) -> list[tuple[str, ...] | None]:
        return [unfaithful_steps(task, p, random.Random(i)) for i, p in enumerate(chosen)]

    kinds = {name: regime_traces(name) for name in CALIBRATION_REGIMES if name in REGIMES} | {"unfaithful": unfaithful}
    chosen = problems[: cfg.metrics.ig.max_items]

    def measure() -> dict:
        return calibration(task, reader.model, tokenizer, chosen, kinds)

    options = {k: v for k, v in plain(cfg.regime).items() if k != "name"}
    return beside_checkpoint(reader.directory, "calibration", [options, cfg.metrics.ig.max_items], measure)
