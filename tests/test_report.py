"""`cttt report` on a real smoke sweep and on hand-written results."""

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.report import build_report, write_report
from catalyst_ttt.results import write_json
from helpers.cells import cttt
from helpers.fakes import fake_result


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory) -> Path:
    """A results store made by a real smoke sweep (Hydra multirun, TRL, tiny model)."""
    root = tmp_path_factory.mktemp("smoke")
    done = cttt(
        "sweep",
        "smoke",
        f"runs_dir={root}/runs",
        f"cache_dir={root}/cache",
        "wandb.mode=disabled",
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "runs"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_report_of_a_real_sweep_matches_the_cells(smoke_store):
    report = build_report(smoke_store, "smoke")
    directory = write_report(report, smoke_store)
    cells = [json.loads(p.read_text()) for p in (smoke_store / "smoke").glob("*/result.json")]
    assert len(cells) == 4
    for group in report.groups:
        mine = [
            c
            for c in cells
            if c["axes"]["regime"] == group.key["regime"] and c["axes"]["signal"] == group.key["signal"]
        ]
        finals = [c["metrics"]["id"]["acc/greedy"] for c in mine]
        assert group.stats["final"]["n"] == len(mine) == 1
        assert group.stats["final"]["mean"] == pytest.approx(sum(finals) / len(finals))
        assert group.stats["ignition"]["mean"] == pytest.approx(sum(c["ignition"] for c in mine) / len(mine))
        row = next(
            line
            for line in (directory / "report.md").read_text().splitlines()
            if line.startswith(f"| {group.key['regime']} | {group.key['signal']} |")
        )
        assert f"{group.stats['final']['mean']:.3f} ± {group.stats['final']['ci95']:.3f}" in row
    for name in ("trajectories", "ignition_vs_stability", "process_and_ig", "shifts"):
        width, height = _png_size(directory / f"{name}.png")
        assert 400 <= width <= 4000 and 300 <= height <= 3000
    html = (directory / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html


def _hand_store(runs: Path, collapsing: str, holding: str) -> None:
    """`collapsing` drops from 0.6 to 0.2 with 90% collapse; `holding` keeps 0.6 -> 0.65."""
    for seed in (0, 1, 2):
        results = [
            fake_result("correct", collapsing, seed, 0.6, 0.2 + 0.01 * seed, drawdown=0.4, collapse=0.9),
            fake_result("correct", holding, seed, 0.6, 0.65 + 0.01 * seed),
            fake_result("none", "none", seed, 0.05, 0.05),
        ]
        for result in results:
            result["config"]["wandb"] = {"mode": "disabled", "project": "p", "entity": None}
            write_json(runs / "hand" / f"{result['cell']}" / "result.json", result)


def test_verdicts_and_answer_follow_the_data(tmp_path):
    _hand_store(tmp_path / "a", collapsing="majority", holding="process")
    first = build_report(tmp_path / "a", "hand")
    verdicts = {g.key["signal"]: g.stable for g in first.groups}
    assert verdicts["majority"] is False and verdicts["process"] is True
    text = " ".join(first.answer)
    assert "stable under `process`" in text and "unstable under `majority`" in text
    assert "collapse 0.900 > 0.25" in text and "n=3" in text
    assert "Regime `correct` ignites" in text

    _hand_store(tmp_path / "b", collapsing="process", holding="majority")
    flipped = " ".join(build_report(tmp_path / "b", "hand").answer)
    assert "stable under `majority`" in flipped and "unstable under `process`" in flipped
    assert flipped != text


def test_report_errors_are_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["report", "nope"], terminal_width=400)
    assert done.exit_code == 2 and "no results for sweep 'nope'" in done.stderr
    failed = fake_result("correct", "majority", 0, 0.5, 0.5, status="failed")
    write_json(tmp_path / "runs" / "empty" / "cell" / "result.json", failed)
    done = runner.invoke(app, ["report", "empty"], terminal_width=400)
    assert done.exit_code == 2 and "has no finished cells" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_status_reads_the_results_store(smoke_store):
    done = CliRunner().invoke(app, ["status", "smoke", "--runs-dir", str(smoke_store)], terminal_width=300)
    assert done.exit_code == 0, done.output
    assert "done=4" in done.output
