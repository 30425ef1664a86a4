"""Information gain under a prefix-trained reader: it must tell a faithful right answer from an unfaithful
one (the right answer after invalid steps), which Wu et al.'s telescoping total cannot."""

import copy
import math
import random

import pytest
import torch
from datasets import Dataset

from catalyst_ttt.metrics.information_gain import calibration, information_gain, reader_rows, unfaithful_steps
from catalyst_ttt.models import char_tokenizer, new_tiny_model
from catalyst_ttt.schema import ModelConfig
from catalyst_ttt.training import sft
from helpers.cells import SPLITS, TASK


@pytest.fixture(scope="module")
def reader():
    """A tiny reader trained, like the pipeline's, on every prefix of the reader pool's gold traces."""
    tokenizer = char_tokenizer()
    model = new_tiny_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tokenizer, 0)
    rows = reader_rows(TASK, SPLITS["train"])
    sft(model, tokenizer, Dataset.from_list(rows), steps=300, batch_size=32, lr=3e-3, seed=0, max_length=96)
    return model, tokenizer


def _ig(reader, problems, traces, correct=None):
    model, tokenizer = reader
    prompts, answers = [p.prompt for p in problems], [p.answer for p in problems]
    return information_gain(TASK, model, tokenizer, prompts, traces, answers, correct)


def test_reader_rows_are_every_prefix_followed_by_the_answer():
    problem = TASK.make_problem("AB", ("rot", "rev"))
    rows = reader_rows(TASK, [problem])
    assert [r["completion"] for r in rows] == [
        "#" + problem.answer,
        problem.steps[0] + "#" + problem.answer,
        ";".join(problem.steps) + "#" + problem.answer,
    ]


def test_unfaithful_traces_are_invalid_and_state_the_gold_answer_last():
    for i, problem in enumerate(SPLITS["heldout"]):
        steps = unfaithful_steps(TASK, problem, random.Random(i))
        assert TASK.trace_answer(steps) == problem.answer and not all(TASK.step_validity(problem, steps))


def test_faithful_right_answers_gain_more_than_unfaithful_ones(reader):
    problems = [p for p in SPLITS["heldout"] if p.num_steps >= 2]
    faithful = _ig(reader, problems, [p.steps for p in problems])
    unfaithful = _ig(reader, problems, [unfaithful_steps(TASK, p, random.Random(i)) for i, p in enumerate(problems)])
    assert faithful["ig/total"] > 0
    assert faithful["ig/total"] > unfaithful["ig/total"]
    # Wu et al.'s total telescopes to the last prefix, where both traces state the gold answer
    assert abs(faithful["ig/end"] - unfaithful["ig/end"]) < faithful["ig/total"] - unfaithful["ig/total"]


def test_the_calibration_row_orders_gold_above_every_other_kind(reader):
    model, tokenizer = reader
    problems = [p for p in SPLITS["heldout"] if p.num_steps >= 2]
    kinds = {
        "correct": lambda ps: [p.steps for p in ps],
        "unfaithful": lambda ps: [unfaithful_steps(TASK, p, random.Random(i)) for i, p in enumerate(ps)],
        "corrupted": lambda ps: [TASK.corrupted_steps(p, random.Random(i)) for i, p in enumerate(ps)],
    }
    row = calibration(TASK, model, tokenizer, problems, kinds)
    assert row["correct"] > max(row["unfaithful"], row["corrupted"], 0.0)


def test_items_without_a_trace_have_no_information_gain_not_zero(reader):
    problems = SPLITS["heldout"][:4]
    none = _ig(reader, problems, [()] * 4)
    assert none["ig/total"] is None and none["ig/traced"] == 0.0
    mixed = _ig(reader, problems, [problems[0].steps, (), (), ()])
    assert (
        mixed["ig/traced"] == 0.25 and mixed["ig/total"] == _ig(reader, problems[:1], [problems[0].steps])["ig/total"]
    )


def test_ig_correlation_with_accuracy_is_reported_per_item(reader):
    problems = [p for p in SPLITS["heldout"] if p.num_steps >= 2][:8]
    traces = [p.steps if i % 2 else TASK.corrupted_steps(p, random.Random(i)) for i, p in enumerate(problems)]
    result = _ig(reader, problems, traces, correct=[i % 2 for i in range(len(problems))])
    assert result["ig/acc_corr"] > 0  # the right (faithful) items carry the information
    assert _ig(reader, problems, traces, correct=[1] * len(problems))["ig/acc_corr"] is None  # no spread: none


def test_wu_ppl_reproduces_a_hand_computation(reader):
    model, tokenizer = copy.deepcopy(reader[0]), reader[1]
    problem = SPLITS["heldout"][0]

    def ppl(text):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        return math.exp(-logp.gather(-1, ids[0, 1:, None]).mean().item())

    ppl_0 = ppl(problem.prompt + "#" + problem.answer)
    ppl_n = ppl(problem.prompt + ";".join(problem.steps) + "#" + problem.answer)
    ig = information_gain(TASK, model, tokenizer, [problem.prompt], [problem.steps], [problem.answer])
    assert ig["ig/wu_ppl"] == pytest.approx((ppl_0 - ppl_n) / (len(problem.steps) + 1), rel=1e-4)
