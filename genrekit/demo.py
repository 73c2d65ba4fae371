"""``genrekit demo``: the whole pipeline on a small synthetic set, with no downloads.

The music is synthetic (see :mod:`genrekit.synth`): four made-up genres generated in code.
Its numbers show that the pipeline works, not how well a model does on real music.
augment -> train (cnn, from scratch) -> evaluate on the test split (top-1/top-2, clip and
track level; report.md and plots) -> predict on fresh clips the model has never seen, all
through the same code as real use. (Not the default recipe, musicnn_lr: that needs the musicnn
weights, a download.)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.pipeline import AugmentSettings, run_augment
from genrekit.evaluate import eval_dir, evaluate, format_metrics
from genrekit.predict import format_table, predict_files
from genrekit.synth import SYNTH_GENRES, synth_track, write_synthetic_set
from genrekit.train import train
from genrekit.training import TrainOptions, format_summary


def _say(msg: str) -> None:
    print(msg, flush=True)


def demo_settings():
    """The demo's augment settings: mel images only (two 5 s images of 128x128 per 10 s
    clip), a 60/20/20 split, seed 0."""
    # 10 s clips, two 5 s images per clip at 128x128: small enough for 2 CPU cores
    fc = FeatureConfig(image_height=128, image_width=128, image_seconds=5.0)
    return AugmentSettings(features=fc, kinds=("mel",), ratios=(60, 20, 20), seed=0)


def run_demo(out, workers: int = 2, quick: bool = False) -> dict:
    """The demo in ``out``: synthetic audio, augment, train a cnn from scratch, evaluate on the
    test split and predict on fresh clips, each step printed; returns the paths and figures.
    ``quick``: fewer clips and epochs."""
    import soundfile as sf


    out = Path(out)
    per_genre = 6 if quick else 12
    _say("genrekit demo — NOTE: the audio is SYNTHETIC (four made-up genres generated in code: "
         f"{', '.join(SYNTH_GENRES)}); the figures below test the pipeline, not real-music accuracy.")
    data = write_synthetic_set(out / "data", per_genre=per_genre, seconds=10.0)
    _say(f"[1/5] synthetic audio: {per_genre} clips x {len(SYNTH_GENRES)} genres in {data}")

    feats = out / "features"
    s = run_augment(data, feats, demo_settings(), workers=workers, progress=sys.stderr.isatty())
    _say(f"[2/5] augment: {s.ok} tracks -> {s.files} mel PNGs in {feats} "
         f"(manifest.csv, splits.csv, report.md)")

    run_dir = out / "runs" / "cnn"
    if (run_dir / "model.keras").exists():
        shutil.rmtree(run_dir)
    result = train(TrainOptions(data=str(feats), arch="cnn", out=str(run_dir), epochs=4 if quick else 15,
                                patience=5, seed=0, verbose=0))
    _say(f"[3/5] train (cnn from scratch; figures at the end of training):\n{format_summary(result)}")
    ev = evaluate(run_dir, feats, split="test")
    report = eval_dir(run_dir, "test") / "report.md"
    _say(f"[4/5] evaluate on the test split (tracks the model never trained on):\n{format_metrics(ev)}\n"
         f"report, confusion matrices, per-genre and ROC plots: {report.parent}/")

    fresh = out / "fresh"
    fresh.mkdir(exist_ok=True)
    files = []
    for i, g in enumerate(SYNTH_GENRES):
        p = fresh / f"unseen_{g}.wav"
        sf.write(p, synth_track(g, 10.0, seed=999_000 + i), 22050, subtype="PCM_16")
        files.append(str(p))
    _say("[5/5] predict on clips the model has never seen (file name = true genre):")
    _say(format_table(predict_files(files, run_dir, top_k=2)))
    _say(f"\nEverything is in {out}: data/ (audio), features/ (PNGs + manifest), runs/cnn/ "
         "(model.keras, labels.json, config.json, history.csv, curves.png, train_metrics.json, "
         "eval/test/ with report.md).")
    return {"data": str(data), "features": str(feats), "run": str(run_dir), "metrics": result.metrics,
            "evaluation": ev, "report": str(report)}
