"""Answer votes: completions' answers grouped by equality, the majority and the distinct answers. The
signals that vote (majority, self_sft, ...) and the sample metrics (maj@k) count votes the same way here.
"""

from __future__ import annotations

import operator
from typing import Callable

from catalyst_ttt.tasks.base import Task


def votes_of(answers: list[str | None], equal: Callable[[str, str], bool] = operator.eq) -> list[list[str]]:
    """The answers grouped into votes: each answer joins the first earlier answer it equals."""
    votes: list[list[str]] = []
    for answer in answers:
        if answer is None:
            continue
        vote = next((v for v in votes if equal(answer, v[0])), None)
        if vote is None:
            votes.append([answer])
        else:
            vote.append(answer)
    return votes


def majority_answer(answers: list[str | None], equal: Callable[[str, str], bool] = operator.eq) -> str | None:
    """The most common answer under `equal`; None if there is none.

    A vote is named by its first answer; ties go to the vote whose first answer came first.
    """
    votes = votes_of(answers, equal)
    return max(votes, key=len)[0] if votes else None  # max keeps the first of equals


def distinct_answers(answers: list[str | None], task: Task) -> list[str]:
    """One answer per vote under the task's `answers_equal`, unanswered completions left out."""
    return [vote[0] for vote in votes_of(answers, task.answers_equal)]
