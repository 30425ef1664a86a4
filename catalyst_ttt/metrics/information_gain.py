"""Information gain of a reasoning trace under a fixed scorer (Wu et al., arXiv 2506.02126)."""

from __future__ import annotations

from catalyst_ttt.scoring import continuation_logprobs, sequence_perplexities
from catalyst_ttt.tasks.base import Task


def information_gain(
    task: Task,
    scorer,
    tokenizer,
    prompts: list[str],
    traces: list[tuple[str, ...]],
    answers: list[str],
    batch_size: int = 64,
) -> dict[str, float]:
    """Mean over items of ig/total, ig/per_step, ig/positive_frac and ig/wu_ppl.

    l_i = log p(answer | prompt, s_1..s_i) per answer token; total = l_n - l_0; per_step =
    mean(l_i - l_{i-1}) (0 for an empty trace). wu_ppl = (PPL_0 - PPL_n) / (n + 1), with perplexity
    over the whole "prompt + steps + answer" string, as Wu et al.'s code computes it.
    """

    def _prefix(prompt: str, steps: tuple[str, ...], i: int) -> str:
        return prompt + task.render(steps[:i], "")

    contexts, targets, texts, spans = [], [], [], []
    for prompt, steps, answer in zip(prompts, traces, answers):
        spans.append((len(contexts), len(steps)))
        for i in range(len(steps) + 1):
            contexts.append(_prefix(prompt, steps, i))
            targets.append(answer)
        texts += [_prefix(prompt, (), 0) + answer, _prefix(prompt, steps, len(steps)) + answer]
    lps = [
        lp / max(1, len(tokenizer(target, add_special_tokens=False)["input_ids"]))
        for lp, target in zip(continuation_logprobs(scorer, tokenizer, contexts, targets, batch_size), targets)
    ]
    ppls = sequence_perplexities(scorer, tokenizer, texts, batch_size)
    totals, per_steps, gains_positive, gains_all, wu = [], [], 0, 0, []
    for item, (offset, n) in enumerate(spans):
        ell = lps[offset : offset + n + 1]
        gains = [b - a for a, b in zip(ell, ell[1:])]
        totals.append(ell[-1] - ell[0])
        per_steps.append(sum(gains) / n if n else 0.0)
        gains_positive += sum(g > 0 for g in gains)
        gains_all += n
        wu.append((ppls[2 * item] - ppls[2 * item + 1]) / (n + 1))
    count = max(1, len(spans))
    return {
        "ig/total": sum(totals) / count,
        "ig/per_step": sum(per_steps) / count,
        "ig/positive_frac": gains_positive / gains_all if gains_all else 0.0,
        "ig/wu_ppl": sum(wu) / count,
    }
