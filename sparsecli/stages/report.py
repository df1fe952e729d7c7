"""The ``report`` stage: one page over every stage's outputs, sections present only when their
stage has run.

Writes ``reports/index.html`` (self-contained: images inlined, nothing fetched from the
network), ``reports/index.md`` and the PNGs it references under ``reports/figures/``.
"""

from __future__ import annotations

from pathlib import Path

from sparsecli.atomic import write_all
from sparsecli.errors import InputFileError
from sparsecli.params import Params
from sparsecli.report.render import to_html, to_markdown
from sparsecli.report.sections import build_sections

TITLE = "sparsecli report"


def outputs(workdir: Path = Path(".")) -> dict[str, Path]:
    return {
        "html": workdir / "reports" / "index.html",
        "markdown": workdir / "reports" / "index.md",
        "figures": workdir / "reports" / "figures",
    }


# The stages whose outputs the report reads, in pipeline order (their outputs() say where).
STAGES = ("data", "tune", "train", "prune", "hardware_map", "benchmark", "paper")


def stage_outputs(workdir: Path = Path(".")) -> dict[str, dict[str, Path]]:
    """Stage name -> its outputs(); ``sensitivity`` -> what ``prune --sensitivity`` writes."""
    from importlib import import_module

    found = {name: import_module(f"sparsecli.stages.{name}").outputs(workdir) for name in STAGES}
    found["sensitivity"] = import_module("sparsecli.stages.prune").sensitivity_outputs(workdir)
    return found


def run(params: Params, workdir: Path = Path("."), progress=None) -> dict:
    """Raises InputFileError, writing nothing, when no stage has written its metrics yet."""
    paths = outputs(workdir)
    out = stage_outputs(workdir)
    metrics = [out[name][key] for name, key in (("tune", "summary"), ("train", "metrics"), ("prune", "metrics"),
                                                 ("hardware_map", "metrics"), ("benchmark", "metrics"),
                                                 ("paper", "metrics"))]
    if not any(path.is_file() for path in metrics):
        raise InputFileError(f"{metrics[1]}: no stage's metrics yet, nothing to report; run `dvc repro` "
                             "(or `sparsecli data` and `sparsecli train`) first")
    sections = build_sections(out)
    writers = {
        paths["html"]: lambda tmp: tmp.write_text(to_html(TITLE, sections)),
        paths["markdown"]: lambda tmp: tmp.write_text(to_markdown(TITLE, sections, "figures")),
    }
    for section in sections:
        for fig in section.figures:
            writers[paths["figures"] / f"{fig.name}.png"] = lambda tmp, png=fig.png: tmp.write_bytes(png)
    write_all(writers)
    for stale in set(paths["figures"].glob("*.png")) - set(writers):
        stale.unlink()  # a figure of a section that is gone now
    return {"report": str(paths["html"]), "sections": [s.key for s in sections],
            "figures": sum(len(s.figures) for s in sections)}
