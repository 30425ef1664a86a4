"""The report as files: results.jsonl and the rebuild from it alone (byte for byte), the plots, the HTML page,
the hypotheses hook, and what `cttt status` prints at 80 columns."""

import json
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.errors import UserError
from catalyst_ttt.report import RESULTS_FILE, build, from_store, read_file
from catalyst_ttt.report.appendix import REPOSITORY, link
from catalyst_ttt.report.loading import compact, expand
from catalyst_ttt.report.page import markdown, slug, to_html, write_report
from catalyst_ttt.report.plots import draw, palette
from catalyst_ttt.results import GRID, write_json
from helpers.fakes import fake_result, write_store
from helpers.wandb_offline import read_offline_run

LOG = [{"ttt/step": s, "ttt/reward": 0.2 + 0.01 * s, "ttrl/majority_ratio": 0.5 + 0.01 * s} for s in range(1, 21)]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _study(runs: Path, signals=("majority", "process", "oracle"), anchors=("none",)) -> Path:
    """3 bases: none, correct and swapped without TTT, and correct/swapped under each signal and anchor; the
    per-step TTT log recorded; a recorded grid."""
    results = []
    for b in (0, 1, 2):
        results += [fake_result(r, "none", 0, s, s, base_seed=b) for r, s in (("none", 0.05), ("correct", 0.6))]
        results += [fake_result("swapped", "none", 0, 0.05, 0.05, base_seed=b)]
        for i, signal in enumerate(signals):
            for anchor in anchors:
                final = 0.6 - 0.1 * i + 0.01 * b
                results += [
                    fake_result("correct", signal, 0, 0.6, final, base_seed=b, anchor=anchor, ttt_log=LOG,
                                trajectory=[0.6, 0.62, (0.6 + final) / 2, final]),
                    fake_result("swapped", signal, 0, 0.05, 0.05, base_seed=b, anchor=anchor),
                ]  # fmt: skip
    write_store(runs, "hand", results)
    grid = {"sweep": "hand", "file": "hand.yaml", "file_sha256": "cd" * 32, "fixed": [], "axes": {}}
    write_json(runs / "hand" / GRID, grid | {"cells": {r["cell"]: r["config_hash"] for r in results}})
    return runs


def _report_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix in (".md", ".html", ".png")}


def test_a_report_rebuilds_from_its_results_file_alone_byte_for_byte(tmp_path, monkeypatch):
    runs = _study(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["report", "hand", "--runs-dir", str(runs), "--no-wandb"], terminal_width=80)
    assert done.exit_code == 0, done.output
    directory = runs / "hand" / "report"
    original = _report_files(directory)
    assert {"report.md", "report.html", "gains.png", "ttt_accuracy.png", "ttt_reward.png"} <= set(original)
    for cell in (runs / "hand").iterdir():  # no results store from here on
        if cell.name != "report":
            shutil.rmtree(cell) if cell.is_dir() else cell.unlink()
    for name in original:
        (directory / name).unlink()
    done = runner.invoke(app, ["report", "--from", str(directory / RESULTS_FILE)], terminal_width=80)
    assert done.exit_code == 0, done.output
    assert _report_files(directory) == original
    elsewhere = tmp_path / "committed"  # a copy of the file alone, as docs/results/<study>/ holds it
    elsewhere.mkdir()
    shutil.copy(directory / RESULTS_FILE, elsewhere / RESULTS_FILE)
    write_report(build(read_file(elsewhere / RESULTS_FILE)), elsewhere)
    assert _report_files(elsewhere) == original


COMMITTED = REPOSITORY / "docs" / "results"
COMMITTED_STUDIES = sorted(p.parent.name for p in COMMITTED.glob(f"*/{RESULTS_FILE}"))


def test_the_results_index_lists_every_committed_study_and_no_other():
    indexed = set(re.findall(r"^\| \[(\w+)\]\(\1/report\.md\) \|", (COMMITTED / "README.md").read_text(), re.M))
    assert {"default", "question", "ignition"} <= indexed
    assert indexed == set(COMMITTED_STUDIES)


@pytest.mark.parametrize("study", COMMITTED_STUDIES)
def test_a_committed_report_rebuilds_from_its_results_file_byte_for_byte(study, tmp_path):
    directory = COMMITTED / study
    report = build(read_file(directory / RESULTS_FILE))
    drawn = draw(report, tmp_path)  # the page names the plots it draws; their pixels depend on the fonts
    assert sorted(p.name for p in drawn.values()) == sorted(p.name for p in directory.glob("*.png"))
    assert (
        markdown(report, {name: p.name for name, p in drawn.items()}, directory)
        == (directory / "report.md").read_text()
    )


def test_results_file_holds_one_compact_line_per_cell_after_the_grid(tmp_path):
    runs = _study(tmp_path)
    cells = from_store(runs, "hand")
    write_report(build(cells), tmp_path / "out")
    lines = (tmp_path / "out" / RESULTS_FILE).read_text().splitlines()
    study = json.loads(lines[0])
    assert study["record"] == "study" and study["grid"]["file_sha256"] == "cd" * 32
    assert len(lines) == 1 + len(cells.results)
    cell = json.loads(lines[1])
    assert set(cell["items"]["id"]) == {"base", "start", "final"} and set(cell["items"]["id"]["final"]) <= {"0", "1"}
    assert {"config", "axes", "pre_ttt", "metrics", "stab", "ig", "ig_calibration", "timing", "ttt_log"} <= set(cell)
    assert cell["trajectory"][0]["id"]["correct"] and isinstance(cell["trajectory"][0]["id"]["correct"], str)
    full = fake_result("correct", "majority", 0, 0.6, 0.5, ttt_log=LOG) | {"host": "machine-7"}
    again = expand(json.loads(json.dumps(compact(full))))
    assert "host" not in again and again["ttt_log"] == LOG
    assert again["items"] == full["items"]
    assert [row["id"]["correct"] for row in again["trajectory"]] == [
        [int(x) for x in row["id"]["correct"]] for row in full["trajectory"]
    ]


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "not a cttt results file"),
        ('{"record": "cell"}\n', "not a cttt results file"),
        ('{"record": "study", "format": 99, "sweep": "x"}\n', "results format 99"),
        ('{"record": "study", "format": 1, "sweep": "x"}\n{"status": \n', ":2: not a JSON line"),
        ('{"record": "study", "format": 1, "sweep": "x"}\n{"record": "cell"}\n', ":2: not a cell record"),
    ],
)
def test_a_damaged_results_file_is_the_users_error_with_its_line(tmp_path, text, says):
    path = tmp_path / RESULTS_FILE
    path.write_text(text)
    with pytest.raises(UserError, match=says):
        read_file(path)


def test_plots_fit_the_page_and_are_omitted_when_they_have_nothing_to_show(tmp_path):
    signals = ("majority", "process", "oracle", "random", "entropy", "self_certainty", "cross_view")
    runs = _study(tmp_path, signals=signals, anchors=("none", "kl", "replay"))
    drawn = write_report(build(from_store(runs, "hand")), tmp_path / "out")
    assert set(drawn) == {"ignition", "anchors", "gains", "ttt_accuracy", "ttt_reward", "ttt_agreement"}
    for path in drawn.values():
        width, height = _png_size(path)
        assert 500 <= width <= 1200 and 200 <= height <= 2400, (path.name, width, height)
    # three anchors: three panels side by side, one regime row each (swapped is at its floor, still shown)
    assert _png_size(drawn["ttt_accuracy"])[0] > _png_size(drawn["gains"])[0]

    starts = (("none", 0.05), ("correct", 0.6))
    no_ttt = [fake_result(r, "none", 0, s, s, base_seed=b) for b in (0, 1, 2) for r, s in starts]
    write_store(tmp_path / "ignition", "hand", no_ttt)
    out = tmp_path / "ignition" / "out"
    assert set(write_report(build(from_store(tmp_path / "ignition", "hand")), out)) == {"ignition"}
    assert sorted(p.name for p in out.glob("*.png")) == ["ignition.png"]
    text = (out / "report.md").read_text()
    assert "## TTT verdicts" not in text and "n/a (no TTT)" not in text and "## TTT over steps" not in text


@pytest.mark.parametrize("count", [1, 7, 10, 11, 20, 21, 40])
def test_the_palette_has_as_many_distinct_colours_as_series(count):
    assert len({to_hex(colour) for colour in palette(count)}) == count


def test_the_page_opens_with_its_answer_and_links_its_sections(tmp_path):
    report = build(from_store(_study(tmp_path), "hand"))
    text = markdown(report, {}, tmp_path)
    lines = text.splitlines()
    assert lines[0] == "# hand: catalyst-ttt report" and lines[2] == "## The answer"
    contents = next(line for line in lines if line.startswith("**Contents:**"))
    assert lines.index(contents) < 15
    headings = [line[3:] for line in lines if line.startswith("## ")]
    linked = [part.split("](#")[1].rstrip(")") for part in contents.split(" · ")]
    assert linked == [slug(h) for h in headings[1:]]
    assert headings[-1] == "Appendix: how this report was made"
    assert "config hash" not in text[: text.index("## Appendix")]

    page = to_html(report, text)
    for anchor in linked:
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page
    assert '<td class="verdict good">stable</td>' in page or '<td class="verdict bad">unstable</td>' in page
    assert "<script" not in page and "Matplotlib" not in page


def test_links_reach_the_docs_and_run_notes_from_inside_the_checkout(tmp_path):
    committed = REPOSITORY / "docs" / "results" / "default"
    assert link(committed, REPOSITORY / "docs" / "statistics.md", "docs/statistics.md") == (
        "[docs/statistics.md](../../statistics.md)"
    )
    assert link(tmp_path, REPOSITORY / "docs" / "statistics.md", "docs/statistics.md") == "`docs/statistics.md`"
    report = build(from_store(_study(tmp_path / "runs"), "hand"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "RUN.md").write_text("how it ran")
    assert "[RUN.md](RUN.md)" in markdown(report, {}, tmp_path / "out")
    assert "RUN.md" not in markdown(report, {}, tmp_path)


@dataclass
class Scored:
    id: str
    claim: str
    verdict: str
    evidence: str
    rule: str


def test_scored_hypotheses_come_first_with_their_table_and_warning(tmp_path):
    report = build(from_store(_study(tmp_path), "hand"))
    report.hypotheses = [
        Scored("H1", "Only correct traces ignite", "supported", "correct +0.55; swapped +0.00", "ignites vs not"),
        Scored("H2", "majority stays stable | anchored", "refuted", "gain -0.10", "within ±δ"),
    ]
    report.hypotheses_warning = "the study file's hypotheses changed after its first cell ran"
    text = markdown(report, {}, tmp_path)
    answer = text[text.index("## The answer") : text.index("**Contents:**")]
    assert answer.splitlines()[2:5] == [
        "- H1 — supported: Only correct traces ignite",
        "- H2 — refuted: majority stays stable | anchored",
        "- Warning: the study file's hypotheses changed after its first cell ran",
    ]
    section = text[text.index("## Hypotheses") : text.index("## Ignition")]
    assert "| id | claim | verdict | evidence | rule |" in section
    assert "| H2 | majority stays stable \\| anchored | refuted | gain -0.10 | within ±δ |" in section
    assert "**Warning:** the study file's hypotheses changed" in section


def test_status_and_list_read_at_80_columns(tmp_path):
    runs = _study(tmp_path, signals=("majority", "majority_x_process", "guarded_majority"))
    runner = CliRunner()
    for args in (["status", "hand", "--runs-dir", str(runs)], ["list"]):
        done = runner.invoke(app, args, terminal_width=80, env={"COLUMNS": "80"})
        assert done.exit_code == 0, done.output
        assert "…" not in done.output
        assert max(len(line.rstrip()) for line in done.output.splitlines()) <= 80
    status = runner.invoke(app, ["status", "hand", "--runs-dir", str(runs)], terminal_width=80, env={"COLUMNS": "80"})
    for value in ("majority_x_process", "guarded_majority", "does not ignite", "inconclusive", "3 bases"):
        assert value in status.output, value
    floor = "swapped × guarded_majority, majority, majority_x_process: n/a (floor) — 0 of 3 replicates start above"
    assert floor in " ".join(status.output.split())  # the floor groups: one line, wrapped, not a table


def test_status_of_a_sweep_not_run_yet_shows_its_plan(tmp_path):
    done = CliRunner().invoke(app, ["status", "smoke", "--runs-dir", str(tmp_path)], terminal_width=80)
    assert done.exit_code == 0, done.output
    assert "sweep smoke: 0 of 4 cells done (nothing has run yet)" in done.output
    assert (
        "axes: regime=none,correct; signal=none,majority" in done.output and "run it: cttt sweep smoke" in done.output
    )


def test_the_report_run_is_logged_to_wandb(tmp_path, monkeypatch):
    results = [
        fake_result("correct", "majority", 0, 0.6, 0.61, base_seed=b, config={"wandb": {"mode": "offline"}})
        for b in (0, 1, 2)
    ]
    write_store(tmp_path, "hand", results)
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["report", "hand", "--runs-dir", str(tmp_path)], terminal_width=200)
    assert done.exit_code == 0, done.output
    offline = Path(next(line for line in done.output.splitlines() if "wandb sync" in line).split("wandb sync ")[1])
    run = read_offline_run(offline)
    assert run.run["job_type"] == "report" and run.run["group"] == "hand"
    logged = {key.split(".")[0] for row in run.history for key in row}
    assert {"regimes_x_signals", "answer", "gains"} <= logged
    (table,) = offline.glob("files/media/table/regimes_x_signals_*.table.json")
    saved = json.loads(table.read_text())
    (row,) = [dict(zip(saved["columns"], values)) for values in saved["data"]]
    group = build(from_store(tmp_path, "hand")).groups[0]
    assert row["verdict"] == "stable" and row["replicates"] == 3 and row["gain_units"] == 3
    assert (row["gain"], row["gain_low"], row["gain_high"]) == pytest.approx(
        (group.stats["gain"].mean, group.stats["gain"].low, group.stats["gain"].high)
    )
    assert row["p_within"] == pytest.approx(group.adjusted["within"])


def test_the_answer_tables_and_status_load_no_plotting():
    probe = (
        "import sys; import catalyst_ttt.report.answer, catalyst_ttt.report.tables, catalyst_ttt.report.terminal; "
        "print('matplotlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
