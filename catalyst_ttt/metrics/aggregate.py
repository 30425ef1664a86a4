"""Across seeds: group cells that differ only by seed, then mean, std, 95% CI and a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from catalyst_ttt.config import StabilityConfig
from catalyst_ttt.metrics.stability import mean_ci, stability_verdict

GROUP_AXES = ("task", "model", "regime", "signal", "reference", "catalyst_n")

# What the tables report per group: name -> how to read it from one result.json.
READOUTS = {
    "start": lambda r: r["pre_ttt"]["acc/greedy"],
    "final": lambda r: r["metrics"]["id"]["acc/greedy"],
    "heldout": lambda r: r["metrics"]["heldout"]["acc/greedy"],
    "ignition": lambda r: r["ignition"],
    "drawdown": lambda r: r["stab"]["stab/drawdown"],
    "auc": lambda r: r["stab"]["stab/auc"],
    "flips_c2w": lambda r: r["stab"]["stab/flips_c2w"],
    "collapse": lambda r: r["stab"]["stab/collapse"],
    "diversity": lambda r: r["stab"]["stab/diversity"],
    "step_validity": lambda r: r["metrics"]["id"]["process/step_validity"],
    "start_step_validity": lambda r: r["pre_ttt"]["process/step_validity"],
    "faithful_acc": lambda r: r["metrics"]["id"]["process/faithful_acc"],
    "unfaithful_correct": lambda r: r["metrics"]["id"]["process/unfaithful_correct"],
    "ig_total": lambda r: r["ig"].get("ig/total", float("nan")),
}


@dataclass
class Group:
    key: dict
    cells: list[dict]
    stats: dict[str, dict] = field(default_factory=dict)
    stable: bool | None = None
    reasons: list[str] = field(default_factory=list)
    uses_labels: bool = False
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        ref = f"[ref={self.key['reference']}]" if self.key["signal"] in ("verifree", "predictive") else ""
        return f"{self.key['regime']} x {self.key['signal']}{ref}"

    def mean(self, name: str) -> float:
        return self.stats[name]["mean"]


def shift_splits(results: list[dict]) -> list[str]:
    splits = {s for r in results if r.get("status") == "done" for s in r["metrics"]}
    return sorted(s for s in splits if s.startswith("shift_"))


def rule_of(results: list[dict]) -> StabilityConfig:
    """The stability rule the sweep was configured with (`metrics.stability`)."""
    for result in results:
        return StabilityConfig(**result["config"]["metrics"]["stability"])
    return StabilityConfig()


def aggregate(results: list[dict], rule: StabilityConfig) -> list[Group]:
    """One Group per (task, model, regime, signal, reference, catalyst N) over its seeds."""
    groups: dict[tuple, Group] = {}
    for result in results:
        key = {axis: result["axes"][axis] for axis in GROUP_AXES}
        group = groups.setdefault(tuple(key.values()), Group(key=key, cells=[]))
        group.statuses[result["status"]] = group.statuses.get(result["status"], 0) + 1
        if result["status"] == "done":
            group.cells.append(result)
            group.uses_labels = group.uses_labels or result["uses_labels"]
    shifts = shift_splits(results)
    for group in groups.values():
        if not group.cells:
            group.reasons = [f"no finished cell ({', '.join(f'{k}={v}' for k, v in group.statuses.items())})"]
            group.stable = False if group.statuses.get("diverged") else None
            continue
        readouts = READOUTS | {s: (lambda r, s=s: r["metrics"][s]["acc/greedy"]) for s in shifts}
        group.stats = {name: mean_ci([read(r) for r in group.cells]) for name, read in readouts.items()}
        group.stable, group.reasons = stability_verdict(
            start=group.mean("start"),
            final=group.mean("final"),
            drawdown=group.mean("drawdown"),
            seed_std=group.stats["final"]["std"],
            collapse=group.mean("collapse"),
            rule=rule,
        )
        if group.statuses.get("diverged"):
            group.stable = False
            group.reasons.append(f"{group.statuses['diverged']} seed(s) diverged")
    return sorted(groups.values(), key=lambda g: tuple(str(v) for v in g.key.values()))
