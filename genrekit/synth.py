"""A small synthetic labelled music set, generated in code (no downloads).

Four made-up "genres" with genuinely different rhythm and timbre, each track drawn with
its own tempo, key, timbre and mix from a seeded generator:

* ``pulse``   — four-on-the-floor kick, off-beat hi-hats and a saw bass (118-130 BPM);
* ``drone``   — sustained detuned sine chords with slow swells, no percussion;
* ``shuffle`` — swung triplet hi-hats, snare back-beat and plucked (Karplus-Strong) notes (85-105 BPM);
* ``noise``   — fast (160-185 BPM) distorted square riffs over noisy snare hits.

It is for smoke tests and the demo only: say so wherever its numbers are shown.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SYNTH_GENRES = ("pulse", "drone", "shuffle", "noise")


def _env(n: int, sr: int, attack_s: float, decay_s: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(1.0, t / max(attack_s, 1e-4)) * np.exp(-t / max(decay_s, 1e-4))


def _place(buf: np.ndarray, sound: np.ndarray, at: int) -> None:
    if at >= len(buf):
        return
    end = min(len(buf), at + len(sound))
    buf[at:end] += sound[: end - at]


def _kick(sr, rng):
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    f = 50 + 90 * np.exp(-t * 30)
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * _env(n, sr, 0.002, 0.08)


def _noise_hit(sr, rng, dur, decay, hp=True):
    n = int(dur * sr)
    x = rng.standard_normal(n)
    if hp:
        x = np.diff(x, prepend=0.0)
    return x * _env(n, sr, 0.001, decay) * 0.5


def _pluck(sr, rng, freq, dur):
    n = int(dur * sr)
    period = max(2, int(sr / freq))
    buf = rng.uniform(-1, 1, period)
    out = np.empty(n)
    for i in range(n):
        out[i] = buf[i % period]
        buf[i % period] = 0.5 * (buf[i % period] + buf[(i + 1) % period]) * 0.996
    return out


def synth_track(genre: str, seconds: float = 10.0, sr: int = 22050, seed: int = 0) -> np.ndarray:
    """One synthetic clip of ``genre`` (mono float32 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    y = np.zeros(n)
    root = 55.0 * 2 ** (rng.integers(0, 12) / 12)
    t = np.arange(n) / sr
    if genre == "pulse":
        bpm = rng.uniform(118, 130)
        beat = 60 / bpm
        for k in range(int(seconds / beat) + 1):
            _place(y, _kick(sr, rng), int(k * beat * sr))
            _place(y, 0.4 * _noise_hit(sr, rng, 0.05, 0.015), int((k + 0.5) * beat * sr))
            note = root * 2 ** (rng.choice([0, 0, 7, 5, 12]) / 12)
            m = int(beat * sr)
            tt = np.arange(m) / sr
            saw = 2 * ((tt * note) % 1.0) - 1
            _place(y, 0.25 * saw * _env(m, sr, 0.005, 0.2), int((k + 0.5) * beat * sr))
    elif genre == "drone":
        chord = root * 4 * 2 ** (np.array([0, rng.choice([3, 4]), 7, 10 + rng.integers(0, 3)]) / 12)
        swell = 0.6 + 0.4 * np.sin(2 * np.pi * t / rng.uniform(3, 7) + rng.uniform(0, 6))
        for f in chord:
            for det in (-0.3, 0.3):
                y += np.sin(2 * np.pi * (f + det) * t + rng.uniform(0, 6)) * swell / 8
    elif genre == "shuffle":
        bpm = rng.uniform(85, 105)
        beat = 60 / bpm
        scale = [0, 3, 5, 7, 10]
        for k in range(int(seconds / beat) + 1):
            for sub in (0.0, 2 / 3):
                _place(y, 0.3 * _noise_hit(sr, rng, 0.04, 0.01), int((k + sub) * beat * sr))
            if k % 2 == 1:
                _place(y, 0.8 * _noise_hit(sr, rng, 0.2, 0.06, hp=False), int(k * beat * sr))
            f = root * 4 * 2 ** (scale[rng.integers(0, 5)] / 12)
            _place(y, 0.4 * _pluck(sr, rng, f, beat * 0.9), int((k + rng.choice([0, 2 / 3])) * beat * sr))
    elif genre == "noise":
        bpm = rng.uniform(160, 185)
        eighth = 30 / bpm
        for k in range(int(seconds / eighth) + 1):
            f = root * 2 * 2 ** (rng.choice([0, 0, 1, 3, 5, 6]) / 12)
            m = int(eighth * sr)
            tt = np.arange(m) / sr
            sq = np.sign(np.sin(2 * np.pi * f * tt))
            _place(y, 0.3 * np.tanh(3 * sq + 0.3 * rng.standard_normal(m)) * _env(m, sr, 0.002, 0.2),
                   int(k * eighth * sr))
            if k % 4 == 2:
                _place(y, 0.9 * _noise_hit(sr, rng, 0.15, 0.05, hp=False), int(k * eighth * sr))
    else:
        raise ValueError(f"unknown synthetic genre {genre!r} (known: {', '.join(SYNTH_GENRES)})")
    y += 0.003 * rng.standard_normal(n)  # a little room noise
    peak = np.max(np.abs(y)) or 1.0
    return (0.8 * y / peak).astype(np.float32)


def write_synthetic_set(out, per_genre: int = 8, seconds: float = 10.0, sr: int = 22050, seed: int = 0,
                        genres=SYNTH_GENRES) -> Path:
    """Write ``out/<genre>/<genre>.000NN.wav`` (PCM16) and return ``out``. Skips existing files."""
    import soundfile as sf

    out = Path(out)
    for gi, g in enumerate(genres):
        (out / g).mkdir(parents=True, exist_ok=True)
        for i in range(per_genre):
            p = out / g / f"{g}.{i:05d}.wav"
            if p.exists():
                continue
            y = synth_track(g, seconds, sr, seed=seed * 100003 + gi * 1009 + i)
            tmp = p.with_name(p.name + ".tmp.wav")
            sf.write(tmp, y, sr, subtype="PCM_16")
            tmp.replace(p)
    return out
