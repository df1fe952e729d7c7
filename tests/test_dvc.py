"""A real `dvc repro` of the root dvc.yaml and params.yaml (the default template's, with its tiny overlay)
in a temporary git repository."""

import json
import os
import shutil
import subprocess

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
    assert stages["prune"]["outs"] == ["models/pruned.pt", "runs/prune"]
    assert "models/train.pt" in stages["prune"]["deps"]
