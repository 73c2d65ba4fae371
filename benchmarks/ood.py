"""Out-of-domain accuracy: train on gtzan_mini only, score on real music from elsewhere.

Every candidate is trained by genrekit on the 100 gtzan_mini clips and scored with the same
code as `genrekit predict` on ../shared/data/ood_dev (Emotify excerpts of Magnatune music:
classical, pop, rock — 150 tracks, 10-way model, chance 10 % top-1 / 20 % top-2). The
electronic folder (no GTZAN class) is reported apart: which genres the model calls it.

Rows (choose with --models):
  reference     scikit-learn LogisticRegressionCV (5-fold inner CV) on the track mean of MSD
                musicnn's 200-unit penultimate layer, all 100 clips: the figure to beat
  default       `genrekit train` with no --arch (musicnn_lr: penultimate embedding, mean+std
                over the track, logistic regression, C by inner CV grouped by track), all 100
                clips (the recipe uses the original recordings, not augment's variants)
  ...           the same recipe one change at a time (see CANDIDATES), and musicnn's Keras head

CPU minutes are time.process_time() of the training (all threads), scoring excluded.
The ood_dev protocol: ../shared/data/ood_dev/README.md; tune on it freely, the other half of
Emotify is held back.

    python benchmarks/ood.py [--workdir DIR] [--models default,reference,...] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import GTZAN_MINI, ROOT

OOD = ROOT.parent / "shared" / "data" / "ood_dev"
KNOWN = ("classical", "pop", "rock")

# name -> (feature folder, train options); folders: "all" = 100/0/0 with augment's default variants,
# "plain" = 100/0/0 without variants, "split" = 80/20/0 with variants (for the Keras head's early stopping)
CANDIDATES = {
    "default": ("plain", {}),
    "pooled": ("plain", {"hparams": {"embedding": "pooled"}}),
    "mean_only": ("plain", {"hparams": {"stats": "mean"}}),
    "mean_std_max": ("plain", {"hparams": {"stats": "mean,std,max"}}),
    "variants": ("all", {"hparams": {"variants": True}}),
    "pooled_variants": ("all", {"hparams": {"embedding": "pooled", "variants": True}}),
    "musicnn_keras": ("split", {"arch": "musicnn"}),
}
DESCRIPTIONS = {
    "reference": "reference: LogisticRegressionCV on the track mean of the penultimate layer (scikit-learn, outside genrekit)",
    "default": "**genrekit default** (`train` with no --arch: musicnn_lr, penultimate, mean+std)",
    "pooled": "musicnn_lr on the 1,506-d pooled mid-end (`--hparam embedding=pooled`)",
    "mean_only": "musicnn_lr, track mean only (`--hparam stats=mean`)",
    "mean_std_max": "musicnn_lr, mean+std+max (`--hparam stats=mean,std,max`)",
    "variants": "musicnn_lr + augment's training variants (`--hparam variants=true`)",
    "pooled_variants": "musicnn_lr, pooled + training variants",
    "musicnn_keras": "musicnn transfer, Keras head per window (80/20 split, early stopping)",
}


def ood_files() -> dict[str, list[Path]]:
    return {g: sorted((OOD / g).glob("*.ogg")) for g in (*KNOWN, "electronic")}


def features(work: Path, which: str, workers: int) -> Path:
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    out = work / f"feats-{which}"
    augment = AugmentConfig() if which != "plain" else AugmentConfig(augmentations=())
    settings = AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES), kinds=("musicnn",), augment=augment,
                               ratios=(80, 20, 0) if which == "split" else (100, 0, 0), seed=0)
    run_augment(GTZAN_MINI, out, settings, workers=workers, progress=False)
    return out


def score(proba: dict[str, np.ndarray], labels: list[str]) -> dict:
    """top-1/top-2 over classical/pop/rock, per-genre top-1, and what electronic becomes."""
    hits1, hits2, per = [], [], {}
    for g in KNOWN:
        p = proba[g]
        order = np.argsort(-p, axis=1)
        truth = labels.index(g)
        h1 = order[:, 0] == truth
        hits1.append(h1)
        hits2.append((order[:, :2] == truth).any(axis=1))
        per[g] = float(h1.mean())
    top = np.argmax(proba["electronic"], axis=1)
    counts = {labels[i]: int((top == i).sum()) for i in np.unique(top)}
    return {"top1": float(np.concatenate(hits1).mean()), "top2": float(np.concatenate(hits2).mean()),
            "per_genre": per, "electronic_as": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:3])}


def genrekit_row(name: str, work: Path, workers: int) -> dict:
    from genrekit.predict import predict_file
    from genrekit.runs import Run
    from genrekit.train import TrainOptions, train

    which, opts = CANDIDATES[name]
    feats = features(work, which, workers)
    run_dir = work / f"run-{name}"
    if not (run_dir / "config.json").is_file():
        t0 = time.process_time()
        train(TrainOptions(data=str(feats), arch=opts.get("arch", "musicnn_lr"), hparams=opts.get("hparams", {}),
                           out=str(run_dir), verbose=0, seed=0))
        (run_dir.parent / f"{run_dir.name}.cpu_s").write_text(str(time.process_time() - t0))
    cpu = float((run_dir.parent / f"{run_dir.name}.cpu_s").read_text())
    run = Run(run_dir)
    proba = {g: np.stack([predict_file(f, run) for f in fs]) for g, fs in ood_files().items()}
    return {**score(proba, list(run.labels)), "cpu_min": cpu / 60}


def reference_row() -> dict:
    """LogisticRegressionCV on the track mean of MSD musicnn's penultimate layer (the issue's
    reference), from the same feature code and backbone genrekit uses; all 100 clips."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from genrekit.data_tools.audio import load_audio
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig, extract
    from genrekit.models.musicnn import embedding_model

    cfg = FeatureConfig(**MUSICNN_FEATURES)
    t0 = time.process_time()
    base = embedding_model((187, 96), "msd", embedding="penultimate")

    def emb(path):
        x = np.stack([w for _, w in extract(load_audio(path, sr=cfg.sr).y, cfg, "musicnn")])
        return np.asarray(base(x, training=False)).mean(axis=0)

    train = sorted(GTZAN_MINI.glob("*/*.wav"))
    labels = sorted({p.parent.name for p in train})
    x = np.stack([emb(p) for p in train])
    y = np.array([labels.index(p.parent.name) for p in train])
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=10, cv=StratifiedKFold(5, shuffle=True, random_state=0), max_iter=5000)).fit(x, y)
    cpu = time.process_time() - t0
    proba = {g: clf.predict_proba(np.stack([emb(f) for f in fs])) for g, fs in ood_files().items()}
    return {**score(proba, labels), "cpu_min": cpu / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="reference,default,pooled,mean_only,variants")
    ap.add_argument("--workdir", type=Path, default=None, help="keep features and runs here (reruns reuse them)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    if not GTZAN_MINI.is_dir() or not OOD.is_dir():
        raise SystemExit(f"needs {GTZAN_MINI} and {OOD}")
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = [n for n in names if n != "reference" and n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: reference, {', '.join(CANDIDATES)}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in names:
            print(f"... {n}", flush=True)
            rows[n] = reference_row() if n == "reference" else genrekit_row(n, work, a.workers)
            print(f"    {json.dumps(rows[n])}", flush=True)
    print("\n| model | OOD top-1 | OOD top-2 | classical | pop | rock | electronic is called | CPU minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, r in rows.items():
        pg = r["per_genre"]
        el = ", ".join(f"{g} {c}" for g, c in r["electronic_as"].items())
        print(f"| {DESCRIPTIONS.get(n, n)} | {r['top1'] * 100:.1f} | {r['top2'] * 100:.1f} | "
              f"{pg['classical'] * 100:.0f} | {pg['pop'] * 100:.0f} | {pg['rock'] * 100:.0f} | {el} | "
              f"{r['cpu_min']:.1f} |")
    if "reference" in rows and "default" in rows:
        d, r = rows["default"], rows["reference"]
        print(f"\ndefault - reference: top-1 {100 * (d['top1'] - r['top1']):+.1f} points, "
              f"top-2 {100 * (d['top2'] - r['top2']):+.1f} points")


if __name__ == "__main__":
    main()
