"""Where a report's cells come from: a sweep's results store (runs/<sweep>/), or the compact `results.jsonl`
that every report writes beside itself and that rebuilds it alone (`cttt report --from`).

`results.jsonl` holds one JSON line per record: first the study (sweep name and description, the grid
recorded by `cttt sweep`, what the store held besides), then one line per aggregated cell: its result.json
with the trajectory inline, and every 0/1 vector (per-item correctness per split and arm, per trajectory
step) written as a string of 0s and 1s. A report built from the store and one built from its file are the
same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from catalyst_ttt.errors import UserError, did_you_mean
from catalyst_ttt.metrics.aggregate import FINISHED
from catalyst_ttt.results import GRID, TRAJECTORY, read_record, read_store, sweep_dir, write_atomic
from catalyst_ttt.sweep import available_sweeps, sweep_description

RESULTS_FILE = "results.jsonl"
FORMAT = 1  # of results.jsonl; bumped when a reader could misread an older file
STUDY, CELL = "study", "cell"  # the `record` of a line
MACHINE_ONLY = ("host", "wandb_dir", "skipped")  # where a cell ran, not what it measured


@dataclass
class Cells:
    """The cells one report aggregates, and what it says about where they came from."""

    sweep: str
    description: str  # the sweep file's
    results: list[dict]  # result.json records, trajectory inline (key `trajectory`) where one was written
    grid: dict | None = None  # grid.json as `cttt sweep` recorded it; None for cells of `cttt run`
    left_out: int = 0  # result.json files of the store outside the recorded grid
    unreadable: list[str] = field(default_factory=list)  # result.json files that could not be read
    source: Path | None = None  # the results.jsonl it was read from; None for a results store


def from_store(runs_dir: str | Path, sweep: str) -> Cells:
    """The recorded grid's cells (every readable cell where no grid was recorded), trajectories attached."""
    root = sweep_dir(runs_dir, sweep)
    if not root.is_dir():
        raise missing_sweep(runs_dir, sweep)
    store = read_store(runs_dir, sweep)
    grid = read_record(root / GRID)  # a damaged grid is no grid: every readable cell is aggregated
    results = of_grid(store.results, grid)
    for result in results:
        trajectory = read_record(root / result["cell"] / TRAJECTORY)
        if trajectory:
            result["trajectory"] = trajectory
    if not any(r["status"] in FINISHED for r in results):
        raise UserError(f"sweep {sweep!r} has no finished cells in {root}; run `cttt sweep {sweep}` first")
    return Cells(
        sweep,
        sweep_description((grid or {}).get("file") or f"{sweep}.yaml"),
        results,
        grid,
        left_out=len(store.results) - len(results),
        unreadable=[str(p) for p in store.corrupt],
    )


def of_grid(results: list[dict], grid: dict | None) -> list[dict]:
    """The cells of the recorded grid (same cell id and config hash); every cell without a grid record."""
    if not grid:
        return results
    return [r for r in results if grid["cells"].get(r.get("cell")) == r.get("config_hash")]


def missing_sweep(runs_dir: str | Path, sweep: str) -> UserError:
    """No results for `sweep`: run it, when it is a sweep file; else the near miss among sweep files and the
    store's sweeps (`cttt report defualt` must not suggest running `cttt sweep defualt`)."""
    if sweep in available_sweeps():
        return UserError(f"no results for sweep {sweep!r} in {runs_dir}; run `cttt sweep {sweep}` first")
    stored = [p.name for p in Path(runs_dir).iterdir() if p.is_dir()] if Path(runs_dir).is_dir() else []
    hint = did_you_mean(sweep, sorted({*available_sweeps(), *stored}))
    return UserError(f"no results for sweep {sweep!r} in {runs_dir}{hint or f', and no sweeps/{sweep}.yaml to run'}")


# -- results.jsonl --------------------------------------------------------------------------


def write_file(cells: Cells, path: Path) -> None:
    study = {
        "record": STUDY,
        "format": FORMAT,
        "sweep": cells.sweep,
        "description": cells.description,
        "grid": cells.grid,
        "left_out": cells.left_out,
        "unreadable": cells.unreadable,
    }
    lines = [study] + [{"record": CELL} | compact(result) for result in cells.results]
    write_atomic(path, "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines))


def read_file(path: str | Path) -> Cells:
    """A results.jsonl as written by `write_file`; anything else is the user's error, said with its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not a JSON line ({err.msg})") from None
    if not records or not isinstance(records[0], dict) or records[0].get("record") != STUDY:
        raise UserError(f"{path}: not a cttt results file (its first line must be the study record)")
    study = records[0]
    if study.get("format") != FORMAT:
        raise UserError(f"{path}: results format {study.get('format')!r}; this cttt reads format {FORMAT}")
    results = []
    for number, record in enumerate(records[1:], start=2):
        if not isinstance(record, dict) or record.get("record") != CELL or not {"status", "axes"} <= set(record):
            raise UserError(f"{path}:{number}: not a cell record")
        results.append(expand({k: v for k, v in record.items() if k != "record"}))
    return Cells(
        study["sweep"],
        study.get("description", ""),
        results,
        study.get("grid"),
        study.get("left_out", 0),
        list(study.get("unreadable", [])),
        source=path,
    )


def compact(result: dict) -> dict:
    """A result without machine-only keys, its 0/1 vectors as strings."""
    out = {key: value for key, value in result.items() if key not in MACHINE_ONLY}
    if "items" in out:
        out["items"] = {split: {arm: _bits(v) for arm, v in arms.items()} for split, arms in out["items"].items()}
    if "trajectory" in out:
        out["trajectory"] = [_map_correct(row, _bits) for row in out["trajectory"]]
    return out


def expand(record: dict) -> dict:
    """The inverse of `compact` (0/1 vectors back as lists of ints)."""
    if "items" in record:
        record["items"] = {split: {arm: _ints(v) for arm, v in arms.items()} for split, arms in record["items"].items()}
    if "trajectory" in record:
        record["trajectory"] = [_map_correct(row, _ints) for row in record["trajectory"]]
    return record


def _map_correct(row: dict, convert) -> dict:
    """A trajectory row {"step", split: {"acc", "step_validity", "correct"}} with `correct` converted."""
    return {
        key: value | {"correct": convert(value["correct"])} if isinstance(value, dict) and "correct" in value else value
        for key, value in row.items()
    }


def _bits(vector) -> str:
    return "".join("1" if x else "0" for x in vector)


def _ints(bits: str) -> list[int]:
    return [int(c) for c in bits]
