import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from helpers.cells import cttt

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "task=nope"], "unknown task 'nope'; valid: alchemy, arith, gsm8k"),
        (
            ["run", "regime=nope"],
            "unknown regime 'nope'; valid: answer_only, correct, corrupted, illogical, none, swapped",
        ),
        (["run", "signal=nope"], "unknown signal 'nope'; valid: entropy, majority, none"),
        (["run", "ttt.steps=-1"], "ttt.steps=-1 is not valid; it must be >= 0"),
        (["run", "ttt.steps=abc"], "could not be converted to Integer"),
        (["run", "ttt.stepz=3"], "unknown key 'ttt.stepz'; valid keys of ttt: steps"),
        (["run", "signal=verifree", "signal.reference=nope"], "valid: majority, gold"),
        (["run", "model=hf", "model.name_or_path=./missing"], "no model there"),
        (["sweep", "nope"], "unknown sweep 'nope'; valid: bench, default, full, signals, smoke, testbed"),
        (["sweep", "smoke", "regime=none,nope"], "unknown regime 'nope'"),
        (["sweep", "smoke", "--jobs", "0"], "--jobs 0 is not valid"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_started(tmp_path, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, args, terminal_width=400)
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []  # no runs/, no cache/, no outputs/


def test_bad_input_from_a_real_terminal_has_no_traceback(tmp_path):
    done = cttt("run", "task=nope", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown task 'nope'; valid: alchemy, arith, gsm8k"
    assert "Traceback" not in done.stdout


def test_list_names_every_registered_unit():
    done = CliRunner().invoke(app, ["list"], terminal_width=200)
    assert done.exit_code == 0
    for name in ("alchemy", "swapped", "illogical", "majority", "verifree", "self_sft", "tiny", "hf", "default"):
        assert name in done.stdout


def test_run_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["run", "--cfg", "job", "regime=swapped", "ttt.steps=7"], terminal_width=200)
    assert done.exit_code == 0, done.output
    cfg = yaml.safe_load(done.stdout)
    assert cfg["regime"]["name"] == "swapped" and cfg["ttt"]["steps"] == 7
    assert cfg["runs_dir"] == str(tmp_path / "runs")  # absolute: every worker shares one store
    assert list(tmp_path.iterdir()) == []


def test_the_wheel_ships_conf_and_sweeps(tmp_path):
    """A non-editable install finds its configs and sweeps inside the package."""
    source = tmp_path / "src"
    for part in ("catalyst_ttt", "conf", "sweeps"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist())
    shipped = {f"catalyst_ttt/{p.relative_to(ROOT).as_posix()}" for p in ROOT.glob("conf/**/*.yaml")}
    shipped |= {f"catalyst_ttt/{p.relative_to(ROOT).as_posix()}" for p in ROOT.glob("sweeps/*.yaml")}
    assert shipped and shipped <= names
    assert "catalyst_ttt/conf/task/alchemy.yaml" in names and "catalyst_ttt/sweeps/default.yaml" in names
