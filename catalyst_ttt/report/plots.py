"""The report's pictures: the verdict matrices, ignition against the catalyst budget, forest plots of ignition
and of TTT gains, and TTT curves over steps. Each is sized for a 1,280-px page (small multiples wrap into
rows), has a title, axis labels and a legend outside the data, one distinct colour per series, and is not
drawn when it has nothing to show. PNGs carry no software or time stamp, so a report rebuilds byte for byte."""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from catalyst_ttt.metrics.aggregate import (  # noqa: E402
    DID_NOT_TRAIN,
    FLOOR,
    IGNITES,
    INCONCLUSIVE,
    NO_IGNITION,
    NO_REPLICATE,
    STABLE,
    TOO_FEW,
    UNSTABLE,
    Group,
)
from catalyst_ttt.metrics.statistics import Estimate  # noqa: E402
from catalyst_ttt.report.study import (  # noqa: E402
    BUDGET_AXIS,
    Report,
    anchor_order,
    budget_curves,
    context,
    place,
    signal_name,
    varies_budget,
)
from catalyst_ttt.tracking import STEP  # noqa: E402

DPI = 100
PAGE_WIDTH = 11.4  # inches: 1,140 px, the page's text column at 1,280 px
PANEL = (3.7, 2.7)  # one small multiple, inches
MAX_COLUMNS = 3
MIN_WIDTH = 8.5  # inches: room for a title and a legend beside one or two panels
MIN_FOREST_HEIGHT = 3.0  # inches: a forest of one or two rows stays legible on a page (not a 4:1 strip)
DODGE = 0.04  # relative x offset between curves of a log-scaled budget axis
VERDICT_COLOURS = {
    STABLE: "#2e7d32",
    UNSTABLE: "#c62828",
    INCONCLUSIVE: "#f2a900",
    DID_NOT_TRAIN: "#6d8ea0",
    NO_REPLICATE: "#8d8d8d",
    TOO_FEW: "#b3b3b3",
    FLOOR: "#d0d0d0",
    IGNITES: "#2e7d32",
    NO_IGNITION: "#546e7a",
}
DARK = (STABLE, UNSTABLE, DID_NOT_TRAIN, NO_REPLICATE, IGNITES, NO_IGNITION)  # white text on these
SHORT = {FLOOR: "floor", TOO_FEW: "n<3", NO_REPLICATE: "failed"}  # matrix cells without a gain to show
INTERVAL = "90% t interval over units"


def palette(n: int) -> list:
    """n distinct colours: tab10, then tab20 (its dark shades first), then evenly spaced along turbo."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


def panels(count: int, size: tuple[float, float] = PANEL, sharey: bool = True):
    """A figure of `count` small multiples wrapped into rows of at most MAX_COLUMNS; unused axes hidden."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    width = min(PAGE_WIDTH, max(MIN_WIDTH, size[0] * columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(width, size[1] * rows + 0.9), squeeze=False, sharey=sharey, layout="constrained"
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def legend_below(fig, handles: list, labels: list[str], title: str | None = None) -> None:
    """The legend under the panels, in as many columns as fit: it never covers data."""
    columns = max(1, min(len(labels), int(fig.get_figwidth() // 2.2)))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, title=title, fontsize=9, frameon=False)


def save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, metadata={"Software": None})  # no version stamp: the same data, the same bytes
    plt.close(fig)
    tmp.replace(path)


def _errors(estimates: list[Estimate]) -> np.ndarray:
    """Asymmetric error bars from intervals; none where there is no interval."""
    return np.array(
        [
            [e.mean - e.low if e.has_interval else 0.0 for e in estimates],
            [e.high - e.mean if e.has_interval else 0.0 for e in estimates],
        ]
    )


def _verdict_legend(fig, verdicts: list[str]) -> None:
    present = [v for v in VERDICT_COLOURS if v in verdicts]
    legend_below(fig, [Patch(color=VERDICT_COLOURS[v]) for v in present], present, title="verdict")


# -- verdict matrices -------------------------------------------------------------------------


def verdict_matrix(
    groups: list[Group],
    row: Callable[[Group], str],
    column: Callable[[Group], str],
    facet: Callable[[Group], str],
    column_order: Callable[[str], tuple] = lambda _: (),
):
    """Facets of a row × column grid of groups, each cell coloured by its verdict and labelled by its gain; a
    facet whose every group is at its floor is left out (the text says which)."""
    facets: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        facets[facet(group)].append(group)
    facets = {title: members for title, members in facets.items() if any(g.verdict != FLOOR for g in members)}
    groups = [g for members in facets.values() for g in members]
    rows = list(dict.fromkeys(row(g) for g in groups))
    columns = sorted(dict.fromkeys(column(g) for g in groups), key=column_order)  # a stable sort: else as grouped
    size = (1.0 * len(columns) + 1.6, 0.5 * len(rows) + 1.2)
    fig, axes = panels(len(facets), size, sharey=False)
    for ax, (title, members) in zip(axes, facets.items()):
        image = np.ones((len(rows), len(columns), 3))
        for group in members:
            i, j = rows.index(row(group)), columns.index(column(group))
            image[i, j] = to_rgb(VERDICT_COLOURS.get(group.verdict, "#ffffff"))
            gain = group.mean("gain") if group.trained else math.nan
            text = SHORT.get(group.verdict, "–") if math.isnan(gain) else f"{gain:+.2f}"
            ink = "white" if group.verdict in DARK else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=ink)
        ax.imshow(image, aspect="auto")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=9)
        ax.set_yticks(range(len(rows)), rows, fontsize=9)
        ax.set_xticks(np.arange(len(columns) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        ax.set_title(title, fontsize=10)
    _verdict_legend(fig, [g.verdict for g in groups])
    return fig, axes


def draw_verdicts(report: Report, path: Path) -> bool:
    """Regime × signal: each TTT group's verdict (colour) and mean gain (text); one facet per other context."""
    groups = [g for g in report.ttt_groups if g.key["regime"] != "none"]
    if report.anchors_vary or not any(g.has_verdict for g in groups):
        return False  # the anchor matrix shows it, or no group has a verdict to show
    axes_ = report.varying
    fig, axes = verdict_matrix(groups, lambda g: g.key["regime"], signal_name, lambda g: context(g.key, axes_))
    for ax in axes:
        ax.set_xlabel("TTT signal")
        ax.set_ylabel("catalyst regime")
    fig.suptitle("TTT verdict (colour) and mean gain in id accuracy (text), per regime and signal")
    save(fig, path)
    return True


def _anchor(group: Group) -> str:
    return str(group.key.get("anchor"))


def draw_anchors(report: Report, path: Path) -> bool:
    """Signal × anchor: which anchor keeps which signal stable; one facet per regime and other context."""
    groups = report.ttt_groups
    if not report.anchors_vary or not any(g.has_verdict for g in groups):
        return False
    axes_ = [axis for axis in report.varying if axis != "anchor"]
    fig, axes = verdict_matrix(groups, signal_name, _anchor, lambda g: place(g, axes_), anchor_order)
    for ax in axes:
        ax.set_xlabel("anchor (ttt.anchor)")
        ax.set_ylabel("TTT signal")
    fig.suptitle("TTT verdict (colour) and mean gain (text), per signal and anchor")
    save(fig, path)
    return True


# -- forest plots -------------------------------------------------------------------------------


def forest(rows: list[tuple[str, Estimate, str]], title: str, xlabel: str, margin: tuple[float, float], path: Path):
    """One row per (label, estimate, verdict): the mean and its interval, coloured by verdict; the band
    between `margin` is shaded (the equivalence or no-ignition margin)."""
    height = max(0.32 * len(rows) + 1.6, MIN_FOREST_HEIGHT)
    fig, ax = plt.subplots(figsize=(MIN_WIDTH, height), layout="constrained")
    y = np.arange(len(rows))[::-1]
    for position, (_, estimate, verdict) in zip(y, rows):
        colour = VERDICT_COLOURS.get(verdict, "#000000")
        ax.errorbar(estimate.mean, position, xerr=_errors([estimate]), fmt="o", color=colour, capsize=3)
    ax.axvspan(*margin, color="#000000", alpha=0.07, linewidth=0)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(y, [label for label, _, _ in rows], fontsize=9)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    _verdict_legend(fig, [verdict for _, _, verdict in rows])
    save(fig, path)


def draw_ignition(report: Report, path: Path) -> bool:
    """Ignition per regime (and context) when the budget is fixed."""
    rows = [(place(e, report.ignition_varying).replace("`", ""), e.estimate, e.verdict) for e in report.ignition]
    rows = [r for r in rows if not math.isnan(r[1].mean)]
    if not rows or varies_budget(report):
        return False
    margin = (0.0, report.rule.ignition_margin)
    forest(rows, f"Ignition before TTT ({INTERVAL})", "start − none base, id greedy accuracy", margin, path)
    return True


def draw_gains(report: Report, path: Path) -> bool:
    """The TTT gain of every group that trained, with its interval, against the equivalence margin ±δ."""
    rows = [
        (f"{place(g, report.varying)} × {signal_name(g)}".replace("`", ""), g.stats["gain"], g.verdict)
        for g in report.ttt_groups
        if g.trained and not math.isnan(g.mean("gain"))
    ]
    if not rows:
        return False
    delta = report.rule.margin
    title = f"TTT gain per group ({INTERVAL}; shaded: ±δ = {delta})"
    forest(rows, title, "final − start, id greedy accuracy", (-delta, delta), path)
    return True


# -- ignition against the catalyst budget --------------------------------------------------------


def draw_ignition_vs_budget(report: Report, path: Path) -> bool:
    if not varies_budget(report):
        return False
    curves = budget_curves(report)
    regimes = sorted({regime for panel in curves.values() for regime in panel})
    colours = dict(zip(regimes, palette(len(regimes))))
    fig, axes = panels(len(curves), (5.0, 3.4))
    for ax, (panel, by_regime) in zip(axes, curves.items()):
        budgets = sorted({e.key[BUDGET_AXIS] for entries in by_regime.values() for e in entries})
        for rank, (regime, entries) in enumerate(sorted(by_regime.items())):
            # curves at the same value would hide each other: each regime's points sit a little apart on x
            shift = 1 + DODGE * (rank - (len(by_regime) - 1) / 2)
            ns, estimates = [e.key[BUDGET_AXIS] * shift for e in entries], [e.estimate for e in entries]
            means, colour = [e.mean for e in estimates], colours[regime]
            ax.errorbar(ns, means, yerr=_errors(estimates), marker="o", capsize=3, color=colour)
            lit = [(n, e.estimate.mean) for n, e in zip(ns, entries) if e.ignites]
            if lit:
                ax.plot(*zip(*lit), marker="*", markersize=14, linestyle="none", color=colours[regime])
        ax.axhline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(n) for n in budgets])
        ax.minorticks_off()
        ax.set_title(panel or "ignition", fontsize=10)
        ax.set_xlabel("catalyst.n (rows)")
        ax.set_ylabel("ignition (id accuracy)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[r], marker="o") for r in regimes]
    legend_below(fig, handles, regimes, title="regime (★ ignites)")
    fig.suptitle(f"Ignition vs catalyst budget: start − none base before TTT ({INTERVAL})")
    save(fig, path)
    return True


# -- TTT over steps -------------------------------------------------------------------------------

# metric -> (what a cell's series is read from, y label)
CURVES = {
    "accuracy": ("trajectory", "id accuracy (trajectory)"),
    "reward": ("ttt/reward", "mean reward"),
    "agreement": ("ttrl/majority_ratio", "majority share"),
}


def series(cell: dict, metric: str) -> tuple[list[float], list[float]]:
    """A cell's (steps, values) for a metric: trajectory accuracy, or a key of the per-step TTT log."""
    source = CURVES[metric][0]
    if source == "trajectory":
        rows = cell.get("trajectory") or []
        return [r["step"] for r in rows], [r["id"]["acc"] for r in rows]
    rows = [r for r in cell.get("ttt_log") or [] if r.get(source) is not None]
    return [r[STEP] for r in rows], [r[source] for r in rows]


def draw_curves(report: Report, path: Path, metric: str) -> bool:
    """One panel per regime (and context), one line per signal: the mean over replicates, ±1 sd band."""
    data: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for group in report.ttt_groups:
        for cell in group.trained:
            steps, values = series(cell, metric)
            if len(steps) > 1:
                data[place(group, report.varying).replace("`", "")][signal_name(group)].append((steps, values))
    if not data:
        return False
    signals = list(dict.fromkeys(s for by_signal in data.values() for s in by_signal))
    colours = dict(zip(signals, palette(len(signals))))
    fig, axes = panels(len(data))
    for ax, (title, by_signal) in zip(axes, data.items()):
        for signal, runs in by_signal.items():
            steps = sorted({s for run_steps, _ in runs for s in run_steps})
            at = [[dict(zip(*run)).get(step) for run in runs] for step in steps]
            at = [[v for v in values if v is not None] for values in at]
            mean = np.array([np.mean(v) for v in at])
            spread = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in at])
            ax.plot(steps, mean, color=colours[signal], linewidth=1.6)
            ax.fill_between(steps, mean - spread, mean + spread, color=colours[signal], alpha=0.15, linewidth=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("TTT step")
        ax.set_ylabel(CURVES[metric][1], fontsize=9)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[s], linewidth=2) for s in signals]
    legend_below(fig, handles, signals, title="signal")
    fig.suptitle(f"TTT {metric} over steps, per group (mean over replicates; band ±1 sd)")
    save(fig, path)
    return True


# name -> how to draw it; the page places each by name, and says what it shows.
PLOTS: dict[str, Callable[[Report, Path], bool]] = {
    "ignition_vs_budget": draw_ignition_vs_budget,
    "ignition": draw_ignition,
    "verdicts": draw_verdicts,
    "anchors": draw_anchors,
    "gains": draw_gains,
    **{f"ttt_{metric}": partial(draw_curves, metric=metric) for metric in CURVES},
}


def draw(report: Report, directory: Path) -> dict[str, Path]:
    """Every plot with something to show, as directory/NAME.png; a plot with nothing to show makes no file."""
    drawn = {}
    for name, draw_one in PLOTS.items():
        path = directory / f"{name}.png"
        if draw_one(report, path):
            drawn[name] = path
    return drawn
