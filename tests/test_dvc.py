"""A real `dvc repro` of the root dvc.yaml and params.yaml (the default template's, with its tiny overlay)
in a temporary git repository."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, apply_overlay, template_overlay


def sh(*args, cwd):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dvcrepo")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    apply_overlay(repo / "params.yaml", template_overlay("default"))
    shutil.copy(ROOT / ".gitignore", repo)
    shutil.copy(ROOT / ".dvcignore", repo)  # the templates under sparsecli/ are not part of the project
    shutil.copytree(ROOT / "hardware", repo / "hardware")
    shutil.copytree(ROOT / "sparsecli", repo / "sparsecli", ignore=shutil.ignore_patterns("__pycache__"))
    sh("git", "init", "-q", cwd=repo)
    sh("git", "config", "user.email", "test@example.com", cwd=repo)
    sh("git", "config", "user.name", "sparsecli test", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)
    sh("dvc", "repro", cwd=repo)
    return repo


def test_repro_writes_outputs_and_metrics(dvc_repo):
    for out in ("data/meta.json", "models/train.pt", "metrics/train.json", "metrics/train_history.csv",
                "tune/best_params.yaml", "tune/pareto.csv", "tune/trials.csv", "tune/summary.json"):
        assert (dvc_repo / out).is_file(), out
    assert any((dvc_repo / "runs" / "train").iterdir()) and any((dvc_repo / "runs" / "tune").iterdir())
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=dvc_repo))
    data = next(iter(shown.values()))["data"]
    metrics = data["metrics/train.json"]["data"]
    assert metrics["test_accuracy"] > 0.5  # 3 epochs with the lr and sparsity tune chose
    assert 0 < metrics["weight_sparsity"] < 1
    for out in ("models/pruned.pt", "metrics/prune.json", "metrics/hardware_map.json", "metrics/benchmark.json",
                "reports/index.html"):
        assert (dvc_repo / out).is_file(), out
    assert data["tune/summary.json"]["data"]["front_size"] >= 1


def test_train_ran_with_the_tuned_params(dvc_repo):
    import torch

    best = yaml.safe_load((dvc_repo / "tune" / "best_params.yaml").read_text())
    stored = torch.load(dvc_repo / "models" / "train.pt", weights_only=True)["params"]
    assert stored["train"]["lr"] == best["train.lr"]
    assert stored["model"]["layers"][0]["weights"]["sparsity"] == best["model.layers.0.weights.sparsity"]
    assert not (dvc_repo / ".ray").exists()  # the local Ray cluster cleaned up after itself


def test_editing_one_target_file_reruns_only_hardware_map(dvc_repo):
    for out in ("metrics/hardware_map.json", "reports/hardware_map.md", "exports/model.onnx"):
        assert (dvc_repo / out).is_file(), out
    sh("git", "add", "-A", cwd=dvc_repo)
    sh("git", "commit", "-qm", "lock", cwd=dvc_repo)
    before = json.loads((dvc_repo / "metrics" / "hardware_map.json").read_text())["targets"]["fpga-zu3eg"]
    target = dvc_repo / "hardware" / "fpga-zu3eg.yaml"
    text = target.read_text()
    assert "clock_mhz: 200 " in text
    target.write_text(text.replace("clock_mhz: 200 ", "clock_mhz: 100 "))
    out = sh("dvc", "repro", cwd=dvc_repo)
    assert "Stage 'data' didn't change, skipping" in out
    assert "Stage 'train' didn't change, skipping" in out
    assert "Running stage 'hardware-map'" in out
    after = json.loads((dvc_repo / "metrics" / "hardware_map.json").read_text())["targets"]["fpga-zu3eg"]
    for mode in ("dense", "sparse-sparse"):  # half the clock, half the throughput; same design
        assert after["batch_1"][mode]["throughput_ips"] == pytest.approx(before["batch_1"][mode]["throughput_ips"] / 2)


def test_exp_run_with_a_train_param_reruns_tune_and_train(dvc_repo):
    sh("git", "add", "-A", cwd=dvc_repo)
    sh("git", "commit", "-qm", "lock", cwd=dvc_repo)
    out = sh("dvc", "exp", "run", "-S", "train.epochs=2", "--name", "epochs2", cwd=dvc_repo)
    assert "Stage 'data' didn't change, skipping" in out
    assert "Running stage 'tune'" in out and "Running stage 'train'" in out
    assert json.loads((dvc_repo / "metrics" / "train.json").read_text())["epochs"] == 2
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=dvc_repo))
    assert "epochs2" in json.dumps(shown)


def test_repro_runs_prune_after_train(dvc_repo):
    for out in ("models/pruned.pt", "metrics/prune.json"):
        assert (dvc_repo / out).is_file(), out
    assert any((dvc_repo / "runs" / "prune").iterdir())
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=dvc_repo))
    metrics = next(iter(shown.values()))["data"]["metrics/prune.json"]["data"]
    assert metrics["method"] == "magnitude" and metrics["weight_sparsity"] > metrics["weight_sparsity_before"]


def test_exp_run_nm_2_4_reruns_only_prune_and_obeys_the_pattern(dvc_repo):
    import torch

    from sparsecli import checkpoint
    from sparsecli.sparse.patterns import as_matrix

    out = sh("dvc", "exp", "run", "-S", "prune.method=nm", "-S", "prune.n=2", "-S", "prune.m=4", "--name", "nm24",
             cwd=dvc_repo)
    assert "Running stage 'prune'" in out and "Running stage 'train'" not in out
    model, params, payload = checkpoint.load(dvc_repo / "models" / "pruned.pt")
    assert (params.prune.method, params.prune.n, params.prune.m) == ("nm", 2, 4)
    assert payload["prune"]["pattern"] == "2:4"
    for name, layer in {"layers.0": model.layers[0].weights}.items():
        groups = (as_matrix(layer.module.weight) != 0).reshape(layer.mask.shape[0], -1, 4).sum(dim=2)
        assert (groups <= 2).all(), name
    assert json.loads((dvc_repo / "metrics" / "prune.json").read_text())["pattern_satisfied"] is True
    assert torch.equal(model.head.mask, torch.ones_like(model.head.mask))  # excluded by default


def test_stage_params_are_the_keys_the_stages_read():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["prune"]["params"] == ["prune"]
    assert "sparsity" in stages["train"]["params"]
    assert "sparsity" in stages["tune"]["params"]  # trials apply sparsity.dynamic as train does
    assert "models/train.pt" in stages["prune"]["deps"]


# ---------------------------------------------------------------- dvc.yaml against the code

# Modules that cannot change a stage's result: the version string, progress lines, exception types.
NO_RESULT = {"sparsecli/__init__.py", "sparsecli/progress.py", "sparsecli/errors.py"}


def _module_file(name: str):
    rel = ROOT.joinpath(*name.split("."))
    for candidate in (rel.with_suffix(".py"), rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path) -> set[str]:
    """Every sparsecli module a file imports, at the top or inside a function."""
    import ast

    package = ".".join(path.relative_to(ROOT).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in found if n.startswith("sparsecli.")}


def derived_code_deps(stage: str) -> list[str]:
    """A stage's code dependencies: the modules its module imports, transitively, as dvc.yaml names them
    (a subpackage as its folder). Another stage's module is imported only for its outputs(): its file
    counts, its own imports do not."""
    own = ROOT / "sparsecli" / "stages" / f"{stage}.py"
    todo, seen = [own], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            parts = name.split(".")
            todo += [f for f in (_module_file(".".join(parts[:i])) for i in range(2, len(parts))) if f]  # packages
            module = _module_file(name)
            if module is None:
                continue
            if name.startswith("sparsecli.stages.") and module != own:
                seen.add(module)
            else:
                todo.append(module)
    deps = set()
    for path in seen:
        rel = path.relative_to(ROOT)
        if str(rel) in NO_RESULT or rel.parts[1] == "stages" and rel.name == "__init__.py":
            continue
        deps.add(str(rel) if len(rel.parts) == 2 or rel.parts[1] == "stages" else "/".join(rel.parts[:2]))
    return sorted(deps)


def _stages(path=ROOT / "dvc.yaml") -> dict:
    return yaml.safe_load(path.read_text())["stages"]


def _names(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_code_deps_are_the_stage_modules_imports():
    for name, stage in _stages().items():
        code = sorted(d for d in stage.get("deps", []) if d.startswith("sparsecli/"))
        assert code == derived_code_deps(name.replace("-", "_")), name


def test_dvc_outputs_are_the_stages_outputs():
    from importlib import import_module

    for name, stage in _stages().items():
        declared = _names(stage.get("outs")) + _names(stage.get("metrics")) + _names(stage.get("plots"))
        module = import_module(f"sparsecli.stages.{name.replace('-', '_')}")
        assert sorted(declared) == sorted(str(p) for p in module.outputs(Path(".")).values()), name


OWN_PIPELINES = {"paper", "speech"}  # other stage graphs (tests/test_paper.py, tests/test_speech.py run them)


def test_template_pipelines_are_the_root_pipeline_without_code_deps():
    from sparsecli import scaffold

    def without_code(stages):
        for stage in stages.values():
            stage["deps"] = [d for d in stage.get("deps", []) if not d.startswith("sparsecli/")] or None
            if stage["deps"] is None:
                del stage["deps"]
        return stages

    root = without_code(_stages())
    for name in set(scaffold.templates()) - OWN_PIPELINES:
        template = _stages(Path(str(scaffold.TEMPLATES / name / "dvc.yaml")))
        if name == "mnist":  # its data stage also depends on the IDX files (data.path)
            assert template["data"].pop("deps") == ["raw/mnist"]
        if name == "hardware-aware":  # its tune stage costs trials on the target files, with their params
            assert template["tune"]["deps"].pop() == "hardware"
            assert template["tune"]["params"][-2:] == ["hardware_map", "benchmark"]
            del template["tune"]["params"][-2:]
        assert template == root, name
