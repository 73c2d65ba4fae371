"""Shared helpers for the benchmarks: gtzan_mini features and an epoch timer."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
GTZAN_MINI = ROOT.parent / "shared" / "data" / "gtzan_mini" / "genres"
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v1_1.0_tfslim_imagenet_notop.weights.h5"


def gtzan_features(out: Path, augment=("stretch", "pitch"), kinds=("mel",), workers: int = 2,
                   genres=None) -> Path:
    """Render gtzan_mini (or only ``genres`` of it) into ``out`` (resumes if already there)."""
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    if not GTZAN_MINI.is_dir():
        raise SystemExit(f"gtzan_mini not found at {GTZAN_MINI}")
    settings = AugmentSettings(augment=AugmentConfig(augmentations=tuple(augment)), kinds=tuple(kinds),
                               genres=tuple(genres) if genres else None)
    run_augment(GTZAN_MINI, out, settings, workers=workers, progress=False)
    return out


def epoch_timer(training_only: bool = False):
    """Seconds per epoch. ``training_only``: from the epoch's start to its last training batch,
    leaving out the validation pass and end-of-epoch callbacks (checkpoints, CSV logs)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()
            self._last = self._t

        def on_train_batch_end(self, batch, logs=None):
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = self._last if training_only else time.perf_counter()
            self.times.append(end - self._t)

    return EpochTimer()
