"""The figures genrekit reports, listed once: report.md, the compare table and the plots take
their names, labels and formats from here (the values come from :mod:`genrekit.evaluation.metrics`).

To report a new figure: compute it in ``metrics.classification_figures`` and add it to ``FIGURES``
(or ``PER_GENRE`` for a per-genre figure)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One reported figure (accuracy, F1, AUC, ...): its key, names and how it is shown."""
    key: str  # its key in one level's figures (metrics.json "clip" / "track")
    label: str  # long name: report.md
    short: str  # column header: compare table, per-genre table, plot legends
    percent: bool  # a fraction shown in percent with one decimal; else a number with three decimals
    higher_is_better: bool = True
    needs_support: bool = False  # per genre: undefined (shown "–") for a genre absent from the set

    def format(self, value) -> str:
        """``value`` as reports show it: percent with one decimal, or three decimals; "–" for None."""
        if value is None:
            return "–"
        return f"{100 * value:.1f}" if self.percent else f"{value:.3f}"


FIGURES: tuple[Figure, ...] = (
    Figure("top1", "top-1 accuracy", "top-1", True),
    Figure("top2", "top-2 accuracy", "top-2", True),
    Figure("loss", "cross-entropy loss", "loss", False, higher_is_better=False),
    Figure("precision_macro", "precision (macro)", "precision macro", True),
    Figure("recall_macro", "recall (macro)", "recall macro", True),
    Figure("f1_macro", "F1 (macro)", "F1 macro", True),
    Figure("f1_micro", "F1 (micro)", "F1 micro", True),
    Figure("auc_macro", "ROC AUC (macro, one-vs-rest)", "AUC macro", False),
    # added by `genrekit evaluate` (macro figures over the genres present); reported when there
    Figure("top1_per_genre_mean", "top-1 per genre, mean (balanced)", "balanced top-1", True),
)

PER_GENRE: tuple[Figure, ...] = (
    Figure("top1", "top-1 accuracy", "top-1", True),
    Figure("top2", "top-2 accuracy", "top-2", True),
    Figure("precision", "precision", "precision", True, needs_support=True),  # None when never predicted
    Figure("recall", "recall", "recall", True, needs_support=True),
    Figure("f1", "F1", "F1", True, needs_support=True),
    Figure("auc", "ROC AUC (one-vs-rest)", "AUC", False),
)

COMPARE_FIGURES: tuple[str, ...] = ("top1", "top2", "f1_micro", "f1_macro")  # the compare table's columns


def figure(key: str) -> Figure:
    """The reported figure named ``key`` (a summary figure)."""
    for f in FIGURES:
        if f.key == key:
            return f
    raise KeyError(f"no reported figure {key!r} (known: {', '.join(f.key for f in FIGURES)})")
