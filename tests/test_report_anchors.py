"""The report's Anchors section on hand-made results: verdicts per anchor and the early-warning table."""

from pathlib import Path

from catalyst_ttt.report import build_report, markdown
from helpers.fakes import fake_result, write_store

# Step logs whose label-free predictor fires at step 7 (see test_anchors), and ones where it never fires.
CONVERGING = [
    {"ttt/step": step, "ttrl/majority_ratio": ratio, "ttt/distinct_answers": distinct}
    for step, (ratio, distinct) in enumerate(
        zip([0.4, 0.4, 0.4, 0.45, 0.5, 0.5, 0.6, 0.7], [4.0, 4.0, 4.0, 3.6, 3.4, 3.0, 2.6, 2.0]), start=1
    )
]
STEADY = [{**row, "ttrl/majority_ratio": 0.4, "ttt/distinct_answers": 4.0} for row in CONVERGING]
# On 32 trajectory items the floor is 0.6 - 0.173: accuracy stays below it from step 10.
COLLAPSING = [0.6, 0.6, 0.3, 0.2, 0.2]


def _anchor_store(runs: Path) -> Path:
    """majority collapses without an anchor and holds with kl; process holds with both (one false alarm)."""
    results = []
    for seed in (0, 1, 2):
        results += [
            fake_result("correct", "majority", seed, 0.6, 0.2, trajectory=COLLAPSING, ttt_log=CONVERGING),
            fake_result("correct", "majority", seed, 0.6, 0.65, anchor="kl", ttt_log=STEADY),
            fake_result("correct", "process", seed, 0.6, 0.65, ttt_log=CONVERGING if seed == 0 else STEADY),
            fake_result("correct", "process", seed, 0.6, 0.65, anchor="kl", ttt_log=STEADY),
        ]
    write_store(runs, "hand", results)
    return runs


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_anchors_section_says_which_anchor_keeps_which_signal_stable(tmp_path):
    report = build_report(_anchor_store(tmp_path), "hand")
    assert "anchor" in report.varying
    assert sorted((g.key["signal"], g.key["anchor"], len(g.cells)) for g in report.groups) == [
        ("majority", "kl", 3),
        ("majority", "none", 3),
        ("process", "kl", 3),
        ("process", "none", 3),
    ]  # anchors never pool
    assert len(report.ignition) == 1 and len(report.ignition[0].replicates) == 3  # one TTT start per replicate
    text = markdown(report, embed=False)
    section = text[text.index("## Anchors") : text.index("## Information gain calibration")]
    down, up = f"{(13 - 38) / 64:+.3f}", f"{(42 - 38) / 64:+.3f}"  # items right of 64: 0.6 -> 0.2 or 0.65
    none, kl = _line(section, "| correct | majority |").strip("| ").split(" | ")[2:4]
    assert none.startswith(f"unstable (gain {down} [") and none.endswith("]; 3)")
    assert kl.startswith(f"stable (gain {up} [") and kl.endswith("]; 3)")
    assert _line(section, "| correct | process |").count(f"| stable (gain {up} [") == 2
    assert "- On `correct`, `majority` is stable with `kl`; unstable with `none`." in section
    assert "- On `correct`, `process` is stable with `none`, `kl`." in section
    assert "| correct | majority | none | 0 | 1 | 10 | 7 | 3 |" in section
    assert "| correct | majority | kl | 0 | 2 | – | – | – |" in section
    assert "| correct | process | none | 0 | 0 | – | 7 | – |" in section  # a false alarm
    assert (
        "fired before the collapse in 3 of 3 collapsed cell(s) (median lead 3 steps); it fired in 1 of 9 "
        "cell(s) that did not collapse (false alarms)" in section
    )


def test_no_anchors_section_when_every_group_has_the_same_anchor(tmp_path):
    results = [fake_result("correct", "majority", seed, 0.6, 0.2, ttt_log=CONVERGING) for seed in (0, 1, 2)]
    write_store(tmp_path, "hand", results)
    report = build_report(tmp_path, "hand")
    assert "anchor" not in report.varying and "## Anchors" not in markdown(report, embed=False)
