"""Compare DVC experiments side by side (``dvc exp show --json`` underneath).

Rows are the workspace, each baseline commit and each experiment; columns are the root
pipeline's params that differ between them (``params.yaml``, then ``tune/best_params.yaml``,
which says what train used), every stage's headline metrics, then any other metric that
differs (named ``stage.key``). An experiment is marked Pareto-optimal when no other row has
at least its final model's test accuracy and weight sparsity (prune's, else train's) and
more of one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sparsecli.errors import SparsecliError
from sparsecli.params import flatten

# metrics files are named by their stage: metrics/train.json -> train.*, tune/summary.json -> tune.*
STAGE_OF = {"summary": "tune"}
HEADLINE = ("train.test_accuracy", "train.weight_sparsity", "train.activation_sparsity", "train.mac_reduction",
            "prune.test_accuracy", "prune.weight_sparsity", "prune.mac_reduction")
PARETO = ("test_accuracy", "weight_sparsity")  # both maximised, of the final model
FINAL = ("prune", "train")  # the final model's stage: the first that has metrics


def experiments(workdir: Path = Path(".")) -> list[dict]:
    """One dict per row: name, rev, flat params (dotted keys) and flat metrics."""
    result = subprocess.run(["dvc", "exp", "show", "--json"], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SparsecliError(f"`dvc exp show --json` failed in {workdir}: {last}; run it inside a DVC repository")
    rows = []
    for baseline in json.loads(result.stdout or "[]"):
        rev = baseline["rev"]
        rows.append(_row(baseline, baseline.get("name") or (rev if rev == "workspace" else rev[:7])))
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs", []):
                rows.append(_row(rev, rev.get("name") or rev["rev"][:7]))
    return [r for r in rows if r["metrics"] or r["params"]]


def _row(entry: dict, name: str) -> dict:
    data = entry.get("data") or {}
    params, metrics = {}, {}
    files = data.get("params") or {}
    for path in sorted(files, key=lambda p: p != "params.yaml"):  # params.yaml, then tune's choice over it
        params |= flatten(files[path].get("data") or {})
    for path, values in (data.get("metrics") or {}).items():
        stage = STAGE_OF.get(Path(path).stem, Path(path).stem)
        for key, value in flatten(values.get("data") or {}).items():
            if not isinstance(value, (dict, list)):
                metrics[f"{stage}.{key}"] = value
    return {"name": name, "rev": entry.get("rev", "")[:7], "params": params, "metrics": metrics}


def mark_pareto(rows: list[dict]) -> None:
    def point(row):
        stage = next((s for s in FINAL if f"{s}.{PARETO[0]}" in row["metrics"]), None)
        values = [row["metrics"].get(f"{stage}.{k}") for k in PARETO]
        return values if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) else None

    for row in rows:
        mine = point(row)
        row["pareto"] = mine is not None and not any(
            (other := point(o)) is not None and all(a >= b for a, b in zip(other, mine)) and other != mine
            for o in rows)


def table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Headers and cells: the params that differ between rows, the headline metrics, other differing metrics."""

    def differing(field: str) -> list[str]:
        keys = dict.fromkeys(k for r in rows for k in r[field])
        return [k for k in keys if len({json.dumps(r[field].get(k)) for r in rows}) > 1]

    params = sorted(differing("params"))
    present = {k for r in rows for k in r["metrics"]}
    metrics = [k for k in HEADLINE if k in present]
    metrics += sorted(k for k in differing("metrics") if k not in metrics and not _noise(k))
    headers = ["experiment", "pareto", *params, *metrics]
    cells = []
    for r in rows:
        values = [r["metrics"].get(k) for k in metrics]
        cells.append([r["name"], "★" if r.get("pareto") else "", *(r["params"].get(k) for k in params),
                      *(f"{m:.4g}" if isinstance(m, float) else ("–" if m is None else m) for m in values)])
    return headers, cells


def _noise(key: str) -> bool:
    """Timings differ in every run: not a difference between experiments worth a column."""
    return key.startswith("benchmark.") or key.endswith(("_s", "seconds", "_ips")) or ".targets." in key


def compare(workdir: Path = Path(".")) -> dict:
    rows = experiments(workdir)
    mark_pareto(rows)
    headers, cells = table(rows)
    return {"headers": headers, "rows": cells, "pareto": [r["name"] for r in rows if r["pareto"]]}
