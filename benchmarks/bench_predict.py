"""``genrekit predict`` speed on CPU: one 30 s track warm, and a folder of tracks per file vs batched.

Two runs are trained on two gtzan_mini genres (blues, metal; the time does not depend on the
weights' values): ``mobilenet`` (ImageNet transfer on mel images) and ``musicnn_lr`` (the default
recipe: frozen musicnn, pooling, logistic head). For each it prints, in one run:

- warm seconds to predict one 30 s track (model loaded, its call traced; median of
  ``--repeats``; wall and CPU seconds of the process, all threads), split into decoding, feature extraction and the model call, and the model
  call as Keras' ``model.predict`` would make it (what predict did before);
- files/s over a folder of ``--files`` 30 s tracks (gtzan_mini's clips) one file at a time
  (``iter_predictions(..., batch=False)``) and batched (the default), their ratio, a check
  that both give the same results in the same order, and the per-file rate with the model
  called as predict called it before (Keras' ``model.predict``; eager backbone calls).

    nice -n 10 python benchmarks/bench_predict.py [--repeats 7] [--files 100] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import GTZAN_MINI, WEIGHTS

GENRES = ("blues", "metal")


def _runs(work: Path) -> dict[str, Path]:
    """The two runs under ``work`` (trained once; reused when already there)."""
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment
    from genrekit.train import TrainOptions, train

    none = AugmentConfig(augmentations=())
    runs = {"mobilenet": work / "run_mobilenet", "musicnn_lr": work / "run_musicnn_lr"}
    if not (runs["mobilenet"] / "config.json").is_file():
        run_augment(GTZAN_MINI, work / "mel", AugmentSettings(augment=none, kinds=("mel",), genres=GENRES),
                    workers=1, progress=False)
        train(TrainOptions(data=str(work / "mel"), arch="mobilenet", phase="transfer", epochs=1, verbose=0,
                           weights=str(WEIGHTS) if WEIGHTS.is_file() else "none", out=str(runs["mobilenet"])))
    if not (runs["musicnn_lr"] / "config.json").is_file():
        run_augment(GTZAN_MINI, work / "musicnn", AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES),
                                                                  kinds=("musicnn",), augment=none, genres=GENRES),
                    workers=1, progress=False)
        train(TrainOptions(data=str(work / "musicnn"), arch="musicnn_lr", verbose=0, out=str(runs["musicnn_lr"])))
    return runs


def _median_ms(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, out


def _one_track(name: str, run, track: Path, repeats: int) -> None:
    from genrekit import predict as P
    from genrekit.data_tools.audio import load_audio
    from genrekit.models.track import is_track_model, window_embedder
    from genrekit.prediction import PREDICT_EMBED_STEP, call_windows

    model = run.model()
    P.predict_file(track, run)  # warm-up: traces the model's call
    total, _ = _median_ms(lambda: P.predict_file(track, run), repeats)
    cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        P.predict_file(track, run)
        cpu.append(time.process_time() - c0)
    decode, y = _median_ms(lambda: load_audio(track, sr=run.feature_config.sr).y, repeats)
    cfg = P.analysis_config(run, False)
    feats, (_, x) = _median_ms(lambda: P.audible_inputs(y, cfg, run.kind), repeats)
    if is_track_model(model):
        net, step = window_embedder(model), PREDICT_EMBED_STEP
    else:
        net, step = model, P.WINDOW_STEP
    call, _ = _median_ms(lambda: call_windows(net, x, step), repeats)
    keras, _ = _median_ms(lambda: [net.predict(x[i:i + step], verbose=0) for i in range(0, len(x), step)], 3)
    print(f"{name:10s} warm predict {total / 1000:.3f} s per 30 s track ({statistics.median(cpu):.3f} CPU s; "
          f"{len(x)} windows): decode {decode:.0f} ms, "
          f"features {feats:.0f} ms, model {call:.0f} ms (Keras model.predict: {keras:.0f} ms)  "
          f"[load {os.getloadavg()[0]:.1f}]", flush=True)


def _keras_calls(track_model: bool):
    """How predict called the model before it had a compiled call: Keras' ``model.predict`` for a
    window classifier, eager calls of the backbone for a track model."""
    import numpy as np

    def call(model, x, step):
        if track_model:
            return np.concatenate([np.asarray(model(x[i:i + step], training=False)) for i in range(0, len(x), step)])
        return model.predict(x, batch_size=step, verbose=0)
    return call


def _rate(run, files, batch: bool) -> tuple[float, list]:
    from genrekit.predict import iter_predictions

    list(iter_predictions(files[:2], run, batch=batch))  # warm: the run's model loaded and traced
    t0 = time.perf_counter()
    results = list(iter_predictions(files, run, batch=batch))
    return len(files) / (time.perf_counter() - t0), results


def _folder(name: str, run, files: list[Path], before_files: int) -> None:
    import genrekit.predict as P
    from genrekit.models.track import is_track_model

    one, r_one = _rate(run, files, batch=False)
    many, r_many = _rate(run, files, batch=True)
    same = r_one == r_many
    compiled = P.call_windows
    P.call_windows = _keras_calls(is_track_model(run.model()))
    try:
        old, _ = _rate(run, files[:before_files], batch=False)
    finally:
        P.call_windows = compiled
    print(f"{name:10s} folder of {len(files)} tracks: per file {one:.2f} files/s, batched {many:.2f} files/s, "
          f"ratio {many / one:.2f}x (same results, same order: {'yes' if same else 'NO'}); per file with "
          f"Keras' calls as before ({before_files} tracks) {old:.2f} files/s: batched is {many / old:.2f}x that  "
          f"[load {os.getloadavg()[0]:.1f}]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--files", type=int, default=100, help="tracks in the folder (gtzan_mini clips)")
    ap.add_argument("--before-files", type=int, default=20, help="tracks timed with Keras' calls as before")
    ap.add_argument("--work", help="folder for the features and runs (kept and reused; default: a temporary one)")
    a = ap.parse_args()
    if not GTZAN_MINI.is_dir():
        raise SystemExit(f"gtzan_mini not found at {GTZAN_MINI}")
    from genrekit.runs import Run

    track = GTZAN_MINI / "jazz" / "jazz.00004.wav"
    files = sorted(GTZAN_MINI.rglob("*.wav"))[:a.files]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = _runs(work)
        print(f"track: {track.name} (30 s); median of {a.repeats}; CPU threads: {os.cpu_count()}", flush=True)
        for name, path in runs.items():
            _one_track(name, Run(path), track, a.repeats)
        for name, path in runs.items():
            _folder(name, Run(path), files, min(a.before_files, len(files)))


if __name__ == "__main__":
    main()
