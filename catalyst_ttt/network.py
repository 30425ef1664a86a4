"""Hosts a cell may need: the Hugging Face hub (a hub id for a model or a data set) and W&B online.

Each host is asked once per process, with a short timeout. Without a network, a hub id fails at once
with one line; the hub client would retry for 25-54 s first.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from pathlib import Path

from catalyst_ttt.errors import UserError

PROBE_SECONDS = 3.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # the hub clients' own offline switches


@functools.cache
def reachable(url: str) -> bool:
    """Whether `url`'s server answers at all (any HTTP status) within PROBE_SECONDS; the environment's
    proxy settings apply, as they do for the hub and W&B clients."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):  # no route, no name, refused, timed out
        return False
    return True


def check_hub_id(reference: str, key: str, kind: str) -> None:
    """`reference` (a `kind`: model or dataset) is a hub id: refuse it at once where it cannot be had
    (the hub is out of reach, or offline mode is set, and it is not in the local hub cache)."""
    from huggingface_hub import constants  # light: no torch; only for hub ids

    cached = _in_hub_cache(Path(constants.HF_HUB_CACHE), reference, kind)
    local = "a local directory" if kind == "model" else "a local file (task.path)"
    offline = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]
    if offline and not cached:
        raise UserError(
            f"{key}={reference!r} is a hub id, but {offline[0]} is set and it is not in the local hub cache "
            f"({constants.HF_HUB_CACHE}); give {local}, or unset {offline[0]} where the hub is reachable"
        )
    if not offline and not reachable(constants.ENDPOINT):
        hint = "it is in the local hub cache: set HF_HUB_OFFLINE=1 to load it from there" if cached else f"give {local}"
        raise UserError(f"{key}={reference!r} is a hub id, but {constants.ENDPOINT} cannot be reached; {hint}")


def _in_hub_cache(cache: Path, reference: str, kind: str) -> bool:
    snapshots = cache / f"{kind}s--{reference.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())
