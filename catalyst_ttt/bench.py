"""`make bench`: where a cell's time goes, what the harness costs over bare TRL, and what a second
job buys. Prints the tables the README records; every figure is the best of two runs.

Sections (all by default; `python -m catalyst_ttt.bench SECTION...` runs some):

* `base`: the default study's base pretraining (its fast base), alone, with its training throughput, rows
  packed into blocks (`base.packed`, the default) and padded to their batch's longest (before).
* `cell`: one cell of the default study (regime correct, signal majority) over that base, phase
  by phase: the catalyst and the IG reader built once, then a cell whose checkpoints are cached
  (what most cells of a sweep cost); generation throughput, greedy and sampled.
* `overhead`: one small cell's training phases (`sweeps/bench.yaml`, trajectory off) against the
  same trainings written directly against TRL, phase by phase.
* `jobs`: the bench sweep with `--jobs 1` and `--jobs 2` over cached checkpoints, with the mean
  per-cell phase profile of each.
* `study`: where the default study's time went, per kind of cell and phase, read from the store
  `make sweep` wrote (`runs/default`; nothing is run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import mean

from catalyst_ttt.results import GATED, read_store
from catalyst_ttt.schema import ModelConfig
from catalyst_ttt.sweep import load_sweep

BENCH = "bench"
DEFAULT = "default"
RUNS = 2  # every figure is the best of this many runs
CELL_PHASES = ("pre_ttt", "ttt", "eval", "ig")  # what a cell with cached checkpoints spends its time on


def sweep_overrides(sweep: str, *extra: str) -> list[str]:
    fixed = [o for o in load_sweep(sweep, []).fixed if not o.startswith("sweep=")]
    return [*fixed, *extra]


def run(overrides: list[str]) -> dict:
    from catalyst_ttt.config import compose_cell
    from catalyst_ttt.pipeline import run_cell

    result = run_cell(compose_cell(overrides))
    if result["status"] != "done":
        raise SystemExit(f"bench cell {result['status']}: {result.get('error')}")
    return result


def table(title: str, header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = [f"\n{title}\n", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- base ----------------------------------------------------------------------------------


def base_section(scratch: Path) -> Path:
    """Train the default study's base RUNS times from scratch, packed (the default) and padded (before
    packing); returns a cache holding the packed one for `cell`."""
    from catalyst_ttt.config import build_task, compose_cell
    from catalyst_ttt.pipeline import base_checkpoint

    rows, cache = [], None
    for packed in (True, False):
        seconds = []
        for attempt in range(RUNS):
            attempt_cache = scratch / f"base-cache-{packed}-{attempt}"
            overrides = sweep_overrides(DEFAULT, "threads=1", f"base.packed={packed}", f"cache_dir={attempt_cache}")
            cfg = compose_cell([*overrides, f"runs_dir={scratch / 'base-runs'}"])
            started = time.perf_counter()
            base_checkpoint(cfg, build_task(cfg), "bench", "cpu")
            seconds.append(time.perf_counter() - started)
            cache = cache or attempt_cache
        rows.append(
            (
                "packed (default)" if packed else "padded (before)",
                cfg.base.steps,
                f"{min(seconds):.1f}",
                ", ".join(f"{s:.1f}" for s in seconds),
                f"{cfg.base.steps / min(seconds):.2f}",
            )
        )
    header = ("rows", "steps", "seconds (best)", "runs", "steps/s")
    print(table("Base pretraining (the default study's base, threads=1)", header, rows))
    return cache


# -- cell ----------------------------------------------------------------------------------


def cell_section(scratch: Path, cache: Path) -> None:
    """Default-study cell phases: builds once, then a cached cell (best of RUNS per phase)."""
    cell = ("regime=correct", "signal=majority", "seed=0", "base.seed=0", "threads=1", "wandb.mode=disabled")
    common = sweep_overrides(DEFAULT, *cell, f"cache_dir={cache}")
    first = run([*common, f"runs_dir={scratch / 'cell-runs-0'}"])
    cached = [run([*common, f"runs_dir={scratch / f'cell-runs-{i}'}"]) for i in range(1, RUNS + 1)]
    timing = {key: min(r["timing"][key] for r in cached) for key in cached[0]["timing"]}
    total = sum(timing[f"{phase}_s"] for phase in CELL_PHASES)
    rows = [
        ("catalyst (built once per regime, seed and base)", f"{first['timing']['catalyst_s']:.1f}", ""),
        ("IG reader + calibration (built once per base)", f"{first['timing']['ig_s']:.1f}", ""),
        (
            "pre-TTT accuracy (start and base, greedy id)",
            f"{timing['pre_ttt_s']:.1f}",
            _share(timing["pre_ttt_s"], total),
        ),
        (
            "TTT training",
            f"{timing['ttt_s'] - timing['trajectory_s']:.1f}",
            _share(timing["ttt_s"] - timing["trajectory_s"], total),
        ),
        ("TTT trajectory evaluation", f"{timing['trajectory_s']:.1f}", _share(timing["trajectory_s"], total)),
        ("eval (every split: greedy + samples)", f"{timing['eval_s']:.1f}", _share(timing["eval_s"], total)),
        ("IG (reader loaded, calibration cached)", f"{timing['ig_s']:.1f}", _share(timing["ig_s"], total)),
        ("cell with cached checkpoints", f"{total:.1f}", "100%"),
    ]
    print(table("One default-study cell (correct x majority, threads=1)", ("phase", "seconds", "share"), rows))
    print(
        f"trajectory = {timing['trajectory_s'] / timing['ttt_s']:.0%} of TTT; eval + IG = "
        f"{(timing['eval_s'] + timing['ig_s']) / total:.0%} of the cached cell"
    )
    generation_section(common)
    ttt_batch_section(common)


def generation_section(overrides: list[str]) -> None:
    """Generated tokens per second on every eval split, greedy and with the eval's samples."""
    import torch

    from catalyst_ttt.config import build_task, compose_cell
    from catalyst_ttt.generation import generate
    from catalyst_ttt.models import with_chat_template

    cfg = compose_cell(overrides)
    task = build_task(cfg)
    torch.set_num_threads(1)
    model, tokenizer = catalyst_model(cfg.cache_dir, cfg.model)
    prompts = [
        p.prompt
        for name, items in with_chat_template(task.splits(), tokenizer).items()
        if name in ("id", "heldout")
        for p in items
    ]
    rows = []
    budgets = (
        ("structural", task.completion_budget(task.splits()["id"])),
        ("task maximum (before)", task.max_completion_chars),
    )
    for label, samples in (("greedy", 0), (f"{cfg.eval.samples} samples", cfg.eval.samples)):
        for budget_label, budget in budgets:
            best, tokens = float("inf"), 0
            for _ in range(RUNS):
                started = time.perf_counter()
                out = generate(model, tokenizer, prompts, budget, samples=samples, batch_size=cfg.eval.batch_size)
                best = min(best, time.perf_counter() - started)
                tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 for g in out for text in g)
            rows.append((label, f"{budget_label}: {budget}", len(prompts), f"{best:.2f}", f"{tokens / best:,.0f}"))
    print(
        table(
            "Generation (id + heldout prompts, the cell's catalyst checkpoint, eval batch size)",
            ("mode", "completion budget (tokens)", "prompts", "seconds", "tokens/s"),
            rows,
        )
    )


def ttt_batch_section(overrides: list[str]) -> None:
    """GRPO seconds per step and per epoch over id as `ttt.prompts_per_step` grows (majority, the
    cell's catalyst checkpoint): does a larger step buy epochs almost for free?"""
    import torch

    from catalyst_ttt.config import build_task, compose_cell
    from catalyst_ttt.models import with_chat_template
    from catalyst_ttt.pipeline import anchor_of
    from catalyst_ttt.signals import SIGNALS
    from catalyst_ttt.training import grpo, make_reward_function

    steps, rows = 4, []
    torch.set_num_threads(1)
    for prompts_per_step in (4, 8, 16, 32, 64):
        cfg = compose_cell([*overrides, f"ttt.prompts_per_step={prompts_per_step}", f"ttt.steps={steps}"])
        task = build_task(cfg)
        best = float("inf")
        for _ in range(RUNS):
            model, tokenizer = catalyst_model(cfg.cache_dir, cfg.model)
            problems = with_chat_template(task.splits(), tokenizer)["id"]
            by_prompt = {p.prompt: p for p in problems}
            reward = make_reward_function(
                SIGNALS.get("majority"),
                task,
                by_prompt,
                model,
                tokenizer,
                signal_cfg=cfg.signal,
                ttt=cfg.ttt,
                seed=cfg.seed,
            )
            anchor, _ = anchor_of(cfg, [])
            started = time.perf_counter()
            grpo(
                model,
                tokenizer,
                list(by_prompt),
                reward,
                task.completion_budget(problems),
                [],
                ttt=cfg.ttt,
                anchor=anchor,
                seed=cfg.seed,
                trust_remote_code=cfg.model.trust_remote_code,
            )
            best = min(best, time.perf_counter() - started)
        per_step = best / steps
        completions = prompts_per_step * cfg.ttt.num_generations
        rows.append(
            (prompts_per_step, completions, f"{per_step:.2f}", f"{per_step * len(problems) / prompts_per_step:.1f}")
        )
    header = ("prompts/step", "completions/step", "s/step", "s per epoch over id")
    print(table(f"GRPO step size ({steps} steps, majority, num_generations from the default study)", header, rows))


def catalyst_model(cache_dir: str, model: ModelConfig):
    """The one catalyst checkpoint in `cache_dir` (the `cell` section's)."""
    from catalyst_ttt.cache import cached_keys
    from catalyst_ttt.models import load_pretrained

    (key,) = cached_keys(cache_dir, "catalyst")
    return load_pretrained(str(Path(cache_dir) / "catalyst" / key), model)


def _share(part: float, total: float) -> str:
    return f"{part / total:.0%}"


# -- overhead ------------------------------------------------------------------------------

TRAINING_PHASES = ("base", "catalyst", "ttt")


def overhead_section(scratch: Path) -> None:
    """Per training phase: the harness (trajectory off) against bare TRL, best of RUNS each."""
    harness, bare = [], []
    for attempt in range(RUNS):
        bare.append(bare_trl_seconds())
        cell = ("regime=correct", "signal=majority", "seed=0", "eval.trajectory=false", "threads=1")
        dirs = (
            f"runs_dir={scratch / f'overhead-runs-{attempt}'}",
            f"cache_dir={scratch / f'overhead-cache-{attempt}'}",
        )
        timing = run(sweep_overrides(BENCH, *cell, *dirs))["timing"]
        harness.append(
            {
                "base": timing["base_s"],
                "catalyst": timing["catalyst_s"],
                "ttt": timing["ttt_s"] - timing["trajectory_s"],
            }
        )
    rows = []
    for phase in (*TRAINING_PHASES, "all"):
        h, b = (min(_phase_seconds(r, phase) for r in runs) for runs in (harness, bare))
        rows.append((phase, f"{h:.2f}", f"{b:.2f}", f"{h / b:.3f}"))
    print(
        table(
            f"Harness vs bare TRL, one `{BENCH}` cell's training phases (trajectory off, threads=1)",
            ("phase", "harness s", "bare TRL s", "ratio"),
            rows,
        )
    )


def _phase_seconds(run: dict[str, float], phase: str) -> float:
    return sum(run.values()) if phase == "all" else run[phase]


def bare_trl_seconds() -> dict[str, float]:
    """The same three trainings written directly against TRL: no cache, no store, no tracking."""

    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from catalyst_ttt.anchors import kl_beta
    from catalyst_ttt.config import build_task, compose_cell
    from catalyst_ttt.device import precision_args
    from catalyst_ttt.models import char_tokenizer, new_tiny_model, with_chat_template
    from catalyst_ttt.pipeline import catalyst_data

    torch.set_num_threads(1)
    cfg = compose_cell(sweep_overrides(BENCH, "regime=correct", "signal=majority", "seed=0"))
    task = build_task(cfg)
    tokenizer = char_tokenizer()
    splits = with_chat_template(task.splits(), tokenizer)
    seconds = {}
    model = new_tiny_model(cfg.model, tokenizer, cfg.base.seed)
    common = dict(
        **precision_args("cpu"),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=False,
        logging_steps=1,
    )
    with tempfile.TemporaryDirectory() as out:

        def sft_phase(name, dataset, steps, batch_size, lr, seed):
            started = time.perf_counter()
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
            seconds[name] = time.perf_counter() - started

        base = cfg.base
        sft_phase(
            "base", Dataset.from_dict({"text": task.base_corpus()}), base.steps, base.batch_size, base.lr, base.seed
        )
        rows, _ = catalyst_data(cfg, task, splits["train"])
        catalyst = cfg.catalyst
        sft_phase("catalyst", Dataset.from_list(rows), catalyst.steps, catalyst.batch_size, catalyst.lr, cfg.seed)

        def majority(prompts, completions, **_):
            answers = [task.parse(c).answer for c in completions]
            size = cfg.ttt.num_generations
            rewards = []
            for start in range(0, len(answers), size):
                group = answers[start : start + size]
                top = Counter(a for a in group if a).most_common(1)
                rewards += [float(bool(top) and a == top[0][0]) for a in group]
            return rewards

        started = time.perf_counter()
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
                    max_completion_length=task.completion_budget(splits["id"]),
                    temperature=cfg.ttt.temperature,
                    top_k=0,
                    top_p=1.0,
                    beta=kl_beta(cfg.ttt),
                    lr_scheduler_type="constant",
                    seed=cfg.seed,
                    **common,
                ),
            )
        )
        seconds["ttt"] = time.perf_counter() - started
    return seconds


def _train(trainer) -> None:
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm would print every log line instead
    trainer.train()


# -- jobs ----------------------------------------------------------------------------------


def jobs_section(scratch: Path) -> None:
    """The bench sweep over a warm cache with 1 and 2 jobs (best of RUNS each), and the per-cell profile."""
    cache = scratch / "jobs-cache"
    warm = sweep(scratch / "jobs-warm", cache, 2)
    figures = {
        jobs: min((sweep(scratch / f"jobs-{jobs}-{i}", cache, jobs) for i in range(RUNS)), key=lambda f: f["seconds"])
        for jobs in (1, 2)
    }
    print(
        f"\nwarm-up sweep trained {warm['trainings']['base']} base and "
        f"{warm['trainings']['catalyst']} catalyst models; "
        f"the timed sweeps trained {sum(f['trainings'].get('catalyst', 0) for f in figures.values())} more"
    )
    phases = sorted({k for f in figures.values() for k in f["profile"]})
    rows = [
        (
            f"--jobs {jobs}",
            f["cells"],
            f"{f['seconds']:.1f}",
            f"{60 * f['cells'] / f['seconds']:.2f}",
            *(f"{f['profile'][p]:.2f}" for p in phases),
        )
        for jobs, f in figures.items()
    ]
    print(
        table(
            f"Sweep `{BENCH}` over cached checkpoints (per-cell mean seconds by phase)",
            ("jobs", "cells", "seconds", "cells/min", *phases),
            rows,
        )
    )
    print(f"speed-up of --jobs 2 over --jobs 1: {figures[1]['seconds'] / figures[2]['seconds']:.2f}x")


def sweep(runs: Path, cache: Path, jobs: int) -> dict:
    log = cache / "trainings.jsonl"
    before = len(log.read_text().splitlines()) if log.exists() else 0
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
    trainings = Counter(json.loads(line)["kind"] for line in log.read_text().splitlines()[before:])
    results = read_store(runs, BENCH).results
    keys = {k for r in results for k in r["timing"]}
    profile = {k.removesuffix("_s"): mean(r["timing"].get(k, 0.0) for r in results) for k in keys}
    return {"cells": len(results), "seconds": seconds, "trainings": trainings, "profile": profile}


# -- study ---------------------------------------------------------------------------------

STUDY_PHASES = ("base", "catalyst", "pre_ttt", "ttt", "eval", "ig")


def study_section(runs: Path = Path("runs")) -> None:
    """Per kind of cell of the default study (as `make sweep` ran it): how many, and the mean and total
    seconds of each phase, from the store's result.json files."""
    results = read_store(runs, DEFAULT).results if (runs / DEFAULT).is_dir() else []
    if not results:
        print(f"\nNo default study in {runs / DEFAULT}: run `make sweep` first, then `make bench SECTIONS=study`.")
        return
    kinds: dict[str, list[dict]] = {}
    for result in results:
        kinds.setdefault(_kind(result), []).append(result)
    rows = []
    for kind, members in sorted(kinds.items()):
        means = [mean(r["timing"].get(f"{p}_s", 0.0) for r in members) for p in STUDY_PHASES]
        total = sum(r["timing"].get("total_s", 0.0) for r in members)
        rows.append((kind, len(members), *(f"{m:.1f}" for m in means), f"{total:.0f}"))
    cell_seconds = sum(r["timing"].get("total_s", 0.0) for r in results)
    rows.append(("all", len(results), *("" for _ in STUDY_PHASES), f"{cell_seconds:.0f}"))
    header = ("cells", "n", *(f"{p} s" for p in STUDY_PHASES), "cell-seconds")
    print(table(f"The default study by kind of cell (mean seconds per phase; {runs / DEFAULT})", header, rows))


def _kind(result: dict) -> str:
    """What a cell of the study did: trained a base (its first cell), was gated, ran TTT or only measured."""
    axes = result["axes"]
    what = "gated (start at its floor)" if result["status"] == GATED else f"signal {axes['signal']}"
    built = [phase for phase in ("base", "catalyst") if result.get("phases", {}).get(phase) == "trained"]
    return f"{axes['regime']} x {what}" + (f" (+ {' + '.join(built)} built)" if built else "")


SECTIONS = ("base", "cell", "overhead", "jobs", "study")


def main(argv: list[str]) -> None:
    from catalyst_ttt.quiet import quiet_libraries

    chosen = argv or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown bench section {unknown[0]!r}; valid: {', '.join(SECTIONS)}")
    quiet_libraries()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cache = scratch / "cell-cache"
        if "base" in chosen:
            cache = base_section(scratch)
        if "cell" in chosen:
            cell_section(scratch, cache)
        if "overhead" in chosen:
            overhead_section(scratch)
        if "jobs" in chosen:
            jobs_section(scratch)
        if "study" in chosen:
            study_section()


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown")


if __name__ == "__main__":
    main(sys.argv[1:])
