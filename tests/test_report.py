"""`cttt report` on hand-made results that trigger every branch, and on a real smoke sweep: verdicts, the answer
it opens with, the tables. The page itself (plots, HTML, results.jsonl) is tested in test_report_page.py."""

import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from catalyst_ttt.metrics.statistics import BASES, REPLICATES, format_p
from catalyst_ttt.report import build, from_store
from catalyst_ttt.report.answer import headline, ignition_findings, ttt_findings
from catalyst_ttt.report.page import markdown, write_report
from catalyst_ttt.report.tables import variance_table
from catalyst_ttt.results import GRID, write_json
from catalyst_ttt.sweep import SWEEPS_DIR, load_sweep, record_grid
from helpers.cells import cttt
from helpers.fakes import correct_items, fake_result, write_store

ITEMS = 64
BASE_SEEDS = (0, 1, 2)  # three bases: the unit of inference is the base, claims hold over base initialisations


def right(accuracy: float) -> int:
    """Items right of ITEMS at this accuracy, as the fakes lay them out."""
    return sum(correct_items(accuracy, ITEMS))


def _report(runs: Path, results: list[dict], sweep: str = "hand"):
    write_store(runs, sweep, results)
    return build(from_store(runs, sweep))


def _page(report) -> str:
    return markdown(report, {}, Path("."))


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _row(text: str, *starts: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| " + " | ".join(starts) + " |"))


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split("|")]


def _by(report, regime: str, signal: str, **key):
    return next(
        g
        for g in report.groups
        if (g.key["regime"], g.key["signal"]) == (regime, signal) and all(g.key.get(k) == v for k, v in key.items())
    )


def _hand_store(runs: Path, collapsing: str, holding: str):
    """Per base seed: `collapsing` drops from 0.6 to about 0.2 with 90% collapse; `holding` stays within ±0.05."""
    results = []
    for base_seed in BASE_SEEDS:
        results += [
            fake_result("correct", collapsing, 0, 0.6, 0.2 + 0.01 * base_seed, collapse=0.9, base_seed=base_seed),
            fake_result("correct", holding, 0, 0.6, 0.61 + 0.005 * base_seed, base_seed=base_seed),
            fake_result("none", "none", 0, 0.05, 0.05, base_seed=base_seed),
            fake_result("none", holding, 0, 0.05, 0.02, base_seed=base_seed),
        ]
    return _report(runs, results)


def test_verdicts_and_answer_follow_the_data(tmp_path):
    report = _hand_store(tmp_path / "a", collapsing="majority", holding="process")
    verdicts = {(g.key["regime"], g.key["signal"]): g.verdict for g in report.groups}
    assert verdicts == {
        ("correct", "majority"): "unstable",
        ("correct", "process"): "stable",
        ("none", "none"): "n/a (no TTT)",
        ("none", "process"): "n/a (floor)",
    }
    assert all(g.stats["start"].scope == BASES for g in report.groups)
    lines = headline(report)
    ignition = (right(0.6) - right(0.05)) / ITEMS
    assert lines[0] == f"Before TTT (id accuracy over the base): `correct` ({ignition:+.3f}) ignites the latent skill."
    assert lines[1] == "TTT on `correct`: stable under `process`; unstable under `majority`."
    majority = _by(report, "correct", "majority")
    finding = next(f for f in ttt_findings(report) if "`majority`" in f)
    assert finding.startswith("`correct` × `majority`: unstable — gain ")
    assert f"{majority.stats['gain'].mean:+.3f}" in finding and "collapse 0.900 > 0.25" in finding
    assert not any("`none` ×" in f for f in ttt_findings(report))  # the floor itself gets no finding

    flipped = _hand_store(tmp_path / "b", collapsing="process", holding="majority")
    assert headline(flipped)[1] == "TTT on `correct`: stable under `majority`; unstable under `process`."


def test_the_ttt_table_shows_value_interval_and_adjusted_tests_in_columns(tmp_path):
    report = _hand_store(tmp_path, collapsing="majority", holding="process")
    process = _by(report, "correct", "process")
    gain = process.stats["gain"]
    row = _cells(_row(_page(report), "correct", "process"))
    assert row[2:] == [
        "intrinsic",
        "3 bases",
        f"{process.stats['start'].mean:.3f}",
        f"{gain.mean:+.3f}",
        f"[{gain.low:+.3f}, {gain.high:+.3f}]",
        format_p(process.adjusted["within"]),
        format_p(process.adjusted["below"]),
        "stable",
    ]
    header = next(line for line in _page(report).splitlines() if line.startswith("| regime | signal | access"))
    alignment = _page(report).splitlines()[_page(report).splitlines().index(header) + 1]
    assert _cells(alignment) == ["---", "---", "---", *["---:"] * 6, "---"]  # numbers right-aligned


def test_a_start_at_its_floor_is_never_stable(tmp_path):
    results = [
        fake_result(regime, "majority", 0, 0.05, 0.05, base_seed=b)
        for b in BASE_SEEDS
        for regime in ("swapped", "none")
    ]
    report = _report(tmp_path, results)
    assert {g.verdict for g in report.groups} == {"n/a (floor)"}
    assert all(g.stable is None for g in report.groups)
    entry = report.ignition[0]
    assert entry.key["regime"] == "swapped" and entry.verdict == "does not ignite"
    lines = headline(report)
    assert lines[0] == "Before TTT: `swapped` does not ignite the latent skill."
    assert "No stability verdict on `swapped`: TTT starts at the floor (the base)." in lines
    assert not any(line.startswith("TTT on") for line in lines)
    text = _page(report)
    assert "- `swapped` × `majority`: n/a (floor) — 0 of 3 replicates start above their floor." in text
    assert "| swapped | majority |" not in text  # collapsed to that one line, not a table row of dashes


def test_gated_cells_finish_at_their_floor_without_ttt_records(tmp_path):
    results = [fake_result("swapped", "majority", 0, 0.05, 0.05, base_seed=b, status="gated") for b in BASE_SEEDS]
    results += [fake_result("correct", "majority", 0, 0.6, 0.61, base_seed=b) for b in BASE_SEEDS]
    report = _report(tmp_path, results)
    gated = _by(report, "swapped", "majority")
    assert gated.verdict == "n/a (floor)" and len(gated.cells) == 3 and not gated.trained
    assert "3 cells stopped before TTT: their start was not above its floor (gated)." in headline(report)
    assert "6 cells: 3 done, 3 gated." in _page(report)


def test_accuracy_trap_from_step_validity_or_information_gain(tmp_path):
    results = []
    for b in BASE_SEEDS:
        results += [
            fake_result("correct", "majority", 0, 0.3, 0.6 + 0.01 * b, step_validity=(0.8, 0.4), base_seed=b),
            fake_result("correct", "process", 0, 0.3, 0.6 + 0.01 * b, step_validity=(0.8, 0.8), base_seed=b),
            fake_result("correct", "verifree", 0, 0.3, 0.6 + 0.01 * b, ig=-2.0, base_seed=b),
            fake_result("correct", "none", 0, 0.3, 0.3, ig=1.0, base_seed=b),
        ]
    report = _report(tmp_path, results)
    trap = next(line for line in headline(report) if line.startswith("Accuracy trap"))
    majority = _by(report, "correct", "majority")
    assert f"`correct` × `majority` (accuracy {majority.mean('gain'):+.3f}, p_adj=" in trap
    assert "step validity -0.400, IG +0.000 vs no TTT)" in trap
    assert "`correct` × `verifree [ref=majority]` (accuracy" in trap and "IG -3.000 vs no TTT" in trap
    assert "`process`" not in trap

    calm = [r for r in results if r["axes"]["signal"] in ("process", "none")]
    assert any(line.startswith("Accuracy trap: none") for line in headline(_report(tmp_path / "calm", calm)))


def test_a_failed_ig_calibration_keeps_ig_out_of_the_answer(tmp_path):
    results = []
    for b in BASE_SEEDS:
        results += [
            fake_result("correct", "verifree", 0, 0.3, 0.6 + 0.01 * b, ig=-2.0, base_seed=b),
            fake_result("correct", "none", 0, 0.3, 0.3, ig=1.0, base_seed=b),
        ]
    holding = _report(tmp_path / "holds", results)
    assert holding.calibration.holds() and any(line.startswith("Accuracy trap (") for line in headline(holding))
    for result in results:  # unfaithful traces (right answer after invalid steps) score above gold ones
        result["ig_calibration"] = {"correct": 0.8, "swapped": 0.1, "illogical": -0.2, "unfaithful": 0.9}
    failing = _report(tmp_path / "fails", results)
    assert not failing.calibration.holds()
    assert not any(line.startswith("Accuracy trap (") for line in headline(failing))
    assert any(line.startswith("IG is not interpretable in this study") for line in headline(failing))
    text = _page(failing)
    assert "Calibration FAILS: IG is not interpretable for this study" in text
    assert "| reader | correct | swapped | illogical | unfaithful |" in text
    assert "| alchemy/tiny/base seed 0 | +0.800 | +0.100 | -0.200 | +0.900 |" in text


def test_no_trace_is_said_never_a_number_and_ig_accuracy_correlation_is_shown(tmp_path):
    results = []
    for b in BASE_SEEDS:
        results += [
            fake_result("answer_only", "none", 0, 0.06, 0.06, ig=None, base_seed=b),
            fake_result("correct", "majority", 0, 0.6, 0.61, ig=1.5, ig_acc_corr=0.2 + 0.1 * b, base_seed=b),
        ]
    text = _page(_report(tmp_path, results))
    assert _cells(_row(_section(text, "Without TTT"), "answer_only", "none"))[-1] == "no trace"
    process = _section(text, "Process and information gain")
    assert _cells(_row(process, "correct", "majority"))[-2:] == ["+1.500", "+0.300"]  # mean r over cells


def test_diverged_and_failed_replicates_are_flagged_never_dropped(tmp_path):
    results = [
        fake_result("correct", signal, 0, 0.6, 0.61, base_seed=b)
        for b in BASE_SEEDS
        for signal in ("majority", "process")
    ]
    results += [
        fake_result("correct", "majority", 0, 0.6, 0.65, base_seed=3, status="failed"),
        fake_result("correct", "process", 0, 0.6, 0.65, base_seed=3, status="diverged"),
    ]
    results += [fake_result("swapped", "majority", 0, 0.6, 0.6, base_seed=b, status="failed") for b in BASE_SEEDS]
    report = _report(tmp_path, results)
    verdicts = {(g.key["regime"], g.key["signal"]): g.verdict for g in report.groups}
    assert verdicts[("correct", "majority")] == "stable"
    assert verdicts[("correct", "process")] == "unstable"
    assert verdicts[("swapped", "majority")] == "n/a (no finished replicate)"
    text = _page(report)
    assert "| 3 bases (1 of 4 replicates failed) |" in _row(text, "correct", "majority")
    assert "| 3 bases (1 of 4 replicates diverged) |" in _row(text, "correct", "process")
    findings = " ".join(ttt_findings(report))
    assert "`correct` × `process`: unstable — 1 replicate(s) diverged; 1 of 4 replicates diverged." in findings
    assert "`swapped` × `majority`: n/a (no finished replicate) — 3 of 3 replicates failed." in findings
    assert "5 of 11 cells did not finish (1 diverged, 4 failed); every table flags their groups." in headline(report)


@pytest.mark.parametrize(
    "axis, small, large", [("catalyst_n", {"catalyst_n": 64}, {}), ("task", {"task": "arith"}, {})]
)
def test_two_configurations_of_a_regime_never_pool(tmp_path, axis, small, large):
    results = [fake_result("correct", "majority", 0, 0.05, 0.05, base_seed=b, **small) for b in BASE_SEEDS]
    results += [fake_result("correct", "majority", 0, 0.6, 0.61, base_seed=b, **large) for b in BASE_SEEDS]
    report = _report(tmp_path, results)
    assert axis in report.varying and sorted(len(g.cells) for g in report.groups) == [3, 3]
    by_value = {g.key[axis]: g for g in report.groups}
    small_value = small[axis]
    large_value = next(v for v in by_value if v != small_value)
    assert by_value[small_value].verdict == "n/a (floor)" and by_value[large_value].verdict == "stable"
    ignition = {entry.key[axis]: entry.estimate.mean for entry in report.ignition}
    assert ignition == {small_value: 0.0, large_value: pytest.approx((right(0.6) - right(0.05)) / ITEMS)}
    lines = " ".join(headline(report))
    if axis == "catalyst_n":  # one line for the curve over n
        assert "Ignites by catalyst budget: `correct` from n=256 on." in lines
    else:
        assert f"Before TTT ({axis}={small_value}): `correct` does not ignite the latent skill." in lines


def _two_configurations() -> tuple[list[dict], list[dict]]:
    def cells(final: float, config: dict | None = None) -> list[dict]:
        return [
            fake_result(r, sig, 0, 0.6 * (r != "none"), final * (r != "none"), base_seed=b, config=config)
            for b in BASE_SEEDS
            for r, sig in (("correct", "process"), ("none", "none"))
        ]

    return cells(0.61), cells(0.2, {"ttt": {"steps": 1}})


def test_a_report_keeps_to_the_recorded_grid_and_says_what_it_left_out(tmp_path):
    first, second = _two_configurations()
    write_store(tmp_path, "hand", first + second)
    grid = {"sweep": "hand", "file": "hand.yaml", "file_sha256": "ab" * 32, "cells": {}}
    write_json(tmp_path / "hand" / GRID, grid | {"cells": {r["cell"]: r["config_hash"] for r in first}})
    report = build(from_store(tmp_path, "hand"))
    assert sorted(len(g.cells) for g in report.groups) == [3, 3] and len(report.results) == 6
    assert _by(report, "correct", "process").stats["final"].mean == pytest.approx(right(0.61) / ITEMS)
    assert "left out: 6 result.json file(s) of other configurations in the store" in _page(report)

    (tmp_path / "hand" / GRID).unlink()  # cells of `cttt run`: everything, but never pooled across configurations
    everything = build(from_store(tmp_path, "hand"))
    assert sorted(len(g.cells) for g in everything.groups) == [3, 3, 3, 3] and everything.varying == ["config"]
    # the TTT settings do not change the start: one ignition over 3 units, each counted once
    assert [entry.estimate.n for entry in everything.ignition] == [3] and everything.ignition_varying == []
    finals = sorted(g.stats["final"].mean for g in everything.groups if g.key["signal"] == "process")
    assert finals == pytest.approx([right(0.2) / ITEMS, right(0.61) / ITEMS])
    text = _page(everything)
    assert "ttt.steps=1" in text and "ttt.steps=20" in text


def test_a_sweep_records_its_grid(tmp_path):
    plan = load_sweep("smoke", [f"runs_dir={tmp_path}"])
    cells = plan.cells()
    record_grid(plan, cells)
    grid = json.loads((tmp_path / "smoke" / GRID).read_text())
    assert grid["cells"] == {c.id: c.config_hash for c in cells} and len(grid["cells"]) == 4
    assert grid["file_sha256"] == hashlib.sha256((SWEEPS_DIR / "smoke.yaml").read_bytes()).hexdigest()
    assert grid["axes"] == [{"regime": ["none", "correct"], "signal": ["none", "majority"]}]  # one block


def test_corrupt_results_are_counted_and_named(tmp_path):
    write_store(tmp_path, "hand", [fake_result("correct", "majority", 0, 0.6, 0.6, base_seed=b) for b in BASE_SEEDS])
    for name, text in (("cut", '{"status": "do'), ("list", "[]")):
        (tmp_path / "hand" / name).mkdir()
        (tmp_path / "hand" / name / "result.json").write_text(text)
    report = build(from_store(tmp_path, "hand"))
    assert len(report.groups[0].cells) == 3 and len(report.cells.unreadable) == 2
    text = _page(report)
    assert f"Unreadable: 2 damaged file(s), not counted: {tmp_path / 'hand' / 'cut' / 'result.json'}" in text
    assert str(tmp_path / "hand" / "list" / "result.json") in text


def test_intervals_never_leave_the_metric_range(tmp_path):
    results = []
    for b in (0, 1, 2, 3):
        results += [
            fake_result("correct", "majority", 0, 1.0, 0.0, base=0.0, ig=0.5, base_seed=b),
            fake_result("correct", "process", 0, 1.0, 1.0 - 0.25 * (b % 2), base=0.0, ig=0.5, base_seed=b),
            fake_result("none", "none", 0, 0.0, 0.0, ig=0.5, base_seed=b),
        ]
    report = _report(tmp_path, results)
    for group in report.groups:
        for name, estimate in group.stats.items():
            if estimate.has_interval and name in ("start", "final", "gain", "ignition", "collapse"):
                low, high = (-1, 1) if name in ("gain", "ignition") else (0, 1)
                assert low <= estimate.low <= estimate.mean <= estimate.high <= high, name
    assert _by(report, "correct", "majority").stats["gain"].mean == -1.0
    intervals = re.findall(r"\[([-+]?\d+\.\d+), ([-+]?\d+\.\d+)\]", _page(report))
    assert intervals and all(-1 <= float(a) <= float(b) <= 1 for a, b in intervals)


def test_fewer_than_three_units_show_no_interval_and_no_verdict(tmp_path):
    two = [fake_result("correct", "majority", seed, 0.6, 0.6 + 0.05 * seed) for seed in (0, 1)]
    report = _report(tmp_path / "two", two)
    group = report.groups[0]
    assert group.verdict == "n/a (n<3 units)" and not any(e.has_interval for e in group.stats.values())
    assert report.ignition[0].verdict == "n/a (n<3 units)"
    assert "Before TTT: `correct`: too few units." in headline(report)
    # one base seed, three cell seeds: three units, but claims hold for these bases only
    three = [fake_result("correct", "majority", seed, 0.6, 0.5 + 0.1 * seed) for seed in (0, 1, 2)]
    final = _report(tmp_path / "three", three).groups[0].stats["final"]
    assert final.scope == REPLICATES and final.n == 3
    assert final.mean == pytest.approx(sum(right(0.5 + 0.1 * s) for s in (0, 1, 2)) / (3 * ITEMS))
    assert 0 < final.low < final.mean < final.high < 1


def _disclosed_store(runs: Path):
    """3 base seeds x 2 seeds; base seed 1 gives a weaker start; one signal per access class."""
    results = []
    for base_seed in BASE_SEEDS:
        start = 0.3 if base_seed == 1 else 0.6
        for seed in (0, 1):
            common = dict(base_seed=base_seed, trajectory=[start, 0.8, 0.7, start + 0.02])
            results += [
                fake_result("none", "none", seed, 0.05, 0.05, base_seed=base_seed),
                fake_result("correct", "none", seed, start, start, base_seed=base_seed),
                fake_result("correct", "majority", seed, start, start + 0.02, **common),
                fake_result("correct", "process", seed, start, start + 0.02, access="partial verifier", **common),
                fake_result("correct", "verifier", seed, start, start + 0.02, access="perfect verifier", **common),
                fake_result("correct", "oracle", seed, start, start + 0.02, **common),  # uses_labels: gold
            ]
    return _report(runs, results)


def test_the_appendix_discloses_the_design_and_every_signals_access(tmp_path):
    report = _disclosed_store(tmp_path)
    text = _page(report)
    appendix = text[text.index("## Appendix") :]
    assert "items per split heldout 64, id 64, shift_length 64; trajectory items 32 of id" in appendix
    assert f"TTT epochs over id {20 * 4 / 64:.2f} (ttt.steps 20 × ttt.prompts_per_step 4 / |id| 64)" in appendix
    assert "base seeds [0, 1, 2]; cell seeds [0, 1]" in appendix
    access = (
        "Signal access: intrinsic: majority; partial verifier: process; perfect verifier ‡: verifier; gold †: oracle."
    )
    assert access in appendix
    assert "config" not in text[: text.index("## Appendix")].split("## The answer")[0]  # hashes only in the appendix
    rows = [line for line in text[text.index("## TTT verdicts") :].splitlines() if line.startswith("| correct |")]
    assert [_cells(line)[1] for line in rows[:4]] == ["majority", "process", "verifier ‡", "oracle †"]


def test_best_and_last_point_and_variance_components(tmp_path):
    report = _disclosed_store(tmp_path)
    majority = _by(report, "correct", "majority")
    assert majority.stats["best"].mean == pytest.approx(sum(correct_items(0.8, 32)) / 32) and majority.peak_step == 5
    assert "0.812 @ 5" in _row(_page(report), "correct", "majority", "3 bases")
    # start differs only between base seeds: all of its variance is base-to-base
    parts = majority.variance["start"]
    assert parts["cell"] == 0.0 and parts["base"] > 0
    row = _row(variance_table([majority], []), "correct", "majority", "start")
    assert row == f"| correct | majority | start | {math.sqrt(parts['base']):.3f} | 0.000 | 100% |"


def test_report_errors_are_one_line_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from catalyst_ttt.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["report", "nope"], terminal_width=400)
    assert done.exit_code == 2 and "no results for sweep 'nope'" in done.stderr
    failed = fake_result("correct", "majority", 0, 0.5, 0.5, status="failed")
    write_json(tmp_path / "runs" / "empty" / "cell" / "result.json", failed)
    done = runner.invoke(app, ["report", "empty"], terminal_width=400)
    assert done.exit_code == 2 and "has no finished cells" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_catalyst_n_and_steps_are_separate_axes_that_never_pool(tmp_path):
    budgets = [(64, 160, 0.2), (64, 640, 0.3), (256, 160, 0.4), (256, 640, 0.5)]
    results = [
        fake_result(
            "correct", "none", 0, start, start, catalyst_n=n, config={"catalyst": {"steps": steps}}, base_seed=b
        )
        for b in BASE_SEEDS
        for n, steps, start in budgets
    ]
    report = _report(tmp_path, results)
    assert {"catalyst_n", "catalyst_steps"} <= set(report.ignition_varying)
    assert sorted(len(g.cells) for g in report.groups) == [3, 3, 3, 3]
    ignition = {(e.key["catalyst_n"], e.key["catalyst_steps"]): e.estimate.mean for e in report.ignition}
    assert ignition == {(n, steps): pytest.approx((right(start) - right(0.05)) / ITEMS) for n, steps, start in budgets}
    assert list(ignition) == [(n, steps) for n, steps, _ in budgets]  # by value: 64 before 256


def _budget_store(runs: Path):
    """Ignition by n (64, 256, 1024): correct always; swapped from 1024 on; illogical never; corrupted at 256
    only. Swapped's probes: the skill falls and a donor trace is copied."""
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
        fake_result(
            regime, "none", 0, start + 0.02 * b, start + 0.02 * b, catalyst_n=n, base_seed=b,
            probes=copies if regime == "swapped" else ignores,
        )
        for b in BASE_SEEDS
        for regime, by_n in starts.items()
        for n, start in by_n.items()
    ]  # fmt: skip
    results += [
        fake_result("none", "none", 0, 0.05, 0.05, catalyst_n=n, base_seed=b)
        for b in BASE_SEEDS
        for n in starts["correct"]
    ]
    return _report(runs, results)


def test_ignition_vs_budget_answers_once_per_regime(tmp_path):
    report = _budget_store(tmp_path)
    # illogical's ignition spreads over 0..3 items between bases: never shown to ignite, nor shown not to
    assert headline(report)[0] == (
        "Ignites by catalyst budget: `correct` from n=64 on; `corrupted` at n=256 only; `swapped` from n=1024 on; "
        "`illogical` at no budget up to n=1024 (inconclusive at n=64, 256, 1024)."
    )
    findings = ignition_findings(report)
    assert len(findings) == 4  # one per regime, none per budget
    correct, corrupted, illogical, swapped = findings
    assert correct.startswith("`correct` ignites from n=64 on: at n=64 ignition ")
    assert "largest" in correct and "at n=1024" in correct
    assert swapped.startswith("`swapped` ignites from n=1024 on")
    assert "atomic skill 0.90 → 0.50 (overwritten by the catalyst)" in swapped
    assert "writes that trace's answer (donor 0.80): it reads its trace" in swapped
    assert "after a donor trace it writes the gold answer 0.10" in swapped
    assert illogical.startswith("`illogical` ignites at no budget up to n=1024")
    assert "format rate 0.20 (it mostly writes no trace)" in illogical and "it does not read its trace" in illogical
    assert corrupted.startswith("`corrupted` ignites at n=256 only") and "(kept)" in corrupted
    text = _page(report)
    probes = next(line for line in text.splitlines() if line.startswith("| swapped | 64 | 0.90"))
    assert probes.endswith("| 0.90 | 0.50 | 0.95 | 0.80 | 0.10 |")  # no cell recorded the other probes
    assert "| regime | n | skill base | skill start | format rate | donor trace → trace | donor trace → gold |" in text
    assert "## TTT verdicts" not in text and "n/a (no TTT)" not in text  # no TTT: nothing to say about it


def test_no_budget_section_when_catalyst_n_is_fixed(tmp_path):
    report = _hand_store(tmp_path, "majority", "process")
    assert "Ignites by catalyst budget" not in " ".join(headline(report)) and "**Probes" not in _page(report)


def test_a_study_at_one_catalyst_size_shows_its_probes_once_per_ignition_entry(tmp_path):
    # the testbed's latent probe is its threshold: a report without a budget axis must still show it
    latent = {0: 0.6, 1: 0.9}
    results = [
        fake_result(regime, "none", 0, start, start, base_seed=b, probes={"latent/base": latent[b], "skill/base": 1.0})
        for b in latent
        for regime, start in (("none", 0.05), ("correct", 0.9))
    ]
    text = _page(_report(tmp_path, results))
    assert "| regime | skill base | latent base |" in text
    assert "| correct | 1.00 | 0.75 |" in text  # the mean over the two bases; regime none is no ignition entry
    assert "Probes of each catalyst checkpoint" not in _page(_hand_store(tmp_path / "none", "majority", "process"))


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory) -> Path:
    """A results store made by a real smoke sweep (Hydra multirun, TRL, tiny model)."""
    root = tmp_path_factory.mktemp("smoke")
    done = cttt("sweep", "smoke", f"runs_dir={root}/runs", f"cache_dir={root}/cache", "wandb.mode=disabled", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "runs"


@pytest.mark.slow
def test_report_of_a_real_sweep_matches_the_cells(smoke_store):
    report = build(from_store(smoke_store, "smoke"))
    directory = smoke_store / "smoke" / "report"
    write_report(report, directory)
    cells = [json.loads(p.read_text()) for p in (smoke_store / "smoke").glob("*/result.json")]
    assert len(cells) == 4
    for group in report.groups:
        mine = [
            c for c in cells if (c["axes"]["regime"], c["axes"]["signal"]) == (group.key["regime"], group.key["signal"])
        ]
        assert group.stats["start"].n == len(mine) == 1 and not group.stats["start"].has_interval
        assert group.stats["ignition"].mean == pytest.approx(mine[0]["ignition"])
    text = (directory / "report.md").read_text()
    assert text.index("## The answer") < text.index("**Contents:**") < text.index("## Ignition")
    assert (directory / "results.jsonl").read_text().count("\n") == 5  # the study, then 4 cells


@pytest.mark.slow
def test_status_reads_the_results_store(smoke_store):
    from typer.testing import CliRunner

    from catalyst_ttt.cli import app

    done = CliRunner().invoke(app, ["status", "smoke", "--runs-dir", str(smoke_store)], terminal_width=80)
    assert done.exit_code == 0, done.output
    assert "done=4" in done.output and "…" not in done.output


def test_a_config_key_that_varies_beside_the_budget_gets_its_own_panel(tmp_path):
    """Two task settings (a key that is no axis, like task.latent) never share a curve: a panel each, named by
    the key."""
    results = [
        fake_result(regime, "none", 0, start, start, catalyst_n=n, base_seed=b, config={"task": {"latent": latent}})
        for b in BASE_SEEDS
        for latent, start in (("ops", 0.6), ("maps", 0.3))
        for regime in ("none", "correct")
        for n in (64, 256)
    ]
    report = _report(tmp_path, results)
    lines = headline(report)
    assert any(
        line.startswith("Ignites by catalyst budget (task.latent=maps): `correct` from n=64 on") for line in lines
    )
    assert any(
        line.startswith("Ignites by catalyst budget (task.latent=ops): `correct` from n=64 on") for line in lines
    )
