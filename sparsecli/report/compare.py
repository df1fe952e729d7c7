"""Compare DVC experiments side by side (``dvc exp show --json`` underneath).

Rows are the workspace, each baseline commit and each experiment; columns are the params
that differ between them and the headline metrics. An experiment is marked Pareto-optimal
when no other row has at least its test accuracy and weight sparsity and more of one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sparsecli.errors import SparsecliError
from sparsecli.params import flatten

HEADLINE = ("test_accuracy", "weight_sparsity", "activation_sparsity", "mac_reduction")
PARETO = ("test_accuracy", "weight_sparsity")  # both maximised


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
    for values in (data.get("params") or {}).values():
        params |= flatten(values.get("data") or {})
    for path, values in (data.get("metrics") or {}).items():
        stage = Path(path).stem
        for key, value in flatten(values.get("data") or {}).items():
            metrics[key if stage == "train" else f"{stage}.{key}"] = value
    return {"name": name, "rev": entry.get("rev", "")[:7], "params": params, "metrics": metrics}


def mark_pareto(rows: list[dict]) -> None:
    def point(row):
        values = [row["metrics"].get(k) for k in PARETO]
        return values if all(isinstance(v, (int, float)) for v in values) else None

    for row in rows:
        mine = point(row)
        row["pareto"] = mine is not None and not any(
            (other := point(o)) is not None and all(a >= b for a, b in zip(other, mine)) and other != mine
            for o in rows)


def table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Headers and cells: the params that differ between rows, then the headline metrics."""
    keys = sorted({k for r in rows for k in r["params"]})
    differing = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in rows}) > 1]
    headers = ["experiment", "pareto", *differing, *HEADLINE]
    cells = []
    for r in rows:
        metrics = [r["metrics"].get(k) for k in HEADLINE]
        cells.append([r["name"], "★" if r.get("pareto") else "", *(r["params"].get(k) for k in differing),
                      *(f"{m:.4g}" if isinstance(m, float) else ("–" if m is None else m) for m in metrics)])
    return headers, cells


def compare(workdir: Path = Path(".")) -> dict:
    rows = experiments(workdir)
    mark_pareto(rows)
    headers, cells = table(rows)
    return {"headers": headers, "rows": cells, "pareto": [r["name"] for r in rows if r["pareto"]]}
