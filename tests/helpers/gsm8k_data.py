"""A small GSM8K-form data set that tests write to disk (nothing is downloaded)."""

import json
from pathlib import Path

from catalyst_ttt.tasks.gsm8k import synthetic_rows as gsm8k_rows

__all__ = ["gsm8k_rows", "write_jsonl"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
