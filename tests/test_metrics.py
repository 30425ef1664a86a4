"""Accuracy, information gain, stability and aggregation on hand-made inputs."""

import itertools
import math
import random

import pytest
import torch

from catalyst_ttt.config import StabilityConfig
from catalyst_ttt.metrics.accuracy import agreement, maj_at_k, pass_at_k
from catalyst_ttt.metrics.aggregate import aggregate
from catalyst_ttt.metrics.information_gain import information_gain
from catalyst_ttt.metrics.stability import mean_ci, stability_verdict, trajectory_stability
from helpers.cells import SPLITS, TASK
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


def test_agreement_collapse_and_diversity():
    assert agreement(["X", "X", "X", "X"], hits=0) == {"samples/collapse": 1.0, "samples/diversity": 1.0}
    assert agreement(["A", "A", "A", "A"], hits=4)["samples/collapse"] == 0.0  # agreeing on the right answer
    assert agreement(["X", "Y", None, "X"], hits=0) == {"samples/collapse": 0.0, "samples/diversity": 2.0}


def _problem():
    return TASK.make_problem("ABCD", ("rot", "rev", "inc"))


def test_information_gain_of_gold_trace_is_positive_and_beats_a_swapped_trace(taught):
    model, tokenizer = taught
    problems = [p for p in SPLITS["heldout"] if p.num_steps >= 2][:6]
    donors = problems[1:] + problems[:1]
    gold = information_gain(
        TASK, model, tokenizer, [p.prompt for p in problems], [p.steps for p in problems], [p.answer for p in problems]
    )
    swapped = information_gain(
        TASK, model, tokenizer, [p.prompt for p in problems], [d.steps for d in donors], [p.answer for p in problems]
    )
    assert gold["ig/total"] > 0
    assert gold["ig/total"] > swapped["ig/total"]
    assert 0.0 <= gold["ig/positive_frac"] <= 1.0


def test_information_gain_of_an_empty_trace_is_zero_per_step(taught):
    model, tokenizer = taught
    problem = _problem()
    ig = information_gain(TASK, model, tokenizer, [problem.prompt], [()], [problem.answer])
    assert ig["ig/per_step"] == 0.0 and ig["ig/total"] == 0.0 and ig["ig/wu_ppl"] == 0.0


def test_wu_ppl_reproduces_a_hand_computation(taught):
    model, tokenizer = taught
    problem = _problem()

    def ppl(text):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        return math.exp(-logp.gather(-1, ids[0, 1:, None]).mean().item())

    ppl_0 = ppl(problem.prompt + "#" + problem.answer)
    ppl_n = ppl(problem.prompt + ";".join(problem.steps) + "#" + problem.answer)
    ig = information_gain(TASK, model, tokenizer, [problem.prompt], [problem.steps], [problem.answer])
    assert ig["ig/wu_ppl"] == pytest.approx((ppl_0 - ppl_n) / (len(problem.steps) + 1), rel=1e-4)


def test_stability_of_a_monotone_rise():
    F, T = False, True
    stab = trajectory_stability([0, 10, 20], [[F, F, F, F], [T, F, F, F], [T, T, T, F]])
    assert stab["stab/start"] == 0 and stab["stab/peak"] == 0.75 and stab["stab/final"] == 0.75
    assert stab["stab/drawdown"] == 0
    assert stab["stab/auc"] == pytest.approx(((0 + 0.25) / 2 * 10 + (0.25 + 0.75) / 2 * 10) / 20)
    assert stab["stab/flips_w2c"] == 3 and stab["stab/flips_c2w"] == 0


def test_stability_of_a_rise_then_fall():
    F, T = False, True
    stab = trajectory_stability([0, 5, 10], [[T, F, F, F], [T, T, T, F], [F, F, F, F]])
    assert stab["stab/peak"] == 0.75 and stab["stab/final"] == 0 and stab["stab/drawdown"] == 0.75
    assert stab["stab/flips_w2c"] == 2 and stab["stab/flips_c2w"] == 3
    stable, reasons = stability_verdict(0.25, 0.0, 0.75, 0.0, 0.0, StabilityConfig())
    assert not stable and any("drawdown" in r for r in reasons)


def test_flips_are_counted_per_item_not_from_accuracy():
    F, T = False, True
    stab = trajectory_stability([0, 1, 2], [[T, F], [F, T], [T, F]])
    assert stab["stab/start"] == stab["stab/final"] == 0.5 and stab["stab/drawdown"] == 0
    assert stab["stab/flips_c2w"] == 2 and stab["stab/flips_w2c"] == 2


def test_collapse_to_one_wrong_answer_is_unstable():
    stable, reasons = stability_verdict(0.5, 0.5, 0.0, 0.0, collapse=0.8, rule=StabilityConfig())
    assert not stable and reasons == ["collapse 0.800 > 0.25"]
    assert stability_verdict(0.5, 0.52, 0.01, 0.02, 0.0, StabilityConfig()) == (True, [])


def test_mean_ci():
    stats = mean_ci([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["std"] == 1.0 and stats["n"] == 3
    assert stats["ci95"] == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci([0.4])["ci95"] == 0.0


def test_aggregate_groups_seeds_and_applies_the_rule():
    results = [
        fake_result("correct", "majority", s, 0.6, f, drawdown=0.3, collapse=0.5) for s, f in [(0, 0.2), (1, 0.3)]
    ]
    results += [fake_result("correct", "process", s, 0.6, f) for s, f in [(0, 0.65), (1, 0.66)]]
    results += [fake_result("swapped", "process", 0, 0.6, 0.6, status="diverged")]
    groups = {g.label: g for g in aggregate(results, StabilityConfig())}
    assert groups["correct x majority"].stats["final"]["mean"] == pytest.approx(0.25)
    assert groups["correct x majority"].stats["final"]["n"] == 2
    assert groups["correct x majority"].stable is False
    assert groups["correct x process"].stable is True
    assert groups["swapped x process"].stable is False and not groups["swapped x process"].cells
