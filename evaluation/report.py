"""Markdown reports and run-comparison tables; the figures, their labels and formats come from
:mod:`genrekit.evaluation.figures`."""
from __future__ import annotations

from genrekit.evaluation.figures import COMPARE_FIGURES, FIGURES, PER_GENRE, figure


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def evaluation_report(res: dict, title: str, context: list[str], plots: dict[str, str]) -> str:
    """report.md: clip- and track-level figures side by side, per genre, confusion matrices. A
    track model's clips carry their track's probabilities (``clips_are_tracks``): its report has
    the track level only."""
    labels = res["labels"]
    c, t = res["clip"], res["track"]
    one_level = bool(res.get("clips_are_tracks"))
    L = [f"# {title}", ""]
    if res.get("split"):
        L += [f"- split: **{res['split']}**"]
    L += [f"- {line}" for line in context]
    absent = res.get("absent_genres")
    if absent:
        L += [f"- genres absent from this set: {', '.join(absent)}; macro figures are averaged over the "
              f"{len(labels) - len(absent)} genres present"]
    if one_level:
        L += [f"- the model classifies whole tracks: each of the {c['n']} clips carries its track's probabilities, "
              "so clip-level figures are the track-level ones (metrics.json keeps both)"]
    L += [""]
    L += ["## Summary (percent, except loss and AUC)", ""]
    if one_level:
        L += _md_table(["figure", "track level"], [["samples", t["n"]]]
                       + [[f.label, f.format(t.get(f.key))] for f in FIGURES if f.key in t])
    else:
        L += _md_table(["figure", "clip / segment level", "track level"],
                       [["samples", c["n"], t["n"]]]
                       + [[f.label, f.format(c.get(f.key)), f.format(t.get(f.key))]
                          for f in FIGURES if f.key in c or f.key in t])
    levels = (("track", t),) if one_level else (("track", t), ("clip", c))
    for level, figs in levels:
        L += ["", f"## Per genre ({level} level)", ""]
        L += _md_table(["genre", "n", *(f.short for f in PER_GENRE)],
                       [_per_genre_row(g, figs["per_genre"][g]) for g in labels])
    for level, figs in levels:
        L += ["", f"## Confusion matrix ({level} level; rows true, columns predicted)", "", "Counts:", ""]
        L += _md_table(["true \\ pred", *labels], [[g, *row] for g, row in zip(labels, figs["confusion"], strict=True)])
        L += ["", "Row-normalised (percent):", ""]
        L += _md_table(["true \\ pred", *labels],
                       [[g, *(f"{100 * v:.0f}" for v in row)]
                        for g, row in zip(labels, figs["confusion_normalised"], strict=True)])
    if plots:
        L += ["", "## Plots", ""] + [f"- {what}: `{name}`" for what, name in plots.items()]
    return "\n".join(L) + "\n"


def _per_genre_row(genre: str, pg: dict) -> list:
    """One genre's row; a genre absent from the set shows n "0 (absent)" and no recall or F1."""
    return [genre, pg["support"] or "0 (absent)",
            *(f.format(pg[f.key]) if pg["support"] or not f.needs_support else "–" for f in PER_GENRE)]


COMPARE_FIELDS = ["run", "arch", "phase", "epochs", "train_top1", "val_top1", "split", *COMPARE_FIGURES,
                  "level", "evaluated_on", "val_source", "settings"]


def compare_table(rows: list[dict]) -> str:
    """Markdown table of runs; the figures are on the split each row names. ``val acc`` is the
    best epoch's validation accuracy, or for a logistic-regression head (no epochs) its inner
    cross-validation accuracy, marked "(CV)"; ``settings`` lists the settings that differ
    between the runs."""
    header = ["run", "model", "phase", "epochs", "train acc", "val acc", "split",
              *(figure(k).short for k in COMPARE_FIGURES), "level", "from", "settings that differ"]
    body = [[r["run"], r["arch"], r["phase"], "–" if r["epochs"] is None else r["epochs"], _pct(r["train_top1"]),
             _pct(r["val_top1"]) + (" (CV)" if r.get("val_source") == "inner CV" else ""),
             r["split"], *(figure(k).format(r[k]) for k in COMPARE_FIGURES), r["level"], r["evaluated_on"],
             r.get("settings") or "–"]
            for r in rows]
    notes = []
    if any(r.get("val_source") == "inner CV" for r in rows):
        notes = ["", "val acc (CV): a logistic-regression head's inner cross-validation accuracy over its training "
                     "tracks (folds grouped by track; the C it chose), for runs fitted without epochs."]
    return "\n".join(_md_table(header, body) + notes) + "\n"
