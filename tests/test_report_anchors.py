"""The report's Anchors section on hand-made results: verdicts per anchor, the signal × anchor matrix and the
early-warning table."""

from pathlib import Path

from catalyst_ttt.report import build, from_store
from catalyst_ttt.report.answer import anchor_findings, headline
from catalyst_ttt.report.page import markdown
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


def _anchor_report(runs: Path):
    """majority collapses without an anchor and holds with kl; process holds with both (one false alarm)."""
    results = []
    for b in (0, 1, 2):
        results += [
            fake_result("correct", "majority", 0, 0.6, 0.2, trajectory=COLLAPSING, ttt_log=CONVERGING, base_seed=b),
            fake_result("correct", "majority", 0, 0.6, 0.61, anchor="kl", ttt_log=STEADY, base_seed=b),
            fake_result("correct", "process", 0, 0.6, 0.61, ttt_log=CONVERGING if b == 0 else STEADY, base_seed=b),
            fake_result("correct", "process", 0, 0.6, 0.61, anchor="kl", ttt_log=STEADY, base_seed=b),
        ]
    write_store(runs, "hand", results)
    return build(from_store(runs, "hand"))


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_anchors_section_says_which_anchor_keeps_which_signal_stable(tmp_path):
    report = _anchor_report(tmp_path)
    assert "anchor" in report.varying
    assert sorted((g.key["signal"], g.key["anchor"], len(g.cells)) for g in report.groups) == [
        ("majority", "kl", 3),
        ("majority", "none", 3),
        ("process", "kl", 3),
        ("process", "none", 3),
    ]  # anchors never pool
    assert len(report.ignition) == 1 and len(report.ignition[0].replicates) == 3  # one TTT start per replicate
    assert "Groups kept stable, by anchor: `kl` 2 of 2; `none` 1 of 2." in headline(report)
    text = markdown(report, {}, tmp_path)
    section = text[text.index("## Anchors") : text.index("## TTT over steps")]
    down, up = f"{(13 - 38) / 64:+.3f}", f"{(39 - 38) / 64:+.3f}"  # items right of 64: 0.6 -> 0.2 or 0.61
    assert "| regime | signal | none: verdict | none: gain | kl: verdict | kl: gain |" in section
    assert _line(section, "| correct | majority |") == f"| correct | majority | unstable | {down} | stable | {up} |"
    assert _line(section, "| correct | process |") == f"| correct | process | stable | {up} | stable | {up} |"
    assert anchor_findings(report) == [
        "On `correct`, `majority`: unstable with `none`; stable with `kl`.",
        "On `correct`, `process`: stable with `none`, `kl`.",
    ]


def test_the_early_warning_table_keeps_only_cells_with_something_to_show(tmp_path):
    text = markdown(_anchor_report(tmp_path), {}, tmp_path)
    section = text[text.index("## TTT over steps") :]
    assert (
        "Early warning: fired before 3 of 3 collapses (median lead 3 steps), and in 1 of 9 cells that did not "
        "collapse (false alarms)."
    ) in section
    rows = [line for line in section.splitlines() if line.startswith("| correct |")]
    assert rows[:4] == [
        "| correct | majority | none | 0 | 0 | 10 | 7 | 3 |",
        "| correct | majority | none | 1 | 0 | 10 | 7 | 3 |",
        "| correct | majority | none | 2 | 0 | 10 | 7 | 3 |",
        "| correct | process | none | 0 | 0 | – | 7 | – |",  # the false alarm
    ]
    assert not any("| kl |" in row for row in rows)  # neither collapsed nor warned: left out


def test_no_anchors_section_when_every_group_has_the_same_anchor(tmp_path):
    results = [fake_result("correct", "majority", 0, 0.6, 0.2, ttt_log=CONVERGING, base_seed=b) for b in (0, 1, 2)]
    write_store(tmp_path, "hand", results)
    report = build(from_store(tmp_path, "hand"))
    assert "anchor" not in report.varying and "## Anchors" not in markdown(report, {}, tmp_path)
