"""Accuracy, information gain, stability, statistics and aggregation on hand-made inputs."""

import itertools
import math
import operator
import random

import pytest

from catalyst_ttt.metrics.accuracy import agreement, maj_at_k, pass_at_k
from catalyst_ttt.metrics.aggregate import aggregate
from catalyst_ttt.metrics.stability import noise_allowance, trajectory_stability
from catalyst_ttt.metrics.statistics import variance_components
from helpers.cells import TASK
from helpers.fakes import fake_result


@pytest.mark.parametrize("seed", range(30))
def test_pass_at_k_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    c, k = rng.randint(0, n), rng.randint(1, n)
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_maj_at_k_with_ties():
    equal = TASK.answers_equal
    assert maj_at_k(["A", "B", "B", "A"], "A", equal) == 1.0  # tie: the first seen wins
    assert maj_at_k(["B", "A", "A", "B"], "A", equal) == 0.0
    assert maj_at_k([None, None, "A"], "A", equal) == 1.0  # unparseable samples do not vote
    assert maj_at_k([None, None], "A", equal) == 0.0


@pytest.mark.parametrize("seed", range(200))
def test_maj_at_k_equals_the_mean_over_every_k_subset(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    k = rng.randint(1, n)
    answers = [rng.choice(["A", "B", "C", None]) for _ in range(n)]
    subsets = list(itertools.combinations(answers, k))
    brute = sum(maj_at_k(list(s), "A", operator.eq) for s in subsets) / len(subsets)  # k None: one vote of all
    assert maj_at_k(answers, "A", operator.eq, k) == pytest.approx(brute, abs=1e-12)


def test_agreement_collapse_and_diversity():
    assert agreement(["X", "X", "X", "X"], hits=0) == {"samples/collapse": 1.0, "samples/diversity": 1.0}
    assert agreement(["A", "A", "A", "A"], hits=4)["samples/collapse"] == 0.0  # agreeing on the right answer
    assert agreement(["X", "Y", None, "X"], hits=0) == {"samples/collapse": 0.0, "samples/diversity": 2.0}


def _problem():
    return TASK.make_problem("ABCD", ("rot", "rev", "inc"))


def test_stability_of_a_monotone_rise():
    F, T = False, True
    stab = trajectory_stability([0, 10, 20], [[F, F, F, F], [T, F, F, F], [T, T, T, F]])
    assert stab["stab/start"] == 0 and stab["stab/peak"] == 0.75 and stab["stab/final"] == 0.75
    assert stab["stab/peak_step"] == 20 and stab["stab/drawdown"] == 0 and stab["stab/collapse_step"] is None
    assert stab["stab/auc"] == pytest.approx(((0 + 0.25) / 2 * 10 + (0.25 + 0.75) / 2 * 10) / 20)
    assert stab["stab/flips_w2c"] == 3 and stab["stab/flips_c2w"] == 0


def test_stability_of_a_rise_then_fall():
    F, T = False, True
    stab = trajectory_stability([0, 5, 10], [[T, F, F, F], [T, T, T, F], [F, F, F, F]])
    assert stab["stab/peak"] == 0.75 and stab["stab/peak_step"] == 5
    assert stab["stab/final"] == 0 and stab["stab/drawdown"] == 0.75
    assert stab["stab/flips_w2c"] == 2 and stab["stab/flips_c2w"] == 3


def test_flips_are_counted_per_item_not_from_accuracy():
    F, T = False, True
    stab = trajectory_stability([0, 1, 2], [[T, F], [F, T], [T, F]])
    assert stab["stab/start"] == stab["stab/final"] == 0.5 and stab["stab/drawdown"] == 0
    assert stab["stab/flips_c2w"] == 2 and stab["stab/flips_w2c"] == 2


def _curve(accuracies: list[float], items: int = 20) -> list[list[bool]]:
    return [[i < round(a * items) for i in range(items)] for a in accuracies]


def test_collapse_step_is_where_accuracy_falls_below_start_minus_noise_for_good():
    steps = [0, 5, 10, 15, 20]
    noise = 2 * math.sqrt(0.5 * 0.5 / 20)  # two binomial standard errors of the start, 0.224
    assert noise_allowance(0.5, 20) == pytest.approx(noise)
    assert noise_allowance(0.0, 20) == 1 / 20  # a start of 0 still allows one item
    assert trajectory_stability(steps, _curve([0.5, 0.6, 0.25, 0.2, 0.2]))["stab/collapse_step"] == 10
    # a dip that recovers is no collapse; one that returns later collapses from its return
    assert trajectory_stability(steps, _curve([0.5, 0.2, 0.5, 0.2, 0.25]))["stab/collapse_step"] == 15
    # within the noise allowance (0.5 - 0.224 = 0.276): no collapse
    assert trajectory_stability(steps, _curve([0.5, 0.3, 0.3, 0.3, 0.3]))["stab/collapse_step"] is None
    assert trajectory_stability([0], _curve([0.5]))["stab/collapse_step"] is None


# -- statistics (the verdicts: tests/test_statistics.py) ----------------------------------


def test_variance_components_against_a_hand_computation():
    values = {(0, 0): 0.1, (0, 1): 0.3, (1, 0): 0.5, (1, 1): 0.7}
    parts = variance_components(values)
    # within base seeds: ((0.1 - 0.2)² + (0.3 - 0.2)² + (0.5 - 0.6)² + (0.7 - 0.6)²) / 2 = 0.02
    # base-seed means 0.2, 0.6: variance 0.08, minus 0.02 / 2 seeds per base = 0.07
    assert parts["cell"] == pytest.approx(0.02) and parts["base"] == pytest.approx(0.07)
    assert parts["base_share"] == pytest.approx(0.07 / 0.09)
    assert variance_components({(0, 0): 0.1, (0, 1): 0.3}) == {
        "base": None,
        "cell": pytest.approx(0.02),
        "base_share": None,
    }
    one_seed = variance_components({(0, 0): 0.1, (1, 0): 0.5, (2, 0): 0.3})
    assert one_seed["cell"] is None and one_seed["base"] == pytest.approx(0.04)


def test_aggregate_pools_replicates_of_one_configuration_only():
    results = [
        fake_result("correct", "process", seed, 0.6, 0.65, base_seed=base_seed)
        for base_seed, seed in [(0, 0), (0, 1), (1, 0)]
    ]
    results += [fake_result("correct", "process", 0, 0.3, 0.3, catalyst_n=64)]
    results += [fake_result("correct", "process", 0, 0.3, 0.3, task="arith")]
    results += [fake_result("correct", "process", 1, 0.3, 0.3, config={"ttt": {"steps": 1}})]
    groups = aggregate(results)
    assert sorted(len(g.cells) for g in groups) == [1, 1, 1, 3]
    pooled = next(g for g in groups if len(g.cells) == 3)
    assert pooled.key["catalyst_n"] == 256 and pooled.key["task"] == "alchemy"
    assert pooled.stats["start"].mean == pytest.approx(round(0.6 * 64) / 64)
    assert pooled.stats["gain"].mean == pytest.approx((round(0.65 * 64) - round(0.6 * 64)) / 64)
