"""The bookkeeping around one cell: its result skeleton, W&B run, phase timings and final write.

`run_cell` (pipeline.py) stays the recipe; everything a cell records whatever happens lives here,
as the lightning-hydra-template's `task_wrapper` keeps it out of the training code.
"""

from __future__ import annotations

import contextlib
import socket
import time
import traceback

from catalyst_ttt.config import CellDescription
from catalyst_ttt.metrics.stability import early_warning, trajectory_stability
from catalyst_ttt.results import GATED, RESULT, SAMPLES, TRAJECTORY, CellDir
from catalyst_ttt.schema import WandbConfig
from catalyst_ttt.tracking import Tracker
from catalyst_ttt.training import divergence_of

TAGGED_AXES = ("task", "model", "regime", "signal", "anchor")  # W&B tags, for filtering runs


class CellRecord:
    """One cell's entry in the results store and its W&B run."""

    def __init__(self, cell: CellDescription, wandb: WandbConfig, lock_timeout: float):
        self.cell, self.wandb, self.lock_timeout = cell, wandb, lock_timeout
        self.name, self.config_hash = cell.name, cell.config_hash
        self.store = CellDir(cell.runs_dir, cell.sweep, self.name)
        self.tracker: Tracker | None = None
        self.result: dict = {}
        self.current_phase = "start"

    def finished_or_claim(self) -> dict | None:
        """The stored result when this exact config already ran to the end; otherwise None, with the cell's
        lock taken (after waiting for another process running it) and held until the result is written."""
        if self.store.is_done(self.config_hash) or not self.store.claim(self.config_hash, self.lock_timeout):
            return self.store.result()
        return None

    @contextlib.contextmanager
    def running(self):
        """Start the cell; on exit write `result.json` atomically with status done/diverged/failed, or
        interrupted (Ctrl-C, SIGINT: not the cell's failure; a rerun runs it again)."""
        cell, wandb = self.cell, self.wandb
        self.store.start(cell.config_yaml)
        self.started = time.perf_counter()
        self.result = {
            "cell": self.name,
            "sweep": cell.sweep,
            "config_hash": self.config_hash,
            "status": "failed",
            "uses_labels": cell.uses_labels,
            "access": cell.access,
            "rewarded": cell.rewarded,
            "axes": cell.axes,
            "config": cell.config,
            "host": socket.gethostname(),
            "timing": {},
            "phases": {},
        }
        self.tracker = Tracker(
            mode=wandb.mode,
            project=wandb.project,
            entity=wandb.entity,
            group=cell.sweep,
            job_type=cell.signal,
            tags=[f"{axis}:{value}" for axis, value in cell.axes.items() if axis in TAGGED_AXES],
            name=self.name,
            config=cell.config | {"uses_labels": cell.uses_labels},
            directory=self.store.path,
        )
        try:
            yield self.result, self.tracker
            self.result["status"] = GATED if "gate" in self.result else "done"
        except Exception as err:  # noqa: BLE001 - a failed cell is recorded; the sweep goes on
            diverged = divergence_of(err)  # NaN loss, weights or reward, or sampling from NaN logits
            if diverged is not None:
                self.result |= {"status": "diverged", "diverged_step": diverged.step, "error": str(diverged)}
            else:
                self.result |= {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                (self.store.path / "error.log").write_text(traceback.format_exc())
        except KeyboardInterrupt:
            self.result |= {"status": "interrupted", "error": f"interrupted (SIGINT) in phase {self.current_phase}"}
            (self.store.path / "error.log").write_text(traceback.format_exc())
            raise
        finally:
            self._close()

    def gate(self, evidence: dict) -> None:
        """Finish the cell before TTT (status `gated`): its start does not beat its base (`evidence` says by
        how much), so there is nothing for TTT to keep."""
        self.result["gate"] = evidence

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a phase and show it as the cell's status while it runs."""
        self.current_phase = name
        self.store.set_status(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.result["timing"][f"{name}_s"] = time.perf_counter() - started

    def write_trajectory(self, rows: list[dict]) -> None:
        """The trajectory so far (evaluation.Trajectory's rows), rewritten at every point it records."""
        self.store.write(TRAJECTORY, rows)

    def add_evaluation(self, evaluated: dict, trajectory) -> None:
        """The final eval's metrics and per-item correctness, and stability over the trajectory."""
        result = self.result
        result["metrics"] = {name: r.metrics for name, r in evaluated.items()}
        result["items"]["id"]["final"] = evaluated["id"].correct
        result["items"] |= {name: {"final": r.correct} for name, r in evaluated.items() if name != "id"}
        stab = trajectory_stability(trajectory.steps(), trajectory.correct("id"))
        result["stab"] = (
            stab
            | early_warning(stab["stab/collapse_step"], self.tracker.history)
            | {
                "stab/collapse": result["metrics"]["id"]["samples/collapse"],
                "stab/diversity": result["metrics"]["id"]["samples/diversity"],
            }
        )
        result["examples"] = {name: r.examples for name, r in evaluated.items()}
        result["ttt_log"] = self.tracker.history  # per-step TTT diagnostics: the report draws them over steps

    def _close(self) -> None:
        result, tracker = self.result, self.tracker
        result["timing"]["total_s"] = time.perf_counter() - self.started
        examples = result.pop("examples", {})
        if examples:
            self.store.write(SAMPLES, examples)
        self.store.write(RESULT, result)
        self.store.set_status(result["status"])
        self.store.release()
        tracker.summary(flat_metrics(result))
        tracker.table("samples", [row | {"split": split} for split, rows in examples.items() for row in rows])
        result["wandb_dir"] = tracker.finish()


def flat_metrics(result: dict) -> dict:
    """`split/metric` for every split, id's process metrics at top level, ig/*, stab/*, probes/*, ignition."""
    flat = {f"{split}/{k}": v for split, metrics in result.get("metrics", {}).items() for k, v in metrics.items()}
    flat |= {k: v for k, v in result.get("metrics", {}).get("id", {}).items() if k.startswith("process/")}
    flat |= result.get("ig", {}) | result.get("stab", {})
    flat |= {f"pre_ttt/{k}": v for k, v in result.get("pre_ttt", {}).items()}
    flat |= {f"ig_calibration/{k}": v for k, v in result.get("ig_calibration", {}).items()}
    flat |= {f"probes/{k}": v for k, v in result.get("probes", {}).items()}
    flat |= {"status": result["status"], "uses_labels": int(result["uses_labels"])}
    if "ignition" in result:
        flat["ignition"] = result["ignition"]
    return flat
