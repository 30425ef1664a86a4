"""Sweeps: a named grid of cells from `sweeps/NAME.yaml`, launched as a Hydra multirun."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import hydra
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
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

from catalyst_ttt import hypotheses
from catalyst_ttt.config import (
    CONF_DIR,
    GROUPS,
    cell_identity,
    compose_cells,
    group_options,
    parse_overrides,
    quote,
    shipped_dir,
)
from catalyst_ttt.errors import UserError, first_line, read_user_text, unknown_name
from catalyst_ttt.quiet import quiet_libraries
from catalyst_ttt.results import (
    FINAL,
    GRID,
    CellDir,
    cell_dirs,
    check_name,
    read_json,
    state_counts,
    sweep_dir,
    write_atomic,
    write_json,
)

SWEEPS_DIR = shipped_dir("sweeps")
SWEEP_KEYS = {"description", "axes", "overrides", "hypotheses"}
HYPOTHESES = "hypotheses.json"  # runs/<sweep>/: the study file's hypotheses as they were at its first launch
PATH_KEYS = ("runs_dir", "cache_dir", "task.path")  # made absolute when a cell is composed
# A larger grid needs --max-cells: composing a cell takes ~0.2 s, and a typo can ask for 10**5 of them.
MAX_CELLS = 1000


@dataclass
class Cell:
    id: str
    overrides: list[str]
    config: DictConfig
    config_hash: str

    def state(self) -> str:
        """done / diverged / failed / running:<phase> / stale:<phase> / pending, from the results store."""
        return CellDir(self.config.runs_dir, self.config.sweep, self.id).state(self.config_hash)


Axes = dict[str, list[str]]  # key -> values, each written as Hydra reads it (quoted where needed)


@dataclass
class Sweep:
    name: str
    description: str
    blocks: list[Axes]  # each block's axes are crossed; the grid is the union of the blocks
    fixed: list[str]  # overrides as Hydra reads them
    hydra_args: list[str] = field(default_factory=list)
    hypotheses: dict | None = None  # as written in the study file (`catalyst_ttt.hypotheses`)

    def grid(self) -> list[list[str]]:
        return [
            self.fixed + [f"{k}={v}" for k, v in zip(axes, values)]
            for axes in self.blocks
            for values in itertools.product(*axes.values())
        ]

    def describe_axes(self) -> str:
        return " | ".join("; ".join(f"{k}={','.join(v)}" for k, v in axes.items()) or "no axis" for axes in self.blocks)

    def cells(self) -> list[Cell]:
        """Every cell composed and validated: a bad name or value fails here, before compute.
        Grid points that compose to the same cell collapse into one."""
        out: dict[str, Cell] = {}
        grid = self.grid()
        for overrides, cfg in zip(grid, compose_cells(grid)):
            name, semantic = cell_identity(cfg)
            out.setdefault(name, Cell(name, overrides, cfg, semantic))
        if self.hydra_args:
            check_hydra_args(grid[0] + self.hydra_args)
        return list(out.values())

    def multirun_argvs(self, place: DictConfig) -> list[list[str]]:
        """Hydra's argv per block; the store, cache and data file as the absolute paths `place` (a composed
        cell) holds, so every worker shares them whatever its working directory (`hydra.job.chdir=true`)."""
        argvs = []
        for axes in self.blocks:
            placed = [key for key in PATH_KEYS if key not in axes and OmegaConf.select(place, key) is not None]
            fixed = [o for o in self.fixed if _key(o) not in placed]
            paths = [f"{key}={quote(OmegaConf.select(place, key))}" for key in placed]
            crossed = [f"{k}={','.join(v)}" for k, v in axes.items()]
            argvs.append(["cttt", "--multirun", *fixed, *paths, *crossed, *self.hydra_args])
        return argvs


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_description(file_name: str) -> str:
    """The `description` of sweeps/FILE_NAME on one line ("" where there is none)."""
    path = SWEEPS_DIR / file_name
    try:
        spec = yaml.safe_load(read_user_text(path)) if path.is_file() else None
    except (yaml.YAMLError, UserError):
        spec = None  # load_sweep says what is wrong with it when the sweep is run
    return " ".join(str(spec.get("description") or "").split()) if isinstance(spec, dict) else ""


def cell_states(name: str, runs_dir: str, results: list[dict]) -> dict[str, str]:
    """Every cell of sweep `name` in the store at `runs_dir`, with its state (`CellDir.state`): the cells of
    the study file's grid against their config hashes, then cells run with other overrides against their own
    result's hash, then finished cells (`results`) whose directory holds only the result."""
    states = {}
    if name in available_sweeps():
        for cell in load_sweep(name, [f"runs_dir={quote(runs_dir)}"]).cells():
            states[cell.id] = cell.state()
    for cell in cell_dirs(runs_dir, name):
        if cell.cell not in states:
            states[cell.cell] = cell.state((cell.result() or {}).get("config_hash", ""))
    for result in results:
        states.setdefault(result["cell"], result["status"])
    return states


def load_sweep(name: str, cli_overrides: list[str], jobs: int | None = None, max_cells: int = MAX_CELLS) -> Sweep:
    """The sweep file plus command-line overrides, read with Hydra's override grammar: a sweep
    (`a,b`, `range(0,3)`, `choice(...)`, `glob(...)`) sets that axis, a value fixes it. A grid of more
    than `max_cells` points is refused before any cell is composed."""
    check_name(name, "sweep")
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(unknown_name("sweep", name, available_sweeps()))
    try:
        spec = yaml.safe_load(read_user_text(path)) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or set(spec) - SWEEP_KEYS:
        raise UserError(f"{path}: top-level keys must be among {sorted(SWEEP_KEYS)}")
    if not isinstance(spec.get("overrides") or {}, dict):
        raise UserError(f"{path}: 'overrides' must map keys to values")
    blocks = spec.get("axes") or {}
    blocks = blocks if isinstance(blocks, list) else [blocks]  # a list: the union of several grids
    if not all(isinstance(block, dict) for block in blocks):
        raise UserError(f"{path}: 'axes' must map keys to values (or be a list of such blocks)")
    hypotheses.parse(spec.get("hypotheses"), str(path))
    fixed: dict[str, str] = {}
    hydra_args: list[str] = []
    for override in parse_overrides([f"{k}={quote(v)}" for k, v in (spec.get("overrides") or {}).items()], str(path)):
        if override.is_hydra_override():
            hydra_args.append(override.input_line)
        else:
            fixed[override.key_or_group] = override.input_line
    axes = [
        _axes(parse_overrides([_axis_line(k, v) for k, v in block.items()], str(path)), max_cells) for block in blocks
    ]
    for override in parse_overrides(cli_overrides, "the command line"):
        key = override.key_or_group
        if override.is_hydra_override():
            hydra_args.append(override.input_line)
        elif override.is_sweep_override():  # sets this axis in every block
            values = sweep_values(override, max_cells)
            for block in axes:
                block[key] = values
            fixed.pop(key, None)
        else:
            fixed[key] = override.input_line
            for block in axes:
                block.pop(key, None)
    for block in axes:  # a key is an axis or fixed, never both: a block's axis wins over the file's fixed value
        for key in block:
            fixed.pop(key, None)
    size = sum(math.prod(len(values) for values in block.values()) for block in axes)
    if size > max_cells:
        counts = " + ".join(
            " x ".join(f"{k} {len(v)}{'+' if len(v) > max_cells else ''}" for k, v in b.items()) for b in axes
        )
        raise UserError(
            f"sweep {name}: the grid has more than --max-cells {max_cells} cells ({counts}); "
            "narrow an axis (e.g. seed=0,1) or raise --max-cells"
        )
    if jobs and jobs > 1:
        explicit = [a for a in hydra_args if a.startswith(("hydra/launcher", "hydra.launcher"))]
        if explicit:
            raise UserError(f"--jobs {jobs} picks the joblib launcher; drop it or {explicit[0]!r}, not both")
        jobs = min(jobs, size)  # joblib starts every worker up front, whether a cell is left for it or not
        hydra_args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
        fixed.setdefault("threads", f"threads={max(1, (os.cpu_count() or 1) // jobs)}")
    fixed["sweep"] = f"sweep={name}"
    return Sweep(name, spec.get("description", ""), axes, list(fixed.values()), hydra_args, spec.get("hypotheses"))


def _axis_line(key: str, values) -> str:
    """An axis of the study file as an override: a list of values, or one string of Hydra sweep syntax
    (`range(0,3)`) kept as written."""
    return f"{key}={','.join(quote(v) for v in values) if isinstance(values, list) else _as_written(values)}"


def _axes(overrides: list[Override], max_cells: int) -> Axes:
    """A block's axes: a sweep override (`a,b`, `range(...)`) is an axis, a single value an axis of one."""
    return {
        o.key_or_group: sweep_values(o, max_cells) if o.is_sweep_override() else [o.input_line.partition("=")[2]]
        for o in overrides
    }


def sweep_values(override: Override, limit: int) -> list[str]:
    """The values of a sweep override, each as Hydra reads it (at most `limit` + 1 of them: the grid's
    bound is checked without listing a huge range); `glob` picks among a group's options."""
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        group = override.key_or_group
        if group not in GROUPS:
            raise UserError(f"{override.input_line!r}: glob() picks config options; valid keys: {', '.join(GROUPS)}")
        options = group_options(group)
        values = override.value().filter(options)
        if not values:
            raise UserError(f"{override.input_line!r} matches no {group}; valid: {', '.join(options)}")
        return values
    if override.value_type == ValueType.INTERVAL_SWEEP:
        raise UserError(f"{override.input_line!r}: interval() needs a sweeper that samples; give values or range()")
    try:
        values = list(itertools.islice(override.sweep_string_iterator(), limit + 1))
    except ValueError as err:  # range(0,3,0)
        raise UserError(
            f"{override.input_line!r}: {err}; valid: range(start,stop[,step]) with a step other than 0"
        ) from None
    if not values:
        raise UserError(f"{override.input_line!r} gives no values; an axis needs at least one (range(0,3): 0, 1, 2)")
    return values


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


def _as_written(value) -> str:
    """A YAML value that Hydra reads as written (a string: sweep syntax); null, true, numbers quoted."""
    return value if isinstance(value, str) else quote(value)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_cell(cfg: DictConfig) -> str:
    """The Hydra task function: one cell per job, whichever launcher runs it (in a worker process too)."""
    from catalyst_ttt.pipeline import run_cell

    quiet_libraries()
    return run_cell(cfg)["status"]


def launch(sweep: Sweep, cells: list[Cell], console: Console) -> dict[str, int]:
    """Run the multirun with a live progress view; returns the count of cells per final state.

    A launcher that fails (`hydra.launcher.n_jobs=0`, an unreachable cluster) is one line; if no cell
    started, the store is left as it was, `grid.json` included, so the report still shows the last grid."""
    before = {cell.id: cell.state() for cell in cells}
    snapshot = StoreSnapshot(sweep_dir(cells[0].config.runs_dir, sweep.name))
    record_grid(sweep, cells)
    monitor = Monitor(cells, console)
    argv = sys.argv
    monitor.start()
    try:
        with mock.patch.dict(os.environ, {"HYDRA_FULL_ERROR": "1"}):  # Hydra raises, instead of printing a traceback
            for block in sweep.multirun_argvs(cells[0].config):
                GlobalHydra.instance().clear()
                sys.argv = block
                hydra_cell()
    except Exception as err:  # noqa: BLE001 - whatever the launcher raised, the user gets one line
        started = any(cell.state() != before[cell.id] for cell in cells)
        if not started:
            snapshot.restore()
        outcome = "rerun to resume" if started else "no cell started; the store is as it was"
        raise UserError(
            f"sweep {sweep.name}: the launch failed ({type(err).__name__}: {first_line(err)}); {outcome}"
        ) from None
    finally:
        sys.argv = argv
        monitor.stop()
    return monitor.counts()


class StoreSnapshot:
    """What a launch writes before any cell starts: `grid.json`, a first registration of the hypotheses,
    Hydra's multirun directory, and the directories above them that did not exist."""

    def __init__(self, root: Path):
        self.grid = root / GRID
        self.grid_text = self.grid.read_text(encoding="utf-8") if self.grid.is_file() else None
        self.hypotheses = root / HYPOTHESES
        self.new_hypotheses = not self.hypotheses.exists()
        self.hydra_dir = root / ".hydra"
        self.new_hydra_dir = not self.hydra_dir.exists()
        self.new_dirs = [path for path in (root, *root.parents) if not path.exists()]  # deepest first

    def restore(self) -> None:
        if self.grid_text is None:
            self.grid.unlink(missing_ok=True)
        else:
            write_atomic(self.grid, self.grid_text)
        if self.new_hypotheses:
            self.hypotheses.unlink(missing_ok=True)
        if self.new_hydra_dir:
            shutil.rmtree(self.hydra_dir, ignore_errors=True)
        for directory in self.new_dirs:
            try:
                directory.rmdir()  # only while empty: another process may have written there meanwhile
            except OSError:
                break


def record_grid(sweep: Sweep, cells: list[Cell]) -> None:
    """Write the grid into the store, so the report aggregates these cells and no other configuration, with
    the study's hypotheses now and as they were at its first launch (kept once, never overwritten)."""
    source = SWEEPS_DIR / f"{sweep.name}.yaml"
    directory = sweep_dir(cells[0].config.runs_dir, sweep.name)
    registered = read_json(directory / HYPOTHESES)
    if registered is None and sweep.hypotheses:
        registered = {"fingerprint": hypotheses.fingerprint(sweep.hypotheses), "hypotheses": sweep.hypotheses}
        write_json(directory / HYPOTHESES, registered)
    grid = {
        "sweep": sweep.name,
        "file": source.name,
        "file_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "fixed": sweep.fixed,
        "axes": sweep.blocks,
        "cells": {cell.id: cell.config_hash for cell in cells},
        "hypotheses": sweep.hypotheses,
        "registered_hypotheses": registered,
    }
    write_json(directory / GRID, grid)


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
        return dict(state_counts(c.state() for c in self.cells))

    def refresh(self) -> None:
        states = {c.id: c.state() for c in self.cells}
        tally = state_counts(states.values())
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
