"""`cttt report` on a real smoke sweep and on hand-made results that trigger every branch."""

import hashlib
import json
import math
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.report import (
    build_report,
    log_to_wandb,
    markdown,
    markdown_table,
    variance_table,
    write_report,
)
from catalyst_ttt.results import GRID, write_json
from catalyst_ttt.sweep import SWEEPS_DIR, load_sweep, record_grid
from helpers.cells import cttt
from helpers.fakes import fake_result, write_store
from helpers.wandb_offline import read_offline_run


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory) -> Path:
    """A results store made by a real smoke sweep (Hydra multirun, TRL, tiny model)."""
    root = tmp_path_factory.mktemp("smoke")
    done = cttt(
        "sweep",
        "smoke",
        f"runs_dir={root}/runs",
        f"cache_dir={root}/cache",
        "wandb.mode=disabled",
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "runs"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_report_of_a_real_sweep_matches_the_cells(smoke_store):
    report = build_report(smoke_store, "smoke")
    directory = write_report(report, smoke_store)
    cells = [json.loads(p.read_text()) for p in (smoke_store / "smoke").glob("*/result.json")]
    assert len(cells) == 4
    for group in report.groups:
        mine = [
            c
            for c in cells
            if c["axes"]["regime"] == group.key["regime"] and c["axes"]["signal"] == group.key["signal"]
        ]
        finals = [c["metrics"]["id"]["acc/greedy"] for c in mine]
        assert group.stats["final"].n == len(mine) == 1
        assert group.stats["final"].mean == pytest.approx(sum(finals) / len(finals))
        assert group.stats["ignition"].mean == pytest.approx(sum(c["ignition"] for c in mine) / len(mine))
        assert not group.stats["final"].has_interval  # one replicate: no interval, and the table says so
        row = next(
            line
            for line in (directory / "report.md").read_text().splitlines()
            if line.startswith(f"| {group.key['regime']} | {group.key['signal']} |")
        )
        assert f"| {group.stats['final'].mean:.3f} |" in row and "1 (n<3 replicates: no interval)" in row
    for name in ("trajectories", "ignition_vs_stability", "process_and_ig", "shifts"):
        width, height = _png_size(directory / f"{name}.png")
        assert 400 <= width <= 4000 and 300 <= height <= 3000
    html = (directory / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html


def _store(runs: Path, results: list[dict], sweep: str = "hand") -> Path:
    write_store(runs, sweep, results)
    return runs


def _row(markdown: str, *starts: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith("| " + " | ".join(starts) + " |"))


def _hand_store(runs: Path, collapsing: str, holding: str) -> None:
    """`collapsing` drops from 0.6 to 0.2 with 90% collapse; `holding` rises from 0.6 to 0.65."""
    results = []
    for seed in (0, 1, 2):
        results += [
            fake_result("correct", collapsing, seed, 0.6, 0.2 + 0.01 * seed, collapse=0.9),
            fake_result("correct", holding, seed, 0.6, 0.65 + 0.01 * seed),
            fake_result("none", "none", seed, 0.05, 0.05),
            fake_result("none", holding, seed, 0.05, 0.02),
        ]
    _store(runs, results)


def test_verdicts_and_answer_follow_the_data(tmp_path):
    _hand_store(tmp_path / "a", collapsing="majority", holding="process")
    first = build_report(tmp_path / "a", "hand")
    verdicts = {(g.key["regime"], g.key["signal"]): g.verdict for g in first.groups}
    assert verdicts == {
        ("correct", "majority"): "unstable",
        ("correct", "process"): "stable",
        ("none", "none"): "n/a (no TTT)",
        ("none", "process"): "n/a (floor)",  # 0.05 -> 0.02 was "stable" under the old fixed rule
    }
    up = sum(round((0.65 + 0.01 * s) * 64) - round(0.6 * 64) for s in (0, 1, 2))  # items gained, all seeds
    down = sum(round(0.6 * 64) - round((0.2 + 0.01 * s) * 64) for s in (0, 1, 2))
    text = " ".join(first.answer)
    assert "stable under `process` (start 0.594 → final" in text and "unstable under `majority`" in text
    assert f"McNemar p<0.001 ({up} up, 0 down)" in text and f"(0 up, {down} down)" in text
    assert "collapse 0.900 > 0.25" in text and "3 replicate(s)" in text
    assert f"Regime `correct` ignites: id greedy accuracy {(38 - 3) / 64:+.3f} [" in text
    assert "On `none`" not in text and "n/a" not in text  # floor groups get no sentence

    _hand_store(tmp_path / "b", collapsing="process", holding="majority")
    flipped = " ".join(build_report(tmp_path / "b", "hand").answer)
    assert "stable under `majority`" in flipped and "unstable under `process`" in flipped


def test_a_start_at_its_floor_is_never_stable(tmp_path):
    results = [fake_result("swapped", "majority", s, 0.05, 0.05) for s in (0, 1, 2)]
    results += [fake_result("none", "majority", s, 0.05, 0.05) for s in (0, 1, 2)]
    report = build_report(_store(tmp_path, results), "hand")
    assert {g.verdict for g in report.groups} == {"n/a (floor)"}
    assert all(g.stable is None for g in report.groups)
    text = " ".join(report.answer)
    assert "Regime `swapped` does not ignite: id greedy accuracy +0.000 [0.000, 0.000]" in text
    assert "McNemar p=1 (0 up, 0 down)" in text
    assert "No group has a stability verdict" in text and "stable under" not in text
    row = _row(markdown(report, embed=False), "swapped", "majority")
    assert row.endswith("| n/a (floor): start not significantly above the `none` base (McNemar p=1 (0 up, 0 down)) |")


def test_the_floor_test_counts_replicates(tmp_path):
    """3 more items than the base: p = 0.25 on one replicate (floor), 2/2^9 pooled over three (judged)."""
    one = build_report(_store(tmp_path / "one", [fake_result("correct", "majority", 0, 0.1, 0.1)]), "hand")
    assert one.groups[0].verdict == "n/a (floor)" and one.groups[0].paired["ignition"].test.p == pytest.approx(0.25)
    three = [fake_result("correct", "majority", s, 0.1, 0.1) for s in (0, 1, 2)]
    judged = build_report(_store(tmp_path / "three", three), "hand").groups[0]
    assert judged.paired["ignition"].test.p == pytest.approx(2 / 2**9) and judged.verdict == "stable"


def test_a_drop_within_the_measured_noise_is_stable_and_a_significant_drop_is_not(tmp_path):
    # 16 items: 8 -> 7 right is a drop of 0.0625 (> the old fixed 0.05) that one discordant pair cannot show
    noisy = build_report(_store(tmp_path / "a", [fake_result("correct", "majority", 0, 0.5, 0.4375, items=16)]), "hand")
    assert noisy.groups[0].verdict == "stable"
    assert "n<3 replicates: no interval" in " ".join(noisy.answer)
    # 64 items x 3 replicates: 38 -> 32 right each, 18 losses and no gain
    dropping = [fake_result("correct", "majority", s, 0.6, 0.5) for s in (0, 1, 2)]
    group = build_report(_store(tmp_path / "b", dropping), "hand").groups[0]
    assert group.verdict == "unstable"
    assert group.reasons == [f"TTT lowered accuracy by {6 / 64:.3f} (McNemar p<0.001 (0 up, 18 down))"]
    assert group.paired["gain"].test.p == pytest.approx(2 / 2**18)
    assert group.stats["gain"].high < 0


def test_accuracy_trap_from_step_validity_or_information_gain(tmp_path):
    results = []
    for seed in (0, 1, 2):
        results += [
            fake_result("correct", "majority", seed, 0.3, 0.6, step_validity=(0.8, 0.4)),
            fake_result("correct", "process", seed, 0.3, 0.6, step_validity=(0.8, 0.8)),
            fake_result("correct", "verifree", seed, 0.3, 0.6, ig=-2.0),
            fake_result("correct", "none", seed, 0.3, 0.3, ig=1.0),
        ]
    report = build_report(_store(tmp_path, results), "hand")
    trap = next(s for s in report.answer if s.startswith("Accuracy trap"))
    gain = (38 - 19) / 64
    assert f"correct x `majority` (accuracy {gain:+.3f}, McNemar p<0.001 (57 up, 0 down), step validity -0.400" in trap
    assert "correct x `verifree [ref=majority]` (accuracy" in trap and "ig/total -3.000 vs no TTT" in trap
    assert "`process`" not in trap

    calm = [r for r in results if r["axes"]["signal"] in ("process", "none")]
    answer = build_report(_store(tmp_path / "calm", calm), "hand").answer
    assert answer[-1].startswith("No group with a verdict fell into the accuracy trap")


def test_a_failed_ig_calibration_keeps_ig_out_of_the_answer(tmp_path):
    results = []
    for seed in (0, 1, 2):
        results += [
            fake_result("correct", "verifree", seed, 0.3, 0.6, ig=-2.0),
            fake_result("correct", "none", seed, 0.3, 0.3, ig=1.0),
        ]
    holding = build_report(_store(tmp_path / "holds", results), "hand")
    assert holding.calibration.holds() and any(s.startswith("Accuracy trap") for s in holding.answer)
    for result in results:  # a reader that scores swapped traces above gold ones
        result["ig_calibration"] = {"correct": 0.3, "swapped": 0.5, "illogical": 0.1, "corrupted": 0.0}
    failing = build_report(_store(tmp_path / "fails", results), "hand")
    assert not failing.calibration.holds()
    assert not any(s.startswith("Accuracy trap") for s in failing.answer)
    text = markdown(failing, embed=False)
    assert "Calibration FAILS: IG is not interpretable for this sweep" in text
    assert "| alchemy/tiny/base seed 0 | +0.300 | +0.500 | +0.100 | +0.000 |" in text


def test_diverged_and_failed_replicates_are_flagged_never_dropped(tmp_path):
    results = [fake_result("correct", signal, s, 0.6, 0.65) for s in (0, 1, 2) for signal in ("majority", "process")]
    results += [
        fake_result("correct", "majority", 3, 0.6, 0.65, status="failed"),
        fake_result("correct", "process", 3, 0.6, 0.65, status="diverged"),
    ]
    results += [fake_result("swapped", "majority", s, 0.6, 0.6, status="failed") for s in (0, 1, 2)]
    results += [fake_result("illogical", "majority", s, 0.6, 0.6, status="diverged") for s in (0, 1)]
    report = build_report(_store(tmp_path, results), "hand")
    verdicts = {(g.key["regime"], g.key["signal"]): (g.verdict, g.reasons) for g in report.groups}
    assert verdicts[("correct", "majority")] == ("stable", [])
    assert verdicts[("correct", "process")] == ("unstable", ["1 replicate(s) diverged"])
    assert verdicts[("swapped", "majority")] == ("n/a (no finished replicate)", [])
    assert verdicts[("illogical", "majority")] == ("unstable", ["2 replicate(s) diverged"])
    table = markdown(report, embed=False)
    assert "| 3 (1 of 4 replicates failed) |" in _row(table, "correct", "majority")
    assert "| 3 (1 of 4 replicates diverged) |" in _row(table, "correct", "process")
    assert "| 0 (3 of 3 replicates failed) |" in _row(table, "swapped", "majority")
    text = " ".join(report.answer)
    assert "1 of 4 replicates failed" in text and "1 replicate(s) diverged" in text
    assert "On `illogical`, TTT is unstable under `majority` (2 replicate(s) diverged; 0 replicate(s), 2 of 2" in text
    assert "swapped" not in text  # no finished replicate: no ignition and no verdict to speak of


@pytest.mark.parametrize(
    "axis, small, large", [("catalyst_n", {"catalyst_n": 64}, {"catalyst_n": 256}), ("task", {"task": "arith"}, {})]
)
def test_two_configurations_of_a_regime_never_pool(tmp_path, axis, small, large):
    """Before: ignition was pooled by regime and seed, so one value overwrote the other."""
    results = [fake_result("correct", "majority", s, 0.05, 0.05, **small) for s in (0, 1, 2)]
    results += [fake_result("correct", "majority", s, 0.6, 0.6, **large) for s in (0, 1, 2)]
    report = build_report(_store(tmp_path, results), "hand")
    assert axis in report.varying
    assert sorted(len(g.cells) for g in report.groups) == [3, 3]
    by_value = {g.key[axis]: g for g in report.groups}
    small_value = small[axis]
    large_value = next(v for v in by_value if v != small_value)
    assert by_value[small_value].verdict == "n/a (floor)" and by_value[large_value].verdict == "stable"
    ignition = {entry.key[axis]: entry.paired.estimate.mean for entry in report.ignition}
    assert ignition == {small_value: 0.0, large_value: pytest.approx((38 - 3) / 64)}
    text = " ".join(report.answer)
    if axis == "catalyst_n":  # one sentence for the curve over n
        assert "`correct` ignites from n=256 on" in text and "budgets tried: 64, 256" in text
    else:
        assert f"Regime `correct` ({axis}={small_value}" in text and f"Regime `correct` ({axis}={large_value}" in text


def _two_configurations() -> tuple[list[dict], list[dict]]:
    first = [
        fake_result(r, sig, s, 0.6 * (r != "none"), 0.65 * (r != "none"))
        for s in (0, 1, 2)
        for r, sig in (("correct", "process"), ("none", "none"))
    ]
    second = [
        fake_result(r, sig, s, 0.6 * (r != "none"), 0.2 * (r != "none"), config={"ttt": {"steps": 1}})
        for s in (0, 1, 2)
        for r, sig in (("correct", "process"), ("none", "none"))
    ]
    return first, second


def test_a_report_keeps_to_the_recorded_grid_and_says_what_it_left_out(tmp_path):
    first, second = _two_configurations()
    runs = _store(tmp_path, first + second)
    write_json(
        runs / "hand" / GRID,
        {
            "sweep": "hand",
            "file": "hand.yaml",
            "file_sha256": "ab" * 32,
            "cells": {r["cell"]: r["config_hash"] for r in first},
        },
    )
    report = build_report(runs, "hand")
    assert sorted(len(g.cells) for g in report.groups) == [3, 3] and len(report.results) == 6
    process = next(g for g in report.groups if g.key["signal"] == "process")
    assert process.stats["final"].mean == pytest.approx(round(0.65 * 64) / 64)
    text = markdown(report, embed=False)
    assert "left out: 6 result.json file(s) of other configurations in this store" in text

    (runs / "hand" / GRID).unlink()  # cells of `cttt run`: everything, but never pooled across configurations
    everything = build_report(runs, "hand")
    assert sorted(len(g.cells) for g in everything.groups) == [3, 3, 3, 3]
    assert everything.varying == ["config"]
    # the TTT settings do not change the start: one ignition over 3 replicates, each counted once
    assert [entry.paired.estimate.n for entry in everything.ignition] == [3] and everything.ignition_varying == []
    finals = sorted(g.stats["final"].mean for g in everything.groups if g.key["signal"] == "process")
    assert finals == pytest.approx([round(0.2 * 64) / 64, round(0.65 * 64) / 64])
    assert "ttt.steps=1" in markdown(everything, embed=False) and "ttt.steps=20" in markdown(everything, embed=False)


def test_a_sweep_records_its_grid(tmp_path):
    plan = load_sweep("smoke", [f"runs_dir={tmp_path}"])
    cells = plan.cells()
    record_grid(plan, cells)
    grid = json.loads((tmp_path / "smoke" / GRID).read_text())
    assert grid["cells"] == {c.id: c.config_hash for c in cells} and len(grid["cells"]) == 4
    assert grid["file_sha256"] == hashlib.sha256((SWEEPS_DIR / "smoke.yaml").read_bytes()).hexdigest()
    assert grid["axes"] == {"regime": ["none", "correct"], "signal": ["none", "majority"]}


def test_corrupt_results_are_counted_and_named(tmp_path):
    runs = _store(tmp_path, [fake_result("correct", "majority", s, 0.6, 0.6) for s in (0, 1, 2)])
    (runs / "hand" / "cut").mkdir()
    (runs / "hand" / "cut" / "result.json").write_text('{"status": "do')
    (runs / "hand" / "list").mkdir()
    (runs / "hand" / "list" / "result.json").write_text("[]")
    report = build_report(runs, "hand")
    assert len(report.groups[0].cells) == 3 and len(report.corrupt) == 2
    text = markdown(report, embed=False)
    assert f"Unreadable: 2 damaged file(s), not counted: {runs / 'hand' / 'cut' / 'result.json'}" in text
    assert str(runs / "hand" / "list" / "result.json") in text


def test_intervals_never_leave_the_metric_range(tmp_path):
    results = []
    for seed in (0, 1, 2, 3):
        results += [
            fake_result("correct", "majority", seed, 1.0, 0.0, base=0.0, ig=0.5),
            fake_result("correct", "process", seed, 1.0, 1.0 - 0.25 * (seed % 2), base=0.0, ig=0.5),
            fake_result("none", "none", seed, 0.0, 0.0, ig=0.5),
        ]
    report = build_report(_store(tmp_path, results), "hand")
    bounds = {
        "gain": (-1, 1),
        "ignition": (-1, 1),
        "ig_total": (-math.inf, math.inf),
        "flips_c2w": (0, math.inf),
        "diversity": (0, math.inf),
    }
    for group in report.groups:
        for name, estimate in group.stats.items():
            low, high = bounds.get(name, (0, 1))
            assert estimate.has_interval and low <= estimate.low <= estimate.mean <= estimate.high <= high, name
    assert report.groups[0].stats["gain"].mean == -1.0 and report.groups[0].stats["ignition"].mean == 1.0
    intervals = re.findall(r"\[(-?\d+\.\d+), (-?\d+\.\d+)\]", markdown(report, embed=False))
    assert intervals and all(-1 <= float(a) <= float(b) <= 1 for a, b in intervals)


def test_fewer_than_three_replicates_show_no_interval_and_say_why(tmp_path):
    two = [fake_result("correct", "majority", s, 0.6, 0.6 + 0.05 * s) for s in (0, 1)]
    report = build_report(_store(tmp_path / "two", two), "hand")
    row = _row(markdown(report, embed=False), "correct", "majority")
    assert "| 2 (n<3 replicates: no interval) |" in row and "[" not in row.split("|")[5]
    assert not any(e.has_interval for e in report.groups[0].stats.values())
    assert "2 replicate(s), n<3 replicates: no interval" in " ".join(report.answer)
    # with three replicates that differ, the interval has width and holds the mean (a one-seed one never did)
    three = [fake_result("correct", "majority", s, 0.6, 0.5 + 0.1 * s) for s in (0, 1, 2)]
    final = build_report(_store(tmp_path / "three", three), "hand").groups[0].stats["final"]
    assert final.mean == pytest.approx(sum(round((0.5 + 0.1 * s) * 64) for s in (0, 1, 2)) / 192)
    assert 0 < final.low < final.mean < final.high < 1


def _disclosed_store(runs: Path) -> Path:
    """2 base seeds x 3 seeds; base seed 1 gives a weaker start; one signal per access class."""
    results = []
    for base_seed in (0, 1):
        start = 0.6 if base_seed == 0 else 0.3
        for seed in (0, 1, 2):
            common = dict(base_seed=base_seed, trajectory=[start, 0.8, 0.7, start + 0.05])
            results += [
                fake_result("none", "none", seed, 0.05, 0.05, base_seed=base_seed),
                fake_result("correct", "none", seed, start, start, base_seed=base_seed),
                fake_result("correct", "majority", seed, start, start + 0.05, **common),
                fake_result("correct", "process", seed, start, start + 0.05, access="partial verifier", **common),
                fake_result("correct", "verifier", seed, start, start + 0.05, access="perfect verifier", **common),
                fake_result("correct", "oracle", seed, start, start + 0.05, **common),  # uses_labels: gold
            ]
    return _store(runs, results)


def test_header_discloses_the_design_and_every_signals_access(tmp_path):
    report = build_report(_disclosed_store(tmp_path), "hand")
    text = markdown(report, embed=False)
    assert "items per split heldout 64, id 64, shift_length 64; trajectory items 32 of id" in text
    assert f"TTT epochs over id {20 * 4 / 64:.2f} (ttt.steps 20 × ttt.prompts_per_step 4 / |id| 64)" in text
    assert "base seeds [0, 1]; cell seeds [0, 1, 2]" in text
    assert (
        "Signal access: intrinsic: majority; partial verifier: process; perfect verifier ‡: verifier; gold †: oracle."
    ) in text
    table = markdown_table(report).splitlines()[2:]
    assert [line.split(" | ")[1] for line in table] == ["none", "none", "majority", "process", "verifier ‡", "oracle †"]


def test_best_and_last_point_and_variance_components(tmp_path):
    report = build_report(_disclosed_store(tmp_path), "hand")
    majority = next(g for g in report.groups if g.key["signal"] == "majority")
    assert majority.stats["best"].mean == pytest.approx(round(0.8 * 32) / 32) and majority.peak_step == 5
    assert "@ 5 |" in _row(markdown(report, embed=False), "correct", "majority")
    assert "Every verdict is judged at the final checkpoint" in " ".join(report.answer)
    # start differs only between base seeds: all of its variance is base-to-base
    starts = [round(0.6 * 64) / 64, round(0.3 * 64) / 64]
    parts = majority.variance["start"]
    assert parts["cell"] == 0.0 and parts["base"] == pytest.approx((starts[0] - starts[1]) ** 2 / 2)
    row = _row(variance_table(report), "correct", "majority", "start")
    assert row == f"| correct | majority | start | {abs(starts[0] - starts[1]) / math.sqrt(2):.3f} | 0.000 | 100% |"


def test_written_report_plots_html_and_status(tmp_path):
    runs = _disclosed_store(tmp_path)
    report = build_report(runs, "hand")
    directory = write_report(report, runs)
    for name in ("trajectories", "ignition_vs_stability", "process_and_ig", "shifts"):
        width, height = _png_size(directory / f"{name}.png")
        assert 400 <= width <= 4000 and 300 <= height <= 3000
    html = (directory / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and html.count("<table>") == 5  # with the IG calibration
    done = CliRunner().invoke(app, ["status", "hand", "--runs-dir", str(runs)], terminal_width=300)
    assert done.exit_code == 0, done.output
    assert "36 cells — done=36" in done.output and "no TTT" in done.output and "gold" in done.output


def test_the_report_run_is_logged_to_wandb(tmp_path):
    results = [
        fake_result("correct", "majority", s, 0.6, 0.65, config={"wandb": {"mode": "offline"}}) for s in (0, 1, 2)
    ]
    runs = _store(tmp_path, results)
    report = build_report(runs, "hand")
    write_report(report, runs)
    directory = Path(log_to_wandb(report))
    offline = read_offline_run(directory)
    assert offline.run["job_type"] == "report" and offline.run["group"] == "hand"
    logged = {key.split(".")[0] for row in offline.history for key in row}
    assert {"regimes_x_signals", "answer", "trajectories", "shifts"} <= logged
    (table,) = directory.glob("files/media/table/regimes_x_signals_*.table.json")
    saved = json.loads(table.read_text())
    (row,) = [dict(zip(saved["columns"], values)) for values in saved["data"]]
    group = report.groups[0]
    assert row["verdict"] == "stable" and row["replicates"] == 3
    assert (row["gain"], row["gain_low"], row["gain_high"]) == pytest.approx(
        (group.stats["gain"].mean, group.stats["gain"].low, group.stats["gain"].high)
    )
    assert row["gain_p"] == pytest.approx(2 / 2 ** (3 * (round(0.65 * 64) - round(0.6 * 64))))


def test_report_errors_are_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["report", "nope"], terminal_width=400)
    assert done.exit_code == 2 and "no results for sweep 'nope'" in done.stderr
    failed = fake_result("correct", "majority", 0, 0.5, 0.5, status="failed")
    write_json(tmp_path / "runs" / "empty" / "cell" / "result.json", failed)
    done = runner.invoke(app, ["report", "empty"], terminal_width=400)
    assert done.exit_code == 2 and "has no finished cells" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_status_reads_the_results_store(smoke_store):
    done = CliRunner().invoke(app, ["status", "smoke", "--runs-dir", str(smoke_store)], terminal_width=300)
    assert done.exit_code == 0, done.output
    assert "done=4" in done.output


def test_catalyst_n_and_steps_are_separate_axes_that_never_pool(tmp_path):
    """Each (catalyst.n, catalyst.steps) pair is its own group and ignition entry, with its own value."""
    budgets = [(64, 160, 0.2), (64, 640, 0.3), (256, 160, 0.4), (256, 640, 0.5)]
    results = [
        fake_result("correct", "none", s, start, start, catalyst_n=n, config={"catalyst": {"steps": steps}})
        for s in (0, 1, 2)
        for n, steps, start in budgets
    ]
    report = build_report(_store(tmp_path, results), "hand")
    assert {"catalyst_n", "catalyst_steps"} <= set(report.ignition_varying)
    assert sorted(len(g.cells) for g in report.groups) == [3, 3, 3, 3]
    ignition = {(e.key["catalyst_n"], e.key["catalyst_steps"]): e.paired.estimate.mean for e in report.ignition}
    assert ignition == {(n, steps): pytest.approx((round(start * 64) - 3) / 64) for n, steps, start in budgets}
    assert list(ignition) == [(n, steps) for n, steps, _ in budgets]  # by value: 64 before 256


def _budget_store(runs: Path) -> Path:
    """Ignition by n (64, 256, 1024): correct always; swapped from 1024 on; illogical never; corrupted at
    256 only. Swapped's probes: the skill falls and a donor trace is copied."""
    starts = {
        "correct": {64: 0.6, 256: 0.7, 1024: 0.8},
        "swapped": {64: 0.05, 256: 0.05, 1024: 0.5},
        "illogical": {64: 0.05, 256: 0.05, 1024: 0.05},
        "corrupted": {64: 0.05, 256: 0.4, 1024: 0.05},
    }
    copies = {"skill/base": 0.9, "skill/start": 0.5, "format/start": 0.95}
    copies |= {"trace/donor/follows_trace": 0.8, "trace/donor/gold_answer": 0.1}
    ignores = {"skill/base": 0.9, "skill/start": 0.85, "format/start": 0.2}
    ignores |= {"trace/donor/follows_trace": 0.1, "trace/donor/gold_answer": 0.3}
    results = [
        fake_result(regime, "none", s, start, start, catalyst_n=n, probes=copies if regime == "swapped" else ignores)
        for s in (0, 1, 2)
        for regime, by_n in starts.items()
        for n, start in by_n.items()
    ]
    results += [fake_result("none", "none", s, 0.05, 0.05, catalyst_n=n) for s in (0, 1, 2) for n in (64, 256, 1024)]
    return _store(runs, results)


def test_ignition_vs_budget_answers_once_per_regime(tmp_path):
    runs = _budget_store(tmp_path)
    report = build_report(runs, "hand")
    text = markdown(report, embed=False)
    assert "## Ignition vs catalyst budget" in text
    answer = [line for line in text.splitlines() if line.startswith("- `") and "budgets tried" in line]
    assert len(answer) == 4  # one sentence per regime, none per budget
    correct, swapped, illogical, corrupted = (
        next(a for a in answer if a.startswith(f"- `{r}`")) for r in ("correct", "swapped", "illogical", "corrupted")
    )
    assert "ignites from n=64 on" in correct and f"largest +{(51 - 3) / 64:.3f} at n=1024" in correct
    assert "ignites from n=1024 on" in swapped and f"ignition +{(32 - 3) / 64:.3f}" in swapped
    assert "atomic skill 0.90 → 0.50 (overwritten by the catalyst)" in swapped
    assert "writes that trace's answer (donor 0.80): it reads its trace" in swapped
    assert "after a donor trace it writes the gold answer 0.10" in swapped
    assert "does not ignite at any budget up to n=1024" in illogical
    assert "format rate 0.20 (it mostly writes no trace)" in illogical
    assert "(donor 0.10): it does not read its trace" in illogical
    assert "ignites at n=256 only" in corrupted and "(kept)" in corrupted
    row = _row(text, "–", "swapped", "1024")
    assert f"+{(32 - 3) / 64:.3f} [" in row and row.endswith("| yes |")
    assert _row(text, "–", "swapped", "256").endswith("| no |")
    probes = [line for line in text.splitlines() if line.startswith("| – | swapped | 64 |")][1]  # the probes table
    assert probes.endswith("| 0.90 | 0.50 | 0.95 | – | 0.80 | 0.10 | – | – |")
    directory = write_report(report, runs)
    width, height = _png_size(directory / "ignition_vs_budget.png")
    assert width >= 400 and height >= 300


def test_no_budget_section_when_catalyst_n_is_fixed(tmp_path):
    _hand_store(tmp_path, "majority", "process")
    report = build_report(tmp_path, "hand")
    assert "Ignition vs catalyst budget" not in markdown(report, embed=False)
    assert not (write_report(report, tmp_path) / "ignition_vs_budget.png").exists()
