"""What a report is about before any words or pictures: its cells, their analysis (metrics/aggregate.py), the
IG calibration, the budget curves, and the names every part of the page uses for groups and places."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property

from catalyst_ttt.hypotheses import Score, registered_scores
from catalyst_ttt.metrics.aggregate import (
    Analysis,
    Group,
    Ignition,
    analyse,
    design,
    rule_of,
)
from catalyst_ttt.metrics.statistics import BASES, MIN_UNITS, Estimate, detectable_effect
from catalyst_ttt.regimes import CALIBRATION_REGIMES
from catalyst_ttt.report.loading import Cells
from catalyst_ttt.schema import ACCESS_CLASSES, ACCESS_MARKS, ANCHORS

NO_TTT_CLASS = "no TTT"
# Axes every table shows as columns; the others are shown only where they vary.
SHOWN_AXES = ("regime", "signal", "reference", "config")
BUDGET_AXIS = "catalyst_n"


@dataclass
class IGCalibration:
    """ig/total of gold (`correct`) traces and of every other kind (swapped, illogical, corrupted,
    unfaithful: right answer after invalid steps) of `heldout` items, under each base's reader."""

    by_reader: dict[str, dict[str, float]]  # "task/model/base seed" -> kind -> ig/total

    def holds(self) -> bool:
        """IG reads as information when, for every reader, gold traces gain (> 0) and gain more than every
        other kind. The order among the other kinds is shown, not required (docs/metrics.md)."""
        return all(
            row.get("correct", -math.inf) > max(0.0, *(v for k, v in row.items() if k != "correct"))
            for row in self.by_reader.values()
        )

    def kinds(self) -> list[str]:
        present = {kind for row in self.by_reader.values() for kind in row}
        return [k for k in CALIBRATION_REGIMES if k in present] + sorted(present - set(CALIBRATION_REGIMES))


def ig_calibration(results: list[dict]) -> IGCalibration | None:
    by_reader = {
        f"{r['axes']['task']}/{r['axes']['model']}/base seed {r['axes'].get('base_seed', 0)}": {
            kind: value for kind, value in r["ig_calibration"].items() if value is not None
        }
        for r in results
        if r["status"] == "done" and r.get("ig_calibration")
    }
    return IGCalibration(by_reader) if by_reader else None


@dataclass
class Report:
    cells: Cells
    analysis: Analysis
    calibration: IGCalibration | None
    # The study file's hypotheses as registered at its first launch, scored (hypotheses.registered_scores), and
    # the warning that they were edited after that (None when they were not).
    hypotheses: list[Score] = field(default_factory=list)
    hypotheses_warning: str | None = None

    @property
    def sweep(self) -> str:
        return self.cells.sweep

    @property
    def results(self) -> list[dict]:
        return self.cells.results

    @property
    def groups(self) -> list[Group]:
        return self.analysis.groups

    @property
    def ignition(self) -> list[Ignition]:
        return self.analysis.ignition

    @property
    def rule(self):
        return self.analysis.rule

    @cached_property
    def varying(self) -> list[str]:
        """What names a group beside regime and signal: see `varying`."""
        return varying([g.key for g in self.groups])

    @cached_property
    def ignition_varying(self) -> list[str]:
        return varying([entry.key for entry in self.ignition])

    @property
    def ttt_groups(self) -> list[Group]:
        """Groups that train at test time, in table order."""
        return [g for g in ordered(self.groups) if g.has_ttt]

    @property
    def anchors_vary(self) -> bool:
        return "anchor" in self.varying


def build(cells: Cells) -> Report:
    analysis = analyse(cells.results, rule_of(cells.results))
    calibration = ig_calibration(cells.results)
    readable = calibration is not None and calibration.holds()
    scores, warning = registered_scores(cells.grid, analysis, readable)
    return Report(cells, analysis, calibration, scores, warning)


def varying(keys: list[dict]) -> list[str]:
    """Axes whose values differ between keys, and `config` where it alone tells two keys apart."""
    names = {k for key in keys for k in key if k not in SHOWN_AXES}
    axes = sorted(k for k in names if len({str(key.get(k)) for key in keys}) > 1)
    by_axes = {tuple((k, str(v)) for k, v in key.items() if k != "config") for key in keys}
    return axes + (["config"] if len(by_axes) < len(keys) else [])


# -- names ----------------------------------------------------------------------------------


def axis_value(key: dict, axis: str) -> str:
    value = key.get(axis, "–")
    return str(value)[:8] if axis == "config" else str(value)  # a config is named by its hash's first 8


def context(key: dict, axes: list[str]) -> str:
    return ", ".join(f"{axis}={axis_value(key, axis)}" for axis in axes if axis in key)


def place(holder: Group | Ignition, axes: list[str]) -> str:
    """`regime` and, where other axes vary, their values: where a group or ignition entry sits."""
    where = context(holder.key, axes)
    return f"`{holder.key['regime']}`" + (f" ({where})" if where else "")


def signal_name(group: Group) -> str:
    key = group.key
    ref = f" [ref={key['reference']}]" if key["signal"] in ("verifree", "predictive") else ""
    marker = ACCESS_MARKS.get(group.access)
    return f"{key['signal']}{ref}" + (f" {marker}" if marker else "")


def access_class(group: Group) -> str:
    return NO_TTT_CLASS if not group.has_ttt else group.access


def ordered(groups: list[Group]) -> list[Group]:
    """Groups by access class (no TTT first) and anchor (none, kl, replay, ...), then as aggregated."""
    order = (NO_TTT_CLASS, *ACCESS_CLASSES)

    def rank(group: Group) -> tuple:
        access = access_class(group)
        return order.index(access) if access in order else len(order), anchor_order(str(group.key.get("anchor")))

    return sorted(groups, key=rank)


def anchor_order(anchor: str) -> tuple:
    """Anchors in ANCHORS' order (none first), any other after them by name."""
    return (ANCHORS.index(anchor), "") if anchor in ANCHORS else (len(ANCHORS), anchor)


def units(estimate: Estimate | None, short: bool = False) -> str:
    """How many units an estimate averages, and which: base seeds, or replicates ("reps" where `short`) of
    these bases."""
    if estimate is None or not estimate.n:
        return "–"
    kind = "base" if estimate.scope == BASES else "rep" if short else "replicate"
    return f"{estimate.n} {kind}{'s' if estimate.n > 1 else ''}"


def by_place(groups: list[Group], axes: list[str]) -> dict[str, list[Group]]:
    out: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        out[place(group, axes)].append(group)
    return out


# -- numbers the page derives ---------------------------------------------------------------


def mean_of(cells: list[dict], section: str, name: str) -> float:
    """The mean over cells of a number they record under `section` (NaN where none records it)."""
    values = [c[section][name] for c in cells if isinstance(c.get(section), dict) and c[section].get(name) is not None]
    return sum(values) / len(values) if values else math.nan


def no_trace(group: Group) -> bool:
    """IG was measured, but no cell of the group wrote a trace to score (`ig/total` null: base and
    answer-only cells)."""
    measured = [c["ig"] for c in group.trained if isinstance(c.get("ig"), dict) and "ig/total" in c["ig"]]
    return bool(measured) and all(ig["ig/total"] is None for ig in measured)


def pooled_sd(estimates: list[Estimate]) -> tuple[float | None, int]:
    """The between-unit sd pooled over estimates with an interval, and their most common number of units."""
    usable = [e for e in estimates if e.sd is not None and e.n >= MIN_UNITS and not math.isnan(e.sd)]
    if not usable:
        return None, 0
    dof = sum(e.n - 1 for e in usable)
    sd = math.sqrt(sum((e.n - 1) * e.sd**2 for e in usable) / dof)
    return sd, Counter(e.n for e in usable).most_common(1)[0][0]


@dataclass(frozen=True)
class Detectable:
    """The smallest true effect the design finds with 80% power, from the pooled between-unit sd."""

    what: str
    effect: float | None
    sd: float | None
    n: int


def detectable(report: Report) -> list[Detectable]:
    """For ignition and for the TTT gain, where the study measured them with enough units."""
    out = []
    sources = (
        ("ignition", [e.estimate for e in report.ignition]),
        ("TTT gain", [g.stats["gain"] for g in report.ttt_groups if "gain" in g.stats and g.trained]),
    )
    for what, estimates in sources:
        if estimates:
            sd, n = pooled_sd(estimates)
            out.append(Detectable(what, detectable_effect(sd, n), sd, n))
    return out


# -- ignition against the catalyst budget ------------------------------------------------------


def varies_budget(report: Report) -> bool:
    return len({entry.key.get(BUDGET_AXIS) for entry in report.ignition}) > 1


def flat(node, prefix: str = "") -> dict[str, str]:
    """A nested config as `dotted.key -> JSON value`."""
    if isinstance(node, dict):
        return {k: v for key, value_ in node.items() for k, v in flat(value_, f"{prefix}{key}.").items()}
    return {prefix[:-1]: json.dumps(node)}


def differing(configs: list[dict[str, str]]) -> list[str]:
    """The flat keys whose values are not the same in every config."""
    keys = {k for config in configs for k in config}
    return sorted(k for k in keys if len({config.get(k) for config in configs}) > 1)


def _budget_design(entry: Ignition) -> dict[str, str]:
    """The pre-TTT design without catalyst.n and the regime's name, flat: equal along one panel's curves."""
    config = design(entry.replicates[0].get("config", {}), drop=("signal", "ttt"))
    return {k: v for k, v in flat(config).items() if k not in ("catalyst.n", "regime.name")}


def budget_curves(report: Report) -> dict[str, dict[str, list[Ignition]]]:
    """panel (what fixes a curve besides regime and n: the varying axes, and any other config key that differs,
    such as task.latent) -> regime -> its entries by increasing n."""
    axes = [axis for axis in report.ignition_varying if axis not in (BUDGET_AXIS, "config")]
    keyed = [(context(e.key, axes), _budget_design(e), e) for e in report.ignition]
    designs: dict[str, list[dict]] = defaultdict(list)
    for label, pre_ttt, _ in keyed:
        if pre_ttt not in designs[label]:
            designs[label].append(pre_ttt)
    curves: dict[str, dict[str, list[Ignition]]] = defaultdict(lambda: defaultdict(list))
    for label, pre_ttt, entry in keyed:
        values = [
            f"{key}={json.loads(pre_ttt[key]) if key in pre_ttt else 'unset'}" for key in differing(designs[label])
        ]
        curves[", ".join(filter(None, [label, *values]))][entry.key["regime"]].append(entry)
    for regimes in curves.values():
        for entries in regimes.values():
            entries.sort(key=lambda e: e.key[BUDGET_AXIS])
    return curves


def mean_probes(entry: Ignition) -> dict[str, float]:
    """Each probe's mean over the entry's replicates that recorded it."""
    values = defaultdict(list)
    for result in entry.replicates:
        for name, value in (result.get("probes") or {}).items():
            if value is not None:
                values[name].append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}


# -- numbers as the page writes them ------------------------------------------------------------


def number(x: float | None, signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def value(estimate: Estimate | None, signed: bool = False) -> str:
    return number(estimate.mean if estimate else None, signed)


def interval(estimate: Estimate | None, signed: bool = False) -> str:
    """The 90% interval, or "–" where there is none (fewer than MIN_UNITS units)."""
    if estimate is None or not estimate.has_interval:
        return "–"
    return f"[{number(estimate.low, signed)}, {number(estimate.high, signed)}]"


def with_interval(estimate: Estimate | None, signed: bool = False) -> str:
    shown = interval(estimate, signed)
    return value(estimate, signed) + (f" {shown}" if shown != "–" else "")
