"""The report's Markdown tables, each on one concern: a value and its interval in columns of their own,
numbers right-aligned, and rows with nothing to say left to one line of text elsewhere."""

from __future__ import annotations

import math
from collections import defaultdict

from catalyst_ttt.hypotheses import Score
from catalyst_ttt.metrics.aggregate import Group, Ignition, design, group_key, replicate_of, shift_splits
from catalyst_ttt.metrics.statistics import format_p
from catalyst_ttt.report.study import (
    BUDGET_AXIS,
    IGCalibration,
    Report,
    access_class,
    axis_value,
    differing,
    flat,
    interval,
    mean_of,
    mean_probes,
    no_trace,
    number,
    signal_name,
    units,
    value,
)

# result.json `probes` key -> column (metrics/probes.py, docs/metrics.md)
PROBE_COLUMNS = {
    "skill/base": "skill base",
    "skill/start": "skill start",
    "latent/base": "latent base",
    "latent/start": "latent start",
    "format/start": "format rate",
    "trace/gold/gold_answer": "gold trace → gold",
    "trace/donor/follows_trace": "donor trace → trace",
    "trace/donor/gold_answer": "donor trace → gold",
    "trace/corrupted/follows_trace": "corrupted trace → trace",
    "trace/corrupted/gold_answer": "corrupted trace → gold",
}
# TTT diagnostics (docs/metrics.md), averaged over logged steps in each cell, then over replicates.
DIAGNOSTICS = ("ttt/reward", "ttt/frac_zero_std", "ttrl/label_acc", "ttrl/majority_ratio", "ttrl/local_valid_wrong")


def table(header: list[str], rows: list[list[str]], numeric: set[str] = frozenset()) -> str:
    """A Markdown table; the columns named in `numeric` are right-aligned."""
    rule = ["---:" if name in numeric else "---" for name in header]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)])


def p_value(holder: Group | Ignition, test: str) -> str:
    p = holder.adjusted.get(test)
    return format_p(p) if p is not None else "–"


def _names(group: Group, axes: list[str]) -> list[str]:
    return [*(axis_value(group.key, axis) for axis in axes), group.key["regime"], signal_name(group)]


# -- ignition -------------------------------------------------------------------------------

IGNITION_NUMBERS = {"units", "ignition", "90% interval", "p > 0", "p < δ", "n"}


def ignition_table(entries: list[Ignition], axes: list[str], budget: bool = False) -> str:
    """One row per ignition entry; with `budget`, the catalyst.n column follows the regime."""
    header = [*_entry_header(axes, budget), "units", "ignition", "90% interval", "p > 0", "p < δ"]
    rows = [
        [
            *_entry_names(e, axes, budget),
            units(e.estimate),
            value(e.estimate, signed=True),
            interval(e.estimate, signed=True),
            p_value(e, "above"),
            p_value(e, "under_margin"),
            e.verdict,
        ]
        for e in entries
    ]
    return table([*header, "verdict"], rows, IGNITION_NUMBERS)


def probes_table(entries: list[Ignition], axes: list[str], budget: bool = False) -> str:
    """Probe means over each ignition entry's replicates, named as in `ignition_table`; a probe no cell
    recorded gets no column."""
    means = [(entry, mean_probes(entry)) for entry in entries]
    recorded = [name for name in PROBE_COLUMNS if any(name in probes for _, probes in means)]
    rows = [
        [*_entry_names(entry, axes, budget), *(_probe(probes, name) for name in recorded)] for entry, probes in means
    ]
    header = [*_entry_header(axes, budget), *(PROBE_COLUMNS[name] for name in recorded)]
    return table(header, rows, {"n", *(PROBE_COLUMNS[name] for name in recorded)})


def _entry_header(axes: list[str], budget: bool) -> list[str]:
    return [*axes, "regime", *(["n"] if budget else [])]


def _entry_names(entry: Ignition, axes: list[str], budget: bool) -> list[str]:
    return [
        *(axis_value(entry.key, axis) for axis in axes),
        entry.key["regime"],
        *([str(entry.key[BUDGET_AXIS])] if budget else []),
    ]


def _probe(probes: dict[str, float], name: str) -> str:
    return f"{probes[name]:.2f}" if name in probes else "–"


# -- test-time training ---------------------------------------------------------------------

TTT_NUMBERS = {"units", "start", "gain", "90% interval", "p within ±δ", "p below −δ"}


def ttt_table(groups: list[Group], axes: list[str]) -> str:
    rows = [
        [
            *_names(g, axes),
            access_class(g),
            units(g.stats.get("gain")) + "".join(f" ({flag})" for flag in g.flags),
            value(g.stats.get("start")),
            value(g.stats.get("gain"), signed=True),
            interval(g.stats.get("gain"), signed=True),
            p_value(g, "within"),
            p_value(g, "below"),
            g.verdict,
        ]
        for g in groups
    ]
    header = [*axes, "regime", "signal", "access", "units", "start", "gain", "90% interval"]
    return table([*header, "p within ±δ", "p below −δ", "verdict"], rows, TTT_NUMBERS)


def accuracy_table(groups: list[Group], axes: list[str]) -> str:
    rows = [
        [
            *_names(g, axes),
            units(g.stats.get("final")),
            value(g.stats.get("start")),
            value(g.stats.get("final")),
            interval(g.stats.get("final")),
            value(g.stats.get("best")) + (f" @ {g.peak_step:g}" if g.peak_step is not None else ""),
            value(g.stats.get("heldout")),
        ]
        for g in groups
    ]
    header = ["units", "start", "final", "90% interval", "best @ step", "heldout"]
    return table([*axes, "regime", "signal", *header], rows, set(header))


def start_table(groups: list[Group], axes: list[str]) -> str:
    """Groups without TTT: where each catalyst leaves the model (its final is its start; heldout and shift
    accuracy are in the shift table)."""
    rows = [
        [
            *_names(g, axes),
            units(g.stats.get("start")),
            value(g.stats.get("start")),
            interval(g.stats.get("start")),
            value(g.stats.get("start_step_validity")),
            "no trace" if no_trace(g) else value(g.stats.get("ig_total"), signed=True),
        ]
        for g in groups
    ]
    header = ["units", "start", "90% interval", "step validity", "ig/total"]
    return table([*axes, "regime", "signal", *header], rows, set(header))


def stability_table(groups: list[Group], axes: list[str]) -> str:
    rows = [
        [
            *_names(g, axes),
            value(g.stats.get("drawdown")),
            value(g.stats.get("collapse")),
            f"{len(g.collapse_steps)}/{len(g.trained)}",
            value(g.stats.get("flips_c2w")),
            value(g.stats.get("diversity")),
        ]
        for g in groups
    ]
    header = ["drawdown", "collapse", "collapsed", "flips right→wrong", "distinct answers"]
    return table([*axes, "regime", "signal", *header], rows, set(header))


def process_table(groups: list[Group], axes: list[str]) -> str:
    rows = [
        [
            *_names(g, axes),
            value(g.stats.get("start_step_validity")),
            value(g.stats.get("step_validity")),
            value(g.stats.get("faithful_acc")),
            value(g.stats.get("unfaithful_correct")),
            "no trace" if no_trace(g) else value(g.stats.get("ig_total"), signed=True),
            number(mean_of(g.trained, "ig", "ig/acc_corr"), signed=True),
        ]
        for g in groups
    ]
    header = ["validity at start", "validity final", "faithful acc", "unfaithful correct", "ig/total", "IG–acc r"]
    return table([*axes, "regime", "signal", *header], rows, set(header))


def calibration_table(calibration: IGCalibration) -> str:
    kinds = calibration.kinds()
    rows = [
        [reader, *(number(row.get(kind, math.nan), signed=True) for kind in kinds)]
        for reader, row in calibration.by_reader.items()
    ]
    return table(["reader", *kinds], rows, set(kinds))


def shift_table(groups: list[Group], axes: list[str], results: list[dict]) -> str:
    splits = ["heldout", *shift_splits(results)]
    rows = [[*_names(g, axes), *(value(g.stats.get(s)) for s in splits)] for g in groups]
    return table([*axes, "regime", "signal", *splits], rows, set(splits))


def diagnostics_table(groups: list[Group], axes: list[str]) -> str | None:
    rows = [
        [*_names(g, axes), *(number(mean_of(g.trained, "ttt", key)) for key in DIAGNOSTICS)]
        for g in groups
        if any(c.get("ttt") for c in g.trained)
    ]
    return table([*axes, "regime", "signal", *DIAGNOSTICS], rows, set(DIAGNOSTICS)) if rows else None


def variance_table(groups: list[Group], axes: list[str]) -> str | None:
    """Base-to-base and cell-to-cell standard deviations, where the design can tell them apart."""
    rows = [
        [
            *_names(g, axes),
            metric,
            "–" if parts["base"] is None else f"{math.sqrt(parts['base']):.3f}",
            "–" if parts["cell"] is None else f"{math.sqrt(parts['cell']):.3f}",
            "–" if parts["base_share"] is None else f"{100 * parts['base_share']:.0f}%",
        ]
        for g in groups
        for metric, parts in g.variance.items()
        if (parts["base"] or parts["cell"]) and (g.has_ttt or metric == "start")  # estimable, not zero, not a copy
    ]
    header = ["sd base-to-base", "sd cell-to-cell", "base share"]
    return table([*axes, "regime", "signal", "metric", *header], rows, set(header)) if rows else None


# -- anchors and the early warning -----------------------------------------------------------


def anchor_table(report: Report, anchors: list[str]) -> str:
    """Per signal (and regime, context), each anchor's verdict and gain side by side."""
    axes = [axis for axis in report.varying if axis != "anchor"]
    rows: dict[tuple, dict[str, Group]] = {}
    for group in report.ttt_groups:
        rows.setdefault(tuple(_names(group, axes)), {})[str(group.key.get("anchor"))] = group
    header = [*axes, "regime", "signal"]
    for anchor in anchors:
        header += [f"{anchor}: verdict", f"{anchor}: gain"]
    body = [
        [*names, *(cell for a in anchors for cell in _anchor_cells(groups.get(a)))] for names, groups in rows.items()
    ]
    return table(header, body, {f"{a}: gain" for a in anchors})


def _anchor_cells(group: Group | None) -> list[str]:
    if group is None:
        return ["–", "–"]
    return [group.verdict, value(group.stats.get("gain"), signed=True)]


def warning_table(report: Report) -> str | None:
    """The cells that collapsed or that the early warning fired in (the others have nothing to show)."""
    axes = [axis for axis in report.varying if axis != "anchor"]
    rows = []
    for group in report.ttt_groups:
        for cell in group.trained:
            stab = cell["stab"]
            shown = [stab.get(f"stab/{k}") for k in ("collapse_step", "predictor_step", "warning_lead")]
            if shown[0] is None and shown[1] is None:
                continue
            anchor = str(group.key.get("anchor", "none"))
            seeds = [str(v) for v in replicate_of(cell)]
            rows.append([*_names(group, axes), anchor, *seeds, *("–" if v is None else str(v) for v in shown)])
    numbers = ["base seed", "seed", "collapse step", "warning step", "lead"]
    return table([*axes, "regime", "signal", "anchor", *numbers], rows, set(numbers)) if rows else None


# -- the study file's hypotheses and the appendix ----------------------------------------------


def hypotheses_table(hypotheses: list[Score]) -> str:
    rows = [[str(h.id), h.claim, h.verdict, h.evidence, h.rule] for h in hypotheses]
    return table(["id", "claim", "verdict", "evidence", "rule"], rows)


def config_differences(results: list[dict]) -> dict[str, list[str]]:
    """design hash -> its `key=value`s for the keys that tell apart configs of the same axes."""
    flats: dict[str, dict] = {}
    by_axes: dict[str, set[str]] = defaultdict(set)
    for result in results:
        config, key = result.get("config", {}), group_key(result)
        flats.setdefault(key["config"], flat(design(config)))
        by_axes[repr({k: v for k, v in key.items() if k != "config"})].add(key["config"])
    keys = sorted({k for hashes in by_axes.values() for k in differing([flats[h] for h in hashes])})
    return {h: [f"{k}={values.get(k, 'unset')}" for k in keys] for h, values in flats.items()}
