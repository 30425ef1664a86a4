"""The report's appendix: which cells it holds and where they came from, the design of each configuration, the
statistics and the rule behind every verdict, and links to the per-cell data and the definitions."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from catalyst_ttt.hashing import PACKAGE_DIR
from catalyst_ttt.metrics.aggregate import describe_rule, design_hash, replicate_of
from catalyst_ttt.metrics.statistics import ALPHA, COVERAGE, MIN_UNITS
from catalyst_ttt.report.loading import RESULTS_FILE
from catalyst_ttt.report.study import Report
from catalyst_ttt.report.tables import config_differences
from catalyst_ttt.results import GRID
from catalyst_ttt.schema import ACCESS_CLASSES, ACCESS_MARKS

RUN_NOTES = "RUN.md"  # how a committed study was run, written by hand beside its report
REPOSITORY = PACKAGE_DIR.parent
DOCS = ("statistics.md", "metrics.md")


def link(directory: Path, target: Path, text: str) -> str:
    """A relative link from the report's directory where both lie in this checkout, else the name alone: the
    same directory always gets the same page."""
    try:
        directory.resolve().relative_to(REPOSITORY)
    except ValueError:
        return f"`{text}`"
    if not target.exists():
        return f"`{text}`"
    return f"[{text}]({Path(os.path.relpath(target.resolve(), directory.resolve())).as_posix()})"


def lines(report: Report, directory: Path) -> list[str]:
    data = f"[{RESULTS_FILE}]({RESULTS_FILE}), one JSON line per cell (the recorded grid first)"
    where = [f"Per-cell data: {data}; `cttt report --from {RESULTS_FILE}` rebuilds this report from it alone."]
    if (directory / RUN_NOTES).exists():
        where.append(f"How this study was run (command, commit, machine, wall time): [{RUN_NOTES}]({RUN_NOTES}).")
    docs = ", ".join(link(directory, REPOSITORY / "docs" / name, f"docs/{name}") for name in DOCS)
    where.append(f"Definitions of every metric, interval, test and verdict: {docs}.")
    return [
        *bullets(where),
        "**Cells**",
        "",
        *bullets(provenance(report)),
        "**Design**",
        "",
        *bullets(disclosure(report)),
        "**Statistics and rule**",
        "",
        *bullets(statistics_lines(report)),
        "**Configurations**",
        "",
        *bullets(configurations(report)),
    ]


def bullets(items: list[str]) -> list[str]:
    return [*(f"- {item}" for item in items), ""]


def provenance(report: Report) -> list[str]:
    """Which results the report holds, and which it left out or could not read."""
    cells, statuses = report.cells, defaultdict(int)
    for result in report.results:
        statuses[result["status"]] += 1
    out = [f"{len(report.results)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + "."]
    if cells.grid:
        out.append(
            f"The grid recorded by `cttt sweep` ({GRID}: {cells.grid['file']} sha256 "
            f"{cells.grid['file_sha256'][:12]}, {len(cells.grid['cells'])} cells); left out: {cells.left_out} "
            "result.json file(s) of other configurations in the store."
        )
    else:
        out.append(f"No {GRID} in the store (cells of `cttt run`): every cell is aggregated, by configuration.")
    if cells.unreadable:
        out.append(f"Unreadable: {len(cells.unreadable)} damaged file(s), not counted: {', '.join(cells.unreadable)}.")
    return out


def design_facts(results: list[dict]) -> str:
    """Items per split, trajectory items, TTT epochs over id, base seeds and cell seeds of one configuration."""
    done = [r for r in results if r["status"] == "done"] or results
    config = done[0].get("config", {})
    items = {split: max(map(len, arms.values())) for split, arms in done[0].get("items", {}).items() if arms}
    n_id = items.get("id")
    ttt, evaluation = config.get("ttt", {}), config.get("eval", {})
    steps, prompts = ttt.get("steps"), ttt.get("prompts_per_step")
    trajectory = evaluation.get("trajectory_size") if evaluation.get("trajectory", True) else 0
    if n_id:
        split_items = ", ".join(f"{split} {n}" for split, n in sorted(items.items()))
        epochs = f"{steps * prompts / n_id:.2f} (ttt.steps {steps} × ttt.prompts_per_step {prompts} / |id| {n_id})"
        if config.get("signal", {}).get("name") == "none":
            epochs = "0 (signal none: no TTT)"
        trajectory = min(trajectory or 0, n_id)
    else:
        split_items = epochs = "unknown (no per-item results)"
    base_seeds = sorted({replicate_of(r)[0] for r in results})
    seeds = sorted({replicate_of(r)[1] for r in results})
    return (
        f"items per split {split_items}; trajectory items {trajectory} of id (and of heldout); "
        f"TTT epochs over id {epochs}; base seeds {base_seeds}; cell seeds {seeds}"
    )


def disclosure(report: Report) -> list[str]:
    """The design facts per distinct design (said once for the configurations that share them), and each
    signal's access class."""
    by_config: dict[str, list[dict]] = defaultdict(list)
    for result in report.results:
        by_config[design_hash(result.get("config", {}))].append(result)
    facts: dict[str, int] = defaultdict(int)
    for results in by_config.values():
        facts[design_facts(results)] += 1
    out = [f"{text} ({n} configuration{'s' if n > 1 else ''})." for text, n in facts.items()]
    access: dict[str, set[str]] = defaultdict(set)
    for group in report.ttt_groups:
        access[group.access].add(group.key["signal"])
    if access:
        classes = [
            f"{cls}{' ' + ACCESS_MARKS[cls] if cls in ACCESS_MARKS else ''}: {', '.join(sorted(access[cls]))}"
            for cls in ACCESS_CLASSES
            if access.get(cls)
        ]
        out.append(
            "Signal access: " + "; ".join(classes) + ". Signals marked † read gold labels and ‡ use a perfect "
            "verifier: ceilings, not test-time methods."
        )
    return out


def statistics_lines(report: Report) -> list[str]:
    return [
        f"Accuracy is greedy, on every item of a split. An estimate is a mean over units with its {COVERAGE:.0%} "
        f"t interval: the unit is the base seed (claims hold over base initialisations) when there are "
        f"≥ {MIN_UNITS} base seeds, else the replicate (claims hold for these bases only); below {MIN_UNITS} units "
        "there is no interval and no verdict.",
        f"Tests are one-sided t tests over units at {ALPHA}; the {len(report.analysis.tests())} p-values of this "
        "report are adjusted together (Benjamini–Hochberg), and every p shown is adjusted.",
        f"Rule: {describe_rule(report.rule)}.",
    ]


def configurations(report: Report) -> list[str]:
    """Each configuration's hash, and the keys that tell apart configurations of the same axes."""
    differences = config_differences(report.results)
    hashes = sorted(differences)
    if "config" not in report.varying:
        return [f"{len(hashes)} configuration hash(es): " + ", ".join(f"`{h[:8]}`" for h in hashes) + "."]
    return [f"`{h[:8]}`: {', '.join(diff) or 'seeds only'}" for h, diff in sorted(differences.items())]
