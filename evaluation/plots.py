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
    and validation (from history.csv rows); the best epoch (lowest validation loss) is marked."""
    plt = _plt()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    second = ("accuracy", "top-1 accuracy") if not rows or "accuracy" in rows[0] else ("mae", "MAE (scaled tempo)")
    best = best_epoch_index(rows)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], *second)):
        for prefix, style in (("", "-"), ("val_", "--")):
            k = prefix + key
            if rows and k in rows[0] and rows[0][k] not in ("", None):
                ax.plot(epochs, [float(r[k]) for r in rows], style, label=("validation " if prefix else "train ") + label)
        if key == "accuracy" and rows and "top2" in rows[0]:
            ax.plot(epochs, [float(r["top2"]) for r in rows], ":", label="train top-2")
            if "val_top2" in rows[0]:
                ax.plot(epochs, [float(r["val_top2"]) for r in rows], "-.", label="validation top-2")
        if best is not None:
            ax.axvline(epochs[best], color="tab:red", lw=0.9, ls=":",
                       label=f"best epoch {epochs[best]} (lowest validation loss)" if key == "loss" else None)
            k = "val_" + key
            if rows and k in rows[0] and rows[0][k] not in ("", None):
                ax.plot([epochs[best]], [float(rows[best][k])], "o", color="tab:red", ms=5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label if key != "accuracy" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def best_epoch_index(rows: list[dict]) -> int | None:
    """Index of the row with the lowest validation loss (the epoch early stopping keeps), or
    None without validation losses."""
    vals = []
    for r in rows:
        try:
            vals.append(float(r.get("val_loss")))
        except (TypeError, ValueError):
            vals.append(np.nan)
    vals = np.asarray(vals, dtype=float)
    return int(np.nanargmin(vals)) if len(vals) and np.isfinite(vals).any() else None


def plot_confusion(cm, labels: list[str], path, title: str = "confusion matrix") -> Path:
    """Write the row-normalised confusion matrix ``cm`` (rows: true genre) as a PNG at ``path``."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    absent = cm.sum(1) == 0
    ax.set_yticks(range(n), [f"{g} (absent)" if a else g for g, a in zip(labels, absent, strict=True)])
    for i in np.flatnonzero(absent):  # no track of this genre in the set: greyed, not a row of zeros
        ax.add_patch(_plt().Rectangle((-0.5, i - 0.5), n, 1, facecolor="0.85", edgecolor="0.6", hatch="///", lw=0))
        ax.get_yticklabels()[i].set_color("0.45")
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
    """Top-1 and top-2 per genre; a genre absent from the set (no track of it) is a grey
    hatched column labelled "absent", so it cannot be read as 0 %."""
    plt = _plt()
    n = len(labels)
    absent = np.array([not figs["per_genre"][g].get("support") for g in labels])
    top1 = [figs["per_genre"][g]["top1"] or 0 for g in labels]
    top2 = [figs["per_genre"][g]["top2"] or 0 for g in labels]
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * n, 3.8))
    x = np.arange(n)
    ax.bar(x[~absent] - 0.2, np.asarray(top1)[~absent], 0.4, label="top-1")
    ax.bar(x[~absent] + 0.2, np.asarray(top2)[~absent], 0.4, label="top-2")
    if absent.any():
        ax.bar(x[absent], 1.0, 0.8, color="0.9", edgecolor="0.6", hatch="///", lw=0.5, label="absent from the set")
        for i in np.flatnonzero(absent):
            ax.text(x[i], 0.5, "absent", rotation=90, ha="center", va="center", fontsize=8, color="0.35")
    ax.set_xticks(x, labels, rotation=45, ha="right")
    for i in np.flatnonzero(absent):
        ax.get_xticklabels()[i].set_color("0.45")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_roc(figs: dict, path, title: str = "one-vs-rest ROC") -> Path:
    """Write the one-vs-rest ROC curves in ``figs`` (one level's figures, with ``roc``) as a PNG at ``path``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    styles, marks = ("-", "--", "-.", ":"), ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
    cmap = plt.get_cmap("tab10")
    n = max(len(figs["roc"]) - 1, 1)
    # curves often coincide (several genres at AUC 1): each has its own colour, line style and
    # marker, and earlier curves are drawn wider and fainter underneath later ones
    for j, (g, c) in enumerate(figs["roc"].items()):
        auc = figs["per_genre"][g]["auc"]
        ax.plot(c["fpr"], c["tpr"], ls=styles[j % len(styles)], marker=marks[j % len(marks)],
                ms=3 + 4 * (n - j) / n, markevery=max(1, len(c["fpr"]) // 6), lw=1.0 + 3.0 * (n - j) / n,
                alpha=0.55, color=cmap(j % 10), label=f"{g} (AUC {auc:.3f})", zorder=2 + j)
    ax.plot([0, 1], [0, 1], color="0.5", ls=":", lw=0.8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
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
        ece = sum(c / n * abs(a - f) for c, a, f in zip(bins["count"], acc, conf, strict=True) if c)
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


def plot_timeline(start_s, end_s, proba, labels: list[str], path, title: str = "genre over time",
                  max_genres: int = 6) -> Path:
    """Genre probabilities over a track: a stacked area of the ``max_genres`` genres most
    probable on average (the rest summed as "other"), each row drawn at its window's middle
    (windows may overlap), and a strip of the top genre above it."""
    plt = _plt()
    p = np.asarray(proba, dtype=float).reshape(-1, len(labels))
    s, e = np.asarray(start_s, float), np.asarray(end_s, float)
    mid = (s + e) / 2 if len(s) else s
    order = list(np.argsort(-p.mean(axis=0), kind="stable")[:max_genres]) if len(p) else []
    colours = plt.get_cmap("tab10")
    fig, (strip, ax) = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True, gridspec_kw={"height_ratios": [1, 6]})
    if len(p):
        layers = [p[:, i] for i in order]
        names = [labels[i] for i in order]
        rest = 1.0 - np.sum(layers, axis=0)
        if len(labels) > len(order):
            layers.append(np.clip(rest, 0, 1))
            names.append("other")
        # each row at its window's middle, held flat out to the first start and the last end
        x = np.concatenate([[s.min()], mid, [e.max()]])
        layers = [np.concatenate([[v[0]], v, [v[-1]]]) for v in layers]
        ax.stackplot(x, *layers, labels=names, colors=[colours(j % 10) for j in range(len(order))] + ["lightgrey"],
                     alpha=0.85)
        top = p.argmax(axis=1)
        cuts = (mid[1:] + mid[:-1]) / 2  # each row owns the time nearest its middle
        for a, b, t in zip(np.concatenate([[s.min()], cuts]), np.concatenate([cuts, [e.max()]]), top, strict=True):
            j = order.index(t) if t in order else None
            strip.axvspan(a, b, color=colours(j % 10) if j is not None else "lightgrey", lw=0)
    strip.set_yticks([])
    strip.set_ylabel("top", rotation=0, ha="right", va="center", fontsize=8)
    ax.set_ylim(0, 1)
    if len(s):
        ax.set_xlim(float(s.min()), float(e.max()))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability (calibrated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    strip.set_title(title)
    return _save(fig, path)
