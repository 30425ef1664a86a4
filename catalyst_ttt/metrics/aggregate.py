"""Across replicates: group cells that differ only by seed, then estimates, paired tests and a verdict.

A replicate is a (base seed, seed) pair. Cells pool only when every other axis and the rest of the
semantic config agree, so different tasks, catalyst budgets or TTT settings never count as seeds.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from catalyst_ttt.config import NON_SEMANTIC, config_hash
from catalyst_ttt.metrics.stability import stability_reasons
from catalyst_ttt.metrics.statistics import (
    ACCURACY,
    ALPHA,
    DIFFERENCE,
    UNBOUNDED,
    Estimate,
    PairedTest,
    binomial_upper_tail,
    bootstrap,
    differences,
    mcnemar,
    variance_components,
)
from catalyst_ttt.schema import StabilityConfig

SEED_AXES = ("seed", "base_seed")
TTT_AXES = ("signal", "reference", "anchor")  # what happens after the TTT start; a group never pools them
ACCESS_CLASSES = ("intrinsic", "partial verifier", "perfect verifier", "gold")
MARKERS = {"perfect verifier": "‡", "gold": "†"}
CHANCE = 0.0  # exact-match answers over an open answer space (alchemy, arith, gsm8k): guessing scores ~0

STABLE, UNSTABLE = "stable", "unstable"
FLOOR = "n/a (floor)"
NO_TTT = "n/a (no TTT)"
NO_ITEMS = "n/a (no per-item results)"
NO_REPLICATE = "n/a (no finished replicate)"


def _arm(split: str, arm: str, scalar):
    """A split's per-item 0/1 vector for one arm, or the scalar accuracy where a result has no items."""

    def read(result: dict) -> list[float]:
        items = result.get("items", {}).get(split, {}).get(arm)
        return list(items) if items is not None else [scalar(result)]

    return read


START = _arm("id", "start", lambda r: r["pre_ttt"]["acc/greedy"])
BASE = _arm("id", "base", lambda r: r["pre_ttt"]["base_acc/greedy"])
FINAL = _arm("id", "final", lambda r: r["metrics"]["id"]["acc/greedy"])


def _stab(name: str):
    return lambda r: [r["stab"].get(f"stab/{name}", math.nan)]


def _id(name: str):
    return lambda r: [r["metrics"]["id"][name]]


# What the tables report per group: name -> (per-replicate vector from one result.json, possible range).
READOUTS = {
    "start": (START, ACCURACY),
    "final": (FINAL, ACCURACY),
    "base": (BASE, ACCURACY),
    "heldout": (_arm("heldout", "final", lambda r: r["metrics"]["heldout"]["acc/greedy"]), ACCURACY),
    "best": (_stab("peak"), ACCURACY),
    "drawdown": (_stab("drawdown"), ACCURACY),
    "auc": (_stab("auc"), ACCURACY),
    "flips_c2w": (_stab("flips_c2w"), UNBOUNDED),
    "collapse": (_stab("collapse"), ACCURACY),
    "diversity": (_stab("diversity"), UNBOUNDED),
    "step_validity": (_id("process/step_validity"), ACCURACY),
    "start_step_validity": (lambda r: [r["pre_ttt"]["process/step_validity"]], ACCURACY),
    "faithful_acc": (_id("process/faithful_acc"), ACCURACY),
    "unfaithful_correct": (_id("process/unfaithful_correct"), ACCURACY),
    "ig_total": (lambda r: [r.get("ig", {}).get("ig/total", math.nan)], UNBOUNDED),
}
# Paired differences on the same items: name -> (new arm, old arm).
PAIRED = {"ignition": (START, BASE), "gain": (FINAL, START)}
# Whose between-replicate variance the report splits into base-to-base and cell-to-cell.
VARIANCE_READOUTS = {
    "start": START,
    "final": FINAL,
    "gain": lambda r: [a - b for a, b in zip(FINAL(r), START(r))],
}


def access_of(result: dict) -> str:
    return result.get("access") or ("gold" if result.get("uses_labels") else "intrinsic")


def replicate_of(result: dict) -> tuple[int, int]:
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
    splits = {s for r in results if r.get("status") == "done" for s in r["metrics"]}
    return sorted(s for s in splits if s.startswith("shift_"))


def rule_of(results: list[dict]) -> StabilityConfig:
    """The stability rule the sweep was configured with (`metrics.stability`)."""
    for result in results:
        return StabilityConfig(**result["config"]["metrics"]["stability"])
    return StabilityConfig()


@dataclass
class Paired:
    """A paired difference on the same items: its estimate and, with per-item results, its exact test."""

    estimate: Estimate
    test: PairedTest | None


def paired(cells: list[dict], new, old) -> Paired:
    new_rows, old_rows = [new(c) for c in cells], [old(c) for c in cells]
    itemised = all("items" in c for c in cells)
    return Paired(
        bootstrap(differences(new_rows, old_rows), DIFFERENCE), mcnemar(new_rows, old_rows) if itemised else None
    )


def above_floor(cells: list[dict], ignition: Paired) -> bool:
    """The TTT start beats the `none` base on the same items (exact test) and beats chance."""
    starts = [START(c) for c in cells]
    hits, items = sum(sum(s) for s in starts), sum(len(s) for s in starts)
    return ignition.test.higher and binomial_upper_tail(int(hits), items, CHANCE) < ALPHA


@dataclass
class Group:
    key: dict
    cells: list[dict] = field(default_factory=list)  # finished replicates
    unfinished: list[dict] = field(default_factory=list)  # diverged or failed: flagged, never dropped
    stats: dict[str, Estimate] = field(default_factory=dict)
    paired: dict[str, Paired] = field(default_factory=dict)
    variance: dict[str, dict] = field(default_factory=dict)
    verdict: str = NO_REPLICATE
    reasons: list[str] = field(default_factory=list)
    access: str = "intrinsic"

    @property
    def stable(self) -> bool | None:
        return {STABLE: True, UNSTABLE: False}.get(self.verdict)

    @property
    def has_verdict(self) -> bool:
        return self.stable is not None

    @property
    def statuses(self) -> Counter:
        return Counter(r["status"] for r in self.cells + self.unfinished)

    @property
    def flags(self) -> list[str]:
        """Replicates that did not finish, said wherever the group is."""
        total = len(self.cells) + len(self.unfinished)
        return [
            f"{n} of {total} replicates {status}" for status, n in sorted(self.statuses.items()) if status != "done"
        ]

    @property
    def peak_step(self) -> float | None:
        steps = [c["stab"].get("stab/peak_step") for c in self.cells]
        steps = [s for s in steps if s is not None]
        return statistics.median(steps) if steps else None

    @property
    def collapse_steps(self) -> list[int]:
        return [c["stab"]["stab/collapse_step"] for c in self.cells if c["stab"].get("stab/collapse_step") is not None]

    def mean(self, name: str) -> float:
        return self.stats[name].mean


def aggregate(results: list[dict], rule: StabilityConfig) -> list[Group]:
    """One Group per key (every axis and config value but the seeds) over its replicates."""
    groups: dict[str, Group] = {}
    for result in results:
        key = group_key(result)
        group = groups.setdefault(repr(key), Group(key=key))
        (group.cells if result["status"] == "done" else group.unfinished).append(result)
    shifts = shift_splits(results)
    for group in groups.values():
        finished = group.cells or group.unfinished
        group.access = access_of(finished[0])
        if group.cells:
            _estimate(group, shifts)
        group.verdict, group.reasons = judge(group, rule)
    return sorted(groups.values(), key=lambda g: natural_order(g.key))


def _estimate(group: Group, shifts: list[str]) -> None:
    group.cells.sort(key=replicate_of)  # a bootstrap draw depends on the replicates' order: one order everywhere
    readouts = READOUTS | {
        s: (_arm(s, "final", lambda r, s=s: r["metrics"][s]["acc/greedy"]), ACCURACY) for s in shifts
    }
    group.stats = {name: bootstrap([read(c) for c in group.cells], bounds) for name, (read, bounds) in readouts.items()}
    group.paired = {name: paired(group.cells, new, old) for name, (new, old) in PAIRED.items()}
    group.stats |= {name: p.estimate for name, p in group.paired.items()}
    for name, read in VARIANCE_READOUTS.items():
        group.variance[name] = variance_components({replicate_of(c): statistics.fmean(read(c)) for c in group.cells})


def judge(group: Group, rule: StabilityConfig) -> tuple[str, list[str]]:
    """The verdict and its reasons; floor and no-TTT groups get no stability verdict."""
    diverged = group.statuses.get("diverged", 0)
    if group.key.get("signal") == "none":
        return NO_TTT, []
    if group.key.get("regime") == "none":
        return FLOOR, ["regime `none` is the floor"]
    if not group.cells:
        return (UNSTABLE, [f"{diverged} replicate(s) diverged"]) if diverged else (NO_REPLICATE, [])
    ignition = group.paired["ignition"]
    if ignition.test is None:
        return NO_ITEMS, []
    if not above_floor(group.cells, ignition):
        return FLOOR, [f"start not significantly above the `none` base ({ignition.test.describe()})"]
    finals = [statistics.fmean(FINAL(c)) for c in group.cells]
    final_std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    reasons = stability_reasons(
        gain=group.stats["gain"],
        gain_test=group.paired["gain"].test,
        drawdown=group.mean("drawdown"),
        collapse=group.mean("collapse"),
        final_std=final_std,
        rule=rule,
    )
    if diverged:
        reasons.append(f"{diverged} replicate(s) diverged")
    return (UNSTABLE if reasons else STABLE), reasons


@dataclass
class Ignition:
    """Catalyst start − `none` base before TTT, for one pre-TTT configuration, over its replicates."""

    key: dict
    replicates: list[dict]
    paired: Paired

    @property
    def ignites(self) -> bool | None:
        return None if self.paired.test is None else self.paired.test.higher


def ignition(results: list[dict]) -> list[Ignition]:
    """One entry per regime and pre-TTT configuration; signals share their start, so each replicate once."""
    per_key: dict[str, tuple[dict, dict]] = {}
    for result in results:
        if result["status"] != "done" or result["axes"]["regime"] == "none":
            continue
        key = ignition_key(result)
        _, replicates = per_key.setdefault(repr(key), (key, {}))
        replicates.setdefault(replicate_of(result), result)
    out = []
    for key, replicates in per_key.values():
        cells = [replicates[r] for r in sorted(replicates)]
        out.append(Ignition(key, cells, paired(cells, START, BASE)))
    return sorted(out, key=lambda i: natural_order(i.key))


def natural_order(key: dict) -> tuple:
    """A key's values in axis order, numbers by value (64 before 256) and before any text."""
    return tuple(
        (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v)) for v in key.values()
    )
