"""How much does a segment-level split inflate GTZAN results?

Trains the same small model twice on gtzan_mini 3 s MFCC segments (19 per track):
  by track   — genrekit's way: every segment of a track lies in one split (60/20/20 of tracks);
  by segment — segments shuffled into 60/20/20 at random, so a test segment's neighbours
               (overlapping by 50 %) sit in training: the leak.
Prints both test accuracies (segment level, same seed). It also shows that
``genrekit evaluate`` refuses the leaky evaluation. Repeated over several seeds.

    python benchmarks/leakage.py [--arch fcnn] [--seeds 0,1,2] [--epochs 40]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import gtzan_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="fcnn")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=40)
    a = ap.parse_args()
    import numpy as np

    from genrekit.data_tools.errors import DataError
    from genrekit.data_tools.features import FeatureConfig
    from genrekit.data_tools.folds import write_view
    from genrekit.data_tools.fsio import write_json_atomic
    from genrekit.data_tools.loaders import label_ids
    from genrekit.data_tools.manifest import VIEW_SOURCE, read_manifest, write_manifest
    from genrekit.errors import UserError
    from genrekit.evaluation.metrics import evaluate_predictions
    from genrekit.prediction import predict_rows
    from genrekit.runs import Run, check_leakage
    from genrekit.train import TrainOptions, train

    results = {"track": [], "segment": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        feats = gtzan_features(tmp / "feats", augment=(), kinds=("mfcc",))
        rows = [r for r in read_manifest(feats) if r["feature"] == "mfcc"]
        tracks = sorted({r["track_id"] for r in rows})
        genre = {r["track_id"]: r["genre"] for r in rows}
        for seed in (int(s) for s in a.seeds.split(",")):
            rng = np.random.default_rng(seed)
            # by track: stratified 6/2/2 tracks per genre
            split_of = {}
            for g in sorted(set(genre.values())):
                ts = [t for t in tracks if genre[t] == g]
                order = [ts[i] for i in rng.permutation(len(ts))]
                n = len(order)
                for i, t in enumerate(order):
                    split_of[t] = "train" if i < 0.6 * n else "valid" if i < 0.8 * n else "test"
            by_track = write_view(tmp / f"track-{seed}", feats, rows, split_of)
            # by segment: every row on its own
            seg = tmp / f"segment-{seed}"
            seg.mkdir()
            u = rng.random(len(rows))
            seg_rows = [{**r, "path": str((feats / r["path"]).resolve()),
                         "split": "train" if x < 0.6 else "valid" if x < 0.8 else "test"} for r, x in zip(rows, u, strict=True)]
            write_json_atomic(seg / VIEW_SOURCE, {"source": str(feats.resolve())})  # where its paths lie
            write_manifest(seg / "manifest.csv", seg_rows)
            FeatureConfig.load(feats).save(seg)
            for name, view in (("track", by_track), ("segment", seg)):
                try:
                    res = train(TrainOptions(data=str(view), arch=a.arch, epochs=a.epochs, seed=seed, verbose=0,
                                             out=str(tmp / f"run-{name}-{seed}")))
                except DataError as exc:
                    if "appears in both" not in str(exc):
                        raise
                    # genrekit refuses to train on a leaky manifest; train on it anyway for the figure
                    print(f"seed {seed}: genrekit train refuses the segment split ({exc}); "
                          "training on it anyway for the comparison", flush=True)
                    res = _train_ignoring_leak_check(view, a.arch, a.epochs, seed, tmp / f"run-{name}-{seed}")
                run = Run(res.run)
                test = [r for r in read_manifest(view) if r["split"] == "test"]
                proba = predict_rows(run.model(), view, test, "mfcc")
                ev = evaluate_predictions([r["track_id"] for r in test], label_ids(test, run.labels), proba, run.labels)
                results[name].append(ev["clip"]["top1"])
                refused = ""
                if name == "segment":
                    try:
                        check_leakage(run, {r["track_id"] for r in test})
                    except UserError:
                        refused = "  (genrekit evaluate refuses this one: test tracks were trained on)"
                print(f"seed {seed}: split by {name:7s} -> test accuracy {ev['clip']['top1']:.3f}{refused}", flush=True)
    for name in ("track", "segment"):
        v = results[name]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"split by {name:7s}: mean test accuracy {statistics.mean(v):.3f} ± {sd:.3f} over {len(v)} seeds")
    print(f"inflation from the segment-level split: {100 * (statistics.mean(results['segment']) - statistics.mean(results['track'])):+.1f} points")


def _train_ignoring_leak_check(view, arch, epochs, seed, out):
    import genrekit.tasks.genre_windows as genre_task  # the genre task's plan() runs the leak check
    from genrekit.train import TrainOptions, train

    saved = genre_task.check_no_leak
    genre_task.check_no_leak = lambda rows: None
    try:
        return train(TrainOptions(data=str(view), arch=arch, epochs=epochs, seed=seed, verbose=0, out=str(out)))
    finally:
        genre_task.check_no_leak = saved


if __name__ == "__main__":
    main()
