"""Evaluation is faithful and side-effect free: batching changes nothing, and evaluating never
moves the random stream that test-time training samples from."""

import copy

import pytest
import torch

import catalyst_ttt.pipeline as pipeline
from catalyst_ttt.generation import generate
from helpers.cells import SPLITS, TASK
from helpers.ttt import train_on


def test_batched_greedy_generation_equals_one_prompt_at_a_time(taught):
    model, tokenizer = taught
    prompts = [p.prompt for split in ("id", "heldout", "shift_length", "shift_format") for p in SPLITS[split]]
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    batched = generate(model, tokenizer, prompts, TASK.max_completion_chars, batch_size=512)
    alone = generate(model, tokenizer, prompts, TASK.max_completion_chars, batch_size=1)
    assert batched == alone


def _weights_after_ttt(taught_once, tmp_path, *overrides: str) -> dict:
    model, tokenizer = taught_once
    model = copy.deepcopy(model)
    train_on(model, tokenizer, SPLITS["id"], ["signal=majority", *overrides], tmp_path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_trajectory_never_changes_what_ttt_trains(taught_once, tmp_path):
    without = _weights_after_ttt(taught_once, tmp_path, "eval.trajectory=false")
    for every in ("ttt.eval_every=1", "ttt.eval_every=3"):
        with_trajectory = _weights_after_ttt(taught_once, tmp_path, every)
        assert all(torch.equal(without[k], with_trajectory[k]) for k in without), every


@pytest.fixture
def completions_seen(monkeypatch):
    """The completions GRPO scores at each call of the reward, per run."""
    seen: list[list[str]] = []
    make = pipeline.make_reward_function

    def recording(*args, **kwargs):
        reward = make(*args, **kwargs)

        def wrapped(prompts, completions, **kw):
            seen[-1].append(list(completions))
            return reward(prompts, completions, **kw)

        wrapped.__name__ = reward.__name__
        return wrapped

    monkeypatch.setattr(pipeline, "make_reward_function", recording)
    return seen


def test_cell_seeds_sample_different_streams_throughout(taught_once, tmp_path, completions_seen):
    for seed in (0, 1):
        completions_seen.append([])
        _weights_after_ttt(taught_once, tmp_path, f"seed={seed}", "ttt.eval_every=1")
    first, second = completions_seen
    assert len(first) == len(second) == 4
    assert all(a != b for a, b in zip(first, second))  # also after each trajectory evaluation
