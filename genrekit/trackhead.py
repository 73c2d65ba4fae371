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
from genrekit.progress import bar

C_GRID = np.logspace(-4, 2, 13)  # candidate C values (inverse L2 strength) for the inner CV
EMBED_BATCH_WINDOWS = 256  # windows loaded from disk at a time (whole tracks)
EMBED_STEP = 32  # windows per backbone call (as Keras' predict batches)
MAX_WEIGHT = 30.0  # a track of a smaller collection weighs at most this many of the reference's


def collection_weight(n_ref: int, n: int, n_genres: int) -> float:
    """The weight of each track of a collection of ``n`` tracks (``n_genres`` genres) added to
    a reference collection of ``n_ref`` tracks: ``n_ref / n`` (the collections weigh the same),
    clipped to [1, ``MAX_WEIGHT``]; 1 for a collection of one genre (weighted, the head learns
    "that collection is that genre": on ood_dev 5 labelled electronic tracks alone at that
    weight took classical/pop/rock from 61 % to 34 % top-1). ``genrekit adapt`` weighs the
    user's tracks so, ``genrekit train --data A --data B`` each later collection.

    >>> collection_weight(100, 10, 3), collection_weight(100, 1, 3), collection_weight(10, 100, 3)
    (10.0, 30.0, 1.0)
    >>> collection_weight(100, 10, 1)
    1.0"""
    if n_genres < 2 or n < 1:
        return 1.0
    return float(np.clip(n_ref / n, 1.0, MAX_WEIGHT))


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

    def flush(progress):
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
        progress.update(len(batch))
        batch.clear()

    with bar(len(groups), desc="embed", unit="track") as progress:  # drawn when the command shows progress
        for ix in groups:
            if batch and sum(map(len, batch)) + len(ix) > EMBED_BATCH_WINDOWS:
                flush(progress)
            batch.append(ix)
        flush(progress)
    return np.stack(out)


def _standardiser(x: np.ndarray, sample_weight=None):
    """A StandardScaler fitted on ``x`` whose scales are floored: a near-constant feature would
    get a huge folded weight that magnifies float round-off in other runtimes (ONNX, TFLite),
    so its scale is floored at 1e-3 of the median feature's."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x, sample_weight=sample_weight)
    scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * np.median(scaler.scale_))
    return scaler


def _quiet_fit(clf, z, y, sample_weight=None):
    with warnings.catch_warnings():  # scikit-learn's notices of future defaults; these are set here
        warnings.simplefilter("ignore", FutureWarning)
        return clf.fit(z, y, sample_weight=sample_weight)


def _layer_weights(clf, scaler, n_classes: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The Keras ``predictions`` layer's (kernel, bias) for a fitted classifier, the
    standardisation folded in; every label gets a column and a class absent from the fit can
    never win."""
    coef, intercept = clf.coef_, clf.intercept_
    present = list(clf.classes_)
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps one row (logit of the second class)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    w = np.zeros((n_classes, n_features))
    b = np.full(n_classes, -1e4)
    for row, cls in enumerate(present):
        w[int(cls)] = coef[row]
        b[int(cls)] = intercept[row]
    kernel = (w / scaler.scale_).T
    bias = b - (scaler.mean_ / scaler.scale_) @ w.T
    return kernel.astype(np.float32), bias.astype(np.float32)


def grouped_folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs, stratified by class where it can be and *grouped by
    track* (a track's rows never sit on both sides); ``[]`` when a class has fewer than two
    tracks."""
    from sklearn.model_selection import StratifiedGroupKFold

    tracks_per_class = [len(set(groups[y == c])) for c in np.unique(y)]
    k = min(folds, min(tracks_per_class)) if len(tracks_per_class) else 0
    if k < 2:
        return []
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, groups))


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, seed: int = 0,
                            folds: int = 5, sample_weight=None) -> dict:
    """Standardise, then logistic regression with C chosen by stratified, grouped inner CV;
    ``sample_weight`` (per row, or None) weighs the standardisation, every fit and the inner
    CV's held-out accuracy. Returns the layer's ``kernel`` (features x classes) and ``bias`` with the standardisation
    folded in, and what was chosen (``C``, ``cv_folds``, the inner CV's accuracy ``cv_accuracy``
    and the ``splits`` it used)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    scaler = _standardiser(x, sample_weight)
    z = scaler.transform(x)
    splits = grouped_folds(y, groups, folds, seed)
    cv_accuracy = None
    if splits:  # scikit-learn (>= 1.6, the declared floor) passes sample_weight to each fold's fit and scorer
        clf = _quiet_fit(LogisticRegressionCV(Cs=C_GRID, cv=splits, scoring="accuracy", max_iter=5000,
                                              random_state=seed), z, y, sample_weight)
        c = float(clf.C_[0])
        cv_accuracy = float(np.mean(next(iter(clf.scores_.values())), axis=0).max())
    else:  # too few tracks per genre to cross-validate: a strongly regularised default
        c = 0.01
        clf = _quiet_fit(LogisticRegression(C=c, max_iter=5000, random_state=seed), z, y, sample_weight)
    kernel, bias = _layer_weights(clf, scaler, n_classes, x.shape[1])
    return {"kernel": kernel, "bias": bias, "C": c, "cv_folds": len(splits), "cv_accuracy": cv_accuracy,
            "splits": splits, "scaler": scaler, "classifier": clf}


def fit_weighted(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, sample_weight=None, seed: int = 0):
    """One standardised logistic regression at ``C`` with per-row weights: (kernel, bias) of
    the ``predictions`` layer, and a function giving probabilities (samples x n_classes) of
    pooled embeddings."""
    from sklearn.linear_model import LogisticRegression

    scaler = _standardiser(x, sample_weight)
    clf = _quiet_fit(LogisticRegression(C=C, max_iter=5000, random_state=seed), scaler.transform(x), y,
                     sample_weight)
    kernel, bias = _layer_weights(clf, scaler, n_classes, x.shape[1])
    return kernel, bias


def head_probabilities(kernel: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Softmax probabilities of the ``predictions`` layer (kernel, bias) on pooled embeddings:
    what the Keras layer computes, in float64."""
    z = np.asarray(x, dtype=np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def out_of_fold(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, splits, sample_weight=None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, which rows were held out) over ``splits``: each held-out row predicted by
    a head fitted at ``C`` without its track. Rows that no split holds out get no prediction
    (``held`` False)."""
    proba = np.zeros((len(x), n_classes))
    held = np.zeros(len(x), dtype=bool)
    for tr, te in splits:
        w = None if sample_weight is None else np.asarray(sample_weight)[tr]
        kernel, bias = fit_weighted(x[tr], y[tr], n_classes, C, w, seed)
        proba[te] = head_probabilities(kernel, bias, x[te])
        held[te] = True
    return proba, held


def adapt_folds(y: np.ndarray, groups: np.ndarray, seed: int, folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Out-of-fold splits over every known track of an adapted run (grouped by track, stratified
    by genre as far as it goes: a genre the user labelled once sits in one fold only)."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = min(folds, len(set(groups)))
    if k < 2:
        return []
    with warnings.catch_warnings():  # a genre with fewer tracks than folds
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, groups))


def fit_track_head(model, folder, rows: list[dict], y: np.ndarray, n_classes: int, seed: int = 0,
                   variants: bool = False, log=lambda m: print(m, file=sys.stderr, flush=True),
                   sample_weight=None) -> tuple:
    """Fit the ``predictions`` layer of a track classifier on the training rows: the original
    recordings, or with ``variants`` every augmented variant too (each one more sample), each
    weighing its first row's ``sample_weight`` (per row; None: all alike); returns what was chosen (C, inner folds, samples) and the pooled embeddings it fitted on
    ``(x, class ids, track ids)``, one row per track or variant."""
    if not variants:
        keep = [i for i, r in enumerate(rows) if r.get("augmentation", "original") == "original"]
        if not keep:
            raise UserError("no original (un-augmented) training rows to fit the track head on")
        rows, y = [rows[i] for i in keep], np.asarray(y)[keep]
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)[keep]
    groups = track_groups(rows)
    log(f"embedding {len(rows)} windows of {len(groups)} training tracks/variants with the frozen backbone")
    x = pooled_embeddings(model, folder, rows, groups)
    gy = np.array([y[ix[0]] for ix in groups])
    gtrack = np.array([rows[ix[0]]["track_id"] for ix in groups])
    gw = None if sample_weight is None else np.array([sample_weight[ix[0]] for ix in groups], dtype=np.float64)
    fit = fit_logistic_regression(x, gy, gtrack, n_classes, seed=seed, sample_weight=gw)
    model.get_layer("predictions").set_weights([fit["kernel"], fit["bias"]])
    log(f"logistic regression: C = {fit['C']:.3g} chosen by {fit['cv_folds']}-fold inner CV grouped by track")
    summary = {"C": fit["C"], "cv_folds": fit["cv_folds"], "cv_accuracy": fit["cv_accuracy"], "samples": len(groups),
               "variants": bool(variants), "tracks": int(len(set(gtrack))), "pooled_features": int(x.shape[1])}
    return summary, (x, gy, gtrack)


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
    groups = track_groups(rows)
    with bar(len(groups), desc="predict", unit="track") as progress:
        for ix in groups:
            x = np.stack([load_feature(folder / rows[i]["path"], "musicnn") for i in ix])
            out[ix] = predict_track(model, x)
            progress.update(1)
    return out
