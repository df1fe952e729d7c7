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
from typer.core import TyperGroup

try:  # typer >= 0.26 carries its own click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from sparsecli import __version__


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, missing value, bad choice) as one line, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            code = 0
        except click_errors.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
            code = e.exit_code
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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
SUMMARY_KEYS = ("report", "test_accuracy", "weight_sparsity", "activation_sparsity", "mac_reduction", "samples",
                "classes", "written", "onnx_argmax_agreement", "hls_csim_accuracy", "front_size", "hypervolume",
                "cost_full_trainings", "selected_trial")


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
         verbose: bool, call: Callable, render: Callable[[dict], str] | None = None,
         overlays: Callable[[], list] | None = None, outputs: Callable[[], list] | None = None,
         stage: str | None = None, lock: str | None = None) -> None:
    """Load params, run a stage, print its metrics; every failure becomes one line and an exit code.

    ``render`` turns the result into text for humans (by default, a one-line summary);
    ``overlays`` returns params overlays applied before ``--set`` (train: tune's choice);
    ``outputs`` returns the paths the stage will write: checked before any work, and the stage
    holds a lock on them while it runs (a second run in the same folder refuses); ``lock`` names
    that lock where runs of one stage write apart (a matrix stage's network x seed runs).
    """
    from contextlib import nullcontext

    from sparsecli.errors import SparsecliError

    try:
        from sparsecli.atomic import check_writable, stage_lock
        from sparsecli.params import load_params

        params = load_params(params_path, overrides or [], overlays() if overlays else [], stage=stage or name)
        paths = outputs() if outputs else None
        if paths is not None:
            check_writable(paths)
        with stage_lock(Path("."), lock or name) if paths is not None else nullcontext():
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
    elif render is not None and not quiet:
        typer.echo(render(metrics))
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

    _run("data", params, set_, as_json, quiet, verbose, call, outputs=lambda: _outputs("data"))


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

    _run("tune", params, set_, as_json, quiet, verbose, call,
         outputs=lambda: _outputs("tune", "ray_dir"))


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

    _run("train", params, set_, as_json, quiet, verbose, call, overlays=overlays,
         outputs=lambda: _outputs("train", "resume_path"))


@app.command()
def prune(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    sensitivity: Annotated[bool, typer.Option(
        "--sensitivity",
        help="Instead of pruning: val accuracy with each layer alone pruned to each of prune.sensitivity "
             "(no fine-tuning) into reports/sensitivity.csv and .png. Not part of the DVC stage.",
    )] = False,
) -> None:
    """Prune models/train.pt and fine-tune it: models/pruned.pt, metrics/prune.json, runs/prune/ (TensorBoard)."""

    def call(p, progress):
        from sparsecli.stages import prune as stage

        return (stage.sensitivity if sensitivity else stage.run)(p, progress=progress)

    def paths():
        from sparsecli.stages import prune as stage

        return list((stage.sensitivity_outputs() if sensitivity else stage.outputs()).values())

    _run("prune --sensitivity" if sensitivity else "prune", params, set_, as_json, quiet, verbose, call,
         outputs=paths, stage="prune")


@app.command("hardware-map")
def hardware_map(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    hardware: Annotated[Path, typer.Option("--hardware", help="Folder of target files (<name>.yaml).")] = Path("hardware"),
    import_report: Annotated[
        Optional[Path],
        typer.Option("--import-report", help="A Vivado/Vitis HLS csynth report (.xml or .rpt) of an exported "
                     "project: stored in <hardware>/measured/ and shown as measured beside the estimate."),
    ] = None,
) -> None:
    """Predict latency, throughput, energy and fit per hardware target; export ONNX and HLS projects."""

    def call(p, progress):
        from sparsecli.stages import hardware_map as stage

        return stage.run(p, progress=progress, hardware_dir=hardware, import_report=import_report)

    _run("hardware-map", params, set_, as_json, quiet, verbose, call, outputs=lambda: _outputs("hardware_map"))


@app.command()
def benchmark(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Measure sparse CPU kernels against dense torch: metrics/benchmark.json, reports/benchmark.{md,png}."""

    def call(p, progress):
        from sparsecli.stages import benchmark as stage

        return stage.run(p, progress=progress)

    _run("benchmark", params, set_, as_json, quiet, verbose, call, render=_benchmark_summary,
         outputs=lambda: _outputs("benchmark"))


def _benchmark_summary(metrics: dict) -> str:
    lines = [f"{key}: " + ", ".join(f"{mode} {value:.1f}x" for mode, value in speeds.items() if value)
             for key, speeds in metrics["headline"].items()]
    failed = [f"CHECK FAILED (no speedup reported): {f}" for f in metrics["check_failures"]]
    return "\n".join(["benchmark: done. end-to-end speedup over dense torch:", *lines, *failed])


@app.command("paper-train")
def paper_train(
    network: Annotated[str, typer.Option("--network", help="A network of paper.networks.")],
    seed: Annotated[int, typer.Option("--seed", help="A seed of paper.seeds.")],
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train one paper network at one seed (a DVC matrix stage): paper/NETWORK/seedSEED/."""

    def call(p, progress):
        from sparsecli.stages import paper as stage

        return stage.train(p, network, seed, progress=progress)

    _run("paper-train", params, set_, as_json, quiet, verbose, call,
         outputs=lambda: _stage("paper").train_outputs(network, seed), lock=f"paper-train {network} seed{seed}")


@app.command()
def paper(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Aggregate the paper runs over seeds (mean, std): metrics/paper.json."""

    def call(p, progress):
        from sparsecli.stages import paper as stage

        return stage.run(p, progress=progress)

    _run("paper", params, set_, as_json, quiet, verbose, call, render=_paper_summary,
         outputs=lambda: [_stage("paper").outputs()["metrics"]])  # the aggregate only: the runs are what it reads


def _paper_summary(result: dict) -> str:
    lines = ["paper: done. test accuracy and noise score, mean ± std over seeds:"]
    for name, n in result["networks"].items():
        acc, score = n["test_accuracy"], n["noise_score"]
        lines.append(f"  {name} ({n['kind']}, {n['seeds']} seeds): {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}%, "
                     f"{score['mean']:,.0f} ± {score['std']:,.0f} of {n['noise_samples']:,}")
    return "\n".join(lines)


@app.command()
def report(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    compare: Annotated[bool, typer.Option("--compare", help="Compare the DVC experiments in this repo instead.")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Write reports/index.html (self-contained) and index.md from every stage's outputs."""

    def call(p, progress):
        if compare:
            from sparsecli.report.compare import compare as compare_experiments

            return compare_experiments()
        from sparsecli.stages import report as stage

        return stage.run(p, progress=progress)

    _run("report", params, set_, as_json, quiet, verbose, call, render=_markdown_table if compare else None,
         outputs=None if compare else lambda: _outputs("report"))


def _outputs(stage: str, *working: str) -> list[Path]:
    """What a stage writes: its outputs() and its working files, named by the functions that give their
    paths (train's resume checkpoint, tune's Ray folder)."""
    module = _stage(stage)
    return [*module.outputs().values(), *(getattr(module, name)() for name in working)]


def _stage(name: str):
    """A stage's module, imported when a command runs (not at start-up: ``--help`` stays light)."""
    from importlib import import_module

    return import_module(f"sparsecli.stages.{name}")


def _markdown_table(result: dict) -> str:
    lines = ["| " + " | ".join(map(str, result["headers"])) + " |", "|" + "---|" * len(result["headers"])]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in result["rows"]]
    return "\n".join(lines)


@app.command()
def init(
    directory: Annotated[Optional[Path], typer.Argument(help="Folder for the new experiment repository.")] = None,
    pipeline: Annotated[str, typer.Option("--pipeline", help="Template to copy (see --list).")] = "default",
    list_: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Use a non-empty folder (existing files are kept).")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Create a ready experiment repository (git, DVC, params, pipeline, hardware targets)."""
    from sparsecli import scaffold

    if list_:
        for name, description in scaffold.templates().items():
            typer.echo(f"{name:<10} {description}")
        raise typer.Exit()
    if directory is None:
        _error("init: missing DIRECTORY; e.g. sparsecli init my-experiment --pipeline smoke")
        raise typer.Exit(2)
    try:
        result = scaffold.init(directory, pipeline, force)
    except scaffold.SparsecliError as e:
        if verbose:
            raise
        _error(str(e))
        raise typer.Exit(e.exit_code) from None
    kept = f" (kept existing: {', '.join(result['kept'])})" if result["kept"] else ""
    typer.echo(f"init: {directory} ready from pipeline {pipeline}{kept}. Next: cd {directory} && dvc repro")
