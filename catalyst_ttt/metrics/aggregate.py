"""Across replicates: group cells that differ only by seed, estimate over units, adjust every test of a
report together, and read the verdicts (docs/statistics.md).

A replicate is a (base seed, seed) pair; the unit of inference is the base (see `statistics`). Cells pool
only when every other axis and the rest of the semantic config agree, so different tasks, catalyst budgets
or TTT settings never count as seeds.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from catalyst_ttt.hashing import config_hash
from catalyst_ttt.metrics.statistics import (
    ACCURACY,
    ALPHA,
    DIFFERENCE,
    MIN_UNITS,
    UNBOUNDED,
    Estimate,
    Replicate,
    adjust,
    estimate,
    floor_p,
    format_p,
    one_sided_p,
    units,
    units_to_decide,
    variance_components,
)
from catalyst_ttt.results import GATED
from catalyst_ttt.schema import NON_SEMANTIC, StabilityConfig

SEED_AXES = ("seed", "base_seed")
TTT_AXES = ("signal", "reference", "anchor", "ttt_steps")  # what follows the TTT start: ignition drops them
FINISHED = ("done", GATED)  # a gated cell finished at its floor: its start counts, it has no TTT

STABLE, UNSTABLE, INCONCLUSIVE = "stable", "unstable", "inconclusive"
DID_NOT_TRAIN = "did not train"
FLOOR = "n/a (floor)"
NO_TTT = "n/a (no TTT)"
TOO_FEW = f"n/a (n<{MIN_UNITS} units)"
NO_REPLICATE = "n/a (no finished replicate)"
IGNITES, NO_IGNITION = "ignites", "does not ignite"


def mean(values) -> float:
    return statistics.fmean(values) if len(values) else math.nan


def _at(*path: str) -> Callable[[dict], float]:
    """A number nested in a result (NaN where the cell did not record it)."""

    def read(result: dict) -> float:
        node = result
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return math.nan if node is None else float(node)

    return read


def _items(split: str, arm: str) -> Callable[[dict], list[int] | None]:
    """A split's per-item 0/1 vector for one arm (None where the result kept no items)."""

    def read(result: dict) -> list[int] | None:
        items = result.get("items", {}).get(split, {}).get(arm)
        return list(items) if items is not None else None

    return read


START_ITEMS, BASE_ITEMS = _items("id", "start"), _items("id", "base")


def _accuracy(split: str, arm: str, scalar: Callable[[dict], float]) -> Callable[[dict], float]:
    """A split's accuracy for one arm: the mean of its items, or `scalar` where there are none."""
    items = _items(split, arm)
    return lambda r: mean(items(r)) if items(r) is not None else scalar(r)


START = _accuracy("id", "start", _at("pre_ttt", "acc/greedy"))
BASE = _accuracy("id", "base", _at("pre_ttt", "base_acc/greedy"))
FINAL = _accuracy("id", "final", _at("metrics", "id", "acc/greedy"))


# Before TTT (every finished replicate): name -> (per-replicate value, possible range).
PRE_TTT = {
    "start": (START, ACCURACY),
    "base": (BASE, ACCURACY),
    "ignition": (lambda r: START(r) - BASE(r), DIFFERENCE),
    "start_step_validity": (_at("pre_ttt", "process/step_validity"), ACCURACY),
}
# After TTT (replicates that trained: above their floor).
POST_TTT = {
    "final": (FINAL, ACCURACY),
    "gain": (lambda r: FINAL(r) - START(r), DIFFERENCE),
    "heldout": (_accuracy("heldout", "final", _at("metrics", "heldout", "acc/greedy")), ACCURACY),
    "best": (_at("stab", "stab/peak"), ACCURACY),
    "drawdown": (_at("stab", "stab/drawdown"), ACCURACY),
    "auc": (_at("stab", "stab/auc"), ACCURACY),
    "flips_c2w": (_at("stab", "stab/flips_c2w"), UNBOUNDED),
    "collapse": (_at("stab", "stab/collapse"), ACCURACY),
    "diversity": (_at("stab", "stab/diversity"), UNBOUNDED),
    "step_validity": (_at("metrics", "id", "process/step_validity"), ACCURACY),
    "faithful_acc": (_at("metrics", "id", "process/faithful_acc"), ACCURACY),
    "unfaithful_correct": (_at("metrics", "id", "process/unfaithful_correct"), ACCURACY),
    "ig_total": (_at("ig", "ig/total"), UNBOUNDED),
}
# Whose between-replicate variance the report splits into base-to-base and cell-to-cell.
VARIANCE_READOUTS = ("start", "final", "gain")


def access_of(result: dict) -> str:
    return result.get("access") or ("gold" if result.get("uses_labels") else "intrinsic")


def replicate_of(result: dict) -> Replicate:
    axes = result["axes"]
    base_seed = axes.get("base_seed", result.get("config", {}).get("base", {}).get("seed", 0))
    return base_seed, axes["seed"]


def design(config: dict, drop: tuple[str, ...] = ()) -> dict:
    """The semantic config without the seeds (and without `drop`): equal for replicates only."""
    data = {k: v for k, v in config.items() if k not in (*NON_SEMANTIC, "seed", *drop)}
    if isinstance(data.get("base"), dict):
        data["base"] = {k: v for k, v in data["base"].items() if k != "seed"}
    return data


def design_hash(config: dict, drop: tuple[str, ...] = ()) -> str:
    return config_hash(design(config, drop))


def group_key(result: dict) -> dict:
    """Every axis but the seeds, plus the rest of the config: cells with equal keys are replicates."""
    key = {axis: value for axis, value in sorted(result["axes"].items()) if axis not in SEED_AXES}
    return key | {"config": design_hash(result.get("config", {}))}


def ignition_key(result: dict) -> dict:
    """What fixes the TTT start and its base: the group key without the signal and the TTT settings."""
    key = {axis: value for axis, value in sorted(result["axes"].items()) if axis not in (*SEED_AXES, *TTT_AXES)}
    return key | {"config": design_hash(result.get("config", {}), drop=("signal", "ttt"))}


def shift_splits(results: list[dict]) -> list[str]:
    splits = {s for r in results if r.get("status") == "done" for s in r.get("metrics", {})}
    return sorted(s for s in splits if s.startswith("shift_"))


def rule_of(results: list[dict]) -> StabilityConfig:
    """The verdict rules the sweep was configured with (`metrics.stability`)."""
    for result in results:
        return StabilityConfig(**result["config"]["metrics"]["stability"])
    return StabilityConfig()


def above_floor(result: dict) -> bool:
    """This replicate's TTT start beats the base it came from on the same id items (exact one-sided test);
    a gated cell was found at its floor before TTT, regime `none` is the floor itself."""
    if result["status"] == GATED or result["axes"]["regime"] == "none":
        return False
    start, base = START_ITEMS(result), BASE_ITEMS(result)
    if start is None or base is None:
        return START(result) > BASE(result)
    return floor_p(start, base) < ALPHA


def estimates(cells: list[dict], readouts: dict) -> dict[str, Estimate]:
    return {
        name: estimate({replicate_of(c): read(c) for c in cells}, bounds) for name, (read, bounds) in readouts.items()
    }


@dataclass
class Group:
    """The replicates of one configuration, their estimates, tests and verdict."""

    key: dict
    cells: list[dict] = field(default_factory=list)  # finished replicates (done or gated)
    # The replicates TTT is judged on: finished, above their floor, and trained (without TTT: every finished
    # replicate, whose final is its start).
    trained: list[dict] = field(default_factory=list)
    unfinished: list[dict] = field(default_factory=list)  # diverged, failed, interrupted: flagged, never dropped
    stats: dict[str, Estimate] = field(default_factory=dict)
    variance: dict[str, dict] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)  # test -> one-sided p before adjustment
    adjusted: dict[str, float] = field(default_factory=dict)  # test -> BH-adjusted p over the report
    verdict: str = NO_REPLICATE
    reasons: list[str] = field(default_factory=list)
    access: str = "intrinsic"

    @property
    def has_ttt(self) -> bool:
        return self.key.get("signal") != "none"

    @property
    def stable(self) -> bool | None:
        return {STABLE: True, UNSTABLE: False}.get(self.verdict)

    @property
    def has_verdict(self) -> bool:
        return self.verdict in (STABLE, UNSTABLE, INCONCLUSIVE, DID_NOT_TRAIN)

    @property
    def statuses(self) -> Counter:
        return Counter(r["status"] for r in self.cells + self.unfinished)

    @property
    def flags(self) -> list[str]:
        """Replicates that did not finish, or were gated at their floor, said wherever the group is."""
        total = len(self.cells) + len(self.unfinished)
        return [
            f"{n} of {total} replicates {status}" for status, n in sorted(self.statuses.items()) if status != "done"
        ]

    @property
    def peak_step(self) -> float | None:
        steps = [c["stab"].get("stab/peak_step") for c in self.trained]
        steps = [s for s in steps if s is not None]
        return statistics.median(steps) if steps else None

    @property
    def collapse_steps(self) -> list[int]:
        return [
            c["stab"]["stab/collapse_step"] for c in self.trained if c["stab"].get("stab/collapse_step") is not None
        ]

    def mean(self, name: str) -> float:
        return self.stats[name].mean if name in self.stats else math.nan

    def gains(self) -> dict[Replicate, float]:
        read = POST_TTT["gain"][0]
        return {replicate_of(c): read(c) for c in self.trained}


@dataclass
class Ignition:
    """Catalyst start − `none` base before TTT, for one pre-TTT configuration, over its replicates."""

    key: dict
    replicates: list[dict]
    estimate: Estimate
    raw: dict[str, float] = field(default_factory=dict)
    adjusted: dict[str, float] = field(default_factory=dict)
    verdict: str = INCONCLUSIVE

    @property
    def ignites(self) -> bool | None:
        return {IGNITES: True, NO_IGNITION: False}.get(self.verdict)

    def describe(self) -> str:
        """The evidence of the verdict: the adjusted p of the test that decided it, with the scope."""
        test = "above" if self.verdict != NO_IGNITION else "under_margin"
        p = self.adjusted.get(test)
        where = f"{self.estimate.n} units {self.estimate.scope}" if self.estimate.scope else "no unit"
        return f"p_adj={format_p(p)}, {where}" if p is not None else where


@dataclass
class Analysis:
    groups: list[Group]
    ignition: list[Ignition]
    rule: StabilityConfig

    def tests(self) -> list[tuple[object, str]]:
        """Every (holder, test name) whose p enters the report's family."""
        return [(h, name) for h in [*self.ignition, *self.groups] for name in h.raw]


def analyse(results: list[dict], rule: StabilityConfig) -> Analysis:
    """Groups and ignition entries with their estimates, every test adjusted together, then the verdicts."""
    analysis = Analysis(aggregate(results), ignition(results, rule), rule)
    family = analysis.tests()
    for (holder, name), p in zip(family, adjust([h.raw[n] for h, n in family])):
        holder.adjusted[name] = p
    for entry in analysis.ignition:
        entry.verdict = ignition_verdict(entry)
    for group in analysis.groups:
        group.verdict, group.reasons = judge(group, rule)
    return analysis


def aggregate(results: list[dict]) -> list[Group]:
    """One Group per key (every axis and config value but the seeds) over its replicates, with raw tests."""
    groups: dict[str, Group] = {}
    for result in results:
        key = group_key(result)
        group = groups.setdefault(repr(key), Group(key=key))
        (group.cells if result["status"] in FINISHED else group.unfinished).append(result)
    shifts = shift_splits(results)
    rule = rule_of(results)
    for group in groups.values():
        finished = group.cells or group.unfinished
        group.access = access_of(finished[0])
        group.cells.sort(key=replicate_of)
        done = [c for c in group.cells if c["status"] == "done"]
        group.trained = [c for c in done if above_floor(c)] if group.has_ttt else done
        post = POST_TTT | {s: (_accuracy(s, "final", _at("metrics", s, "acc/greedy")), ACCURACY) for s in shifts}
        group.stats = estimates(group.cells, PRE_TTT) | estimates(group.trained, post)
        values = {name: {replicate_of(c): read(c) for c in group.trained} for name, (read, _) in post.items()}
        values |= {name: {replicate_of(c): read(c) for c in group.cells} for name, (read, _) in PRE_TTT.items()}
        group.variance = {name: variance_components(values[name]) for name in VARIANCE_READOUTS}
        if group.has_ttt and group.key.get("regime") != "none" and _enough(group.gains()):
            group.raw = gain_tests(group.gains(), rule.margin)
    return sorted(groups.values(), key=lambda g: natural_order(g.key))


def _enough(values: dict[Replicate, float]) -> bool:
    return len(units(values)[0]) >= MIN_UNITS


def gain_tests(gains: dict[Replicate, float], margin: float) -> dict[str, float]:
    """The TTT gain above 0 (the accuracy trap), within ±margin (stable), below -margin (unstable)."""
    means, _ = units(gains)
    return {
        "above": one_sided_p(means, 0.0, "greater"),
        "within": max(one_sided_p(means, -margin, "greater"), one_sided_p(means, margin, "less")),
        "below": one_sided_p(means, -margin, "less"),
    }


def judge(group: Group, rule: StabilityConfig) -> tuple[str, list[str]]:
    """The verdict and its reasons (docs/statistics.md, "Stability as equivalence")."""
    diverged = group.statuses.get("diverged", 0)
    if not group.has_ttt:
        return NO_TTT, []
    if group.key.get("regime") == "none":
        return FLOOR, ["regime `none` is the floor"]
    if not group.cells:
        return (UNSTABLE, [f"{diverged} replicate(s) diverged"]) if diverged else (NO_REPLICATE, [])
    starts = {replicate_of(c): 1.0 for c in group.cells}
    trained = group.gains()
    if len(units(trained)[0]) < MIN_UNITS:
        if len(units(starts)[0]) < MIN_UNITS:
            return TOO_FEW, [f"{len(group.cells)} replicate(s)"]
        return FLOOR, [f"{len(group.trained)} of {len(group.cells)} replicates start above their floor"]
    gain = group.stats["gain"]
    interval = f"gain {gain.mean:+.3f} [{gain.low:.3f}, {gain.high:.3f}] ({gain.n} units {gain.scope})"
    unstable = []
    if group.adjusted["below"] < ALPHA:
        unstable.append(f"{interval} lies below -{rule.margin} (p_adj={format_p(group.adjusted['below'])})")
    collapse = group.mean("collapse")
    if collapse > rule.max_collapse:
        unstable.append(f"collapse {collapse:.3f} > {rule.max_collapse}")
    spread = statistics.stdev(trained.values()) if len(trained) > 1 else 0.0
    if spread > rule.max_gain_std:
        unstable.append(f"replicate gains spread sd {spread:.3f} > {rule.max_gain_std}")
    if diverged:
        unstable.append(f"{diverged} replicate(s) diverged")
    if unstable:
        return UNSTABLE, unstable
    flat = mean([c["ttt"]["ttt/frac_zero_std"] for c in group.trained if "ttt/frac_zero_std" in c.get("ttt", {})])
    if flat >= rule.max_flat_rewards and all(c.get("rewarded", True) for c in group.trained):
        return DID_NOT_TRAIN, [f"no reward spread in {flat:.0%} of groups (≥ {rule.max_flat_rewards:.0%})"]
    if group.adjusted["within"] < ALPHA:
        return STABLE, [f"{interval} lies within ±{rule.margin} (p_adj={format_p(group.adjusted['within'])})"]
    if -rule.margin < gain.low and gain.high < rule.margin:  # within, but not after the report's adjustment
        adjusted = format_p(group.adjusted["within"])
        return INCONCLUSIVE, [f"{interval} lies within ±{rule.margin}, not after adjustment (p_adj={adjusted})"]
    needed = units_to_decide(gain.mean, gain.sd, rule.margin)
    more = f"; about {needed} units would decide it" if needed else ""
    return INCONCLUSIVE, [f"{interval} crosses ±{rule.margin}{more}"]


def ignition(results: list[dict], rule: StabilityConfig) -> list[Ignition]:
    """One entry per regime and pre-TTT configuration; signals share their start, so each replicate once."""
    per_key: dict[str, tuple[dict, dict]] = {}
    for result in results:
        if result["status"] not in FINISHED or result["axes"]["regime"] == "none":
            continue
        key = ignition_key(result)
        _, replicates = per_key.setdefault(repr(key), (key, {}))
        replicates.setdefault(replicate_of(result), result)
    out = []
    for key, replicates in per_key.values():
        cells = [replicates[r] for r in sorted(replicates)]
        values = {replicate_of(c): PRE_TTT["ignition"][0](c) for c in cells}
        entry = Ignition(key, cells, estimate(values, DIFFERENCE))
        if _enough(values):
            means, _ = units(values)
            entry.raw = {
                "above": one_sided_p(means, 0.0, "greater"),
                "under_margin": one_sided_p(means, rule.ignition_margin, "less"),
            }
        out.append(entry)
    return sorted(out, key=lambda i: natural_order(i.key))


def ignition_verdict(entry: Ignition) -> str:
    if not entry.adjusted:
        return TOO_FEW
    if entry.adjusted["above"] < ALPHA and entry.estimate.mean > 0:
        return IGNITES
    if entry.adjusted["under_margin"] < ALPHA:
        return NO_IGNITION
    return INCONCLUSIVE


def describe_rule(rule: StabilityConfig) -> str:
    return (
        f"units are base seeds (≥ {MIN_UNITS}; else replicates, for these bases only); TTT is judged on the "
        f"replicates whose start beats its base (exact one-sided test, p < {format_p(ALPHA)}); stable = the gain's "
        f"90% interval lies within ±{rule.margin} and nothing collapses; unstable = it lies below -{rule.margin}, "
        f"or collapse > {rule.max_collapse}, or replicate gains spread sd > {rule.max_gain_std}, or a replicate "
        f"diverged; did not train = no reward spread in ≥ {rule.max_flat_rewards:.0%} of groups; otherwise "
        "inconclusive. Every p of the report is adjusted together (Benjamini–Hochberg); verdicts use the final "
        "checkpoint"
    )


def natural_order(key: dict) -> tuple:
    """A key's values in axis order, numbers by value (64 before 256) and before any text."""
    return tuple(
        (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v)) for v in key.values()
    )
