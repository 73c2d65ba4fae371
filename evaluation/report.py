"""Markdown reports and run-comparison tables."""
from __future__ import annotations


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x, nd=3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def evaluation_report(res: dict, title: str, context: list[str], plots: dict[str, str]) -> str:
    """report.md: clip- and track-level figures side by side, per genre, confusion matrices."""
    labels = res["labels"]
    c, t = res["clip"], res["track"]
    L = [f"# {title}", ""]
    if res.get("split"):
        L += [f"- split: **{res['split']}**"]
    L += [f"- {line}" for line in context] + [""]
    L += ["## Summary (percent, except loss and AUC)", ""]
    L += _md_table(["figure", "clip / segment level", "track level"], [
        ["samples", c["n"], t["n"]],
        ["top-1 accuracy", _pct(c["top1"]), _pct(t["top1"])],
        ["top-2 accuracy", _pct(c["top2"]), _pct(t["top2"])],
        ["cross-entropy loss", _num(c["loss"]), _num(t["loss"])],
        ["precision (macro)", _pct(c["precision_macro"]), _pct(t["precision_macro"])],
        ["recall (macro)", _pct(c["recall_macro"]), _pct(t["recall_macro"])],
        ["F1 (macro)", _pct(c["f1_macro"]), _pct(t["f1_macro"])],
        ["F1 (micro)", _pct(c["f1_micro"]), _pct(t["f1_micro"])],
        ["ROC AUC (macro, one-vs-rest)", _num(c["auc_macro"]), _num(t["auc_macro"])],
    ])
    for level, figs in (("track", t), ("clip", c)):
        L += ["", f"## Per genre ({level} level)", ""]
        L += _md_table(["genre", "n", "top-1", "top-2", "precision", "recall", "F1", "AUC"], [
            [g, figs["per_genre"][g]["support"], _pct(figs["per_genre"][g]["top1"]),
             _pct(figs["per_genre"][g]["top2"]), _pct(figs["per_genre"][g]["precision"]),
             _pct(figs["per_genre"][g]["recall"]), _pct(figs["per_genre"][g]["f1"]),
             _num(figs["per_genre"][g]["auc"])] for g in labels])
    for level, figs in (("track", t), ("clip", c)):
        L += ["", f"## Confusion matrix ({level} level; rows true, columns predicted)", "", "Counts:", ""]
        L += _md_table(["true \\ pred", *labels], [[g, *row] for g, row in zip(labels, figs["confusion"], strict=True)])
        L += ["", "Row-normalised (percent):", ""]
        L += _md_table(["true \\ pred", *labels],
                       [[g, *(f"{100 * v:.0f}" for v in row)]
                        for g, row in zip(labels, figs["confusion_normalised"], strict=True)])
    if plots:
        L += ["", "## Plots", ""] + [f"- {what}: `{name}`" for what, name in plots.items()]
    return "\n".join(L) + "\n"


COMPARE_FIELDS = ["run", "arch", "phase", "epochs", "train_top1", "val_top1", "split", "top1", "top2",
                  "f1_micro", "f1_macro", "level", "evaluated_on"]


def compare_table(rows: list[dict]) -> str:
    """Markdown table of runs; the figures are on the split each row names."""
    header = ["run", "model", "phase", "epochs", "train acc", "val acc", "split", "top-1", "top-2",
              "F1 micro", "F1 macro", "level", "from"]
    body = [[r["run"], r["arch"], r["phase"], r["epochs"], _pct(r["train_top1"]), _pct(r["val_top1"]),
             r["split"], _pct(r["top1"]), _pct(r["top2"]), _pct(r["f1_micro"]), _pct(r["f1_macro"]),
             r["level"], r["evaluated_on"]] for r in rows]
    return "\n".join(_md_table(header, body)) + "\n"
