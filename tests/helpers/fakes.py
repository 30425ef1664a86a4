"""Hand-made result.json records (the pipeline's schema, item lists included), for statistics and report tests."""

from __future__ import annotations

import copy
from dataclasses import asdict

from catalyst_ttt.hashing import config_hash
from catalyst_ttt.metrics.stability import early_warning, trajectory_stability
from catalyst_ttt.results import TRAJECTORY, write_json
from catalyst_ttt.schema import NON_SEMANTIC, StabilityConfig


def correct_items(accuracy: float, items: int, offset: int = 0) -> list[int]:
    """0/1 correctness with round(accuracy * items) correct items, starting at `offset` (cyclically)."""
    hits = round(accuracy * items)
    return [int((i - offset) % items < hits) for i in range(items)]


def _merge(into: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def fake_result(
    regime: str,
    signal: str,
    seed: int,
    start: float,
    final: float,
    *,
    base: float = 0.05,
    base_seed: int = 0,
    items: int = 64,
    trajectory: list[float] | None = None,
    trajectory_items: int = 32,
    collapse: float = 0.0,
    step_validity: tuple[float, float] = (0.5, 0.5),
    ig: float | None = 1.0,
    ig_acc_corr: float | None = None,
    status: str = "done",
    task: str = "alchemy",
    catalyst_n: int = 256,
    access: str | None = None,
    anchor: str = "none",
    ttt_log: list[dict] = (),
    config: dict | None = None,
    probes: dict | None = None,
    ttt: dict | None = None,
) -> dict:
    """One cell. Item lists: the first round(acc * items) items are right in every arm, so accuracies are
    exact and every discordant pair points one way. `trajectory`: accuracies at steps 0, 5, 10, ...
    (default: start then final at the last step); stab/* is computed from it on `trajectory_items` items,
    the early warning from `ttt_log` (the tracker's per-step rows, kept as `ttt_log`). `ig` None: the cell wrote
    no trace to score. `ttt`: the TTT diagnostics' means. `config` overrides keys of the config (e.g.
    {"ttt": {"steps": 1}}). Status `gated`: stopped before TTT at its floor (pre-TTT records only)."""
    cfg = _merge(
        {
            "task": {"name": task},
            "model": {"kind": "tiny"},
            "regime": {"name": regime},
            "signal": {"name": signal, "reference": "majority"},
            "base": {"seed": base_seed, "steps": 2250},
            "catalyst": {"n": catalyst_n, "steps": 160},
            "ttt": {"steps": 20, "prompts_per_step": 4, "eval_every": 5, "anchor": anchor},
            "eval": {"trajectory_size": trajectory_items, "trajectory": True, "max_per_split": items},
            "metrics": {"stability": asdict(StabilityConfig())},
            "seed": seed,
            "sweep": "hand",
            "runs_dir": "runs",
            "cache_dir": "cache",
            "threads": 1,
            "wandb": {"mode": "disabled", "project": "p", "entity": None},
        },
        copy.deepcopy(config or {}),
    )
    chash = config_hash({k: v for k, v in cfg.items() if k not in NON_SEMANTIC})
    base = start if regime == "none" else base  # regime `none` starts from the base itself
    arms = {"base": correct_items(base, items), "start": correct_items(start, items)}
    arms["final"] = correct_items(final, items)
    accuracy = {arm: sum(v) / items for arm, v in arms.items()}
    curve = trajectory or [start, final]
    steps = [i * cfg["ttt"]["eval_every"] for i in range(len(curve) - 1)] + [cfg["ttt"]["steps"]]
    rows = [correct_items(a, trajectory_items) for a in curve]
    stab = trajectory_stability(steps, [[bool(x) for x in row] for row in rows])
    split_metrics = {
        "acc/greedy": accuracy["final"],
        "process/step_validity": step_validity[1],
        "process/faithful_acc": 0.1,
        "process/unfaithful_correct": 0.2,
        "samples/collapse": collapse,
        "samples/diversity": 1.0,
    }
    result = {
        "status": status,
        "cell": f"{task}-{regime}-{signal}-n{catalyst_n}-b{base_seed}-s{seed}-{chash[:8]}",
        "sweep": "hand",
        "config_hash": chash,
        "uses_labels": signal == "oracle",
        "axes": {
            "task": task,
            "model": "tiny",
            "regime": regime,
            "signal": signal,
            "reference": "majority",
            "anchor": anchor,
            "seed": seed,
            "base_seed": base_seed,
            "catalyst_n": catalyst_n,
            "catalyst_steps": cfg["catalyst"]["steps"],
        },
        "config": cfg,
        "pre_ttt": {
            "acc/greedy": accuracy["start"],
            "base_acc/greedy": accuracy["base"],
            "process/step_validity": step_validity[0],
        },
        "ignition": accuracy["start"] - accuracy["base"],
        "items": {
            "id": dict(arms),
            "heldout": {"final": list(arms["final"])},
            "shift_length": {"final": list(arms["final"])},
        },
        "metrics": {"id": split_metrics, "heldout": dict(split_metrics), "shift_length": dict(split_metrics)},
        "stab": stab
        | early_warning(stab["stab/collapse_step"], list(ttt_log))
        | {"stab/collapse": collapse, "stab/diversity": 1.0},
        "timing": {"ttt_s": 2.0, "total_s": 10.0},
        "ig": {"ig/total": ig} | ({"ig/acc_corr": ig_acc_corr} if ig_acc_corr is not None else {}),
        # the reader's calibration row: gold traces informative, corruptions less so
        "ig_calibration": {"correct": 0.8, "swapped": 0.1, "illogical": -0.2, "corrupted": -0.5},
        "trajectory": [
            {"step": s, "id": {"acc": sum(r) / len(r), "step_validity": 0.5, "correct": [bool(x) for x in r]}}
            for s, r in zip(steps, rows)
        ],
    }
    if access:
        result["access"] = access
    if probes is not None:
        result["probes"] = probes
    if ttt_log:
        result["ttt_log"] = list(ttt_log)
    if ttt is not None:
        result["ttt"] = ttt
    if status == "gated":
        for key in ("metrics", "stab", "ig", "ig_calibration", "trajectory", "ttt_log", "ttt"):
            result.pop(key, None)
        result["items"] = {"id": {"base": arms["base"], "start": arms["start"]}}
        result["gate"] = {"p": 1.0, "start": accuracy["start"], "base": accuracy["base"]}
    elif status != "done":
        for key in ("metrics", "stab", "ig", "ig_calibration", "items", "trajectory"):
            result.pop(key)
        result["error"] = "RuntimeError: injected" if status == "failed" else "NaN reward at step 3"
    return result


def write_store(runs, sweep: str, results: list[dict]) -> None:
    """Write each result (and its trajectory) where the pipeline would: runs/<sweep>/<cell>/."""
    for result in results:
        result = dict(result)
        trajectory = result.pop("trajectory", None)
        write_json(runs / sweep / result["cell"] / "result.json", result)
        if trajectory:
            write_json(runs / sweep / result["cell"] / TRAJECTORY, trajectory)
