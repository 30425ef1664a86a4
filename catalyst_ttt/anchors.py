"""Anchors: what ties test-time training back to the catalyst it started from (docs/anchors.md).

`ttt.anchor` is one of ANCHORS. `kl` is TRL GRPO's own KL penalty to a reference model, which TRL
rebuilds from the policy's checkpoint directory: in a cell that is the catalyst checkpoint TTT
starts from. `replay` adds, to every GRPO step, the supervised loss of a batch of the catalyst's
own rows (`training.ReplayGRPOTrainer`). This module holds what the anchor means for the config
(weights and their checks) and the anchor a cell resolves once (`Anchor`), so composing a config
needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from catalyst_ttt.errors import UserError
from catalyst_ttt.schema import ANCHORS

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


@dataclass(frozen=True)
class Anchor:
    """A cell's anchor, resolved once (`resolve_anchor`) and handed to GRPO: the KL weight, and what replay
    trains on each step (catalyst rows, at the catalyst's batch size, cut to the SFT sequence budget)."""

    name: str  # `ttt.anchor`
    beta: float  # 0: no KL
    replay_weight: float  # 0: no replay
    replay_rows: list[dict]  # empty without replay, or when the regime has no catalyst rows
    replay_batch_size: int
    replay_max_length: int

    @property
    def replays(self) -> bool:
        return bool(self.replay_weight and self.replay_rows)

    def summary(self) -> dict:
        """What result.json records of the anchor."""
        return {
            "anchor": self.name,
            "beta": self.beta,
            "replay_weight": self.replay_weight,
            "replay_rows": len(self.replay_rows),
        }


def resolve_anchor(ttt: DictConfig, catalyst_rows: list[dict], batch_size: int, max_length: int) -> Anchor:
    """`ttt.anchor` with its weights (unset: the defaults); replay trains on the very rows the catalyst was
    trained on."""
    weight = replay_weight(ttt)
    return Anchor(ttt.anchor, kl_beta(ttt), weight, catalyst_rows if weight else [], batch_size, max_length)


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
