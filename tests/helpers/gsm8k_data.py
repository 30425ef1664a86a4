"""A small GSM8K-form data set that tests write to disk (nothing is downloaded)."""

import json
import random
from pathlib import Path


def gsm8k_rows(n: int, seed: int = 0) -> list[dict]:
    """Word problems with GSM8K's answer format: annotated lines, then `#### N`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 9)
        c = rng.randint(1, a * b - 1)
        lines = [
            f"Each box holds {b} apples, so {a} boxes hold {a}*{b} = <<{a}*{b}={a * b}>>{a * b} apples.",
            f"After eating {c}, {a * b}-{c} = <<{a * b}-{c}={a * b - c}>>{a * b - c} are left.",
        ]
        if i % 3 == 0:  # some longer problems, for the shift_steps split
            lines += [
                f"Half of them is {a * b - c}/2 = <<{a * b - c}/2={(a * b - c) / 2:g}>>{(a * b - c) / 2:g}.",
                "She keeps that half.",
                f"Then {(a * b - c) / 2:g}*1 = <<{(a * b - c) / 2:g}*1={(a * b - c) / 2:g}>>.",
            ]
            final = f"{(a * b - c) / 2:g}"
        else:
            final = str(a * b - c)
        question = f"Ann has {a} boxes of {b} apples and eats {c}." + (" She gives half away." if i % 3 == 0 else "")
        rows.append({"question": question + " How many are left?", "answer": "\n".join(lines) + f"\n#### {final}"})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
