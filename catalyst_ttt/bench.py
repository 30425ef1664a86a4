"""`make bench`: the harness's training overhead against bare TRL, phase-cache reuse, and sweep
throughput with one and two parallel jobs. Prints the figures the README records."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from catalyst_ttt.sweep import load_sweep

BENCH = "bench"


def _cell_overrides(runs: Path, cache: Path) -> list[str]:
    """One cell of the bench sweep, trajectory evaluation off."""
    fixed = [o for o in load_sweep(BENCH, []).fixed if not o.startswith("sweep=")]
    return [
        *fixed,
        "regime=correct",
        "signal=majority",
        "seed=0",
        "eval.trajectory=false",
        f"runs_dir={runs}",
        f"cache_dir={cache}",
    ]


def harness_training_seconds(scratch: Path, tag: str) -> float:
    from catalyst_ttt.config import compose_cell
    from catalyst_ttt.pipeline import run_cell

    result = run_cell(compose_cell(_cell_overrides(scratch / f"runs-{tag}", scratch / f"cache-{tag}")))
    assert result["status"] == "done", result.get("error")
    return sum(result["timing"][f"{phase}_s"] for phase in ("base", "catalyst", "ttt"))


def bare_trl_seconds() -> float:
    """The same three trainings written directly against TRL: no cache, no store, no tracking."""
    import random

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from catalyst_ttt.config import compose_cell, typed_task_config
    from catalyst_ttt.models import char_tokenizer, new_tiny_model
    from catalyst_ttt.tasks import TASKS

    cfg = compose_cell(_cell_overrides(Path("unused"), Path("unused")))
    task = TASKS.get("alchemy")(typed_task_config(cfg))
    splits = task.splits()
    tokenizer = char_tokenizer()
    started = time.perf_counter()
    model = new_tiny_model(cfg.model, tokenizer, cfg.base.seed)
    common = dict(
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=False,
        logging_steps=1,
    )
    with tempfile.TemporaryDirectory() as out:

        def sft_phase(dataset, steps, batch_size, lr, seed):
            args = SFTConfig(
                output_dir=out,
                max_steps=steps,
                per_device_train_batch_size=batch_size,
                learning_rate=lr,
                lr_scheduler_type="cosine",
                warmup_steps=steps // 10,
                max_length=cfg.model.max_positions,
                seed=seed,
                **common,
            )
            _train(SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=args))

        base = cfg.base
        sft_phase(Dataset.from_dict({"text": task.base_corpus()}), base.steps, base.batch_size, base.lr, base.seed)
        sample = random.Random(cfg.seed).sample(splits["train"], cfg.catalyst.n)
        rows = [{"prompt": p.prompt, "completion": task.render(p.steps, p.answer)} for p in sample]
        catalyst = cfg.catalyst
        sft_phase(Dataset.from_list(rows), catalyst.steps, catalyst.batch_size, catalyst.lr, cfg.seed)

        def majority(prompts, completions, **_):
            answers = [task.parse(c).answer for c in completions]
            size = cfg.ttt.num_generations
            rewards = []
            for start in range(0, len(answers), size):
                group = answers[start : start + size]
                top = Counter(a for a in group if a).most_common(1)
                rewards += [float(bool(top) and a == top[0][0]) for a in group]
            return rewards

        _train(
            GRPOTrainer(
                model=model,
                reward_funcs=[majority],
                processing_class=tokenizer,
                train_dataset=Dataset.from_dict({"prompt": [p.prompt for p in splits["id"]]}),
                args=GRPOConfig(
                    output_dir=out,
                    max_steps=cfg.ttt.steps,
                    per_device_train_batch_size=cfg.ttt.prompts_per_step * cfg.ttt.num_generations,
                    num_generations=cfg.ttt.num_generations,
                    learning_rate=cfg.ttt.lr,
                    max_completion_length=task.max_completion_chars,
                    temperature=cfg.ttt.temperature,
                    top_k=0,
                    top_p=1.0,
                    beta=cfg.ttt.beta,
                    lr_scheduler_type="constant",
                    seed=cfg.seed,
                    **common,
                ),
            )
        )
    return time.perf_counter() - started


def _train(trainer) -> None:
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm would print every log line instead
    trainer.train()


def sweep_figures(scratch: Path, jobs: int) -> dict:
    runs, cache = scratch / f"sweep-runs-{jobs}", scratch / f"sweep-cache-{jobs}"
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "catalyst_ttt.cli",
            "sweep",
            BENCH,
            f"--jobs={jobs}",
            f"runs_dir={runs}",
            f"cache_dir={cache}",
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    trainings = Counter(json.loads(line)["kind"] for line in (cache / "trainings.jsonl").read_text().splitlines())
    cells = len(list(runs.glob(f"{BENCH}/*/result.json")))
    return {
        "jobs": jobs,
        "cells": cells,
        "seconds": seconds,
        "cells_per_min": 60 * cells / seconds,
        "base_trainings": trainings["base"],
        "catalyst_trainings": trainings["catalyst"],
    }


def main() -> None:
    from catalyst_ttt.cli import _quiet_libraries

    _quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bare = [bare_trl_seconds(), bare_trl_seconds()]
        harness = [harness_training_seconds(scratch, "a"), harness_training_seconds(scratch, "b")]
        ratio = min(harness) / min(bare)
        print(
            f"(a) one cell's training phases (base+catalyst+ttt, trajectory eval off): harness {min(harness):.1f} s, "
            f"bare TRL {min(bare):.1f} s, overhead ratio {ratio:.3f} (runs: harness {harness}, bare {bare})"
        )
        sweeps = [sweep_figures(scratch, jobs) for jobs in (1, 2)]
        seq = sweeps[0]
        regimes_with_catalyst, seeds = 1, 2
        print(
            f"(b) sweep `{BENCH}` of {seq['cells']} cells trained {seq['base_trainings']} base and "
            f"{seq['catalyst_trainings']} catalyst models (expected 1 and {regimes_with_catalyst * seeds})"
        )
        for figures in sweeps:
            print(
                f"(c) --jobs {figures['jobs']}: {figures['cells']} cells in {figures['seconds']:.1f} s "
                f"= {figures['cells_per_min']:.2f} cells/min"
            )


if __name__ == "__main__":
    main()
