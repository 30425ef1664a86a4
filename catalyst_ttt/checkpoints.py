"""What determines each cached checkpoint of a cell, and what a cell still has to build or run: the keys the
pipeline trains under (pipeline.py) and the plan a dry run prints, from one place. Imports no torch, so
planning a sweep of hundreds of cells stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from catalyst_ttt.cache import cache_key, cache_state, measured_beside
from catalyst_ttt.config import task_key
from catalyst_ttt.metrics.statistics import ALPHA, floor_p, format_p
from catalyst_ttt.signals import trains_at_test_time

START_EVAL, BASE_EVAL = "start-eval", "base-eval"  # measurements kept beside a checkpoint (pipeline.py)


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def base_key(task: dict, model: DictConfig, base: DictConfig) -> dict:
    """Exactly what determines a tiny base model (`task`: config.task_key): a cell's `seed` does not,
    `base.seed` does."""
    return {"task": task, "model": plain(model), "base": plain(base)}


def scratch_key(model: DictConfig, base: DictConfig) -> dict:
    """The tiny model as initialised with `base.seed`, never trained (`catalyst.from_scratch`)."""
    return {"model": plain(model), "init_seed": base.seed}


def catalyst_key(origin: str, task: dict, regime: DictConfig, catalyst: DictConfig, seed: int) -> dict:
    """Exactly what determines a catalyst checkpoint trained from `origin` (a checkpoint's name)."""
    return {"base": origin, "task": task, "regime": plain(regime), "catalyst": plain(catalyst), "seed": seed}


def reader_key(base: str, task: dict, ig: DictConfig) -> dict:
    return {"base": base, "task": task, "reader": [ig.reader_steps, ig.reader_batch_size, ig.reader_lr, 0]}


def checkpoint_name(model: DictConfig, reference: str) -> str:
    """How a checkpoint is named in the keys built on it: its cache directory, or the HF model's reference."""
    return Path(reference).name if model.kind == "tiny" else reference


def start_eval_key(evaluation: DictConfig, seed: int) -> list:
    return [plain(evaluation), seed]


def base_eval_key(evaluation: DictConfig) -> list:
    return [evaluation.max_per_split]


def floor_gate(ttt: DictConfig, signal: DictConfig, regime: str, start: list[int], base: list[int]) -> dict | None:
    """Why a cell's TTT is not run, from the per-item greedy id correctness of its start and its base (the
    start does not beat the base: exact one-sided test, metrics/aggregate.above_floor; `regime` none is the
    floor itself), or None when it trains. The pipeline gates by it and a dry run predicts with it."""
    if not ttt.gate or not trains_at_test_time(signal, ttt):
        return None
    p = floor_p(start, base)
    if regime != "none" and p < ALPHA:
        return None
    start_acc, base_acc = (sum(arm) / max(1, len(arm)) for arm in (start, base))
    return {
        "p": p,
        "start": start_acc,
        "base": base_acc,
        "reason": f"start {start_acc:.3f} vs base {base_acc:.3f}, p={format_p(p)}",
    }


@dataclass(frozen=True)
class Plan:
    """What a cell needs before it can run, as the phase cache has it now."""

    base: str  # pretrained | cached | to train | damaged: to rebuild
    catalyst: str  # none | cached | to train | damaged: to rebuild
    ttt: str  # no TTT | trains | gated (why) | decided by the floor gate after the catalyst


def plan(cfg: DictConfig) -> Plan:
    """The cell's plan from the phase cache, with the pipeline's own keys (a `catalyst.from_scratch` catalyst
    is keyed on its scratch checkpoint, as pipeline.catalyst_checkpoint builds it); a damaged checkpoint is
    never called cached. The dry-run twin of pipeline.run_cell, so like the recipe it reads the whole config."""
    task = task_key(cfg)
    if cfg.model.kind == "hf":
        base, base_dir, origin = "pretrained", None, str(cfg.model.name_or_path)
    else:
        key = base_key(task, cfg.model, cfg.base)
        base, base_dir = cache_state(cfg.cache_dir, "base", key), Path(cfg.cache_dir) / "base" / cache_key(key)
        origin = cache_key(scratch_key(cfg.model, cfg.base) if cfg.catalyst.from_scratch else key)
    if cfg.regime.name == "none":
        catalyst, start_dir = "none", base_dir
    else:
        key = catalyst_key(origin, task, cfg.regime, cfg.catalyst, cfg.seed)
        catalyst = cache_state(cfg.cache_dir, "catalyst", key)
        start_dir = Path(cfg.cache_dir) / "catalyst" / cache_key(key)
    usable = base == "cached"
    start_dir = start_dir if catalyst in ("cached", "none") and usable else None

    def measured() -> tuple[dict | None, dict | None]:  # read only where the gate is in question
        start = measured_beside(start_dir, START_EVAL, start_eval_key(cfg.eval, cfg.seed)) if start_dir else None
        base = measured_beside(base_dir, BASE_EVAL, base_eval_key(cfg.eval)) if usable else None
        return start, base

    return Plan(base, catalyst, _ttt_plan(cfg.ttt, cfg.signal, cfg.regime.name, measured))


def _ttt_plan(ttt: DictConfig, signal: DictConfig, regime: str, measured: Callable[[], tuple]) -> str:
    if not trains_at_test_time(signal, ttt):
        return "no TTT"
    if not ttt.gate:
        return "trains (gate off)"
    if regime == "none":
        return "gated (regime none is the floor)"
    start, base = measured()
    if start is None or base is None:
        return "gate decided after the catalyst"
    gate = floor_gate(ttt, signal, regime, start["id"]["correct"], base["correct"])
    return "trains" if gate is None else f"gated (start not above base, p={format_p(gate['p'])})"
