"""The phase cache and the results store: keys that cover code and data, locks, stale cells."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from filelock import FileLock
from typer.testing import CliRunner

from catalyst_ttt.cache import KEY, WEIGHTS, cached_checkpoint
from catalyst_ttt.cli import app
from catalyst_ttt.config import cell_identity, compose_cell
from catalyst_ttt.hashing import code_fingerprint
from catalyst_ttt.pipeline import run_cell
from catalyst_ttt.results import LockTimeout
from helpers.cells import CTTT, run
from helpers.gsm8k_data import gsm8k_rows, write_jsonl


def _fake_build(directory: Path) -> None:
    (directory / WEIGHTS).write_bytes(b"weights")


def test_a_checkpoint_is_reused_only_while_its_key_json_matches(tmp_path):
    path, built = cached_checkpoint(tmp_path, "base", {"steps": 3}, _fake_build, owner="t", timeout=60)
    assert built and json.loads((path / KEY).read_text()) == {"steps": 3, "code": code_fingerprint()}
    assert cached_checkpoint(tmp_path, "base", {"steps": 3}, _fake_build, owner="t", timeout=60) == (path, False)
    (path / KEY).write_text(json.dumps({"steps": 4}))  # a checkpoint that is not what its name says
    assert cached_checkpoint(tmp_path, "base", {"steps": 3}, _fake_build, owner="t", timeout=60) == (path, True)
    (path / WEIGHTS).unlink()  # weights gone: rebuilt, never trusted
    assert cached_checkpoint(tmp_path, "base", {"steps": 3}, _fake_build, owner="t", timeout=60) == (path, True)


def test_a_checkpoint_lock_held_elsewhere_times_out_with_a_clear_message(tmp_path):
    key_path, _ = cached_checkpoint(tmp_path, "base", {"steps": 1}, _fake_build, owner="t", timeout=60)
    (key_path / KEY).unlink()
    with FileLock(str(key_path.parent / f"{key_path.name}.lock")):
        with pytest.raises(LockTimeout, match="waited 0.2 s for the base checkpoint .* raise lock_timeout"):
            cached_checkpoint(tmp_path, "base", {"steps": 1}, _fake_build, owner="t", timeout=0.2)


def test_the_same_cell_never_runs_twice_at_once(tiny):
    cfg = compose_cell(tiny("lock_timeout=0.2"))
    lock = Path(cfg.runs_dir) / cfg.sweep / ".locks" / f"{cell_identity(cfg)[0]}.lock"
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)):  # another process is running this cell
        with pytest.raises(LockTimeout, match=f"waited 0.2 s for cell {cell_identity(cfg)[0]}"):
            run_cell(cfg)
    assert not (Path(cfg.runs_dir) / cfg.sweep / cell_identity(cfg)[0]).exists()


@pytest.mark.slow
def test_an_edited_data_file_is_recomputed(tiny, tmp_path):
    """gsm8k is keyed on its file's content, not its path: the edited file trains a new base."""
    path = write_jsonl(tmp_path / "gsm.jsonl", gsm8k_rows(40))
    smoke = tiny("task=gsm8k", "signal=none", "regime=none", cache=tmp_path / "cache")
    overrides = [o for o in smoke if not o.startswith("task.")] + [
        f"task.path={path}",
        "task.n_id=4",
        "task.n_heldout=4",
        "task.max_completion_chars=60",
        "model.max_positions=320",
        "metrics.ig.enabled=false",
        "eval.trajectory=false",
        "eval.max_per_split=2",
        "base.steps=4",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.intermediate_size=64",
    ]
    first = run(overrides)
    assert first["status"] == "done", first.get("error")
    assert run(overrides)["skipped"]  # unchanged file: the finished cell is reused
    write_jsonl(path, gsm8k_rows(40, seed=1))
    second = run(overrides)
    assert second["status"] == "done" and not second.get("skipped")
    assert second["cell"] != first["cell"] and second["phases"]["base"] == "trained"
    trainings = [json.loads(line) for line in (tmp_path / "cache" / "trainings.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in trainings] == ["base", "base"]


def test_status_shows_a_killed_cell_as_stale(tiny, tmp_path, untrained_base):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [CTTT, "run", *tiny(*untrained_base)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(runs.glob("single/*/status.json")):
            time.sleep(0.2)
        assert list(runs.glob("single/*/status.json")), "the cell never started"
        status = json.loads(next(runs.glob("single/*/status.json")).read_text())
        assert status["pid"] == proc.pid and status["host"]
        running = CliRunner().invoke(app, ["status", "single", "--runs-dir", str(runs)], terminal_width=300)
        assert "running=1" in running.stdout, running.stdout
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    status = json.loads(next(runs.glob("single/*/status.json")).read_text())  # the phase it died in
    done = CliRunner().invoke(app, ["status", "single", "--runs-dir", str(runs)], terminal_width=300)
    assert done.exit_code == 0, done.output
    assert "stale=1" in done.stdout and f"stale:{status['phase']}" in done.stdout
