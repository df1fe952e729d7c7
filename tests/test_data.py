import gzip
import hashlib
import json
import shutil
import struct

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY, snapshot
from sparsecli.cli import app
from sparsecli.errors import InputFileError
from sparsecli.params import load_params
from sparsecli.stages import data


def write_params(folder, **data_section):
    params = yaml.safe_load(TINY.read_text())
    params["data"] = data_section
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder / "params.yaml"


def run_cli(folder, monkeypatch, *args):
    monkeypatch.chdir(folder)
    return CliRunner().invoke(app, list(args))


def write_idx(path, array, magic_type=0x08, gz=False):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_folder(folder, gz=True, n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, size=(n, 6, 6)) + labels[:, None, None] * 60
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz=gz)
    return ext


def test_digits_split_is_stratified_deterministic_and_standardised(tmp_path, tiny_params):
    a, b = tmp_path / "a", tmp_path / "b"
    data.run(tiny_params, a)
    data.run(tiny_params, b)
    meta = json.loads((a / "data" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 1169, "val": 269, "test": 359}
    assert meta["image_shape"] == [1, 8, 8] and meta["classes"] == 10
    assert meta == json.loads((b / "data" / "meta.json").read_text())
    with np.load(a / "data" / "train.npz") as train, np.load(a / "data" / "test.npz") as test:
        assert abs(train["x"].mean()) < 1e-5
        train_share = np.bincount(train["y"]) / len(train["y"])
        test_share = np.bincount(test["y"]) / len(test["y"])
        assert np.abs(train_share - test_share).max() < 0.02
    other = tiny_params.model_copy(update={"seed": 8})
    data.run(other, tmp_path / "c")
    assert json.loads((tmp_path / "c" / "data" / "meta.json").read_text())["sha256"] != meta["sha256"]


def test_synthetic_source_is_sized_by_params(tmp_path, tiny_params_path):
    params = load_params(tiny_params_path, ["data.source=synthetic", "data.synthetic.samples=300",
                                             "data.synthetic.features=12", "data.synthetic.informative=6",
                                             "data.synthetic.classes=3"])
    metrics = data.run(params, tmp_path)
    assert metrics["samples"] == 300 and metrics["features"] == 12 and metrics["classes"] == 3


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_from_a_folder(tmp_path, tiny_params_path, gz):
    make_idx_folder(tmp_path / "mnist", gz=gz)
    ext = ".gz" if gz else ""
    names = [f"data.idx.{k}={p}-idx{d}-ubyte{ext}" for k, p, d in (
        ("train_images", "train-images", 3), ("train_labels", "train-labels", 1),
        ("test_images", "t10k-images", 3), ("test_labels", "t10k-labels", 1))]
    params = load_params(tiny_params_path, ["data.source=idx", f"data.path={tmp_path / 'mnist'}", *names])
    metrics = data.run(params, tmp_path / "out")
    assert metrics["samples"] == 80 and metrics["features"] == 36
    assert json.loads((tmp_path / "out" / "data" / "meta.json").read_text())["image_shape"] == [1, 6, 6]


def test_idx_fetched_once_from_a_url_with_checksum(tmp_path, tiny_params_path):
    make_idx_folder(tmp_path / "remote")
    roles = {"train-images-idx3-ubyte.gz": "train_images", "train-labels-idx1-ubyte.gz": "train_labels",
             "t10k-images-idx3-ubyte.gz": "test_images", "t10k-labels-idx1-ubyte.gz": "test_labels"}
    sums = {roles[p.name]: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "remote").iterdir()}
    overrides = ["data.source=idx", f"data.idx.base_url=file://{tmp_path / 'remote'}",
                 f"data.raw_dir={tmp_path / 'raw'}"] + [f"data.idx.sha256.{k}={v}" for k, v in sums.items()]
    params = load_params(tiny_params_path, overrides)
    data.run(params, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(roles)
    shutil.rmtree(tmp_path / "remote")  # a second run must not fetch again
    data.run(params, tmp_path / "out2")


def test_npz_and_csv_sources(tmp_path, tiny_params_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 5)), np.arange(90) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    params = load_params(tiny_params_path, ["data.source=npz", f"data.path={tmp_path / 'd.npz'}"])
    assert data.run(params, tmp_path / "n")["features"] == 5
    rows = ["a,b,kind"] + [f"{u:.3f},{v:.3f},{'cat' if c else 'dog'}" for (u, v), c in zip(x[:, :2], y % 2)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    params = load_params(tiny_params_path, ["data.source=csv", f"data.path={tmp_path / 'd.csv'}", "data.label_column=kind"])
    metrics = data.run(params, tmp_path / "c")
    assert metrics["features"] == 2 and metrics["classes"] == 2


def _bad_idx_magic(folder):
    make_idx_folder(folder / "in", gz=False)
    (folder / "in" / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
    return {"source": "idx", "path": str(folder / "in"), **_plain_names()}


def _truncated_idx(folder):
    make_idx_folder(folder / "in", gz=False)
    path = folder / "in" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    return {"source": "idx", "path": str(folder / "in"), **_plain_names()}


def _label_count_mismatch(folder):
    make_idx_folder(folder / "in", gz=False)
    write_idx(folder / "in" / "train-labels-idx1-ubyte", np.zeros(59))
    return {"source": "idx", "path": str(folder / "in"), **_plain_names()}


def _plain_names():
    return {"idx": {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}}


def _non_numeric_csv(folder):
    (folder / "in.csv").write_text("a,b,label\n1,2,0\n3,x,1\n")
    return {"source": "csv", "path": str(folder / "in.csv")}


def _nan_csv(folder):
    (folder / "in.csv").write_text("a,b,label\n1,2,0\n3,nan,1\n")
    return {"source": "csv", "path": str(folder / "in.csv")}


def _inf_csv(folder):
    (folder / "in.csv").write_text("a,b,label\n1,2,0\n-inf,4,1\n")
    return {"source": "csv", "path": str(folder / "in.csv")}


def _latin1_csv(folder):
    (folder / "in.csv").write_bytes("a,b,label\n1,2,0\n3,4,caf\u00e9\n".encode("latin-1"))
    return {"source": "csv", "path": str(folder / "in.csv")}


def _nan_npz(folder):
    np.savez(folder / "nan.npz", x=np.array([[1.0, np.nan], [2.0, 3.0]]), y=np.array([0, 1]))
    return {"source": "npz", "path": str(folder / "nan.npz")}


def _missing_npz(folder):
    return {"source": "npz", "path": str(folder / "absent.npz")}


def _corrupt_npz(folder):
    (folder / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    return {"source": "npz", "path": str(folder / "bad.npz")}


@pytest.mark.parametrize("make, message", [
    (_bad_idx_magic, "train-images-idx3-ubyte: not an IDX file (wrong magic number)"),
    (_truncated_idx, "t10k-images-idx3-ubyte: truncated or oversized IDX data"),
    (_label_count_mismatch, "train-labels-idx1-ubyte: 59 labels for 60 images"),
    (_non_numeric_csv, "in.csv: line 3, column 'b': 'x' is not a number"),
    (_nan_csv, "in.csv: line 3, column 'b': 'nan' is not a finite number; fill in or drop the missing values"),
    (_inf_csv, "in.csv: line 3, column 'a': '-inf' is not a finite number"),
    (_latin1_csv, "in.csv: not UTF-8 text (byte 0xe9 on line 3); save the CSV as UTF-8"),
    (_nan_npz, "nan.npz: x has NaN or infinite values (first in sample 0)"),
    (_missing_npz, "absent.npz: file not found"),
    (_corrupt_npz, "bad.npz: not a readable .npz file"),
])
def test_bad_files_fail_cleanly_and_write_nothing(tmp_path, monkeypatch, make, message):
    write_params(tmp_path, **make(tmp_path))
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, monkeypatch, "data")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_idx_checksum_mismatch_is_an_error(tmp_path, tiny_params_path):
    make_idx_folder(tmp_path / "remote")
    params = load_params(tiny_params_path, ["data.source=idx", f"data.idx.base_url=file://{tmp_path / 'remote'}",
                                             f"data.raw_dir={tmp_path / 'raw'}", "data.idx.sha256.train_images=abc"])
    with pytest.raises(InputFileError, match="does not match data.idx.sha256.train_images"):
        data.run(params, tmp_path / "out")
    assert not (tmp_path / "out").exists()
