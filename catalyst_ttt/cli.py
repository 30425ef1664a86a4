"""`cttt`: run one cell, run a sweep, list what is registered, show status, write a report."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catalyst_ttt.errors import UserError, did_you_mean
from catalyst_ttt.quiet import quiet_libraries

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: fits 80 columns, and a flag is not shown as taking a <bool>
    help="Catalyst data regimes x test-time training signals, measured. Example: cttt sweep default --jobs 2",
)
console = Console()
err_console = Console(stderr=True)
OVERRIDES = typer.Argument(
    None, metavar="OVERRIDES", help="Hydra overrides, e.g. regime=swapped signal=process ttt.steps=20"
)
SWEEP_NAME = typer.Argument("default", metavar="SWEEP", help="a sweep: sweeps/SWEEP.yaml (cttt list)")
# Every command takes the results store as --runs-dir DIR; run and sweep also as the override runs_dir=DIR.
RUNS_DIR = typer.Option(None, "--runs-dir", metavar="DIR", help="where the results store is (default: runs)")
RESULTS_FROM = typer.Option(
    None,
    "--from",
    metavar="RESULTS.JSONL",
    help="rebuild the report from a results.jsonl alone, beside it (no results store, no W&B run)",
)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def reject_options(ctx: typer.Context, overrides: list[str] | None) -> None:
    """A mistyped flag (`--dryrun`) would reach Hydra as an override it cannot parse: name it instead."""
    for arg in overrides or []:
        if arg.startswith("-"):
            flag = arg.split("=")[0]
            known = sorted({o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o[:2] == "--"})
            known.append("--help")
            raise UserError(f"no such option {flag!r}{did_you_mean(flag, known)} options: {', '.join(known)}")


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
    ctx: typer.Context,
    overrides: Optional[list[str]] = OVERRIDES,
    show: Optional[str] = typer.Option(
        None, "--cfg", metavar="job", help="print the composed config and run nothing (the one value: job)"
    ),
    runs_dir: Optional[str] = RUNS_DIR,
) -> None:
    """Run one cell: base -> catalyst -> ttt -> eval.

    Example: cttt run regime=swapped signal=process seed=1
    """
    from omegaconf import OmegaConf

    from catalyst_ttt.config import compose_cell, with_runs_dir
    from catalyst_ttt.results import check_directory

    reject_options(ctx, overrides)
    if show not in (None, "job"):
        raise UserError(f"--cfg {show} is not valid; valid: job")
    cfg = compose_cell(with_runs_dir(list(overrides or []), runs_dir))
    if show:
        console.print(OmegaConf.to_yaml(cfg), highlight=False, markup=False, end="")
        return
    check_directory(cfg.runs_dir, "runs_dir", writable=True)
    check_directory(cfg.cache_dir, "cache_dir", writable=True)
    quiet_libraries()
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
    ctx: typer.Context,
    name: str = SWEEP_NAME,
    overrides: Optional[list[str]] = OVERRIDES,
    jobs: int = typer.Option(1, "--jobs", "-j", metavar="N", help="cells run in parallel on this machine (joblib)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the grid, what is done and cached; run nothing"),
    max_cells: Optional[int] = typer.Option(
        None, "--max-cells", help="the largest grid to run (default 1000: a guard against range(0,100000))"
    ),
    runs_dir: Optional[str] = RUNS_DIR,
) -> None:
    """Run a sweep as a Hydra multirun; finished cells are skipped.

    Example: cttt sweep default seed=0 base.seed=0 --jobs 2
    """
    from catalyst_ttt import sweep as sweeps
    from catalyst_ttt.config import with_runs_dir
    from catalyst_ttt.results import COMPLETE, check_directory

    reject_options(ctx, overrides)
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
    quiet_libraries()
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
    """One row per cell: its axis values (an axis with one value goes to the title), state, and what it still
    needs (checkpoints.plan: the pipeline's own keys, damaged checkpoints never called cached)."""
    from omegaconf import DictConfig, OmegaConf

    from catalyst_ttt.checkpoints import plan
    from catalyst_ttt.results import COMPLETE

    def shown(node) -> str:  # a group (regime, signal, ...) by its name
        return str(node.name if isinstance(node, DictConfig) else node)

    values: dict[str, set[str]] = {}  # every value an axis takes in any block
    for axes in sweep.blocks:
        for key, options in axes.items():
            values.setdefault(key, set()).update(options)
    varying = [key for key, seen in values.items() if len(seen) > 1]
    fixed = [f"{key}={next(iter(seen))}" for key, seen in values.items() if len(seen) == 1]
    table = Table(
        title=f"sweep {sweep.name}: {len(cells)} cells" + (f" ({', '.join(fixed)})" if fixed else ""),
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    leaves = [key.split(".")[-1] for key in varying]
    for key, leaf in zip(varying, leaves):
        table.add_column(leaf if leaves.count(leaf) == 1 else key)  # catalyst.n -> n, but base.seed beside seed
    for column in ("state", "base", "catalyst", "ttt"):
        table.add_column(column)
    states = [cell.state() for cell in cells]
    for cell, state in zip(cells, states):
        steps = plan(cell.config)
        coordinates = (shown(OmegaConf.select(cell.config, key)) for key in varying)
        table.add_row(*coordinates, state, steps.base, steps.catalyst, steps.ttt)
    console.print(table)
    done = sum(state in COMPLETE for state in states)
    console.print(f"{done}/{len(cells)} cells done; axes: {sweep.describe_axes()}", highlight=False)


@app.command()
@user_errors
def status(name: str = SWEEP_NAME, runs_dir: Optional[str] = RUNS_DIR) -> None:
    """Cells done, running or failed, and the verdicts so far.

    Example: cttt status default
    """
    from catalyst_ttt import sweep as sweeps
    from catalyst_ttt.config import quote, runs_dir_of
    from catalyst_ttt.report.loading import missing_sweep
    from catalyst_ttt.report.terminal import summary_of
    from catalyst_ttt.results import read_store, state_counts, sweep_dir

    runs_dir = runs_dir_of(runs_dir)
    if not sweep_dir(runs_dir, name).is_dir():
        if name not in sweeps.available_sweeps():
            raise missing_sweep(runs_dir, name)
        _print_unrun(sweeps.load_sweep(name, [f"runs_dir={quote(runs_dir)}"]))
        return
    store = read_store(runs_dir, name)
    results = store.results
    states = sweeps.cell_states(name, runs_dir, results)
    tally = state_counts(states.values())
    console.print(
        f"sweep [bold]{name}[/bold]: {len(states)} cells — " + ", ".join(f"{k}={v}" for k, v in sorted(tally.items()))
    )
    for cell, state in sorted(states.items()):
        if state.startswith(("running", "stale")) or state in ("failed", "interrupted"):
            console.print(f"  {state:<20} {cell}", highlight=False)
    for path in store.corrupt:
        console.print(f"  {'damaged, left out':<20} {path}", highlight=False, markup=False, soft_wrap=True)
    for renderable in summary_of(name, results):
        console.print(renderable)


def _print_unrun(sweep) -> None:
    """`cttt status` before the first cell of a sweep: its plan, and how to run it."""
    cells = sweep.cells()
    console.print(f"sweep [bold]{sweep.name}[/bold]: 0 of {len(cells)} cells done (nothing has run yet)")
    console.print(f"  axes: {sweep.describe_axes()}", highlight=False)
    console.print(f"run it: cttt sweep {sweep.name}    grid and cache: cttt sweep {sweep.name} --dry-run")


@app.command()
@user_errors
def report(
    name: Optional[str] = typer.Argument(None, metavar="SWEEP", help="a sweep (default: default)"),
    runs_dir: Optional[str] = RUNS_DIR,
    source: Optional[Path] = RESULTS_FROM,
    open_html: bool = typer.Option(False, "--open", help="open report.html in a browser"),
    wandb_log: bool = typer.Option(True, "--wandb/--no-wandb", help="also log the report as a W&B run"),
) -> None:
    """Write a sweep's report, plots and per-cell results.jsonl.

    Example: cttt report --from docs/results/default/results.jsonl
    """
    from catalyst_ttt.config import runs_dir_of
    from catalyst_ttt.report import build, from_store, read_file
    from catalyst_ttt.report.answer import headline
    from catalyst_ttt.report.page import REPORT_HTML, REPORT_MD, write_report
    from catalyst_ttt.report.terminal import summary
    from catalyst_ttt.report.wandb_run import log_to_wandb
    from catalyst_ttt.results import sweep_dir

    if source is not None:
        cells = read_file(source)
        if name and name != cells.sweep:
            raise UserError(f"{source} holds sweep {cells.sweep!r}, not {name!r}")
        directory = source.parent
    else:
        runs_dir = runs_dir_of(runs_dir)
        cells = from_store(runs_dir, name or "default")
        directory = sweep_dir(runs_dir, cells.sweep) / "report"
    result = build(cells)
    quiet_libraries()
    plots = write_report(result, directory)
    for renderable in summary(result):
        console.print(renderable)
    console.print("[bold]The answer[/bold]")
    for line in headline(result):
        console.print(f"- {line}", highlight=False)
    console.print(f"report: {directory / REPORT_MD}  {directory / REPORT_HTML}", highlight=False, soft_wrap=True)
    if wandb_log and source is None:
        offline = log_to_wandb(result, plots, directory)
        if offline:
            console.print(f"W&B report run (offline): wandb sync {offline}", highlight=False, soft_wrap=True)
    if open_html:
        import webbrowser

        webbrowser.open((directory / REPORT_HTML).resolve().as_uri())


@app.command("list")
@user_errors
def list_units() -> None:
    """The registered tasks, regimes, models, sweeps and signals.

    Example: cttt list
    """
    from catalyst_ttt.config import CONF_DIR
    from catalyst_ttt.regimes import REGIMES
    from catalyst_ttt.signals import SIGNALS
    from catalyst_ttt.sweep import available_sweeps, sweep_description
    from catalyst_ttt.tasks import TASKS

    units = _named_rows()
    units.add_row("tasks", ", ".join(TASKS.names()))
    units.add_row("regimes", ", ".join(REGIMES.names()))
    units.add_row("models", ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))))
    console.print(units)
    sweeps = _named_rows()
    for name in available_sweeps():
        sweeps.add_row(name, sweep_description(f"{name}.yaml"))
    console.print("\n[bold]sweeps[/bold] (cttt sweep NAME)", sweeps)
    signals = _named_rows()
    for name in SIGNALS.names():
        signal = SIGNALS.get(name)
        signals.add_row(name, f"[italic]{signal.trainer or 'no training'}; {signal.access_note()}[/italic]")
        signals.add_row("", signal.description)
    console.print("\n[bold]signals[/bold] (signal=NAME; trainer; access)", signals)


def _named_rows() -> Table:
    """Two columns, a name and its text wrapped to the terminal's width: readable at 80 columns."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def main() -> None:
    app(prog_name="cttt")


if __name__ == "__main__":
    sys.exit(main())
