"""The answer a report opens with: one headline line per finding, in plain words, and the findings below it
with their evidence (intervals, adjusted p-values, units and scope). Words only: nothing here draws."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

from catalyst_ttt.metrics.aggregate import (
    DID_NOT_TRAIN,
    FINISHED,
    FLOOR,
    GATED,
    INCONCLUSIVE,
    NO_IGNITION,
    NO_REPLICATE,
    STABLE,
    TOO_FEW,
    UNSTABLE,
    Group,
    Ignition,
    ignition_key,
)
from catalyst_ttt.metrics.statistics import ALPHA, POWER, format_p
from catalyst_ttt.report.study import (
    BUDGET_AXIS,
    Report,
    anchor_order,
    budget_curves,
    by_place,
    context,
    detectable,
    mean_probes,
    number,
    place,
    signal_name,
    varies_budget,
    with_interval,
)
from catalyst_ttt.schema import ProbeReading

# How the headline names the groups of each verdict, in the order it lists them.
VERDICT_WORDS = {
    STABLE: "stable",
    UNSTABLE: "unstable",
    INCONCLUSIVE: "inconclusive",
    DID_NOT_TRAIN: "did not train",
    TOO_FEW: "too few units",
    NO_REPLICATE: "no finished replicate",
    FLOOR: "at its floor",
}


def names(items: list[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


def headline(report: Report) -> list[str]:
    """One line per finding, most important first; each is said with its evidence further down."""
    lines = ignition_headline(report) + ttt_headline(report) + anchors_headline(report)
    lines += trap_headline(report) + warning_headline(report) + calibration_headline(report)
    lines += unfinished_headline(report) + detectable_headline(report)
    return lines or ["No finished cells to answer from."]


# -- ignition -------------------------------------------------------------------------------


def ignition_headline(report: Report) -> list[str]:
    if varies_budget(report):
        return [budget_headline(panel, regimes) for panel, regimes in budget_curves(report).items()]
    by_context: dict[str, list[Ignition]] = {}
    for entry in report.ignition:
        by_context.setdefault(context(entry.key, report.ignition_varying), []).append(entry)
    lines = []
    for where, entries in by_context.items():
        lit = [f"`{e.key['regime']}` ({number(e.estimate.mean, signed=True)})" for e in entries if e.ignites]
        dark = [e.key["regime"] for e in entries if e.verdict == NO_IGNITION]
        parts = [f"{' and '.join(lit)} ignite{'s' if len(lit) == 1 else ''} the latent skill"] if lit else []
        if dark:
            verb = f"{'does' if len(dark) == 1 else 'do'} not" + ("" if lit else " ignite the latent skill")
            parts.append(f"{names(dark)} {verb}")
        parts += [
            f"{names([e.key['regime'] for e in entries if e.verdict == verdict])}: {VERDICT_WORDS[verdict]}"
            for verdict in (INCONCLUSIVE, TOO_FEW)
            if any(e.verdict == verdict for e in entries)
        ]
        gained = " (id accuracy over the base)" if lit else ""
        lines.append(f"Before TTT{f' ({where})' if where else ''}{gained}: " + "; ".join(parts) + ".")
    return lines


def budget_pattern(entries: list[Ignition]) -> str:
    """From which catalyst.n a regime ignites, in words (entries by increasing n)."""
    lit = [e.key[BUDGET_AXIS] for e in entries if e.ignites]
    largest = entries[-1].key[BUDGET_AXIS]
    if all(e.verdict == TOO_FEW for e in entries):
        return "too few units to tell"
    if not lit:
        open_ = [str(e.key[BUDGET_AXIS]) for e in entries if e.verdict != NO_IGNITION]
        return f"at no budget up to n={largest}" + (f" (inconclusive at n={', '.join(open_)})" if open_ else "")
    if all(e.ignites for e in entries if e.key[BUDGET_AXIS] >= lit[0]):
        return f"from n={lit[0]} on"
    return f"at n={', '.join(map(str, lit))} only"


def budget_headline(panel: str, regimes: dict[str, list[Ignition]]) -> str:
    """Regimes that ignite at the smallest budget first; regimes with the same pattern named together."""

    def first_lit(entries: list[Ignition]) -> float:
        return next((e.key[BUDGET_AXIS] for e in entries if e.ignites), math.inf)

    patterns: dict[str, list[str]] = {}
    for regime, entries in sorted(regimes.items(), key=lambda item: (first_lit(item[1]), item[0])):
        patterns.setdefault(budget_pattern(entries), []).append(regime)
    parts = [f"{names(regimes_)} {pattern}" for pattern, regimes_ in patterns.items()]
    return f"Ignites by catalyst budget{f' ({panel})' if panel else ''}: " + "; ".join(parts) + "."


def ignition_findings(report: Report) -> list[str]:
    if varies_budget(report):
        return budget_findings(report)
    return [
        f"{place(e, report.ignition_varying)} {e.verdict}: ignition {with_interval(e.estimate, signed=True)} "
        f"over the `none` base before TTT ({e.describe()})."
        for e in report.ignition
    ]


def budget_findings(report: Report) -> list[str]:
    """Per panel and regime: whether and from which n it ignites, and what the probes show there."""
    out = []
    for panel, regimes in budget_curves(report).items():
        where = f" ({panel})" if panel else ""
        for regime, entries in sorted(regimes.items()):
            decisive = next((e for e in entries if e.ignites), entries[-1])
            largest = max(entries, key=lambda e: e.estimate.mean)
            out.append(
                f"`{regime}`{where} ignites {budget_pattern(entries)}: at n={decisive.key[BUDGET_AXIS]} ignition "
                f"{with_interval(decisive.estimate, signed=True)} ({decisive.describe()}); largest "
                f"{number(largest.estimate.mean, signed=True)} at n={largest.key[BUDGET_AXIS]}. Probes at "
                f"n={decisive.key[BUDGET_AXIS]}: {why(mean_probes(decisive))}."
            )
    return out


def why(probes: dict[str, float]) -> str:
    """What the probes of a catalyst checkpoint say, in words (docs/metrics.md)."""
    if not probes:
        return "none recorded"
    reading = ProbeReading()
    parts = []
    if "skill/base" in probes and "skill/start" in probes:
        kept = probes["skill/start"] >= probes["skill/base"] - reading.skill_loss
        parts.append(
            f"atomic skill {probes['skill/base']:.2f} → {probes['skill/start']:.2f} "
            f"({'kept' if kept else 'overwritten by the catalyst'})"
        )
    if "format/start" in probes:
        writes = probes["format/start"] >= reading.format_floor
        parts.append(f"format rate {probes['format/start']:.2f}{'' if writes else ' (it mostly writes no trace)'}")
    follows = {
        name.split("/")[1]: share
        for name, share in sorted(probes.items())
        if name.startswith("trace/") and name.endswith("/follows_trace")
    }
    if follows:
        shares = ", ".join(f"{kind} {share:.2f}" for kind, share in follows.items())
        reads = "it reads its trace" if max(follows.values()) >= reading.reads_trace else "it does not read its trace"
        parts.append(f"after a teacher-forced trace it writes that trace's answer ({shares}): {reads}")
    if "trace/donor/gold_answer" in probes:
        parts.append(f"after a donor trace it writes the gold answer {probes['trace/donor/gold_answer']:.2f}")
    return "; ".join(parts)


# -- test-time training ---------------------------------------------------------------------


def ttt_headline(report: Report) -> list[str]:
    lines, floor_places = [], []
    for where, members in by_place(report.ttt_groups, report.varying).items():
        if all(g.verdict == FLOOR for g in members):
            if members[0].key["regime"] != "none":  # `none` is the floor itself: nothing to say
                floor_places.append(where)
            continue
        parts = [
            f"{words} under {', '.join(f'`{signal_name(g)}`' for g in members if g.verdict == verdict)}"
            for verdict, words in VERDICT_WORDS.items()
            if any(g.verdict == verdict for g in members)
        ]
        lines.append(f"TTT on {where}: " + "; ".join(parts) + ".")
    if floor_places:
        lines.append(f"No stability verdict on {', '.join(floor_places)}: TTT starts at the floor (the base).")
    return lines


def ttt_findings(report: Report) -> list[str]:
    """One line per group TTT is judged on (or could not be): its verdict and why."""
    return [
        f"{place(g, report.varying)} × `{signal_name(g)}`: {g.verdict} — "
        + "; ".join(g.reasons + g.flags or ["no replicate finished"])
        + "."
        for g in report.ttt_groups
        if g.verdict != FLOOR
    ]


def floor_findings(report: Report) -> list[str]:
    """The groups at their floor, one line per place (their reasons are the place's starts, shared)."""
    out = []
    for where, members in by_place([g for g in report.ttt_groups if g.verdict == FLOOR], report.varying).items():
        reasons = sorted({"; ".join(g.reasons) for g in members})
        signals = ", ".join(f"`{signal_name(g)}`" for g in members)
        out.append(f"{where} × {signals}: n/a (floor) — {' / '.join(reasons)}.")
    return out


def anchors_headline(report: Report) -> list[str]:
    if not report.anchors_vary:
        return []
    tally = []
    for anchor in sorted({str(g.key.get("anchor")) for g in report.ttt_groups}, key=anchor_order):
        judged = [g for g in report.ttt_groups if str(g.key.get("anchor")) == anchor and g.has_verdict]
        tally.append((sum(g.verdict == STABLE for g in judged), len(judged), anchor))
    parts = [f"`{anchor}` {stable} of {total}" for stable, total, anchor in sorted(tally, key=lambda t: -t[0])]
    return ["Groups kept stable, by anchor: " + "; ".join(parts) + "."]


def anchor_findings(report: Report) -> list[str]:
    """Per signal: which anchors keep it stable, which not, and which give no verdict."""
    rows: dict[str, list[Group]] = {}
    axes = [axis for axis in report.varying if axis != "anchor"]
    for group in report.ttt_groups:
        rows.setdefault(f"{place(group, axes)}, `{signal_name(group)}`", []).append(group)
    out = []
    for row, groups in rows.items():
        groups = sorted(groups, key=lambda g: anchor_order(str(g.key.get("anchor"))))
        parts = [
            f"{VERDICT_WORDS.get(verdict, verdict)} with "
            + ", ".join(f"`{g.key.get('anchor')}`" for g in groups if g.verdict == verdict)
            for verdict in dict.fromkeys(g.verdict for g in groups)
        ]
        out.append(f"On {row}: " + "; ".join(parts) + ".")
    return out


# -- the accuracy trap and the early warning ----------------------------------------------------


@dataclass(frozen=True)
class Trap:
    group: Group
    gain: float
    validity_change: float
    ig_change: float  # NaN where IG is not readable or has no no-TTT baseline


def traps(report: Report) -> list[Trap]:
    """Groups whose accuracy rose significantly during TTT while step validity fell from its start, or IG
    fell below the same start without TTT, by more than `trap_drop`."""
    baselines = {repr(ignition_key(g.cells[0])): g for g in report.groups if not g.has_ttt and g.cells}
    ig_readable = report.calibration is not None and report.calibration.holds()
    out = []
    for group in report.ttt_groups:
        if not group.adjusted.get("above", 1.0) < ALPHA:
            continue
        validity = group.mean("step_validity") - group.mean("start_step_validity")
        baseline = baselines.get(repr(ignition_key(group.cells[0])))
        ig = group.mean("ig_total") - baseline.mean("ig_total") if baseline and ig_readable else math.nan
        if -validity > report.rule.trap_drop or -ig > report.rule.trap_drop:
            out.append(Trap(group, group.mean("gain"), validity, ig))
    return out


def trap_headline(report: Report) -> list[str]:
    if not any(g.trained for g in report.ttt_groups):
        return []
    found = traps(report)
    if not found:
        return [
            "Accuracy trap: none — no group gained accuracy while step validity or IG fell by more than "
            f"{report.rule.trap_drop}."
        ]
    return ["Accuracy trap (accuracy up, process down): " + "; ".join(_trap(t, report) for t in found) + "."]


def _trap(trap: Trap, report: Report) -> str:
    ig = f", IG {number(trap.ig_change, signed=True)} vs no TTT" if not math.isnan(trap.ig_change) else ""
    return (
        f"{place(trap.group, report.varying)} × `{signal_name(trap.group)}` (accuracy "
        f"{number(trap.gain, signed=True)}, p_adj={format_p(trap.group.adjusted['above'])}; step validity "
        f"{number(trap.validity_change, signed=True)}{ig})"
    )


def warning_summary(report: Report) -> str | None:
    """How often the label-free predictor fired before a collapse, by how much, and without one."""
    cells = [c for g in report.ttt_groups for c in g.trained]
    collapsed = [c["stab"] for c in cells if c["stab"].get("stab/collapse_step") is not None]
    steady = [c["stab"] for c in cells if c["stab"].get("stab/collapse_step") is None]
    alarms = sum(s.get("stab/predictor_step") is not None for s in steady)
    if not collapsed and not alarms:
        return None
    leads = sorted(s["stab/warning_lead"] for s in collapsed if (s.get("stab/warning_lead") or 0) > 0)
    lead = statistics.median(leads) if leads else None
    median = f" (median lead {lead:g} step{'' if lead == 1 else 's'})" if leads else ""
    return (
        f"fired before {len(leads)} of {len(collapsed)} collapses{median}, and in {alarms} of {len(steady)} cells "
        "that did not collapse (false alarms)"
    )


def warning_headline(report: Report) -> list[str]:
    summary = warning_summary(report)
    return [f"The label-free early warning {summary}."] if summary else []


def calibration_headline(report: Report) -> list[str]:
    if report.calibration is None or report.calibration.holds():
        return []
    return ["IG is not interpretable in this study: its calibration fails (gold traces do not beat every other kind)."]


def unfinished_headline(report: Report) -> list[str]:
    """Cells that did not finish, and cells stopped before TTT because their start was at its floor."""
    statuses = Counter(r["status"] for r in report.results)
    lines = []
    unfinished = {status: n for status, n in sorted(statuses.items()) if status not in FINISHED}
    if unfinished:
        counts = ", ".join(f"{n} {status}" for status, n in unfinished.items())
        lines.append(
            f"{sum(unfinished.values())} of {len(report.results)} cells did not finish ({counts}); every table "
            "flags their groups."
        )
    if statuses[GATED]:
        lines.append(f"{statuses[GATED]} cells stopped before TTT: their start was not above its floor (gated).")
    return lines


def detectable_headline(report: Report) -> list[str]:
    parts = [
        f"{d.what}: too few units to say"
        if d.effect is None
        else f"{d.what}: no spread between units"
        if d.sd == 0
        else f"{d.what} {number(d.effect)} (pooled sd {number(d.sd)}, {d.n} units)"
        for d in detectable(report)
    ]
    if not parts:
        return []
    return [
        f"Smallest true effect this design finds {POWER:.0%} of the time (one-sided, α={ALPHA}): "
        + "; ".join(parts)
        + "."
    ]
