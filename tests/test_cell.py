"""One cell end to end: real TRL trainers on a tiny model, real W&B offline runs."""

import json
from pathlib import Path

import pytest
import torch

from catalyst_ttt.cache import KEY
from catalyst_ttt.config import compose_cell
from catalyst_ttt.models import char_tokenizer, load_pretrained, new_tiny_model
from helpers.cells import run
from helpers.wandb_offline import read_offline_run

SHARES = ("gold_answer", "follows_trace")


@pytest.mark.slow
def test_cell_runs_every_phase_and_writes_results(tiny):
    result = run(tiny("regime=correct", "signal=majority"))
    assert result["status"] == "done", result.get("error")
    cell = Path(result["config"]["runs_dir"]) / "single" / result["cell"]
    on_disk = json.loads((cell / "result.json").read_text())
    assert on_disk["metrics"] == result["metrics"]
    splits = {"id", "heldout", "shift_compose", "shift_length", "shift_steps", "shift_format"}
    assert set(on_disk["metrics"]) == splits
    sampled = {"acc/mean@4", "acc/maj@4", "acc/pass@4"}
    assert sampled <= set(on_disk["metrics"]["id"])  # eval.sampled_splits defaults to [id]
    for split, metrics in on_disk["metrics"].items():
        assert "acc/greedy" in metrics and (split == "id" or not sampled & set(metrics))
    assert (cell / "config.yaml").exists() and (cell / "trajectory.json").exists()
    assert on_disk["phases"]["catalyst"] in ("trained", "cached")
    assert not list(cell.glob(".*.tmp"))
    traces = {f"trace/{kind}/{share}" for kind in ("gold", "donor", "corrupted") for share in SHARES}
    assert (
        set(on_disk["probes"]) == {"format/start", "skill/base", "skill/start", "latent/base", "latent/start"} | traces
    )
    assert all(0.0 <= value <= 1.0 for value in on_disk["probes"].values())
    assert on_disk["probes"]["trace/gold/gold_answer"] == on_disk["probes"]["trace/gold/follows_trace"]


def test_wandb_offline_run_holds_ttt_reward_and_final_accuracy(tiny, untrained_base):
    result = run(tiny(*untrained_base, "regime=correct", "signal=majority", "sweep=wb", wandb="offline"))
    offline = read_offline_run(Path(result["wandb_dir"]))
    assert offline.run["name"] == result["cell"]
    assert offline.run["group"] == "wb" and offline.run["job_type"] == "majority"
    tags = {"task:alchemy", "model:hf", "regime:correct", "signal:majority", "anchor:none"}
    assert set(offline.run["tags"]) == tags
    assert offline.config["regime"]["name"] == "correct"
    rewards = offline.series("ttt/reward")
    assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)
    assert [row["ttt/reward"] for row in result["ttt_log"] if "ttt/reward" in row] == rewards  # kept for the report
    assert offline.series("ttt/step")
    assert result["probes"] and all(offline.summary[f"probes/{k}"] == v for k, v in result["probes"].items())
    for split, metrics in result["metrics"].items():
        assert offline.summary[f"{split}/acc/greedy"] == metrics["acc/greedy"]
    assert offline.summary["id/acc/maj@4"] == result["metrics"]["id"]["acc/maj@4"]
    for key in (
        "ig/total",
        "ig/per_step",
        "ig/wu_ppl",
        "process/step_validity",
        "process/faithful_acc",
        "stab/start",
        "stab/final",
        "stab/drawdown",
        "stab/flips_c2w",
        "stab/collapse",
    ):
        assert key in offline.summary, key
    trajectory = json.loads(
        (Path(result["config"]["runs_dir"]) / "wb" / result["cell"] / "trajectory.json").read_text()
    )
    assert [row["step"] for row in trajectory] == [0, 2, 4]  # step 0, every eval_every=2, the end
    assert all(len(row["id"]["correct"]) == 6 for row in trajectory)  # per item, for flips
    assert offline.series("traj/id/acc") == [row["id"]["acc"] for row in trajectory]


def _untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.endswith(("step_time", "runtime", "per_second"))}


def _comparable(result: dict) -> dict:
    """A result less what may differ between identical runs: timings, paths, host, W&B directory."""
    config = {k: v for k, v in result["config"].items() if k not in ("runs_dir", "cache_dir")}
    dropped = ("timing", "config", "host", "wandb_dir", "ttt", "ttt_log")
    kept = {k: v for k, v in result.items() if k not in dropped}
    return kept | {"config": config, "ttt": _untimed(result["ttt"]), "ttt_log": list(map(_untimed, result["ttt_log"]))}


@pytest.mark.slow
def test_the_whole_result_repeats_for_a_seed_and_changes_with_it(tiny, tmp_path):
    first = run(tiny("signal=majority", runs=tmp_path / "a", cache=tmp_path / "ca"))
    again = run(tiny("signal=majority", runs=tmp_path / "b", cache=tmp_path / "cb"))
    other = run(tiny("signal=majority", "seed=1", runs=tmp_path / "c", cache=tmp_path / "cc"))
    assert first["status"] == again["status"] == other["status"] == "done"
    assert _comparable(first) == _comparable(again)  # metrics, items, pre_ttt, ignition, trajectory, probes, ttt
    trajectory = [
        json.loads((Path(r["config"]["runs_dir"]) / "single" / r["cell"] / "trajectory.json").read_text())
        for r in (first, again, other)
    ]
    assert trajectory[0] == trajectory[1]
    differs = [k for k in ("metrics", "items", "ttt", "stab") if first[k] != other[k]]
    assert differs, "another cell seed changed nothing in the result"


def test_hf_model_from_a_local_directory(tiny, untrained_base):
    result = run(tiny(*untrained_base, "signal=majority"))
    assert result["status"] == "done", result.get("error")
    assert result["phases"]["base"] == "pretrained"
    assert result["cell"].startswith("alchemy-local_llama-")
    assert set(result["metrics"]["id"]) >= {"acc/greedy", "process/step_validity"}


@pytest.mark.slow
def test_a_from_scratch_catalyst_trains_an_untrained_model_on_the_rows_alone(tiny, tmp_path):
    overrides = tiny("regime=correct", "signal=none", "catalyst.from_scratch=true", "base.seed=3", cache=tmp_path)
    result = run(overrides)
    assert result["status"] == "done", result.get("error")
    (scratch,) = [d for d in (tmp_path / "scratch").iterdir() if d.is_dir()]
    untrained = load_pretrained(str(scratch))[0].state_dict()
    fresh = new_tiny_model(compose_cell(overrides).model, char_tokenizer(), seed=3).state_dict()
    assert all(torch.equal(untrained[name], fresh[name]) for name in fresh)  # initialised with base.seed, no step
    (catalyst,) = [d for d in (tmp_path / "catalyst").iterdir() if d.is_dir()]
    key = json.loads((catalyst / KEY).read_text())
    assert key["base"] == scratch.name and key["catalyst"]["from_scratch"] is True
    assert result["phases"]["catalyst"] == "trained" and set(result["probes"]) >= {"skill/base", "skill/start"}
