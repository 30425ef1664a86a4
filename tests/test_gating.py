"""The floor gate: a TTT cell whose start does not beat its base is recorded and not trained, and a study run
with the gate reaches the same verdicts as the same study run without it."""

import pytest

from catalyst_ttt.metrics.aggregate import analyse, rule_of
from catalyst_ttt.results import read_store
from helpers.cells import run

# Strong enough that `correct` beats its base on some replicates and not on others; `answer_only` never.
IGNITING = [
    "task.length=2",
    "catalyst.n=64",
    "catalyst.steps=120",
    "catalyst.lr=3e-3",
    "signal=majority",
]


def _study(tiny, tmp_path, gate: bool) -> list[dict]:
    runs = tmp_path / f"gate-{gate}"
    for base_seed in range(3):
        for regime in ("correct", "answer_only"):
            run(tiny(*IGNITING, f"regime={regime}", f"base.seed={base_seed}", f"ttt.gate={gate}", runs=runs))
    return read_store(runs, "single").results


@pytest.mark.slow
def test_a_gated_study_reaches_the_ungated_verdicts(tiny, tmp_path):
    gated, ungated = _study(tiny, tmp_path, True), _study(tiny, tmp_path, False)
    assert {r["status"] for r in ungated} == {"done"}
    skipped = [r for r in gated if r["status"] == "gated"]
    assert skipped and all(r["gate"]["p"] >= 0.05 or r["axes"]["regime"] == "none" for r in skipped)
    assert all("metrics" not in r and "stab" not in r for r in skipped)  # never trained, never evaluated

    def verdicts(results):
        analysis = analyse(results, rule_of(results))
        return (
            {(g.key["regime"], g.key["signal"]): (g.verdict, len(g.trained)) for g in analysis.groups},
            {e.key["regime"]: e.verdict for e in analysis.ignition},
        )

    assert any(r["status"] == "done" for r in gated)  # both paths ran: some replicates trained, some did not
    assert verdicts(gated) == verdicts(ungated)
