"""The paper's noise protocol, the noise score, the first-epoch batch size and the dense baseline."""

import json

import numpy as np
import pytest
import torch

from sparsecli.errors import InputFileError, ParamsError
from sparsecli.evaluation import Split, noise_protocol, noise_robustness
from sparsecli.params import NoiseParams, load_params
from sparsecli.stages import data
from sparsecli.stages.train import dense_params
from sparsecli.training import batch_size, epoch_steps, fit, make_optimizer, make_scheduler, read_splits


def test_pixels_sets_exactly_a_fraction_of_each_sample_to_white(trained_dir, tiny_params):
    splits, meta = read_splits(trained_dir)
    test = splits["test"]
    noise = NoiseParams(kind="pixels", levels=[0.0, 0.05, 0.25, 0.5])
    protocol = noise_protocol(noise, seed=3, meta=meta, workdir=trained_dir)
    # white: mean + 2 std of the raw training pixels, through the per-feature standardisation
    stats, standard = meta["input_stats"], meta["standardization"]
    white = (stats["mean"] + 2 * stats["std"] - np.array(standard["mean"])) / np.array(standard["std"])
    assert protocol.white.numpy() == pytest.approx(white.astype(np.float32), rel=1e-5)
    for index, level in enumerate(noise.levels):
        noisy = protocol.apply(test, index, level)
        changed = noisy != test.x
        # every chosen pixel is white (a pixel that already was white does not count as changed)
        expected = int(level * 64)
        assert (changed.sum(dim=1) <= expected).all()
        assert changed.sum(dim=1).float().mean() >= 0.9 * expected
        assert torch.equal(noisy[changed], protocol.white.expand_as(noisy)[changed])
        assert torch.equal(protocol.apply(test, index, level), noisy)  # seeded: the same pixels again
    again = noise_protocol(noise, seed=4, meta=meta, workdir=trained_dir)
    assert not torch.equal(again.apply(test, 2, 0.25), protocol.apply(test, 2, 0.25))


def test_global_standardisation_puts_white_at_two(tmp_path, tiny_params):
    params = tiny_params.model_copy(deep=True)
    params.data.standardize_scope = "global"
    data.run(params, tmp_path)
    splits, meta = read_splits(tmp_path)
    assert float(splits["train"].x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(splits["train"].x.std()) == pytest.approx(1.0, abs=1e-3)
    protocol = noise_protocol(NoiseParams(levels=[0.1]), 0, meta, tmp_path)
    assert protocol.white.numpy() == pytest.approx(np.full(64, 2.0), abs=1e-5)


def test_noise_score_counts_correct_classifications_over_the_levels(trained_dir):
    from sparsecli import checkpoint

    model, _, _ = checkpoint.load(trained_dir / "models" / "train.pt")
    splits, meta = read_splits(trained_dir)
    for kind, levels in (("pixels", [0.0, 0.1, 0.3]), ("gaussian", [0.0, 0.5, 2.0])):
        protocol = noise_protocol(NoiseParams(kind=kind, levels=levels), 0, meta, trained_dir)
        result = noise_robustness(model, splits["test"], protocol)
        n = len(splits["test"])
        assert list(result["accuracy_by_noise"]) == [str(x) for x in levels]
        assert result["noise_score"] == round(sum(result["accuracy_by_noise"].values()) * n)
        assert result["noise_score_fraction"] == pytest.approx(result["noise_score"] / (3 * n))
        accuracies = list(result["accuracy_by_noise"].values())
        assert accuracies[0] > accuracies[-1]  # noise hurts


def test_noise_params_are_checked(tiny_params_path):
    with pytest.raises(ParamsError, match=r"train.noise.levels = \[0.5, 2.0\]: pixels levels are fractions"):
        load_params(tiny_params_path, ["train.noise.levels=[0.5, 2.0]"])
    assert load_params(tiny_params_path, ["train.noise.kind=gaussian", "train.noise.levels=[0.5, 2.0]"])
    with pytest.raises(ParamsError, match="train.noise.kind = 'waveform': needs data.source speech_commands"):
        load_params(tiny_params_path, ["train.noise.kind=waveform"])
    with pytest.raises(ParamsError, match="train.noise.levels = 0.1: must be a list"):
        load_params(tiny_params_path, ["train.noise.levels=0.1"])


def test_old_data_without_input_stats_is_a_clear_error(project):
    meta_path = project / "data" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["input_stats"]
    with pytest.raises(InputFileError, match="meta.json: has no input_stats .* rerun `sparsecli data`"):
        noise_protocol(NoiseParams(), 0, meta, project)


def test_first_epoch_batch_size_and_the_schedule(trained_dir, tiny_params):
    splits, meta = read_splits(trained_dir)
    n = len(splits["train"])
    train = tiny_params.train.model_copy(update={"first_epoch_batch_size": 32, "schedule": "step", "step_size": 1,
                                                 "gamma": 0.5, "epochs": 3})
    assert batch_size(train, 1) == 32 and batch_size(train, 2) == train.batch_size
    assert epoch_steps(train, n, 1) == -(-n // 32)
    from sparsecli.models import build_model
    from sparsecli.progress import Progress

    class Count(Progress):
        steps = 0

        def step(self, loss):
            Count.steps += 1

    model = build_model(tiny_params, meta)
    state = fit(model, train, splits, seed=1, progress=Count())
    # batch 32 in epoch 1, then batch_size; the lr halves per epoch whatever the epoch's step count
    assert Count.steps == epoch_steps(train, n, 1) + 2 * epoch_steps(train, n, 2)
    assert [r["lr"] for r in state.history] == pytest.approx([train.lr, train.lr / 2, train.lr / 4])
    optimizer = make_optimizer(model, train)
    cosine = make_scheduler(optimizer, train.model_copy(update={"schedule": "cosine"}), 3, 10, 40)
    for _ in range(40):
        cosine.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(train.lr * 0.75)  # one epoch of three done


def test_dense_baseline_is_the_same_network_without_masks_and_kwta(trained_dir, tiny_params):
    dense = dense_params(tiny_params)
    assert dense.model.layers[0].kwta is None and dense.model.layers[0].weights.sparsity == 0.0
    assert dense.model.layers[0].units == tiny_params.model.layers[0].units
    assert dense.train == tiny_params.train and dense.seed == tiny_params.seed
    metrics = json.loads((trained_dir / "metrics" / "train.json").read_text())
    baseline = metrics["dense"]
    assert baseline["weight_sparsity"] == 0.0
    assert baseline["macs_dense"] == metrics["macs_dense"]  # the same shapes
    assert baseline["macs_nonzero"] > metrics["macs_nonzero"]
    assert baseline["test_accuracy"] > 0.8
    assert set(baseline["accuracy_by_noise"]) == set(metrics["accuracy_by_noise"])
    assert (trained_dir / "runs" / "train" / "dense").is_dir()
