"""Sweeps through real Hydra multiruns: resume after SIGKILL, parallel jobs, divergence, Ray."""

import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalyst_ttt import pipeline
from catalyst_ttt.cli import app
from catalyst_ttt.config import build_task, split_sizes
from catalyst_ttt.sweep import load_sweep
from helpers.cells import CTTT, cttt


def _results(runs: Path, sweep: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (runs / sweep).glob("*/result.json")}


def _trainings(cache: Path) -> Counter:
    return Counter(json.loads(line)["kind"] for line in (cache / "trainings.jsonl").read_text().splitlines())


def test_dry_run_prints_the_grid_and_runs_nothing(tmp_path):
    done = cttt("sweep", "smoke", "--dry-run", f"runs_dir={tmp_path}/runs", f"cache_dir={tmp_path}/cache", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4 cells" in done.stdout and "0/4 cells done" in done.stdout and "to train" in done.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_cli_overrides_narrow_and_add_axes():
    sweep = load_sweep("smoke", ["regime=swapped", "seed=0,1", "ttt.steps=2"])
    (axes,) = sweep.blocks
    assert "regime=swapped" in sweep.fixed and "regime" not in axes
    assert axes["seed"] == ["0", "1"] and "ttt.steps=2" in sweep.fixed
    assert len(sweep.grid()) == 4


def test_axis_blocks_are_a_union_of_grids_and_the_command_line_sets_every_block():
    sweep = load_sweep("testbed", ["base.seed=0", "task.latent=steps"])
    sizes = [len(list(itertools.product(*axes.values()))) for axes in sweep.blocks]
    assert len(sweep.blocks) == 4 and len(sweep.grid()) == sum(sizes) == 6
    assert all("base.seed" not in axes and "task.latent" not in axes for axes in sweep.blocks)
    assert [axes.get("catalyst.steps") for axes in sweep.blocks] == [None, ["160", "480"]] * 2
    argvs = sweep.multirun_argvs(sweep.cells()[0].config)
    assert [argv for argv in argvs if "regime=correct" in argv and "catalyst.steps=160,480" in argv]
    assert [argv for argv in argvs if "regime=none" in argv and not any("catalyst.steps" in a for a in argv)]


@pytest.mark.slow
def test_sigkill_mid_cell_then_resume_finishes_every_cell_once(tmp_path):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    args = [CTTT, "sweep", "smoke", f"runs_dir={runs}", f"cache_dir={cache}"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    try:  # wait until one cell is finished and another is mid-training
        while time.time() < deadline:
            done = _results(runs, "smoke")
            running = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("smoke/*/status.json")}
            mid_training = {cell for cell, s in running.items() if s["phase"] in ("catalyst", "ttt")}
            if done and mid_training:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached a second cell")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {
        cell: (r["status"], (runs / "smoke" / cell / "result.json").stat().st_mtime_ns)
        for cell, r in _results(runs, "smoke").items()
    }
    assert before and all(status == "done" for status, _ in before.values())
    assert mid_training and not mid_training & set(before)  # killed while this cell was training

    again = cttt("sweep", "smoke", f"runs_dir={runs}", f"cache_dir={cache}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    after = _results(runs, "smoke")
    assert len(after) == 4 and all(r["status"] == "done" for r in after.values())
    for cell, (_, mtime) in before.items():  # finished cells were skipped, not retrained
        assert (runs / "smoke" / cell / "result.json").stat().st_mtime_ns == mtime
    for path in list(runs.rglob("*.json")) + list(cache.rglob("*.json")):
        json.loads(path.read_text())  # nothing corrupt
    assert all(after[cell]["status"] == "done" for cell in mid_training)
    trainings = _trainings(cache)
    assert trainings["base"] == 1  # the base finished before the kill and was reused
    assert trainings["catalyst"] == 1  # one regime with a catalyst and one seed: trained once, even across the kill
    assert not [p for p in cache.rglob(".*.tmp-*")]  # no half checkpoint left where it could be trusted
    for kind in ("base", "catalyst"):
        for checkpoint in (cache / kind).iterdir():
            if checkpoint.is_dir():
                assert (checkpoint / "model.safetensors").exists() and (checkpoint / "key.json").exists()


@pytest.mark.slow
def test_parallel_jobs_train_the_base_once(tmp_path):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    done = cttt(
        "sweep",
        "smoke",
        "--jobs",
        "2",
        "signal=majority",
        "seed=0,1",
        f"runs_dir={runs}",
        f"cache_dir={cache}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = _results(runs, "smoke")
    assert len(results) == 4 and all(r["status"] == "done" for r in results.values())
    trainings = _trainings(cache)
    assert trainings["base"] == 1  # two jobs needed it at once; the lock let one train it
    assert trainings["catalyst"] == 2  # regime correct, two seeds
    assert {r["host"] for r in results.values()}  # recorded where each ran
    assert {r["config"]["threads"] for r in results.values()} == {1}  # torch threads divided between jobs


@pytest.mark.slow
def test_a_diverging_cell_is_recorded_and_the_sweep_goes_on(tmp_path, shared_cache, monkeypatch):
    """The fault is injected here: seed 1's reward turns NaN from its second call on."""
    make_reward = pipeline.make_reward_function

    def nan_for_seed_1(signal, *args, **kwargs):
        if kwargs["seed"] == 1:
            calls, honest = itertools.count(1), signal.rule

            def rule(batch, signal_cfg):
                return [math.nan] * len(batch.completions) if next(calls) >= 2 else honest(batch, signal_cfg)

            signal = dataclasses.replace(signal, rule=rule)
        return make_reward(signal, *args, **kwargs)

    monkeypatch.setattr(pipeline, "make_reward_function", nan_for_seed_1)
    runs = tmp_path / "runs"
    args = ["sweep", "smoke", "regime=correct", "signal=majority", "seed=0,1", f"runs_dir={runs}"]
    done = CliRunner().invoke(app, [*args, f"cache_dir={shared_cache}"], terminal_width=200)
    assert done.exit_code == 0, done.output
    results = {r["axes"]["seed"]: r for r in _results(runs, "smoke").values()}
    assert results[0]["status"] == "done"
    assert results[1]["status"] == "diverged" and results[1]["diverged_step"] == 2


@pytest.mark.slow
def test_ray_cluster_of_two_nodes_runs_a_sweep(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    # Ray rewrites 127.0.0.1 to the host's interface address unless told this is a local-only
    # cluster; with this flag every node, the driver and the workers stay on loopback.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Its own session directory, not the machine's shared /tmp/ray (short: Ray's socket paths have a length limit).
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)  # for the nodes and for the driver `cttt sweep` starts
    loopback = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=loopback | {"include_dashboard": False})
    try:
        cluster.add_node(**loopback)  # a second node: head + worker, both on loopback
        cluster.wait_for_nodes()
        assert cluster.address.startswith("127.0.0.1:")
        runs, cache = tmp_path / "runs", tmp_path / "cache"
        done = cttt(
            "sweep",
            "smoke",
            "hydra/launcher=ray_cluster",
            f"hydra.launcher.ray.init.address={cluster.address}",
            "threads=1",
            f"runs_dir={runs}",
            f"cache_dir={cache}",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        results = _results(runs, "smoke")
        assert len(results) == 4 and all(r["status"] == "done" for r in results.values())
        assert _trainings(cache)["base"] == 1
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_hydra_grammar_range_choice_glob_and_quoted_commas():
    sweep = load_sweep(
        "smoke",
        ["seed=range(0,3)", "regime=choice(none,correct)", "signal=glob(ma*,exclude=*_x_*)", "wandb.project='a,b'"],
    )
    (axes,) = sweep.blocks
    assert axes["seed"] == ["0", "1", "2"] and axes["regime"] == ["none", "correct"]
    assert axes["signal"] == ["majority"]
    cells = sweep.cells()
    assert len(cells) == 6
    assert {c.config.wandb.project for c in cells} == {"a,b"}  # one value with a comma, not an axis
    assert sorted({c.config.seed for c in cells}) == [0, 1, 2]


def test_dry_run_of_a_range_lists_three_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["sweep", "smoke", "--dry-run", "seed=range(0,3)"], terminal_width=300)
    assert done.exit_code == 0, done.output
    assert "12 cells" in done.stdout and "seed=0,1,2" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith(("none ", "correct "))]
    assert sorted(row[2] for row in rows) == sorted(["0", "1", "2"] * 4)  # a seed column tells the rows apart
    assert list(tmp_path.iterdir()) == []


def test_duplicate_grid_points_collapse_into_one_cell():
    cells = load_sweep("smoke", ["seed=0,0", "regime=correct,correct"]).cells()
    assert len(cells) == 2 and len({c.id for c in cells}) == 2  # signal none, majority


def test_the_multirun_places_store_and_cache_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("smoke", ["runs_dir=rel/runs", "cache_dir=rel/cache"])
    (argv,) = sweep.multirun_argvs(sweep.cells()[0].config)
    assert f"runs_dir={tmp_path}/rel/runs" in argv and f"cache_dir={tmp_path}/rel/cache" in argv
    assert "runs_dir=rel/runs" not in argv


def test_the_ignition_sweep_crosses_every_regime_with_budgets_up_to_the_whole_pool():
    points = [dict(o.split("=", 1) for o in overrides) for overrides in load_sweep("ignition", []).grid()]
    regimes = {"answer_only", "correct", "swapped", "illogical", "corrupted"}
    for kind in ("steps", "direct"):
        mine = [p for p in points if p["task.latent"] == kind]
        seeds = {p["base.seed"] for p in mine}
        assert len(seeds) >= 5  # the unit of inference is the base
        assert len({p["base.steps"] for p in mine}) == 1  # one base per kind and seed
        assert sorted(p["base.seed"] for p in mine if p["regime"] == "none") == sorted(seeds)  # once per base
        budgets = sorted({int(p["catalyst.n"]) for p in mine if p["regime"] != "none"})
        assert len(budgets) >= 4 and budgets[0] == 64
        crossed = {(p["regime"], int(p["catalyst.n"]), p["base.seed"]) for p in mine if p["regime"] != "none"}
        assert crossed == set(itertools.product(regimes, budgets, seeds))
        assert all(p["signal"] == "none" for p in mine)  # no TTT: ignition is read before it
    largest = load_sweep("ignition", ["regime=correct", "task.latent=direct", f"catalyst.n={budgets[-1]}"]).cells()[0]
    assert budgets[-1] == split_sizes(build_task(largest.config))["train"]  # the whole catalyst pool


def test_the_stechly_sweep_trains_from_scratch_on_its_whole_pool():
    (cell,) = load_sweep("stechly", ["regime=swapped", "base.seed=0"]).cells()
    assert cell.config.catalyst.from_scratch and cell.config.model.kind == "tiny"
    assert cell.config.catalyst.n == split_sizes(build_task(cell.config))["train"]


def test_planning_composes_once_per_group_choice_and_gives_hydras_configs():
    """compose_cells sets plain `key=value`s on one composition per choice of config groups: each cell must
    equal what Hydra composes for its overrides alone."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from catalyst_ttt.config import CONF_DIR, compose_cells, make_paths_absolute

    grid = load_sweep("question", ["base.seed=0,1", "task.latent=steps", "regime=correct,swapped"]).grid()[::7]
    for overrides, cfg in zip(grid, compose_cells(grid)):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            expected = compose(config_name="config", overrides=overrides)
        make_paths_absolute(expected)
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected), overrides


@pytest.mark.slow
def test_every_group_option_composed_alone_gives_hydras_composition_of_the_whole_cell():
    """The Composer copies each group option into the default composition: for every option of every group,
    beside other groups' options, the cell equals Hydra's composition of all of them at once."""
    from omegaconf import OmegaConf

    from catalyst_ttt.config import GROUPS, Composer, _compose, group_options, parse_overrides

    options = {group: group_options(group) for group in GROUPS}
    composer = Composer()
    for group in GROUPS:
        for i, option in enumerate(options[group]):
            choice = {g: names[(i + 1) % len(names)] for g, names in options.items()} | {group: option}
            lines = [f"{g}={name}" for g, name in choice.items()]
            assembled, whole = composer.compose(parse_overrides(lines, "test")), _compose(lines)
            assert OmegaConf.to_yaml(assembled) == OmegaConf.to_yaml(whole), lines
            assert [OmegaConf.get_type(assembled, g) for g in GROUPS] == [OmegaConf.get_type(whole, g) for g in GROUPS]
    assert not composer.whole, "every shipped option changes its own group only"


def test_an_option_that_sets_a_key_outside_its_group_is_composed_whole(monkeypatch, tmp_path):
    """A plain option file is merged into its group without Hydra; one with a `@package` line (here it also sets
    the seed) is composed by Hydra, found to reach outside its group, and its combinations composed whole."""
    from catalyst_ttt import config

    conf = shutil.copytree(config.CONF_DIR, tmp_path / "conf")
    (conf / "regime" / "swapped.yaml").write_text("# @package _global_\nregime:\n  name: swapped\nseed: 7\n")
    monkeypatch.setattr(config, "CONF_DIR", conf)
    composed, compose = [], config._compose
    monkeypatch.setattr(config, "_compose", lambda lines: composed.append(tuple(lines)) or compose(lines))
    composer = config.Composer()
    lines = ["regime=swapped", "signal=process"]
    cfg = composer.compose(config.parse_overrides(lines, "test"))
    assert (cfg.seed, cfg.regime.name, cfg.signal.name) == (7, "swapped", "process")
    assert composer.whole == {tuple(lines)}
    plain = composer.compose(config.parse_overrides(["regime=illogical", "signal=process"], "test"))
    assert (plain.seed, plain.regime.name, plain.signal.name) == (0, "illogical", "process")
    assert composed == [("regime=swapped",), (), tuple(lines)]  # illogical and process: their files alone
