"""The catalogue of bad inputs: each is refused before compute with exit code 2 and one line on
stderr that names the problem, no traceback, and nothing written under the working directory.

Most cases call the CLI in-process (typer's CliRunner runs the same `user_errors` path as the
installed `cttt`); a few run the real executable to check the process-level contract.
"""

import json
import logging
import math
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from huggingface_hub import constants as hub_constants
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from typer.testing import CliRunner

from catalyst_ttt import network, pipeline, tracking
from catalyst_ttt import report as report_module
from catalyst_ttt import sweep as sweeps
from catalyst_ttt.cache import FILES, KEY, WEIGHTS, cache_state, cached_checkpoint
from catalyst_ttt.checkpoints import catalyst_key, scratch_key
from catalyst_ttt.cli import app
from catalyst_ttt.config import RANGES, build_task, compose_cell, parse_overrides, quote, task_key
from catalyst_ttt.evaluation import sample_metrics
from catalyst_ttt.report import plots
from catalyst_ttt.report.page import write_report
from catalyst_ttt.results import GRID, RESULT, write_json
from catalyst_ttt.schema import CellConfig
from catalyst_ttt.tasks.gsm8k import GSM8K, GSM8KConfig, UnsafeExpression, safe_eval
from catalyst_ttt.tracking import Tracker
from helpers.cells import CTTT, TASK, cttt, run
from helpers.fakes import fake_result, write_store
from helpers.gsm8k_data import gsm8k_rows, write_jsonl

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
        "unknown sweep 'nope'; valid: anchor, bench, default, full, gpu, ignition, question, signals, smoke, "
        "stechly, testbed, testbed_fast",
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
    # A config group takes one name: Hydra would merge a list's options, the last silently winning.
    (["run", "regime=[none,correct]"], "'regime=[none,correct]': regime takes one name; valid: answer_only, correct"),
    (["run", "task=[alchemy]"], "'task=[alchemy]': task takes one name; valid: alchemy, arith, gsm8k"),
    (["run", "regime=null"], "'regime=null': regime takes one name"),
    # Values that passed `--cfg job` and failed after training: every numeric key has its range.
    (["run", "metrics.ig.reader_lr=nan"], "metrics.ig.reader_lr=nan is not valid; it must be finite and > 0"),
    (["run", "metrics.ig.reader_steps=-1"], "metrics.ig.reader_steps=-1 is not valid; it must be >= 0"),
    (["run", "metrics.ig.reader_batch_size=0"], "metrics.ig.reader_batch_size=0 is not valid; it must be >= 1"),
    (["run", "eval.samples=2"], "eval.samples=2 is not valid; the unbiased pass@k and maj@k need >= eval.k=4"),
    (["run", "eval.samples=0"], "eval.samples=0 is not valid; it must be >= 1"),
    (["run", "model.hidden_size=-4"], "model.hidden_size=-4 is not valid; it must be >= 1"),
    (["run", "model.num_layers=-1"], "model.num_layers=-1 is not valid; it must be >= 1"),
    (["run", "model.num_heads=0"], "model.num_heads=0 is not valid; it must be >= 1"),
    (["run", "model.intermediate_size=0"], "model.intermediate_size=0 is not valid; it must be >= 1"),
    (["run", "model.max_positions=0"], "model.max_positions=0 is not valid; it must be >= 1"),
    (["run", "threads=100000"], "threads=100000 is not valid; it must be >= 0 and <= 1024"),
    # Tracebacks before: interpolations, huge numbers, long names, empty or endless ranges.
    (["run", "seed=${nope}"], "seed: its interpolation cannot be resolved (Interpolation key 'nope' not found)"),
    (["run", "seed=${oc.env:CTTT_NEVER_SET}"], "Environment variable 'CTTT_NEVER_SET' not found"),
    (["run", "seed=${seed}"], "seed: its interpolation cannot be resolved (Recursive interpolation detected)"),
    (["run", "ttt.lr=${oc.env:HOME}"], "ttt.lr: its interpolation cannot be resolved"),
    (["run", "seed=" + "1" * 401], "seed=11111111111111111111... (401 digits) is not valid"),
    (["run", "sweep=" + "a" * 300], "sweep='aaaaaaaaaaaaaaaaaaaa'... is not valid; it has 300 characters, at most 100"),
    (["sweep", "a" * 300, "--dry-run"], "it has 300 characters, at most 100"),
    (["report", "a" * 300], "it has 300 characters, at most 100"),
    (["sweep", "smoke", "--dry-run", "seed=range(0,0)"], "'seed=range(0,0)' gives no values"),
    (["sweep", "smoke", "--dry-run", "seed=range(0,3,0)"], "'seed=range(0,3,0)': range() arg 3 must not be zero"),
    # A grid is bounded: a typo cannot compose 10**5 cells.
    (["sweep", "smoke", "--dry-run", "seed=range(0,100000)"], "more than --max-cells 1000 cells (regime 2 x signal"),
    (["sweep", "smoke", "--dry-run", "--max-cells", "3"], "more than --max-cells 3 cells (regime 2 x signal 2)"),
    (["sweep", "smoke", "--dry-run", "--max-cells", "0"], "--max-cells 0 is not valid; it must be >= 1"),
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


# The smallest cell that still trains a base, evaluates it and writes its result.
MINIMAL = ["base.steps=2", "eval.max_per_split=2", "eval.trajectory=false", "threads=1", "metrics.ig.enabled=false"]
MINIMAL += ["metrics.probes.enabled=false", "wandb.mode=disabled"]


@pytest.mark.parametrize("args, says", OVERRIDES, ids=[" ".join(a)[:80] for a, _ in OVERRIDES])
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
    # `float` reads these, but a model's `1000` or `123` never equals them
    (b'{"question": "q", "answer": "#### 1_000"}\n', "final answer '1_000' is not a number; valid: ASCII digits"),
    ('{"question": "q", "answer": "#### \u0661\u0662"}\n'.encode(), "final answer '\u0661\u0662' is not a number"),
    (b'{"question": "q", "answer": "#### 1e3"}\n', "final answer '1e3' is not a number"),
    (
        GOOD_ROW.encode() + b"\n" + json.dumps(json.loads(GOOD_ROW) | {"answer": "#### 7"}).encode() + b"\n",
        "data.jsonl:2: the question of ",
    ),
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
    ("overrides:\n  seed: ${nope}\n", "seed: its interpolation cannot be resolved"),
    ("overrides:\n  task: {name: alchemy}\n", "a mapping is not a value here"),
    ("axes:\n  regime: [[none, correct]]\n", "'regime=[none,correct]': regime takes one name"),
    ("axes:\n  seed: range(0,0)\n", "'seed=range(0,0)' gives no values"),
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


# -- silent wrong results ---------------------------------------------------------------------


def _gsm8k(path: Path) -> GSM8K:
    return GSM8K(GSM8KConfig(path=str(path), n_id=4, n_heldout=4, n_train=8, n_reader=4, n_shift=4))


def test_a_gsm8k_file_with_every_row_twice_never_shares_a_question_between_splits(tmp_path):
    rows = gsm8k_rows(40)
    once = _gsm8k(write_jsonl(tmp_path / "once.jsonl", rows))
    twice = _gsm8k(write_jsonl(tmp_path / "twice.jsonl", rows * 2))
    prompts = [p.prompt for split in twice.splits().values() for p in split]
    assert len(prompts) == len(set(prompts)) == len([p for split in once.splits().values() for p in split])
    assert len(twice.problems) == len(once.problems)


def _sweep_file(tmp_path: Path, monkeypatch, text: str) -> None:
    sweeps_dir = tmp_path / "sweeps"
    sweeps_dir.mkdir(exist_ok=True)
    (sweeps_dir / "mine.yaml").write_text(text)
    monkeypatch.setattr(sweeps, "SWEEPS_DIR", sweeps_dir)


def test_null_booleans_numbers_and_digit_strings_in_a_sweep_file_keep_their_type(tmp_path, monkeypatch):
    overrides = "  wandb.entity: null\n  eval.trajectory: false\n  ttt.lr: 1.0e-4\n  wandb.project: '1_000'\n"
    _sweep_file(tmp_path, monkeypatch, f"axes:\n  seed: [0, 1]\noverrides:\n{overrides}")
    cells = sweeps.load_sweep("mine", []).cells()
    assert [c.config.seed for c in cells] == [0, 1]
    config = cells[0].config
    assert config.wandb.entity is None and config.eval.trajectory is False
    assert config.ttt.lr == 1e-4 and config.wandb.project == "1_000"


# Values as the YAML of a sweep file or a composed config holds them.
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(YAML_VALUES)
def test_quote_writes_what_hydra_reads_back_exactly(value):
    assert OverridesParser.create().parse_override(f"key={quote(value)}").value() == value


def test_status_finds_the_finished_cells_of_a_store_with_a_backslash_and_non_ascii(tmp_path):
    runs = tmp_path / "a\\b équipe"
    (cell,) = sweeps.load_sweep("smoke", [f"runs_dir={quote(str(runs))}", "regime=none", "signal=none"]).cells()
    assert cell.config.runs_dir == str(runs)
    finished = fake_result("none", "none", 0, 0.1, 0.1) | {"cell": cell.id, "config_hash": cell.config_hash}
    write_json(runs / "smoke" / cell.id / RESULT, finished)
    done = CliRunner().invoke(app, ["status", "smoke", "--runs-dir", str(runs)], terminal_width=300)
    assert done.exit_code == 0, done.output
    assert "4 cells — done=1, pending=3" in done.stdout


def test_the_multirun_passes_store_cache_and_data_file_as_paths_that_read_back(tmp_path, monkeypatch):
    odd = tmp_path / "é x\\y'z"
    odd.mkdir()
    monkeypatch.chdir(odd)
    plan = sweeps.Sweep("mine", "", [{"seed": ["0", "1"]}], ["task=gsm8k", "task.path=data.jsonl", "sweep=mine"])
    place = OmegaConf.create({"runs_dir": str(odd / "runs"), "cache_dir": str(odd / "c"), "task": {"path": "x"}})
    place.task.path = str(odd / "data.jsonl")  # as make_paths_absolute leaves it
    read = {o.key_or_group: o.value() for o in parse_overrides(plan.multirun_argvs(place)[0][2:], "argv")}
    assert read["runs_dir"] == str(odd / "runs") and read["cache_dir"] == str(odd / "c")
    assert read["task.path"] == str(odd / "data.jsonl")  # absolute: a worker with hydra.job.chdir=true finds it


def _report_files(runs: Path, sweep: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((runs / sweep / "report").iterdir())}


def _finished_smoke_store(runs: Path) -> None:
    """Three finished cells of sweep `smoke` and the grid that ran them, reported."""
    results = [fake_result("correct", "majority", seed, 0.6, 0.65) | {"sweep": "smoke"} for seed in (0, 1, 2)]
    write_store(runs, "smoke", results)
    grid = {"sweep": "smoke", "file": "smoke.yaml", "file_sha256": "0" * 64, "fixed": [], "axes": {}}
    write_json(runs / "smoke" / GRID, grid | {"cells": {r["cell"]: r["config_hash"] for r in results}})
    assert CliRunner().invoke(app, ["report", "smoke", "--runs-dir", str(runs), "--no-wandb"]).exit_code == 0


def test_a_failed_launch_leaves_grid_json_and_the_report_as_they_were(tmp_path, monkeypatch, shared_cache):
    runs = tmp_path / "runs"
    _finished_smoke_store(runs)
    grid, report = (runs / "smoke" / GRID).read_bytes(), _report_files(runs, "smoke")
    launch = ["sweep", "smoke", "signal=none", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"]
    done = _invoke([*launch, f"runs_dir={runs}", f"cache_dir={shared_cache}"], tmp_path, monkeypatch)
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    (line,) = done.stderr.strip().splitlines()
    assert "the launch failed (ValueError: n_jobs == 0 in Parallel has no meaning); no cell started" in line
    assert (runs / "smoke" / GRID).read_bytes() == grid and not (runs / "smoke" / ".hydra").exists()
    assert CliRunner().invoke(app, ["report", "smoke", "--runs-dir", str(runs), "--no-wandb"]).exit_code == 0
    assert _report_files(runs, "smoke") == report  # the finished work is still what the report shows
    fresh = _invoke([*launch, "runs_dir=new", f"cache_dir={shared_cache}"], tmp_path, monkeypatch)
    assert fresh.exit_code == 2 and not (tmp_path / "new").exists()  # a store that was not there is not there


# -- a corrupted cache is rebuilt ---------------------------------------------------------------


def _two_file_build(directory: Path) -> None:
    (directory / WEIGHTS).write_bytes(bytes(range(256)) * 4)
    (directory / "config.json").write_text("{}")


DAMAGES = {
    "truncated weights": lambda path: (path / WEIGHTS).write_bytes((path / WEIGHTS).read_bytes()[:64]),
    "a flipped byte": lambda path: (path / WEIGHTS).write_bytes(b"\x01" + (path / WEIGHTS).read_bytes()[1:]),
    "no config.json": lambda path: (path / "config.json").unlink(),
    "no weights": lambda path: (path / WEIGHTS).unlink(),
    "no files.json": lambda path: (path / FILES).unlink(),
    "key.json of another key": lambda path: (path / KEY).write_text('{"steps": 4}'),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=list(DAMAGES))
def test_a_damaged_checkpoint_is_never_called_cached_and_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    path, built = cached_checkpoint(tmp_path, "base", {"steps": 3}, _two_file_build, owner="t", timeout=60)
    assert built and cache_state(tmp_path, "base", {"steps": 3}) == "cached"
    damage(path)
    assert cache_state(tmp_path, "base", {"steps": 3}) == "damaged: to rebuild"
    with caplog.at_level(logging.WARNING):
        assert cached_checkpoint(tmp_path, "base", {"steps": 3}, _two_file_build, owner="t", timeout=60) == (path, True)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"the cached base checkpoint {path} is damaged (" in warning and "rebuilding it" in warning
    assert cache_state(tmp_path, "base", {"steps": 3}) == "cached"


def test_a_failed_build_leaves_no_temporary_directory(tmp_path):
    def failing(directory: Path) -> None:
        (directory / WEIGHTS).write_bytes(b"half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        cached_checkpoint(tmp_path, "base", {"steps": 3}, failing, owner="t", timeout=60)
    assert not [p.name for p in (tmp_path / "base").iterdir() if not p.name.endswith(".lock")]
    assert cache_state(tmp_path, "base", {"steps": 3}) == "to train"


@pytest.mark.slow
def test_a_truncated_cached_base_is_rebuilt_by_the_next_cell_and_dry_run_says_so(tiny, tmp_path, monkeypatch, caplog):
    overrides = tiny("regime=none", "signal=none", *MINIMAL, cache=tmp_path / "cache")
    cfg = compose_cell(overrides)
    base, _ = pipeline.base_checkpoint(cfg, build_task(cfg), owner="test", device="cpu")
    (Path(base) / WEIGHTS).write_bytes((Path(base) / WEIGHTS).read_bytes()[:64])  # every cell failed on it before
    plan = ["sweep", "smoke", "--dry-run", "regime=none", "signal=none", *MINIMAL, f"cache_dir={cfg.cache_dir}"]
    dry = _invoke(plan, tmp_path, monkeypatch)
    assert dry.exit_code == 0 and "damaged: to rebuild" in dry.stdout and "cached" not in dry.stdout, dry.output
    with caplog.at_level(logging.WARNING):
        result = run(overrides)
    assert result["status"] == "done" and result["phases"]["base"] == "trained", result.get("error")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"the cached base checkpoint {base} is damaged ({WEIGHTS} is not the file that was built); rebuilding it"
    ]


def test_dry_run_finds_a_cached_from_scratch_catalyst(tmp_path, monkeypatch):
    overrides = ["regime=correct", "signal=none", "catalyst.from_scratch=true", f"cache_dir={tmp_path / 'c'}"]
    (cell,) = sweeps.load_sweep("smoke", overrides).cells()
    cfg = cell.config
    scratch, _ = cached_checkpoint(
        tmp_path / "c", "scratch", scratch_key(cfg.model, cfg.base), _two_file_build, owner="t", timeout=60
    )
    catalyst = catalyst_key(scratch.name, task_key(cfg), cfg.regime, cfg.catalyst, cfg.seed)
    cached_checkpoint(tmp_path / "c", "catalyst", catalyst, _two_file_build, owner="t", timeout=60)
    dry = _invoke(["sweep", "smoke", "--dry-run", *overrides], tmp_path, monkeypatch)
    assert dry.exit_code == 0, dry.output
    rows = [re.split(r"\s{2,}", line.strip()) for line in dry.stdout.splitlines() if line.strip().startswith("pending")]
    assert [row[2] for row in rows] == ["cached"]  # the one cell's catalyst column (state, base, catalyst, ttt)


# -- work lost late -----------------------------------------------------------------------------


def _numeric_keys(schema: type, prefix: str = "") -> list[str]:
    keys = []
    for item in fields(schema):
        hint = get_type_hints(schema)[item.name]
        if is_dataclass(hint):
            keys += _numeric_keys(hint, f"{prefix}{item.name}.")
        elif {int, float} & set(get_args(hint) or [hint]):
            keys.append(prefix + item.name)
    return keys


def test_every_numeric_key_of_the_schema_has_its_range():
    """A value no phase can use must fail before the first one runs: a new key needs its rule in RANGES."""
    keys = _numeric_keys(CellConfig)
    assert len(keys) > 40 and not [key for key in keys if key not in RANGES]


def test_maj_at_16_of_32_samples_is_counted_not_enumerated():
    answers = [None if i % 7 == 0 else TASK.render((), "ABCD" if i % 3 else "DCBA")[1:] for i in range(32)]
    started = time.perf_counter()
    metrics = sample_metrics(TASK, answers, answers[1], 16)
    assert time.perf_counter() - started < 2.0  # listing the C(32, 16) = 6e8 subsets took 12 s and 4 GiB, then died
    assert 0.5 < metrics["acc/maj@16"] < 1.0 and metrics["acc/pass@16"] == 1.0


# -- tracebacks instead of one line -------------------------------------------------------------


def test_a_runs_dir_under_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "store").write_text("not a directory")
    for args in (["run", "runs_dir=store"], ["sweep", "smoke", "--dry-run", "cache_dir=store/cache"]):
        key = args[-1].split("=")[0]
        says = f"{key}={str(tmp_path / args[-1].split('=')[1])!r} is not valid: {tmp_path / 'store'} is a file"
        _assert_refused(_invoke(args, tmp_path, monkeypatch), says, tmp_path, {"store"})


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda path: path.write_bytes(b"axes:\n  regime: [caf\xe9]\n"), "mine.yaml:2: not UTF-8 text (byte 0xe9)"),
        (lambda path: path.mkdir(), "mine.yaml: is a directory; give a file"),
    ],
    ids=["not UTF-8", "a directory"],
)
def test_a_sweep_file_that_is_not_utf8_text_or_not_a_file(tmp_path, monkeypatch, make, says):
    sweeps_dir = tmp_path / "sweeps"
    sweeps_dir.mkdir()
    make(sweeps_dir / "mine.yaml")
    monkeypatch.setattr(sweeps, "SWEEPS_DIR", sweeps_dir)
    _assert_refused(_invoke(["sweep", "mine", "--dry-run"], tmp_path, monkeypatch), says, tmp_path, {"sweeps"})


def test_status_and_report_read_a_damaged_store_cell_by_cell(tmp_path):
    runs = tmp_path / "runs"
    good = [fake_result("correct", "majority", seed, 0.6, 0.65) for seed in (0, 1, 2)]
    write_store(runs, "hand", good)
    damaged = {
        "alive/status.json": '{"phase": "ttt", "host": "here", "pid": "twelve"}',
        "alive/config.yaml": "seed: 0\n",
        "huge/config.yaml": "seed: 0\n",
        "huge/status.json": json.dumps({"phase": "ttt", "host": socket.gethostname(), "pid": 10**30}),
        "nostatus/result.json": json.dumps({k: v for k, v in good[0].items() if k != "status"}),
        "binary/result.json": b"\xff\xfe\x00garbage",
        "nometrics/result.json": json.dumps({k: v for k, v in good[0].items() if k != "metrics"}),
        f"{good[0]['cell']}/trajectory.json": '{"step": "one"}',
        "grid.json": '["not", "a", "grid"]',
    }
    for name, content in damaged.items():
        path = runs / "hand" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    bad = sorted(str(runs / "hand" / name) for name in damaged if not name.startswith("huge/") and "yaml" not in name)
    status = CliRunner().invoke(app, ["status", "hand", "--runs-dir", str(runs)], terminal_width=400)
    assert status.exit_code == 0, status.output
    assert "done=3" in status.stdout and all(path in status.stdout for path in bad)
    assert "stale:ttt" in status.stdout  # a pid no process can have: its process is gone
    report = CliRunner().invoke(app, ["report", "hand", "--runs-dir", str(runs), "--no-wandb"], terminal_width=400)
    assert report.exit_code == 0, report.output
    text = (runs / "hand" / "report" / "report.md").read_text()
    assert "3 cells: 3 done." in text and "Unreadable: 6 damaged file(s)" in text and all(p in text for p in bad)


def test_a_report_that_fails_midway_leaves_the_last_report_whole(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    _finished_smoke_store(runs)
    before = _report_files(runs, "smoke")
    write_store(runs, "smoke", [fake_result("correct", "majority", 3, 0.6, 0.7) | {"sweep": "smoke"}])

    def broken_plot(*args):
        raise RuntimeError("a plot failed")

    last = list(plots.PLOTS)[-1]  # every other plot and results.jsonl are made, with the new cell, before it
    monkeypatch.setitem(plots.PLOTS, last, broken_plot)
    with pytest.raises(RuntimeError, match="a plot failed"):
        write_report(report_module.build(report_module.from_store(runs, "smoke")), runs / "smoke" / "report")
    assert _report_files(runs, "smoke") == before
    assert [p.name for p in (runs / "smoke" / "report").iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    write_report(report_module.build(report_module.from_store(runs, "smoke")), runs / "smoke" / "report")
    assert _report_files(runs, "smoke") != before  # the failed rebuild had something to change


# -- hangs and floods ---------------------------------------------------------------------------


def test_a_range_of_a_trillion_seeds_is_refused_at_once(tmp_path, monkeypatch):
    started = time.perf_counter()
    done = _invoke(["sweep", "smoke", "--dry-run", "seed=range(0,1000000000000)"], tmp_path, monkeypatch)
    _assert_refused(done, "the grid has more than --max-cells 1000 cells", tmp_path)
    assert time.perf_counter() - started < 10


def test_max_cells_raises_the_bound_and_jobs_never_outnumber_cells():
    assert len(sweeps.load_sweep("smoke", ["seed=range(0,300)"], max_cells=1200).grid()) == 1200
    assert "hydra.launcher.n_jobs=2" in sweeps.load_sweep("smoke", ["signal=none"], jobs=12).hydra_args


# -- valid input refused ------------------------------------------------------------------------


def test_a_sweep_runs_from_a_non_ascii_directory_into_a_store_with_a_backslash(tmp_path, monkeypatch, untrained_base):
    home = tmp_path / "équipe ü"
    home.mkdir()
    args = ["sweep", "smoke", "regime=none", "signal=none", *MINIMAL, *untrained_base, "runs_dir=runs\\x"]
    done = _invoke(args, home, monkeypatch)
    assert done.exit_code == 0, done.output
    (result,) = (home / "runs\\x" / "smoke").glob(f"*/{RESULT}")
    assert json.loads(result.read_text())["status"] == "done"


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    rows = gsm8k_rows(40)
    rows[1]["question"] += " A\u2028B\u0085C\u2029D"
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert any("A\u2028B\u0085C\u2029D" in p.prompt for p in _gsm8k(path).problems)


# -- slow failures with no network --------------------------------------------------------------


@pytest.fixture
def closed_url() -> str:
    """A local address where nothing listens: every connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    network.reachable.cache_clear()
    yield f"http://127.0.0.1:{port}"
    network.reachable.cache_clear()


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "model=hf", "model.name_or_path=org/model"], "model.name_or_path='org/model' is a hub id, but http"),
        (["run", "task=gsm8k", "task.dataset=org/data"], "task.dataset='org/data' is a hub id, but http"),
    ],
)
def test_a_hub_id_without_the_hub_fails_at_once(tmp_path, monkeypatch, closed_url, args, says):
    monkeypatch.setattr(hub_constants, "ENDPOINT", closed_url)
    started = time.perf_counter()
    _assert_refused(_invoke(args, tmp_path, monkeypatch), says, tmp_path)
    assert time.perf_counter() - started < 5  # the hub client retried for 25-54 s


def test_a_hub_model_in_the_local_cache_without_the_hub_says_how_to_load_it(tmp_path, monkeypatch, closed_url):
    monkeypatch.setattr(hub_constants, "ENDPOINT", closed_url)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--org--model" / "snapshots" / "abc").mkdir(parents=True)
    done = _invoke(["run", "model=hf", "model.name_or_path=org/model"], tmp_path, monkeypatch)
    _assert_refused(done, "is in the local hub cache: set HF_HUB_OFFLINE=1 to load it from there", tmp_path, {"hub"})


def test_offline_mode_refuses_a_hub_id_that_is_not_in_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    done = _invoke(["run", "task=gsm8k", "task.dataset=org/data"], tmp_path, monkeypatch)
    _assert_refused(done, "task.dataset='org/data' is a hub id, but HF_HUB_OFFLINE is set", tmp_path)


def test_wandb_online_without_its_server_logs_offline_after_one_warning(tmp_path, monkeypatch, closed_url, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", closed_url)
    tracking.online_unreachable.cache_clear()
    runs = []
    with caplog.at_level(logging.WARNING):
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            tracker = Tracker(
                mode="online", project="p", entity=None, group="g", job_type="j", name=name, config={},
                directory=tmp_path / name,
            )  # fmt: skip
            tracker.log_step(1, {"ttt/loss": 0.5})
            runs.append(tracker.finish())
    tracking.online_unreachable.cache_clear()
    assert all(run and "offline-run-" in run for run in runs)  # logged, to be synced later
    assert len([r for r in caplog.records if "cannot be reached; runs log offline" in r.getMessage()]) == 1


# -- interrupted is not failed ------------------------------------------------------------------


def test_an_interrupted_cell_is_recorded_interrupted_and_a_rerun_finishes_it(
    tiny, tmp_path, monkeypatch, untrained_base
):
    overrides = tiny("regime=none", "signal=majority", *MINIMAL, *untrained_base)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "train_at_test_time", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run(overrides)
    (path,) = (tmp_path / "runs" / "single").glob(f"*/{RESULT}")
    result = json.loads(path.read_text())
    assert result["status"] == "interrupted" and result["error"] == "interrupted (SIGINT) in phase ttt"
    assert "KeyboardInterrupt" in (path.parent / "error.log").read_text()
    status = CliRunner().invoke(app, ["status", "single", "--runs-dir", str(tmp_path / "runs")], terminal_width=300)
    assert "interrupted=1" in status.stdout and f"interrupted          {result['cell']}" in status.stdout
    again = run(overrides)
    assert again["status"] == "done" and not again.get("skipped"), again.get("error")


@pytest.mark.slow
def test_sigint_during_ttt_records_interrupted_with_its_log(tiny, tmp_path, untrained_base):
    runs = tmp_path / "runs"
    overrides = tiny("regime=none", "signal=majority", *MINIMAL, *untrained_base, "ttt.steps=400")
    # A child inherits an ignored SIGINT (an earlier test's library can leave it ignored in this process),
    # and Python then installs no KeyboardInterrupt handler: the cell starts as a terminal would start it.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        [CTTT, "run", *overrides], cwd=tmp_path, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    deadline = time.time() + 300
    while time.time() < deadline and not any('"ttt"' in p.read_text() for p in runs.glob("single/*/status.json")):
        time.sleep(0.2)
    time.sleep(1)  # inside the GRPO steps
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and stderr.strip().endswith("recorded as interrupted; rerun to resume"), stderr
    (path,) = runs.glob(f"single/*/{RESULT}")
    result = json.loads(path.read_text())
    assert result["status"] == "interrupted" and result["error"] == "interrupted (SIGINT) in phase ttt"
    assert "KeyboardInterrupt" in (path.parent / "error.log").read_text()


# -- files a team can read ----------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_store_files_are_created_as_the_umask_says(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "result.json", {"status": "done"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
