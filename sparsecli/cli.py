"""Typer wiring only: parse options, call a stage, print its metrics, map errors to exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 bad params or usage, 130 interrupted.
Heavy libraries (torch, ray, dvc) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from sparsecli import __version__

app = typer.Typer(
    name="sparsecli",
    help="Experiment workflow for sparse neural networks: each command is one DVC pipeline stage.",
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="Params file to read.", envvar="SPARSECLI_PARAMS")
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-S", help="Override a param: key.path=value (as `dvc exp run -S`); repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the stage's metrics as JSON on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")]

# Metrics a stage's one-line summary shows, when present.
SUMMARY_KEYS = ("test_accuracy", "weight_sparsity", "activation_sparsity", "mac_reduction", "samples", "classes",
                "front_size", "hypervolume", "cost_full_trainings", "selected_trial")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sparsecli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Experiment workflow for sparse neural networks: each command is one DVC pipeline stage."""


def _error(text: str) -> None:
    typer.echo(f"error: {text}", err=True)


def _progress(quiet: bool, as_json: bool):
    from sparsecli.progress import BarProgress, LineProgress, Progress

    if quiet:
        return Progress()
    if as_json:  # keep stdout for the JSON
        return LineProgress(sys.stderr)
    return BarProgress() if sys.stdout.isatty() else LineProgress()


def _run(name: str, params_path: Path, overrides: list[str] | None, as_json: bool, quiet: bool,
         verbose: bool, call: Callable, overlays: Callable[[], list] | None = None) -> None:
    """Load params, run a stage, print its metrics; every failure becomes one line and an exit code."""
    from sparsecli.errors import SparsecliError

    try:
        from sparsecli.params import load_params

        params = load_params(params_path, overrides or [], overlays() if overlays else [])
        metrics = call(params, _progress(quiet, as_json))
    except SparsecliError as e:
        if verbose:
            raise
        _error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        _error(f"{name} interrupted; rerun the same command to resume")
        raise typer.Exit(130) from None
    except Exception as e:  # a bug, not a user error: still one line unless -v
        if verbose:
            raise
        _error(f"{name} failed: {type(e).__name__}: {e} (rerun with -v for the traceback)")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    elif not quiet:
        shown = ", ".join(f"{k} {_fmt(metrics[k])}" for k in SUMMARY_KEYS if k in metrics)
        typer.echo(f"{name}: done. {shown}")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command()
def data(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Load the dataset, split it (stratified, seeded) and standardise it into data/."""

    def call(p, progress):
        from sparsecli.stages import data as stage

        return stage.run(p)

    _run("data", params, set_, as_json, quiet, verbose, call)


@app.command()
def train(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train the sparse model: models/train.pt, metrics/train.json, runs/train/ (TensorBoard)."""

    def call(p, progress):
        from sparsecli.stages import train as stage

        return stage.run(p, progress=progress)

    def overlays():
        from sparsecli.stages.train import param_overlays

        return param_overlays()

    _run("train", params, set_, as_json, quiet, verbose, call, overlays)


@app.command()
def tune(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", "-w", min=1, help="Trials run at once (default: one per CPU of the Ray cluster).")] = None,
    address: Annotated[Optional[str], typer.Option(
        "--address", envvar="RAY_ADDRESS", help="HOST:PORT of a running Ray cluster (default: start a local one).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the interrupted run in tune/ray (a plain rerun with unchanged params does too).")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Search hyperparameters on Ray Tune: tune/best_params.yaml, pareto.csv, trials.csv, summary.json, runs/tune/."""

    def call(p, progress):
        from sparsecli.stages import tune as stage

        return stage.run(p, progress=progress, workers=workers, address=address, resume=resume)

    _run("tune", params, set_, as_json, quiet, verbose, call)
