"""What determines each cached checkpoint of a cell, and what a cell still has to build or run: the keys the
pipeline trains under (pipeline.py) and the plan a dry run prints, from one place. Imports no torch, so
planning a sweep of hundreds of cells stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catalyst_ttt.cache import cache_key, cache_state, measured_beside
from catalyst_ttt.config import task_key
from catalyst_ttt.metrics.statistics import ALPHA, floor_p, format_p
from catalyst_ttt.signals import SIGNALS

START_EVAL, BASE_EVAL = "start-eval", "base-eval"  # measurements kept beside a checkpoint (pipeline.py)


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def base_key(cfg: DictConfig) -> dict:
    """Exactly what determines a tiny base model (a cell's `seed` does not: `base.seed` does)."""
    return {"task": task_key(cfg), "model": plain(cfg.model), "base": plain(cfg.base)}


def scratch_key(cfg: DictConfig) -> dict:
    """The tiny model as initialised with `base.seed`, never trained (`catalyst.from_scratch`)."""
    return {"model": plain(cfg.model), "init_seed": cfg.base.seed}


def catalyst_key(cfg: DictConfig, origin: str) -> dict:
    """Exactly what determines a catalyst checkpoint trained from `origin` (a checkpoint's name)."""
    return {
        "base": origin,
        "task": task_key(cfg),
        "regime": plain(cfg.regime),
        "catalyst": plain(cfg.catalyst),
        "seed": cfg.seed,
    }


def reader_key(cfg: DictConfig, base: str) -> dict:
    ig = cfg.metrics.ig
    return {"base": base, "task": task_key(cfg), "reader": [ig.reader_steps, ig.reader_batch_size, ig.reader_lr, 0]}


def checkpoint_name(cfg: DictConfig, reference: str) -> str:
    """How a checkpoint is named in the keys built on it: its cache directory, or the HF model's reference."""
    return Path(reference).name if cfg.model.kind == "tiny" else reference


def start_eval_key(cfg: DictConfig) -> list:
    return [plain(cfg.eval), cfg.seed]


def base_eval_key(cfg: DictConfig) -> list:
    return [cfg.eval.max_per_split]


def trains_at_test_time(cfg: DictConfig) -> bool:
    return SIGNALS.get(cfg.signal.name).trainer is not None and cfg.ttt.steps > 0


def floor_gate(cfg: DictConfig, start: list[int], base: list[int]) -> dict | None:
    """Why this cell's TTT is not run, from the per-item greedy id correctness of its start and its base (the
    start does not beat the base: exact one-sided test, metrics/aggregate.above_floor; regime `none` is the
    floor itself), or None when it trains. The pipeline gates by it and a dry run predicts with it."""
    if not cfg.ttt.gate or not trains_at_test_time(cfg):
        return None
    p = floor_p(start, base)
    if cfg.regime.name != "none" and p < ALPHA:
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
    never called cached."""
    if cfg.model.kind == "hf":
        base, base_dir, origin = "pretrained", None, str(cfg.model.name_or_path)
    else:
        key = base_key(cfg)
        base, base_dir = cache_state(cfg.cache_dir, "base", key), Path(cfg.cache_dir) / "base" / cache_key(key)
        origin = cache_key(scratch_key(cfg) if cfg.catalyst.from_scratch else key)
    if cfg.regime.name == "none":
        catalyst, start_dir = "none", base_dir
    else:
        key = catalyst_key(cfg, origin)
        catalyst = cache_state(cfg.cache_dir, "catalyst", key)
        start_dir = Path(cfg.cache_dir) / "catalyst" / cache_key(key)
    usable = base == "cached"
    return Plan(
        base,
        catalyst,
        _ttt_plan(cfg, base_dir if usable else None, start_dir if catalyst in ("cached", "none") and usable else None),
    )


def _ttt_plan(cfg: DictConfig, base_dir: Path | None, start_dir: Path | None) -> str:
    if not trains_at_test_time(cfg):
        return "no TTT"
    if not cfg.ttt.gate:
        return "trains (gate off)"
    if cfg.regime.name == "none":
        return "gated (regime none is the floor)"
    start = measured_beside(start_dir, START_EVAL, start_eval_key(cfg)) if start_dir else None
    base = measured_beside(base_dir, BASE_EVAL, base_eval_key(cfg)) if base_dir else None
    if start is None or base is None:
        return "gate decided after the catalyst"
    gate = floor_gate(cfg, start["id"]["correct"], base["correct"])
    return "trains" if gate is None else f"gated (start not above base, p={format_p(gate['p'])})"
