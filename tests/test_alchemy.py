import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalyst_ttt.config import RegimeConfig
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.tasks.alchemy import OPS, Alchemy, AlchemyConfig, apply_op, format_step


@pytest.fixture(scope="module")
def task() -> Alchemy:
    return Alchemy(
        AlchemyConfig(
            n_train=200, n_id=50, n_heldout=50, n_shift=30, n_base_single=100, n_base_chain=100, n_base_answer_only=100
        )
    )


@pytest.fixture(scope="module")
def splits(task):
    return task.splits()


@pytest.mark.parametrize(
    "op, element, alphabet, expected",
    [
        ("rot", "ABCD", 26, "NOPQ"),  # ROT-13
        ("rot", "ABCD", 10, "FGHI"),  # half-way round a 10-letter alphabet
        ("rot", "FGHJ", 10, "ABCE"),
        ("inc", "ABCD", 10, "BCDE"),
        ("inc", "AJJB", 10, "BAAC"),  # J wraps to A
        ("inc", "XYZA", 26, "YZAB"),
        ("shf", "ABCD", 10, "BCDA"),
        ("shf", "AABC", 10, "ABCA"),
        ("rev", "ABCD", 10, "DCBA"),
        ("rev", "ABBA", 10, "ABBA"),
    ],
)
def test_ops_by_hand(op, element, alphabet, expected):
    assert apply_op(op, element, alphabet) == expected


def test_gold_trace_by_hand(task):
    problem = task.make_problem("ABCD", ("rot", "rev", "inc"))
    assert problem.prompt == "ABCD rot,rev,inc:"
    assert problem.steps == ("rot ABCD>FGHI", "rev FGHI>IHGF", "inc IHGF>JIHG")
    assert problem.answer == "JIHG"
    assert task.render(problem.steps, problem.answer) == "rot ABCD>FGHI;rev FGHI>IHGF;inc IHGF>JIHG#JIHG"


def test_verifier_accepts_every_gold_trace(task, splits):
    for name, problems in splits.items():
        for problem in problems:
            assert all(task.step_validity(problem, problem.steps)), (name, problem)


def test_verifier_rejects_one_wrong_step(task):
    problem = task.make_problem("ABCD", ("rot", "rev", "inc"))
    wrong_output = ("rot ABCD>FGHI", "rev FGHI>IHGE", "inc IHGE>JIHF")
    assert task.step_validity(problem, wrong_output) == [True, False, True]  # the chain carries on from IHGE
    wrong_op = ("rot ABCD>FGHI", "shf FGHI>GHIF", "inc GHIF>HIJG")
    assert task.step_validity(problem, wrong_op) == [True, False, True]
    broken_chain = ("rot ABCD>FGHI", "rev FGHJ>JHGF", "inc JHGF>AIHG")
    assert task.step_validity(problem, broken_chain)[1] is False
    assert task.step_validity(problem, problem.steps[:2]) == [True, True, False]  # a missing step counts invalid


def test_verifier_needs_no_gold_answer(task, splits):
    for problem in splits["id"][:20]:
        assert task.step_validity(problem.unlabeled(), problem.steps) == task.step_validity(problem, problem.steps)


@given(st.text(max_size=200))
def test_parser_survives_garbage(text):
    parsed = Alchemy(AlchemyConfig(n_train=1)).parse(text)
    assert isinstance(parsed.steps, tuple)
    assert parsed.answer is None or isinstance(parsed.answer, str)


@given(st.text(alphabet="rotshfevinc ABCDEFGHIJ>;#:_\n", max_size=120))
def test_verifier_survives_garbage(text):
    task = Alchemy(AlchemyConfig(n_train=1))
    problem = task.make_problem("ABCD", ("rot", "rev"))
    flags = task.step_validity(problem, task.parse(text).steps)
    assert len(flags) >= 2 and all(isinstance(f, bool) for f in flags)


def test_parser_reads_answer_only_and_missing_answer(task):
    assert task.parse("#ABCD").answer == "ABCD" and task.parse("#ABCD").steps == ()
    assert task.parse("rot ABCD>FGHI").answer is None
    assert task.parse("").steps == () and task.parse("").answer is None


def test_splits_are_disjoint_and_shifted(task, splits):
    uids = [p.uid for name, problems in splits.items() for p in problems]
    assert len(uids) == len(set(uids))
    trained = {tuple(p.spec["ops"]) for p in splits["train"] + splits["id"]}
    assert not trained & {tuple(p.spec["ops"]) for p in splits["shift_compose"]}
    assert {len(p.spec["start"]) for p in splits["shift_length"]} == {task.cfg.shift_length}
    assert {len(p.spec["ops"]) for p in splits["shift_steps"]} == {task.cfg.shift_steps}
    assert all("_" in p.prompt for p in splits["shift_format"])
    assert max(len(p.spec["ops"]) for p in splits["id"]) <= task.cfg.max_ops


def test_base_corpus_never_shows_prompt_then_trace(task):
    corpus = task.base_corpus()
    assert any(":#" in text for text in corpus)  # answer-only problems
    assert any(";" in text for text in corpus)  # chained runs of steps
    for text in corpus:
        prompt, colon, rest = text.partition(":")
        assert not colon or rest.startswith("#"), text


def test_illogical_keeps_structure_and_breaks_every_step(task, splits):
    rows = REGIMES.get("illogical")(splits["train"], task, RegimeConfig(name="illogical"), 0)
    for problem, row in zip(splits["train"], rows):
        parsed = task.parse(row["completion"])
        assert len(parsed.steps) == problem.num_steps and parsed.answer == problem.answer
        assert [s.split(" ")[0] for s in parsed.steps] == problem.spec["ops"]
        assert not any(task.step_validity(problem, parsed.steps))


def test_illogical_is_seeded(task, splits):
    a = task.illogical_steps(splits["train"][0], random.Random(1))
    b = task.illogical_steps(splits["train"][0], random.Random(1))
    assert a == b


def test_unknown_op_is_a_user_error():
    from catalyst_ttt.errors import UserError

    with pytest.raises(UserError, match="valid: " + ", ".join(OPS)):
        Alchemy(AlchemyConfig(ops=["rot", "nope"]))


def test_format_step():
    assert format_step("inc", "ABCD", "BCDE") == "inc ABCD>BCDE"
