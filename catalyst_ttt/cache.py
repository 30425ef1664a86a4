"""Phase cache: base and catalyst checkpoints shared by every cell that needs them.

A checkpoint is built in a temporary directory and renamed into place under a file lock, so
parallel cells never build the same one twice and a killed job never leaves one that looks done.
Its key covers the config that determines it, the content of the task's data file and the code
(`config.code_fingerprint`); `key.json` beside the weights is checked before every use.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from catalyst_ttt.config import code_fingerprint, config_hash
from catalyst_ttt.results import acquire, new_lock, read_json, write_json

LOG = "trainings.jsonl"
KEY = "key.json"
WEIGHTS = "model.safetensors"


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
    timeout: float = 14400.0,
) -> tuple[Path, bool]:
    """The checkpoint for `key_data`, built by `build(tmp_dir)` if absent; returns (path, built)."""
    root = Path(cache_dir) / kind
    root.mkdir(parents=True, exist_ok=True)
    full = keyed(key_data)
    key = config_hash(full)
    final = root / key
    if _intact(final, full):
        return final, False
    lock = new_lock(root / f"{key}.lock")
    acquire(lock, timeout, f"the {kind} checkpoint {key} another process is building")
    try:
        if _intact(final, full):
            return final, False
        for stale in [*root.glob(f".{key}.tmp-*"), *([final] if final.exists() else [])]:
            shutil.rmtree(stale, ignore_errors=True)  # a killed build, or a checkpoint that fails its key
        tmp = root / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.time()
        build(tmp)
        (tmp / KEY).write_text(_canonical(full))
        os.rename(tmp, final)
        with open(Path(cache_dir) / LOG, "a") as log:
            log.write(json.dumps({"kind": kind, "key": key, "owner": owner, "seconds": time.time() - started}) + "\n")
    finally:
        lock.release()
    return final, True


def _intact(path: Path, key_data: dict) -> bool:
    """A finished checkpoint whose key.json is exactly the key it is asked for, with its weights."""
    try:
        recorded = (path / KEY).read_text()
    except OSError:
        return False
    weights = (path / WEIGHTS).is_file() or (path / f"{WEIGHTS}.index.json").is_file()
    return recorded == _canonical(key_data) and weights


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
