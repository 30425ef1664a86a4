"""Typed configuration of one cell, composed by Hydra from `conf/`.

Every group node (`task`, `regime`, `signal`, `model`) is merged into its dataclass here, so a
misspelt key or a value of the wrong type fails before any compute, as one clear line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from catalyst_ttt.errors import UserError
from catalyst_ttt.models import ModelConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("task", "regime", "signal", "model")


@dataclass
class RegimeConfig:
    name: str = "correct"
    match_steps: bool = True  # swapped: borrow a trace with the same number of steps


@dataclass
class SignalConfig:
    name: str = "majority"
    reference: str = "majority"  # verifree/predictive: majority (label-free) | gold (oracle analysis)
    samples: int = 8  # self_sft: completions sampled per prompt and round
    rounds: int = 2  # self_sft: generate -> filter -> train rounds


@dataclass
class BaseConfig:
    """Pretraining of the tiny model from scratch; ignored for `model=hf`."""

    steps: int = 2250
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


@dataclass
class CatalystConfig:
    n: int = 256
    steps: int = 160
    batch_size: int = 32
    lr: float = 2e-3


@dataclass
class TTTConfig:
    steps: int = 20
    prompts_per_step: int = 4
    num_generations: int = 8
    lr: float = 1e-4
    beta: float = 0.0
    temperature: float = 1.0
    eval_every: int = 5


@dataclass
class EvalConfig:
    k: int = 4  # mean@k, maj@k, pass@k
    samples: int = 8  # n samples per prompt (n > k) behind the unbiased pass@k and maj@k estimates
    temperature: float = 1.0
    batch_size: int = 512
    max_per_split: int | None = None  # None: every item of every split
    trajectory_size: int = 32  # items of id and of heldout evaluated every eval_every steps
    trajectory: bool = True


@dataclass
class StabilityConfig:
    """The rule that calls a cell stable (DESIGN.md, Metrics)."""

    max_drop: float = 0.05  # final may sit this far below start (noise)
    max_drawdown: float = 0.10
    max_seed_std: float = 0.10
    max_collapse: float = 0.25


@dataclass
class IGConfig:
    """Information gain under a fixed reader: the base SFT'd once on the task's `reader` pool."""

    enabled: bool = True
    scorer: str | None = None  # a checkpoint directory to score with instead of the reader
    max_items: int | None = None  # None: every id item
    reader_steps: int = 320
    reader_batch_size: int = 32
    reader_lr: float = 2e-3


@dataclass
class MetricsConfig:
    ig: IGConfig = field(default_factory=IGConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "catalyst-ttt"
    entity: str | None = None


@dataclass
class CellConfig:
    task: Any = MISSING
    regime: RegimeConfig = MISSING
    signal: SignalConfig = MISSING
    model: ModelConfig = MISSING
    base: BaseConfig = field(default_factory=BaseConfig)
    catalyst: CatalystConfig = field(default_factory=CatalystConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seed: int = 0
    threads: int = 0  # torch threads; 0 = all cores
    sweep: str = "single"
    runs_dir: str = "runs"
    cache_dir: str = "cache"
    fail_at: str | None = None  # testing hook: "nan@STEP" injects a NaN reward at that TTT step


ConfigStore.instance().store(name="cell_schema", node=CellConfig)

# Keys that place or report a cell but do not change what it computes.
NON_SEMANTIC = ("sweep", "runs_dir", "cache_dir", "wandb", "threads")


def config_hash(node: Any) -> str:
    return hashlib.sha256(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:12]


def compose_cell(overrides: list[str]) -> DictConfig:
    """Compose one cell's config; any Hydra or type error becomes a one-line UserError."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except MissingConfigException as err:
        raise UserError(_missing_option_message(err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_override_message(err)) from None
    finally:
        GlobalHydra.instance().clear()
    validate(cfg)
    return cfg


def _missing_option_message(err: MissingConfigException) -> str:
    missing = (err.missing_cfg_file or "").strip("/")
    group, _, name = missing.rpartition("/")
    if group in GROUPS:
        options = err.options or sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        return f"unknown {group} {name!r}; valid: {', '.join(options)}"
    return _first_line(err)


def _override_message(err: Exception) -> str:
    """Hydra's message plus its cause, with the valid keys when a key does not exist."""
    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        parent = cause.full_key.rpartition(".")[0]
        schema = OmegaConf.structured(CellConfig)
        node = OmegaConf.select(schema, parent) if parent else schema
        if isinstance(node, DictConfig):
            return f"unknown key {cause.full_key!r}; valid keys{' of ' + parent if parent else ''}: {', '.join(node)}"
        return f"unknown key {cause.full_key!r}; valid: the keys in conf/{parent}/<name>.yaml"
    text = _first_line(err)
    return f"{text}: {_first_line(cause)}" if cause is not None else text


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(err).__name__
    return text.replace("\n", " ")


def validate(cfg: DictConfig) -> None:
    """Checks Hydra's types cannot express: registry names, ranges, divisibility."""
    from catalyst_ttt.regimes import REGIMES
    from catalyst_ttt.signals import SIGNALS

    task = build_task(cfg)  # loads and checks the task's data, if it has any
    REGIMES.get(cfg.regime.name)
    SIGNALS.get(cfg.signal.name).check_task(task)
    if cfg.signal.reference not in ("majority", "gold"):
        raise UserError(f"signal.reference={cfg.signal.reference!r} is not valid; valid: majority, gold")
    if cfg.model.kind not in ("tiny", "hf"):
        raise UserError(f"model.kind={cfg.model.kind!r} is not valid; valid: tiny, hf")
    if cfg.model.kind == "hf":
        check_model_reference(cfg.model.name_or_path, "model.name_or_path")
    if cfg.metrics.ig.scorer:
        check_model_reference(cfg.metrics.ig.scorer, "metrics.ig.scorer")
    if cfg.wandb.mode not in ("offline", "online", "disabled"):
        raise UserError(f"wandb.mode={cfg.wandb.mode!r} is not valid; valid: offline, online, disabled")
    non_negative = {
        "ttt.steps": cfg.ttt.steps,
        "catalyst.n": cfg.catalyst.n,
        "catalyst.steps": cfg.catalyst.steps,
        "base.steps": cfg.base.steps,
        "seed": cfg.seed,
        "threads": cfg.threads,
    }
    positive = {
        "ttt.prompts_per_step": cfg.ttt.prompts_per_step,
        "ttt.num_generations": cfg.ttt.num_generations,
        "ttt.eval_every": cfg.ttt.eval_every,
        "eval.k": cfg.eval.k,
        "eval.batch_size": cfg.eval.batch_size,
        "catalyst.batch_size": cfg.catalyst.batch_size,
        "base.batch_size": cfg.base.batch_size,
        "signal.samples": cfg.signal.samples,
        "signal.rounds": cfg.signal.rounds,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise UserError(f"{key}={value} is not valid; it must be >= 0")
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"{key}={value} is not valid; it must be >= 1")
    if cfg.ttt.num_generations < 2 and cfg.signal.name != "none":
        raise UserError(f"ttt.num_generations={cfg.ttt.num_generations} is not valid; GRPO groups need >= 2")
    if cfg.fail_at is not None and not str(cfg.fail_at).startswith("nan@"):
        raise UserError(f"fail_at={cfg.fail_at!r} is not valid; valid: nan@STEP")


def check_model_reference(reference: str | None, key: str) -> None:
    """A local model path must hold a model; anything else is taken as a hub id."""
    if not reference:
        raise UserError(f"{key} is missing; give a local model directory or a hub id")
    local = Path(reference).expanduser()
    if (local.is_absolute() or reference.startswith(".") or local.exists()) and not (local / "config.json").exists():
        raise UserError(f"{key}={reference!r}: no model there (a directory with config.json)")


def build_task(cfg: DictConfig):
    from catalyst_ttt.tasks import TASKS

    return TASKS.get(cfg.task.name)(typed_task_config(cfg))


def typed_task_config(cfg: DictConfig):
    """The task node as its dataclass; unknown keys and wrong types are user errors."""
    from catalyst_ttt.tasks import TASKS

    schema = OmegaConf.structured(TASKS.get(cfg.task.name).config_class)
    node = OmegaConf.masked_copy(cfg.task, [k for k in cfg.task if k != "name"])
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, node))
    except OmegaConfBaseException as err:
        raise UserError(f"task {cfg.task.name}: {_first_line(err)}") from None


def semantic_dict(cfg: DictConfig) -> dict:
    """The resolved config without the keys that only place or report the cell."""
    data = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in NON_SEMANTIC}


def cell_id(cfg: DictConfig) -> str:
    return (
        f"{cfg.task.name}-{model_label(cfg)}-{cfg.regime.name}-{cfg.signal.name}"
        f"-s{cfg.seed}-{config_hash(semantic_dict(cfg))[:8]}"
    )


def model_label(cfg: DictConfig) -> str:
    if cfg.model.kind == "tiny":
        return "tiny"
    return Path(str(cfg.model.name_or_path)).name.replace("-", "_") or "hf"
