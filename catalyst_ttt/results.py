"""The local results store: runs/<sweep>/<cell>/ with config, status, result and trajectory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from catalyst_ttt.errors import UserError

RESULT, STATUS, TRAJECTORY, CONFIG, SAMPLES = (
    "result.json",
    "status.json",
    "trajectory.json",
    "config.yaml",
    "samples.json",
)
GRID = "grid.json"  # runs/<sweep>/grid.json: the grid the last `cttt sweep` of that name ran


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default, allow_nan=True))


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class CellDir:
    def __init__(self, runs_dir: str | Path, sweep: str, cell: str):
        self.path = Path(runs_dir) / sweep / cell
        self.cell = cell

    def result(self) -> dict | None:
        return read_json(self.path / RESULT)

    def is_done(self, config_hash: str) -> bool:
        result = self.result()
        return (
            bool(result) and result.get("status") in ("done", "diverged") and result.get("config_hash") == config_hash
        )

    def start(self, config_yaml: str) -> None:
        """Begin (or restart) the cell: whatever an interrupted run left is removed first."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        write_atomic(self.path / CONFIG, config_yaml)

    def set_status(self, phase: str, **extra) -> None:
        write_json(self.path / STATUS, {"phase": phase, "pid": os.getpid(), **extra})

    def write(self, name: str, data) -> None:
        write_json(self.path / name, data)


def sweep_dir(runs_dir: str | Path, sweep: str) -> Path:
    return Path(runs_dir) / sweep


@dataclass
class Store:
    results: list[dict]
    corrupt: list[Path]  # result.json files that are not a readable result: reported, never silently dropped


def read_store(runs_dir: str | Path, sweep: str) -> Store:
    """Every cell's result.json in a sweep, and the paths of those that cannot be read."""
    root = sweep_dir(runs_dir, sweep)
    if not root.is_dir():
        raise UserError(f"no results for sweep {sweep!r}: {root} does not exist; run `cttt sweep {sweep}` first")
    store = Store([], [])
    for path in sorted(root.glob(f"*/{RESULT}")):
        result = read_json(path)
        if isinstance(result, dict) and {"status", "axes"} <= set(result):
            store.results.append(result)
        else:
            store.corrupt.append(path)
    return store


def load_results(runs_dir: str | Path, sweep: str) -> list[dict]:
    return read_store(runs_dir, sweep).results


def check_writable(directory: str | Path) -> None:
    path = Path(directory)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write to {path}: {probe} is not writable")
