"""What the libraries print: their progress bars and advice are silenced in every process that runs cells
(the CLI and every launcher's worker), so a sweep's log holds one line per cell."""

from __future__ import annotations

import logging
import os
import warnings

LIBRARIES = r"(transformers|trl|torch|datasets|accelerate|peft|wandb|pydantic|hydra|omegaconf|joblib|ray)(\.|$)"


def quiet_libraries() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("hydra").setLevel(logging.WARNING)
    # Only the libraries' own advice is silenced; a warning from this package or the user's code shows.
    warnings.filterwarnings("ignore", category=FutureWarning, module=LIBRARIES)
    warnings.filterwarnings("ignore", category=UserWarning, module=LIBRARIES)
