"""The testbed's promises: the base corpus teaches latent skill but never an evaluated item."""

import pytest

from catalyst_ttt.tasks.alchemy import Alchemy, AlchemyConfig
from catalyst_ttt.tasks.arith import Arith, ArithConfig
from catalyst_ttt.tasks.base import TRAINING_SPLITS
from catalyst_ttt.tasks.gsm8k import GSM8K, GSM8KConfig
from helpers.gsm8k_data import gsm8k_rows, write_jsonl

SMALL = dict(n_train=300, n_reader=64, n_id=64, n_heldout=64, n_shift=32, n_base_answer_only=4000)


@pytest.fixture(scope="module")
def alchemy():
    return Alchemy(AlchemyConfig(length=3, n_base_single=2000, n_base_chain=4000, **SMALL))


@pytest.fixture(scope="module")
def arith():
    return Arith(ArithConfig(digits=2, n_base_facts=500, n_base_chain=2000, **SMALL))


def evaluated(task) -> list:
    return [p for name, items in task.splits().items() if name not in TRAINING_SPLITS for p in items]


def test_alchemy_base_never_answers_nor_traces_an_evaluated_item(alchemy):
    corpus = set(alchemy.base_corpus())
    for problem in evaluated(alchemy):
        assert problem.prompt + "#" + problem.answer not in corpus, problem.uid
        assert ";".join(problem.steps) not in corpus, problem.uid


def test_alchemy_base_answers_only_compositions_no_split_uses(alchemy):
    answered = {tuple(text.split(":")[0].split(" ")[1].split(",")) for text in alchemy.base_corpus() if ":#" in text}
    assert answered == set(alchemy.answer_only_compositions)  # single ops and half the seen compositions
    used = {tuple(p.spec["ops"]) for items in alchemy.splits().values() for p in items}
    assert not answered & used
    assert {len(ops) for ops in answered} == set(range(1, alchemy.cfg.max_ops + 1))
    assert min(len(p.spec["ops"]) for p in alchemy.splits()["id"]) == 2


def test_arith_base_answers_only_shorter_problems_and_no_evaluated_trace(arith):
    corpus = arith.base_corpus()
    answered = [text for text in corpus if ":#" in text]
    assert answered and all(len(operand) < 2 for text in answered for operand in text.split(":")[0].split("+"))
    texts = set(corpus)
    for problem in evaluated(arith):
        assert ";".join(problem.steps) not in texts and problem.prompt + "#" + problem.answer not in texts


def test_gsm8k_base_holds_no_line_of_an_evaluated_problem(tmp_path):
    task = GSM8K(
        GSM8KConfig(
            path=str(write_jsonl(tmp_path / "g.jsonl", gsm8k_rows(90))), n_id=10, n_heldout=10, n_train=40, n_reader=10
        )
    )
    corpus = set(task.base_corpus())
    assert corpus
    for problem in evaluated(task):
        assert problem.prompt not in corpus
        assert not corpus & set(problem.steps) - {p for t in TRAINING_SPLITS for q in task.splits()[t] for p in q.steps}
