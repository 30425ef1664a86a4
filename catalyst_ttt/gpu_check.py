"""The prepared device check (`scripts/gpu_check.sh`, docs/gpu.md): real `model=hf task=gsm8k` cells on
one GPU, end to end, from a model and data built here. Nothing is downloaded.

It writes GSM8K-form problems as JSONL, trains a byte-level BPE tokenizer with a ChatML chat template
on them, and saves a randomly initialised Qwen2 model (`--size small`: the body of Qwen2.5-0.5B, with
the small vocabulary; `tiny`: for a test on the CPU). Then it runs two cells with `cttt`'s pipeline,
full and LoRA TTT, both with the kl and replay anchors, times `model.generate`, and prints and
writes (`gpu_check.json`) each cell's status, throughput and peak GPU memory.

    python -m catalyst_ttt.gpu_check OUT_DIR [--size small|tiny] [--device cuda|cpu|auto] [OVERRIDES...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from catalyst_ttt.config import compose_cell
from catalyst_ttt.device import DEVICES, resolve_device
from catalyst_ttt.errors import UserError
from catalyst_ttt.generation import generate
from catalyst_ttt.models import load_pretrained
from catalyst_ttt.pipeline import run_cell
from catalyst_ttt.quiet import quiet_libraries
from catalyst_ttt.tasks.gsm8k import synthetic_rows

# Qwen's ChatML, without the system turn its own template adds.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# (hidden size, layers, attention heads, key-value heads, MLP width, BPE vocabulary)
SHAPES = {
    "small": (896, 24, 14, 2, 4864, 4096),  # Qwen2.5-0.5B's body; its own vocabulary has 151,936 tokens
    "tiny": (64, 2, 4, 2, 128, 512),
}
COMPLETION_TOKENS = {"small": 128, "tiny": 32}  # a random model never ends a completion early
# One cell's settings: a small catalyst, 8 GRPO steps of 8 prompts x 8 generations, every split cut to 32.
CELL = [
    "regime=correct",
    "signal=majority",
    "ttt.anchor=kl+replay",
    "ttt.gate=false",  # a random model's start never beats its base, and the check measures TTT all the same
    "task.n_id=32",
    "task.n_heldout=32",
    "task.n_train=128",
    "task.n_reader=64",
    "task.n_shift=32",
    "catalyst.n=128",
    "catalyst.steps=40",
    "catalyst.batch_size=16",
    "catalyst.lr=1e-4",
    "ttt.steps=8",
    "ttt.prompts_per_step=8",
    "ttt.num_generations=8",
    "ttt.micro_batch_size=32",
    "ttt.lr=1e-6",
    "ttt.eval_every=8",
    "eval.max_per_split=32",
    "eval.trajectory_size=16",
    "metrics.ig.max_items=32",
    "metrics.ig.reader_steps=20",
    "wandb.mode=disabled",
    "sweep=gpu_check",
]
VARIANTS = {"full": [], "lora": ["ttt.lora.r=16"]}


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with Qwen's special tokens and a ChatML template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )


def build_model_and_data(directory: Path, size: str, seed: int = 0) -> tuple[Path, Path, int]:
    """GSM8K-form JSONL and a random Qwen2 model with its tokenizer, under `directory`; returns their
    paths and the model's parameter count."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows(420, seed)  # 280 short problems for id, heldout, train and reader; 140 long
    data = directory / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    hidden, layers, heads, kv_heads, mlp, vocab = SHAPES[size]
    tokenizer = build_tokenizer([row["question"] + "\n" + row["answer"] for row in rows], vocab)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=mlp,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model_dir = directory / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir, data, model.num_parameters()


def generation_throughput(model_dir: Path, device: str, new_tokens: int, sequences: int = 128) -> float:
    """Tokens per second of `generation.generate` (greedy, one batch) on the model as built."""
    model, tokenizer = load_pretrained(str(model_dir), device=device)
    prompts = [f"Problem {i}: how many apples are left?" for i in range(sequences)]
    generate(model, tokenizer, prompts[:8], 4, batch_size=8)  # warm-up: kernels, allocator
    _synchronize()
    started = time.perf_counter()
    completions = generate(model, tokenizer, prompts, new_tokens, batch_size=sequences)
    _synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(c[0], add_special_tokens=False)["input_ids"]) for c in completions)
    return tokens / seconds


def run_check(out: Path, size: str, device: str, overrides: list[str]) -> dict:
    started = time.perf_counter()
    resolve_device(device)  # no GPU where one is asked for: before anything is built
    model_dir, data, parameters = build_model_and_data(out / "built", size)
    tokens = COMPLETION_TOKENS[size]
    common = [
        "model=hf",
        f"model.name_or_path={model_dir}",
        "task=gsm8k",
        f"task.path={data}",
        f"task.max_completion_chars={tokens}",  # with a BPE tokenizer, a budget of tokens
        f"device={device}",
        f"runs_dir={out / 'runs'}",
        f"cache_dir={out / 'cache'}",
        *CELL,
    ]
    report: dict = {"size": size, "parameters": parameters, "completion_tokens": tokens, "cells": {}}
    for name, variant in VARIANTS.items():
        cfg = compose_cell([*common, *variant, *overrides])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = run_cell(cfg)
        report["cells"][name] = cell_summary(result) | {"peak_gpu_memory_gib": _peak_memory_gib()}
    report["device"] = result.get("device")
    report["generate_tokens_per_s"] = generation_throughput(model_dir, result["device"]["device"], tokens)
    report["wall_s"] = time.perf_counter() - started
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    return report


def cell_summary(result: dict) -> dict:
    """Status, phase times, and TTT throughput: completion tokens GRPO generated and trained on per
    second of TTT (the trajectory's evaluations left out)."""
    timing, config = result.get("timing", {}), result["config"]
    ttt = config["ttt"]
    summary = {
        "status": result["status"],
        "error": result.get("error"),
        "result": str(Path(config["runs_dir"]) / result["sweep"] / result["cell"] / "result.json"),
        "seconds": {k: round(v, 1) for k, v in timing.items()},
    }
    mean_length = result.get("ttt", {}).get("ttt/completions/mean_length")
    if mean_length is not None:
        sequences = ttt["steps"] * ttt["prompts_per_step"] * ttt["num_generations"]
        summary["ttt_tokens_per_s"] = mean_length * sequences / (timing["ttt_s"] - timing["trajectory_s"])
    return summary


def print_report(report: dict) -> None:
    device = report["device"] or {}
    print(
        f"gpu check on {device.get('gpu') or device.get('device')} ({device.get('precision')}): random Qwen2, "
        f"{report['parameters'] / 1e6:.1f}M parameters, {report['completion_tokens']} completion tokens"
    )
    for name, cell in report["cells"].items():
        memory = cell["peak_gpu_memory_gib"]
        print(
            f"  cell {name:<5}: {cell['status']} in {cell['seconds'].get('total_s', 0):.0f} s; "
            f"TTT {cell.get('ttt_tokens_per_s', 0):.0f} tokens/s; peak GPU memory "
            f"{'n/a (no GPU)' if memory is None else f'{memory:.1f} GiB'}; {cell['result']}"
            + (f"; {cell['error']}" if cell["error"] else "")
        )
    print(f"  generate   : {report['generate_tokens_per_s']:.0f} tokens/s (greedy, 128 sequences)")
    print(f"  wall time  : {report['wall_s']:.0f} s")


def _peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", choices=DEVICES, default="cuda")
    parser.add_argument("overrides", nargs="*", help="cell overrides, applied last")
    args = parser.parse_intermixed_args()
    quiet_libraries()
    try:
        report = run_check(args.out.absolute(), args.size, args.device, args.overrides)
    except UserError as err:  # e.g. no CUDA device: one line, exit 2, as `cttt` says it
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print_report(report)
    raise SystemExit(0 if all(cell["status"] == "done" for cell in report["cells"].values()) else 1)


if __name__ == "__main__":
    main()
