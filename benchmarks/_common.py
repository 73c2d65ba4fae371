"""Shared helpers for the benchmarks: gtzan_mini features and an epoch timer."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
GTZAN_MINI = ROOT.parent / "shared" / "data" / "gtzan_mini" / "genres"
OOD = ROOT.parent / "shared" / "data" / "ood_dev"
KNOWN = ("classical", "pop", "rock")  # ood_dev genres GTZAN knows
NEW = "electronic"  # ood_dev genre GTZAN does not know
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


def default_run(work: Path) -> Path:
    """The default recipe trained on gtzan_mini in ``work`` (reused when already there)."""
    from genrekit.cli import main

    run = work / "run"
    if (run / "embeddings.npz").is_file():
        return run
    feats = work / "feats"
    if main(["augment", "--data", str(GTZAN_MINI), "--out", str(feats), "--features", "musicnn",
             "--augment", "none", "--workers", "2"]) != 0:
        raise SystemExit("augment failed")
    if main(["train", "--data", str(feats), "--out", str(run), "--quiet"]) != 0:
        raise SystemExit("train failed")
    return run


def ood_embeddings(run, work: Path) -> dict:
    """Pooled embedding and raw probabilities of every ood_dev track through predict's path
    (cached in ``work``)."""
    from genrekit.predict import analyse_file

    cache = work / "ood_embeddings.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    paths, genres, xs, ps = [], [], [], []
    for g in (*KNOWN, NEW):
        for f in sorted((OOD / g).iterdir()):
            p, e = analyse_file(str(f), run, pooled=True)
            paths.append(str(f))
            genres.append(g)
            xs.append(e)
            ps.append(p)
    out = {"path": np.array(paths), "genre": np.array(genres), "x": np.stack(xs).astype(np.float32),
           "p": np.stack(ps)}
    np.savez(cache, **out)
    return out


def ood_bench_args(doc: str):
    """The command line of the ood_dev benchmarks (``--run``, ``--workdir``, ``--draws``), parsed,
    with ood_dev required: ``(args, work folder, the run)`` (the default run trained here when
    ``--run`` is not given)."""
    import argparse
    import tempfile

    from genrekit.runs import Run

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--run", default=None, help="a default-recipe run (default: trained on gtzan_mini here)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--draws", type=int, default=10)
    a = ap.parse_args()
    if not OOD.is_dir():
        raise SystemExit(f"ood_dev not found at {OOD}")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="genrekit-ood-"))
    work.mkdir(parents=True, exist_ok=True)
    return a, work, Run(a.run or default_run(work))
