"""Batched, gradient-free log-probabilities under a causal LM (rewards and metrics share these)."""

from __future__ import annotations

import torch


def _pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


@torch.no_grad()
def _token_logprobs(model, sequences: list[list[int]], pad_id: int) -> list[torch.Tensor]:
    """log p(token_t | tokens_<t) for t >= 1, per sequence."""
    ids, mask = _pad_right(sequences, pad_id)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logprobs.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
    return [picked[row, : len(seq) - 1].cpu() for row, seq in enumerate(sequences)]


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def continuation_logprobs(
    model, tokenizer, contexts: list[str], targets: list[str], batch_size: int = 64
) -> list[float]:
    """Sum of log p(target tokens | context) for each pair."""
    was_training = model.training
    model.eval()
    out: list[float] = []
    pairs = [(_encode(tokenizer, c), _encode(tokenizer, t)) for c, t in zip(contexts, targets)]
    for chunk in _batched(pairs, batch_size):
        sequences = [c + t for c, t in chunk]
        per_token = _token_logprobs(model, sequences, tokenizer.pad_token_id)
        for (context, target), lp in zip(chunk, per_token):
            out.append(float(lp[len(context) - 1 :].sum()) if target else 0.0)
    model.train(was_training)
    return out


def sequence_perplexities(model, tokenizer, texts: list[str], batch_size: int = 64) -> list[float]:
    """exp(mean token NLL) of each whole text (Wu et al.'s perplexity)."""
    was_training = model.training
    model.eval()
    out: list[float] = []
    for chunk in _batched([_encode(tokenizer, t) for t in texts], batch_size):
        for lp in _token_logprobs(model, chunk, tokenizer.pad_token_id):
            out.append(float(torch.exp(-lp.mean())) if len(lp) else float("nan"))
    model.train(was_training)
    return out


@torch.no_grad()
def completion_token_stats(model, tokenizer, prompts: list[str], completion_ids: list[list[int]], batch_size: int = 64):
    """Per completion: mean token entropy and mean KL(uniform || p) over its tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    entropies, certainties = [], []
    items = list(zip([_encode(tokenizer, p) for p in prompts], completion_ids))
    for chunk in _batched(items, batch_size):
        ids, mask = _pad_right([p + list(c) for p, c in chunk], tokenizer.pad_token_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        vocab = logp.shape[-1]
        kl_uniform = -torch.log(torch.tensor(float(vocab))) - logp.mean(-1)
        for row, (prompt, completion) in enumerate(chunk):
            # positions predicting the completion's tokens
            span = slice(len(prompt) - 1, len(prompt) - 1 + len(completion))
            if len(completion) == 0:
                entropies.append(0.0)
                certainties.append(0.0)
                continue
            entropies.append(float(entropy[row, span].mean()))
            certainties.append(float(kl_uniform[row, span].mean()))
    model.train(was_training)
    return entropies, certainties
