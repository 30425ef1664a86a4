"""What `cttt status` and `cttt report` print: the ignition and TTT verdicts as tables that fit 80 columns. A
column whose value is the same on every row moves into the title, groups at their floor collapse into one
line, and no value is ever cut (a long one wraps)."""

from __future__ import annotations

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from catalyst_ttt.metrics.aggregate import FLOOR
from catalyst_ttt.metrics.statistics import Estimate
from catalyst_ttt.report.answer import floor_findings
from catalyst_ttt.report.loading import Cells
from catalyst_ttt.report.study import Report, axis_value, build, interval, signal_name, units, value
from catalyst_ttt.schema import ACCESS_MARKS

SHORT_AXES = {"catalyst_n": "n", "catalyst_steps": "steps", "reference": "ref"}  # headers that would wrap
VERDICT_STYLES = {"stable": "green", "ignites": "green", "unstable": "red", "inconclusive": "yellow"}


def summary_of(sweep: str, results: list[dict]) -> list[RenderableType]:
    """`cttt status`: the verdicts of whatever the store holds so far."""
    return summary(build(Cells(sweep, "", results)))


def summary(report: Report) -> list[RenderableType]:
    out: list[RenderableType] = []
    if report.ignition:
        rows = [(_names(e.key, report.ignition_varying), e.estimate, e.verdict) for e in report.ignition]
        out += [Text(""), verdict_table("Ignition before TTT (start − none base, id accuracy)", rows, "ignition")]
    judged = [g for g in report.ttt_groups if g.verdict != FLOOR]
    if judged:
        rows = [
            (_names(g.key, report.varying) | {"signal": signal_name(g)}, g.stats.get("gain"), g.verdict) for g in judged
        ]
        out += [Text(""), verdict_table("TTT (gain = final − start id accuracy)", rows, "gain")]
    out += [Text(line.replace("`", ""), style="dim") for line in floor_findings(report)]
    if out:
        marks = ", ".join(f"{mark} {access}" for access, mark in ACCESS_MARKS.items())
        out.append(Text(f"90% t intervals over units ({marks}); docs/statistics.md", style="dim"))
    return out


def _names(key: dict, axes: list[str]) -> dict[str, str]:
    return {"regime": key["regime"], **{axis: axis_value(key, axis) for axis in axes}}


def verdict_table(title: str, rows: list[tuple[dict, Estimate | None, str]], measured: str) -> Table:
    """Name columns (constant ones go to the title), units, the estimate, its interval and the verdict."""
    names = list(rows[0][0])
    constant = [n for n in names if len({row[0][n] for row in rows}) == 1 and len(rows) > 1]
    shown = [n for n in names if n not in constant]
    if constant:
        title += " — " + ", ".join(f"{n}={rows[0][0][n]}" for n in constant)
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    for name in shown:  # names and numbers never break; the verdict wraps between words if it must
        table.add_column(SHORT_AXES.get(name, name), no_wrap=True)
    for name in ("units", measured, "90% interval"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("verdict", overflow="fold")
    signed = measured in ("ignition", "gain")
    for names_, estimate, verdict in rows:
        table.add_row(
            *(names_[n] for n in shown),
            units(estimate, short=True),
            value(estimate, signed),
            interval(estimate, signed),
            Text(verdict, style=VERDICT_STYLES.get(verdict, "")),
        )
    return table
