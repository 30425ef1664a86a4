"""Batched generation: greedy or sampled completions of a model, the one way every phase, metric and
signal makes a model write."""

from __future__ import annotations

import torch


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    *,
    batch_size: int,
    samples: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[list[str]]:
    """Greedy completion (samples=0) or `samples` sampled completions per prompt, `batch_size` sequences
    per `model.generate` call.

    Sampling draws from a forked RNG seeded with `seed` (the model's GPU's too, where it samples):
    evaluating never moves the training stream, so turning the trajectory on or changing
    `eval_every` cannot change what TTT trains.
    """
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _generate(model, tokenizer, prompts, max_new_tokens, samples, temperature, batch_size, device)


def _generate(model, tokenizer, prompts, max_new_tokens, samples, temperature, batch_size, device) -> list[list[str]]:
    was_training = model.training
    model.eval()
    per_batch = max(1, batch_size // max(1, samples))
    out: list[list[str]] = []
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples)
            if samples
            else dict(do_sample=False)
        )
        ids = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            repetition_penalty=1.0,  # not a checkpoint's own default (Qwen's instruct models ship 1.05)
            **kwargs,
        )
        texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        group = samples or 1
        out += [texts[i : i + group] for i in range(0, len(texts), group)]
    model.train(was_training)
    return out
