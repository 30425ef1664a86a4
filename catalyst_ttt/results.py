"""The local results store: runs/<sweep>/<cell>/ with config, status, result and trajectory."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import BaseFileLock, FileLock, SoftFileLock, Timeout

from catalyst_ttt.errors import UserError

RESULT, STATUS, TRAJECTORY, CONFIG, SAMPLES = (
    "result.json",
    "status.json",
    "trajectory.json",
    "config.yaml",
    "samples.json",
)
GRID = "grid.json"  # runs/<sweep>/grid.json: the grid the last `cttt sweep` of that name ran
GATED = "gated"  # finished before TTT: the start does not beat its base (checkpoints.floor_gate)
COMPLETE = ("done", "diverged", GATED)  # a cell in one of these states is never run again
FINAL = (*COMPLETE, "failed", "interrupted")  # the statuses a run of a cell ends with
LOCKS = ".locks"  # beside the cells: starting a cell clears its directory, never its lock
HOST = socket.gethostname()
# A sweep or cell name becomes a directory under runs_dir: one plain path component, short enough
# for every file system (255 bytes) with the cell ids and lock files placed below it.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")
NAME_LIMIT = 100


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    The file is created with mode 0666 less the umask, as `open` creates files (mkstemp's 0600 would
    hide results from the rest of a team sharing the store)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default, allow_nan=True))


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path):
    """The file's JSON, or None when it is missing or not JSON (not UTF-8, truncated, nested too deeply)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


Number = (int, float)
# What the store's readers (status, the report, the aggregation) take from each file: dotted path -> type.
# A file without it is damaged: named and left out, so one bad cell never stops a status or a report.
FIELDS = {
    RESULT: {
        "cell": str,
        "config_hash": str,
        "status": str,
        "axes.seed": int,
        "axes.regime": str,
        "axes.signal": str,
        "config.metrics.stability": dict,
    },
    STATUS: {"phase": str, "host": str, "pid": int},
    GRID: {"file": str, "file_sha256": str, "cells": dict},
}
DONE_FIELDS = {  # what a finished cell adds, read by every table of the report
    "metrics.id.acc/greedy": Number,
    "pre_ttt.acc/greedy": Number,
    "pre_ttt.base_acc/greedy": Number,
    "pre_ttt.process/step_validity": Number,
    "stab": dict,
    "items": dict,
}
TRAJECTORY_ROW = {"step": int, "id.acc": Number}


def _has(data, fields: dict) -> bool:
    for path, kind in fields.items():
        node = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, kind) or isinstance(node, bool):
            return False
    return True


def _well_formed(name: str, data) -> bool:
    if name == TRAJECTORY:
        return isinstance(data, list) and all(_has(row, TRAJECTORY_ROW) for row in data)
    if not _has(data, FIELDS[name]):
        return False
    if name == RESULT:
        return data["status"] in FINAL and (data["status"] != "done" or _has(data, DONE_FIELDS))
    if name == GRID:
        return all(isinstance(v, str) for v in data["cells"].values())
    return True


def read_record(path: Path):
    """A store file (result, status, trajectory or grid .json) as its readers rely on it, or None
    when it is missing or damaged."""
    data = read_json(path)
    return data if data is not None and _well_formed(path.name, data) else None


SOFT_LOCKS = "CTTT_SOFT_LOCKS"  # =1: lock files created with O_EXCL, for file systems without fcntl locks


def new_lock(path: Path) -> BaseFileLock:
    """An fcntl lock, released when its process dies; a soft lock where the file system has none."""
    return (SoftFileLock if os.environ.get(SOFT_LOCKS) == "1" else FileLock)(str(path))


class LockTimeout(UserError):
    """Another process held a lock for longer than `lock_timeout`."""


def acquire(lock: BaseFileLock, timeout: float, what: str, holder: str = "") -> None:
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockTimeout(
            f"waited {timeout:g} s for {what} ({lock.lock_file}{', held by ' + holder if holder else ''}); "
            "raise lock_timeout, or delete the lock file if its holder is gone"
        ) from None


class CellDir:
    def __init__(self, runs_dir: str | Path, sweep: str, cell: str):
        self.path = Path(runs_dir) / sweep / cell
        self.cell = cell
        self.lock_path = Path(runs_dir) / sweep / LOCKS / f"{cell}.lock"
        self._lock: BaseFileLock | None = None

    def result(self) -> dict | None:
        return read_record(self.path / RESULT)

    def status(self) -> dict | None:
        return read_record(self.path / STATUS)

    def is_done(self, config_hash: str) -> bool:
        result = self.result()
        return bool(result) and result.get("status") in COMPLETE and result.get("config_hash") == config_hash

    def claim(self, config_hash: str, timeout: float) -> bool:
        """Hold this cell's lock until `release`: the same cell never runs twice at once.
        Waits for another process running it; False when that process finished it meanwhile."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = new_lock(self.lock_path)
        status = self.status()
        holder = f"{status['host']}:{status['pid']}" if status else ""
        acquire(self._lock, timeout, f"cell {self.cell}", holder)
        if self.is_done(config_hash):
            self.release()
            return False
        return True

    def release(self) -> None:
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()

    def start(self, config_yaml: str) -> None:
        """Begin (or restart) the cell: whatever an interrupted run left is removed first."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        write_atomic(self.path / CONFIG, config_yaml)

    def set_status(self, phase: str, **extra) -> None:
        write_json(self.path / STATUS, {"phase": phase, "host": HOST, "pid": os.getpid(), "time": time.time(), **extra})

    def state(self, config_hash: str) -> str:
        """done / diverged / failed / running:<phase> / stale:<phase> / pending."""
        result = self.result()
        if result and result.get("config_hash") == config_hash:
            return result["status"]
        status = self.status()
        if not status or status.get("phase") in FINAL:
            return "pending"
        return f"{'stale' if self.is_stale(status) else 'running'}:{status['phase']}"

    def is_stale(self, status: dict) -> bool:
        """The process that wrote `status` is gone: on this host its pid is dead; elsewhere its cell lock is free."""
        if status["host"] == HOST:
            return not _pid_alive(status["pid"])
        if not self.lock_path.exists() or os.environ.get(SOFT_LOCKS) == "1":
            return False  # no lock that dies with its holder to ask: assume running
        probe = FileLock(str(self.lock_path))
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return False
        probe.release()
        return True

    def write(self, name: str, data) -> None:
        write_json(self.path / name, data)


def state_counts(states: Iterable[str]) -> Counter:
    """How many cells are in each state (`CellDir.state`), with running/stale counted whatever their phase."""
    return Counter(state.split(":")[0] for state in states)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -1, 0) would ask about a whole process group, not one process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def check_name(name: str, what: str) -> None:
    """A name that becomes a directory must stay one component inside its parent."""
    text = str(name)
    if len(text) > NAME_LIMIT:
        raise UserError(f"{what}={text[:20]!r}... is not valid; it has {len(text)} characters, at most {NAME_LIMIT}")
    if not SAFE_NAME.fullmatch(text) or ".." in text:
        raise UserError(f"{what}={name!r} is not valid; use letters, digits and _ . = - (no '/', no '..')")


def sweep_dir(runs_dir: str | Path, sweep: str) -> Path:
    """A sweep's directory, which must stay inside runs_dir."""
    check_name(sweep, "sweep")
    return Path(runs_dir) / sweep


def cell_dirs(runs_dir: str | Path, sweep: str) -> list[CellDir]:
    """Every cell that has started in a sweep's directory, finished or not."""
    root = sweep_dir(runs_dir, sweep)
    return [CellDir(runs_dir, sweep, p.parent.name) for p in sorted(root.glob(f"*/{CONFIG}"))]


@dataclass
class Store:
    results: list[dict]
    corrupt: list[Path]  # store files that are damaged (read_record): reported, never silently dropped


def read_store(runs_dir: str | Path, sweep: str) -> Store:
    """Every cell's result in a sweep, and the paths of the store's damaged files (results, statuses,
    trajectories, the grid), read cell by cell: a damaged file is named and the rest is read."""
    root = sweep_dir(runs_dir, sweep)
    if not root.is_dir():
        raise UserError(f"no results for sweep {sweep!r}: {root} does not exist; run `cttt sweep {sweep}` first")
    store = Store([], [])
    files = [root / GRID, *(path for name in (RESULT, STATUS, TRAJECTORY) for path in root.glob(f"*/{name}"))]
    for path in sorted(files):
        record = read_record(path)
        if record is None and path.exists():
            store.corrupt.append(path)
        elif path.name == RESULT:
            store.results.append(record)
    return store


def check_directory(directory: str | Path, key: str, writable: bool = False) -> None:
    """`directory` (`runs_dir`, `cache_dir`) is a directory or can be made one, with no file in the way;
    with `writable`, this user can write there."""
    path = Path(directory)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{key}={str(path)!r} is not valid: {probe} is a file; give a directory")
    if writable and not os.access(probe, os.W_OK):
        raise UserError(f"cannot write to {path}: {probe} is not writable")
