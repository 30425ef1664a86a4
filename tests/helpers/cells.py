"""Shared test helpers: the smoke-sized cell overrides, a tiny alchemy task, and CLI/cell runners."""

import subprocess
import sys
from pathlib import Path

from catalyst_ttt.config import compose_cell
from catalyst_ttt.pipeline import run_cell
from catalyst_ttt.sweep import load_sweep
from catalyst_ttt.tasks.alchemy import Alchemy, AlchemyConfig

CTTT = str(Path(sys.executable).with_name("cttt"))
# sweeps/smoke.yaml's settings: a cell that runs in seconds.
SMOKE = [o for o in load_sweep("smoke", []).fixed if not o.startswith("sweep=")]
# Short elements and at most two ops: a small model learns the format in seconds.
TASK = Alchemy(
    AlchemyConfig(
        length=2,
        max_ops=2,
        n_train=300,
        n_reader=32,
        n_id=8,
        n_heldout=8,
        n_shift=4,
        n_base_single=10,
        n_base_chain=10,
        n_base_answer_only=10,
    )
)
SPLITS = TASK.splits()


def run(overrides: list[str]) -> dict:
    return run_cell(compose_cell(overrides))


def cttt(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CTTT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
