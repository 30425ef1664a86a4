"""Weights & Biases: one run per cell. A W&B failure is reported, never fatal to local results."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import wandb

from catalyst_ttt.network import reachable

log = logging.getLogger(__name__)
STEP = "ttt/step"


@functools.cache
def online_unreachable(url: str) -> bool:
    """W&B online cannot reach its server (warned once per process): wandb.init would stall ~90 s a run."""
    if reachable(url):
        return False
    log.warning("W&B: %s cannot be reached; runs log offline instead (upload them later with wandb sync)", url)
    return True


class Tracker:
    def __init__(
        self,
        *,
        mode: str,
        project: str,
        entity: str | None,
        group: str,
        job_type: str,
        tags: list[str] = (),
        name: str,
        config: dict,
        directory: Path,
    ):
        self.run = None
        if mode == "online" and online_unreachable(wandb.Settings().base_url):
            mode = "offline"
        self.mode = mode
        self.history: list[dict] = []  # every log_step row, kept locally whatever W&B does
        if mode == "disabled":
            return
        try:
            self.run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                job_type=job_type,
                tags=list(tags),
                name=name,
                config=config,
                dir=str(directory),
                mode=mode,
                reinit="finish_previous",
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    x_disable_stats=True,
                    disable_git=True,
                    x_disable_machine_info=True,
                    save_code=False,
                ),
            )
            self.run.define_metric(STEP)
            for prefix in ("ttt/*", "ttrl/*", "traj/*"):
                self.run.define_metric(prefix, step_metric=STEP)
        except Exception as err:  # noqa: BLE001 - W&B must never cost the local results
            log.warning("W&B init failed (%s); results stay local", err)
            self.run = None

    def _guard(self, action, *args, **kwargs):
        if self.run is None:
            return
        try:
            action(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B call failed (%s); results stay local", err)

    def log_step(self, step: int, data: dict) -> None:
        clean = {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.history.append({STEP: step, **clean})
        self._guard(lambda: self.run.log({**clean, STEP: step}))

    def means(self, prefixes: tuple[str, ...]) -> dict[str, float]:
        """The mean over logged steps of every metric whose name starts with one of `prefixes`."""
        series: dict[str, list[float]] = {}
        for row in self.history:
            for key, value in row.items():
                if key.startswith(prefixes) and key != STEP and not math.isnan(value):
                    series.setdefault(key, []).append(value)
        return {key: sum(values) / len(values) for key, values in series.items()}

    def summary(self, data: dict) -> None:
        def update():
            for key, value in data.items():
                if isinstance(value, (int, float, str)) and not (isinstance(value, float) and math.isnan(value)):
                    self.run.summary[key] = value

        self._guard(update)

    def table(self, key: str, rows: list[dict]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        self.media({key: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def media(self, data: dict) -> None:
        """Tables and images, outside the TTT step axis."""
        self._guard(lambda: self.run.log(data))

    def finish(self) -> str | None:
        """Finish the run; in offline mode, return the directory `wandb sync` needs."""
        if self.run is None:
            return None
        directory = getattr(self.run.settings, "sync_dir", None)
        self._guard(self.run.finish)
        self.run = None
        return directory if self.mode == "offline" else None
