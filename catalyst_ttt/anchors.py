"""Anchors: what ties test-time training back to the catalyst it started from (docs/anchors.md).

`ttt.anchor` is one of ANCHORS. `kl` is TRL GRPO's own KL penalty to a reference model, which TRL
rebuilds from the policy's checkpoint directory: in a cell that is the catalyst checkpoint TTT
starts from. `replay` adds, to every GRPO step, the supervised loss of a batch of the catalyst's
own rows (`ReplayGRPOTrainer`).
"""

from __future__ import annotations

import random

import torch
from omegaconf import DictConfig
from trl import GRPOTrainer

from catalyst_ttt.config import ANCHORS
from catalyst_ttt.errors import UserError

DEFAULT_BETA = 0.04  # TRL's former default KL weight (DeepSeekMath's GRPO)
DEFAULT_REPLAY_WEIGHT = 1.0  # the replay NLL weighs as much as the GRPO loss


def anchor_parts(anchor: str) -> set[str]:
    """`kl+replay` -> {"kl", "replay"}; `none` -> {}."""
    return set(anchor.split("+")) - {"none"}


def kl_beta(ttt: DictConfig) -> float:
    """The KL weight GRPO runs with: `ttt.beta`, or DEFAULT_BETA when the anchor has kl and beta is unset."""
    if "kl" not in anchor_parts(ttt.anchor):
        return 0.0
    return DEFAULT_BETA if ttt.beta is None else float(ttt.beta)


def replay_weight(ttt: DictConfig) -> float:
    if "replay" not in anchor_parts(ttt.anchor):
        return 0.0
    return DEFAULT_REPLAY_WEIGHT if ttt.replay_weight is None else float(ttt.replay_weight)


def check_anchor(ttt: DictConfig) -> None:
    """A weight belongs to its anchor: kl needs beta > 0 (unset: DEFAULT_BETA), replay a replay_weight > 0."""
    if ttt.anchor not in ANCHORS:
        raise UserError(f"ttt.anchor={ttt.anchor!r} is not valid; valid: {', '.join(ANCHORS)}")
    parts = anchor_parts(ttt.anchor)
    for key, part, value in (("beta", "kl", ttt.beta), ("replay_weight", "replay", ttt.replay_weight)):
        if value is None:
            continue
        if part not in parts and value != 0:
            raise UserError(
                f"ttt.{key}={value} needs an anchor with {part}; set ttt.anchor={part} or kl+replay, or drop ttt.{key}"
            )
        if part in parts and value <= 0:
            raise UserError(
                f"ttt.{key}={value} is not valid with ttt.anchor={ttt.anchor}; it must be > 0 "
                f"(unset: {DEFAULT_BETA if part == 'kl' else DEFAULT_REPLAY_WEIGHT})"
            )


class ReplayBatches:
    """The catalyst's prompt/completion rows as padded batches, in a seeded order, cycling forever.

    Like the catalyst's SFT (TRL's prompt/completion default): the loss covers the completion and its
    end-of-sequence token only; a row is cut to `max_length` tokens.
    """

    def __init__(self, rows: list[dict], tokenizer, batch_size: int, max_length: int, seed: int):
        self.examples = []
        for row in rows:
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            ids = (prompt + completion + [tokenizer.eos_token_id])[:max_length]
            labels = ([-100] * len(prompt) + completion + [tokenizer.eos_token_id])[:max_length]
            self.examples.append((ids, labels))
        self.batch_size, self.pad = min(batch_size, len(self.examples)), tokenizer.pad_token_id
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self, device) -> dict[str, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size:
            if not self.order:
                self.order = self.rng.sample(range(len(self.examples)), len(self.examples))
            picked.append(self.examples[self.order.pop()])
        width = max(len(ids) for ids, _ in picked)
        ids = [ids + [self.pad] * (width - len(ids)) for ids, _ in picked]
        labels = [labels + [-100] * (width - len(labels)) for _, labels in picked]
        mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in picked]
        return {
            "input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "labels": torch.tensor(labels, device=device),
        }


class ReplayGRPOTrainer(GRPOTrainer):
    """GRPO whose every step also minimises `weight` x the mean token NLL of a batch of catalyst rows.

    Why an auxiliary loss per step rather than interleaved SFT steps: both losses then move the same
    optimizer step under the same learning rate and schedule, TTT keeps its step count (trajectories
    and collapse steps stay comparable across anchors), and no second trainer (with its own optimizer
    state) runs between GRPO steps.
    """

    def __init__(self, *args, replay: ReplayBatches, replay_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.replay, self.replay_weight = replay, replay_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.model.training:
            return loss
        nll = model(**self.replay.next(loss.device)).loss
        self._metrics["train"]["replay_nll"].append(nll.item())
        # GRPO's loss is already divided for gradient accumulation (TRL scales its own aux loss the same way)
        return loss + self.replay_weight * nll / self.current_gradient_accumulation_steps
