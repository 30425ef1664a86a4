"""The floor gate changes no verdict: one small study, run without the gate and with it."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.report import build, from_store
from catalyst_ttt.results import GATED
from helpers.cells import format_taught

# helpers.cells.TASK's settings, with 32 id items: enough for the floor's exact test to tell a start apart.
TASK_OVERRIDES = [
    "task.length=2",
    "task.max_ops=2",
    "task.n_train=300",
    "task.n_reader=32",
    "task.n_id=32",
    "task.n_heldout=8",
    "task.n_shift=4",
    "task.n_base_single=10",
    "task.n_base_chain=10",
    "task.n_base_answer_only=10",
]
# 3 cell seeds are the units (one base: `model=hf`); a 4-step catalyst leaves the start at its base (gated),
# a 300-step one lifts it to 0.6-0.8 (trains): both paths, by design rather than by a seed's luck.
GRID = ["regime=none,correct", "signal=majority", "catalyst.steps=4,300", "catalyst.n=128", "seed=0,1,2"]
QUIET = ["eval.max_per_split=32", "metrics.ig.enabled=false", "metrics.probes.enabled=false", "wandb.mode=disabled"]


@pytest.fixture(scope="module")
def format_only_base(tmp_path_factory) -> Path:
    """A tiny model SFT'd 100 steps on correct traces, saved as a local model: it writes the format and
    answers no id item, so a catalyst can lift it above its floor."""
    model, tokenizer = format_taught(100)
    directory = tmp_path_factory.mktemp("format_only_base")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _coordinates(result: dict) -> tuple:  # a cell's name holds its config's hash, which ttt.gate is part of
    return tuple(result["axes"][axis] for axis in ("regime", "catalyst_steps", "seed"))


def _without_hash(key: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in key.items() if k != "config"))


def _verdicts(runs: Path) -> dict:
    report = build(from_store(runs, "smoke"))
    ttt = {_without_hash(g.key): g.verdict for g in report.groups}
    ignition = {_without_hash(entry.key): entry.verdict for entry in report.ignition}
    return {"ttt": ttt, "ignition": ignition}


@pytest.mark.slow
def test_gating_changes_no_verdict_of_a_study_that_ran_without_it(tmp_path, format_only_base):
    base = ["model=hf", f"model.name_or_path={format_only_base}", f"cache_dir={tmp_path / 'cache'}"]
    results = {}
    for gate in ("false", "true"):
        runs = tmp_path / f"gate-{gate}"
        args = ["sweep", "smoke", *GRID, *TASK_OVERRIDES, *QUIET, *base, f"ttt.gate={gate}", f"runs_dir={runs}"]
        done = CliRunner().invoke(app, args, terminal_width=200)
        assert done.exit_code == 0, done.output
        results[gate] = {_coordinates(r): r for r in from_store(runs, "smoke").results}
    ungated, gated = results["false"], results["true"]
    assert ungated.keys() == gated.keys() and len(gated) == 12
    stopped = {cell for cell, r in gated.items() if r["status"] == GATED}
    trained = {cell for cell, r in gated.items() if r["status"] == "done"}
    assert stopped | trained == gated.keys() and len(stopped) == 9 and len(trained) == 3  # both paths ran
    assert {(regime, steps) for regime, steps, _ in trained} == {("correct", 300)}
    assert all(ungated[cell]["status"] == "done" and "metrics" in ungated[cell] for cell in stopped)
    for cell in trained:  # a cell the gate lets through trains exactly as it would without the gate
        assert gated[cell]["metrics"] == ungated[cell]["metrics"] and gated[cell]["items"] == ungated[cell]["items"]
    verdicts = _verdicts(tmp_path / "gate-true")
    assert verdicts == _verdicts(tmp_path / "gate-false")
    assert "n/a (floor)" in verdicts["ttt"].values() and set(verdicts["ttt"].values()) - {"n/a (floor)"}
