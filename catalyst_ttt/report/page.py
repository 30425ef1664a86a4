"""The report as a page: report.md, and report.html with the plots embedded. It opens with the answer, then a
linked table of contents and one section per concern; where the numbers come from closes it (appendix)."""

from __future__ import annotations

import base64
import html
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

from catalyst_ttt.metrics.aggregate import (
    DID_NOT_TRAIN,
    FLOOR,
    IGNITES,
    INCONCLUSIVE,
    NO_IGNITION,
    NO_REPLICATE,
    NO_TTT,
    STABLE,
    TOO_FEW,
    UNSTABLE,
)
from catalyst_ttt.report import answer, appendix, tables
from catalyst_ttt.report.loading import RESULTS_FILE, write_file
from catalyst_ttt.report.plots import PLOTS, draw
from catalyst_ttt.report.study import Report, anchor_order, budget_curves, mean_probes, ordered, varies_budget

REPORT_MD, REPORT_HTML = "report.md", "report.html"
CAPTIONS = {
    "ignition_vs_budget": "Ignition against the catalyst's rows, one curve per regime; ★ where it ignites.",
    "ignition": "Ignition per regime; shaded: between 0 and the no-ignition margin.",
    "verdicts": "Each TTT group's verdict (colour) and mean gain (text); regime `none` is the floor and left out.",
    "anchors": "Which anchor keeps which signal stable: verdict (colour) and mean gain (text); a regime whose "
    "every group starts at its floor is left out.",
    "gains": "TTT gain of every group that trained, with its interval; shaded: the equivalence margin ±δ.",
    "ttt_accuracy": "Greedy id accuracy on the trajectory items during TTT.",
    "ttt_reward": "The signal's mean reward per TTT step (per-step TTT log).",
    "ttt_agreement": "Share of each generation group voting for its majority answer, per TTT step.",
}
VERDICT_CLASSES = {
    STABLE: "good",
    IGNITES: "good",
    UNSTABLE: "bad",
    INCONCLUSIVE: "open",
    DID_NOT_TRAIN: "flat",
    NO_IGNITION: "flat",
    FLOOR: "none",
    NO_TTT: "none",
    TOO_FEW: "none",
    NO_REPLICATE: "none",
}


@dataclass
class Section:
    title: str
    lines: list[str]


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def images(names: list[str], plots: dict[str, str]) -> list[str]:
    """Markdown for the drawn plots among `names`, each with its caption."""
    shown = [name for name in names if name in plots]
    return [line for name in shown for line in (f"![{name}]({plots[name]})", "", f"*{CAPTIONS[name]}*", "")]


def bullets(lines: list[str]) -> list[str]:
    return [*(f"- {line}" for line in lines), ""] if lines else []


def answer_lines(report: Report) -> list[str]:
    lines = [f"{h.id} — {h.verdict}: {h.claim}" for h in report.hypotheses]
    if report.hypotheses_warning:
        lines.append(f"Warning: {report.hypotheses_warning}")
    return lines + answer.headline(report)


def sections(report: Report, plots: dict[str, str], directory: Path) -> list[Section]:
    out = []
    if report.hypotheses:
        warning = [f"**Warning:** {report.hypotheses_warning}", ""] if report.hypotheses_warning else []
        out.append(Section("Hypotheses", [*warning, tables.hypotheses_table(report.hypotheses), ""]))
    out.append(ignition_section(report, plots))
    if report.ttt_groups:
        out.append(ttt_section(report, plots))
    if report.anchors_vary:
        out.append(anchors_section(report, plots))
    trained = [g for g in report.ttt_groups if g.trained]
    if trained:
        out.append(steps_section(report, plots))
        out.append(Section("Accuracy and stability", accuracy_lines(report, trained)))
        out.append(Section("Process and information gain", process_lines(report, trained)))
    out += detail_sections(report)
    out.append(Section("Appendix: how this report was made", appendix.lines(report, directory)))
    return out


def ignition_section(report: Report, plots: dict[str, str]) -> Section:
    if not report.ignition:
        return Section("Ignition", ["No catalyst regime besides `none` (the base itself): nothing to ignite.", ""])
    lines = [
        "Ignition = greedy id accuracy of the TTT start (after the catalyst) − that of the `none` base, on the same "
        "items, before TTT. A regime ignites when its ignition is above 0 (`p > 0` < 0.05) and does not ignite "
        f"when it is below the margin δ = {report.rule.ignition_margin} (`p < δ` < 0.05); otherwise it is "
        "inconclusive. Both are one-sided t tests over units, BH-adjusted with every test of this report.",
        "",
        *images(["ignition_vs_budget", "ignition"], plots),
        *bullets(answer.ignition_findings(report)),
    ]
    probes_note = (
        "Probes of each catalyst checkpoint (means over replicates; docs/metrics.md): skill = greedy accuracy on "
        "held-out single-op items before (base) and after (start) the catalyst; latent = greedy accuracy on the id "
        "problems asked in the direct form the base learnt them in, where the task has one; format rate = id "
        "completions that parse with the expected steps; `X trace → trace / gold` = share of answers, written after "
        "a teacher-forced X trace, equal to that trace's own answer / to the gold answer."
    )
    if not varies_budget(report):
        axes = report.ignition_varying
        lines += [tables.ignition_table(report.ignition, axes), ""]
        if any(mean_probes(entry) for entry in report.ignition):
            lines += [probes_note, "", tables.probes_table(report.ignition, axes), ""]
        return Section("Ignition", lines)
    panels = {
        panel: [e for regime in sorted(curves) for e in curves[regime]]
        for panel, curves in budget_curves(report).items()
    }
    for panel, entries in panels.items():
        lines += [f"**{panel or 'Ignition by budget'}**", "", tables.ignition_table(entries, [], budget=True), ""]
    lines += [probes_note, ""]
    for panel, entries in panels.items():
        lines += [f"**Probes{f': {panel}' if panel else ''}**", "", tables.probes_table(entries, [], budget=True), ""]
    return Section("Ignition", lines)


def ttt_section(report: Report, plots: dict[str, str]) -> Section:
    judged = [g for g in report.ttt_groups if g.verdict != FLOOR]
    lines = [
        f"Gain = final − start greedy id accuracy. Stable: the gain's 90% interval lies within ±δ = "
        f"{report.rule.margin} (`p within ±δ` < 0.05) and nothing collapsed; unstable: it lies below −δ, or "
        "replicates collapse, spread or diverge. The full rule is in the "
        "[appendix](#appendix-how-this-report-was-made).",
        "",
        *images(["verdicts", "anchors", "gains"], plots),
        *bullets(answer.ttt_findings(report)),
    ]
    if judged:
        lines += [tables.ttt_table(judged, report.varying), ""]
    floor = answer.floor_findings(report)
    if floor:
        lines += ["Groups whose TTT start is at its floor get no stability verdict:", "", *bullets(floor)]
    return Section("TTT verdicts", lines)


def anchors_section(report: Report, plots: dict[str, str]) -> Section:
    anchors = sorted({str(g.key.get("anchor")) for g in report.ttt_groups}, key=anchor_order)
    return Section(
        "Anchors",
        [
            "Each anchor's verdict and gain per signal (anchors never pool: an anchor is an axis).",
            "",
            tables.anchor_table(report, anchors),
            "",
            *bullets(answer.anchor_findings(report)),
        ],
    )


def steps_section(report: Report, plots: dict[str, str]) -> Section:
    lines = images(["ttt_accuracy", "ttt_reward", "ttt_agreement"], plots)
    summary = answer.warning_summary(report)
    if summary:
        lines += [
            f"Early warning: {summary}. Lead = collapse step − warning step, known to the trajectory's resolution "
            "(`ttt.eval_every`). Cells that neither collapsed nor raised the warning are left out.",
            "",
            tables.warning_table(report) or "",
            "",
        ]
    return Section("TTT over steps", lines or ["No cell logged a TTT curve.", ""])


def accuracy_lines(report: Report, trained: list) -> list[str]:
    return [
        "Means over units; the interval is that of the final accuracy. `best @ step` is the trajectory peak and the "
        "median step it was reached at; every verdict uses the final checkpoint.",
        "",
        tables.accuracy_table(trained, report.varying),
        "",
        tables.stability_table(trained, report.varying),
        "",
    ]


def process_lines(report: Report, trained: list) -> list[str]:
    lines = [
        "Step validity before and after TTT, faithful (right answer, valid trace) and unfaithful (right answer, "
        "invalid trace) accuracy, information gain under the reader (`no trace`: the cells wrote none to score) "
        "and its item-level correlation with correctness (`IG–acc r`).",
        "",
        tables.process_table(trained, report.varying),
        "",
    ]
    calibration = report.calibration
    if calibration is None:
        return [*lines, "No cell recorded an IG calibration (IG disabled): IG is not read as information.", ""]
    verdict = (
        "Calibration holds: for every reader gold > 0 and gold > every other kind; IG is interpretable."
        if calibration.holds()
        else "Calibration FAILS: IG is not interpretable for this study, and the answer does not use it."
    )
    return [
        *lines,
        "IG calibration: ig/total of each kind of trace of `heldout` items under each base's reader.",
        "",
        tables.calibration_table(calibration),
        "",
        verdict,
        "",
    ]


def detail_sections(report: Report) -> list[Section]:
    """Shifts, TTT diagnostics, the starts without TTT and the variance split: the reference tables."""
    axes, finished = report.varying, [g for g in ordered(report.groups) if g.trained]
    without = [g for g in finished if not g.has_ttt]
    out = [Section("Shift splits", [tables.shift_table(finished, axes, report.results), ""])] if finished else []
    diagnostics = tables.diagnostics_table(report.ttt_groups, axes)
    if diagnostics:
        means = "Means over logged steps, then over replicates; gold-reading ones are computed outside the signal."
        out.append(Section("TTT diagnostics", [means, "", diagnostics, ""]))
    if without:
        out.append(Section("Without TTT", [tables.start_table(without, axes), ""]))
    variance = tables.variance_table(finished, axes)
    if variance:
        out.append(Section("Variance: base-to-base vs cell-to-cell", [variance, ""]))
    return out


def markdown(report: Report, plots: dict[str, str], directory: Path) -> str:
    """The whole page; `plots` maps each drawn plot's name to its image source (file name or data URI)."""
    body = sections(report, plots, directory)
    contents = " · ".join(f"[{s.title}](#{slug(s.title)})" for s in body)
    lines = [f"# {report.sweep}: catalyst-ttt report", ""]
    if report.cells.description:
        lines += [report.cells.description, ""]
    lines += ["## The answer", "", *bullets(answer_lines(report)), f"**Contents:** {contents}", ""]
    for section in body:
        lines += [f"## {section.title}", "", *section.lines]
    return "\n".join(lines).rstrip("\n") + "\n"


def to_html(report: Report, markdown_text: str) -> str:
    """A self-contained page: the Markdown rendered (raw HTML escaped), headings with GitHub's anchors and
    verdict cells coloured."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    body = re.sub(
        r"<h([1-3])>(.*?)</h\1>",
        lambda m: f'<h{m[1]} id="{slug(html.unescape(re.sub("<[^>]+>", "", m[2])))}">{m[2]}</h{m[1]}>',
        body,
    )
    verdicts = "|".join(re.escape(html.escape(v)) for v in sorted(VERDICT_CLASSES, key=len, reverse=True))
    body = re.sub(
        rf"<td( style=\"[^\"]*\")?>({verdicts})</td>",
        lambda m: f'<td{m[1] or ""} class="verdict {VERDICT_CLASSES[html.unescape(m[2])]}">{m[2]}</td>',
        body,
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(report.sweep)}: catalyst-ttt report</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


STYLE = (
    "body{font-family:system-ui,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;"
    "padding:0 16px;line-height:1.45;color:#1f1f1f}"
    "h1{font-size:1.75em;margin:0 0 .3em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}"
    "#the-answer+ul{font-size:1.07em;background:#f7f9fb;border-left:4px solid #4a6fa5;padding:.6em 1em .6em 2em}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}"
    "th,td{border:1px solid #d4d4d4;padding:3px 8px;vertical-align:top}th{background:#f2f2f2}"
    "td[style*=right]{font-variant-numeric:tabular-nums;white-space:nowrap}th{font-size:12px}"
    "img{max-width:100%;height:auto;display:block;margin:.8em 0 .2em}"
    "code{background:#f3f3f3;padding:0 3px;border-radius:3px;font-size:.92em}"
    ".verdict{font-weight:600;white-space:nowrap}.good{background:#dff0e0;color:#1b5e20}"
    ".bad{background:#fbe0e0;color:#a31515}.open{background:#fff3cd;color:#7a5600}"
    ".flat{background:#e4ebef;color:#37474f}.none{color:#6b6b6b}"
)


def write_report(report: Report, directory: Path) -> dict[str, Path]:
    """results.jsonl (unless the report was built from it), the plots, report.md and report.html; returns the
    plots drawn. Every file is made in a staging directory first and moved into place only when all of them
    exist, so a report that fails midway leaves the last one whole."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / RESULTS_FILE
    with tempfile.TemporaryDirectory(dir=directory, prefix=".report-") as name:
        staging = Path(name)
        if report.cells.source is None or report.cells.source.resolve() != data.resolve():
            write_file(report.cells, staging / RESULTS_FILE)
        drawn = draw(report, staging)
        files = {plot: path.name for plot, path in drawn.items()}
        embedded = {
            plot: f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" for plot, p in drawn.items()
        }
        (staging / REPORT_MD).write_text(markdown(report, files, directory))
        (staging / REPORT_HTML).write_text(to_html(report, markdown(report, embedded, directory)))
        for plot in PLOTS.keys() - drawn.keys():
            (directory / f"{plot}.png").unlink(missing_ok=True)  # left by an earlier report of this directory
        for path in staging.iterdir():
            os.replace(path, directory / path.name)
    return {plot: directory / path.name for plot, path in drawn.items()}
