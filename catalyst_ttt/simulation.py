"""Studies simulated under a known truth, run through the real verdict machinery (`metrics.aggregate`):
the error rates and power of every verdict rule, and each design's minimal detectable effect.

A simulated replicate has true accuracies per arm (base, start after the catalyst, final after TTT) drawn
around the scenario's truth with base-to-base and cell-to-cell spread like the committed studies'; its
items are drawn from those accuracies with item difficulty shared by every arm and replicate (a Gaussian
copula), so arms agree on most items as real checkpoints do. `python -m catalyst_ttt.simulation` prints the
table docs/statistics.md quotes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from catalyst_ttt.metrics.aggregate import IGNITES, INCONCLUSIVE, STABLE, UNSTABLE, analyse
from catalyst_ttt.schema import StabilityConfig

ITEM_AGREEMENT = 0.8  # correlation of an item's latent score across arms and replicates


@dataclass(frozen=True)
class Truth:
    """A scenario: true mean accuracies and effects, and the spread of replicates around them."""

    name: str
    base: float = 0.02  # the `none` arm's accuracy
    ignition: float = 0.85  # start - base
    gain: float = 0.0  # final - start (TTT)
    base_sd: float = 0.126  # base-to-base sd of the start (committed studies: 0.126)
    cell_sd: float = 0.079  # cell-to-cell sd of the start within a base (committed: 0.079)
    gain_base_sd: float = 0.02  # base-to-base sd of the TTT gain
    gain_cell_sd: float = 0.02  # cell-to-cell sd of the TTT gain
    items: int = 128


@dataclass(frozen=True)
class Design:
    bases: int = 6
    seeds: int = 1


def simulate_study(truth: Truth, design: Design, rng: np.random.Generator) -> list[dict]:
    """The result records of one study: a `none` arm and one TTT group, `design` replicates each."""
    difficulty = rng.standard_normal(truth.items)
    results = []
    for base_seed in range(design.bases):
        start_of_base = truth.base + truth.ignition + rng.normal(0, truth.base_sd)
        gain_of_base = truth.gain + rng.normal(0, truth.gain_base_sd)
        base_items = _items(truth.base, difficulty, rng)
        for seed in range(design.seeds):
            start_p = np.clip(start_of_base + rng.normal(0, truth.cell_sd), 0, 1)
            final_p = np.clip(start_p + gain_of_base + rng.normal(0, truth.gain_cell_sd), 0, 1)
            start_items = _items(float(start_p), difficulty, rng)
            final_items = _items(float(final_p), difficulty, rng)
            results.append(_result(base_seed, seed, base_items, start_items, final_items))
    return results


def _items(accuracy: float, difficulty: np.ndarray, rng: np.random.Generator) -> list[int]:
    """0/1 items right with probability `accuracy` each, the easiest items (by shared difficulty) most often."""
    score = ITEM_AGREEMENT * difficulty + np.sqrt(1 - ITEM_AGREEMENT**2) * rng.standard_normal(len(difficulty))
    return [int(u < accuracy) for u in special.ndtr(score)]


def _result(base_seed: int, seed: int, base: list[int], start: list[int], final: list[int]) -> dict:
    """A result.json record with what the verdicts read (the pipeline's schema)."""
    acc = float(np.mean(final))
    return {
        "cell": f"sim-{base_seed}-{seed}",
        "status": "done",
        "axes": {"regime": "correct", "signal": "majority", "base_seed": base_seed, "seed": seed},
        "config": {"metrics": {"stability": asdict(StabilityConfig())}, "seed": seed, "base": {"seed": base_seed}},
        "access": "intrinsic",
        "items": {"id": {"base": base, "start": start, "final": final}},
        "pre_ttt": {"acc/greedy": float(np.mean(start)), "base_acc/greedy": float(np.mean(base))},
        "metrics": {"id": {"acc/greedy": acc, "process/step_validity": 1.0}, "heldout": {"acc/greedy": acc}},
        "stab": {"stab/collapse": 0.0},
        "ttt": {"ttt/frac_zero_std": 0.3},
    }


def verdict_rates(truth: Truth, design: Design, studies: int, seed: int = 0) -> dict[str, float]:
    """Shares of simulated studies whose ignition ignites and whose TTT group is stable / unstable /
    inconclusive, through `metrics.aggregate.analyse` (one group per study: no multiplicity to help)."""
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for _ in range(studies):
        analysis = analyse(simulate_study(truth, design, rng), StabilityConfig())
        counts["ignites"] += analysis.ignition[0].verdict == IGNITES
        counts[analysis.groups[0].verdict] += 1
    keys = ("ignites", STABLE, UNSTABLE, INCONCLUSIVE)
    return {key: counts[key] / studies for key in keys}


# The scenarios docs/statistics.md reports: each names the verdict whose rate it measures.
SCENARIOS = {
    "ignites": [
        (Truth("no ignition, mid-range start", base=0.3, ignition=0.0), "false positive"),
        (Truth("no ignition at the floor", base=0.02, ignition=0.0, base_sd=0.0, cell_sd=0.0), "false positive"),
        (Truth("partial ignition +0.29 (correct, n=64)", ignition=0.29), "power"),
        (Truth("full ignition +0.85", ignition=0.85), "power"),
    ],
    STABLE: [
        (Truth("TTT gain -δ (equivalence boundary)", gain=-0.05), "false positive"),
        (Truth("TTT gain 0", gain=0.0), "power"),
    ],
    UNSTABLE: [
        (Truth("TTT gain -δ (boundary)", gain=-0.05), "false positive"),
        (Truth("TTT gain 0", gain=0.0), "false positive"),
        (Truth("TTT gain -0.15", gain=-0.15), "power"),
    ],
}


def table(design: Design, studies: int) -> list[dict]:
    rows = []
    for verdict, scenarios in SCENARIOS.items():
        for truth, kind in scenarios:
            rate = verdict_rates(truth, design, studies)[verdict]
            rows.append({"verdict": verdict, "scenario": truth.name, "kind": kind, "rate": rate})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--bases", type=int, nargs="+", default=[3, 5, 6, 8])
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    for bases in args.bases:
        design = Design(bases, args.seeds)
        print(f"\n{bases} bases x {args.seeds} seed(s), {args.studies} studies per scenario")
        print("| verdict | scenario | rate | kind |\n| --- | --- | --- | --- |")
        for row in table(design, args.studies):
            print(f"| {row['verdict']} | {row['scenario']} | {row['rate']:.3f} | {row['kind']} |")


if __name__ == "__main__":
    main()
