"""`cttt report`: a sweep's results store as tables, plots, and an answer generated from them."""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from catalyst_ttt.config import StabilityConfig  # noqa: E402
from catalyst_ttt.errors import UserError  # noqa: E402
from catalyst_ttt.metrics.aggregate import Group, aggregate, rule_of, shift_splits  # noqa: E402
from catalyst_ttt.metrics.stability import describe_rule, mean_ci  # noqa: E402
from catalyst_ttt.results import TRAJECTORY, load_results, read_json, sweep_dir, write_atomic  # noqa: E402

IGNITION_MIN = 0.05  # a regime ignites when its mean ignition exceeds this and its CI excludes 0
TRAP_DROP = 0.05  # process validity or IG "fell" when lower than at the start by more than this
COLUMNS = ("final", "ignition", "drawdown", "collapse", "step_validity", "ig_total")


@dataclass
class Report:
    sweep: str
    results: list[dict]
    groups: list[Group]
    rule: StabilityConfig
    answer: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    directory: Path | None = None


def build_report(runs_dir: str | Path, sweep: str) -> Report:
    results = load_results(runs_dir, sweep)
    if not any(r["status"] == "done" for r in results):
        raise UserError(
            f"sweep {sweep!r} has no finished cells in {sweep_dir(runs_dir, sweep)}; run `cttt sweep {sweep}` first"
        )
    rule = rule_of(results)
    report = Report(sweep, results, aggregate(results, rule), rule)
    report.answer = the_answer(report.groups, rule)
    return report


def _fmt(stats: dict) -> str:
    if not stats or stats["n"] == 0 or math.isnan(stats["mean"]):
        return "–"
    return f"{stats['mean']:.3f} ± {stats['ci95']:.3f}"


def _verdict(group: Group) -> str:
    if group.stable is None:
        return "n/a: " + "; ".join(group.reasons)
    return "stable" if group.stable else "unstable: " + "; ".join(group.reasons)


def _seeds(group: Group) -> str:
    return f"n={len(group.cells)}"


# -- the answer ---------------------------------------------------------------------------


def the_answer(groups: list[Group], rule: StabilityConfig) -> list[str]:
    """Sentences generated from the group statistics; each names its numbers and seed count."""
    done = [g for g in groups if g.cells]
    sentences = _ignition_sentences(done) + _stability_sentences(done, rule) + _trap_sentences(done)
    return sentences or ["No finished cells to answer from."]


def _regime_ignition(groups: list[Group]) -> dict[str, dict]:
    """Ignition per regime, pooled over its cells' seeds (it is measured before TTT)."""
    per_seed: dict[str, dict] = defaultdict(dict)
    for group in groups:
        for cell in group.cells:
            per_seed[group.key["regime"]][cell["axes"]["seed"]] = cell["ignition"]
    return {regime: mean_ci(list(seeds.values())) for regime, seeds in per_seed.items()}


def _ignition_sentences(groups: list[Group]) -> list[str]:
    ignition = _regime_ignition(groups)
    reference = ignition.get("correct")
    out = []
    for regime, stats in sorted(ignition.items()):
        if regime == "none":
            continue
        ignites = stats["mean"] > IGNITION_MIN and stats["mean"] - stats["ci95"] > 0
        verb = "ignites" if ignites else "does not ignite"
        text = (
            f"Regime `{regime}` {verb}: id greedy accuracy {stats['mean']:+.3f} ± {stats['ci95']:.3f} "
            f"over `none` before TTT ({stats['n']} seed(s))"
        )
        if reference and regime != "correct" and abs(reference["mean"]) > 1e-9:
            text += f", {100 * stats['mean'] / reference['mean']:.0f}% of `correct`'s {reference['mean']:+.3f}"
        out.append(text + ".")
    return out


def _signal_name(group: Group) -> str:
    return f"`{group.key['signal']}`" + (" (uses labels)" if group.uses_labels else "")


def _stability_sentences(groups: list[Group], rule: StabilityConfig) -> list[str]:
    by_regime: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        if group.key["signal"] != "none":
            by_regime[group.key["regime"]].append(group)
    out = []
    for regime, members in sorted(by_regime.items()):
        stable = [g for g in members if g.stable]
        unstable = [g for g in members if g.stable is False]
        parts = []
        if stable:
            parts.append(
                "stable under "
                + ", ".join(
                    f"{_signal_name(g)} (start {g.mean('start'):.3f} → final {g.mean('final'):.3f}, "
                    f"drawdown {g.mean('drawdown'):.3f}, {_seeds(g)})"
                    for g in stable
                )
            )
        if unstable:
            parts.append(
                "unstable under "
                + ", ".join(f"{_signal_name(g)} ({'; '.join(g.reasons)}, {_seeds(g)})" for g in unstable)
            )
        out.append(f"On `{regime}`, TTT is " + "; ".join(parts) + ".")
    if by_regime:
        out.append(f"Rule: {describe_rule(rule)}.")
    return out


def _trap_sentences(groups: list[Group]) -> list[str]:
    """Accuracy rose during TTT while step validity (or IG against the no-TTT cell) fell."""
    no_ttt = {g.key["regime"]: g for g in groups if g.key["signal"] == "none"}
    traps = []
    for group in groups:
        if group.key["signal"] == "none":
            continue
        gain = group.mean("final") - group.mean("start")
        validity_drop = group.mean("start_step_validity") - group.mean("step_validity")
        baseline = no_ttt.get(group.key["regime"])
        ig_drop = baseline.mean("ig_total") - group.mean("ig_total") if baseline else float("nan")
        if gain > TRAP_DROP and (validity_drop > TRAP_DROP or ig_drop > TRAP_DROP):
            traps.append(
                f"{group.label} (accuracy {gain:+.3f}, step validity {-validity_drop:+.3f}"
                + (f", ig/total {-ig_drop:+.3f} vs no TTT" if not math.isnan(ig_drop) else "")
                + f", {_seeds(group)})"
            )
    if not traps:
        return [
            "No cell fell into the accuracy trap (accuracy up while step validity or information gain "
            f"fell by more than {TRAP_DROP})."
        ]
    return ["Accuracy trap — accuracy rose while the process got worse: " + "; ".join(traps) + "."]


# -- tables -------------------------------------------------------------------------------


def markdown_table(groups: list[Group]) -> str:
    header = "| regime | signal | seeds | " + " | ".join(COLUMNS) + " | verdict |"
    lines = [header, "|" + " --- |" * (len(COLUMNS) + 4)]
    for g in groups:
        signal = g.key["signal"] + (
            f" [ref={g.key['reference']}]" if g.key["signal"] in ("verifree", "predictive") else ""
        )
        signal += " †" if g.uses_labels else ""
        cells = [_fmt(g.stats.get(c, {})) for c in COLUMNS]
        lines.append(f"| {g.key['regime']} | {signal} | {len(g.cells)} | " + " | ".join(cells) + f" | {_verdict(g)} |")
    return "\n".join(lines)


def shift_table(report: Report) -> str:
    shifts = ["heldout", *shift_splits(report.results)]
    lines = ["| regime | signal | " + " | ".join(shifts) + " |", "|" + " --- |" * (len(shifts) + 2)]
    for g in report.groups:
        if g.cells:
            lines.append(
                f"| {g.key['regime']} | {g.key['signal']} | "
                + " | ".join(_fmt(g.stats.get(s, {})) for s in shifts)
                + " |"
            )
    return "\n".join(lines)


def summary_table(groups: list[Group], title: str) -> Table:
    table = Table(title=title)
    for column in ("regime", "signal", "seeds", *COLUMNS, "stable"):
        table.add_column(column)
    for g in groups:
        stable = "–" if g.stable is None else ("yes" if g.stable else "no")
        table.add_row(
            g.key["regime"],
            g.key["signal"] + (" †" if g.uses_labels else ""),
            str(len(g.cells)),
            *[_fmt(g.stats.get(c, {})) for c in COLUMNS],
            stable,
        )
    return table


# -- plots --------------------------------------------------------------------------------


def _trajectories(report: Report, runs_dir: Path) -> dict[str, dict[str, list]]:
    """regime -> signal -> [(steps, accuracies) per seed] from each cell's trajectory file."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for result in report.results:
        if result["status"] != "done":
            continue
        rows = read_json(sweep_dir(runs_dir, report.sweep) / result["cell"] / TRAJECTORY) or []
        if rows:
            out[result["axes"]["regime"]][result["axes"]["signal"]].append(
                ([r["step"] for r in rows], [r["id"]["acc"] for r in rows])
            )
    return out


def plot_trajectories(report: Report, runs_dir: Path, path: Path) -> None:
    data = _trajectories(report, runs_dir)
    regimes = sorted(data)
    fig, axes = plt.subplots(
        1, max(1, len(regimes)), figsize=(4.2 * max(1, len(regimes)), 3.8), squeeze=False, sharey=True
    )
    for ax, regime in zip(axes[0], regimes):
        for signal, runs in sorted(data[regime].items()):
            steps = sorted({s for run_steps, _ in runs for s in run_steps})
            series = [[dict(zip(s, a)).get(step) for s, a in runs] for step in steps]
            means = [
                sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals)) for vals in series
            ]
            spread = [mean_ci([v for v in vals if v is not None])["std"] for vals in series]
            (line,) = ax.plot(steps, means, marker="o", label=signal)
            ax.fill_between(
                steps,
                [m - s for m, s in zip(means, spread)],
                [m + s for m, s in zip(means, spread)],
                color=line.get_color(),
                alpha=0.2,
            )
        ax.set_title(f"regime: {regime}")
        ax.set_xlabel("TTT step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("id accuracy (greedy, trajectory subset)")
    axes[0][-1].legend(title="signal", fontsize=8)
    fig.suptitle("Accuracy during test-time training (band: ± 1 std over seeds)")
    _save(fig, path)


def plot_ignition_stability(report: Report, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for g in report.groups:
        if not g.cells or g.key["signal"] == "none":
            continue
        gain = mean_ci([c["metrics"]["id"]["acc/greedy"] - c["pre_ttt"]["acc/greedy"] for c in g.cells])
        ax.errorbar(
            g.mean("ignition"),
            gain["mean"],
            xerr=g.stats["ignition"]["ci95"],
            yerr=gain["ci95"],
            fmt="o" if g.stable else "x",
            capsize=3,
            label=g.label,
        )
    ax.axhline(-report.rule.max_drop, color="grey", linestyle="--", linewidth=1, label="stability bound")
    ax.set_xlabel("ignition: catalyst − none accuracy before TTT")
    ax.set_ylabel("TTT gain: final − start accuracy")
    ax.set_title("Ignition vs stability (o stable, x unstable; 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def plot_process_ig(report: Report, path: Path) -> None:
    groups = [g for g in report.groups if g.cells]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(groups) + 4), 4.6))
    labels = [g.label for g in groups]
    for ax, metric, title in ((axes[0], "step_validity", "process step validity"), (axes[1], "ig_total", "ig/total")):
        ax.bar(
            range(len(groups)),
            [g.mean(metric) for g in groups],
            yerr=[g.stats[metric]["ci95"] for g in groups],
            capsize=3,
            color="tab:blue",
        )
        for regime, style in (("correct", "--"), ("none", ":")):
            base = next((g for g in groups if g.key["regime"] == regime and g.key["signal"] == "none"), None)
            if base:
                ax.axhline(
                    base.mean(metric), linestyle=style, color="black", linewidth=1, label=f"{regime} without TTT"
                )
        ax.set_xticks(range(len(groups)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(title)
        ax.set_ylabel(title)
        ax.legend(fontsize=7)
    fig.suptitle("Process validity and information gain per cell (id split)")
    _save(fig, path)


def plot_shifts(report: Report, path: Path) -> None:
    groups = [g for g in report.groups if g.cells]
    splits = ["final", "heldout", *shift_splits(report.results)]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(groups) + 4), 4.6))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        ax.bar(
            [x + i * width for x in range(len(groups))],
            [g.mean(split) for g in groups],
            width,
            label="id" if split == "final" else split,
        )
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(groups))],
        [g.label for g in groups],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("greedy accuracy")
    ax.set_title("Accuracy under distribution shift, per cell")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# -- output -------------------------------------------------------------------------------


def write_report(report: Report, runs_dir: str | Path) -> Path:
    runs_dir = Path(runs_dir)
    directory = sweep_dir(runs_dir, report.sweep) / "report"
    directory.mkdir(parents=True, exist_ok=True)
    plots = {
        "trajectories": lambda p: plot_trajectories(report, runs_dir, p),
        "ignition_vs_stability": lambda p: plot_ignition_stability(report, p),
        "process_and_ig": lambda p: plot_process_ig(report, p),
        "shifts": lambda p: plot_shifts(report, p),
    }
    for name, draw in plots.items():
        report.plots[name] = directory / f"{name}.png"
        draw(report.plots[name])
    write_atomic(directory / "report.md", markdown(report, embed=False))
    write_atomic(directory / "report.html", to_html(report))
    report.directory = directory
    return directory


def markdown(report: Report, embed: bool) -> str:
    done = sum(r["status"] == "done" for r in report.results)
    seeds = sorted({r["axes"]["seed"] for r in report.results})
    lines = [
        f"# catalyst-ttt report: `{report.sweep}`",
        "",
        f"{done} of {len(report.results)} cells done; seeds {seeds}. Accuracy is greedy on the `id` split "
        "(the TTT prompts); ± is the half-width of a 95% t-interval over seeds. † = the signal reads gold "
        "labels (not a test-time method).",
        "",
        "## The answer",
        "",
        *[f"- {s}" for s in report.answer],
        "",
        "## Regimes × signals",
        "",
        markdown_table(report.groups),
        "",
        f"Stability rule: {describe_rule(report.rule)}.",
        "",
        "## Shift splits (greedy accuracy)",
        "",
        shift_table(report),
        "",
        "## Plots",
        "",
    ]
    for name, path in report.plots.items():
        src = f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" if embed else path.name
        lines += [f"![{name}]({src})", ""]
    return "\n".join(lines)


def to_html(report: Report) -> str:
    """A self-contained page: the Markdown's tables as HTML, plots embedded as data URIs."""
    body = []
    for block in markdown(report, embed=True).split("\n\n"):
        block = block.strip()
        if block.startswith("|"):
            rows = [r for r in block.splitlines() if not r.startswith("| ---") and not r.startswith("|---")]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
        elif block.startswith("!["):
            alt, src = block[2:].split("](", 1)
            body.append(f'<figure><img alt="{html.escape(alt)}" src="{src[:-1]}"></figure>')
        elif block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            body.append(f"<h{level}>{html.escape(block.lstrip('#').strip())}</h{level}>")
        elif block.startswith("- "):
            items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in block.splitlines())
            body.append(f"<ul>{items}</ul>")
        else:
            body.append(f"<p>{html.escape(block)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>cttt report {html.escape(report.sweep)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def log_to_wandb(report: Report) -> str | None:
    """One W&B run (job_type=report) with the tables and plots; returns the offline dir, if any."""
    import wandb

    from catalyst_ttt.tracking import Tracker

    config = report.results[0]["config"]["wandb"]
    tracker = Tracker(
        mode=config["mode"],
        project=config["project"],
        entity=config["entity"],
        group=report.sweep,
        job_type="report",
        name=f"report-{report.sweep}",
        config={"sweep": report.sweep},
        directory=report.directory,
    )
    try:
        rows = [
            {
                "regime": g.key["regime"],
                "signal": g.key["signal"],
                "seeds": len(g.cells),
                "uses_labels": g.uses_labels,
                **{c: g.stats[c]["mean"] if g.cells else None for c in COLUMNS},
                "verdict": _verdict(g),
            }
            for g in report.groups
        ]
        tracker.table("regimes_x_signals", rows)
        tracker.table("answer", [{"sentence": s} for s in report.answer])
        tracker.media({name: wandb.Image(str(path)) for name, path in report.plots.items()})
    finally:
        directory = tracker.finish()
    return directory
