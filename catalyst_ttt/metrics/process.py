"""Process metrics from the task's full step check (and the local one `process` rewards)."""

from __future__ import annotations

from catalyst_ttt.tasks.base import Parsed, Problem, Task


def process_item(task: Task, problem: Problem, parsed: Parsed, correct: bool) -> dict[str, float]:
    flags = task.step_validity(problem, parsed.steps)
    validity = sum(flags) / len(flags) if flags else 0.0
    trace_valid = bool(flags) and all(flags)
    local = task.step_validity(problem, parsed.steps, local=True)
    return {
        "process/step_validity": validity,
        "process/local_step_validity": sum(local) / len(local) if local else 0.0,
        "process/trace_valid": float(trace_valid),
        "process/unfaithful_correct": float(correct and not trace_valid),
        "process/faithful_acc": float(correct and trace_valid),
    }
