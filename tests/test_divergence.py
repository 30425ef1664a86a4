"""NaN anywhere is a divergence: in an SFT loss, in GRPO rewards, or in the logits a phase samples from.
Also: the progress the trainers draw under `cttt run`."""

import io
import math

import pytest
import torch
from datasets import Dataset
from rich.console import Console

from catalyst_ttt import pipeline
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.training import Diverged, divergence_of, sft, training_progress
from helpers.cells import SPLITS, TASK, run


def _poison(model) -> None:
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)


def test_a_nan_sft_loss_stops_the_phase_as_diverged(taught):
    model, tokenizer = taught
    _poison(model)
    rows = REGIMES.get("correct")(SPLITS["train"][:16], TASK, None, 0)
    with pytest.raises(Diverged, match="loss is NaN at SFT step 1"):
        sft(model, tokenizer, Dataset.from_list(rows), steps=3, batch_size=8, lr=1e-3, seed=0, max_length=96)


def test_sampling_from_nan_probabilities_is_a_divergence_not_a_failure():
    with pytest.raises(RuntimeError) as raised:
        torch.multinomial(torch.tensor([math.nan, 1.0]), 1)  # what sampling from NaN logits dies of
    assert isinstance(divergence_of(raised.value), Diverged)
    assert divergence_of(RuntimeError("CUDA out of memory")) is None


def test_a_cell_whose_model_turns_nan_is_recorded_diverged(tiny, monkeypatch, untrained_base):
    load = pipeline.load_pretrained

    def nan_start_point(reference, *args, **kwargs):
        model, tokenizer = load(reference, *args, **kwargs)
        if "/catalyst/" in str(reference):
            _poison(model)
        return model, tokenizer

    monkeypatch.setattr(pipeline, "load_pretrained", nan_start_point)
    result = run(tiny(*untrained_base, "regime=correct", "signal=majority", "metrics.ig.enabled=false"))
    assert result["status"] == "diverged", result.get("error")
    assert "NaN" in result["error"]


def test_training_under_cttt_run_draws_progress_with_an_eta(taught):
    model, tokenizer = taught
    screen = io.StringIO()
    rows = REGIMES.get("correct")(SPLITS["train"][:16], TASK, None, 0)
    with training_progress(Console(file=screen, force_terminal=True, width=160)):
        sft(model, tokenizer, Dataset.from_list(rows), steps=3, batch_size=8, lr=1e-3, seed=0, max_length=96)
    assert "SFT 3 steps" in screen.getvalue() and "3/3" in screen.getvalue() and "ETA" in screen.getvalue()
