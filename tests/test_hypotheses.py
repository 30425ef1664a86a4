"""Pre-registered hypotheses: parsed before any cell runs, scored from the verdicts, and flagged when edited
after a study's first launch."""

import numpy as np
import pytest

from catalyst_ttt.errors import UserError
from catalyst_ttt.hypotheses import REFUTED, SUPPORTED, fingerprint, parse, score
from catalyst_ttt.metrics.aggregate import INCONCLUSIVE, analyse
from catalyst_ttt.schema import StabilityConfig
from catalyst_ttt.simulation import Design, Truth, simulate_study
from catalyst_ttt.sweep import HYPOTHESES, load_sweep, record_grid


def _group(signal: str, truth: Truth, start_validity=0.9, final_validity=0.9, bases=6, seed=0) -> list[dict]:
    results = simulate_study(truth, Design(bases, 1), np.random.default_rng(seed))
    for r in results:
        r["axes"]["signal"] = signal
        r["cell"] += f"-{signal}"
        r["pre_ttt"]["process/step_validity"] = start_validity
        r["metrics"]["id"]["process/step_validity"] = final_validity
    return results


def _scored(spec: dict, results: list[dict]):
    return score(parse(spec, "test"), analyse(results, StabilityConfig()))


def test_a_constructed_accuracy_trap_fires_and_an_honest_rise_does_not():
    spec = {"H5": {"claim": "the trap", "rule": "trap", "where": {"signal": ["majority"]}}}
    rising = Truth("rise", ignition=0.5, gain=0.3, base_sd=0.05, cell_sd=0.02)
    (trapped,) = _scored(spec, _group("majority", rising, start_validity=0.9, final_validity=0.4))
    assert trapped.verdict == SUPPORTED and "step validity -0.500" in trapped.evidence
    (honest,) = _scored(spec, _group("majority", rising, start_validity=0.9, final_validity=0.95))
    assert honest.verdict == REFUTED
    (flat,) = _scored(spec, _group("majority", Truth("flat", gain=0.0), final_validity=0.4))
    assert flat.verdict == INCONCLUSIVE  # no rise: the trap cannot be shown or ruled out


def test_stable_and_rescues_read_the_stability_verdicts():
    collapse = Truth("drop", gain=-0.2)
    steady = Truth("steady", gain=0.0)
    results = _group("majority", collapse) + _group("process", steady, seed=1)
    stable = {"H2": {"claim": "intrinsic stays stable", "rule": "stable", "where": {"signal": ["majority"]}}}
    assert _scored(stable, results)[0].verdict == REFUTED
    rescue = {
        "H3": {
            "claim": "process rescues",
            "rule": "rescues",
            "where": {"signal": ["process"]},
            "against": {"signal": ["majority"]},
        }
    }
    assert _scored(rescue, results)[0].verdict == SUPPORTED
    both_fail = _group("majority", collapse) + _group("process", collapse, seed=1)
    assert _scored(rescue, both_fail)[0].verdict == REFUTED


def test_ignites_per_latent_kind():
    spec = {"H1": {"claim": "c", "rule": "ignites", "where": {"regime": ["correct"]}, "per": "latent"}}
    lit, dark = (
        _group("none", Truth("lit", ignition=0.6)),
        _group("none", Truth("dark", 0.3, 0.0, base_sd=0.02, cell_sd=0.02)),
    )
    for kind, results in (("steps", lit), ("direct", dark)):
        for r in results:
            r["axes"] |= {"latent": kind, "catalyst_n": 256, "ttt_steps": 12}
            r["cell"] += f"-{kind}"
    scores = {s.part: s for s in _scored(spec, lit + dark)}
    assert {part: s.verdict for part, s in scores.items()} == {"steps": SUPPORTED, "direct": REFUTED}
    # named by what fixes the start, not by the TTT horizon an ignition entry is read before
    assert "largest correct catalyst_n=256: +" in scores["steps"].evidence
    assert "ttt_steps" not in scores["steps"].evidence + scores["direct"].evidence


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"H1": {"claim": "c", "rule": "nope"}}, "valid: ignites, stable, rescues, trap"),
        ({"H1": {"rule": "stable"}}, "needs 'claim' and 'rule'"),
        ({"H1": {"claim": "c", "rule": "rescues", "where": {"signal": ["a"]}}}, "needs 'against'"),
        ({"H1": {"claim": "c", "rule": "stable", "where": {"signal": "a"}}}, "lists of values"),
    ],
)
def test_bad_hypotheses_are_refused_before_any_cell(spec, message):
    with pytest.raises(UserError, match=message):
        parse(spec, "sweeps/x.yaml")


def test_the_first_launch_registers_the_hypotheses_and_never_overwrites_them(tmp_path):
    sweep = load_sweep("question", [f"runs_dir={tmp_path}", "base.seed=0", "task.latent=steps", "regime=correct"])
    cells = sweep.cells()[:2]
    record_grid(sweep, cells)
    registered = (tmp_path / "question" / HYPOTHESES).read_text()
    edited = dict(sweep.hypotheses, H9={"claim": "added later", "rule": "stable"})
    sweep.hypotheses = edited
    record_grid(sweep, cells)
    assert (tmp_path / "question" / HYPOTHESES).read_text() == registered
    assert fingerprint(edited) != fingerprint(load_sweep("question", []).hypotheses)


def test_the_report_scores_the_registered_hypotheses_and_flags_edits(tmp_path):
    """A study's hypotheses are fixed at its first launch: the report scores those, and says so when the
    study file's hypotheses changed later; a rebuild from results.jsonl says the same."""
    from catalyst_ttt.report import build, from_store
    from catalyst_ttt.report.loading import read_file, write_file
    from catalyst_ttt.report.page import markdown as page
    from catalyst_ttt.results import GRID, write_json
    from helpers.fakes import fake_result, write_store

    results = [fake_result("correct", "majority", 0, 0.8, 0.8, base=0.0, base_seed=b) for b in range(3)]
    write_store(tmp_path, "hand", results)
    registered = {
        "H2": {"claim": "Majority voting keeps TTT stable.", "rule": "stable", "where": {"signal": ["majority"]}}
    }
    grid = {
        "sweep": "hand",
        "file": "hand.yaml",
        "file_sha256": "0" * 64,
        "cells": {r["cell"]: r["config_hash"] for r in results},
        "hypotheses": registered,
        "registered_hypotheses": {"fingerprint": fingerprint(registered), "hypotheses": registered},
    }
    write_json(tmp_path / "hand" / GRID, grid)
    honest = build(from_store(tmp_path, "hand"))
    assert [h.id for h in honest.hypotheses] == ["H2"] and honest.hypotheses_warning is None
    assert "H2" in page(honest, {}, tmp_path).split("##")[1]  # the hypotheses open the page
    edited = dict(registered, H2=dict(registered["H2"], claim="Majority voting always improves TTT."))
    write_json(tmp_path / "hand" / GRID, grid | {"hypotheses": edited})
    report = build(from_store(tmp_path, "hand"))
    assert "edited after its first launch" in report.hypotheses_warning
    assert report.hypotheses[0].claim == "Majority voting keeps TTT stable."  # the registered claim is scored
    assert "edited after its first launch" in page(report, {}, tmp_path)
    write_file(report.cells, tmp_path / "results.jsonl")
    assert build(read_file(tmp_path / "results.jsonl")).hypotheses_warning == report.hypotheses_warning
