"""`gsm8k`: grade-school math in GSM8K form, from a local JSONL/Parquet file or a hub dataset.

A row has `question` and `answer`; the answer's lines are the steps, with calculator
annotations `<<expr=value>>`, and a final `#### N`. The process verifier recomputes every
annotation with a whitelisted arithmetic evaluator (never `eval`); answers are compared with
math-verify.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import random
import re
from dataclasses import dataclass
from pathlib import Path

from catalyst_ttt.errors import UserError, read_user_text
from catalyst_ttt.network import check_hub_id
from catalyst_ttt.tasks.base import TASKS, TRAINING_SPLITS, Parsed, Problem, Task

FINAL = "####"
# A gold answer as GSM8K writes it. `float` would also take `1_000`, `1e3`, `inf` or non-ASCII digits,
# which a model's `1000` then never equals.
DECIMAL = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# Model output is evaluated here, so every bound is on the input and on each intermediate result:
# a calculator line is short, shallow and about numbers a grade-school problem can hold.
MAX_CHARS = 200
MAX_DEPTH = 32
MAX_MAGNITUDE = 1e15
MAX_EXPONENT = 64


class UnsafeExpression(ValueError):
    pass


def safe_eval(expression: str) -> float:
    """Evaluate + - * / // % ** on numbers. Any other syntax (names, calls, attributes), a result
    that is complex, not finite or beyond MAX_MAGNITUDE, or an expression too long or too deep raises."""
    text = expression.replace(",", "").strip()
    if len(text) > MAX_CHARS:
        raise UnsafeExpression(f"longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(f"not arithmetic: {expression[:40]!r}") from err

    def bounded(value):
        if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise UnsafeExpression("a result is complex, not finite or too large")
        return value

    def walk(node, depth: int):
        if depth > MAX_DEPTH:
            raise UnsafeExpression(f"nested deeper than {MAX_DEPTH}")
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return bounded(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            left, right = walk(node.left, depth + 1), walk(node.right, depth + 1)
            if isinstance(node.op, ast.Pow) and (
                abs(right) > MAX_EXPONENT
                or (abs(left) > 1 and right > 0 and right * math.log10(abs(left)) > math.log10(MAX_MAGNITUDE))
            ):
                raise UnsafeExpression("power too large")
            return bounded(BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            return UNARY[type(node.op)](walk(node.operand, depth + 1))
        raise UnsafeExpression(f"not arithmetic: {type(node).__name__}")

    try:
        return float(walk(tree.body, 0))
    except (ZeroDivisionError, OverflowError) as err:
        raise UnsafeExpression(str(err)) from err


def annotation_valid(expression: str, claimed: str) -> bool:
    try:
        value = safe_eval(expression)
        target = float(claimed.replace(",", "").strip())
    except (UnsafeExpression, ValueError):
        return False
    return abs(value - target) <= 1e-6 * max(1.0, abs(target))


@dataclass
class GSM8KConfig:
    path: str | None = None  # a .jsonl/.json or .parquet file in GSM8K form
    dataset: str | None = None  # or a Hugging Face dataset id, where a hub is reachable
    dataset_config: str = "main"
    dataset_split: str = "train"
    max_steps: int = 4  # problems with more solution lines form the `shift_steps` split
    n_train: int = 256
    n_reader: int = 64  # correct solutions the IG reader is fine-tuned on
    n_id: int = 64
    n_heldout: int = 64
    n_shift: int = 64
    max_completion_chars: int = 400
    seed: int = 1234


def _load_rows(cfg: GSM8KConfig) -> list[tuple[str, dict]]:
    """(location, row) pairs; every malformed input is a one-line UserError naming where."""
    if cfg.path is None and cfg.dataset is None:
        raise UserError("task gsm8k needs task.path=<file.jsonl|file.parquet> or task.dataset=<hub id>")
    if cfg.path is None:
        check_hub_id(cfg.dataset, "task.dataset", "dataset")
        from datasets import load_dataset

        try:
            data = load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.dataset_split)
        except Exception as err:  # noqa: BLE001 - any hub failure is the user's to fix
            raise UserError(f"task.dataset={cfg.dataset!r} could not be loaded: {str(err).splitlines()[0]}") from None
        return [(f"{cfg.dataset}[{i}]", row) for i, row in enumerate(data)]
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise UserError(f"task.path={cfg.path!r}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001
            raise UserError(f"{path}: not a readable Parquet file ({err})") from None
        return [(f"{path}:row {i + 1}", row) for i, row in enumerate(rows)]
    return [(f"{path}:{number}", row) for number, row in _read_jsonl(path)]


def _read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed row) for every non-blank line of a UTF-8 JSON Lines file."""
    rows = []
    # Lines end at \n only (JSON Lines): `splitlines` would also break inside a string at U+2028 or U+0085.
    for number, line in enumerate(read_user_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        except RecursionError:
            raise UserError(f"{path}:{number}: JSON nested too deeply for a row") from None
        except ValueError as err:  # e.g. an integer literal beyond Python's digit limit
            raise UserError(f"{path}:{number}: invalid JSON ({str(err).splitlines()[0]})") from None
    return rows


def _problem(location: str, row) -> Problem:
    if not isinstance(row, dict):
        raise UserError(f"{location}: a row must be an object with 'question' and 'answer'")
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise UserError(f"{location}: row has no '{key}' string")
    body, mark, final = row["answer"].rpartition(FINAL)
    if not mark or not final.strip():
        raise UserError(f"{location}: answer has no final '#### N' line")
    answer = final.strip().replace(",", "")
    if not DECIMAL.fullmatch(answer):
        raise UserError(
            f"{location}: final answer {answer[:40]!r} is not a number; valid: ASCII digits with an optional "
            "sign and decimal point (e.g. 1000, -3, 0.5; commas are dropped)"
        )
    steps = tuple(line.strip() for line in body.strip().splitlines() if line.strip())
    return Problem(uid=location, prompt=row["question"].strip() + "\n", steps=steps, answer=answer, spec={})


def _distinct(problems: list[Problem]) -> list[Problem]:
    """Each question once: a repeated row would land in a training pool and an eval split at once.
    A repeat with the same gold answer is dropped; one with another answer is refused (which is gold?)."""
    first: dict[str, Problem] = {}
    for problem in problems:
        seen = first.setdefault(problem.prompt, problem)
        if seen.answer != problem.answer:
            raise UserError(
                f"{problem.uid}: the question of {seen.uid} again, with answer {problem.answer!r} instead of "
                f"{seen.answer!r}; keep one row per question"
            )
    return list(first.values())


@TASKS.register("gsm8k")
class GSM8K(Task):
    name = "gsm8k"
    config_class = GSM8KConfig
    has_full_verifier = False  # the calculator check cannot tell whether a line is the plan's next step
    has_format_shift = False  # no shift_format split: its prompts carry no noise setting

    def __init__(self, cfg: GSM8KConfig):
        self.cfg = cfg
        self.max_completion_chars = cfg.max_completion_chars
        self.problems = _distinct([_problem(location, row) for location, row in _load_rows(cfg)])
        if not self.problems:
            raise UserError(f"task gsm8k: {cfg.path or cfg.dataset} holds no problems")

    def render(self, steps, answer: str) -> str:
        return "".join(f"{s}\n" for s in steps) + f"{FINAL} {answer}"

    def parse(self, text: str) -> Parsed:
        body, mark, tail = text.partition(FINAL)
        steps = tuple(line.strip() for line in body.splitlines() if line.strip())
        answer = self._answer(tail.strip().split("\n")[0].strip().replace(",", "")) if mark else None
        return Parsed(steps=steps, answer=answer)

    def is_answer(self, text: str) -> bool:
        """Something math-verify reads as a number or expression."""
        from math_verify import parse

        try:
            return bool(parse(text))
        except Exception:  # noqa: BLE001 - math-verify's parser raises on odd input: not an answer
            return False

    def answers_equal(self, predicted: str | None, gold: str) -> bool:
        if predicted is None:
            return False
        if predicted == gold:
            return True
        from math_verify import parse, verify

        try:
            return bool(verify(parse(gold), parse(predicted)))
        except Exception:  # noqa: BLE001 - an unparseable prediction is simply wrong
            return False

    def splits(self) -> dict[str, list[Problem]]:
        cfg = self.cfg
        order = random.Random(cfg.seed).sample(self.problems, len(self.problems))
        short = [p for p in order if p.num_steps <= cfg.max_steps]
        long = [p for p in order if p.num_steps > cfg.max_steps]
        # id and heldout first, so the TTT prompts exist even for a small file
        id_, heldout = short[: cfg.n_id], short[cfg.n_id : cfg.n_id + cfg.n_heldout]
        rest = short[cfg.n_id + cfg.n_heldout :]
        train, reader = rest[: cfg.n_train], rest[cfg.n_train :][: cfg.n_reader]
        return {"train": train, "reader": reader, "id": id_, "heldout": heldout, "shift_steps": long[: cfg.n_shift]}

    def base_corpus(self) -> list[str]:
        """Questions alone and solution lines alone of the training pools: never a question followed
        by its solution, and nothing of an evaluated item."""
        pools = [p for name in TRAINING_SPLITS for p in self.splits()[name]]
        return [p.prompt for p in pools] + [s for p in pools for s in p.steps]

    def step_valid(self, problem: Problem, index: int, step: str, previous: str | None, local: bool = False) -> bool:
        """Every calculator annotation in the step must recompute; a step without one is prose.

        This is a local check whatever `local` says: nothing in a GSM8K problem states its plan.
        """
        if "<<" in step and not ANNOTATION.search(step):
            return False
        return all(annotation_valid(expr, value) for expr, value in ANNOTATION.findall(step))

    def illogical_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """The gold lines verbatim (every calculator fact stays true), rotated by one so the last
        line comes first: each line now states a result before the results it is computed from.
        A one-line solution has no order to break and keeps its line."""
        steps = list(problem.steps)
        return tuple(steps[-1:] + steps[:-1])

    def corrupted_steps(self, problem: Problem, rng: random.Random) -> tuple[str, ...]:
        """The same lines with every annotated result (and its echo in the text) perturbed."""

        def perturb(match: re.Match) -> str:
            expr, value = match.group(1), match.group(2)
            try:
                number = float(value.replace(",", ""))
            except ValueError:
                return match.group(0)
            delta = rng.choice([-3, -2, -1, 1, 2, 3]) * max(1, round(abs(number) * 0.1))
            wrong = number + delta if number + delta >= 0 or number < 0 else number + abs(delta)  # keep the sign
            text = str(int(wrong)) if float(wrong).is_integer() else f"{wrong:g}"
            return f"<<{expr}={text}>>" + (text if match.group(3) else "")

        steps = []
        for step in problem.steps:
            # `<<48/2=24>>24`: the annotation and the number the text repeats after it
            steps.append(re.sub(r"<<([^<>=]*)=([^<>]*)>>(-?\d[\d,]*(?:\.\d+)?)?", perturb, step))
        return tuple(steps)


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Made-up word problems in GSM8K's form (annotated lines, then `#### N`), a third of them longer
    than `max_steps`: data for tests and the device check, where no data set can be downloaded."""
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
