"""The schema of a cell's configuration: one dataclass per config group and key family.

Every default lives here (or in a task's own config dataclass); `conf/` YAMLs name the option and
extend these. Nothing in the package is imported here, so any module may import the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ModelConfig:
    kind: str = "tiny"  # tiny | hf
    # tiny
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 192
    # hf
    name_or_path: str | None = None
    trust_remote_code: bool = False  # run the model repository's own Python code: only for sources you trust
    allow_pickle: bool = False  # also load PyTorch pickle weights (.bin), which can run code; default safetensors


@dataclass
class RegimeConfig:
    name: str = "correct"
    match_steps: bool = True  # swapped: borrow a trace with the same number of steps


# What a signal reads (docs/signals.md), from least to most: the policy alone; a step checker that cannot tell
# whether the chain solves the problem; a step checker whose all-valid chain fixes the answer; the gold answers.
ACCESS_CLASSES = ("intrinsic", "partial verifier", "perfect verifier", "gold")
ACCESS_MARKS = {"gold": "†", "perfect verifier": "‡"}  # tables mark the signals that are ceilings, not TTT methods


@dataclass
class SignalConfig:
    name: str = "majority"
    reference: str = "majority"  # verifree/predictive: majority (label-free) | gold (oracle analysis)
    samples: int = 8  # self_sft: completions sampled per prompt and round
    rounds: int = 2  # self_sft: generate -> filter -> train rounds


@dataclass
class BaseConfig:
    """Pretraining of the tiny model from scratch; ignored for `model=hf`."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    # Rows packed into blocks of model.max_positions tokens (each row attends to itself alone): the corpus's
    # rows run from 13 to 50 characters, and padding them to their batch's longest wasted 43% of the tokens.
    packed: bool = True


@dataclass
class CatalystConfig:
    n: int = 256  # rows: a seeded sample of the `train` pool, up to all of it
    # 60 epochs of the default 256 rows. At 160 steps the correct catalyst ignited the steps kind's base
    # seeds 0 / 1 to only 0.09 / 0.03 start accuracy, at 480 to 1.00 / 0.92 (sweeps/testbed.yaml).
    steps: int = 480
    batch_size: int = 32
    lr: float = 2e-3
    # Stechly et al.'s protocol: SFT a freshly initialised tiny model (init seed base.seed) on the rows
    # alone, with no base pretraining; the base still serves as the `none` reference of ignition.
    from_scratch: bool = False


ANCHORS = ("none", "kl", "replay", "kl+replay")  # `ttt.anchor`: what ties TTT to its start (anchors.py)


@dataclass
class LoraConfigSchema:
    """`ttt.lora`: TTT trains a LoRA adapter (peft) on the frozen start point instead of every weight."""

    r: int = 0  # adapter rank; 0: no adapter, TTT trains every weight
    alpha: int = 32  # the adapter's update is scaled by alpha / r
    dropout: float = 0.0
    # The attention and MLP projections of Llama-, Qwen- and Mistral-class models.
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TTTConfig:
    # 3 epochs over 128 id prompts. 32 prompts x 4 generations per step: `make bench` measured
    # 7.9 s per epoch over id against 11.3 s at 4 prompts (64 prompts: 9.0 s).
    steps: int = 12
    prompts_per_step: int = 32
    num_generations: int = 4
    lr: float = 1e-4
    anchor: str = "none"  # one of ANCHORS
    beta: float | None = None  # KL weight of anchor kl; unset: anchors.DEFAULT_BETA
    replay_weight: float | None = None  # weight of the catalyst-replay NLL of anchor replay; unset: the default
    temperature: float = 1.0
    eval_every: int = 3
    # Skip TTT when the start does not beat its base (recorded as `gated`): such a replicate is never judged
    # (metrics/aggregate.above_floor), so gating changes no verdict; false trains every cell.
    gate: bool = True
    # Sequences per forward/backward pass; a step accumulates its prompts_per_step x num_generations
    # sequences in passes of this size (one generation, one optimizer step). None: all in one pass.
    micro_batch_size: int | None = None
    lora: LoraConfigSchema = field(default_factory=LoraConfigSchema)
    use_vllm: bool = False  # GRPO generates with vLLM colocated on the GPU (TRL's use_vllm); never on the CPU


@dataclass
class EvalConfig:
    k: int = 4  # mean@k, maj@k, pass@k
    samples: int = 8  # n samples per prompt (n > k) behind the unbiased pass@k and maj@k estimates
    temperature: float = 1.0
    batch_size: int = 128  # sequences per generate call: larger batches wait longer on their slowest row
    max_per_split: int | None = None  # None: every item of every split
    # Greedy accuracy covers every split; mean/maj/pass@k and agreement are sampled on these only
    # (stability reads id's samples; each sampled split costs `samples` generations per item).
    sampled_splits: list[str] = field(default_factory=lambda: ["id"])
    trajectory_size: int = 32  # items of id and of heldout evaluated every eval_every steps
    trajectory: bool = True


@dataclass
class StabilityConfig:
    """The rules that turn a group's replicates into verdicts (docs/statistics.md)."""

    margin: float = 0.05  # δ: a TTT gain whose interval lies within ±δ is no change (equivalence)
    ignition_margin: float = 0.05  # an ignition whose interval lies below this is no ignition
    max_collapse: float = 0.25  # share of id prompts whose samples agree on a wrong answer
    max_gain_std: float = 0.10  # replicates whose gains spread wider than this are unstable
    max_flat_rewards: float = 0.90  # reward spread in no more than 1 - this share of groups: "did not train"
    trap_drop: float = 0.05  # the accuracy trap: step validity or IG fell by more than this while accuracy rose


@dataclass(frozen=True)
class ProbeReading:
    """How the report words a TTT start's probes (metrics/probes.py, docs/statistics.md). No verdict reads
    them, so they are not part of a cell's config."""

    reads_trace: float = 0.5  # the model reads its trace when it writes some trace's own answer this often
    skill_loss: float = 0.10  # the atomic skill "fell" when start is below base by more than this
    format_floor: float = 0.5  # below this format rate the model mostly does not write the trace format


@dataclass
class IGConfig:
    """Information gain under a fixed reader: the base SFT'd once on the task's `reader` pool."""

    enabled: bool = True
    scorer: str | None = None  # a checkpoint directory to score with instead of the reader
    max_items: int | None = None  # None: every id item
    reader_steps: int = 320
    reader_batch_size: int = 32
    reader_lr: float = 2e-3


@dataclass
class ProbesConfig:
    """Forward-pass probes of the catalyst checkpoint (metrics/probes.py, docs/metrics.md)."""

    enabled: bool = True
    atomic_items: int = 128  # held-out single-op items behind skill retention


@dataclass
class MetricsConfig:
    ig: IGConfig = field(default_factory=IGConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "catalyst-ttt"
    entity: str | None = None


# Keys of CellConfig that place or report a cell but do not change what it computes: no cell or checkpoint
# hash covers them.
NON_SEMANTIC = ("sweep", "runs_dir", "cache_dir", "wandb", "threads", "device", "lock_timeout")


@dataclass
class CellConfig:
    task: Any = MISSING
    regime: RegimeConfig = MISSING
    signal: SignalConfig = MISSING
    model: ModelConfig = MISSING
    base: BaseConfig = field(default_factory=BaseConfig)
    catalyst: CatalystConfig = field(default_factory=CatalystConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seed: int = 0
    threads: int = 0  # torch threads; 0 = all cores
    device: str = "auto"  # auto | cpu | cuda; auto: CUDA when torch sees it (device.py)
    sweep: str = "single"
    runs_dir: str = "runs"
    cache_dir: str = "cache"
    lock_timeout: float = 14400.0  # seconds to wait for a lock another process holds (a cell, a checkpoint)
