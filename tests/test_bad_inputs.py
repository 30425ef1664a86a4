"""The catalogue of bad inputs: each is refused before compute with exit code 2 and one line on
stderr that names the problem, no traceback, and nothing written under the working directory.

Most cases call the CLI in-process (typer's CliRunner runs the same `user_errors` path as the
installed `cttt`); a few run the real executable to check the process-level contract.
"""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from catalyst_ttt import sweep as sweeps
from catalyst_ttt.cli import app
from catalyst_ttt.tasks.gsm8k import UnsafeExpression, safe_eval
from helpers.cells import cttt
from helpers.gsm8k_data import gsm8k_rows

# (arguments, what the one line says)
OVERRIDES = [
    (["run", "task=nope"], "unknown task 'nope'; valid: alchemy, arith, gsm8k"),
    (["run", "regime=nope"], "unknown regime 'nope'"),
    (["run", "signal=nope"], "unknown signal 'nope'"),
    (["run", "model=nope"], "unknown model 'nope'; valid: hf, tiny"),
    (["run", "regime="], "unknown regime"),
    (["run", "ttt.stepz=3"], "unknown key 'ttt.stepz'; valid keys of ttt: steps"),
    (["run", "+ttt.foo=1"], "unknown key 'ttt.foo'; valid keys of ttt: steps"),
    (["run", "++base.bar=2"], "unknown key 'base.bar'"),
    (["run", "+colour=red"], "unknown key 'colour'; valid keys: task, regime"),
    (["run", "+task.colour=red"], "task alchemy: Key 'colour' not in 'AlchemyConfig'"),
    (["run", "~seed"], "'~seed': deleting a key is not valid here"),
    (["run", "~task"], "'~task': deleting a key is not valid here"),
    (["run", "ttt.steps=abc"], "could not be converted to Integer"),
    (["run", "seed="], "seed"),
    (["run", "ttt.lr=[1,2]"], "ttt.lr"),
    (["run", "ttt.lr=0"], "ttt.lr=0.0 is not valid; it must be finite and > 0"),
    (["run", "ttt.lr=nan"], "ttt.lr=nan is not valid"),
    (["run", "base.lr=inf"], "base.lr=inf is not valid"),
    (["run", "catalyst.lr=-1"], "catalyst.lr=-1.0 is not valid"),
    (["run", "ttt.temperature=0"], "ttt.temperature=0.0 is not valid"),
    (["run", "eval.temperature=-1"], "eval.temperature=-1.0 is not valid"),
    (["run", "ttt.beta=-0.1"], "ttt.beta=-0.1 is not valid; it must be finite and >= 0"),
    (["run", "ttt.anchor=ema"], "ttt.anchor='ema' is not valid; valid: none, kl, replay, kl+replay"),
    (["run", "ttt.beta=0.1"], "ttt.beta=0.1 needs an anchor with kl"),
    (["run", "ttt.steps=-1"], "ttt.steps=-1 is not valid; it must be >= 0"),
    (["run", "threads=-1"], "threads=-1 is not valid"),
    (["run", "seed=-1"], "seed=-1 is not valid; it must be >= 0 and <= 4294967295"),
    (["run", "seed=4294967296"], "seed=4294967296 is not valid"),
    (["run", "base.seed=99999999999"], "base.seed=99999999999 is not valid"),
    (["run", "task.seed=-5"], "task.seed=-5 is not valid"),
    (["run", "eval.k=0"], "eval.k=0 is not valid; it must be >= 1"),
    (["run", "eval.max_per_split=0"], "eval.max_per_split=0 is not valid"),
    (["run", "eval.sampled_splits=[id,train]"], "eval.sampled_splits has 'train', not an eval split; valid: id"),
    (["run", "eval.sampled_splits=[heldout]"], "eval.sampled_splits must include id (stability reads its samples)"),
    (["run", "catalyst.n=0"], "catalyst.n=0 is not valid"),
    (["run", "catalyst.n=2001"], "catalyst.n=2001 is more than the 2000 problems of the catalyst pool"),
    (
        ["run", "model=hf", "model.name_or_path=some/hub-model", "catalyst.from_scratch=true"],
        "catalyst.from_scratch=true is not valid with model.kind='hf'",
    ),
    (["run", "metrics.probes.atomic_items=0"], "metrics.probes.atomic_items=0 is not valid; it must be >= 1"),
    (["run", "ttt.prompts_per_step=0"], "ttt.prompts_per_step=0 is not valid"),
    (["run", "ttt.num_generations=1"], "GRPO groups need >= 2"),
    (["run", "metrics.stability.margin=1.5"], "margin=1.5 is not valid; it must be finite and >= 0 and <= 1"),
    (["run", "task.heldout_composition_frac=-0.1"], "task.heldout_composition_frac=-0.1 is not valid"),
    (["run", "task.max_ops=0"], "task.max_ops=0 is not valid"),
    (["run", "task.max_ops=1"], "task.answer_only_frac=0.5 leaves no composition for the task splits"),
    (["run", "task.answer_only_frac=1"], "task.answer_only_frac=1.0 leaves no composition for the task splits"),
    (["run", "task.n_id=100000000"], "split 'id' asks for 100000000 distinct problems"),
    (["run", "task=arith", "task.digits=1"], "asks for 2000 distinct problems but the task's settings leave only 81"),
    (["run", "task.n_id=0"], "split 'id' is empty (split sizes: train=2000, reader=512, id=0"),
    (["run", "task.n_shift=0"], "split 'shift_compose' is empty"),
    (["run", "ttt.prompts_per_step=500"], "ttt.prompts_per_step=500 is more than the 128 id prompts of task alchemy"),
    (
        ["run", "model.hidden_size=130"],
        "model.hidden_size=130 is not valid; it must be a multiple of model.num_heads=4",
    ),
    (["run", "sweep=../escape"], "sweep='../escape' is not valid"),
    (["run", "sweep=a/b"], "sweep='a/b' is not valid"),
    (["run", "wandb.mode=sometimes"], "wandb.mode='sometimes' is not valid; valid: offline, online, disabled"),
    (
        ["run", "signal=verifree", "signal.reference=nope"],
        "signal.reference='nope' is not valid; valid: majority, gold",
    ),
    (["run", "model=hf", "model.name_or_path=./missing"], "no model there"),
    (["run", "model=hf"], "model.name_or_path is missing"),
    (["run", "metrics.ig.scorer=/nonexistent/scorer"], "metrics.ig.scorer='/nonexistent/scorer': no model there"),
    (["run", "lock_timeout=-1"], "lock_timeout=-1.0 is not valid"),
    (["run", "--cfg", "hydra"], "--cfg hydra is not valid; valid: job"),
    (
        ["sweep", "nope"],
        "unknown sweep 'nope'; valid: anchor, bench, default, full, ignition, signals, smoke, stechly, testbed",
    ),
    (["sweep", "../smoke"], "sweep='../smoke' is not valid"),
    (["sweep", "smoke", "regime=none,nope"], "unknown regime 'nope'"),
    (["sweep", "smoke", "--jobs", "0"], "--jobs 0 is not valid"),
    (["sweep", "smoke", "--jobs", "2", "hydra/launcher=ray"], "--jobs 2 picks the joblib launcher"),
    (["sweep", "smoke", "--dry-run", "hydra/launcher=nope"], "unknown hydra/launcher 'nope'; valid: basic, joblib"),
    (["sweep", "smoke", "--dry-run", "hydra.job.chdir=maybe"], "hydra.job.chdir"),
    (["sweep", "smoke", "--dry-run", "seed=range(0"], "the command line: no viable alternative"),
    (
        ["sweep", "smoke", "--dry-run", "signal=glob(zz*)"],
        "'signal=glob(zz*)' matches no signal; valid: cross_view, entropy",
    ),
    (["sweep", "smoke", "--dry-run", "task.path=glob(*)"], "glob() picks config options"),
    (["sweep", "smoke", "--dry-run", "seed=interval(0,1)"], "interval() needs a sweeper that samples"),
    (["sweep", "smoke", "--dry-run", "seed=range(0,3)", "ttt.lr=-1"], "ttt.lr=-1.0 is not valid"),
    (["report", "../outside"], "sweep='../outside' is not valid"),
    (["report", "never_ran"], "no results for sweep 'never_ran'"),
    (["status", "../outside"], "sweep='../outside' is not valid"),
    # near misses are named, and a mistyped flag never reaches Hydra's override parser
    (["run", "regime=corect"], "unknown regime 'corect'; did you mean 'correct'? valid: answer_only, correct"),
    (["run", "signal=majorty"], "unknown signal 'majorty'; did you mean 'majority'? valid:"),
    (["run", "task=alchemi"], "unknown task 'alchemi'; did you mean 'alchemy'? valid: alchemy, arith, gsm8k"),
    (["sweep", "defualt"], "unknown sweep 'defualt'; did you mean 'default'? valid: anchor"),
    (["sweep", "smoke", "--dryrun"], "no such option '--dryrun'; did you mean '--dry-run'? options: --dry-run"),
    (["run", "--cgf", "job"], "no such option '--cgf'; did you mean '--cfg'?"),
    (["report", "defualt"], "no results for sweep 'defualt' in runs; did you mean 'default'?"),
    (["status", "defualt"], "no results for sweep 'defualt' in runs; did you mean 'default'?"),
]


def _assert_refused(done, says: str, cwd: Path, inputs: set[str] = frozenset()) -> None:
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert {p.name for p in cwd.iterdir()} == set(inputs)  # no runs/, no cache/, no outputs/


def _invoke(args: list[str], cwd: Path, monkeypatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, args, terminal_width=400)


@pytest.mark.parametrize("args, says", OVERRIDES, ids=[" ".join(a) for a, _ in OVERRIDES])
def test_bad_override_or_argument(tmp_path, monkeypatch, args, says):
    _assert_refused(_invoke(args, tmp_path, monkeypatch), says, tmp_path)


GOOD_ROW = json.dumps(gsm8k_rows(2)[1])  # a short problem: it lands in the id split
# (file content as bytes, or None for no file; what the one line says)
DATA_FILES = [
    (None, "no such file"),
    (b"", "holds no problems"),
    (b"\n  \n", "holds no problems"),
    (GOOD_ROW.encode() + b'\n{"question": "caf\xe9", "answer": "#### 1"}\n', "data.jsonl:2: not UTF-8 text"),
    (b'{"question": ' + b"[" * 100000 + b"]" * 100000 + b"}\n", "data.jsonl:1: JSON nested too deeply"),
    (b'{"question": "q", "answer": ' + b"1" * 5000 + b"}\n", "data.jsonl:1: invalid JSON (Exceeds the limit"),
    (b"[1, 2]\n", "data.jsonl:1: a row must be an object"),
    (b'"just a string"\n', "data.jsonl:1: a row must be an object"),
    (b'{"question": "q"}\n', "data.jsonl:1: row has no 'answer' string"),
    (b'{"question": "   ", "answer": "#### 2"}\n', "data.jsonl:1: row has no 'question' string"),
    (b'{"question": "q", "answer": 3}\n', "data.jsonl:1: row has no 'answer' string"),
    (b'{"question": "q", "answer": "1+1 = <<1+1=2>>2"}\n', "data.jsonl:1: answer has no final '#### N' line"),
    (b'{"question": "q", "answer": "#### two"}\n', "data.jsonl:1: final answer 'two' is not a number"),
    (b'{"question": "q", "answer": "#### inf"}\n', "data.jsonl:1: final answer 'inf' is not a number"),
    (GOOD_ROW.encode() + b"\n{not json\n", "data.jsonl:2: invalid JSON"),
    (GOOD_ROW.encode() + b"\n", "is empty (split sizes: train=0, reader=0, id=1, heldout=0, shift_steps=0)"),
]


@pytest.mark.parametrize("content, says", DATA_FILES, ids=[s for _, s in DATA_FILES])
def test_bad_gsm8k_data_file(tmp_path, monkeypatch, content, says):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_bytes(content)
    done = _invoke(["run", "task=gsm8k", f"task.path={path}", "task.n_id=1"], tmp_path, monkeypatch)
    _assert_refused(done, says, tmp_path, {"data.jsonl"} if content is not None else set())


def test_a_directory_or_broken_parquet_is_not_a_data_file(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").mkdir()
    done = _invoke(["run", "task=gsm8k", f"task.path={tmp_path / 'data.jsonl'}"], tmp_path, monkeypatch)
    _assert_refused(done, "no such file", tmp_path, {"data.jsonl"})
    (tmp_path / "data.parquet").write_bytes(b"PAR1 not really")
    done = _invoke(["run", "task=gsm8k", f"task.path={tmp_path / 'data.parquet'}"], tmp_path, monkeypatch)
    _assert_refused(done, "not a readable Parquet file", tmp_path, {"data.jsonl", "data.parquet"})


SWEEP_FILES = [
    ("axes: [regime\n", "invalid YAML"),
    ("axes: {}\ncolour: red\n", "top-level keys must be among"),
    ("axes: [none, correct]\n", "'axes' must map keys to values"),
    ("axes:\n  regime: [none, nope]\n", "unknown regime 'nope'"),
    ("axes:\n  seed: range(0,\n", "no viable alternative"),
    ("overrides:\n  ttt.lr: 0\n", "ttt.lr=0.0 is not valid"),
    ("overrides:\n  ttt.stepz: 3\n", "unknown key 'ttt.stepz'"),
]


@pytest.mark.parametrize("text, says", SWEEP_FILES, ids=[s for _, s in SWEEP_FILES])
def test_bad_sweep_file(tmp_path, monkeypatch, text, says):
    sweeps_dir = tmp_path / "sweeps"
    sweeps_dir.mkdir()
    (sweeps_dir / "mine.yaml").write_text(text)
    monkeypatch.setattr(sweeps, "SWEEPS_DIR", sweeps_dir)
    _assert_refused(_invoke(["sweep", "mine", "--dry-run"], tmp_path, monkeypatch), says, tmp_path, {"sweeps"})


@pytest.mark.parametrize(
    "command, says",
    [
        ([sys.executable, "-m", "catalyst_ttt", "run", "ttt.lr=nan"], "error: ttt.lr=nan is not valid"),
        (["sweep", "../smoke", "--dry-run"], "error: sweep='../smoke' is not valid"),
    ],
)
def test_bad_input_from_a_real_process(tmp_path, command, says):
    """The installed entry points, as a user's shell runs them: exit 2, one line, nothing written."""
    if command[0] == sys.executable:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    else:
        done = cttt(*command, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().startswith(says) and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


# Model output reaches the gsm8k calculator: whatever it writes, the evaluator answers quickly
# with a finite number or refuses with UnsafeExpression.
NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(str),
    st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False).map(repr),
)
EXPRESSIONS = st.recursive(
    NUMBERS,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), inner).map(" ".join),
        inner.map(lambda e: f"-({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=40,
)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.one_of(EXPRESSIONS, st.text(max_size=300)))
def test_the_calculator_never_crashes_hangs_or_returns_a_non_number(expression):
    started = time.perf_counter()
    try:
        value = safe_eval(expression)
    except UnsafeExpression:
        value = None
    assert time.perf_counter() - started < 1.0  # a generous sanity bound: big-integer blowups take minutes
    assert value is None or (isinstance(value, float) and math.isfinite(value))


@pytest.mark.parametrize(
    "expression",
    ["9**9**9", "(9**64)**64", "(-8)**0.5", "1" + "+1" * 300, "(" * 150 + "1" + ")" * 150, "-" * 150 + "1", "1e308*10"],
)
def test_the_calculator_refuses_blowups_complex_results_and_deep_nesting(expression):
    with pytest.raises(UnsafeExpression):
        safe_eval(expression)
