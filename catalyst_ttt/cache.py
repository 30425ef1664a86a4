"""Phase cache: base and catalyst checkpoints shared by every cell that needs them.

A checkpoint is built in a temporary directory and renamed into place under a file lock, so
parallel cells never build the same one twice and a killed job never leaves one that looks done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock

from catalyst_ttt.config import config_hash

LOG = "trainings.jsonl"


def cached_checkpoint(
    cache_dir: str | Path, kind: str, key_data: dict, build: Callable[[Path], None], owner: str
) -> tuple[Path, bool]:
    """The checkpoint for `key_data`, built by `build(tmp_dir)` if absent; returns (path, built)."""
    root = Path(cache_dir) / kind
    root.mkdir(parents=True, exist_ok=True)
    key = config_hash(key_data)
    final = root / key
    if final.is_dir():
        return final, False
    with FileLock(str(root / f"{key}.lock")):
        if final.is_dir():
            return final, False
        for stale in root.glob(f".{key}.tmp-*"):  # left by a killed job; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        started = time.time()
        build(tmp)
        (tmp / "key.json").write_text(json.dumps(key_data, indent=2, sort_keys=True, default=str))
        os.rename(tmp, final)
        with open(Path(cache_dir) / LOG, "a") as log:
            log.write(json.dumps({"kind": kind, "key": key, "owner": owner, "seconds": time.time() - started}) + "\n")
    return final, True


def cached_keys(cache_dir: str | Path, kind: str) -> set[str]:
    root = Path(cache_dir) / kind
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()
