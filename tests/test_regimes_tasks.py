"""Catalyst regimes on every task, the arith and gsm8k tasks, and bad data files."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.regimes import REGIMES, catalyst_sample
from catalyst_ttt.schema import RegimeConfig
from catalyst_ttt.tasks.alchemy import Alchemy, AlchemyConfig
from catalyst_ttt.tasks.alchemy import true_fact as alchemy_true_fact
from catalyst_ttt.tasks.arith import Arith, ArithConfig, column_steps
from catalyst_ttt.tasks.arith import parse_step as arith_parse_step
from catalyst_ttt.tasks.arith import true_fact as arith_true_fact
from catalyst_ttt.tasks.gsm8k import ANNOTATION, GSM8K, GSM8KConfig, UnsafeExpression, annotation_valid, safe_eval
from helpers.cells import run
from helpers.gsm8k_data import gsm8k_rows, write_jsonl

REAL_GSM8K = {  # two solutions as GSM8K writes them
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
REAL_GSM8K_2 = {
    "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("gsm") / "gsm.jsonl", gsm8k_rows(120) + [REAL_GSM8K, REAL_GSM8K_2])
    return {
        "alchemy": Alchemy(AlchemyConfig(n_train=300, n_id=20, n_heldout=20, n_shift=10)),
        "arith": Arith(ArithConfig(n_train=300, n_id=20, n_heldout=20, n_shift=10)),
        "gsm8k": GSM8K(GSM8KConfig(path=str(path), n_id=10, n_heldout=10, n_train=200)),
    }


TASK_NAMES = ["alchemy", "arith", "gsm8k"]


def _pool(tasks, name):
    splits = tasks[name].splits()
    return tasks[name], splits["train"] + splits["shift_steps" if name == "gsm8k" else "heldout"]


@pytest.mark.parametrize("name", TASK_NAMES)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 120), match=st.booleans())
def test_swapped_never_keeps_its_own_trace_and_keeps_every_answer(tasks, name, seed, n, match):
    task, pool = _pool(tasks, name)
    sample = random.Random(seed).sample(pool, min(n, len(pool)))
    rows = REGIMES.get("swapped")(sample, task, RegimeConfig("swapped", match_steps=match), seed)
    assert len(rows) == len(sample)
    for problem, row in zip(sample, rows):
        parsed = task.parse(row["completion"])
        assert parsed.steps != problem.steps
        assert parsed.answer == problem.answer and row["prompt"] == problem.prompt


@pytest.mark.parametrize("name", TASK_NAMES)
def test_swapped_matches_step_counts_by_default(tasks, name):
    task, pool = _pool(tasks, name)
    counts = {}
    for p in pool:
        counts[p.num_steps] = counts.get(p.num_steps, 0) + 1
    pool = [p for p in pool if counts[p.num_steps] > 1]
    rows = REGIMES.get("swapped")(pool, task, RegimeConfig("swapped"), 0)
    assert all(len(task.parse(r["completion"]).steps) == p.num_steps for p, r in zip(pool, rows))


@pytest.mark.parametrize("name", TASK_NAMES)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000))
def test_corrupted_keeps_structure_and_falsifies_every_step(tasks, name, seed):
    task, pool = _pool(tasks, name)
    rows = REGIMES.get("corrupted")(pool, task, RegimeConfig("corrupted"), seed)
    for problem, row in zip(pool, rows):
        parsed = task.parse(row["completion"])
        assert len(parsed.steps) == problem.num_steps and parsed.answer == problem.answer
        for gold, step in zip(problem.steps, parsed.steps):
            assert _shape(gold) == _shape(step)  # same format: only the values differ
            assert _plan(name, step) == _plan(name, gold)  # same ops (alchemy), same digits (arith)
            if name != "gsm8k" or "<<" in gold:
                assert not _true_fact(task, step), (gold, step)


@pytest.mark.parametrize("name", TASK_NAMES)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000))
def test_illogical_states_true_facts_in_a_broken_chain(tasks, name, seed):
    task, pool = _pool(tasks, name)
    rows = REGIMES.get("illogical")(pool, task, RegimeConfig("illogical"), seed)
    for problem, row in zip(pool, rows):
        parsed = task.parse(row["completion"])
        assert len(parsed.steps) == problem.num_steps and parsed.answer == problem.answer
        assert all(_true_fact(task, step) for step in parsed.steps)
        if name == "gsm8k":  # the gold lines, none in its place (a one-line solution has no order to break)
            assert sorted(parsed.steps) == sorted(problem.steps)
            assert len(set(problem.steps)) < 2 or all(s != g for s, g in zip(parsed.steps, problem.steps))
        else:
            assert not any(task.step_validity(problem, parsed.steps, local=True))  # no step follows the one before
            assert [_plan(name, s) for s in parsed.steps] == [_plan(name, g) for g in problem.steps]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(a=st.integers(0, 99_999), b=st.integers(0, 99_999), seed=st.integers(0, 10_000))
def test_arith_illogical_and_corrupted_on_any_sum(tasks, a, b, seed):
    task = tasks["arith"]
    problem = task.make_problem(a, b)
    illogical = task.illogical_steps(problem, random.Random(seed))
    assert all(arith_true_fact(s) for s in illogical) and not any(task.step_validity(problem, illogical, local=True))
    corrupted = task.corrupted_steps(problem, random.Random(seed))
    assert [_plan("arith", s) for s in corrupted] == [_plan("arith", g) for g in problem.steps]
    assert not any(arith_true_fact(s) for s in corrupted)
    stated = [arith_parse_step(s) for s in corrupted]  # the gold structure: each carry the previous sum's tens
    assert [carry for _, _, carry, _ in stated] == [0] + [total // 10 for *_, total in stated[:-1]]


def _true_fact(task, step: str) -> bool:
    """The step's own statement is true (whether or not it follows from the steps before it)."""
    if task.name == "alchemy":
        return alchemy_true_fact(step, task.cfg.alphabet_size)
    if task.name == "arith":
        return arith_true_fact(step)
    return all(annotation_valid(expr, value) for expr, value in ANNOTATION.findall(step))


def _plan(name: str, step: str):
    """What the plan fixes: the op (alchemy), the two digits (arith); gsm8k states no plan."""
    if name == "alchemy":
        return step.split(" ")[0]
    if name == "arith":
        return step.split("+")[:2]
    return None


def _shape(step: str) -> str:
    """The step with every number and every element replaced by a placeholder."""
    return re.sub(r"[A-Z]+", "A", re.sub(r"\d+(\.\d+)?", "9", step))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_correct_traces_are_valid_and_answer_only_has_no_trace(tasks, name):
    task, pool = _pool(tasks, name)
    for row, problem in zip(REGIMES.get("correct")(pool, task, RegimeConfig("correct"), 0), pool):
        parsed = task.parse(row["completion"])
        assert parsed.answer == problem.answer and all(task.step_validity(problem, parsed.steps))
    for row in REGIMES.get("answer_only")(pool, task, RegimeConfig("answer_only"), 0):
        assert task.parse(row["completion"]).steps == ()
    assert REGIMES.get("none")(pool, task, RegimeConfig("none"), 0) == []


def test_catalyst_sample_is_seeded_and_sized(tasks):
    _, pool = _pool(tasks, "alchemy")
    a = catalyst_sample(pool, 50, seed=3)
    assert len(a) == 50 and a == catalyst_sample(pool, 50, seed=3)
    assert a != catalyst_sample(pool, 50, seed=4)


def test_arith_steps_by_hand():
    assert column_steps(347, 485) == ("7+5+0=12", "4+8+1=13", "3+4+1=8")
    task = Arith(ArithConfig(n_train=1))
    problem = task.make_problem(347, 485)
    assert task.render(problem.steps, problem.answer) == "7+5+0=12;4+8+1=13;3+4+1=8#832"
    assert task.step_validity(problem, problem.steps) == [True, True, True]
    # a dropped carry is invalid; the next step is judged against the step before it
    assert task.step_validity(problem, ("7+5+0=12", "4+8+0=12", "3+4+1=8")) == [True, False, True]
    assert task.step_validity(problem, ("7+5+0=12",)) == [True, False, False]
    # the local check: each column's sum is right and its carry follows the previous sum, whatever the digits
    assert task.step_validity(problem, ("1+1+0=2", "9+9+0=18", "0+0+1=1"), local=True) == [True, True, True]
    assert task.step_validity(problem, ("1+1+0=2", "9+9+0=18", "0+0+1=1")) == [False, False, False]
    assert task.step_validity(problem, ("7+5+0=12", "4+8+0=12", "3+4+1=8"), local=True) == [True, False, True]
    assert task.step_validity(problem, ("7+5+0=13",), local=True) == [False]
    assert task.step_validity(problem, ("7+5+0=12",), local=True) == [True]  # no plan: no missing steps
    assert task.illogical_steps(problem, random.Random(0)) == ("7+5+1=13", "4+8+0=12", "3+4+0=7")
    assert [task.parse(t).answer for t in ("#832", "#-3", "#8a2", "###", "#8#")] == ["832", "-3", None, None, None]
    assert {len(str(p.spec["a"])) for p in task.splits()["shift_length"]} == {5}


def test_gsm8k_verifier_accepts_real_solutions_and_rejects_a_wrong_annotation(tasks):
    task = tasks["gsm8k"]
    for row in (REAL_GSM8K, REAL_GSM8K_2):
        problem = next(p for p in task.problems if p.prompt.startswith(row["question"][:20]))
        assert all(task.step_validity(problem, problem.steps))
        assert task.answers_equal(task.parse(task.render(problem.steps, problem.answer)).answer, problem.answer)
    assert not task.step_valid(problem, 0, "Weng earns 12/60 = $<<12/60=0.3>>0.3 per minute.", None)
    assert task.answers_equal("10.0", "10") and not task.answers_equal("11", "10")
    for steps in (("x = <<2*3=6>>6",), ("x = <<2*3=7>>7",)):  # the calculator check is local whatever is asked
        assert task.step_validity(problem, steps, local=True) == task.step_validity(problem, steps)
    assert not task.has_full_verifier and tasks["alchemy"].has_full_verifier and tasks["arith"].has_full_verifier


def test_gsm8k_illogical_rotates_the_lines_and_corrupted_falsifies_the_annotations(tasks):
    task = tasks["gsm8k"]
    problem = next(p for p in task.problems if p.prompt.startswith(REAL_GSM8K["question"][:20]))
    first, second = problem.steps
    assert task.illogical_steps(problem, random.Random(0)) == (second, first)  # 72 stated before the 24 it adds
    corrupted = task.corrupted_steps(problem, random.Random(0))
    assert [ANNOTATION.findall(s)[0][0] for s in corrupted] == ["48/2", "48+24"]
    assert not any(task.step_validity(problem, corrupted))


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch PWNED')",
        "open('PWNED','w')",
        "(lambda: 1)()",
        "x",
        "1 if 1 else 2",
        "[1][0]",
        "().__class__",
        "2**10**10",
        "1/0",
    ],
)
def test_gsm8k_verifier_never_executes_code(tasks, tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    task = tasks["gsm8k"]
    step = f"So <<{payload}=0>>0 it is."
    assert task.step_valid(task.problems[0], 0, step, None) is False
    with pytest.raises(UnsafeExpression):
        safe_eval(payload)
    assert not (tmp_path / "PWNED").exists()


def test_safe_eval_does_arithmetic():
    assert safe_eval("48/2") == 24 and safe_eval("2*(3+4)-1") == 13 and safe_eval("1,000+5") == 1005


@pytest.mark.parametrize(
    "lines, says",
    [
        (None, "no such file"),
        (['{"question": "q"}'], ":1: row has no 'answer' string"),
        (
            ['{"question": "q", "answer": "a"}', '{"question": "q", "answer": "x\\nno final"}'],
            ":1: answer has no final",
        ),
        (['{"question": "q", "answer": "1+1 = <<1+1=2>>2\\n#### 2"}', "{not json"], ":2: invalid JSON"),
    ],
)
def test_bad_gsm8k_data_is_one_line_exit_2(tmp_path, monkeypatch, lines, says):
    path = tmp_path / "data.jsonl"
    if lines is not None:
        path.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["run", "task=gsm8k", f"task.path={path}"], terminal_width=400)
    assert done.exit_code == 2
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr
    assert str(path) in done.stderr or lines is None
    assert sorted(p.name for p in tmp_path.iterdir()) == (["data.jsonl"] if lines else [])


def test_gsm8k_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "gsm.parquet"
    pq.write_table(pa.Table.from_pylist(gsm8k_rows(30)), path)
    task = GSM8K(GSM8KConfig(path=str(path), n_id=5, n_heldout=5))
    assert len(task.problems) == 30 and len(task.splits()["id"]) == 5


@pytest.mark.slow
@pytest.mark.parametrize("task_name", TASK_NAMES)
@pytest.mark.parametrize("regime", ["none", "answer_only", "correct", "swapped", "illogical", "corrupted"])
def test_a_cell_runs_for_every_regime_and_task(tiny, tmp_path_factory, task_name, regime):
    extra = []
    if task_name == "gsm8k":
        path = tmp_path_factory.getbasetemp() / "gsm_cells.jsonl"
        if not path.exists():
            write_jsonl(path, gsm8k_rows(90))
        extra = [
            f"task.path={path}",
            "task.n_id=8",
            "task.n_heldout=8",
            "task.n_train=32",
            "task.n_reader=12",
            "task.max_completion_chars=100",
            "model.max_positions=320",
        ]
    elif task_name == "arith":
        extra = [
            "task.n_id=12",
            "task.n_heldout=12",
            "task.n_shift=8",
            "task.n_train=64",
            "task.n_reader=32",
            "task.n_base_facts=200",
            "task.n_base_chain=200",
            "task.n_base_answer_only=100",
        ]
    # sweeps/smoke.yaml's task.* keys are alchemy's; the other tasks bring their own
    smoke = tiny(f"task={task_name}", f"regime={regime}", "signal=none")
    result = run([o for o in smoke if task_name == "alchemy" or not o.startswith("task.")] + extra)
    assert result["status"] == "done", result.get("error")
    assert result["phases"]["catalyst"] in (("skipped",) if regime == "none" else ("trained", "cached"))
    assert set(result["metrics"]) >= {"id", "heldout"}
    assert {"format/start", "trace/gold/gold_answer", "trace/donor/gold_answer"} <= set(result["probes"])
    assert ("trace/donor/follows_trace" in result["probes"]) == (task_name != "gsm8k")  # gsm8k: no trace answer


def test_gsm8k_end_to_end_with_a_local_hf_model(tiny, tmp_path, local_hf_model):
    path = write_jsonl(tmp_path / "gsm.jsonl", gsm8k_rows(40) + [REAL_GSM8K, REAL_GSM8K_2])
    smoke = [
        o
        for o in tiny(
            "task=gsm8k", "model=hf", f"model.name_or_path={local_hf_model}", "regime=correct", "signal=process"
        )
        if not o.startswith("task.")
    ]
    result = run(
        smoke
        + [
            f"task.path={path}",
            "task.n_id=6",
            "task.n_heldout=6",
            "task.n_train=10",
            "catalyst.n=10",
            "task.max_completion_chars=60",
        ]
    )
    assert result["status"] == "done", result.get("error")
    assert result["phases"] == {"base": "pretrained", "catalyst": "trained", "reader": "trained"}
    assert set(result["metrics"]) == {"id", "heldout", "shift_steps"}
    assert result["cell"].startswith("gsm8k-local_llama-correct-process-")
