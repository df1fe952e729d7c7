"""Google Speech Commands in the dataset's own layout -> MFCC (or log-mel) features.

Layout (as the dataset ships): ``<path>/<word>/<clip>.wav``, one folder per word, every clip
16 kHz mono 16-bit PCM WAV; ``<path>/validation_list.txt`` and ``<path>/testing_list.txt``
name the held-out clips as ``word/clip.wav``, one a line; every other clip of a listed word
is training data. Folders of words not in ``data.words`` (and ``_background_noise_``) are
ignored. Clips are padded with zeros or trimmed to 1 s (16,000 samples).

Features (librosa): ``mfcc`` = 32 MFCC from 40 mel bands; ``logmel`` = 32 log-mel bands
(power in dB); both from an STFT with n_fft 1024 and hop 512 (centred), so 32 frames: a
[1, 32, 32] image per clip, the paper's input size. Every file is checked before any feature
is computed: a bad file stops the stage with one line naming it, before anything is written.

Noise (``train.noise.kind: waveform``): each test clip becomes ``(1 - a) * clip + a * u``,
``u`` uniform white noise in [-1, 1] drawn from the seed, for each level ``a``; the
features of each noisy test set are data-stage outputs (``data/test_noise.npz``).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsecli.errors import InputFileError
from sparsecli.params import DataParams

SAMPLE_RATE = 16_000
SAMPLES = SAMPLE_RATE  # 1 s
N_FFT, HOP, N_MELS_MFCC, N_FEATURES = 1024, 512, 40, 32
IMAGE_SHAPE = (1, N_FEATURES, 1 + SAMPLES // HOP)  # (1, 32, 32)
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


@dataclass
class SpeechData:
    waves: dict[str, np.ndarray]  # split -> [N, 16000] float32 in [-1, 1]
    labels: dict[str, np.ndarray]  # split -> [N] word strings
    files: dict[str, list[str]]  # split -> the clips, word/clip.wav


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit PCM WAV as float32 in [-1, 1], padded/trimmed to 1 s."""
    try:
        with wave.open(str(path), "rb") as handle:
            rate, channels, width = handle.getframerate(), handle.getnchannels(), handle.getsampwidth()
            frames = handle.getnframes()
            raw = handle.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise InputFileError(f"{path}: not a readable WAV file ({e}); Speech Commands clips are 16 kHz mono "
                             "16-bit PCM WAV: remove or replace it") from None
    if rate != SAMPLE_RATE:
        raise InputFileError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz; resample the clip to 16 kHz")
    if channels != 1:
        raise InputFileError(f"{path}: {channels} channels, expected mono; mix the clip down to one channel")
    if width != 2:
        raise InputFileError(f"{path}: {8 * width}-bit samples, expected 16-bit PCM; convert the clip to 16-bit")
    if len(raw) < frames * width:
        raise InputFileError(f"{path}: truncated: the header says {frames} samples but the file holds "
                             f"{len(raw) // width}; replace the clip")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    out = np.zeros(SAMPLES, dtype=np.float32)
    out[:min(SAMPLES, len(samples))] = samples[:SAMPLES]
    return out


def _read_list(root: Path, name: str, words: set[str]) -> set[str]:
    path = root / name
    if not path.is_file():
        raise InputFileError(f"{path}: not found; the Speech Commands folder needs {LISTS['val']} and "
                             f"{LISTS['test']} (one word/clip.wav a line)")
    listed = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        word, _, clip = entry.partition("/")
        if not clip or "/" in clip:
            raise InputFileError(f"{path}: line {number} ({entry!r}) is not word/clip.wav")
        if word not in words:
            continue  # a word this run does not use
        if not (root / entry).is_file():
            raise InputFileError(f"{path}: line {number} names {root / entry}, which does not exist")
        listed.add(entry)
    return listed


def load_speech(data: DataParams) -> SpeechData:
    """Every clip of ``data.words``, split by the dataset's lists, checked and read."""
    root = Path(data.path)
    if not root.is_dir():
        raise InputFileError(f"{root}: Speech Commands folder not found; put the word folders there or set data.path")
    words = list(data.words)
    for word in words:
        if not (root / word).is_dir():
            raise InputFileError(f"{root / word}: word folder missing; add it or remove {word!r} from data.words")
    held_out = {split: _read_list(root, name, set(words)) for split, name in LISTS.items()}
    both = held_out["val"] & held_out["test"]
    if both:
        raise InputFileError(f"{root / LISTS['test']}: {sorted(both)[0]} is also in {LISTS['val']}; a clip is in one split")
    files: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for word in words:
        per_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for path in sorted((root / word).iterdir()):
            if path.name.startswith("."):
                continue
            entry = f"{word}/{path.name}"
            if path.is_dir() or path.suffix.lower() != ".wav":
                raise InputFileError(f"{path}: not a WAV file in a word folder; remove it (clips are word/clip.wav)")
            split = "val" if entry in held_out["val"] else "test" if entry in held_out["test"] else "train"
            per_split[split].append(entry)
        for split, entries in per_split.items():
            files[split] += entries[: data.speech.max_per_word] if data.speech.max_per_word else entries
    for split, entries in files.items():
        if not entries:
            raise InputFileError(f"{root}: no {split} clips for data.words; check {LISTS.get(split, 'the word folders')}")
    waves = {split: np.stack([read_wav(root / entry) for entry in entries]) for split, entries in files.items()}
    labels = {split: np.array([entry.split("/")[0] for entry in entries]) for split, entries in files.items()}
    return SpeechData(waves, labels, files)


def features(waves: np.ndarray, kind: str) -> np.ndarray:
    """[N, 16000] waveforms -> [N, 32 * 32] float32 features (flattened [1, 32, 32] images)."""
    import librosa

    if kind == "mfcc":
        out = librosa.feature.mfcc(y=waves, sr=SAMPLE_RATE, n_mfcc=N_FEATURES, n_fft=N_FFT, hop_length=HOP,
                                   n_mels=N_MELS_MFCC)
    else:
        mel = librosa.feature.melspectrogram(y=waves, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_FEATURES)
        out = librosa.power_to_db(mel, ref=1.0)
    return out.reshape(len(waves), -1).astype(np.float32)


def noisy(waves: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """(1 - level) * clip + level * uniform(-1, 1) white noise."""
    noise = rng.uniform(-1.0, 1.0, size=waves.shape).astype(np.float32)
    return ((1.0 - level) * waves + level * noise).astype(np.float32)
