"""Small Speech Commands folders made by the tests themselves: WAV clips in the dataset's layout."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000, channels: int = 1, width: int = 2) -> None:
    """Write PCM samples in [-1, 1]; ``width`` bytes per sample (1 = 8-bit unsigned, 2 = 16-bit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    raw = (np.clip(data, -1, 1) * 32767).astype("<i2").tobytes() if width == 2 else \
        ((np.clip(data, -1, 1) + 1) * 127.5).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(raw)


def clip(word_index: int, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    """A learnable clip: a tone whose pitch names the word, with noise and a random onset."""
    n = int(16_000 * seconds)
    t = np.arange(n) / 16_000
    tone = 0.4 * np.sin(2 * np.pi * (300 + 250 * word_index) * t + rng.uniform(0, 6.28))
    tone[: rng.integers(0, n // 4)] = 0
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


def make_speech_commands(root: Path, words: list[str], per_word: int = 12, seed: int = 0) -> Path:
    """``root/<word>/<i>_nohash_0.wav`` for each word; a sixth of each word's clips in each held-out list."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for w, word in enumerate(words):
        for i in range(per_word):
            name = f"{word}/{i:04x}_nohash_0.wav"
            write_wav(root / name, clip(w, rng, seconds=rng.choice([0.8, 1.0, 1.2])))
            (val if i % 6 == 0 else test if i % 6 == 1 else []).append(name)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    (root / "_background_noise_").mkdir(exist_ok=True)  # the dataset has it; it is not a word
    return root
