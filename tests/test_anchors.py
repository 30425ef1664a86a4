"""Anchors (`ttt.anchor`) and the label-free early warning: config rules, replay batches, real TRL
GRPO runs with a KL reference and with catalyst replay, and the predictor on hand-made step logs."""

import math
import re

import pytest
import torch

from catalyst_ttt.anchors import DEFAULT_BETA, DEFAULT_REPLAY_WEIGHT, kl_beta, replay_weight
from catalyst_ttt.config import compose_cell
from catalyst_ttt.errors import UserError
from catalyst_ttt.metrics.stability import early_warning, predictor_step
from catalyst_ttt.models import load_pretrained, save_checkpoint
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.training import ReplayBatches, StepHook
from helpers.cells import SPLITS, TASK, run
from helpers.ttt import QUICK_TTT, run_grpo

# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, beta, weight",
    [
        ([], 0.0, 0.0),
        (["ttt.anchor=kl"], DEFAULT_BETA, 0.0),
        (["ttt.anchor=kl", "ttt.beta=0.2"], 0.2, 0.0),
        (["ttt.anchor=replay"], 0.0, DEFAULT_REPLAY_WEIGHT),
        (["ttt.anchor=kl+replay", "ttt.replay_weight=0.5"], DEFAULT_BETA, 0.5),
    ],
)
def test_each_anchor_resolves_its_own_weights(overrides, beta, weight):
    ttt = compose_cell(overrides).ttt
    assert (kl_beta(ttt), replay_weight(ttt)) == (beta, weight)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ttt.anchor=ema"], "ttt.anchor='ema' is not valid; valid: none, kl, replay, kl+replay"),
        (["ttt.beta=0.1"], "ttt.beta=0.1 needs an anchor with kl; set ttt.anchor=kl or kl+replay"),
        (["ttt.anchor=replay", "ttt.beta=0.1"], "ttt.beta=0.1 needs an anchor with kl"),
        (["ttt.anchor=kl", "ttt.beta=0"], "ttt.beta=0.0 is not valid with ttt.anchor=kl; it must be > 0 (unset: 0.04)"),
        (["ttt.replay_weight=2"], "ttt.replay_weight=2.0 needs an anchor with replay"),
        (["ttt.anchor=kl+replay", "ttt.replay_weight=0"], "ttt.replay_weight=0.0 is not valid with ttt.anchor=kl"),
        (
            ["ttt.anchor=replay", "ttt.replay_weight=-1"],
            "ttt.replay_weight=-1.0 is not valid; it must be finite and >= 0",
        ),
        (["ttt.anchor=kl", "signal=self_sft"], "ttt.anchor=kl anchors GRPO, which signal self_sft does not train with"),
    ],
)
def test_bad_anchor_settings_are_one_line_user_errors(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        compose_cell(overrides)
    assert "\n" not in str(caught.value)


def test_the_anchor_is_an_axis_of_the_cell():
    from catalyst_ttt.config import axes_of

    assert axes_of(compose_cell(["ttt.anchor=replay"]))["anchor"] == "replay"
    assert axes_of(compose_cell([]))["anchor"] == "none"


# -- replay batches ----------------------------------------------------------------------


def test_replay_batches_train_on_the_completion_and_eos_and_cycle_every_row(taught):
    _, tokenizer = taught
    rows = [{"prompt": "AB rot:", "completion": "rot AB>FG#FG"}, {"prompt": "C inc:", "completion": "#D"}]
    batches = ReplayBatches(rows, tokenizer, batch_size=1, max_length=64, seed=0)
    seen = []
    for _ in range(4):
        batch = batches.next("cpu")
        ids, labels, mask = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
        text = tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        prompt = next(r["prompt"] for r in rows if text.startswith(r["prompt"]))
        trained = labels[labels != -100].tolist()
        assert tokenizer.decode(trained[:-1]) == text[len(prompt) :] and trained[-1] == tokenizer.eos_token_id
        assert (labels[: len(prompt)] == -100).all()
        seen.append(prompt)
    assert sorted(seen[:2]) == sorted(seen[2:]) == sorted(r["prompt"] for r in rows)  # each row once per pass
    wide = ReplayBatches(rows, tokenizer, batch_size=8, max_length=5, seed=0).next("cpu")
    assert wide["input_ids"].shape == (2, 5)  # the batch never exceeds the rows; rows cut to max_length


# -- anchors in real GRPO runs -----------------------------------------------------------


def _anchored_run(taught, tmp_path, overrides: list[str], rows: list[dict] = ()) -> tuple[list[dict], object]:
    """GRPO from a saved start checkpoint (where TRL builds its KL reference from); returns the step logs."""
    model, tokenizer = taught
    save_checkpoint(model, tokenizer, tmp_path / "start")
    model, tokenizer = load_pretrained(str(tmp_path / "start"))
    cfg = compose_cell([*QUICK_TTT, "signal=majority", "catalyst.batch_size=8", *overrides])
    logs: list[dict] = []
    hook = StepHook(on_log=lambda step, data: logs.append(data | {"step": step}), on_eval=lambda s: None, every=100)
    run_grpo(cfg, model, tokenizer, SPLITS["id"], [hook], rows)
    return logs, model


def test_kl_anchor_measures_the_distance_from_the_start_checkpoint(taught, tmp_path):
    logs, _ = _anchored_run(taught, tmp_path, ["ttt.anchor=kl", "ttt.beta=0.5"])
    kl = [row["ttt/kl"] for row in logs if "ttt/kl" in row]
    assert len(kl) == 4
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # the reference is the policy TTT starts from
    assert kl[-1] > 1e-4  # and the policy moved away from it


def _catalyst_nll(model, tokenizer, rows: list[dict]) -> float:
    batch = ReplayBatches(rows, tokenizer, batch_size=len(rows), max_length=96, seed=0).next("cpu")
    with torch.no_grad():
        return model(**batch).loss.item()


def test_replay_anchor_adds_the_catalyst_nll_to_every_step(taught, tmp_path):
    rows = REGIMES.get("correct")(SPLITS["train"][:32], TASK, None, 0)
    replayed, replay_model = _anchored_run(
        taught, tmp_path / "replay", ["ttt.anchor=replay", "ttt.replay_weight=5"], rows
    )
    plain, plain_model = _anchored_run(taught, tmp_path / "plain", [])
    nll = [row["ttt/replay_nll"] for row in replayed if "ttt/replay_nll" in row]
    assert len(nll) == 4 and all(math.isfinite(v) and v > 0 for v in nll)
    assert not any("ttt/replay_nll" in row for row in plain)
    tokenizer = taught[1]
    assert _catalyst_nll(replay_model, tokenizer, rows) < _catalyst_nll(plain_model, tokenizer, rows)


# -- early warning -----------------------------------------------------------------------


def _log(ratios: list[float], distinct: list[float]) -> list[dict]:
    """Step logs as the tracker keeps them (steps 1, 2, ...), with a trajectory row in between."""
    rows = [
        {"ttt/step": step, "ttrl/majority_ratio": r, "ttt/distinct_answers": d}
        for step, (r, d) in enumerate(zip(ratios, distinct), start=1)
    ]
    return [{"ttt/step": 0, "traj/id/acc": 0.5}, *rows]


def test_the_predictor_fires_when_votes_converge_while_answers_narrow():
    ratios = [0.4, 0.4, 0.4, 0.45, 0.5, 0.5, 0.6, 0.7]
    distinct = [4.0, 4.0, 4.0, 3.6, 3.4, 3.0, 2.6, 2.0]
    # first window: ratio 0.4, distinct 4. Window ending at step 6: ratio 0.483 (+0.083), no;
    # step 7: ratio 0.533 (+0.133) and distinct 3.0 <= 0.75 * 4: fires
    assert predictor_step(_log(ratios, distinct)) == 7
    assert early_warning(10, _log(ratios, distinct)) == {"stab/predictor_step": 7, "stab/warning_lead": 3}
    assert early_warning(5, _log(ratios, distinct))["stab/warning_lead"] == -2  # it fired after the collapse
    assert early_warning(None, _log(ratios, distinct))["stab/warning_lead"] is None


def test_the_predictor_needs_both_signs_and_two_windows():
    rising = [0.4, 0.4, 0.4, 0.8, 0.8, 0.8]
    assert predictor_step(_log(rising, [4.0] * 6)) is None  # votes converge, diversity holds
    assert predictor_step(_log([0.4] * 6, [4.0, 4.0, 4.0, 1.0, 1.0, 1.0])) is None  # diversity falls alone
    assert predictor_step(_log(rising[:5], [4.0, 4.0, 4.0, 1.0, 1.0])) is None  # no second full window
    assert predictor_step(_log(rising, [4.0, 4.0, 4.0, 1.0, 1.0, 1.0])) == 6
    assert early_warning(None, []) == {"stab/predictor_step": None, "stab/warning_lead": None}


# -- end to end --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "regime, signal, anchor",
    [
        ("correct", "cross_view", "kl"),
        ("correct", "guarded_majority", "replay"),
        ("correct", "majority_x_process", "kl+replay"),
        ("none", "majority", "replay"),
    ],
)
def test_anchored_cells_with_the_stabilisers_run_to_done(tiny, regime, signal, anchor):
    result = run(tiny(f"regime={regime}", f"signal={signal}", f"ttt.anchor={anchor}", "ttt.steps=2"))
    assert result["status"] == "done", result.get("error")
    assert result["axes"]["anchor"] == anchor
    assert {"stab/collapse_step", "stab/predictor_step", "stab/warning_lead"} <= set(result["stab"])
    assert result["anchor"]["beta"] == (DEFAULT_BETA if "kl" in anchor else 0.0)
    assert "ttt/distinct_answers" in result["ttt"]
    if regime == "none":
        assert result["anchor"]["replay_rows"] == 0 and "replay is a no-op" in result["anchor"]["note"]
    elif "replay" in anchor:
        assert result["anchor"]["replay_rows"] == result["config"]["catalyst"]["n"]
        assert result["ttt"]["ttt/replay_nll"] > 0
    if "kl" in anchor:
        assert "ttt/kl" in result["ttt"]
