import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalyst_ttt.regimes import REGIMES, answer_leak
from catalyst_ttt.schema import RegimeConfig
from catalyst_ttt.tasks.alchemy import OPS, Alchemy, AlchemyConfig, apply_op, format_step, parse_step, true_fact


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
    assert task.step_validity(problem, wrong_output, local=True) == [True, False, True]
    wrong_op = ("rot ABCD>FGHI", "shf FGHI>GHIF", "inc GHIF>HIJG")
    assert task.step_validity(problem, wrong_op) == [True, False, True]
    assert task.step_validity(problem, wrong_op, local=True) == [True, True, True]  # true facts, chained
    broken_chain = ("rot ABCD>FGHI", "rev FGHJ>JHGF", "inc JHGF>AIHG")
    assert task.step_validity(problem, broken_chain) == [True, False, True]
    assert task.step_validity(problem, broken_chain, local=True) == [True, False, True]
    assert task.step_validity(problem, problem.steps[:2]) == [True, True, False]  # a missing step counts invalid
    assert task.step_validity(problem, problem.steps[:2], local=True) == [True, True]  # the local check has no plan


def test_local_check_knows_facts_and_chains_but_not_the_plan(task):
    problem = task.make_problem("ABCD", ("rot",))
    assert task.step_validity(problem, ("rev ABCD>DCBA",), local=True) == [True]
    assert task.step_validity(problem, ("rev ABCD>DCBA",)) == [False]
    assert task.step_validity(problem, ("rev ABCD>DCBA", "inc DCBA>EDCB", "shf EDCB>DCBE"), local=True) == [True] * 3
    assert task.step_validity(problem, ("rev ABCE>ECBA",), local=True) == [False]  # not the prompt's element
    assert task.step_validity(problem, ("nop ABCD>ABCD", "rev ABCD", "rot>"), local=True) == [False] * 3


def test_verifier_needs_no_gold_answer(task, splits):
    for problem in splits["id"][:20]:
        assert task.step_validity(problem.unlabeled(), problem.steps) == task.step_validity(problem, problem.steps)


@settings(derandomize=True)
@given(st.text(max_size=200))
def test_parser_survives_garbage(text):
    parsed = Alchemy(AlchemyConfig(n_train=1)).parse(text)
    assert isinstance(parsed.steps, tuple)
    assert parsed.answer is None or isinstance(parsed.answer, str)


@settings(derandomize=True)
@given(st.text(alphabet="rotshfevinc ABCDEFGHIJ>;#:_\n", max_size=120))
def test_verifier_survives_garbage(text):
    task = Alchemy(AlchemyConfig(n_train=1))
    problem = task.make_problem("ABCD", ("rot", "rev"))
    steps = task.parse(text).steps
    assert task.step_validity(problem, steps, local=True) == [
        task.step_valid(problem, i, s, steps[i - 1] if i else None, local=True) for i, s in enumerate(steps)
    ]
    full = task.step_validity(problem, steps)
    assert len(full) == max(2, len(steps)) and sum(full) <= 2


def test_parser_reads_answer_only_and_missing_answer(task):
    assert task.parse("#ABCD").answer == "ABCD" and task.parse("#ABCD").steps == ()
    assert task.parse("rot ABCD>FGHI").answer is None
    assert task.parse("").steps == () and task.parse("").answer is None
    assert task.parse("###").answer is None and task.parse("#AB#").answer is None  # "##" is not an element
    assert task.parse("#ABCZ").answer is None  # Z is outside the 10-letter alphabet


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


ELEMENTS = st.text(alphabet="ABCDEFGHIJ", min_size=1, max_size=6)
COMPOSITIONS = st.lists(st.sampled_from(OPS), min_size=1, max_size=4).map(tuple)


@settings(derandomize=True, max_examples=200)
@given(start=ELEMENTS, ops=COMPOSITIONS, seed=st.integers(0, 10_000))
def test_illogical_states_true_facts_in_a_broken_chain(task, start, ops, seed):
    problem = task.make_problem(start, ops)
    steps = task.illogical_steps(problem, random.Random(seed))
    assert len(steps) == len(ops) and [parse_step(s)[0] for s in steps] == list(ops)
    assert all(true_fact(s, task.cfg.alphabet_size) for s in steps)  # every step a true fact
    assert not any(task.step_validity(problem, steps, local=True))  # no step follows from the one before
    assert not any(task.step_validity(problem, steps))
    assert problem.answer not in {e for s in steps for e in parse_step(s)[1:]}  # never hands the answer over


@settings(derandomize=True, max_examples=200)
@given(start=ELEMENTS, ops=COMPOSITIONS, seed=st.integers(0, 10_000))
def test_corrupted_keeps_the_gold_structure_with_false_outputs(task, start, ops, seed):
    problem = task.make_problem(start, ops)
    steps = task.corrupted_steps(problem, random.Random(seed))
    assert len(steps) == len(ops) and [parse_step(s)[0] for s in steps] == list(ops)
    assert parse_step(steps[0])[1] == start
    assert all(parse_step(s)[1] == parse_step(p)[2] for p, s in zip(steps, steps[1:]))  # inputs chain
    assert not any(true_fact(s, task.cfg.alphabet_size) for s in steps)  # every stated output false
    assert problem.answer not in {parse_step(s)[2] for s in steps}  # never hands the answer over


def test_regime_rows_keep_the_gold_answer(task, splits):
    for name in ("illogical", "corrupted"):
        rows = REGIMES.get(name)(splits["train"], task, RegimeConfig(name=name), 0)
        assert [task.parse(r["completion"]).answer for r in rows] == [p.answer for p in splits["train"]]
        assert [r["prompt"] for r in rows] == [p.prompt for p in splits["train"]]


@pytest.mark.parametrize("name", ["illogical", "corrupted"])
def test_corrupted_catalysts_hold_the_gold_answer_no_more_than_chance(task, splits, name):
    pool = splits["train"]
    rows = REGIMES.get(name)(pool, task, RegimeConfig(name=name), 0)
    assert answer_leak(task, pool, rows) == {"ends_in_answer": 0.0, "holds_answer": 0.0}
    gold = REGIMES.get("correct")(pool, task, RegimeConfig(name="correct"), 0)
    shown = sum(p.answer in p.prompt for p in pool) / len(pool)  # identity compositions: the prompt shows it
    assert answer_leak(task, pool, gold) == {"ends_in_answer": 1.0, "holds_answer": 1.0 - shown}  # it can see one


def test_illogical_and_corrupted_by_hand(task):
    problem = task.make_problem("ABCD", ("rot", "rev"))  # gold: rot ABCD>FGHI; rev FGHI>IHGF
    steps = task.illogical_steps(problem, random.Random(0))
    # inputs drawn from the problem's own elements, never the one the chain requires
    assert parse_step(steps[0])[1] in ("FGHI", "IHGF") and parse_step(steps[1])[1] != parse_step(steps[0])[2]
    assert task.corrupted_steps(problem, random.Random(0))[0].startswith("rot ABCD>")


@pytest.mark.parametrize("builder", ["illogical_steps", "corrupted_steps"])
def test_corruptions_are_seeded(task, builder):
    build, problem = getattr(task, builder), task.make_problem("ABCD", ("rot", "rev", "inc"))
    assert build(problem, random.Random(1)) == build(problem, random.Random(1))
    assert len({build(problem, random.Random(seed)) for seed in range(20)}) > 1


def test_unknown_op_is_a_user_error():
    from catalyst_ttt.errors import UserError

    with pytest.raises(UserError, match="valid: " + ", ".join(OPS)):
        Alchemy(AlchemyConfig(ops=["rot", "nope"]))


def test_format_step():
    assert format_step("inc", "ABCD", "BCDE") == "inc ABCD>BCDE"
