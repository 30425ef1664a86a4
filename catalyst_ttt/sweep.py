"""Sweeps: a named grid of cells from `sweeps/NAME.yaml`, launched as a Hydra multirun."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field

import hydra
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from catalyst_ttt.config import (
    CONF_DIR,
    GROUPS,
    cell_id,
    check_name,
    compose_cell,
    config_hash,
    semantic_dict,
    shipped_dir,
)
from catalyst_ttt.errors import UserError, unknown_name
from catalyst_ttt.results import FINAL, GRID, CellDir, sweep_dir, write_json

SWEEPS_DIR = shipped_dir("sweeps")
PLAIN = re.compile(r"[\w./:@+-]*[\w./:@-]|")  # needs no quotes in an override value
SWEEP_KEYS = {"description", "axes", "overrides"}


@dataclass
class Cell:
    id: str
    overrides: list[str]
    config: DictConfig
    config_hash: str

    def state(self) -> str:
        """done / diverged / failed / running:<phase> / stale:<phase> / pending, from the results store."""
        return CellDir(self.config.runs_dir, self.config.sweep, self.id).state(self.config_hash)


@dataclass
class Sweep:
    name: str
    description: str
    axes: dict[str, list[str]]  # key -> values, each written as Hydra reads it (quoted where needed)
    fixed: list[str]  # overrides as Hydra reads them
    hydra_args: list[str] = field(default_factory=list)

    def grid(self) -> list[list[str]]:
        keys = list(self.axes)
        return [
            self.fixed + [f"{k}={v}" for k, v in zip(keys, values)]
            for values in itertools.product(*(self.axes[k] for k in keys))
        ]

    def cells(self) -> list[Cell]:
        """Every cell composed and validated: a bad name or value fails here, before compute.
        Grid points that compose to the same cell collapse into one."""
        out: dict[str, Cell] = {}
        for overrides in self.grid():
            cfg = compose_cell(overrides)
            cell = Cell(cell_id(cfg), overrides, cfg, config_hash(semantic_dict(cfg)))
            out.setdefault(cell.id, cell)
        if self.hydra_args:
            check_hydra_args(self.grid()[0] + self.hydra_args)
        return list(out.values())

    def multirun_argv(self, place: DictConfig) -> list[str]:
        """Hydra's argv; the store and cache as absolute paths, so every worker shares them."""
        axes = [f"{k}={','.join(v)}" for k, v in self.axes.items()]
        fixed = [o for o in self.fixed if _key(o) not in ("runs_dir", "cache_dir")]
        paths = [f"runs_dir={quote(place.runs_dir)}", f"cache_dir={quote(place.cache_dir)}"]
        return ["cttt", "--multirun", *fixed, *paths, *axes, *self.hydra_args]


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_description(file_name: str) -> str:
    """The `description` of sweeps/FILE_NAME on one line ("" where there is none)."""
    path = SWEEPS_DIR / file_name
    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        spec = None  # load_sweep says what is wrong with it when the sweep is run
    return " ".join(str(spec.get("description") or "").split()) if isinstance(spec, dict) else ""


def load_sweep(name: str, cli_overrides: list[str], jobs: int | None = None) -> Sweep:
    """The sweep file plus command-line overrides, read with Hydra's override grammar: a sweep
    (`a,b`, `range(0,3)`, `choice(...)`, `glob(...)`) sets that axis, a value fixes it."""
    check_name(name, "sweep")
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(unknown_name("sweep", name, available_sweeps()))
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or set(spec) - SWEEP_KEYS:
        raise UserError(f"{path}: top-level keys must be among {sorted(SWEEP_KEYS)}")
    for section in ("axes", "overrides"):
        if not isinstance(spec.get(section) or {}, dict):
            raise UserError(f"{path}: '{section}' must map keys to values")
    lines = [
        f"{k}={','.join(quote(v) for v in values) if isinstance(values, list) else values}"
        for k, values in (spec.get("axes") or {}).items()
    ]
    lines += [f"{k}={quote(v)}" for k, v in (spec.get("overrides") or {}).items()]
    axes: dict[str, list[str]] = {}
    fixed: dict[str, str] = {}
    hydra_args: list[str] = []
    for override in parse_overrides(lines, str(path)) + parse_overrides(cli_overrides, "the command line"):
        key = override.key_or_group
        if override.is_hydra_override():
            hydra_args.append(override.input_line)
        elif override.is_sweep_override():
            axes[key] = sweep_values(override)
            fixed.pop(key, None)
        else:
            fixed[key] = override.input_line
            axes.pop(key, None)
    if jobs and jobs > 1:
        explicit = [a for a in hydra_args if a.startswith(("hydra/launcher", "hydra.launcher"))]
        if explicit:
            raise UserError(f"--jobs {jobs} picks the joblib launcher; drop it or {explicit[0]!r}, not both")
        hydra_args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
        fixed.setdefault("threads", f"threads={max(1, (os.cpu_count() or 1) // jobs)}")
    fixed["sweep"] = f"sweep={name}"
    return Sweep(name, spec.get("description", ""), axes, list(fixed.values()), hydra_args)


def parse_overrides(lines: list[str], where: str) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides([str(line) for line in lines])
    except OverrideParseException as err:
        raise UserError(f"{where}: {' '.join(str(err).split())}") from None


def sweep_values(override: Override) -> list[str]:
    """The values of a sweep override, each as Hydra reads it; `glob` picks among a group's options."""
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        group = override.key_or_group
        if group not in GROUPS:
            raise UserError(f"{override.input_line!r}: glob() picks config options; valid keys: {', '.join(GROUPS)}")
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        values = override.value().filter(options)
        if not values:
            raise UserError(f"{override.input_line!r} matches no {group}; valid: {', '.join(options)}")
        return values
    if override.value_type == ValueType.INTERVAL_SWEEP:
        raise UserError(f"{override.input_line!r}: interval() needs a sweeper that samples; give values or range()")
    return list(override.sweep_string_iterator())


def check_hydra_args(overrides: list[str]) -> None:
    """Compose once with the `hydra.*` arguments, so a bad launcher or key fails before any cell."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as err:
        group, _, name = (err.missing_cfg_file or "").strip("/").rpartition("/")
        raise UserError(f"unknown {group} {name!r}; valid: {', '.join(err.options or [])}") from None
    except (HydraException, OmegaConfBaseException) as err:
        cause = f": {' '.join(str(err.__cause__).split())}" if err.__cause__ else ""
        raise UserError(f"{' '.join(str(err).split())}{cause}") from None
    finally:
        GlobalHydra.instance().clear()


def quote(value) -> str:
    """A value as Hydra's grammar reads it back: strings with special characters are quoted."""
    text = str(value)
    if isinstance(value, str) and not PLAIN.fullmatch(text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_cell(cfg: DictConfig) -> str:
    """The Hydra task function: one cell per job, whichever launcher runs it."""
    from catalyst_ttt.pipeline import run_cell

    return run_cell(cfg)["status"]


def launch(sweep: Sweep, cells: list[Cell], console: Console) -> dict[str, int]:
    """Run the multirun with a live progress view; returns the count of cells per final state."""
    record_grid(sweep, cells)
    monitor = Monitor(cells, console)
    argv, sys.argv = sys.argv, sweep.multirun_argv(cells[0].config)
    monitor.start()
    try:
        hydra_cell()
    finally:
        sys.argv = argv
        monitor.stop()
    return monitor.counts()


def record_grid(sweep: Sweep, cells: list[Cell]) -> None:
    """Write the grid into the store, so the report aggregates these cells and no other configuration."""
    source = SWEEPS_DIR / f"{sweep.name}.yaml"
    grid = {
        "sweep": sweep.name,
        "file": source.name,
        "file_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "fixed": sweep.fixed,
        "axes": sweep.axes,
        "cells": {cell.id: cell.config_hash for cell in cells},
    }
    write_json(sweep_dir(cells[0].config.runs_dir, sweep.name) / GRID, grid)


class Monitor:
    """Polls the results store (shared by every launcher) and draws progress with an ETA."""

    def __init__(self, cells: list[Cell], console: Console):
        self.cells, self.console = cells, console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
            transient=False,
        )
        self._reported = {c.id for c in cells if c.state() in FINAL}  # finished before this launch
        self.task = self.progress.add_task(
            "cells", total=len(cells), completed=len(self._reported), states="", current=""
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def counts(self) -> dict[str, int]:
        return dict(Counter(c.state().split(":")[0] for c in self.cells))

    def refresh(self) -> None:
        states = {c.id: c.state() for c in self.cells}
        tally = Counter(s.split(":")[0] for s in states.values())
        finished = sum(tally[s] for s in FINAL)
        for cid, state in states.items():  # one line per finished cell: readable in logs too
            if state in FINAL and cid not in self._reported:
                self._reported.add(cid)
                self.progress.console.print(f"[{finished}/{len(states)}] {state:<8} {cid}", highlight=False)
        running = [f"{cid} [{s.split(':')[1]}]" for cid, s in states.items() if s.startswith("running")]
        summary = " ".join(f"{k}={tally.get(k, 0)}" for k in ("done", "running", "failed", "diverged"))
        self.progress.update(self.task, completed=finished, states=summary, current=", ".join(running[:2]))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.refresh()

    def start(self) -> None:
        self.progress.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.progress.stop()
