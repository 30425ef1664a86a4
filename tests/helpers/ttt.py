"""Test-time training of a given model on given problems, outside a cell (no cache, no W&B)."""

from pathlib import Path

from catalyst_ttt.config import compose_cell
from catalyst_ttt.evaluation import Trajectory
from catalyst_ttt.pipeline import train_at_test_time
from catalyst_ttt.tracking import Tracker
from helpers.cells import SPLITS, TASK

# Four short GRPO steps with a large learning rate: every signal moves the weights.
QUICK_TTT = [
    "ttt.steps=4",
    "ttt.prompts_per_step=4",
    "ttt.num_generations=4",
    "ttt.lr=1e-2",
    "ttt.eval_every=2",
    "signal.samples=4",
    "signal.rounds=1",
]


def train_on(model, tokenizer, problems, overrides: list[str], directory: Path, task=TASK) -> Trajectory:
    """Run `train_at_test_time` on `model` in place (on `task`, by default the tiny alchemy); returns the
    recorded trajectory."""
    cfg = compose_cell([*QUICK_TTT, *overrides])
    tracker = Tracker(
        mode="disabled", project="", entity=None, group="", job_type="", name="", config={}, directory=directory
    )
    trajectory = Trajectory(
        task, {"id": problems, "heldout": SPLITS["heldout"]}, cfg.eval, cfg.seed, tokenizer, tracker
    )
    train_at_test_time(cfg, task, problems, model, tokenizer, lambda step: trajectory.record(step, model), tracker)
    return trajectory
