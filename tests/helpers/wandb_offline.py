"""Read an offline W&B run back through wandb's own reader, `wandb leet inspect`.

The `.wandb` file is written by the separate `wandb-core` process, which may still be flushing
after `wandb.finish()` has returned; so we wait until the reader reports the run `finished`
(its exit record is on disk) before reading the records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WANDB = str(Path(sys.executable).with_name("wandb"))


@dataclass
class OfflineRun:
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)

    def series(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]


def _inspect(path: Path, *flags: str) -> str:
    done = subprocess.run([WANDB, "leet", "inspect", str(path), "--json", *flags], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def _run_file(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no run-*.wandb under {path}")
    return files[-1]


def read_offline_run(path: str | Path, timeout: float = 120.0) -> OfflineRun:
    """The run's history, summary, config and identity, once its writer has finished."""
    deadline = time.monotonic() + timeout
    while True:
        run_file = _run_file(Path(path))
        state = json.loads(_inspect(run_file, "--summary") or "{}").get("state")
        if state == "finished":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_file}: the W&B writer did not finish within {timeout:.0f} s (state {state!r})")
        time.sleep(0.5)
    out = OfflineRun()
    for line in _inspect(run_file).splitlines():
        record = json.loads(line)
        kind = record.get("type")
        if kind == "history":
            out.history.append(record["history"]["item"])
        elif kind == "summary":
            out.summary |= record["summary"].get("update", {})
        elif kind == "config":
            out.config |= record["config"].get("update", {})
        elif kind == "run":
            run = record["run"]
            out.config |= run.get("config", {}).get("update", {})
            out.run = {
                k: run.get(f)
                for k, f in (
                    ("name", "display_name"),
                    ("group", "run_group"),
                    ("job_type", "job_type"),
                    ("id", "run_id"),
                    ("tags", "tags"),
                )
            }
    return out
