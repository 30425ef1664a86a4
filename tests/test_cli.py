import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.config import CONF_DIR
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.signals import SIGNALS
from catalyst_ttt.sweep import available_sweeps, sweep_description
from catalyst_ttt.tasks import TASKS
from helpers.cells import cttt

ROOT = Path(__file__).resolve().parent.parent


def test_bad_input_from_a_real_terminal_has_no_traceback(tmp_path):
    done = cttt("run", "task=nope", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown task 'nope'; valid: alchemy, arith, gsm8k"
    assert "Traceback" not in done.stdout


def test_list_names_every_registered_unit_with_its_description():
    done = CliRunner().invoke(app, ["list"], terminal_width=80, env={"COLUMNS": "80"})
    assert done.exit_code == 0
    models = [p.stem for p in (CONF_DIR / "model").glob("*.yaml")]
    names = [*TASKS.names(), *REGIMES.names(), *SIGNALS.names(), *models, *available_sweeps()]
    assert len(names) >= 25
    for name in names:
        assert name in done.stdout, name
    lines = done.stdout.splitlines()
    for name in SIGNALS.names():  # each signal's trainer and access class lead its row
        row = next(line for line in lines if line.startswith(f"{name} "))
        signal = SIGNALS.get(name)
        assert f"{signal.trainer or 'no training'}; {signal.access_note().split(' (')[0]}" in row, row
    flat = " ".join(done.stdout.split())
    for name in available_sweeps():  # every sweep with its description, unabridged
        assert f"{name} {sweep_description(name + '.yaml')}" in flat, name


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


def test_composing_and_validating_a_config_imports_no_torch():
    """Configs compose in a fresh interpreter without torch, transformers or TRL (a cheap `--cfg job`)."""
    probe = (
        "import sys; from catalyst_ttt.config import compose_cell; "
        "compose_cell(['signal=verifree', 'ttt.anchor=kl+replay', 'task=arith']); "
        "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_group_yaml_repeats_a_default_of_its_schema():
    """One home per default: a group's YAML names its option (and extends the schema); values live in
    the dataclasses (schema.py, each task's config class)."""
    for path in sorted(CONF_DIR.glob("*/*.yaml")):
        if path.parent.name == "hydra":
            continue
        keys = set(yaml.safe_load(path.read_text()) or {}) - {"defaults", "name", "kind"}
        assert not keys, f"{path.relative_to(CONF_DIR)} repeats {sorted(keys)}"


def test_every_command_helps_with_one_example_at_80_columns():
    for command in ("run", "sweep", "status", "report", "list"):
        done = CliRunner().invoke(app, [command, "--help"], terminal_width=80, env={"COLUMNS": "80"})
        assert done.exit_code == 0, done.output
        assert done.output.count("Example: cttt ") == 1, command
        assert "<bool>" not in done.output  # a flag takes no value
        assert max(len(line) for line in done.output.splitlines()) <= 80, command
