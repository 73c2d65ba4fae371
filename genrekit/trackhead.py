"""The track-level logistic-regression head (genrekit's default genre recipe).

A track classifier (:mod:`genrekit.models.track`) embeds every window of a track with a frozen
backbone and pools the embeddings over the track. Its softmax layer is fitted here, outside
Keras: the pooled vectors of the training tracks' original recordings (with ``variants``, each
augmented variant of a track is one more sample) are standardised and fed to scikit-learn's
``LogisticRegressionCV``, whose inverse regularisation strength C is chosen by cross-validation
stratified by genre and *grouped by track* (a track's variants never sit on both sides of an
inner fold). The standardisation and the fitted coefficients are
then folded into the Keras layer, so the saved model needs no scikit-learn and nothing but
Keras layers to load, predict and export.
"""
from __future__ import annotations

import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from genrekit.data_tools.loaders import load_feature
from genrekit.errors import UserError
from genrekit.models.track import pool_track, window_embedder

C_GRID = np.logspace(-4, 2, 13)  # candidate C values (inverse L2 strength) for the inner CV
EMBED_BATCH_WINDOWS = 256  # windows loaded from disk at a time (whole tracks)
EMBED_STEP = 32  # windows per backbone call (as Keras' predict batches)


def track_groups(rows: list[dict]) -> list[list[int]]:
    """Row indices grouped by (track, augmentation variant), windows in segment order; groups
    in order of first appearance."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r["track_id"], r.get("augmentation", "original"))].append(i)
    return [sorted(ix, key=lambda i: int(rows[i].get("segment", 0) or 0)) for ix in groups.values()]


def pooled_embeddings(model, folder, rows: list[dict], groups: list[list[int]], kind: str = "musicnn") -> np.ndarray:
    """One pooled vector per group, through the model's own backbone and pooling statistics;
    windows are embedded a few hundred at a time (bounded memory)."""
    embedder = window_embedder(model)
    stats = model.get_layer("track_pooling").stats
    folder = Path(folder)
    out: list[np.ndarray] = []
    batch: list[list[int]] = []

    def flush():
        if not batch:
            return
        x = np.stack([load_feature(folder / rows[i]["path"], kind) for ix in batch for i in ix])
        if not np.isfinite(x).all():
            raise UserError(f"feature files of {folder} hold NaN or infinite values "
                            f"(e.g. near {rows[batch[0][0]]['path']}); re-render them with `genrekit augment`")
        emb = embed_windows(embedder, x)
        start = 0
        for ix in batch:
            out.append(pool_track(emb[start:start + len(ix)], stats))
            start += len(ix)
        batch.clear()

    for ix in groups:
        if batch and sum(map(len, batch)) + len(ix) > EMBED_BATCH_WINDOWS:
            flush()
        batch.append(ix)
    flush()
    return np.stack(out)


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, seed: int = 0,
                            folds: int = 5) -> dict:
    """Standardise, then logistic regression with C chosen by stratified, grouped inner CV.
    Returns the layer's ``kernel`` (features x classes) and ``bias`` with the standardisation
    folded in, and what was chosen."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    # a near-constant feature would get a huge folded weight that magnifies float round-off in
    # other runtimes (ONNX, TFLite): its scale is floored at 1e-3 of the median feature's
    scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * np.median(scaler.scale_))
    z = scaler.transform(x)
    tracks_per_class = [len(set(groups[y == c])) for c in np.unique(y)]
    k = min(folds, min(tracks_per_class))
    if k >= 2:
        splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(z, y, groups))
        with warnings.catch_warnings():  # scikit-learn's notices of future defaults; these are set here
            warnings.simplefilter("ignore", FutureWarning)
            clf = LogisticRegressionCV(Cs=C_GRID, cv=splits, scoring="accuracy", max_iter=5000,
                                       random_state=seed).fit(z, y)
        c = float(clf.C_[0])
    else:  # too few tracks per genre to cross-validate: a strongly regularised default
        c = 0.01
        clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(z, y)
    coef, intercept = clf.coef_, clf.intercept_
    present = list(clf.classes_)
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps one row (logit of the second class)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    # every label gets a column; a genre absent from the training rows can never win
    w = np.zeros((n_classes, x.shape[1]))
    b = np.full(n_classes, -1e4)
    for row, cls in enumerate(present):
        w[int(cls)] = coef[row]
        b[int(cls)] = intercept[row]
    kernel = (w / scaler.scale_).T
    bias = b - (scaler.mean_ / scaler.scale_) @ w.T
    return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32), "C": c, "cv_folds": int(k),
            "scaler": scaler, "classifier": clf}


def fit_track_head(model, folder, rows: list[dict], y: np.ndarray, n_classes: int, seed: int = 0,
                   variants: bool = False, log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Fit the ``predictions`` layer of a track classifier on the training rows: the original
    recordings, or with ``variants`` every augmented variant too (each one more sample);
    returns what was chosen (C, inner folds, samples)."""
    if not variants:
        keep = [i for i, r in enumerate(rows) if r.get("augmentation", "original") == "original"]
        if not keep:
            raise UserError("no original (un-augmented) training rows to fit the track head on")
        rows, y = [rows[i] for i in keep], np.asarray(y)[keep]
    groups = track_groups(rows)
    log(f"embedding {len(rows)} windows of {len(groups)} training tracks/variants with the frozen backbone")
    x = pooled_embeddings(model, folder, rows, groups)
    gy = np.array([y[ix[0]] for ix in groups])
    gtrack = np.array([rows[ix[0]]["track_id"] for ix in groups])
    fit = fit_logistic_regression(x, gy, gtrack, n_classes, seed=seed)
    model.get_layer("predictions").set_weights([fit["kernel"], fit["bias"]])
    log(f"logistic regression: C = {fit['C']:.3g} chosen by {fit['cv_folds']}-fold inner CV grouped by track")
    return {"C": fit["C"], "cv_folds": fit["cv_folds"], "samples": len(groups), "variants": bool(variants),
            "tracks": int(len(set(gtrack))), "pooled_features": int(x.shape[1])}


def embed_windows(embedder, x: np.ndarray) -> np.ndarray:
    """The backbone's embedding of each window, ``EMBED_STEP`` windows per call: musicnn's
    front-end holds ~10 MB of activations per window, so one call on a few hundred windows
    would cost gigabytes."""
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([np.asarray(embedder(x[i:i + EMBED_STEP], training=False))
                           for i in range(0, len(x), EMBED_STEP)])


def predict_track(model, windows: np.ndarray) -> np.ndarray:
    """Class probabilities of one track from its (windows, ...) inputs: the model's own layers,
    the backbone run ``EMBED_STEP`` windows at a time (bounded memory for long tracks)."""
    windows = np.asarray(windows, dtype=np.float32)
    if len(windows) <= EMBED_STEP:
        return np.asarray(model(windows[None], training=False))[0]
    emb = embed_windows(window_embedder(model), windows)
    shape_only = np.zeros((1, len(windows), 1), dtype=np.float32)  # the pooling reads (tracks, windows)
    pooled = model.get_layer("track_pooling")([emb, shape_only])
    return np.asarray(model.get_layer("predictions")(pooled))[0]


def predict_track_rows(model, folder, rows: list[dict]) -> np.ndarray:
    """Per-row probabilities for manifest rows: each row gets its track's (and variant's)
    probability, so clip-level figures of a track model are its track-level figures."""
    folder = Path(folder)
    out = np.zeros((len(rows), model.output_shape[-1]), dtype=np.float32)
    for ix in track_groups(rows):
        x = np.stack([load_feature(folder / rows[i]["path"], "musicnn") for i in ix])
        out[ix] = predict_track(model, x)
    return out
