"""How close are synthetic MFCC sequences to real ones? Per genre:

* Fréchet distance between Gaussians fitted to the per-sequence mean vectors of the real and
  of the synthetic sequences (the FID formula, on MFCC statistics instead of Inception
  features): ||mu_r - mu_s||^2 + Tr(C_r + C_s - 2 (C_r C_s)^(1/2));
* a classifier two-sample check: cross-validated accuracy of a logistic regression telling
  real from synthetic sequences by their per-coefficient means and standard deviations
  (0.5: indistinguishable, 1.0: trivially told apart).
"""
from __future__ import annotations

import numpy as np


def sequence_stats(seqs: np.ndarray) -> np.ndarray:
    """(n, frames, n_mfcc) -> (n, 2 * n_mfcc): per-coefficient mean and std of each sequence."""
    return np.concatenate([seqs.mean(axis=1), seqs.std(axis=1)], axis=1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` (0 when identical).

    >>> rng = np.random.default_rng(0)
    >>> round(frechet_distance(rng.normal(size=(500, 2)), rng.normal(size=(500, 2))), 1)
    0.0"""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(c1 @ c2, disp=False)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def two_sample_accuracy(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic regression telling rows of ``a`` from rows of ``b``
    (0.5: indistinguishable)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = min(5, len(a), len(b))
    if folds < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=cv).mean())


def quality_report(real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], seed: int = 0) -> dict:
    """``real``/``synthetic``: genre -> (n, frames, n_mfcc). Returns per-genre figures."""
    out = {}
    for g in sorted(set(real) & set(synthetic)):
        r, s = real[g], synthetic[g]
        if len(r) < 2 or len(s) < 2:
            continue
        half = np.random.default_rng(seed).permutation(len(r))
        a, b = r[half[: len(r) // 2]], r[half[len(r) // 2:]]
        out[g] = {"n_real": int(len(r)), "n_synthetic": int(len(s)),
                  "frechet_mean_mfcc": frechet_distance(r.mean(axis=1), s.mean(axis=1)),
                  # the noise floor: the same distance between two random halves of the real sequences
                  "frechet_real_halves": frechet_distance(a.mean(axis=1), b.mean(axis=1)) if len(r) >= 4 else None,
                  "two_sample_accuracy": two_sample_accuracy(sequence_stats(r), sequence_stats(s), seed)}
    return out


def format_quality(q: dict) -> str:
    """The per-genre GAN quality figures (``genrekit gan``'s ``quality``) as a Markdown table."""
    L = ["| genre | real | synthetic | Fréchet distance real vs synthetic (mean MFCC) | same, real half vs "
         "real half | real-vs-synthetic classifier accuracy (0.5 = indistinguishable) |",
         "| --- | --- | --- | --- | --- | --- |"]
    for g, v in q.items():
        floor = "–" if v.get("frechet_real_halves") is None else f"{v['frechet_real_halves']:.1f}"
        L.append(f"| {g} | {v['n_real']} | {v['n_synthetic']} | {v['frechet_mean_mfcc']:.1f} | {floor} | "
                 f"{v['two_sample_accuracy']:.3f} |")
    return "\n".join(L) + "\n"
