"""The statistics every verdict rests on, cross-checked against scipy and statsmodels, and the verdict
machinery's error rates under a known truth (catalyst_ttt.simulation)."""

import copy
import math
import random

import numpy as np
import pytest
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.stats.multitest import multipletests

from catalyst_ttt.metrics.aggregate import (
    FLOOR,
    IGNITES,
    INCONCLUSIVE,
    NO_IGNITION,
    STABLE,
    TOO_FEW,
    UNSTABLE,
    analyse,
)
from catalyst_ttt.metrics.statistics import (
    ALPHA,
    BASES,
    REPLICATES,
    adjust,
    detectable_effect,
    estimate,
    floor_p,
    one_sided_p,
    t_quantile,
    units,
    units_to_decide,
    variance_components,
)
from catalyst_ttt.schema import StabilityConfig
from catalyst_ttt.simulation import SCENARIOS, Design, Truth, simulate_study, verdict_rates

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("alternative", ["greater", "less"])
@pytest.mark.parametrize("n", [3, 5, 8])
def test_one_sided_t_test_is_scipys(alternative, n):
    for _ in range(20):
        data = RNG.normal(0.1, 0.2, n)
        null = float(RNG.normal(0, 0.1))
        expected = stats.ttest_1samp(data, null, alternative=alternative).pvalue
        assert one_sided_p(data, null, alternative) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_interval_is_the_90_percent_t_interval_over_units():
    values = {(b, 0): float(v) for b, v in enumerate(RNG.normal(0.5, 0.1, 6))}
    data = list(values.values())
    low, high = stats.t.interval(0.90, len(data) - 1, loc=np.mean(data), scale=stats.sem(data))
    got = estimate(values)
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
    assert got.n == 6 and got.scope == BASES
    assert t_quantile(0.95, 5) == pytest.approx(stats.t.ppf(0.95, 5))


def test_a_base_is_one_unit_however_many_seeds_it_has():
    # three bases, the first with three seeds: its seeds are averaged first, then the bases
    values = {(0, 0): 0.9, (0, 1): 0.8, (0, 2): 0.7, (1, 0): 0.2, (2, 0): 0.5}
    means, scope = units(values)
    assert scope == BASES and means == [pytest.approx(0.8), 0.2, 0.5]
    assert estimate(values).mean == pytest.approx(0.5)  # not the replicate mean 0.62


def test_with_fewer_than_three_bases_the_replicates_are_the_units_for_these_bases_only():
    values = {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.7, (1, 1): 0.6}
    means, scope = units(values)
    assert scope == REPLICATES and len(means) == 4
    assert not estimate({(0, 0): 0.9, (1, 0): 0.8}).has_interval  # 2 units: no interval


def test_benjamini_hochberg_is_statsmodels():
    pvalues = list(RNG.uniform(0, 0.2, 30)) + [0.001, 0.04, 0.5]
    assert adjust(pvalues) == pytest.approx(list(multipletests(pvalues, method="fdr_bh")[1]))
    assert adjust([]) == []


def test_variance_components_match_a_mixed_model_on_balanced_data():
    rng = np.random.default_rng(3)
    bases, seeds = 8, 4
    base_effects = rng.normal(0, 0.3, bases)
    values = {(b, s): float(base_effects[b] + rng.normal(0, 0.1)) for b in range(bases) for s in range(seeds)}
    parts = variance_components(values)
    groups = [b for b, _ in values]
    fit = MixedLM(np.array(list(values.values())), np.ones((len(values), 1)), groups=groups).fit(reml=True)
    assert parts["cell"] == pytest.approx(fit.scale, rel=1e-3)
    assert parts["base"] == pytest.approx(float(np.asarray(fit.cov_re)[0, 0]), rel=1e-3)


def test_floor_p_is_the_exact_one_sided_mcnemar_of_one_replicate():
    start, base = [1, 1, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1]  # 5 up, 1 down
    assert floor_p(start, base) == pytest.approx(stats.binomtest(5, 6, 0.5, alternative="greater").pvalue)
    assert floor_p([0, 0], [0, 0]) == 1.0  # no discordant pair: nothing to test


def test_detectable_effect_is_found_with_the_stated_power():
    n, sd = 6, 0.1
    effect = detectable_effect(sd, n)
    rng = np.random.default_rng(1)
    found = np.mean([one_sided_p(rng.normal(effect, sd, n), 0.0, "greater") < ALPHA for _ in range(4000)])
    assert 0.76 < found < 0.84
    assert detectable_effect(sd, 2) is None


def test_units_to_decide_is_the_first_count_whose_interval_fits():
    n = units_to_decide(0.01, 0.05, 0.05)
    half = lambda k: t_quantile(1 - ALPHA, k - 1) * 0.05 / math.sqrt(k)  # noqa: E731
    assert half(n) < 0.04 <= half(n - 1)
    assert units_to_decide(0.05, 0.05, 0.05) is None  # at the margin no count decides it


# -- verdicts from hand-made replicates --------------------------------------------------------


def _study(gains: list[float], starts: list[float] | None = None, base: float = 0.0) -> list[dict]:
    """One replicate per base with these true gains and starts, on 1,000 items (little item noise)."""
    rng = np.random.default_rng(0)
    results = []
    for b, gain in enumerate(gains):
        start = starts[b] if starts else 0.8
        exact = dict(base_sd=0, cell_sd=0, gain_base_sd=0, gain_cell_sd=0, items=1000)
        record = simulate_study(Truth("hand", base, start - base, gain, **exact), Design(1, 1), rng)[0]
        record["axes"]["base_seed"] = record["config"]["base"]["seed"] = b
        record["cell"] = f"hand-{b}"
        results.append(record)
    return results


def test_equivalence_verdicts():
    rule = StabilityConfig()
    assert analyse(_study([0.0] * 6), rule).groups[0].verdict == STABLE
    assert analyse(_study([-0.2] * 6), rule).groups[0].verdict == UNSTABLE
    assert analyse(_study([0.0, -0.1, 0.05, -0.08, 0.02, -0.04]), rule).groups[0].verdict == INCONCLUSIVE
    assert analyse(_study([0.0, 0.0]), rule).groups[0].verdict == TOO_FEW


def test_replicates_at_their_floor_are_not_judged():
    # five of six starts do not beat their base: TTT is judged on one replicate, which is no verdict
    analysis = analyse(_study([0.0] * 6, starts=[0.8] + [0.0] * 5), StabilityConfig())
    assert analysis.groups[0].verdict == FLOOR and len(analysis.groups[0].trained) == 1


def test_ignition_verdicts_and_the_none_arm_counted_once():
    rule = StabilityConfig()
    assert analyse(_study([0.0] * 6), rule).ignition[0].verdict == IGNITES
    assert analyse(_study([0.0] * 6, starts=[0.3] * 6, base=0.3), rule).ignition[0].verdict == NO_IGNITION


def test_one_start_at_two_ttt_horizons_is_one_ignition_entry():
    # ignition is read before TTT: cells that differ only in ttt.steps share their start and their base
    results = []
    for horizon in (12, 24):
        for record in _study([0.0] * 6):
            record = copy.deepcopy(record)
            record["axes"]["ttt_steps"] = horizon
            record["cell"] += f"-ttt{horizon}"
            results.append(record)
    (entry,) = analyse(results, StabilityConfig()).ignition
    assert entry.estimate.n == 6 and "ttt_steps" not in entry.key


# -- the verdict machinery under a known truth ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("verdict", "truth", "kind"), [(v, t, k) for v, scenarios in SCENARIOS.items() for t, k in scenarios]
)
def test_error_rates_and_power_at_the_default_replication(verdict, truth, kind):
    """500 simulated studies per scenario through the real verdict code: a verdict under its null appears
    at no more than 0.07 (nominal 0.05), and the effects the studies report are found at least 80% of the
    time with 6 bases (the figures in docs/statistics.md)."""
    rate = verdict_rates(truth, Design(bases=6, seeds=1), studies=500, seed=random.Random(truth.name).randrange(2**31))[
        verdict
    ]
    if kind == "false positive":
        assert rate <= 0.07, f"{verdict} under '{truth.name}': {rate:.3f}"
    elif truth.name.startswith(("full ignition", "TTT gain -0.15")):
        assert rate >= 0.80, f"{verdict} power under '{truth.name}': {rate:.3f}"
