"""Speech Commands as a data source: the dataset's layout, features, noisy test sets, bad files."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY, snapshot
from sparsecli.cli import app
from sparsecli.params import load_params
from sparsecli.stages import data
from template_run import init_template, sh
from wavs import clip, make_speech_commands, write_wav

WORDS = ["yes", "no", "up"]


def speech_params(folder, **noise):
    raw = yaml.safe_load(TINY.read_text())
    raw["data"] = {"source": "speech_commands", "path": str(folder / "raw"), "words": WORDS,
                   "standardize_scope": "global"}
    raw["train"]["noise"] = {"kind": "waveform", "levels": [0.0, 0.5], **noise}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    make_speech_commands(folder / "raw", WORDS + ["zero"], per_word=12)  # a word folder not used
    return folder


def test_reads_the_dataset_layout_and_its_lists(speech_dir):
    params = load_params(speech_params(speech_dir))
    data.run(params, speech_dir)
    meta = json.loads((speech_dir / "data" / "meta.json").read_text())
    assert meta["class_names"] == sorted(WORDS) and meta["image_shape"] == [1, 32, 32]
    assert meta["sizes"] == {"train": 3 * 8, "val": 3 * 2, "test": 3 * 2}  # as validation/testing_list.txt say
    assert meta["noise_levels"] == [0.0, 0.5]
    with np.load(speech_dir / "data" / "test.npz") as test, np.load(speech_dir / "data" / "test_noise.npz") as noisy:
        assert test["x"].shape == (6, 32 * 32)
        assert list(noisy["levels"]) == [0.0, 0.5]
        assert np.allclose(noisy["x_0"], test["x"], atol=1e-4)  # level 0: the clean clips
        assert not np.allclose(noisy["x_1"], test["x"], atol=0.1)


def test_clips_are_padded_or_trimmed_to_one_second(tmp_path):
    from sparsecli.data.speech import read_wav

    rng = np.random.default_rng(0)
    for seconds in (0.5, 1.0, 1.5):
        samples = clip(0, rng, seconds)
        write_wav(tmp_path / "a.wav", samples)
        out = read_wav(tmp_path / "a.wav")
        assert out.shape == (16000,)
        kept = min(len(samples), 16000)
        assert np.allclose(out[:kept], samples[:kept], atol=1e-4) and not out[kept:].any()


def _stereo(root):
    write_wav(root / "yes" / "0000_nohash_0.wav", np.zeros(16000, np.float32), channels=2)
    return root / "yes" / "0000_nohash_0.wav", "2 channels, expected mono"


def _rate(root):
    write_wav(root / "no" / "0001_nohash_0.wav", np.zeros(8000, np.float32), rate=8000)
    return root / "no" / "0001_nohash_0.wav", "sample rate 8000 Hz, expected 16000 Hz"


def _eight_bit(root):
    write_wav(root / "up" / "0002_nohash_0.wav", np.zeros(16000, np.float32), width=1)
    return root / "up" / "0002_nohash_0.wav", "8-bit samples, expected 16-bit PCM"


def _truncated(root):
    path = root / "yes" / "0003_nohash_0.wav"
    path.write_bytes(path.read_bytes()[:2000])
    return path, "truncated: the header says "


def _not_wav(root):
    path = root / "no" / "0004_nohash_0.wav"
    path.write_text("not audio at all")
    return path, "not a readable WAV file"


def _other_file(root):
    path = root / "up" / "notes.txt"
    path.write_text("hello")
    return path, "not a WAV file in a word folder"


def _missing_word(root):
    import shutil

    shutil.rmtree(root / "up")
    return root / "up", "word folder missing; add it or remove 'up' from data.words"


@pytest.mark.parametrize("damage", [_stereo, _rate, _eight_bit, _truncated, _not_wav, _other_file, _missing_word])
def test_bad_files_are_one_clear_line_and_nothing_is_written(tmp_path, monkeypatch, damage):
    make_speech_commands(tmp_path / "raw", WORDS, per_word=6)
    speech_params(tmp_path)
    path, message = damage(tmp_path / "raw")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")  # an older output stays as it was
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["data"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and message in lines[0], result.output
    assert snapshot(tmp_path) == before


def test_params_for_speech_are_checked(tmp_path):
    path = speech_params(tmp_path)
    with pytest.raises(Exception, match="data.max_samples: does not apply to speech_commands"):
        data.run(load_params(path, ["data.max_samples=10"]), tmp_path)
    # yes/no/on/off are words, not booleans (YAML 1.2, as DVC writes params.yaml)
    assert load_params(path, ["data.words=[yes, no, on, off]"]).data.words == ["yes", "no", "on", "off"]
    with pytest.raises(Exception, match='data.words = \\[true, false\\]: quote the words'):
        load_params(path, ["data.words=[true, false]"])


def test_speech_template_trains_and_reports_end_to_end(tmp_path):
    def add_wavs(project):
        make_speech_commands(project / "raw" / "speech_commands", WORDS, per_word=30)

    project = init_template("speech", tmp_path / "speech", add_wavs)
    sh("dvc", "repro", cwd=project)
    metrics = json.loads((project / "metrics" / "train.json").read_text())
    assert metrics["test_accuracy"] > 0.7  # 3 pitches, 4 epochs (chance: 1/3)
    assert metrics["noise_kind"] == "waveform" and set(metrics["accuracy_by_noise"]) == {"0.0", "0.25", "0.5"}
    assert metrics["dense"]["weight_sparsity"] == 0.0
    assert (project / "data" / "test_noise.npz").is_file()
    html = (project / "reports" / "index.html").read_text()
    assert 'id="dense"' in html and "test accuracy" in html
    assert "up to date" in sh("dvc", "status", cwd=project)
