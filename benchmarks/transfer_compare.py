"""ImageNet vs music-pretrained transfer on gtzan_mini: one table from one run.

5-fold cross-validation by track (genre-stratified, the same folds for every model) of
  cnn (scratch, mel PNG) | mobilenet transfer (ImageNet weights from ../shared/weights) |
  musicnn transfer (MSD weights) | musicnn fine-tune (each fold from its transfer run)
printing track-level top-1 and top-2 (mean ± std) and minutes of CPU time for each.
Target: musicnn transfer >= 90 % top-1 and >= 15 points above mobilenet transfer.
gtzan_mini clips of one genre often share an artist: these figures flatter every model.

    python benchmarks/transfer_compare.py [--folds 5] [--augmented] [--models cnn,mobilenet,musicnn,musicnn_ft,...]

Two more rows show what label smoothing (0.1) and mixup (alpha 0.2) do to musicnn transfer.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import GTZAN_MINI, WEIGHTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--augmented", action="store_true", help="render stretch/pitch variants and train on them")
    ap.add_argument("--models", default="cnn,mobilenet,musicnn,musicnn_ft,musicnn_ls,musicnn_mixup")
    ap.add_argument("--workdir", type=Path, default=None, help="keep features and runs here")
    ap.add_argument("--finetune-epochs", type=int, default=3,
                    help="epochs of each fold's fine-tuning at 1e-4 (default 3: about 46 s each on 2 CPU cores)")
    a = ap.parse_args()
    from genrekit.cv import cross_validate
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    augs = ("stretch", "pitch") if a.augmented else ()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        mel = work / "feats-mel"
        mus = work / "feats-musicnn"
        run_augment(GTZAN_MINI, mel, AugmentSettings(augment=AugmentConfig(augmentations=augs), kinds=("mel",)),
                    workers=2, progress=False)
        run_augment(GTZAN_MINI, mus, AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES), kinds=("musicnn",),
                                                     augment=AugmentConfig(augmentations=augs)),
                    workers=2, progress=False)
        weights = str(WEIGHTS) if WEIGHTS.is_file() else "none"
        plan = {
            "cnn": ("cnn (scratch)", mel, "cnn", {"phase": "scratch"}, None),
            "mobilenet": ("mobilenet transfer (ImageNet)", mel, "mobilenet", {"phase": "transfer", "weights": weights}, None),
            "musicnn": ("musicnn transfer (MSD)", mus, "musicnn", {"phase": "transfer"}, None),
            "musicnn_ft": (f"musicnn fine-tune ({a.finetune_epochs} epochs)", mus, "musicnn",
                           {"phase": "finetune", "epochs": a.finetune_epochs},
                           lambda k: {"from_run": str(work / "cv-musicnn" / f"fold-{k}" / "run")}),
            # what the generalisation options do, on the same folds
            "musicnn_ls": ("musicnn transfer + label smoothing 0.1", mus, "musicnn",
                           {"phase": "transfer", "label_smoothing": 0.1}, None),
            "musicnn_mixup": ("musicnn transfer + mixup 0.2", mus, "musicnn", {"phase": "transfer", "mixup": 0.2}, None),
        }
        rows = []
        for key in a.models.split(","):
            label, feats, arch, kw, per_fold = plan[key]
            t0 = time.process_time()
            out = work / (f"cv-{key}-{a.finetune_epochs}ep" if key == "musicnn_ft" else f"cv-{key}")
            res = cross_validate(feats, arch, a.folds, out, seed=0, keep_augmented=a.augmented,
                                 train_kwargs=kw, fold_kwargs=per_fold, log=lambda m: print(m, flush=True))
            cpu_min = (time.process_time() - t0) / 60
            s = res["summary"]["track"]
            rows.append((label, s["top1"], s["top2"], cpu_min))
            print(f"{label}: top-1 {s['top1']['mean']:.3f} ± {s['top1']['std']:.3f}", flush=True)
    print(f"\n{a.folds}-fold CV by track on gtzan_mini ({'with' if a.augmented else 'without'} stretch/pitch variants), "
          "track-level figures")
    print("| model | top-1 | top-2 | CPU minutes |\n| --- | --- | --- | --- |")
    for label, t1, t2, cpu in rows:
        print(f"| {label} | {100 * t1['mean']:.1f} ± {100 * t1['std']:.1f} | {100 * t2['mean']:.1f} ± "
              f"{100 * t2['std']:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
