"""The hashes that key every cached checkpoint and finished cell: of a config, of a file's content, and of
the source that computes cells. Imports nothing of the package, so the cache, the config and the
aggregation all hash alike."""

from __future__ import annotations

import functools
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


def config_hash(node: Any) -> str:
    return hashlib.sha256(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, hashed once per process while its mtime and size stay."""
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:  # mtime and size key the cache
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Modules that never change what a cell computes, only how cells are configured, launched, stored, judged
# and presented: editing them keeps every cached checkpoint and finished cell. Every other module counts.
NOT_COMPUTING = (
    "__main__.py",
    "bench.py",
    "cache.py",
    "cli.py",
    "config.py",
    "errors.py",
    "gpu_check.py",
    "hashing.py",
    "hypotheses.py",
    "metrics/aggregate.py",
    "metrics/statistics.py",
    "quiet.py",
    "registry.py",
    "report",
    "results.py",
    "simulation.py",
    "sweep.py",
    "tracking.py",
)


@functools.cache
def code_fingerprint() -> str:
    """The package version and a hash of the source that computes cells, for cache keys and cell hashes."""
    try:
        release = version("catalyst-ttt")
    except PackageNotFoundError:
        release = "unreleased"
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name = path.relative_to(PACKAGE_DIR).as_posix()
        if not name.startswith(NOT_COMPUTING):
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return f"{release}+{digest.hexdigest()[:12]}"
