"""Phase cache: base and catalyst checkpoints shared by every cell that needs them.

A checkpoint is built in a temporary directory and renamed into place under a file lock, so
parallel cells never build the same one twice and a killed job never leaves one that looks done.
Its key covers the config that determines it, the content of the task's data file and the code
(`hashing.code_fingerprint`). Before every use, `key.json` must be that key and every file the build
wrote must still hash as it did (`files.json`): a damaged checkpoint is rebuilt, with one warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from catalyst_ttt.hashing import code_fingerprint, config_hash, file_sha256
from catalyst_ttt.results import acquire, new_lock, read_json, write_json

log = logging.getLogger(__name__)
LOG = "trainings.jsonl"
KEY = "key.json"
FILES = "files.json"  # file name -> sha256 of everything the build wrote
WEIGHTS = "model.safetensors"
ABSENT = "absent"


def keyed(key_data: dict) -> dict:
    """What a checkpoint's key is computed from: its config plus the code that builds it."""
    return key_data | {"code": code_fingerprint()}


def cache_key(key_data: dict) -> str:
    return config_hash(keyed(key_data))


def cached_checkpoint(
    cache_dir: str | Path,
    kind: str,
    key_data: dict,
    build: Callable[[Path], None],
    owner: str,
    timeout: float,
) -> tuple[Path, bool]:
    """The checkpoint for `key_data`, built by `build(tmp_dir)` if absent, waiting up to `timeout` seconds
    (`lock_timeout`) for another process building it; returns (path, built)."""
    root = Path(cache_dir) / kind
    root.mkdir(parents=True, exist_ok=True)
    full = keyed(key_data)
    key = config_hash(full)
    final = root / key
    if damage(final, full) is None:
        return final, False
    lock = new_lock(root / f"{key}.lock")
    acquire(lock, timeout, f"the {kind} checkpoint {key} another process is building")
    try:
        problem = damage(final, full)
        if problem is None:
            return final, False
        if problem != ABSENT:
            log.warning("the cached %s checkpoint %s is damaged (%s); rebuilding it", kind, final, problem)
        for stale in [*root.glob(f".{key}.tmp-*"), *([final] if final.exists() else [])]:
            shutil.rmtree(stale, ignore_errors=True)  # a killed build, or a damaged checkpoint
        tmp = root / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.time()
        try:
            build(tmp)
            files = {p.relative_to(tmp).as_posix(): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / FILES).write_text(_canonical(files))
            (tmp / KEY).write_text(_canonical(full))  # last: a directory without it was never finished
            os.rename(tmp, final)
        except BaseException:  # a failed or interrupted build leaves nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = {"kind": kind, "key": key, "owner": owner, "seconds": time.time() - started}
        with open(Path(cache_dir) / LOG, "a") as trainings:
            trainings.write(json.dumps(entry) + "\n")
    finally:
        lock.release()
    return final, True


def damage(path: Path, key_data: dict) -> str | None:
    """What is wrong with the checkpoint at `path` for `key_data`: ABSENT, a damage, or None when its
    key.json is exactly that key and every file the build wrote is there, byte for byte."""
    if not path.exists():
        return ABSENT
    try:
        recorded = (path / KEY).read_text(encoding="utf-8")
    except (OSError, ValueError):
        recorded = None
    if recorded != _canonical(key_data):
        return f"{KEY} is missing or another key"
    files = read_json(path / FILES)
    if not isinstance(files, dict):
        return f"{FILES} is missing or unreadable"
    if WEIGHTS not in files and f"{WEIGHTS}.index.json" not in files:
        return f"no {WEIGHTS}"
    for name, digest in files.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if file_sha256(path / name) != digest:
            return f"{name} is not the file that was built"
    return None


def cache_state(cache_dir: str | Path, kind: str, key_data: dict) -> str:
    """`cached`, `to train`, or `damaged: to rebuild`, as the next run will find the checkpoint."""
    full = keyed(key_data)
    problem = damage(Path(cache_dir) / kind / config_hash(full), full)
    return "cached" if problem is None else "to train" if problem == ABSENT else "damaged: to rebuild"


def _canonical(key_data: dict) -> str:
    return json.dumps(key_data, indent=2, sort_keys=True, default=str)


def cached_keys(cache_dir: str | Path, kind: str) -> set[str]:
    root = Path(cache_dir) / kind
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()


def _beside(directory: Path, name: str, key_data) -> Path:
    return directory / f"{name}-{config_hash(key_data)}.json"


def measured_beside(directory: Path, name: str, key_data):
    """A measurement `beside_checkpoint` kept for this key, or None."""
    return read_json(_beside(directory, name, key_data))


def beside_checkpoint(directory: Path | None, name: str, key_data, compute: Callable[[], dict]) -> dict:
    """`compute()`, kept beside a cached checkpoint's weights as `<name>-<hash of key_data>.json`: a
    measurement of the checkpoint alone is made once, and every cell that starts from it reads it back.
    `directory` None (a checkpoint outside the cache): computed every time."""
    if directory is not None and (known := measured_beside(directory, name, key_data)) is not None:
        return known
    value = compute()
    if directory is not None:
        write_json(_beside(directory, name, key_data), value)
    return value
