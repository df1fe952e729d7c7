"""The paper template: network x seed runs as a DVC matrix, their aggregate, the report table."""

import json

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from sparsecli.cli import app
from sparsecli.errors import InputFileError, ParamsError
from sparsecli.params import load_params
from sparsecli.stages import paper
from template_run import init_template, sh

PAPER = ROOT / "sparsecli" / "templates" / "paper" / "params.yaml"


def test_the_paper_networks_as_the_issue_gives_them():
    params = load_params(PAPER)
    sparse = paper.network_params(params, "sparse_cnn2", 1)
    dense = paper.network_params(params, "dense_cnn2", 2)
    assert (sparse.seed, dense.seed) == (1, 2)
    # sparse CNN-2: conv 32/64 5x5 dense weights, kWTA 400 of 32x12x12 and 300 of 64x4x4, 700 units 30% non-zero, k 100
    assert [c.channels for c in sparse.model.conv] == [32, 64] and {c.kernel_size for c in sparse.model.conv} == {5}
    assert [round(c.kwta.percent_on * n) for c, n in zip(sparse.model.conv, (32 * 12 * 12, 64 * 4 * 4))] == [400, 300]
    assert {c.weights.sparsity for c in sparse.model.conv} == {0.0}
    hidden = sparse.model.layers[0]
    assert hidden.units == 700 and hidden.weights.sparsity == 0.7 and round(hidden.kwta.percent_on * 700) == 100
    assert {hidden.kwta.k_inference_factor, hidden.kwta.boost_strength, hidden.kwta.boost_strength_factor} == {1.5, 0.85}
    t = sparse.train
    assert (t.optimizer, t.lr, t.momentum, t.schedule, t.step_size, t.gamma, t.batch_size, t.first_epoch_batch_size) == \
        ("sgd", 0.02, 0.0, "step", 1, 0.8, 64, 4)
    # dense CNN-2: conv 30/30, hidden 1000, ReLU everywhere, momentum 0.9
    assert [c.channels for c in dense.model.conv] == [30, 30] and dense.model.layers[0].units == 1000
    assert all(c.kwta is None for c in dense.model.conv) and dense.model.layers[0].kwta is None
    assert dense.model.layers[0].weights.sparsity == 0.0 and dense.train.momentum == 0.9
    assert params.paper.networks["dense_cnn2"].kind == "dense" and len(params.paper.seeds) >= 5


def test_network_and_seed_must_be_listed():
    params = load_params(PAPER)
    with pytest.raises(ParamsError, match="--network big: not in paper.networks; choose one of: dense_cnn2, sparse_cnn2"):
        paper.network_params(params, "big", 1)
    with pytest.raises(ParamsError, match=r"--seed 9: not in paper.seeds \[1, 2, 3, 4, 5\]"):
        paper.network_params(params, "dense_cnn2", 9)
    # `dvc exp run -S paper.networks.X.set.train.lr=...` nests the key; it still applies
    nested = load_params(PAPER, ["paper.networks.dense_cnn2.set.train.lr=0.05"])
    assert paper.network_params(nested, "dense_cnn2", 1).train.lr == 0.05
    with pytest.raises(ParamsError, match="paper.networks.dense_cnn2.set.train.lr = -1: must be in"):
        load_params(PAPER, ["paper.networks.dense_cnn2.set.train.lr=-1"])
    with pytest.raises(ParamsError, match="paper.networks.dense_cnn2.set.data.source = 'idx': a network may change"):
        load_params(PAPER, ["paper.networks.dense_cnn2.set.data.source=idx"])


def test_aggregate_needs_every_run(tmp_path):
    params = load_params(PAPER)
    with pytest.raises(InputFileError, match=r"paper/dense_cnn2/seed1/metrics/train.json: not found; run "
                                             r"`sparsecli paper-train --network dense_cnn2 --seed 1`"):
        paper.run(params, tmp_path)
    assert not (tmp_path / "metrics").exists()


@pytest.fixture(scope="module")
def paper_project(tmp_path_factory):
    project = init_template("paper", tmp_path_factory.mktemp("paper") / "paper")
    sh("dvc", "repro", cwd=project)
    return project


def test_paper_template_runs_every_network_and_seed(paper_project):
    result = json.loads((paper_project / "metrics" / "paper.json").read_text())
    networks = result["networks"]
    assert set(networks) == {"dense_cnn2", "sparse_cnn2"}
    for name, n in networks.items():
        assert n["kind"] == ("dense" if name.startswith("dense") else "sparse")
        assert n["seeds"] == 2  # the tiny overlay's paper.seeds
        assert set(n["test_accuracy"]) == set(n["noise_score"]) == {"mean", "std"}
        runs = [json.loads((paper_project / "paper" / name / f"seed{s}" / "metrics" / "train.json").read_text())
                for s in (1, 2)]
        assert n["test_accuracy"]["mean"] == pytest.approx(sum(r["test_accuracy"] for r in runs) / 2)
        assert n["noise_score"]["mean"] == pytest.approx(sum(r["noise_score"] for r in runs) / 2)
        assert runs[0]["test_accuracy"] != runs[1]["test_accuracy"] or runs[0]["noise_score"] != runs[1]["noise_score"]
        assert set(n["accuracy_by_noise"]) == {"0.0", "0.2", "0.5"}
    # dense conv weights, 70% zeros in the hidden layer only
    assert networks["sparse_cnn2"]["weight_sparsity"]["mean"] > 0.1 and networks["dense_cnn2"]["weight_sparsity"]["mean"] == 0
    html = (paper_project / "reports" / "index.html").read_text()
    assert 'id="paper"' in html and "paper: Sparse CNN-2" in html and "103,764 ± 1,125" in html
    assert "up to date" in sh("dvc", "status", cwd=paper_project)


def test_paper_cli_summary(paper_project, monkeypatch):
    monkeypatch.chdir(paper_project)
    result = CliRunner().invoke(app, ["paper"])
    assert result.exit_code == 0, result.output
    assert "sparse_cnn2 (sparse, 2 seeds):" in result.output


def test_paper_runs_lock_and_check_their_own_outputs(paper_project, monkeypatch):
    from sparsecli.atomic import stage_lock

    monkeypatch.chdir(paper_project)
    with stage_lock(paper_project, "paper-train dense_cnn2 seed1"):
        result = CliRunner().invoke(app, ["paper-train", "--network", "dense_cnn2", "--seed", "1", "-q"])
        assert result.exit_code == 1 and "another `sparsecli paper-train dense_cnn2 seed1` (pid" in result.output
    aggregate = paper_project / "metrics" / "paper.json"
    before = aggregate.read_text()
    aggregate.unlink()
    aggregate.mkdir()
    try:
        result = CliRunner().invoke(app, ["paper", "-q"])
        assert result.exit_code == 1
        assert "metrics/paper.json: exists and is a folder, but this stage writes a file there" in result.output
    finally:
        aggregate.rmdir()
        aggregate.write_text(before)
