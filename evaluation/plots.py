"""Matplotlib figures (PNG, readable without the report)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _plt().close(fig)
    return path


def plot_history(rows: list[dict], path, title: str = "training curves") -> Path:
    """Loss and accuracy (or, for a tempo regressor, mean absolute error) per epoch for train
    and validation (from history.csv rows)."""
    plt = _plt()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    second = ("accuracy", "top-1 accuracy") if not rows or "accuracy" in rows[0] else ("mae", "MAE (scaled tempo)")
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], *second)):
        for prefix, style in (("", "-"), ("val_", "--")):
            k = prefix + key
            if rows and k in rows[0] and rows[0][k] not in ("", None):
                ax.plot(epochs, [float(r[k]) for r in rows], style, label=("validation " if prefix else "train ") + label)
        if key == "accuracy" and rows and "top2" in rows[0]:
            ax.plot(epochs, [float(r["top2"]) for r in rows], ":", label="train top-2")
            if "val_top2" in rows[0]:
                ax.plot(epochs, [float(r["val_top2"]) for r in rows], "-.", label="validation top-2")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label if key != "accuracy" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(cm, labels: list[str], path, title: str = "confusion matrix") -> Path:
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="row-normalised")
    ax.set_title(title)
    return _save(fig, path)


def plot_per_genre(figs: dict, labels: list[str], path, title: str = "per-genre accuracy") -> Path:
    plt = _plt()
    n = len(labels)
    top1 = [figs["per_genre"][g]["top1"] or 0 for g in labels]
    top2 = [figs["per_genre"][g]["top2"] or 0 for g in labels]
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * n, 3.8))
    x = np.arange(n)
    ax.bar(x - 0.2, top1, 0.4, label="top-1")
    ax.bar(x + 0.2, top2, 0.4, label="top-2")
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_roc(figs: dict, path, title: str = "one-vs-rest ROC") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for g, c in figs["roc"].items():
        auc = figs["per_genre"][g]["auc"]
        ax.plot(c["fpr"], c["tpr"], label=f"{g} (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    macro = figs.get("auc_macro")
    ax.set_title(f"{title}" + (f" — macro AUC {macro:.3f}" if macro is not None else ""))
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_reliability(before: dict, after: dict, path, title: str = "reliability diagram",
                     temperature: float | None = None) -> Path:
    """Top-label reliability diagrams side by side, before and after temperature scaling (bins
    from ``genrekit.evaluation.calibration.reliability_bins``): bars of accuracy per confidence bin, the
    gap to the diagonal shaded, the share of predictions per bin as a thin histogram."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, bins, name in ((axes[0], before, "before scaling"),
                           (axes[1], after, f"after scaling (T = {temperature:.3g})" if temperature else "after scaling")):
        edges = np.asarray(bins["edges"], dtype=float)
        width = np.diff(edges)
        n = max(1, sum(bins["count"]))
        acc = np.array([a if a is not None else 0.0 for a in bins["accuracy"]])
        conf = np.array([c if c is not None else 0.0 for c in bins["confidence"]])
        have = np.array([c > 0 for c in bins["count"]])
        ax.bar(edges[:-1][have], acc[have], width[have], align="edge", color="tab:blue", edgecolor="black",
               lw=0.5, label="accuracy")
        ax.bar(edges[:-1][have], np.abs(conf - acc)[have], width[have], bottom=np.minimum(acc, conf)[have],
               align="edge", fill=False, hatch="///", edgecolor="tab:red", lw=0.5, label="gap to mean confidence")
        ax.bar(edges[:-1], np.array(bins["count"]) / n * 0.25, width, align="edge", color="gray", alpha=0.5,
               label="share of predictions (x0.25)")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ece = sum(c / n * abs(a - f) for c, a, f in zip(bins["count"], acc, conf) if c)
        ax.set_title(f"{name} — ECE {ece:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top probability (confidence)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    return _save(fig, path)


def plot_real_vs_generated(real: dict, fake: dict, path) -> Path:
    """One real and one generated MFCC sequence per genre (time across, coefficients up)."""
    plt = _plt()
    genres = [g for g in real if g in fake]
    fig, axes = plt.subplots(2, len(genres), figsize=(2.2 * len(genres) + 1, 4.5), squeeze=False)
    for j, g in enumerate(genres):
        for i, (what, src) in enumerate((("real", real), ("generated", fake))):
            ax = axes[i][j]
            ax.imshow(src[g][0].T, aspect="auto", origin="lower", cmap="magma")
            ax.set_title(f"{g}\n{what}" if i == 0 else what, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("MFCC")
    axes[1][0].set_ylabel("MFCC")
    fig.suptitle("real vs generated MFCC sequences (time →)")
    return _save(fig, path)


def plot_gan_losses(rows: list[dict], path) -> Path:
    """Discriminator and generator loss per epoch (from a GAN run's history.csv rows)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [int(r["epoch"]) + 1 for r in rows]
    ax.plot(ep, [float(r["d_loss"]) for r in rows], label="discriminator")
    ax.plot(ep, [float(r["g_loss"]) for r in rows], label="generator")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_tempo_scatter(true_bpm, pred_bpm, path, title: str = "tempo: true vs predicted") -> Path:
    """True vs predicted BPM, with the identity line, its 4 % band and the octave lines (x2, x1/2)."""
    plt = _plt()
    t, p = np.asarray(true_bpm, float), np.asarray(pred_bpm, float)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    hi = max(260.0, float(np.max(t, initial=0)), float(np.max(p, initial=0))) * 1.05
    g = np.linspace(0, hi, 100)
    ax.fill_between(g, 0.96 * g, 1.04 * g, color="tab:green", alpha=0.2, label="within 4 %")
    ax.plot(g, g, "-", color="tab:green", lw=1)
    for f, lab in ((2.0, "x2"), (0.5, "x1/2")):
        ax.plot(g, f * g, "--", color="gray", lw=0.8, label=f"octave {lab}")
    ax.scatter(t, p, s=14, alpha=0.8)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("true tempo (BPM)")
    ax.set_ylabel("predicted tempo (BPM)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title)
    return _save(fig, path)
