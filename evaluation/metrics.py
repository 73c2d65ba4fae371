"""Classification figures at clip (segment) and track level, from ``sklearn.metrics``.

A track's prediction is the mean of its segments' probabilities. scikit-learn is imported by
the functions that use it, so importing this module (the CLI does) stays light.
"""
from __future__ import annotations

import numpy as np

from genrekit.evaluation.errors import EvaluationError


def top_k_accuracy(y_true, proba, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest probabilities:
    ``sklearn.metrics.top_k_accuracy_score`` over every class of ``proba``'s columns (so a class
    absent from ``y_true`` still ranks). scikit-learn's rule for ties: among equal probabilities
    the class of higher index ranks first (probabilities [0.5, 0.25, 0.25], k=2: class 2 is in
    the top 2, class 1 is not); with two classes, class 1 wins only above 0.5.

    >>> top_k_accuracy([0, 1], [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]], k=1)
    0.5
    >>> top_k_accuracy([0, 1], [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]], k=2)
    1.0"""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if len(y_true) == 0:
        raise EvaluationError("no samples to evaluate")
    n_cls = proba.shape[1]
    from sklearn import metrics as skm

    if k >= n_cls:  # every class is in the top k (scikit-learn would warn and say the same)
        return 1.0
    # two classes: scikit-learn takes the positive class's score (a 2-column array is refused)
    score = proba[:, 1] if n_cls == 2 else proba
    return float(skm.top_k_accuracy_score(y_true, score, k=k, labels=np.arange(n_cls)))


def cross_entropy(y_true, proba) -> float:
    """Mean negative log-likelihood of the true class (``sklearn.metrics.log_loss``), each
    probability floored at ``LOSS_FLOOR`` so a confident miss costs at most -ln(1e-12) = 27.6."""
    from sklearn import metrics as skm

    proba = np.asarray(proba, dtype=np.float64)
    p = np.clip(proba, LOSS_FLOOR, 1.0)
    p = p / p.sum(axis=1, keepdims=True)  # rows of float32 softmax outputs sum to 1 only within 1e-7
    return float(skm.log_loss(np.asarray(y_true), p, labels=np.arange(proba.shape[1])))


LOSS_FLOOR = 1e-12


def aggregate_tracks(track_ids, y_true, proba):
    """Mean segment probabilities per track: (track_ids, y_true, proba), sorted by track id.

    >>> ids, y, p = aggregate_tracks(["b", "a", "b"], [1, 0, 1], [[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])
    >>> ids.tolist(), y.tolist(), p.round(2).tolist()
    (['a', 'b'], [0, 1], [[0.9, 0.1], [0.4, 0.6]])"""
    track_ids = np.asarray(track_ids)
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    uniq, inverse = np.unique(track_ids, return_inverse=True)
    sums = np.zeros((len(uniq), proba.shape[1]))
    np.add.at(sums, inverse, proba)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    labels = np.empty(len(uniq), dtype=y_true.dtype)
    for i, t in enumerate(uniq):
        ys = np.unique(y_true[track_ids == t])
        if len(ys) != 1:
            raise EvaluationError(f"track {t} has segments with different labels")
        labels[i] = ys[0]
    return uniq, labels, sums / counts


def classification_figures(y_true, proba, labels: list[str]) -> dict:
    """Every figure the studies report, for one level (clips or tracks)."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    n_cls = len(labels)
    if len(y_true) == 0:
        raise EvaluationError("no samples to evaluate")
    if proba.shape[1] != n_cls:
        raise EvaluationError(f"model gives {proba.shape[1]} classes but there are {n_cls} labels")
    if not np.isfinite(proba).all():
        raise EvaluationError("the model gave non-finite probabilities (NaN or infinity)")
    y_pred = proba.argmax(axis=1)
    idx = list(range(n_cls))
    prec, rec, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    cm = skm.confusion_matrix(y_true, y_pred, labels=idx)
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    per_genre = {}
    roc = {}
    aucs = []
    predicted = np.bincount(y_pred, minlength=n_cls)
    for c, name in enumerate(labels):
        mask = y_true == c
        # precision is undefined (None, not scikit-learn's 0) for a genre the model never predicted
        entry = {"support": int(support[c]), "precision": float(prec[c]) if predicted[c] else None,
                 "recall": float(rec[c]),
                 "f1": float(f1[c]),
                 "top1": top_k_accuracy(y_true[mask], proba[mask], 1) if mask.any() else None,
                 "top2": top_k_accuracy(y_true[mask], proba[mask], 2) if mask.any() else None}
        if 0 < mask.sum() < len(mask):
            fpr, tpr, _ = skm.roc_curve(mask.astype(int), proba[:, c])
            auc = float(skm.auc(fpr, tpr))
            roc[name] = {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()}
            aucs.append(auc)
            entry["auc"] = auc
        else:
            entry["auc"] = None
        per_genre[name] = entry
    return {
        "n": int(len(y_true)),
        "top1": top_k_accuracy(y_true, proba, 1), "top2": top_k_accuracy(y_true, proba, 2),
        "loss": cross_entropy(y_true, proba),
        "precision_macro": float(prec.mean()), "recall_macro": float(rec.mean()),
        "f1_macro": float(skm.f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "f1_micro": float(skm.f1_score(y_true, y_pred, labels=idx, average="micro", zero_division=0)),
        "auc_macro": float(np.mean(aucs)) if aucs else None,
        "per_genre": per_genre,
        "confusion": cm.tolist(), "confusion_normalised": np.round(cm_norm, 6).tolist(),
        "roc": roc,
    }


def evaluate_predictions(track_ids, y_true, proba, labels: list[str]) -> dict:
    """Figures at clip level and at track level, side by side."""
    clip = classification_figures(y_true, proba, labels)
    _, ty, tp = aggregate_tracks(track_ids, y_true, proba)
    track = classification_figures(ty, tp, labels)
    return {"labels": list(labels), "clip": clip, "track": track}


OCTAVE_FACTORS = (1.0, 2.0, 3.0, 0.5, 1.0 / 3.0)


def tempo_metrics(true_bpm, pred_bpm, tolerance: float = 0.04) -> dict:
    """Tempo-estimation figures: mean and median absolute error in BPM, "accuracy 1" (within
    ``tolerance`` of the true tempo) and "accuracy 2" (within ``tolerance`` of the true tempo
    times 1, 2, 3, 1/2 or 1/3: octave errors allowed) — Gouyon et al. (2006), IEEE TASLP 14(5).

    >>> m = tempo_metrics([120.0, 90.0], [121.0, 180.0])
    >>> m["accuracy1"], m["accuracy2"]
    (0.5, 1.0)"""
    t, p = np.asarray(true_bpm, dtype=float), np.asarray(pred_bpm, dtype=float)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError("true and predicted tempi must be 1-D arrays of one length")
    if len(t) == 0:
        return {"n": 0, "mae": None, "median_ae": None, "accuracy1": None, "accuracy2": None}
    err = np.abs(p - t)
    acc1 = err <= tolerance * t
    acc2 = np.any([np.abs(p - f * t) <= tolerance * f * t for f in OCTAVE_FACTORS], axis=0)
    return {"n": int(len(t)), "mae": float(err.mean()), "median_ae": float(np.median(err)),
            "accuracy1": float(acc1.mean()), "accuracy2": float(acc2.mean())}
