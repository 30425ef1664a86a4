"""Sweeps: a named grid of cells from `sweeps/NAME.yaml`, launched as a Hydra multirun."""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from catalyst_ttt.config import CONF_DIR, cell_id, compose_cell, config_hash, semantic_dict
from catalyst_ttt.errors import UserError
from catalyst_ttt.results import GRID, RESULT, STATUS, read_json, sweep_dir, write_json

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
SWEEP_KEYS = {"description", "axes", "overrides"}
FINISHED = ("done", "diverged", "failed")


@dataclass
class Cell:
    id: str
    overrides: list[str]
    config: DictConfig
    config_hash: str

    def state(self) -> str:
        """done / diverged / failed / running:<phase> / pending, from the results store."""
        path = Path(self.config.runs_dir) / self.config.sweep / self.id
        result = read_json(path / RESULT)
        if result and result.get("config_hash") == self.config_hash:
            return result["status"]
        status = read_json(path / STATUS)
        return f"running:{status['phase']}" if status else "pending"


@dataclass
class Sweep:
    name: str
    description: str
    axes: dict[str, list[str]]
    fixed: list[str]
    hydra_args: list[str] = field(default_factory=list)

    def grid(self) -> list[list[str]]:
        keys = list(self.axes)
        return [
            self.fixed + [f"{k}={v}" for k, v in zip(keys, values)]
            for values in itertools.product(*(self.axes[k] for k in keys))
        ]

    def cells(self) -> list[Cell]:
        """Every cell composed and validated: a bad name or value fails here, before compute."""
        out = []
        for overrides in self.grid():
            cfg = compose_cell(overrides)
            out.append(Cell(cell_id(cfg), overrides, cfg, config_hash(semantic_dict(cfg))))
        return out

    def multirun_argv(self) -> list[str]:
        axes = [f"{k}={','.join(v)}" for k, v in self.axes.items()]
        return ["cttt", "--multirun", *self.fixed, *axes, *self.hydra_args]


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def load_sweep(name: str, cli_overrides: list[str], jobs: int | None = None) -> Sweep:
    """The sweep file plus command-line overrides: `key=a,b` sets that axis, `key=v` fixes it."""
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown sweep {name!r}; valid: {', '.join(available_sweeps())}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or set(spec) - SWEEP_KEYS:
        raise UserError(f"{path}: top-level keys must be among {sorted(SWEEP_KEYS)}")
    axes = {
        str(k): [str(v) for v in (vals if isinstance(vals, list) else [vals])]
        for k, vals in (spec.get("axes") or {}).items()
    }
    fixed = {str(k): str(v) for k, v in (spec.get("overrides") or {}).items()}
    hydra_args = []
    for token in cli_overrides:
        key, eq, value = token.partition("=")
        if not eq:
            raise UserError(f"override {token!r} is not key=value")
        if key.startswith("hydra"):
            hydra_args.append(token)
        elif "," in value and not value.startswith("["):
            axes[key] = value.split(",")
            fixed.pop(key, None)
        else:
            fixed[key] = value
            axes.pop(key, None)
    if jobs and jobs > 1:
        hydra_args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
        fixed.setdefault("threads", str(max(1, (os.cpu_count() or 1) // jobs)))
    fixed["sweep"] = name
    return Sweep(name, spec.get("description", ""), axes, [f"{k}={v}" for k, v in fixed.items()], hydra_args)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_cell(cfg: DictConfig) -> str:
    """The Hydra task function: one cell per job, whichever launcher runs it."""
    from catalyst_ttt.pipeline import run_cell

    return run_cell(cfg)["status"]


def launch(sweep: Sweep, cells: list[Cell], console: Console) -> dict[str, int]:
    """Run the multirun with a live progress view; returns the count of cells per final state."""
    record_grid(sweep, cells)
    monitor = Monitor(cells, console)
    argv, sys.argv = sys.argv, sweep.multirun_argv()
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
        self._reported = {c.id for c in cells if c.state() in FINISHED}  # finished before this launch
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
        finished = sum(tally[s] for s in FINISHED)
        for cid, state in states.items():  # one line per finished cell: readable in logs too
            if state in FINISHED and cid not in self._reported:
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
