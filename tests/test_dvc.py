"""A real `dvc repro` of the root dvc.yaml in a temporary git repository, on tiny params."""

import json
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import ASSETS, ROOT


def sh(*args, cwd):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dvcrepo")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copy(ASSETS / "tiny_params.yaml", repo / "params.yaml")
    shutil.copy(ROOT / ".gitignore", repo)
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
    assert metrics["test_accuracy"] > 0.8
    assert 0 < metrics["weight_sparsity"] < 1
    assert data["tune/summary.json"]["data"]["front_size"] >= 1


def test_train_ran_with_the_tuned_params(dvc_repo):
    import torch

    best = yaml.safe_load((dvc_repo / "tune" / "best_params.yaml").read_text())
    stored = torch.load(dvc_repo / "models" / "train.pt", weights_only=True)["params"]
    assert stored["train"]["lr"] == best["train.lr"]
    assert stored["model"]["layers"][0]["weights"]["sparsity"] == best["model.layers.0.weights.sparsity"]
    assert not (dvc_repo / ".ray").exists()  # the local Ray cluster cleaned up after itself


def test_changing_a_train_param_reruns_tune_and_train(dvc_repo):
    sh("git", "add", "-A", cwd=dvc_repo)
    sh("git", "commit", "-qm", "lock", cwd=dvc_repo)
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["train"]["epochs"] = 2
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = sh("dvc", "repro", cwd=dvc_repo)
    assert "Stage 'data' didn't change, skipping" in out
    assert "Running stage 'tune'" in out and "Running stage 'train'" in out
    assert json.loads((dvc_repo / "metrics" / "train.json").read_text())["epochs"] == 2


def test_exp_run_with_set_param(dvc_repo):
    sh("dvc", "exp", "run", "-S", "train.lr=0.02", "--name", "lr002", cwd=dvc_repo)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=dvc_repo))
    assert "lr002" in json.dumps(shown)
