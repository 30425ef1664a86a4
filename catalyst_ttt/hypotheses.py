"""Pre-registered hypotheses: a study file states each claim and the rule that decides it before its first
cell runs (`hypotheses:` in `sweeps/NAME.yaml`); the report scores each supported / refuted / inconclusive
from the verdicts of `metrics.aggregate` (docs/statistics.md, "Hypotheses").

    hypotheses:
      H1:
        claim: Catalysts that are not correct traces ignite a latent skill.
        rule: ignites                       # one of RULES
        where: {regime: [answer_only, swapped, illogical, corrupted]}
        per: latent                         # scored separately for each value of this axis
      H3:
        claim: A process- or prediction-grading signal keeps TTT stable where intrinsic ones do not.
        rule: rescues
        where: {signal: [process, verifree, predictive]}
        against: {signal: [majority, entropy, self_certainty]}

`where` and `against` select groups (or ignition entries) by their axes (`cttt list` names them: regime,
signal, anchor, catalyst_n, latent, ttt_steps, ...).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from catalyst_ttt.errors import UserError
from catalyst_ttt.hashing import config_hash
from catalyst_ttt.metrics.aggregate import (
    ALPHA,
    INCONCLUSIVE,
    Analysis,
    Group,
    Ignition,
    ignition_key,
)

SUPPORTED, REFUTED = "supported", "refuted"
RULES = {
    "ignites": "supported if an entry of `where` ignites; refuted if every one is shown not to ignite "
    "(its interval lies below the ignition margin); else inconclusive",
    "stable": "supported if every judged group of `where` is stable; refuted if one is unstable; else inconclusive",
    "rescues": "in each context where a group of `against` is unstable, is a group of `where` (same context) stable? "
    "supported if so somewhere; refuted if wherever `against` is unstable every `where` group is unstable too; "
    "inconclusive when no `against` group is unstable or the `where` groups are undecided",
    "trap": "supported if a group of `where` raises accuracy (gain above 0) while its step validity, or its "
    "information gain against no TTT, falls by more than trap_drop; refuted if groups raise accuracy and "
    "none shows a fall; inconclusive if no group raises accuracy",
}
KEYS = {"claim", "rule", "where", "against", "per"}


@dataclass
class Hypothesis:
    id: str
    claim: str
    rule: str
    where: dict[str, list]
    against: dict[str, list] = field(default_factory=dict)
    per: str | None = None


@dataclass
class Score:
    """One hypothesis scored for one value of its `per` axis (or for the whole study): a row of the report."""

    hypothesis: Hypothesis
    part: str | None  # the `per` value, or None
    verdict: str
    evidence: str

    @property
    def id(self) -> str:
        return self.hypothesis.id + (f" ({self.hypothesis.per}={self.part})" if self.part is not None else "")

    @property
    def claim(self) -> str:
        return " ".join(self.hypothesis.claim.split())

    @property
    def rule(self) -> str:
        return f"{self.hypothesis.rule}: {RULES[self.hypothesis.rule]}"


def parse(spec: dict | None, where: str) -> list[Hypothesis]:
    """The `hypotheses:` section of a study file, checked before any cell runs."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise UserError(f"{where}: 'hypotheses' must map ids (H1, H2, ...) to a claim and a rule")
    out = []
    for hid, body in spec.items():
        if not isinstance(body, dict) or set(body) - KEYS or not {"claim", "rule"} <= set(body):
            raise UserError(f"{where}: hypothesis {hid} needs 'claim' and 'rule' (keys: {', '.join(sorted(KEYS))})")
        if body["rule"] not in RULES:
            raise UserError(f"{where}: hypothesis {hid} has rule {body['rule']!r}; valid: {', '.join(RULES)}")
        selectors = {name: body.get(name) or {} for name in ("where", "against")}
        for name, selector in selectors.items():
            if not isinstance(selector, dict) or not all(isinstance(v, list) for v in selector.values()):
                raise UserError(f"{where}: hypothesis {hid}: '{name}' must map axes to lists of values")
        if body["rule"] == "rescues" and not selectors["against"]:
            raise UserError(f"{where}: hypothesis {hid}: rule rescues needs 'against'")
        out.append(Hypothesis(str(hid), str(body["claim"]), body["rule"], **selectors, per=body.get("per")))
    return out


def fingerprint(spec: dict | None) -> str | None:
    """A hash of the hypotheses as written: recorded at a sweep's first launch, compared at every report."""
    return config_hash(spec) if spec else None


def registered_scores(grid: dict | None, analysis: Analysis, ig_readable: bool) -> tuple[list[Score], str | None]:
    """The hypotheses the study registered at its first launch (recorded in grid.json by `cttt sweep`),
    scored; and a warning when the study file's hypotheses differ from them now."""
    grid = grid or {}
    registered = (grid.get("registered_hypotheses") or {}).get("hypotheses")
    current = grid.get("hypotheses")
    if not (registered or current):
        return [], None
    warning = None
    if registered and fingerprint(current) != fingerprint(registered):
        warning = (
            "the study file's hypotheses were edited after its first launch "
            f"(registered {fingerprint(registered)}, now {fingerprint(current) or 'none'}): "
            "the hypotheses registered before any cell ran are scored here"
        )
    return score(parse(registered or current, "the recorded grid"), analysis, ig_readable), warning


def score(hypotheses: list[Hypothesis], analysis: Analysis, ig_readable: bool = True) -> list[Score]:
    """Each hypothesis scored per value of its `per` axis; `ig_readable`: the IG calibration holds, so the
    accuracy trap may read information gain (docs/metrics.md)."""
    out = []
    for hypothesis in hypotheses:
        parts = sorted({str(_axis(h.key, hypothesis.per)) for h in _everything(analysis)}) if hypothesis.per else [None]
        for part in parts:
            rule = RULE_FUNCTIONS[hypothesis.rule]
            verdict, evidence = rule(hypothesis, analysis, part, ig_readable)
            out.append(Score(hypothesis, part, verdict, evidence))
    return out


def _everything(analysis: Analysis) -> list:
    return [*analysis.ignition, *analysis.groups]


def _axis(key: dict, axis: str | None):
    return key.get(axis) if axis else None


def _matches(key: dict, selector: dict[str, list], hypothesis: Hypothesis, part: str | None) -> bool:
    if hypothesis.per and str(key.get(hypothesis.per)) != part:
        return False
    return all(str(key.get(axis)) in {str(v) for v in values} for axis, values in selector.items())


def _name(holder: Group | Ignition) -> str:
    key = holder.key
    parts = [key.get("regime"), *(f"{a}={key[a]}" for a in ("catalyst_n", "signal", "anchor", "ttt_steps") if a in key)]
    return " ".join(str(p) for p in parts if p is not None)


def _estimate(holder: Group | Ignition) -> str:
    estimate = holder.estimate if isinstance(holder, Ignition) else holder.stats.get("gain")
    if estimate is None or not estimate.has_interval:
        return f"{_name(holder)}: {holder.verdict}"
    return f"{_name(holder)}: {estimate.mean:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}] {holder.verdict}"


def _ignites(hypothesis: Hypothesis, analysis: Analysis, part: str | None, ig_readable: bool) -> tuple[str, str]:
    entries = [e for e in analysis.ignition if _matches(e.key, hypothesis.where, hypothesis, part)]
    lit = [e for e in entries if e.ignites]
    if lit:
        best = max(lit, key=lambda e: e.estimate.mean)
        return SUPPORTED, f"{len(lit)} of {len(entries)} ignite; largest {_estimate(best)}"
    if entries and all(e.ignites is False for e in entries):
        top = max(entries, key=lambda e: e.estimate.high if e.estimate.has_interval else e.estimate.mean)
        return REFUTED, f"none of {len(entries)} ignites, each shown below the margin; highest {_estimate(top)}"
    undecided = [e for e in entries if e.ignites is None]
    return INCONCLUSIVE, f"{len(undecided)} of {len(entries)} undecided" + (
        f", e.g. {_estimate(undecided[0])}" if undecided else ""
    )


def _judged(groups: list[Group]) -> list[Group]:
    return [g for g in groups if g.has_verdict]


def _stable(hypothesis: Hypothesis, analysis: Analysis, part: str | None, ig_readable: bool) -> tuple[str, str]:
    groups = _judged([g for g in analysis.groups if _matches(g.key, hypothesis.where, hypothesis, part)])
    if not groups:
        return INCONCLUSIVE, "no group of `where` has a stability verdict (every start at its floor?)"
    unstable = [g for g in groups if g.stable is False]
    if unstable:
        return REFUTED, f"{len(unstable)} of {len(groups)} unstable, e.g. {_estimate(unstable[0])}"
    if all(g.stable for g in groups):
        return SUPPORTED, f"all {len(groups)} stable, e.g. {_estimate(groups[0])}"
    return INCONCLUSIVE, f"{sum(bool(g.stable) for g in groups)} of {len(groups)} stable, none unstable"


def _context(group: Group, hypothesis: Hypothesis) -> str:
    compared = set(hypothesis.where) | set(hypothesis.against)
    return repr({k: v for k, v in group.key.items() if k not in compared and k != "config"})


def _rescues(hypothesis: Hypothesis, analysis: Analysis, part: str | None, ig_readable: bool) -> tuple[str, str]:
    contexts: dict[str, dict[str, list[Group]]] = defaultdict(lambda: {"where": [], "against": []})
    for group in _judged(analysis.groups):
        for side in ("where", "against"):
            if _matches(group.key, getattr(hypothesis, side), hypothesis, part):
                contexts[_context(group, hypothesis)][side].append(group)
    failing = {c: sides for c, sides in contexts.items() if any(g.stable is False for g in sides["against"])}
    if not failing:
        return INCONCLUSIVE, "no `against` group is unstable: nothing to rescue"
    rescued = [(c, g) for c, sides in failing.items() for g in sides["where"] if g.stable]
    if rescued:
        return SUPPORTED, f"stable where `against` is unstable in {len({c for c, _ in rescued})} of {len(failing)} " + (
            f"context(s), e.g. {_estimate(rescued[0][1])}"
        )
    if all(sides["where"] and all(g.stable is False for g in sides["where"]) for sides in failing.values()):
        return REFUTED, f"in all {len(failing)} context(s) where `against` is unstable, `where` is unstable too"
    return INCONCLUSIVE, f"`where` undecided or absent in the {len(failing)} context(s) where `against` is unstable"


def _trap(hypothesis: Hypothesis, analysis: Analysis, part: str | None, ig_readable: bool) -> tuple[str, str]:
    rule = analysis.rule
    no_ttt = {repr(ignition_key(g.cells[0])): g for g in analysis.groups if not g.has_ttt and g.cells}
    rising, trapped = [], []
    for group in _judged([g for g in analysis.groups if _matches(g.key, hypothesis.where, hypothesis, part)]):
        if group.adjusted.get("above", 1.0) >= ALPHA:
            continue
        rising.append(group)
        validity_drop = group.mean("start_step_validity") - group.mean("step_validity")
        baseline = no_ttt.get(repr(ignition_key(group.cells[0])))
        ig_drop = baseline.mean("ig_total") - group.mean("ig_total") if baseline and ig_readable else float("nan")
        if validity_drop > rule.trap_drop or ig_drop > rule.trap_drop:
            trapped.append(f"{_estimate(group)} (step validity {-validity_drop:+.3f}, IG {-ig_drop:+.3f})")
    if trapped:
        return SUPPORTED, f"{len(trapped)} of {len(rising)} rising group(s): " + "; ".join(trapped[:2])
    if rising:
        return REFUTED, f"{len(rising)} group(s) raise accuracy, none with a fall in step validity or IG"
    return INCONCLUSIVE, "no group raises accuracy significantly"


RULE_FUNCTIONS = {"ignites": _ignites, "stable": _stable, "rescues": _rescues, "trap": _trap}
