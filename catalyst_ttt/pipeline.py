"""The pipeline of one cell, top to bottom: base -> catalyst -> ttt -> eval.

`run_cell` is the recipe; the helpers below it are its phases. Base and catalyst checkpoints
come from the phase cache, so cells of a sweep share them.
"""

from __future__ import annotations

import contextlib
import socket
import time
import traceback
from pathlib import Path

from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from catalyst_ttt.cache import cached_checkpoint
from catalyst_ttt.config import build_task, cell_id, config_hash, semantic_dict, task_key
from catalyst_ttt.evaluation import Trajectory, evaluate_split, generate
from catalyst_ttt.metrics.information_gain import information_gain
from catalyst_ttt.metrics.stability import trajectory_stability
from catalyst_ttt.models import (
    char_tokenizer,
    load_pretrained,
    load_tokenizer,
    new_tiny_model,
    save_checkpoint,
    with_chat_template,
)
from catalyst_ttt.regimes import catalyst_rows
from catalyst_ttt.results import RESULT, SAMPLES, CellDir
from catalyst_ttt.signals import SIGNALS, Signal
from catalyst_ttt.tasks.base import Task
from catalyst_ttt.tracking import Tracker
from catalyst_ttt.training import (
    StepHook,
    consensus_rows,
    divergence_of,
    grpo,
    make_reward_function,
    set_threads,
    sft,
)


def run_cell(cfg: DictConfig) -> dict:
    """Run one cell (or return its finished result) and write `result.json` atomically."""
    name, chash = cell_id(cfg), config_hash(semantic_dict(cfg))
    store = CellDir(cfg.runs_dir, cfg.sweep, name)
    if store.is_done(chash) or not store.claim(chash, cfg.lock_timeout):  # claim: held until release
        return store.result() | {"skipped": True}
    task = build_task(cfg)  # bad data is the user's error: raised before anything is written
    store.start(OmegaConf.to_yaml(cfg))
    set_threads(cfg.threads)
    set_seed(cfg.seed)
    signal = SIGNALS.get(cfg.signal.name)
    uses_labels = signal.uses_labels(cfg.signal)
    result = {
        "cell": name,
        "sweep": cfg.sweep,
        "config_hash": chash,
        "status": "failed",
        "uses_labels": uses_labels,
        "axes": {
            "task": cfg.task.name,
            "model": cfg.model.kind,
            "regime": cfg.regime.name,
            "signal": cfg.signal.name,
            "reference": cfg.signal.reference,
            "seed": cfg.seed,
            "catalyst_n": cfg.catalyst.n,
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
        "host": socket.gethostname(),
        "timing": {},
        "phases": {},
    }
    tracker = Tracker(
        mode=cfg.wandb.mode,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.sweep,
        job_type=cfg.signal.name,
        tags=[f"{axis}:{result['axes'][axis]}" for axis in ("task", "model", "regime", "signal")],
        name=name,
        config=result["config"] | {"uses_labels": uses_labels},
        directory=store.path,
    )
    timing, phases = result["timing"], result["phases"]
    examples: dict[str, list[dict]] = {}
    try:
        # 1. base: the model before any catalyst (cached, shared by every cell)
        with _phase(store, timing, "base"):
            base_ref, phases["base"] = base_checkpoint(cfg, task, owner=name)
        splits = with_chat_template(task.splits(), load_tokenizer(base_ref, cfg.model))
        # 2. catalyst: SFT on the regime's rows (cached per base, regime, N, seed)
        with _phase(store, timing, "catalyst"):
            start_ref, phases["catalyst"] = catalyst_checkpoint(cfg, task, splits["train"], base_ref, owner=name)
        model, tokenizer = load_pretrained(start_ref, cfg.model)
        base_model, _ = load_pretrained(base_ref, cfg.model)
        result["pre_ttt"] = pre_ttt_accuracy(cfg, task, splits["id"], model, base_model, tokenizer)
        result["ignition"] = result["pre_ttt"]["acc/greedy"] - result["pre_ttt"]["base_acc/greedy"]
        # 3. ttt: the signal on the unlabeled id prompts, with the trajectory recorded
        trajectory = Trajectory(task, splits, cfg.eval, cfg.seed, tokenizer, tracker, store)
        trajectory.record(0, model)
        with _phase(store, timing, "ttt"):
            last_step = train_at_test_time(cfg, signal, task, splits["id"], model, tokenizer, trajectory, tracker)
        trajectory.record(last_step, model)
        # 4. eval: every split, process and information gain, stability over the trajectory
        with _phase(store, timing, "eval"):
            evaluated = {
                split: evaluate_split(task, problems[: cfg.eval.max_per_split], model, tokenizer, cfg.eval, cfg.seed)
                for split, problems in splits.items()
                if split != "train"
            }
            result["metrics"] = {split: r.metrics for split, r in evaluated.items()}
            result["ig"] = cell_information_gain(cfg, task, splits["id"], model, base_model, tokenizer)
        result["stab"] = trajectory_stability(trajectory.steps(), trajectory.correct("id")) | {
            "stab/collapse": result["metrics"]["id"]["samples/collapse"],
            "stab/diversity": result["metrics"]["id"]["samples/diversity"],
        }
        result["status"] = "done"
        examples = {split: r.examples for split, r in evaluated.items()}
        store.write(SAMPLES, examples)
    except Exception as err:  # noqa: BLE001 - a failed cell is recorded; the sweep goes on
        diverged = divergence_of(err)  # NaN loss or reward, or sampling from NaN logits
        if diverged is not None:
            result |= {"status": "diverged", "diverged_step": diverged.step, "error": str(diverged)}
        else:
            result |= {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            (store.path / "error.log").write_text(traceback.format_exc())
    finally:
        timing["total_s"] = sum(timing.values())
        store.write(RESULT, result)
        store.set_status(result["status"])
        store.release()
        tracker.summary(flat_metrics(result))
        tracker.table("samples", [row | {"split": split} for split, rows in examples.items() for row in rows])
        result["wandb_dir"] = tracker.finish()
    return result


@contextlib.contextmanager
def _phase(store: CellDir, timing: dict, phase: str):
    store.set_status(phase)
    started = time.perf_counter()
    try:
        yield
    finally:
        timing[f"{phase}_s"] = time.perf_counter() - started


def base_checkpoint(cfg: DictConfig, task: Task, owner: str) -> tuple[str, str]:
    """The tiny model pretrained from scratch on the task's base corpus, or the given HF model."""
    if cfg.model.kind == "hf":
        return str(cfg.model.name_or_path), "pretrained"

    def build(directory: Path) -> None:
        tokenizer = char_tokenizer()
        model = new_tiny_model(cfg.model, tokenizer, cfg.base.seed)
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
    return {
        "base": base_name,
        "task": task_key(cfg),
        "regime": _plain(cfg.regime),
        "catalyst": _plain(cfg.catalyst),
        "seed": cfg.seed,
    }


def catalyst_checkpoint(cfg: DictConfig, task: Task, pool, base_ref: str, owner: str) -> tuple[str, str]:
    rows = catalyst_rows(cfg.regime.name, pool, task, cfg.regime, cfg.catalyst.n, cfg.seed)
    if not rows:
        return base_ref, "skipped"

    def build(directory: Path) -> None:
        model, tokenizer = load_pretrained(base_ref, cfg.model)
        sft(
            model,
            tokenizer,
            Dataset.from_list(rows),
            steps=cfg.catalyst.steps,
            batch_size=cfg.catalyst.batch_size,
            lr=cfg.catalyst.lr,
            seed=cfg.seed,
            max_length=_max_length(cfg, task),
        )
        save_checkpoint(model, tokenizer, directory)

    base_name = Path(base_ref).name if cfg.model.kind == "tiny" else base_ref
    path, built = cached_checkpoint(
        cfg.cache_dir, "catalyst", catalyst_key(cfg, base_name), build, owner, cfg.lock_timeout
    )
    return str(path), "trained" if built else "cached"


def pre_ttt_accuracy(cfg, task, problems, model, base_model, tokenizer) -> dict:
    """Greedy id accuracy of the TTT start point and of the base (regime `none`): ignition."""
    problems = problems[: cfg.eval.max_per_split]
    start = evaluate_split(task, problems, model, tokenizer, cfg.eval, cfg.seed, sampled=False).metrics
    base = (
        start
        if cfg.regime.name == "none"
        else evaluate_split(task, problems, base_model, tokenizer, cfg.eval, cfg.seed, sampled=False).metrics
    )
    return {
        "acc/greedy": start["acc/greedy"],
        "base_acc/greedy": base["acc/greedy"],
        "process/step_validity": start["process/step_validity"],
    }


def train_at_test_time(cfg, signal: Signal, task: Task, problems, model, tokenizer, trajectory, tracker) -> int:
    """Train on the id prompts without their labels; returns the number of TTT steps taken."""
    if signal.trainer is None or cfg.ttt.steps == 0:
        return 0
    hook = StepHook(
        on_log=tracker.log_step,
        on_eval=lambda step: trajectory.record(step, model),
        every=cfg.ttt.eval_every if cfg.eval.trajectory else cfg.ttt.steps + 1,
    )
    prompts = [p.prompt for p in problems]
    if signal.trainer == "grpo":
        trainer_ref: dict = {}
        reward_fn = make_reward_function(signal, cfg, task, {p.prompt: p for p in problems}, trainer_ref)
        grpo(model, tokenizer, prompts, reward_fn, cfg, task.max_completion_chars, trainer_ref, [hook])
        return cfg.ttt.steps
    # self_sft: rounds of generate -> keep the majority-consistent completions -> SFT
    per_round = max(1, cfg.ttt.steps // cfg.signal.rounds)
    for round_index in range(cfg.signal.rounds):
        samples = generate(
            model,
            tokenizer,
            prompts,
            task.max_completion_chars,
            samples=cfg.signal.samples,
            temperature=cfg.ttt.temperature,
            batch_size=cfg.eval.batch_size,
            seed=cfg.seed * 1000 + round_index,
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
                batch_size=cfg.ttt.prompts_per_step * cfg.ttt.num_generations,
                lr=cfg.ttt.lr,
                seed=cfg.seed + round_index,
                max_length=_max_length(cfg, task),
                schedule="constant",
                callbacks=[hook],
            )
    return per_round * cfg.signal.rounds


def cell_information_gain(cfg, task, problems, model, base_model, tokenizer) -> dict:
    """IG of the cell's own greedy traces on id, scored by a fixed model (default: the base)."""
    if not cfg.metrics.ig.enabled:
        return {}
    scorer = load_pretrained(cfg.metrics.ig.scorer, cfg.model)[0] if cfg.metrics.ig.scorer else base_model
    problems = problems[: cfg.metrics.ig.max_items]
    prompts = [p.prompt for p in problems]
    completions = [
        g[0] for g in generate(model, tokenizer, prompts, task.max_completion_chars, batch_size=cfg.eval.batch_size)
    ]
    traces = [task.parse(c).steps for c in completions]
    return information_gain(task, scorer, tokenizer, prompts, traces, [p.answer for p in problems])


def flat_metrics(result: dict) -> dict:
    """`split/metric` for every split, id's process metrics at top level, ig/*, stab/*, ignition."""
    flat = {f"{split}/{k}": v for split, metrics in result.get("metrics", {}).items() for k, v in metrics.items()}
    flat |= {k: v for k, v in result.get("metrics", {}).get("id", {}).items() if k.startswith("process/")}
    flat |= result.get("ig", {}) | result.get("stab", {})
    flat |= {f"pre_ttt/{k}": v for k, v in result.get("pre_ttt", {}).items()}
    flat |= {"status": result["status"], "uses_labels": int(result["uses_labels"])}
    if "ignition" in result:
        flat["ignition"] = result["ignition"]
    return flat


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def _max_length(cfg: DictConfig, task: Task) -> int:
    return cfg.model.max_positions if cfg.model.kind == "tiny" else 1024
