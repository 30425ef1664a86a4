"""The report as a W&B run (job_type=report): one row per group with its estimates, tests and verdict, the
answer, and the plots."""

from __future__ import annotations

from pathlib import Path

from catalyst_ttt.metrics.aggregate import Group
from catalyst_ttt.report.answer import headline
from catalyst_ttt.report.study import Report, ordered

WANDB_METRICS = ("start", "final", "best", "gain", "ignition", "drawdown", "collapse", "step_validity", "ig_total")


def wandb_row(group: Group) -> dict:
    """One group as numbers: each metric's mean and interval (None where there is none), the adjusted p of
    each test, the verdict and its reasons."""
    row = {axis: str(value) for axis, value in group.key.items()} | {
        "access": group.access,
        "replicates": len(group.cells),
        "unfinished": len(group.unfinished),
    }
    for name in WANDB_METRICS:
        estimate = group.stats.get(name)
        row |= {
            name: estimate.mean if estimate else None,
            f"{name}_low": estimate.low if estimate else None,
            f"{name}_high": estimate.high if estimate else None,
            f"{name}_units": estimate.n if estimate else None,
        }
    row |= {f"p_{test}": group.adjusted.get(test) for test in ("above", "within", "below")}
    return row | {"best_step": group.peak_step, "verdict": group.verdict, "reasons": "; ".join(group.reasons)}


def log_to_wandb(report: Report, plots: dict[str, Path], directory: Path) -> str | None:
    """One W&B run with the tables and plots; returns its offline directory, if any."""
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
        directory=directory,
    )
    try:
        tracker.table("regimes_x_signals", [wandb_row(g) for g in ordered(report.groups)])
        tracker.table("answer", [{"sentence": s} for s in headline(report)])
        tracker.media({name: wandb.Image(str(path)) for name, path in plots.items()})
    finally:
        offline = tracker.finish()
    return offline
