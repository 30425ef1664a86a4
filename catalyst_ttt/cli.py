"""`cttt`: run one cell, run a sweep, list what is registered, show status, write a report."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catalyst_ttt.errors import UserError
from catalyst_ttt.schema import ACCESS_MARKS

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Catalyst data regimes x test-time training signals, measured.",
)
console = Console()
err_console = Console(stderr=True)
OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. regime=swapped signal=process ttt.steps=20")
# Every command finds the results store the same way: --runs-dir PATH, or the override runs_dir=PATH.
RUNS_DIR = typer.Option(None, "--runs-dir", help="the results store (default: runs); the same as runs_dir=PATH")
STORE_ARGUMENT = typer.Argument(None, help="runs_dir=PATH: the results store, as run and sweep take it")
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
LIBRARIES = r"(transformers|trl|torch|datasets|accelerate|peft|wandb|pydantic|hydra|omegaconf|joblib|ray)(\.|$)"
SUMMARY_TITLE = "regime x signal — id greedy accuracy, mean [95% bootstrap] over replicates ({})".format(
    ", ".join(f"{mark} {access}" for access, mark in ACCESS_MARKS.items())
)


def _quiet_libraries() -> None:
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


def user_errors(command):
    """Bad input -> one line on stderr and exit code 2, never a traceback; Ctrl-C -> one line, exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            # escaped: a message quotes the user's input, where `[none,correct]` is not rich markup
            err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: a cell it was running is recorded as interrupted; rerun to resume")
            raise typer.Exit(130) from None

    return wrapper


@app.command(context_settings=PASS_THROUGH)
@user_errors
def run(
    overrides: Optional[list[str]] = OVERRIDES,
    show: Optional[str] = typer.Option(None, "--cfg", help="print the composed config and run nothing: job"),
    runs_dir: Optional[str] = RUNS_DIR,
) -> None:
    """Run one cell: base -> catalyst -> ttt -> eval."""
    from omegaconf import OmegaConf

    from catalyst_ttt.config import compose_cell, with_runs_dir
    from catalyst_ttt.results import check_directory

    if show not in (None, "job"):
        raise UserError(f"--cfg {show} is not valid; valid: job")
    cfg = compose_cell(with_runs_dir(list(overrides or []), runs_dir))
    if show:
        console.print(OmegaConf.to_yaml(cfg), highlight=False, markup=False, end="")
        return
    check_directory(cfg.runs_dir, "runs_dir", writable=True)
    check_directory(cfg.cache_dir, "cache_dir", writable=True)
    _quiet_libraries()
    from catalyst_ttt.pipeline import run_cell
    from catalyst_ttt.training import training_progress

    with training_progress(console):
        result = run_cell(cfg)
    _print_cell(result)
    if result.get("wandb_dir"):
        console.print(f"W&B offline run: upload with [bold]wandb sync {result['wandb_dir']}[/bold]")
    if result["status"] == "failed":
        raise typer.Exit(1)


def _print_cell(result: dict) -> None:
    table = Table(
        title=f"{result['cell']} — {result['status']}" + (" (skipped: already done)" if result.get("skipped") else "")
    )
    for column in ("split", "acc/greedy", "maj@k", "step validity"):
        table.add_column(column)
    for split, metrics in result.get("metrics", {}).items():
        maj = next((v for k, v in metrics.items() if k.startswith("acc/maj@")), float("nan"))
        table.add_row(split, f"{metrics['acc/greedy']:.3f}", f"{maj:.3f}", f"{metrics['process/step_validity']:.3f}")
    console.print(table)
    if "ignition" in result:
        console.print(f"ignition (id greedy, catalyst - none, before TTT): {result['ignition']:+.3f}")
    if result.get("error"):
        console.print(f"[red]{result['status']}:[/red] {escape(result['error'])}")
    console.print(f"results: {result['config']['runs_dir']}/{result['sweep']}/{result['cell']}/")


@app.command(context_settings=PASS_THROUGH)
@user_errors
def sweep(
    name: str = typer.Argument("default", help="sweeps/NAME.yaml"),
    overrides: Optional[list[str]] = OVERRIDES,
    jobs: int = typer.Option(1, "--jobs", "-j", help="cells run in parallel on this machine (joblib)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the grid, what is done and cached; run nothing"),
    max_cells: Optional[int] = typer.Option(
        None, "--max-cells", help="the largest grid to run (default 1000: a guard against range(0,100000))"
    ),
    runs_dir: Optional[str] = RUNS_DIR,
) -> None:
    """Run a sweep as a Hydra multirun; finished cells are skipped."""
    from catalyst_ttt import sweep as sweeps
    from catalyst_ttt.config import with_runs_dir
    from catalyst_ttt.results import COMPLETE, check_directory

    if jobs < 1:
        raise UserError(f"--jobs {jobs} is not valid; it must be >= 1")
    if max_cells is not None and max_cells < 1:
        raise UserError(f"--max-cells {max_cells} is not valid; it must be >= 1")
    overrides = with_runs_dir(list(overrides or []), runs_dir)
    plan = sweeps.load_sweep(name, overrides, jobs, max_cells or sweeps.MAX_CELLS)
    cells = plan.cells()
    if dry_run:
        _print_plan(plan, cells)
        return
    check_directory(cells[0].config.runs_dir, "runs_dir", writable=True)
    check_directory(cells[0].config.cache_dir, "cache_dir", writable=True)
    _quiet_libraries()
    console.print(f"sweep [bold]{name}[/bold]: {len(cells)} cells")
    counts = sweeps.launch(plan, cells, console)
    runs_dir = cells[0].config.runs_dir
    console.print(f"results: {runs_dir}/{name}/  ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})")
    console.print(f"report: cttt report {name}    W&B offline runs: wandb sync {runs_dir}/{name}/*/wandb/offline-run-*")
    unfinished = sum(v for k, v in counts.items() if k not in COMPLETE)
    if unfinished:
        err_console.print(f"{unfinished} of {len(cells)} cells did not finish (failed, pending or stale)")
        raise typer.Exit(1)


def _print_plan(sweep, cells) -> None:
    from catalyst_ttt.checkpoints import plan
    from catalyst_ttt.results import COMPLETE

    table = Table(title=f"sweep {sweep.name}: {len(cells)} cells")
    for column in ("cell", "state", "base", "catalyst", "ttt"):
        table.add_column(column)
    for cell in cells:
        steps = plan(cell.config)
        table.add_row(cell.id, cell.state(), steps.base, steps.catalyst, steps.ttt)
    console.print(table)
    done = sum(c.state() in COMPLETE for c in cells)
    console.print(f"{done}/{len(cells)} cells done; axes: {sweep.describe_axes()}")


@app.command()
@user_errors
def status(
    name: str = typer.Argument("default", help="the sweep"),
    overrides: Optional[list[str]] = STORE_ARGUMENT,
    runs_dir: Optional[str] = RUNS_DIR,
) -> None:
    """Cells done / running / failed and the per-group summary, from the results store."""
    from catalyst_ttt.config import runs_dir_of
    from catalyst_ttt.metrics.aggregate import aggregate, rule_of
    from catalyst_ttt.report import summary_table
    from catalyst_ttt.results import read_store, state_counts
    from catalyst_ttt.sweep import cell_states

    runs_dir = runs_dir_of(list(overrides or []), runs_dir)
    store = read_store(runs_dir, name)
    results = store.results
    states = cell_states(name, runs_dir, results)
    tally = state_counts(states.values())
    console.print(
        f"sweep [bold]{name}[/bold]: {len(states)} cells — " + ", ".join(f"{k}={v}" for k, v in sorted(tally.items()))
    )
    for cell, state in sorted(states.items()):
        if state.startswith(("running", "stale")) or state in ("failed", "interrupted"):
            console.print(f"  {state:<20} {cell}", highlight=False)
    for path in store.corrupt:
        console.print(f"  {'damaged, left out':<20} {path}", highlight=False, markup=False, soft_wrap=True)
    console.print(summary_table(aggregate(results, rule_of(results)), SUMMARY_TITLE))


@app.command()
@user_errors
def report(
    name: str = typer.Argument("default", help="the sweep"),
    overrides: Optional[list[str]] = STORE_ARGUMENT,
    runs_dir: Optional[str] = RUNS_DIR,
    open_html: bool = typer.Option(False, "--open", help="open report.html in a browser"),
    wandb_log: bool = typer.Option(True, "--wandb/--no-wandb", help="also log the report as a W&B run"),
) -> None:
    """Tables, plots and a generated answer from a sweep's results store."""
    from catalyst_ttt.config import runs_dir_of
    from catalyst_ttt.report import build_report, log_to_wandb, summary_table, write_report

    runs_dir = runs_dir_of(list(overrides or []), runs_dir)
    result = build_report(runs_dir, name)
    _quiet_libraries()
    directory = write_report(result, runs_dir)
    console.print(summary_table(result.groups, SUMMARY_TITLE))
    console.print("[bold]The answer[/bold]")
    for sentence in result.answer:
        console.print(f"- {sentence}", highlight=False)
    console.print(f"report: {directory / 'report.md'}  {directory / 'report.html'}")
    if wandb_log:
        offline = log_to_wandb(result)
        if offline:
            console.print(f"W&B report run (offline): wandb sync {offline}")
    if open_html:
        import webbrowser

        webbrowser.open((directory / "report.html").resolve().as_uri())


@app.command("list")
@user_errors
def list_units() -> None:
    """The registered tasks, regimes, signals, models and sweeps."""
    from catalyst_ttt.config import CONF_DIR
    from catalyst_ttt.regimes import REGIMES
    from catalyst_ttt.signals import SIGNALS
    from catalyst_ttt.sweep import available_sweeps
    from catalyst_ttt.tasks import TASKS

    table = Table(title="catalyst-ttt")
    table.add_column("kind")
    table.add_column("names")
    table.add_row("task", ", ".join(TASKS.names()))
    table.add_row("regime", ", ".join(REGIMES.names()))
    table.add_row("model", ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))))
    table.add_row("sweep", ", ".join(available_sweeps()))
    console.print(table)
    signals = Table(title="signals")
    for column in ("signal", "trainer", "access", "what it rewards"):
        signals.add_column(column)
    for name in SIGNALS.names():
        signal = SIGNALS.get(name)
        signals.add_row(name, signal.trainer or "-", signal.access_note(), signal.description)
    console.print(signals)


def main() -> None:
    app(prog_name="cttt")


if __name__ == "__main__":
    sys.exit(main())
