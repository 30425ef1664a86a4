"""Shared test helpers: the smoke-sized cell overrides, a tiny alchemy task, and CLI/cell runners."""

import subprocess
import sys
from pathlib import Path

from datasets import Dataset

from catalyst_ttt.config import compose_cell
from catalyst_ttt.models import char_tokenizer, new_tiny_model
from catalyst_ttt.pipeline import run_cell
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.schema import ModelConfig
from catalyst_ttt.sweep import load_sweep
from catalyst_ttt.tasks.alchemy import Alchemy, AlchemyConfig
from catalyst_ttt.training import sft

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


def format_taught(steps: int):
    """A tiny model (and its tokenizer) SFT'd `steps` steps on correct traces of TASK's train split."""
    tokenizer = char_tokenizer()
    model = new_tiny_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tokenizer, 0)
    rows = REGIMES.get("correct")(SPLITS["train"], TASK, None, 0)
    sft(model, tokenizer, Dataset.from_list(rows), steps=steps, batch_size=32, lr=3e-3, seed=0, max_length=96)
    return model, tokenizer


def run(overrides: list[str]) -> dict:
    return run_cell(compose_cell(overrides))


def cttt(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CTTT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
