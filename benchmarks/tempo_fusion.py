"""Tempo regression and tempo->genre fusion on gtzan_mini (the tempo study's pipeline).

One split by track (--ratios, default 60/20/20, seeded), features rendered once with
`--features melspec,tempogram` and stretch/pitch variants of the training tracks; then
  1. tempocnn (--task tempo) on GTZAN's ground-truth tempi -> held-out MAE, median AE,
     accuracy 1 and 2 (track level), next to two references on the same tracks:
     the training tracks' median tempo for every track, and librosa.feature.tempo;
  2. cnn64x400 genre classifier -> test top-1/top-2 (track level);
  3. fusion of (2)'s frozen conv embedding with (1)'s predicted tempo -> same figures, same split;
  4. control: the same fusion model with its tempo branch silenced (new layers, no tempo), to
     tell what the tempo adds from what the extra trained layers add.
gtzan_mini clips of one genre often share an artist: the genre figures flatter every model.

    python benchmarks/tempo_fusion.py [--ratios 60/20/20] [--genre-epochs 12] [--workdir DIR]

With --workdir, a stage whose run folder is complete is reused (its CPU minutes print as "reused").
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import GTZAN_MINI


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratios", default="60/20/20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tempo-epochs", type=int, default=60)
    ap.add_argument("--genre-epochs", type=int, default=12)
    ap.add_argument("--fusion-epochs", type=int, default=30)
    ap.add_argument("--workdir", type=Path, default=None, help="keep features and runs here")
    a = ap.parse_args()
    import numpy as np

    from genrekit.data_tools.audio import load_audio
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import MELSPEC_64X400_FEATURES, FeatureConfig
    from genrekit.data_tools.manifest import read_manifest
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment
    from genrekit.data_tools.splits import ratio_numbers
    from genrekit.evaluate import evaluate
    from genrekit.evaluation.metrics import tempo_metrics
    from genrekit.tempi import load_tempi, row_bpm
    from genrekit.train import TrainOptions, train

    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        feats = work / "feats"
        settings = AugmentSettings(features=FeatureConfig(**MELSPEC_64X400_FEATURES), kinds=("melspec", "tempogram"),
                                   augment=AugmentConfig(augmentations=("stretch", "pitch")), ratios=ratio_numbers(a.ratios),
                                   seed=a.seed)
        run_augment(GTZAN_MINI, feats, settings, workers=2, progress=False)
        rows = read_manifest(feats)
        test_ids = sorted({r["track_id"] for r in rows if r["split"] == "test"})
        train_ids = sorted({r["track_id"] for r in rows if r["split"] == "train"})
        tempi = load_tempi()

        def bpm(tid):
            return row_bpm({"track_id": tid, "augmentation": "original"}, tempi)

        timings = {}

        def stage(name, opts):
            """Train, or reuse a finished run of an earlier call with the same --workdir: the run folder."""
            done = work / name / "model.keras"
            if done.is_file():
                print(f"{name}: reusing {done.parent}", flush=True)
                timings[name] = None
                return str(done.parent)
            t0 = time.process_time()
            res = train(opts)
            timings[name] = time.process_time() - t0
            return res.run

        tempo = stage("tempo", TrainOptions(data=str(feats), arch="tempocnn", task="tempo", out=str(work / "tempo"),
                                            epochs=a.tempo_epochs, seed=a.seed, verbose=0))
        t_res = evaluate(tempo, feats, out=work / "tempo-eval")["track"]
        true = np.array([bpm(t) for t in test_ids])
        median = tempo_metrics(true, np.full(len(true), np.median([bpm(t) for t in train_ids])))
        import librosa

        est = []
        for tid in test_ids:
            src = next(r["source"] for r in rows if r["track_id"] == tid)
            y = load_audio(GTZAN_MINI / src, sr=22050).y
            est.append(float(librosa.feature.tempo(y=y, sr=22050)[0]))
        lib = tempo_metrics(true, np.array(est))

        genre = stage("genre", TrainOptions(data=str(feats), arch="cnn64x400", out=str(work / "genre"),
                                            epochs=a.genre_epochs, patience=5, seed=a.seed, verbose=0))
        fusion = stage("fusion", TrainOptions(data=str(feats), arch="fusion", genre_run=genre,
                                              tempo_run=tempo, out=str(work / "fusion"), epochs=a.fusion_epochs,
                                              seed=a.seed, verbose=0))
        control = stage("fusion_notempo", TrainOptions(
            data=str(feats), arch="fusion", genre_run=genre, tempo_run=tempo,
            out=str(work / "fusion_notempo"), epochs=a.fusion_epochs, seed=a.seed, verbose=0,
            hparams={"use_tempo": False}))
        c_res = evaluate(control, feats, out=work / "fusion_notempo-eval")["track"]
        g_res = evaluate(genre, feats, out=work / "genre-eval")["track"]
        f_res = evaluate(fusion, feats, out=work / "fusion-eval")["track"]

    print(f"\ngtzan_mini, split {a.ratios} by track (seed {a.seed}): {len(train_ids)} training tracks, "
          f"{len(test_ids)} test tracks")
    print("\nTempo (test tracks, track level)")
    print("| estimator | MAE (BPM) | median AE (BPM) | accuracy 1 | accuracy 2 | CPU minutes |")
    print("| --- | --- | --- | --- | --- | --- |")
    def cpu(name):
        return "reused" if timings[name] is None else f"{timings[name] / 60:.1f}"

    for name, m, minutes in (("tempocnn (genrekit train --task tempo)", t_res, cpu("tempo")),
                         ("median tempo of the training tracks", median, "–"),
                         ("librosa.feature.tempo (no training)", lib, "–")):
        print(f"| {name} | {m['mae']:.1f} | {m['median_ae']:.1f} | {100 * m['accuracy1']:.1f} % | "
              f"{100 * m['accuracy2']:.1f} % | {minutes} |")
    print("\nGenre (test tracks, track level, same split)")
    print("| model | top-1 | top-2 | F1 macro | CPU minutes |\n| --- | --- | --- | --- | --- |")
    for name, m, key in (("cnn64x400", g_res, "genre"), ("cnn64x400 + tempo fusion", f_res, "fusion"),
                         ("control: the fusion model with its tempo input silenced", c_res, "fusion_notempo")):
        print(f"| {name} | {100 * m['top1']:.1f} | {100 * m['top2']:.1f} | {100 * m['f1_macro']:.1f} | {cpu(key)} |")


if __name__ == "__main__":
    main()
