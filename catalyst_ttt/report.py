"""`cttt report`: a sweep's results store as tables, plots, and an answer generated from them.

Every interval, test and verdict is defined in docs/statistics.md.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from markdown_it import MarkdownIt  # noqa: E402
from rich.table import Table  # noqa: E402

from catalyst_ttt.errors import UserError  # noqa: E402
from catalyst_ttt.metrics.aggregate import (  # noqa: E402
    Group,
    Ignition,
    aggregate,
    describe_rule,  # noqa: E402
    design,
    design_hash,
    group_key,
    ignition,
    ignition_key,
    replicate_of,
    rule_of,
    shift_splits,
)
from catalyst_ttt.metrics.statistics import NO_INTERVAL, Estimate, format_p  # noqa: E402
from catalyst_ttt.regimes import CALIBRATION_REGIMES  # noqa: E402
from catalyst_ttt.results import (  # noqa: E402
    GRID,
    TRAJECTORY,
    read_record,
    read_store,
    staged_directory,
    sweep_dir,
    write_atomic,
)
from catalyst_ttt.schema import ACCESS_CLASSES, ACCESS_MARKS, ANCHORS, ProbeReading, StabilityConfig  # noqa: E402

NO_TTT_CLASS = "no TTT"
# The context axes the table shows as columns only when they vary; regime and signal are always shown.
SHOWN_AXES = ("regime", "signal", "reference", "config")


@dataclass
class Report:
    sweep: str
    results: list[dict]  # the aggregated results: the recorded grid's cells, or every readable cell
    groups: list[Group]
    ignition: list[Ignition]
    rule: StabilityConfig
    left_out: int = 0  # result.json files of other configurations than the recorded grid
    corrupt: list[Path] = field(default_factory=list)
    grid: dict | None = None
    calibration: IGCalibration | None = None
    answer: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    directory: Path | None = None

    @property
    def varying(self) -> list[str]:
        """What names a group beside regime and signal: see `varying`."""
        return varying([g.key for g in self.groups])

    @property
    def ignition_varying(self) -> list[str]:
        return varying([entry.key for entry in self.ignition])


def varying(keys: list[dict]) -> list[str]:
    """Axes whose values differ between keys, and `config` where it alone tells two keys apart."""
    names = {k for key in keys for k in key if k not in SHOWN_AXES}
    axes = sorted(k for k in names if len({str(key.get(k)) for key in keys}) > 1)
    by_axes = {tuple((k, str(v)) for k, v in key.items() if k != "config") for key in keys}
    return axes + (["config"] if len(by_axes) < len(keys) else [])


def build_report(runs_dir: str | Path, sweep: str) -> Report:
    store = read_store(runs_dir, sweep)
    grid = read_record(sweep_dir(runs_dir, sweep) / GRID)
    results = of_grid(store.results, grid)
    if not any(r["status"] == "done" for r in results):
        raise UserError(
            f"sweep {sweep!r} has no finished cells in {sweep_dir(runs_dir, sweep)}; run `cttt sweep {sweep}` first"
        )
    rule = rule_of(results)
    report = Report(
        sweep,
        results,
        aggregate(results, rule),
        ignition(results),
        rule,
        left_out=len(store.results) - len(results),
        corrupt=store.corrupt,
        grid=grid,
        calibration=ig_calibration(results),
    )
    report.answer = the_answer(report)
    return report


@dataclass
class IGCalibration:
    """IG of gold, swapped, illogical and corrupted `heldout` traces under each base's reader."""

    by_reader: dict[str, dict[str, float]]  # "task/model/base seed" -> regime -> mean ig/total

    def holds(self) -> bool:
        """IG reads as information only when, for every reader, gold traces gain (> 0) and gain more
        than every corruption of them. The order among corruptions is reported, not required: a
        reader that reads traces copies a swapped trace's confident wrong chain, so `swapped` can
        sit below `illogical` (measured: docs/metrics.md)."""
        return all(
            row.get("correct", -math.inf) > max(0.0, *(v for k, v in row.items() if k != "correct"))
            for row in self.by_reader.values()
        )


def ig_calibration(results: list[dict]) -> IGCalibration | None:
    by_reader = {
        f"{r['axes']['task']}/{r['axes']['model']}/base seed {r['axes'].get('base_seed', 0)}": r["ig_calibration"]
        for r in results
        if r["status"] == "done" and r.get("ig_calibration")
    }
    return IGCalibration(by_reader) if by_reader else None


def calibration_lines(report: Report) -> list[str]:
    calibration = report.calibration
    if calibration is None:
        return ["No cell recorded an IG calibration (IG disabled): ig/total is not shown as information."]
    present = {regime for row in calibration.by_reader.values() for regime in row}
    regimes = [r for r in CALIBRATION_REGIMES if r in present]
    rows = [
        [reader, *(f"{row.get(r, math.nan):+.3f}" for r in regimes)] for reader, row in calibration.by_reader.items()
    ]
    verdict_line = (
        "Calibration holds (for every reader, gold > 0 and gold > every corruption): ig/total is interpretable."
        if calibration.holds()
        else "Calibration FAILS: IG is not interpretable for this sweep; ig/total is not used in the answer."
    )
    return [
        "ig/total (nats per answer token) of each regime's traces of `heldout` items, with the gold answer, under "
        "the IG reader of each base:",
        "",
        _markdown_table(["reader", *regimes], rows),
        "",
        verdict_line,
    ]


def of_grid(results: list[dict], grid: dict | None) -> list[dict]:
    """The cells of the recorded grid (same cell id and config hash); every cell without a grid record."""
    if not grid:
        return results
    return [r for r in results if grid["cells"].get(r.get("cell")) == r.get("config_hash")]


def fmt(estimate: Estimate | None, signed: bool = False) -> str:
    if estimate is None or estimate.n == 0 or math.isnan(estimate.mean):
        return "–"
    value = f"{estimate.mean:+.3f}" if signed else f"{estimate.mean:.3f}"
    return f"{value} [{estimate.low:.3f}, {estimate.high:.3f}]" if estimate.has_interval else value


def signal_name(group: Group) -> str:
    key = group.key
    ref = f" [ref={key['reference']}]" if key["signal"] in ("verifree", "predictive") else ""
    marker = ACCESS_MARKS.get(group.access)
    return f"{key['signal']}{ref}" + (f" {marker}" if marker else "")


def access_class(group: Group) -> str:
    return NO_TTT_CLASS if group.key["signal"] == "none" else group.access


def _context(key: dict, varying: list[str]) -> str:
    return ", ".join(f"{axis}={str(key[axis])[:8]}" for axis in varying if axis in key)


def where(group_or_ignition, varying: list[str]) -> str:
    context = _context(group_or_ignition.key, varying)
    return f"`{group_or_ignition.key['regime']}`" + (f" ({context})" if context else "")


def replicates(group: Group) -> str:
    n = len(group.cells)
    notes = ([NO_INTERVAL] if 0 < n < 3 else []) + group.flags
    return f"{n}" + (f" ({'; '.join(notes)})" if notes else "")


def verdict(group: Group) -> str:
    return group.verdict + (": " + "; ".join(group.reasons) if group.reasons else "")


def best(group: Group) -> str:
    step = group.peak_step
    return fmt(group.stats.get("best")) + (f" @ {step:g}" if step is not None else "")


def p_value(group: Group, name: str) -> str:
    test = group.paired[name].test if name in group.paired else None
    return format_p(test.p) if test else "–"


def ordered(groups: list[Group]) -> list[Group]:
    """Groups by access class (no TTT first), then as aggregated."""
    order = (NO_TTT_CLASS, *ACCESS_CLASSES)
    return sorted(groups, key=lambda g: order.index(access_class(g)) if access_class(g) in order else len(order))


# -- the answer ---------------------------------------------------------------------------


def the_answer(report: Report) -> list[str]:
    """Sentences generated from the statistics; only groups with a verdict are spoken of."""
    judged = [g for g in report.groups if g.has_verdict]
    sentences = _ignition_sentences(report) + _stability_sentences(judged, report) + _trap_sentences(judged, report)
    return sentences or ["No finished cells to answer from."]


def _ignition_sentences(report: Report) -> list[str]:
    if varies_budget(report):
        return budget_answer(report)  # one sentence per regime and curve, not per budget
    out = []
    for entry in report.ignition:
        estimate, test = entry.paired.estimate, entry.paired.test
        verb = {True: "ignites", False: "does not ignite", None: "cannot be tested (no per-item results)"}
        interval = "" if estimate.has_interval else f", {NO_INTERVAL}"
        evidence = f"; {test.describe()}" if test else ""
        out.append(
            f"Regime {where(entry, report.ignition_varying)} {verb[entry.ignites]}: id greedy accuracy "
            f"{fmt(estimate, signed=True)} over `none` before TTT ({estimate.n} replicate(s){interval}{evidence})."
        )
    return out


def _judged(group: Group) -> str:
    gain = group.stats.get("gain")
    interval = f", {NO_INTERVAL}" if gain and not gain.has_interval else ""
    flags = "".join(f", {flag}" for flag in group.flags)
    if group.stable:
        return (
            f"`{signal_name(group)}` (start {group.mean('start'):.3f} → final {group.mean('final'):.3f}, "
            f"gain {fmt(gain, signed=True)}, {group.paired['gain'].test.describe()}; best {best(group)}; "
            f"{len(group.cells)} replicate(s){interval}{flags})"
        )
    return f"`{signal_name(group)}` ({'; '.join(group.reasons)}; {len(group.cells)} replicate(s){interval}{flags})"


def _stability_sentences(judged: list[Group], report: Report) -> list[str]:
    by_place: dict[str, list[Group]] = defaultdict(list)
    for group in judged:
        by_place[where(group, report.varying)].append(group)
    out = []
    for place, members in sorted(by_place.items()):
        parts = [
            f"{name} under " + ", ".join(_judged(g) for g in members if g.stable is flag)
            for name, flag in (("stable", True), ("unstable", False))
            if any(g.stable is flag for g in members)
        ]
        out.append(f"On {place}, TTT is " + "; ".join(parts) + ".")
    if judged:
        out.append(
            "Every verdict is judged at the final checkpoint (after the last TTT step); the best trajectory "
            "point is shown beside it and never used for a verdict."
        )
        out.append(f"Rule: {describe_rule(report.rule)}.")
    else:
        out.append("No group has a stability verdict: every TTT start is at its floor, or TTT was not run.")
    return out


def _trap_sentences(judged: list[Group], report: Report) -> list[str]:
    """Accuracy rose significantly during TTT while step validity (or IG against no TTT) fell."""
    no_ttt = {repr(ignition_key(g.cells[0])): g for g in report.groups if g.key["signal"] == "none" and g.cells}
    traps = []
    for group in judged:
        if not group.cells or not group.paired["gain"].test.higher:
            continue
        gain = group.stats["gain"].mean
        validity_drop = group.mean("start_step_validity") - group.mean("step_validity")
        baseline = no_ttt.get(repr(ignition_key(group.cells[0])))
        ig_readable = report.calibration is not None and report.calibration.holds()
        ig_change = group.mean("ig_total") - baseline.mean("ig_total") if baseline and ig_readable else math.nan
        if validity_drop > report.rule.trap_drop or -ig_change > report.rule.trap_drop:
            traps.append(
                f"{group.key['regime']} x `{signal_name(group)}` (accuracy {gain:+.3f}, "
                f"{group.paired['gain'].test.describe()}, step validity {-validity_drop:+.3f}"
                + (f", ig/total {ig_change:+.3f} vs no TTT" if not math.isnan(ig_change) else "")
                + f", {len(group.cells)} replicate(s))"
            )
    if not traps:
        return [
            "No group with a verdict fell into the accuracy trap (accuracy significantly up while step validity "
            f"or information gain fell by more than {report.rule.trap_drop})."
        ]
    return ["Accuracy trap — accuracy rose while the process got worse: " + "; ".join(traps) + "."]


# -- header and tables --------------------------------------------------------------------


def _design_facts(results: list[dict]) -> str:
    done = [r for r in results if r["status"] == "done"]
    config = (done or results)[0].get("config", {})
    items = {split: len(arms["final"]) for split, arms in done[0].get("items", {}).items()} if done else {}
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
        f"TTT epochs over id {epochs}; base seeds {base_seeds}; cell seeds {seeds}; "
        f"{len(base_seeds) * len(seeds)} replicate(s) per group at most."
    )


def disclosure(report: Report) -> list[str]:
    """Per configuration: items per split, trajectory items, TTT epochs over id, base seeds and seeds."""
    by_config: dict[str, list[dict]] = defaultdict(list)
    for result in report.results:
        by_config[design_hash(result.get("config", {}))].append(result)
    facts: dict[str, list[str]] = defaultdict(list)  # the same design facts for several configs: said once
    for chash, results in sorted(by_config.items()):
        facts[_design_facts(results)].append(chash[:8])
    lines = [
        (f"config(s) {', '.join(f'`{h}`' for h in hashes)}: " if len(facts) > 1 else "") + text
        for text, hashes in facts.items()
    ]
    access: dict[str, set[str]] = defaultdict(set)
    for group in report.groups:
        if group.key["signal"] != "none":
            access[group.access].add(group.key["signal"])
    if access:
        lines.append(
            "Signal access: "
            + "; ".join(
                f"{cls}{' ' + ACCESS_MARKS[cls] if cls in ACCESS_MARKS else ''}: {', '.join(sorted(access[cls]))}"
                for cls in ACCESS_CLASSES
                if access.get(cls)
            )
            + ". Signals marked † read gold labels and ‡ use a perfect verifier: ceilings, not test-time methods."
        )
    return lines


def provenance(report: Report) -> list[str]:
    """Which results the report holds, and which it left out or could not read."""
    done = sum(r["status"] == "done" for r in report.results)
    lines = [f"{done} of {len(report.results)} cells done."]
    if report.grid:
        lines.append(
            f"Cells of the grid recorded by `cttt sweep` ({GRID}: {report.grid['file']} sha256 "
            f"{report.grid['file_sha256'][:12]}, {len(report.grid['cells'])} cells); "
            f"left out: {report.left_out} result.json file(s) of other configurations in this store."
        )
    else:
        lines.append(f"No {GRID} in the store (cells of `cttt run`): every cell is aggregated, by configuration.")
    if report.corrupt:
        lines.append(
            f"Unreadable: {len(report.corrupt)} damaged file(s), not counted: "
            + ", ".join(str(p) for p in report.corrupt)
            + "."
        )
    configs = config_differences(report.results)
    if "config" in report.varying:
        lines.append(
            "Configurations (never pooled): "
            + "; ".join(f"`{h[:8]}`: {', '.join(diff) or 'seeds only'}" for h, diff in sorted(configs.items()))
            + "."
        )
    return lines


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: json.dumps(node)}


def config_differences(results: list[dict]) -> dict[str, list[str]]:
    """design hash -> its `key=value`s for the keys that tell apart configs of the same axes."""
    flat: dict[str, dict] = {}
    by_axes: dict[str, set[str]] = defaultdict(set)
    for result in results:
        config, key = result.get("config", {}), group_key(result)
        flat.setdefault(key["config"], _flat(design(config)))
        by_axes[repr({k: v for k, v in key.items() if k != "config"})].add(key["config"])
    differing = sorted(
        {
            k
            for hashes in by_axes.values()
            for k in {k for h in hashes for k in flat[h]}
            if len({flat[h].get(k) for h in hashes}) > 1
        }
    )
    return {h: [f"{k}={values.get(k, 'unset')}" for k in differing] for h, values in flat.items()}


COLUMNS = {
    "start": lambda g: fmt(g.stats.get("start")),
    "final": lambda g: fmt(g.stats.get("final")),
    "best @ step": best,
    "gain": lambda g: fmt(g.stats.get("gain"), signed=True),
    "gain p": lambda g: p_value(g, "gain"),
    "ignition": lambda g: fmt(g.stats.get("ignition"), signed=True),
    "ignition p": lambda g: p_value(g, "ignition"),
    "drawdown": lambda g: fmt(g.stats.get("drawdown")),
    "collapse": lambda g: fmt(g.stats.get("collapse")),
    "collapsed": lambda g: f"{len(g.collapse_steps)}/{len(g.cells)}" if g.cells else "–",
    "step validity": lambda g: fmt(g.stats.get("step_validity")),
    "ig/total": lambda g: fmt(g.stats.get("ig_total")),
}


def _row(group: Group, varying: list[str]) -> list[str]:
    return [
        *[str(group.key.get(axis, "–"))[:8] for axis in varying],
        group.key["regime"],
        signal_name(group),
        access_class(group),
        replicates(group),
        *[read(group) for read in COLUMNS.values()],
        verdict(group),
    ]


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def markdown_table(report: Report) -> str:
    header = [*report.varying, "regime", "signal", "access", "replicates", *COLUMNS, "verdict"]
    return _markdown_table(header, [_row(g, report.varying) for g in ordered(report.groups)])


def ignition_table(report: Report) -> str:
    header = [*report.ignition_varying, "regime", "replicates", "ignition", "McNemar p", "up / down", "ignites"]
    rows = []
    for entry in report.ignition:
        test, estimate = entry.paired.test, entry.paired.estimate
        rows.append(
            [
                *[str(entry.key.get(axis, "–"))[:8] for axis in report.ignition_varying],
                entry.key["regime"],
                f"{estimate.n}" + (f" ({NO_INTERVAL})" if estimate.n < 3 else ""),
                fmt(estimate, signed=True),
                format_p(test.p) if test else "–",
                f"{test.gains} / {test.losses}" if test else "–",
                {True: "yes", False: "no", None: "–"}[entry.ignites],
            ]
        )
    return _markdown_table(header, rows)


def variance_table(report: Report) -> str:
    """Standard deviations of the base-to-base and cell-to-cell variance components, where estimable."""
    header = [*report.varying, "regime", "signal", "metric", "sd base-to-base", "sd cell-to-cell", "base share"]
    rows = []
    for group in ordered(report.groups):
        for metric, parts in group.variance.items():
            if not (parts["base"] or parts["cell"]):  # not estimable, or no variance at all
                continue
            rows.append(
                [
                    *[str(group.key.get(axis, "–"))[:8] for axis in report.varying],
                    group.key["regime"],
                    signal_name(group),
                    metric,
                    "–" if parts["base"] is None else f"{math.sqrt(parts['base']):.3f}",
                    "–" if parts["cell"] is None else f"{math.sqrt(parts['cell']):.3f}",
                    "–" if parts["base_share"] is None else f"{100 * parts['base_share']:.0f}%",
                ]
            )
    if not rows:
        return "No group varies between replicates, or the design cannot tell (one base seed, one seed each)."
    return _markdown_table(header, rows)


def shift_table(report: Report) -> str:
    shifts = ["heldout", *shift_splits(report.results)]
    header = [*report.varying, "regime", "signal", *shifts]
    rows = [
        [
            *[str(g.key.get(axis, "–"))[:8] for axis in report.varying],
            g.key["regime"],
            signal_name(g),
            *[fmt(g.stats.get(s)) for s in shifts],
        ]
        for g in ordered(report.groups)
        if g.cells
    ]
    return _markdown_table(header, rows)


# TTT diagnostics (docs/metrics.md), averaged over logged steps in each cell, then over replicates.
DIAGNOSTICS = (
    "ttt/reward",
    "ttt/frac_zero_std",
    "ttrl/label_acc",
    "ttrl/majority_ratio",
    "ttrl/local_valid_wrong",
)


def diagnostics_table(report: Report) -> str:
    header = [*report.varying, "regime", "signal", *DIAGNOSTICS]
    rows = []
    for g in ordered(report.groups):
        logged = [c["ttt"] for c in g.cells if c.get("ttt")]
        if not logged:
            continue
        means = [[run[key] for run in logged if key in run] for key in DIAGNOSTICS]
        rows.append(
            [
                *[str(g.key.get(axis, "–"))[:8] for axis in report.varying],
                g.key["regime"],
                signal_name(g),
                *[f"{sum(values) / len(values):.3f}" if values else "–" for values in means],
            ]
        )
    return _markdown_table(header, rows) if rows else "No cell trained at test time."


def summary_table(groups: list[Group], title: str) -> Table:
    table = Table(title=title)
    for column in ("regime", "signal", "access", "replicates", "final", "gain", "ignition", "verdict"):
        table.add_column(column)
    for g in ordered(groups):
        table.add_row(
            g.key["regime"],
            signal_name(g),
            access_class(g),
            replicates(g),
            COLUMNS["final"](g),
            COLUMNS["gain"](g),
            COLUMNS["ignition"](g),
            g.verdict,
        )
    return table


# -- anchors and the early warning --------------------------------------------------------


def anchors_vary(report: Report) -> bool:
    """The Anchors section is shown only when groups differ by `ttt.anchor`."""
    return "anchor" in report.varying


def _anchors(groups: list[Group]) -> list[str]:
    present = {str(g.key.get("anchor", "none")) for g in groups}
    return [a for a in ANCHORS if a in present] + sorted(present - set(ANCHORS))


def _by_anchor(report: Report) -> dict[tuple, dict[str, Group]]:
    """(context without the anchor, regime, signal) -> anchor -> its group, in table order."""
    context = [axis for axis in report.varying if axis != "anchor"]
    rows: dict[tuple, dict[str, Group]] = {}
    for group in ordered(report.groups):
        if group.key["signal"] == "none":
            continue
        row = (*[str(group.key.get(axis, "–"))[:8] for axis in context], group.key["regime"], signal_name(group))
        rows.setdefault(row, {})[str(group.key.get("anchor", "none"))] = group
    return rows


def anchors_table(report: Report) -> str:
    """Per signal, each anchor's verdict with the gain (final − start) and its 95% interval."""
    anchors = _anchors(report.groups)
    context = [axis for axis in report.varying if axis != "anchor"]
    header = [*context, "regime", "signal", *(f"anchor {a}" for a in anchors)]
    rows = [[*row, *(_anchor_cell(groups.get(a)) for a in anchors)] for row, groups in _by_anchor(report).items()]
    return _markdown_table(header, rows)


def _anchor_cell(group: Group | None) -> str:
    if group is None:
        return "–"
    return f"{group.verdict} (gain {fmt(group.stats.get('gain'), signed=True)}; {replicates(group)})"


def anchor_sentences(report: Report) -> list[str]:
    """Which anchor keeps which signal stable, from the verdicts (groups without a verdict are named so)."""
    out = []
    for row, groups in _by_anchor(report).items():
        *context, regime, signal = row
        place = f"`{regime}`" + (f" ({', '.join(context)})" if context else "")
        parts = [
            f"{name} with {', '.join(f'`{a}`' for a in _anchors(list(groups.values())) if groups[a].stable is flag)}"
            for name, flag in (("stable", True), ("unstable", False), ("without a verdict", None))
            if any(g.stable is flag for g in groups.values())
        ]
        out.append(f"On {place}, `{signal}` is " + "; ".join(parts) + ".")
    return out


def early_warning_table(report: Report) -> str:
    """Per finished TTT cell: the step accuracy collapsed at, the label-free predictor's step, and the lead."""
    context = [axis for axis in report.varying if axis != "anchor"]
    header = [*context, "regime", "signal", "anchor", "base seed", "seed", "collapse step", "predictor step", "lead"]
    rows = []
    for group in ordered(report.groups):
        if group.key["signal"] == "none":
            continue
        for cell in sorted(group.cells, key=replicate_of):
            stab = cell["stab"]
            values = [stab.get(f"stab/{k}") for k in ("collapse_step", "predictor_step", "warning_lead")]
            rows.append(
                [
                    *[str(group.key.get(axis, "–"))[:8] for axis in context],
                    group.key["regime"],
                    signal_name(group),
                    str(group.key.get("anchor", "none")),
                    *[str(v) for v in replicate_of(cell)],
                    *["–" if v is None else str(v) for v in values],
                ]
            )
    return _markdown_table(header, rows) if rows else "No cell trained at test time."


def early_warning_summary(report: Report) -> str:
    """How often the predictor fired before a collapse, by how much, and how often without one."""
    cells = [c for g in report.groups if g.key["signal"] != "none" for c in g.cells]
    collapsed = [c["stab"] for c in cells if c["stab"].get("stab/collapse_step") is not None]
    steady = [c["stab"] for c in cells if c["stab"].get("stab/collapse_step") is None]
    leads = sorted(s["stab/warning_lead"] for s in collapsed if (s.get("stab/warning_lead") or 0) > 0)
    alarms = sum(s.get("stab/predictor_step") is not None for s in steady)
    median = f" (median lead {statistics.median(leads):g} steps)" if leads else ""
    return (
        f"The label-free predictor fired before the collapse in {len(leads)} of {len(collapsed)} collapsed "
        f"cell(s){median}; it fired in {alarms} of {len(steady)} cell(s) that did not collapse (false alarms). "
        "Lead = collapse step − predictor step; the collapse step is a trajectory evaluation step "
        "(every `ttt.eval_every` steps), so a lead is known to that resolution."
    )


# -- plots --------------------------------------------------------------------------------


def _trajectories(report: Report, runs_dir: Path) -> dict[str, dict[str, list]]:
    """panel (regime and context) -> signal -> [(steps, accuracies) per replicate] from trajectory files."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for group in report.groups:
        for cell in group.cells:
            rows = read_record(sweep_dir(runs_dir, report.sweep) / cell["cell"] / TRAJECTORY) or []
            if rows:
                out[where(group, report.varying)][signal_name(group)].append(
                    ([r["step"] for r in rows], [r["id"]["acc"] for r in rows])
                )
    return out


def plot_trajectories(report: Report, runs_dir: Path, path: Path) -> None:
    data = _trajectories(report, runs_dir)
    panels = sorted(data)
    fig, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.8), squeeze=False, sharey=True
    )
    for ax, panel in zip(axes[0], panels):
        for signal, runs in sorted(data[panel].items()):
            steps = sorted({s for run_steps, _ in runs for s in run_steps})
            series = [[v for v in (dict(zip(s, a)).get(step) for s, a in runs) if v is not None] for step in steps]
            means = np.array([np.mean(values) for values in series])
            spread = np.array([np.std(values, ddof=1) if len(values) > 1 else 0.0 for values in series])
            (line,) = ax.plot(steps, means, marker="o", label=f"{signal} (n={len(runs)})")
            ax.fill_between(steps, means - spread, means + spread, color=line.get_color(), alpha=0.2)
        ax.set_title(f"regime: {panel.replace('`', '')}", fontsize=9)
        ax.set_xlabel("TTT step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("id accuracy (greedy, trajectory subset)")
    axes[0][-1].legend(title="signal", fontsize=7)
    fig.suptitle("Accuracy during test-time training (band: ± 1 std over replicates)")
    _save(fig, path)


def _errors(estimates: list[Estimate]) -> np.ndarray:
    """Asymmetric error bars from intervals; none where there is no interval."""
    return np.array(
        [
            [e.mean - e.low if e.has_interval else 0.0 for e in estimates],
            [e.high - e.mean if e.has_interval else 0.0 for e in estimates],
        ]
    )


def plot_ignition_stability(report: Report, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    markers = {True: "o", False: "x", None: "s"}
    for g in report.groups:
        if not g.cells or g.key["signal"] == "none":
            continue
        ignition, gain = g.stats["ignition"], g.stats["gain"]
        ax.errorbar(
            ignition.mean,
            gain.mean,
            xerr=_errors([ignition]),
            yerr=_errors([gain]),
            fmt=markers[g.stable],
            capsize=3,
            label=f"{g.key['regime']} x {signal_name(g)} {_context(g.key, report.varying)}".strip(),
        )
    ax.axhline(-report.rule.max_drop, color="grey", linestyle="--", linewidth=1, label="-max_drop")
    ax.set_xlabel("ignition: catalyst start − none base, before TTT")
    ax.set_ylabel("TTT gain: final − start accuracy")
    ax.set_title("Ignition vs stability (o stable, x unstable, □ no verdict; 95% bootstrap)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def _label(group: Group, varying: list[str]) -> str:
    context = _context(group.key, varying)
    return f"{group.key['regime']} x {signal_name(group)}" + (f" ({context})" if context else "")


def plot_process_ig(report: Report, path: Path) -> None:
    groups = [g for g in report.groups if g.cells]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(groups) + 4), 4.6))
    labels = [_label(g, report.varying) for g in groups]
    for ax, metric, title in ((axes[0], "step_validity", "process step validity"), (axes[1], "ig_total", "ig/total")):
        estimates = [g.stats[metric] for g in groups]
        ax.bar(range(len(groups)), [e.mean for e in estimates], yerr=_errors(estimates), capsize=3, color="tab:blue")
        for regime, style in (("correct", "--"), ("none", ":")):
            base = next((g for g in groups if g.key["regime"] == regime and g.key["signal"] == "none"), None)
            if base:
                ax.axhline(
                    base.mean(metric), linestyle=style, color="black", linewidth=1, label=f"{regime} without TTT"
                )
        ax.set_xticks(range(len(groups)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(title)
        ax.set_ylabel(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Process validity and information gain per group (id split; 95% bootstrap)")
    _save(fig, path)


def plot_shifts(report: Report, path: Path) -> None:
    groups = [g for g in report.groups if g.cells]
    splits = ["final", "heldout", *shift_splits(report.results)]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(groups) + 4), 4.6))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        estimates = [g.stats[split] for g in groups]
        ax.bar(
            [x + i * width for x in range(len(groups))],
            [e.mean for e in estimates],
            width,
            yerr=_errors(estimates),
            capsize=2,
            label="id" if split == "final" else split,
        )
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(groups))],
        [_label(g, report.varying) for g in groups],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("greedy accuracy")
    ax.set_title("Accuracy under distribution shift, per group (95% bootstrap)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# -- ignition vs catalyst budget ----------------------------------------------------------

BUDGET_AXIS = "catalyst_n"
# result.json `probes` key -> column (metrics/probes.py, docs/metrics.md)
PROBE_COLUMNS = {
    "skill/base": "skill base",
    "skill/start": "skill start",
    "format/start": "format rate",
    "trace/gold/gold_answer": "gold trace → gold",
    "trace/donor/follows_trace": "donor trace → trace",
    "trace/donor/gold_answer": "donor trace → gold",
    "trace/corrupted/follows_trace": "corrupted trace → trace",
    "trace/corrupted/gold_answer": "corrupted trace → gold",
}


def varies_budget(report: Report) -> bool:
    return len({entry.key.get(BUDGET_AXIS) for entry in report.ignition}) > 1


def _without_budget(entry: Ignition) -> str:
    """The pre-TTT design without catalyst.n and the regime's name: equal along one panel's curves."""
    config = json.loads(json.dumps(entry.replicates[0].get("config", {})))
    config.get("catalyst", {}).pop("n", None)
    config["regime"] = {k: v for k, v in config.get("regime", {}).items() if k != "name"}
    return design_hash(config, drop=("signal", "ttt"))


def budget_curves(report: Report) -> dict[str, dict[str, list[Ignition]]]:
    """panel (what fixes a curve besides regime and n) -> regime -> its entries by increasing n."""
    context = [axis for axis in report.ignition_varying if axis not in (BUDGET_AXIS, "config")]
    keyed = [(_context(e.key, context), _without_budget(e), e) for e in report.ignition]
    designs = defaultdict(set)
    for label, design_key, _ in keyed:
        designs[label].add(design_key)
    curves: dict[str, dict[str, list[Ignition]]] = defaultdict(lambda: defaultdict(list))
    for label, design_key, entry in keyed:
        panel = ", ".join(filter(None, [label, f"config {design_key[:8]}" if len(designs[label]) > 1 else ""]))
        curves[panel][entry.key["regime"]].append(entry)
    for regimes in curves.values():
        for entries in regimes.values():
            entries.sort(key=lambda e: e.key[BUDGET_AXIS])
    return curves


def mean_probes(entry: Ignition) -> dict[str, float]:
    """Each probe's mean over the entry's replicates that recorded it."""
    values = defaultdict(list)
    for result in entry.replicates:
        for name, value in result.get("probes", {}).items():
            values[name].append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}


def plot_ignition_vs_budget(report: Report, path: Path) -> None:
    curves = budget_curves(report)
    panels = list(curves)  # in the ignition entries' order: 40 steps before 160
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        budgets = sorted({e.key[BUDGET_AXIS] for entries in curves[panel].values() for e in entries})
        for regime, entries in sorted(curves[panel].items()):
            estimates = [e.paired.estimate for e in entries]
            ns = [e.key[BUDGET_AXIS] for e in entries]
            line = ax.errorbar(ns, [e.mean for e in estimates], yerr=_errors(estimates), marker="o", capsize=3)
            line.set_label(regime)
            lit = [(n, e.mean) for n, e, entry in zip(ns, estimates, entries) if entry.ignites]
            if lit:
                ax.plot(*zip(*lit), marker="*", markersize=13, linestyle="none", color=line[0].get_color())
        ax.axhline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(n) for n in budgets])
        ax.minorticks_off()
        ax.set_title(panel or "ignition", fontsize=9)
        ax.set_xlabel("catalyst.n (rows)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ignition: start − none base (id, greedy)")
    axes[0][-1].legend(title="regime", fontsize=7)
    fig.suptitle("Ignition vs catalyst budget (95% bootstrap; ★ ignites, McNemar p < 0.05)", fontsize=10)
    _save(fig, path)


def _probe_cell(probes: dict[str, float], name: str) -> str:
    return f"{probes[name]:.2f}" if name in probes else "–"


def _why(probes: dict[str, float]) -> str:
    """What the probes say at one budget, in words."""
    if not probes:
        return "no probes were recorded"
    reading = ProbeReading()
    parts = []
    if "skill/base" in probes and "skill/start" in probes:
        kept = probes["skill/start"] >= probes["skill/base"] - reading.skill_loss
        parts.append(
            f"atomic skill {probes['skill/base']:.2f} → {probes['skill/start']:.2f} "
            f"({'kept' if kept else 'overwritten by the catalyst'})"
        )
    if "format/start" in probes:
        writes = probes["format/start"] >= reading.format_floor
        parts.append(f"format rate {probes['format/start']:.2f}{'' if writes else ' (it mostly writes no trace)'}")
    follows = {
        name.split("/")[1]: share
        for name, share in sorted(probes.items())
        if name.startswith("trace/") and name.endswith("/follows_trace")
    }
    if follows:
        shares = ", ".join(f"{kind} {share:.2f}" for kind, share in follows.items())
        reads = "it reads its trace" if max(follows.values()) >= reading.reads_trace else "it does not read its trace"
        parts.append(f"after a teacher-forced trace it writes that trace's answer ({shares}): {reads}")
    if "trace/donor/gold_answer" in probes:
        parts.append(f"after a donor trace it writes the gold answer {probes['trace/donor/gold_answer']:.2f}")
    return "; ".join(parts)


def budget_answer(report: Report) -> list[str]:
    """Per panel and regime: whether and from which n it ignites, and what the probes show."""
    out = []
    for panel, regimes in budget_curves(report).items():
        place = f" ({panel})" if panel else ""
        for regime, entries in sorted(regimes.items()):
            lit = [e.key[BUDGET_AXIS] for e in entries if e.ignites]
            if all(e.ignites is None for e in entries):
                out.append(f"`{regime}`{place} cannot be tested: no per-item results.")
                continue
            decisive = next(e for e in entries if e.ignites) if lit else entries[-1]
            test = decisive.paired.test
            evidence = f"ignition {fmt(decisive.paired.estimate, signed=True)}" + (
                f", {test.describe()}" if test else ""
            )
            largest = max(entries, key=lambda e: e.paired.estimate.mean)
            peak = f"; largest {largest.paired.estimate.mean:+.3f} at n={largest.key[BUDGET_AXIS]}"
            if not lit:
                verdict_ = f"does not ignite at any budget up to n={decisive.key[BUDGET_AXIS]} ({evidence})"
            elif all(e.ignites for e in entries if e.key[BUDGET_AXIS] >= lit[0]):
                verdict_ = f"ignites from n={lit[0]} on ({evidence} at n={lit[0]}{peak})"
            else:
                verdict_ = f"ignites at n={', '.join(map(str, lit))} only ({evidence} at n={lit[0]}{peak})"
            budgets = ", ".join(str(e.key[BUDGET_AXIS]) for e in entries)
            out.append(
                f"`{regime}`{place} {verdict_}; budgets tried: {budgets}. Probes at n={decisive.key[BUDGET_AXIS]}: "
                f"{_why(mean_probes(decisive))}."
            )
    return out


def ignition_budget_section(report: Report) -> list[str]:
    """`## Ignition vs catalyst budget`: shown only when the sweep varies catalyst.n."""
    if not varies_budget(report):
        return []
    context = [axis for axis in report.ignition_varying if axis not in (BUDGET_AXIS, "config")]
    rows, probe_rows = [], []
    for panel, regimes in budget_curves(report).items():
        for regime, entries in sorted(regimes.items()):
            for entry in entries:
                test, estimate = entry.paired.test, entry.paired.estimate
                place = [panel or "–", regime, str(entry.key[BUDGET_AXIS])]
                rows.append(
                    [
                        *place,
                        f"{estimate.n}" + (f" ({NO_INTERVAL})" if estimate.n < 3 else ""),
                        fmt(estimate, signed=True),
                        format_p(test.p) if test else "–",
                        {True: "yes", False: "no", None: "–"}[entry.ignites],
                    ]
                )
                probes = mean_probes(entry)
                probe_rows.append([*place, *(_probe_cell(probes, name) for name in PROBE_COLUMNS)])
    panel_header = ", ".join(context) or "panel"
    return [
        "## Ignition vs catalyst budget",
        "",
        "Ignition (TTT start − `none` base on the same id items, before TTT) against the catalyst's rows "
        "`catalyst.n`, one curve per regime (plot `ignition_vs_budget`; ★ where it ignites).",
        "",
        _markdown_table([panel_header, "regime", "n", "replicates", "ignition", "McNemar p", "ignites"], rows),
        "",
        "Probes of the catalyst checkpoint (means over replicates; docs/metrics.md): skill = greedy accuracy on "
        "held-out single-op items before (base) and after (start) the catalyst; format rate = greedy id completions "
        "that parse with the expected step count; `X trace → trace / gold` = share of answers, written after a "
        "teacher-forced X trace, equal to that trace's own answer / to the gold answer.",
        "",
        _markdown_table([panel_header, "regime", "n", *PROBE_COLUMNS.values()], probe_rows),
        "",
        "Per regime, whether and from which `catalyst.n` it ignites, and what the probes show there, is the "
        "ignition part of the answer at the top.",
        "",
    ]


def budget_plots(report: Report) -> dict:
    return {"ignition_vs_budget": lambda p: plot_ignition_vs_budget(report, p)} if varies_budget(report) else {}


# -- output -------------------------------------------------------------------------------


def write_report(report: Report, runs_dir: str | Path) -> Path:
    runs_dir = Path(runs_dir)
    directory = sweep_dir(runs_dir, report.sweep) / "report"
    plots = {
        "trajectories": lambda p: plot_trajectories(report, runs_dir, p),
        "ignition_vs_stability": lambda p: plot_ignition_stability(report, p),
        "process_and_ig": lambda p: plot_process_ig(report, p),
        "shifts": lambda p: plot_shifts(report, p),
    }
    plots |= budget_plots(report)
    with staged_directory(directory) as staging:  # a report that fails midway leaves the last one whole
        for name, draw in plots.items():
            report.plots[name] = staging / f"{name}.png"
            draw(report.plots[name])
        write_atomic(staging / "report.md", markdown(report, embed=False))
        write_atomic(staging / "report.html", to_html(report))
    report.plots = {name: directory / path.name for name, path in report.plots.items()}
    report.directory = directory
    return directory


def markdown(report: Report, embed: bool) -> str:
    lines = [
        f"# catalyst-ttt report: `{report.sweep}`",
        "",
        *provenance(report),
        "",
        *disclosure(report),
        "",
        "Accuracy is greedy; `start`, `final`, gain and ignition use every item of the `id` split (the TTT "
        "prompts). [low, high] is a 95% paired bootstrap interval over replicates ((base seed, seed) pairs) and "
        f"items, clipped to the metric's range; with fewer than 3 replicates there is none ({NO_INTERVAL}). "
        "p is an exact McNemar test on the same items, discordant pairs pooled over replicates. `best @ step` "
        "is the trajectory peak (trajectory items only); every verdict uses `final`. Definitions: "
        "docs/statistics.md.",
        "",
        "## The answer",
        "",
        *[f"- {s}" for s in report.answer],
        "",
        "## Ignition (before TTT)",
        "",
        ignition_table(report),
        "",
        *ignition_budget_section(report),
        "## Regimes × signals",
        "",
        markdown_table(report),
        "",
        f"Stability rule: {describe_rule(report.rule)}.",
        "",
        *anchors_section(report),
        "## Information gain calibration",
        "",
        *calibration_lines(report),
        "",
        "## Variance: base-to-base vs cell-to-cell",
        "",
        variance_table(report),
        "",
        "## TTT diagnostics (mean over logged steps; gold-reading diagnostics computed outside the signal)",
        "",
        diagnostics_table(report),
        "",
        "## Shift splits (greedy accuracy)",
        "",
        shift_table(report),
        "",
        "## Plots",
        "",
    ]
    for name, path in report.plots.items():
        src = f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" if embed else path.name
        lines += [f"![{name}]({src})", ""]
    return "\n".join(lines)


def anchors_section(report: Report) -> list[str]:
    if not anchors_vary(report):
        return []
    return [
        "## Anchors",
        "",
        "Which anchor keeps which signal stable: each anchor's verdict by the stability rule above, with the "
        "gain (final − start id accuracy) and its 95% interval. Anchors never pool (an anchor is an axis).",
        "",
        anchors_table(report),
        "",
        *[f"- {s}" for s in anchor_sentences(report)],
        "",
        "### Early warning",
        "",
        early_warning_summary(report),
        "",
        early_warning_table(report),
        "",
    ]


def to_html(report: Report) -> str:
    """A self-contained page: the Markdown rendered by markdown-it, plots embedded as data URIs."""
    body = MarkdownIt("commonmark").enable("table").render(markdown(report, embed=True))
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>cttt report {html.escape(report.sweep)}"
        f"</title><style>{style}</style></head><body>{body}</body></html>"
    )


WANDB_METRICS = ("start", "final", "best", "gain", "ignition", "drawdown", "collapse", "step_validity", "ig_total")


def wandb_row(group: Group) -> dict:
    """One group as numbers: each metric's mean and interval (None where there is none), tests and verdict."""
    row = {axis: str(value) for axis, value in group.key.items()} | {
        "access": group.access,
        "replicates": len(group.cells),
        "unfinished": len(group.unfinished),
    }
    for name in WANDB_METRICS:
        estimate = group.stats.get(name)
        row |= {
            name: estimate.mean if estimate else None,
            f"{name}_low": estimate.low if estimate else None,
            f"{name}_high": estimate.high if estimate else None,
        }
    for name in ("gain", "ignition"):
        test = group.paired[name].test if name in group.paired else None
        row[f"{name}_p"] = test.p if test else None
    return row | {"best_step": group.peak_step, "verdict": verdict(group)}


def log_to_wandb(report: Report) -> str | None:
    """One W&B run (job_type=report) with the tables and plots; returns the offline dir, if any."""
    import wandb

    from catalyst_ttt.tracking import Tracker

    config = report.results[0]["config"]["wandb"]
    tracker = Tracker(
        mode=config["mode"],
        project=config["project"],
        entity=config["entity"],
        group=report.sweep,
        job_type="report",
        name=f"report-{report.sweep}",
        config={"sweep": report.sweep},
        directory=report.directory,
    )
    try:
        rows = [wandb_row(g) for g in ordered(report.groups)]
        tracker.table("regimes_x_signals", rows)
        tracker.table("answer", [{"sentence": s} for s in report.answer])
        tracker.media({name: wandb.Image(str(path)) for name, path in report.plots.items()})
    finally:
        directory = tracker.finish()
    return directory
