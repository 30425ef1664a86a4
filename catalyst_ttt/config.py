"""Typed configuration of one cell, composed by Hydra from `conf/`.

Every group node (`task`, `regime`, `signal`, `model`) is merged into its dataclass here, so a
misspelt key or a value of the wrong type fails before any compute, as one clear line.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from catalyst_ttt.anchors import anchor_parts, check_anchor
from catalyst_ttt.device import DEVICES
from catalyst_ttt.errors import UserError, unknown_name
from catalyst_ttt.hashing import PACKAGE_DIR, code_fingerprint, config_hash, file_sha256
from catalyst_ttt.network import check_hub_id
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.results import check_directory, check_name
from catalyst_ttt.schema import NON_SEMANTIC, CellConfig, StabilityConfig
from catalyst_ttt.signals import SIGNALS, trains_at_test_time
from catalyst_ttt.tasks import TASKS
from catalyst_ttt.tasks.base import TRAINING_SPLITS


def shipped_dir(name: str) -> Path:
    """`conf/` or `sweeps/`: inside the installed package, or at the top of a source checkout."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


CONF_DIR = shipped_dir("conf")
GROUPS = ("task", "regime", "signal", "model")


ConfigStore.instance().store(name="cell_schema", node=CellConfig)
SCHEMA_SUFFIX = "_schema"
# Each task's dataclass is the schema of its YAML (`defaults: [<task>_schema]`): defaults live in one place.
for _name in TASKS.names():
    ConfigStore.instance().store(
        group="task", name=f"{_name}{SCHEMA_SUFFIX}", node={"name": _name, **asdict(TASKS.get(_name).config_class())}
    )

SEED_LIMIT = 2**32  # numpy and HF seeding refuse larger seeds
# Characters Hydra's lexer takes unquoted (ASCII only: it refuses `é` unquoted).
PLAIN = re.compile(r"[A-Za-z0-9_./:@+-]*[A-Za-z0-9_./:@-]")


def compose_cell(overrides: list[str]) -> DictConfig:
    """Compose one cell's config; any Hydra or type error becomes a one-line UserError."""
    return compose_cells([overrides])[0]


REPLICATE_KEYS = ("seed", "base.seed")  # what the replicates of one design differ in


def compose_cells(grid: list[list[str]]) -> list[DictConfig]:
    """Each grid point's config, validated. Config-group options are composed by the `Composer`; every
    other override sets an existing key of a copy, typed by the schema as Hydra would, so a sweep of hundreds
    of cells plans in seconds. Interpolations are resolved here, so every value is checked as what the cell
    will use. A replicate (another `seed`/`base.seed` of a design already composed, where no value
    interpolates) is a copy of that design with its seeds set."""
    composer = Composer()
    parsed_lines: dict[str, Override] = {}
    validated: set[str] = set()  # designs already checked: replicates differ in their seeds alone
    designs: dict[tuple, DictConfig] = {}  # resolved configs that replicates copy
    cells = []
    for overrides in grid:
        parsed = [_parsed(line, parsed_lines) for line in overrides]
        seeds = [o for o in parsed if o.key_or_group in REPLICATE_KEYS and not _needs_hydra(o)]
        design = (tuple(o.input_line for o in parsed if o not in seeds), tuple(o.key_or_group for o in seeds))
        if design in designs:
            cfg = copy.deepcopy(designs[design])
            for override in seeds:
                key = override.key_or_group
                _set(cfg, override)
                _check_range(key, OmegaConf.select(cfg, key), RANGES[key])
            cells.append(cfg)
            continue
        cfg = composer.compose([o for o in parsed if _needs_hydra(o)])
        for override in parsed:
            if not _needs_hydra(override):
                _set(cfg, override)
        interpolates = "${" in json.dumps(OmegaConf.to_container(cfg), default=str)
        _resolve(cfg)
        make_paths_absolute(cfg)
        plain = OmegaConf.to_container(cfg)
        checked = json.dumps({**plain, "seed": None, "base": {**plain["base"], "seed": None}}, default=str)
        if checked in validated:
            for key in REPLICATE_KEYS:
                _check_range(key, OmegaConf.select(cfg, key), RANGES[key])
        else:
            validate(cfg)
            validated.add(checked)
        if not interpolates:
            designs[design] = cfg  # its replicates copy it before setting their seeds
        cells.append(cfg)
    return cells


def _parsed(line: str, seen: dict[str, Override]) -> Override:
    """One override line read with Hydra's grammar and checked, once per distinct line of a grid."""
    if line not in seen:
        (override,) = parse_overrides([line], "the command line")
        _check_override(line, override)
        seen[line] = override
    return seen[line]


class Composer:
    """Hydra's composition of a grid's structural overrides without composing every combination of options: the
    default is composed once, a group option whose YAML has no defaults list and no `@package` line is its
    group's schema node with the file merged in (it can change its own group only), and any other option is
    composed once and checked against the default. A sweep of 6 regimes x 10 signals composes once, not 60
    times.

    Each option's group node is copied into a copy of the default composition; a combination with any other
    override (additions, packages, `hydra.*`, an option that reaches outside its group) is composed whole."""

    def __init__(self):
        self.default: DictConfig | None = None
        self.options: dict[str, DictConfig | None] = {}  # "group=option" -> its group's node; None: not its own
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.whole: set[tuple[str, ...]] = set()  # the combinations Hydra composed as a whole

    def compose(self, structural: list[Override]) -> DictConfig:
        """A fresh copy of the composition of `structural` (group choices, additions, `hydra.*`)."""
        lines = tuple(o.input_line for o in structural)
        if lines not in self.composed:
            assembled = self._assemble(structural)
            if assembled is None:
                assembled = _compose(list(lines))
                self.whole.add(lines)
            self.composed[lines] = assembled
        return copy.deepcopy(self.composed[lines])

    def _assemble(self, structural: list[Override]) -> DictConfig | None:
        groups = [o.key_or_group for o in structural]
        if len(set(groups)) < len(groups) or not all(_plain_choice(o) for o in structural):
            return None  # Hydra says what is wrong with a group given twice
        nodes = [self._option(o) for o in structural]
        if any(node is None for node in nodes):
            return None
        cfg = copy.deepcopy(self._default())
        for choice, node in zip(structural, nodes):
            cfg[choice.key_or_group] = copy.deepcopy(node)
        return cfg

    def _default(self) -> DictConfig:
        if self.default is None:
            self.default = _compose([])
        return self.default

    def _option(self, choice: Override) -> DictConfig | None:
        line = choice.input_line
        if line not in self.options:
            group = choice.key_or_group
            node = _plain_option(group, choice.value())
            if node is None:
                composed, default = _compose([line]), self._default()
                others = [k for k in default if k != group]
                own = composed.keys() == default.keys() and all(composed[k] == default[k] for k in others)
                node = composed[group] if own else None
            self.options[line] = node
        return self.options[line]


def _plain_option(group: str, option: str) -> DictConfig | None:
    """The group node of an option whose YAML has no defaults list and no `@package` line, as Hydra composes
    it: the schema's node with the file merged in. Such a file changes its own group only, so it needs no
    composition of its own (Hydra takes about 0.2 s for one); None for any other option, which Hydra composes
    (and checks)."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if "@package" in text:
        return None
    schema = get_type_hints(CellConfig)[group]
    try:
        content = OmegaConf.create(text)
        if not is_dataclass(schema) or not isinstance(content, DictConfig) or "defaults" in content:
            return None
        return OmegaConf.merge(OmegaConf.structured(schema), content)
    except OmegaConfBaseException:
        return None  # Hydra composes it and names what is wrong


def _plain_choice(override: Override) -> bool:
    """`group=option`: one option of a config group, nothing added or repackaged."""
    return (
        override.key_or_group in GROUPS
        and not (override.is_add() or override.is_force_add() or override.is_delete())
        and override.package is None
        and isinstance(override.value(), str)
    )


def _needs_hydra(override: Override) -> bool:
    """Group choices, additions and Hydra's keys change what is composed; plain `key=value`s only set it."""
    return (
        override.key_or_group in GROUPS
        or override.is_add()
        or override.is_force_add()
        or override.is_hydra_override()
        or override.package is not None
    )


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except MissingConfigException as err:
        raise UserError(_missing_option_message(err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_override_message(err)) from None
    finally:
        GlobalHydra.instance().clear()


def _set(cfg: DictConfig, override: Override) -> None:
    """`key=value` on the composed config, checked against the schema as Hydra's own override is."""
    try:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True, force_add=False)
    except (ConfigKeyError, ConfigAttributeError) as err:
        raise UserError(_unknown_key_message(err.full_key or override.key_or_group)) from None
    except OmegaConfBaseException as err:
        raise UserError(f"Error merging override {override.input_line}: {_omegaconf_message(err)}") from None


def _resolve(cfg: DictConfig) -> None:
    """Resolve every interpolation in place, or refuse the one that cannot be, naming its key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)  # raises naming the key, which `resolve` does not
    except OmegaConfBaseException as err:
        raise UserError(
            f"{err.full_key}: its interpolation cannot be resolved ({str(err).splitlines()[0]}); valid: "
            "a plain value, ${other.key} of this config, or ${oc.env:NAME} of a set variable"
        ) from None
    OmegaConf.resolve(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{missing[0]} has no value; give one, e.g. {missing[0]}=<value>")


def parse_overrides(lines: list[str], where: str) -> list[Override]:
    """Overrides read with Hydra's own grammar; a syntax error is one line naming where it was."""
    try:
        return OverridesParser.create().parse_overrides([str(line) for line in lines])
    except OverrideParseException as err:
        raise UserError(f"{where}: {' '.join(str(err).split())}") from None


def quote(value) -> str:
    """`value` (from YAML or a composed config) written so that Hydra's grammar reads back exactly
    it: null, true/false, numbers, lists, and strings, quoted unless plain ASCII that reads back the same."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # 1e-05, inf, nan: Hydra reads each back as that float
    if isinstance(value, list):
        return "[" + ",".join(quote(v) for v in value) + "]"
    if isinstance(value, dict):
        raise UserError(f"{value!r}: a mapping is not a value here; give a name, number or list")
    text = str(value)
    if PLAIN.fullmatch(text) and OverridesParser.create().parse_override(f"k={text}").value() == text:
        return text
    # Inside quotes a backslash escapes only a quote or another backslash before a quote or the end.
    escaped = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, text)
    return "'" + escaped.replace("'", "\\'") + "'"


STORE_TWICE = "the results store is given twice; give --runs-dir DIR or runs_dir=DIR, not both"


def with_runs_dir(overrides: list[str], runs_dir: str | None) -> list[str]:
    """The command line's overrides with `--runs-dir DIR` as the override runs_dir=DIR: `cttt run` and
    `cttt sweep` name the results store either way, once."""
    if runs_dir is None:
        return overrides
    if any(o.key_or_group == "runs_dir" for o in parse_overrides(overrides, "the command line")):
        raise UserError(STORE_TWICE)
    return [*overrides, f"runs_dir={quote(runs_dir)}"]


def runs_dir_of(runs_dir: str | None) -> str:
    """The results store `cttt status` and `cttt report` read: `--runs-dir DIR`, else the schema's default."""
    return CellConfig.runs_dir if runs_dir is None else runs_dir


def _check_override(line: str, override: Override) -> None:
    """What Hydra would accept but a cell cannot mean: a deleted key, or a config group given
    several options (Hydra merges them, the last silently winning) or none."""
    if override.is_delete():
        raise UserError(f"{line!r}: deleting a key is not valid here; every key has a value, set it instead")
    group = override.key_or_group
    if group in GROUPS and not override.is_sweep_override() and not isinstance(override.value(), str):
        raise UserError(
            f"{line!r}: {group} takes one name; valid: {', '.join(group_options(group))} "
            f"(a sweep crosses several: cttt sweep NAME {group}=a,b)"
        )


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def make_paths_absolute(cfg: DictConfig) -> None:
    """Every worker (another working directory, `hydra.job.chdir=true`) shares one store, cache and data file."""
    cfg.runs_dir = str(Path(cfg.runs_dir).expanduser().absolute())
    cfg.cache_dir = str(Path(cfg.cache_dir).expanduser().absolute())
    if cfg.task.get("path"):
        cfg.task.path = str(Path(cfg.task.path).expanduser().absolute())
    for key in ("model.name_or_path", "metrics.ig.scorer"):  # a local directory; a hub id stays as it is
        reference = OmegaConf.select(cfg, key)
        if reference and Path(reference).expanduser().exists():
            OmegaConf.update(cfg, key, str(Path(reference).expanduser().absolute()))


def _missing_option_message(err: MissingConfigException) -> str:
    missing = (err.missing_cfg_file or "").lstrip("/")
    group, _, name = missing.rpartition("/")
    if group in GROUPS:
        listed = err.options or group_options(group)
        options = [o for o in listed if not o.endswith(SCHEMA_SUFFIX)]  # schemas are not options to pick
        return unknown_name(group, name, options)
    return _omegaconf_message(err)


def _override_message(err: Exception) -> str:
    """Hydra's message plus its cause, with the valid keys when a key does not exist."""
    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return _unknown_key_message(cause.full_key)
    text = _omegaconf_message(err)
    return f"{text}: {_omegaconf_message(cause)}" if cause is not None else text


def _unknown_key_message(full_key: str) -> str:
    parent = full_key.rpartition(".")[0]
    schema = OmegaConf.structured(CellConfig)
    node = OmegaConf.select(schema, parent) if parent else schema
    if isinstance(node, DictConfig):
        return f"unknown key {full_key!r}; valid keys{' of ' + parent if parent else ''}: {', '.join(node)}"
    return f"unknown key {full_key!r}; valid: the keys in conf/{parent}/<name>.yaml"


def _omegaconf_message(err: Exception) -> str:
    """An OmegaConf error's message and the line after it, which names the key, on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__


def validate(cfg: DictConfig) -> None:
    """Checks Hydra's types cannot express: registry names, keys added with `+`, ranges, sizes."""
    _check_known_keys(cfg, CellConfig, "")
    check_name(cfg.sweep, "sweep")
    for key in ("runs_dir", "cache_dir"):
        check_directory(cfg[key], key)
    task = build_task(cfg)  # loads and checks the task's data, if it has any
    REGIMES.get(cfg.regime.name)
    SIGNALS.get(cfg.signal.name).check_task(task)
    _check_choice("signal.reference", cfg.signal.reference, ("majority", "gold"))
    _check_choice("model.kind", cfg.model.kind, ("tiny", "hf"))
    _check_choice("wandb.mode", cfg.wandb.mode, ("offline", "online", "disabled"))
    for key, rule in RANGES.items():
        _check_range(key, OmegaConf.select(cfg, key), rule)
    if cfg.catalyst.from_scratch and cfg.model.kind != "tiny":
        raise UserError(
            f"catalyst.from_scratch=true is not valid with model.kind={cfg.model.kind!r}; it trains a tiny model "
            "from scratch: use model=tiny, or catalyst.from_scratch=false"
        )
    check_anchor(cfg.ttt)
    _check_device_options(cfg)
    if cfg.ttt.anchor != "none" and SIGNALS.get(cfg.signal.name).trainer != "grpo":
        raise UserError(
            f"ttt.anchor={cfg.ttt.anchor} anchors GRPO, which signal {cfg.signal.name} does not train with; "
            f"use ttt.anchor=none or a GRPO signal: {_grpo_signals()}"
        )
    if not SIGNALS.get(cfg.signal.name).reward_varies and "replay" not in anchor_parts(cfg.ttt.anchor):
        raise UserError(
            f"signal {cfg.signal.name} trains nothing without a replay anchor; use ttt.anchor=replay or kl+replay"
        )
    if cfg.model.kind == "tiny" and cfg.model.hidden_size % cfg.model.num_heads:
        raise UserError(
            f"model.hidden_size={cfg.model.hidden_size} is not valid; it must be a multiple of "
            f"model.num_heads={cfg.model.num_heads}"
        )
    if cfg.ttt.num_generations < 2 and cfg.signal.name != "none":
        raise UserError(f"ttt.num_generations={cfg.ttt.num_generations} is not valid; GRPO groups need >= 2")
    if cfg.eval.samples < cfg.eval.k:
        raise UserError(
            f"eval.samples={cfg.eval.samples} is not valid; the unbiased pass@k and maj@k need "
            f">= eval.k={cfg.eval.k} samples per prompt"
        )
    check_sizes(cfg, task)
    check_sampled_splits(cfg.eval.sampled_splits, task)
    # Last: the checks that may ask the network, once everything local holds.
    if cfg.model.kind == "hf":
        check_model_reference(cfg.model.name_or_path, "model.name_or_path")
    if cfg.metrics.ig.scorer:
        check_model_reference(cfg.metrics.ig.scorer, "metrics.ig.scorer")


def _check_device_options(cfg: DictConfig) -> None:
    """Config rules of placement and generation: a known device, vLLM only for GRPO and off the CPU,
    and micro-batches that divide a TTT step's sequences."""
    if cfg.device not in DEVICES:
        raise UserError(f"device={cfg.device!r} is not valid; valid: {', '.join(DEVICES)}")
    t = cfg.ttt
    if t.use_vllm and cfg.device == "cpu":
        raise UserError("ttt.use_vllm=true needs a GPU; vLLM never runs on the CPU: use ttt.use_vllm=false")
    if t.use_vllm and SIGNALS.get(cfg.signal.name).trainer != "grpo":
        raise UserError(
            f"ttt.use_vllm=true generates for GRPO, which signal {cfg.signal.name} does not train with; "
            f"use ttt.use_vllm=false or a GRPO signal: {_grpo_signals()}"
        )
    sequences = t.prompts_per_step * t.num_generations
    if t.micro_batch_size is not None and sequences % t.micro_batch_size:
        raise UserError(
            f"ttt.micro_batch_size={t.micro_batch_size} is not valid; it must divide the {sequences} sequences "
            "of a TTT step (ttt.prompts_per_step x ttt.num_generations)"
        )


def _grpo_signals() -> str:
    return ", ".join(n for n in SIGNALS.names() if SIGNALS.get(n).trainer == "grpo")


def check_sampled_splits(names, task) -> None:
    valid = [name for name in split_sizes(task) if name not in TRAINING_SPLITS]
    unknown = [name for name in names if name not in valid]
    if unknown or "id" not in names:
        what = f"has {unknown[0]!r}, not an eval split" if unknown else "must include id (stability reads its samples)"
        raise UserError(f"eval.sampled_splits {what}; valid: {', '.join(valid)}")


TINY_SHAPE = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions")
MAX_THREADS = 1024  # beyond this, OpenMP fails to create the pool (or segfaults) once training starts
# key -> (lowest, highest, lowest allowed itself); every value must also be finite. Every numeric key of
# the schema has its rule here (tests/test_bad_inputs.py checks): a value no phase can use fails up front.
RANGES: dict[str, tuple[float, float, bool]] = {
    **{
        k: (0, math.inf, False)
        for k in ("base.lr", "catalyst.lr", "ttt.lr", "ttt.temperature", "eval.temperature", "metrics.ig.reader_lr")
    },
    **{k: (0, math.inf, True) for k in ("ttt.beta", "ttt.steps", "catalyst.steps", "base.steps")},
    **{k: (0, math.inf, True) for k in ("ttt.replay_weight", "lock_timeout", "metrics.ig.reader_steps", "ttt.lora.r")},
    "ttt.lora.alpha": (0, math.inf, False),
    "ttt.lora.dropout": (0, 1, True),
    "threads": (0, MAX_THREADS, True),
    **{f"model.{k}": (1, math.inf, True) for k in TINY_SHAPE},
    **{
        k: (1, math.inf, True)
        for k in (
            "ttt.prompts_per_step",
            "ttt.num_generations",
            "ttt.eval_every",
            "ttt.micro_batch_size",
            "eval.k",
            "eval.samples",
            "eval.batch_size",
            "eval.max_per_split",
            "eval.trajectory_size",
            "catalyst.n",
            "catalyst.batch_size",
            "base.batch_size",
            "signal.samples",
            "signal.rounds",
            "metrics.ig.max_items",
            "metrics.ig.reader_batch_size",
            "metrics.probes.atomic_items",
        )
    },
    **{k: (0, SEED_LIMIT - 1, True) for k in ("seed", "base.seed")},
    **{f"metrics.stability.{f.name}": (0, 1, True) for f in fields(StabilityConfig)},
}


def _check_range(key: str, value, rule: tuple[float, float, bool]) -> None:
    if value is None:  # an optional limit left unset (e.g. eval.max_per_split: every item)
        return
    low, high, low_allowed = rule
    finite = not isinstance(value, float) or math.isfinite(value)  # an int of any size compares exactly
    ok = finite and (value >= low if low_allowed else value > low) and value <= high
    if not ok:
        bound = f"{'>=' if low_allowed else '>'} {low}" + (f" and <= {high}" if math.isfinite(high) else "")
        finite = "finite and " if isinstance(value, float) else ""
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}... ({len(str(value))} digits)"
        raise UserError(f"{key}={shown} is not valid; it must be {finite}{bound}")


def _check_choice(key: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"{key}={value!r} is not valid; valid: {', '.join(valid)}")


def _check_known_keys(node: DictConfig, schema: type, prefix: str) -> None:
    """Keys added with `+`/`++` that the schema does not know are typos, not new settings."""
    hints = get_type_hints(schema)
    names = [f.name for f in fields(schema)]
    for key in node:
        if key not in names:
            parent = prefix.rstrip(".")
            where = f" of {parent}" if parent else ""
            raise UserError(f"unknown key {prefix + str(key)!r}; valid keys{where}: {', '.join(names)}")
        child = hints[key]
        if is_dataclass(child) and isinstance(node[key], DictConfig):
            _check_known_keys(node[key], child, f"{prefix}{key}.")


def _check_task_values(task_cfg) -> None:
    """Generic ranges of a task's dataclass: counts n_* >= 0, *_frac in [0, 1], seed < 2**32, sizes >= 1."""
    for item in fields(task_cfg):
        value = getattr(task_cfg, item.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if item.name == "seed":
            rule = RANGES["seed"]
        elif item.name.endswith("_frac"):
            rule = (0, 1, True)
        elif item.name.startswith("n_") or item.name == "noise_chars":
            rule = (0, math.inf, True)
        else:
            rule = (1, math.inf, True)
        _check_range(f"task.{item.name}", value, rule)


def check_sizes(cfg: DictConfig, task) -> None:
    """No phase is silently skipped or shortened: refuse, before compute, splits it could not use."""
    sizes = split_sizes(task)
    listing = ", ".join(f"{k}={v}" for k, v in sizes.items())
    unused = {"train"} if cfg.regime.name == "none" else set()
    if not cfg.metrics.ig.enabled or cfg.metrics.ig.scorer:
        unused.add("reader")  # no IG reader is trained on it
    empty = [name for name, size in sizes.items() if size == 0 and name not in unused]
    if empty:
        raise UserError(f"task {cfg.task.name}: split {empty[0]!r} is empty (split sizes: {listing})")
    if cfg.regime.name != "none" and cfg.catalyst.n > sizes["train"]:
        raise UserError(
            f"catalyst.n={cfg.catalyst.n} is more than the {sizes['train']} problems of the catalyst pool "
            f"(split sizes: {listing}); lower catalyst.n or raise task.n_train"
        )
    if trains_at_test_time(cfg.signal, cfg.ttt) and sizes["id"] < cfg.ttt.prompts_per_step:
        raise UserError(
            f"ttt.prompts_per_step={cfg.ttt.prompts_per_step} is more than the {sizes['id']} id prompts of task "
            f"{cfg.task.name} (split sizes: {listing})"
        )


_SPLIT_SIZES: dict[str, dict[str, int]] = {}  # a sweep validates many cells of one task


def split_sizes(task) -> dict[str, int]:
    settings = {f.name: getattr(task.cfg, f.name) for f in fields(task.cfg)}
    key = config_hash({"name": task.name, "settings": settings, "data": data_fingerprint(settings.get("path"))})
    if key not in _SPLIT_SIZES:
        _SPLIT_SIZES[key] = {name: len(problems) for name, problems in task.splits().items()}
    return _SPLIT_SIZES[key]


def data_fingerprint(path: str | None) -> str | None:
    """The sha256 of a data file's content: an edited file never reuses what the old one built."""
    if not path or not Path(path).is_file():
        return None
    return file_sha256(Path(path))


def task_key(cfg: DictConfig) -> dict:
    """The task's settings plus the content hash of its data file, if it reads one."""
    plain = OmegaConf.to_container(cfg.task, resolve=True)
    data = data_fingerprint(plain.get("path"))
    return plain | ({"data_sha256": data} if data else {})


def check_model_reference(reference: str | None, key: str) -> None:
    """A local model path must hold a model; anything else is taken as a hub id, which must be reachable."""
    if not reference:
        raise UserError(f"{key} is missing; give a local model directory or a hub id")
    local = Path(reference).expanduser()
    if (local.is_absolute() or reference.startswith(".") or local.exists()) and not (local / "config.json").exists():
        raise UserError(f"{key}={reference!r}: no model there (a directory with config.json)")
    if not local.exists():
        check_hub_id(reference, key, "model")


def build_task(cfg: DictConfig):
    return TASKS.get(cfg.task.name)(typed_task_config(cfg))


def typed_task_config(cfg: DictConfig):
    """The task node as its dataclass; unknown keys and wrong types are user errors."""
    settings = OmegaConf.to_container(cfg.task, resolve=True)
    return copy.copy(_typed_task(json.dumps(settings, sort_keys=True)))


@functools.lru_cache(maxsize=None)  # a sweep validates many cells of one task
def _typed_task(settings: str):
    node = json.loads(settings)
    name = node.pop("name")
    schema = OmegaConf.structured(TASKS.get(name).config_class)
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(schema, node))
    except OmegaConfBaseException as err:
        raise UserError(f"task {name}: {_omegaconf_message(err)}") from None
    _check_task_values(typed)
    return typed


def semantic_dict(cfg: DictConfig) -> dict:
    """What a cell's result depends on: the resolved config without the keys that only place or
    report it, the content of its data file, and the code that computes it."""
    data = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in NON_SEMANTIC} | {
        "task": task_key(cfg),
        "code": code_fingerprint(),
    }


def cell_identity(cfg: DictConfig) -> tuple[str, str]:
    """The cell's id (readable axes and a short hash) and the hash of what it computes (`semantic_dict`)."""
    semantic = config_hash(semantic_dict(cfg))
    return (
        f"{cfg.task.name}-{model_label(cfg)}-{cfg.regime.name}-{cfg.signal.name}-s{cfg.seed}-{semantic[:8]}",
        semantic,
    )


def axes_of(cfg: DictConfig) -> dict:
    """The grid coordinates of a cell; a replicate is the pair (base_seed, seed)."""
    return {
        "task": cfg.task.name,
        "model": cfg.model.kind,
        "regime": cfg.regime.name,
        "signal": cfg.signal.name,
        "reference": cfg.signal.reference,
        "anchor": cfg.ttt.anchor,
        "catalyst_n": cfg.catalyst.n,
        "catalyst_steps": cfg.catalyst.steps,
        "ttt_steps": cfg.ttt.steps,
        "latent": cfg.task.get("latent"),  # the kind of latent skill the base holds (tasks with a choice)
        "base_seed": cfg.base.seed,
        "seed": cfg.seed,
    }


@dataclass(frozen=True)
class CellDescription:
    """What a cell records of its config (record.CellRecord), read from it once: who it is, where its
    entry lives, its grid coordinates, and what its signal may see."""

    name: str
    config_hash: str
    runs_dir: str
    sweep: str
    signal: str
    axes: dict
    config: dict  # resolved
    config_yaml: str  # as composed, for the cell's directory
    uses_labels: bool
    access: str
    rewarded: bool


def describe_cell(cfg: DictConfig) -> CellDescription:
    signal = SIGNALS.get(cfg.signal.name)
    return CellDescription(
        *cell_identity(cfg),
        runs_dir=str(cfg.runs_dir),
        sweep=cfg.sweep,
        signal=cfg.signal.name,
        axes=axes_of(cfg),
        config=OmegaConf.to_container(cfg, resolve=True),
        config_yaml=OmegaConf.to_yaml(cfg),
        uses_labels=signal.uses_labels(cfg.signal),
        access=signal.access_of(cfg.signal),
        rewarded=signal.reward_varies,
    )


def model_label(cfg: DictConfig) -> str:
    if cfg.model.kind == "tiny":
        return "tiny"
    return Path(str(cfg.model.name_or_path)).name.replace("-", "_") or "hf"
