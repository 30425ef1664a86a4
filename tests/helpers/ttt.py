"""Test-time training of a given model on given problems, outside a cell (no cache, no W&B)."""

from pathlib import Path

from catalyst_ttt.config import compose_cell
from catalyst_ttt.evaluation import Trajectory
from catalyst_ttt.pipeline import anchor_of, train_at_test_time
from catalyst_ttt.signals import SIGNALS
from catalyst_ttt.tracking import Tracker
from catalyst_ttt.training import grpo, make_reward_function
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
    anchor, _ = anchor_of(cfg, [])
    train_at_test_time(
        cfg, task, problems, model, tokenizer, lambda step: trajectory.record(step, model), tracker, anchor
    )
    return trajectory


def reward_function(cfg, problems, model, tokenizer, task=TASK):
    """The TRL reward function of `cfg`'s signal on `problems`, as a cell builds it."""
    by_prompt = {p.prompt: p for p in problems}
    signal = SIGNALS.get(cfg.signal.name)
    return make_reward_function(
        signal, task, by_prompt, model, tokenizer, signal_cfg=cfg.signal, ttt=cfg.ttt, seed=cfg.seed
    )


def run_grpo(cfg, model, tokenizer, problems, callbacks, catalyst_rows=()) -> None:
    """GRPO on `problems` (the tiny alchemy's) with `cfg`'s signal and its anchor resolved as a cell resolves
    it, replaying `catalyst_rows`."""
    anchor, _ = anchor_of(cfg, list(catalyst_rows))
    grpo(
        model,
        tokenizer,
        [p.prompt for p in problems],
        reward_function(cfg, problems, model, tokenizer),
        TASK.max_completion_chars,
        callbacks,
        ttt=cfg.ttt,
        anchor=anchor,
        seed=cfg.seed,
        trust_remote_code=cfg.model.trust_remote_code,
    )
