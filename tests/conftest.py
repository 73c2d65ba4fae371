"""Shared fixtures: tiny synthetic audio trees written by the tests, and small feature configs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.features import FEATURE_KINDS, MUSICNN_FEATURES, FeatureConfig
from genrekit.data_tools.pipeline import AugmentSettings, run_augment

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GTZAN_MINI = SHARED / "data" / "gtzan_mini" / "genres"
SR = 8000


def tone(freq: float, seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def write_tree(root: Path, genres=("low", "high", "mid"), per_genre=5, seconds=2.5, sr=SR) -> Path:
    freqs = {"low": 220.0, "high": 1760.0, "mid": 660.0}
    for gi, g in enumerate(genres):
        (root / g).mkdir(parents=True, exist_ok=True)
        for i in range(per_genre):
            y = tone(freqs.get(g, 440.0 * (gi + 1)) * (1 + 0.02 * i), seconds, sr, seed=gi * 100 + i)
            sf.write(root / g / f"{g}.{i:05d}.wav", y, sr, subtype="PCM_16")
    return root


@pytest.fixture
def audio_tree(tmp_path) -> Path:
    return write_tree(tmp_path / "data")


def small_features(**kw) -> FeatureConfig:
    base = dict(sr=SR, n_fft=256, hop_length=128, n_mels=32, image_height=32, image_width=48,
                image_seconds=2.0, mfcc_seconds=1.0, mfcc_hop_seconds=0.5)
    base.update(kw)
    return FeatureConfig(**base)


def small_settings(**kw) -> AugmentSettings:
    base = dict(features=small_features(),
                augment=AugmentConfig(freq_mask_bands=8, time_mask_frames=10),
                kinds=FEATURE_KINDS, ratios=(60, 20, 20), seed=3)
    base.update(kw)
    return AugmentSettings(**base)


@pytest.fixture
def gtzan_subset(tmp_path) -> Path:
    """Three real GTZAN genres copied to a temporary tree (skipped when shared data is absent)."""
    if not GTZAN_MINI.is_dir():
        pytest.skip("../shared/data/gtzan_mini is not available")
    root = tmp_path / "gtzan" / "genres"
    for g in ("blues", "classical", "metal"):
        shutil.copytree(GTZAN_MINI / g, root / g)
    return root


@pytest.fixture(scope="session")
def tiny_features(tmp_path_factory) -> Path:
    """A small feature folder (mel 32x32 and MFCC) from synthetic tones, made once per session."""
    from genrekit.data_tools.pipeline import run_augment

    base = tmp_path_factory.mktemp("tiny")
    data = write_tree(base / "data", per_genre=5, seconds=2.5)
    settings = small_settings(features=small_features(image_width=32),
                              augment=AugmentConfig(augmentations=("pitch",), pitch_semitones=(1.0,)))
    run_augment(data, base / "feats", settings, workers=1, progress=False)
    return base / "feats"


USER_FREQS = {"low": 220.0, "mid": 660.0, "high": 1760.0}


def noise_bursts(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """A genre the tone runs never saw: noise bursts (nothing like a tone)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * (3 + seed % 3) * t) > 0)).astype(np.float32)


def user_music(root: Path, per_genre: int, seed0: int, buzz: int, sr: int = 16000) -> Path:
    """A user's folder-per-genre music for adapt/suggest: new tones of the low/mid/high genres
    (``per_genre`` each) and ``buzz`` tracks of a genre the run does not know, ``buzz``."""
    for gi, (g, f0) in enumerate(USER_FREQS.items()):
        (root / g).mkdir(parents=True, exist_ok=True)
        for i in range(per_genre):
            y = tone(f0 * (1.013 + 0.021 * i), 4.0, sr, seed=seed0 + 10 * gi + i)
            sf.write(root / g / f"mine-{g}-{seed0}-{i}.wav", y, sr, subtype="PCM_16")
    (root / "buzz").mkdir(parents=True, exist_ok=True)
    for i in range(buzz):
        sf.write(root / "buzz" / f"mine-buzz-{seed0}-{i}.wav", noise_bursts(4.0, seed0 + i, sr), sr, subtype="PCM_16")
    return root


def one_error(capsys, rc) -> str:
    """The single ``genrekit: error:`` line a refused command printed (and its exit code 2)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("genrekit: error:"), err
    return err[0]


def musicnn_features(data, out, ratios=(50, 25, 25)):
    """``data`` rendered as musicnn windows into ``out``, no augmentation (the default recipe's
    input), split by ``ratios``; returns augment's summary."""
    return run_augment(data, out, AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES), kinds=("musicnn",),
                                                  augment=AugmentConfig(augmentations=()), ratios=ratios),
                       progress=False)
