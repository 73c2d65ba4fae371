"""``genrekit evaluate`` and ``genrekit compare``: the figures the field reports, honestly.

Evaluation uses the un-augmented rows of one split of a feature folder made with the run's
own feature config, refuses test tracks that the run trained on, and writes metrics.json,
report.md and plots (confusion matrix, per-genre top-1/top-2, ROC, training curves) into
one folder per evaluated split, ``RUN/eval/<split>/``, labelled with the split; ``compare``
reads the split it is asked for (runs evaluated before this layout kept their results in the
run folder itself: they are still read, by the split recorded in them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.catalogue import find_tracks
from genrekit.data_tools.fsio import (
    csv_header,
    loads_json,
    own_folder_marker,
    read_csv,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from genrekit.data_tools.loaders import label_ids, select
from genrekit.data_tools.manifest import read_manifest
from genrekit.data_tools.pipeline import SETTINGS_NAME, AugmentSettings, run_augment
from genrekit.errors import UserError
from genrekit.evaluation.calibration import (
    N_BINS,
    UNKNOWN,
    apply_temperature,
    calibration_figures,
    calibration_report,
    open_set_figures,
)
from genrekit.evaluation.metrics import aggregate_tracks, evaluate_predictions
from genrekit.evaluation.plots import (
    plot_confusion,
    plot_history,
    plot_per_genre,
    plot_reliability,
    plot_roc,
)
from genrekit.evaluation.report import COMPARE_FIELDS, compare_table, evaluation_report
from genrekit.models.track import is_track_model
from genrekit.openset import (
    PER_GENRE,
    RULE_DISTANCE,
    has_per_genre_thresholds,
    pooled_probabilities,
    rejector_for,
    rule_of,
    track_embeddings,
)
from genrekit.runs import (
    HISTORY,
    TMP_PREFIX,
    Run,
    check_feature_config,
    check_leakage,
    make_temporary_folder,
    remove_stale_temporaries,
)
from genrekit.tasks import format_results, task_of

EVAL_DIR = "eval"
METRICS = "metrics.json"


def eval_dir(run_path, split: str) -> Path:
    """Where ``genrekit evaluate`` writes a run's results on ``split``: ``RUN/eval/<split>/``."""
    return Path(run_path) / EVAL_DIR / check_split_name(split)


def check_split_name(split: str) -> str:
    """``split`` when it is usable as a folder name under ``RUN/eval/``, else one line
    saying why not.

    >>> check_split_name("ood_dev")
    'ood_dev'"""
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", split):
        raise UserError(f"bad split name {split!r}: letters, digits, '.', '_' and '-' only (e.g. test, valid)")
    return split


@contextmanager
def created_or_absent(folder: Path):
    """Run the block; if it fails and ``folder`` did not exist before, remove what it created
    (parents included), so a refused command leaves nothing behind. An interrupted block
    (Ctrl-C) keeps what it made, for the rerun to resume."""
    folder = Path(folder)
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        yield folder
    except Exception:
        if missing:
            shutil.rmtree(missing[0], ignore_errors=True)
            for d in missing[1:]:
                try:
                    d.rmdir()
                except OSError:
                    break
        raise


RESULT_FILES = ("metrics.json", "report.md", "confusion.png", "confusion_clip.png", "per_genre.png", "roc.png",
                "curves.png", "tempo_scatter.png", "reliability.png", "predictions.csv")
PREDICTIONS = "predictions.csv"
PREDICTION_TOP_K = 3


def check_results_folder(out: Path) -> None:
    """Refuse an output folder where writing the results would overwrite files genrekit did not
    write: a file in the way, or a folder holding result-named files without genrekit's
    metrics.json (a previous evaluation's results are replaced)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if not out.is_dir():
        return
    present = [n for n in RESULT_FILES if (out / n).exists() or (out / n).is_symlink()]
    if not present:
        return
    try:
        met = loads_json((out / METRICS).read_text(encoding="utf-8"))
        ours = isinstance(met, dict) and isinstance(met.get("clip"), dict) and isinstance(met.get("track"), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise UserError(f"--out {out} already holds {present[0]}, not written by genrekit evaluate; "
                        "choose another folder")


def check_csv_target(path) -> None:
    """Refuse a --csv path that holds a file genrekit did not write (another table is replaced)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"--csv {p} is a folder")
    if p.exists() and csv_header(p)[:2] != ["run", "arch"]:
        raise UserError(f"--csv {p} already exists and is not a genrekit compare table; choose another path")


def calibration_results(run: Run, track_ids, y: np.ndarray, proba: np.ndarray) -> dict:
    """ECE (15 bins), NLL and reliability bins before and after the run's temperature, at track
    level (mean window probabilities, what predict prints) and clip level."""
    T = run.temperature
    _, ty, tp = aggregate_tracks(track_ids, y, proba)
    out = {"temperature": T, "bins": N_BINS, "track": calibration_figures(tp, ty, T, N_BINS),
           "clip": calibration_figures(proba, y, T, N_BINS)}
    if not run.calibration:
        out["note"] = "this run was made before genrekit calibrated runs: T = 1, so after = before"
    elif run.calibration.get("note"):
        out["note"] = f"T = {T:.3g}: {run.calibration['note']}"
    return out


def open_set_results(run: Run, known_ids, y, proba, unknown_ids, unknown_proba, threshold: float | None,
                     pooled: dict | None = None) -> dict:
    """Rejection by the run's rule (``threshold`` given: the top-probability rule at it) of the
    tracks: the share of unknown music rejected, the share of known music accepted and the
    accuracy kept. ``pooled`` (track id -> pooled embedding) is needed by the run's
    embedding-distance rule."""
    T = run.temperature
    kid, ty, tp = aggregate_tracks(known_ids, y, proba)
    tu, uid = np.zeros((0, len(run.labels))), []
    out: dict = {}
    if len(unknown_ids):
        uid, _, tu = aggregate_tracks(unknown_ids, np.zeros(len(unknown_ids), int), unknown_proba)
        top = np.bincount(tu.argmax(axis=1), minlength=len(run.labels))
        out["unknown_as"] = {run.labels[i]: int(top[i]) for i in np.argsort(-top, kind="stable") if top[i]}
    if threshold is None and run.reject_threshold is None and rule_of(run) != RULE_DISTANCE:
        out.update({"threshold": None, "unknown_n": int(len(tu)),
                    "note": "no rejection threshold: the run has none (made before calibration, or without a "
                            "validation split); pass --reject-threshold P"})
        return out
    rej = rejector_for(run, True, threshold)
    kp, up = apply_temperature(tp, T), (apply_temperature(tu, T) if len(tu) else tu)
    if rej.rule == RULE_DISTANCE and pooled is None:
        raise ValueError("the embedding-distance rule needs the tracks' pooled embeddings")

    def masks(r):
        def one(p, ids):
            return r.rejected(r.scores(p, np.stack([pooled[t] for t in ids]) if r.needs_embedding else None),
                              p.argmax(axis=1))
        return {"known_rejected": one(kp, kid), **({"unknown_rejected": one(up, uid)} if len(uid) else {})}

    figs = open_set_figures(kp, ty, up, rej.threshold, **masks(rej))
    extra = {"rule": rej.rule, "threshold_source": rej.source}
    if rej.rule == RULE_DISTANCE:
        extra["k"] = int(rej.stats["k"])
    if threshold is None and has_per_genre_thresholds(run):  # measured beside the global rule
        pg = rejector_for(run, PER_GENRE, None)
        f = open_set_figures(kp, ty, up, pg.threshold, **masks(pg))
        extra["per_genre"] = {k: f[k] for k in ("unknown_rejected", "known_accepted", "known_top1_accepted",
                                                "accuracy_kept")}
    return {**figs, **extra, **out}


def macro_over_present(res: dict) -> dict:
    """Macro figures over the genres present in the evaluated set: a set holding 3 of a run's
    10 genres is averaged over those 3 (an absent genre has no F1, recall or AUC to speak of,
    and counting it as 0 would halve the figure). Per level, ``precision_macro``,
    ``recall_macro``, ``f1_macro`` and ``auc_macro`` are recomputed over the present genres,
    ``top1_per_genre_mean`` (balanced top-1) is added and ``macro_over`` lists the genres used;
    ``absent_genres`` (top level) lists the others. Changes ``res`` in place and returns it."""
    absent = None
    for level in ("clip", "track"):
        figs = res[level]
        pg = figs["per_genre"]
        present = [g for g in res["labels"] if pg[g]["support"] > 0]
        absent = [g for g in res["labels"] if pg[g]["support"] == 0] if absent is None else absent

        def mean(key, names, pg=pg, none_as=None):
            vals = [pg[g][key] if pg[g][key] is not None else none_as for g in names]
            vals = [v for v in vals if v is not None]
            return float(np.mean(vals)) if vals else None

        # a present genre never predicted has no precision; the macro mean counts it as 0, as scikit-learn does
        figs.update({"precision_macro": mean("precision", present, none_as=0.0),
                     "recall_macro": mean("recall", present),
                     "f1_macro": mean("f1", present), "auc_macro": mean("auc", present),
                     "top1_per_genre_mean": mean("top1", present), "macro_over": present})
    res["absent_genres"] = absent
    return res


def _uses_distance_rule(run: Run, threshold: float | None) -> bool:

    return threshold is None and task_of(run).classifies and rule_of(run) == RULE_DISTANCE


def _track_model_rows(run: Run, folder: Path, rows: list[dict]) -> tuple[np.ndarray, dict]:
    """(per-row probabilities, track id -> pooled embedding) of a track model, from one pass of
    its backbone: each row carries its track's probabilities, as the task's ``predict_rows`` gives them."""
    tids, emb = track_embeddings(run.model(), folder, rows)
    tp = pooled_probabilities(run.model(), emb)
    at = {t: i for i, t in enumerate(tids)}
    return tp[[at[r["track_id"]] for r in rows]], dict(zip(tids, emb, strict=True))


def evaluate_rows(run: Run, folder: Path, rows: list[dict], out: Path, title: str, context: list[str],
                  batch_size: int = 32, split: str = "test", reject_threshold: float | None = None) -> dict:
    """Predict ``rows`` (feature files under ``folder``), write metrics, plots and report to ``out``;
    the results are labelled with ``split``. Rows of genre ``unknown`` (music of none of the
    run's genres) are kept out of the classification figures and give the open-set figures."""
    if not rows:
        raise UserError("nothing to evaluate: the split has no rows of the run's feature kind")
    check_leakage(run, {r["track_id"] for r in rows}, folder)
    unknown = [r for r in rows if r["genre"] == UNKNOWN and UNKNOWN not in run.labels]
    rows = [r for r in rows if not (r["genre"] == UNKNOWN and UNKNOWN not in run.labels)]
    if not rows:
        raise UserError(f"nothing to evaluate: every track is `{UNKNOWN}`; known genres are needed too "
                        "(the accuracy kept is measured on them)")
    y = label_ids(rows, run.labels)
    pooled = None
    if _uses_distance_rule(run, reject_threshold):  # one backbone pass gives probabilities and embeddings
        both, pooled = _track_model_rows(run, folder, rows + unknown)
    else:
        both = task_of(run).predict_rows(run, folder, rows + unknown, batch_size)
    proba, unknown_proba = both[:len(rows)], both[len(rows):]
    ids = [r["track_id"] for r in rows]
    res = macro_over_present(evaluate_predictions(ids, y, proba, run.labels))
    res["calibration"] = calibration_results(run, ids, y, proba)
    if unknown or reject_threshold is not None or run.reject_threshold is not None or pooled is not None:
        res["open_set"] = open_set_results(run, ids, y, proba, [r["track_id"] for r in unknown], unknown_proba,
                                           reject_threshold, pooled)
    res["run"] = str(run.path)
    res["arch"] = run.arch
    res["clips_are_tracks"] = is_track_model(run.model())  # each clip row carries its track's probabilities
    res["split"] = split
    res["context"] = context
    with created_or_absent(out), results_as_a_set(out) as work:
        _write_results(run, res, work, title, context)
        write_predictions(work / PREDICTIONS, run, [r["track_id"] for r in rows + unknown],
                          [r["genre"] for r in rows + unknown], both)
    return res


@contextmanager
def results_as_a_set(out: Path):
    """Yield a genrekit temporary folder inside ``out`` to write the results into; once they are
    all written they are moved in as a set: the earlier results (genrekit's: check_results_folder
    let them through) that the new set lacks are removed, ``metrics.json`` goes in last. A killed
    evaluation leaves the earlier set whole, never a mix of two splits (its temporary folder is
    removed by the next command writing there)."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    holder = out / f"{TMP_PREFIX}{os.getpid()}-results"
    if holder.exists():
        shutil.rmtree(holder)
    make_temporary_folder(holder, "results")
    try:
        work = holder / "results"
        work.mkdir()
        yield work
        new = sorted(os.listdir(work), key=lambda n: n == METRICS)
        for name in RESULT_FILES:
            if name not in new and ((out / name).is_file() or (out / name).is_symlink()):
                (out / name).unlink()
        for name in new:
            os.replace(work / name, out / name)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def write_predictions(path: Path, run: Run, track_ids, genres, proba) -> None:
    """``predictions.csv``: one row per track (its windows' mean probabilities, calibrated with the
    run's temperature, as ``predict`` prints them): track, true genre, predicted genre, whether
    it is right, then the top-k genres with their probabilities."""
    names = sorted(set(genres))
    tracks, y, p = aggregate_tracks(track_ids, np.array([names.index(g) for g in genres]), proba)
    p = apply_temperature(p, run.temperature) if task_of(run).classifies else p
    k = min(PREDICTION_TOP_K, len(run.labels))
    fields = ["track", "true", "predicted", "correct"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("top", "p")]
    rows = []
    for t, yi, pi in zip(tracks, y, p, strict=True):
        order = np.argsort(-pi, kind="stable")[:k]
        row = {"track": t, "true": names[yi], "predicted": run.labels[order[0]],
               "correct": int(run.labels[order[0]] == names[yi])}
        for i, j in enumerate(order, 1):
            row[f"top{i}"], row[f"p{i}"] = run.labels[j], f"{pi[j]:.4f}"
        rows.append(row)
    write_csv_atomic(path, rows, fields, only_if_changed=False)


def _write_results(run: Run, res: dict, out: Path, title: str, context: list[str]) -> None:

    out.mkdir(parents=True, exist_ok=True)
    title = f"{run.path.name}: {title}"  # the run's name and the split (or set) on every figure
    plots = {"confusion matrix (track level)": "confusion.png",
             "per-genre top-1/top-2 (track level)": "per_genre.png", "ROC curves (track level)": "roc.png"}
    plot_confusion(res["track"]["confusion"], run.labels, out / "confusion.png", f"{title} — tracks")
    if not res.get("clips_are_tracks"):  # a track model's clips are its tracks
        plot_confusion(res["clip"]["confusion"], run.labels, out / "confusion_clip.png", f"{title} — clips")
        plots["confusion matrix (clip level)"] = "confusion_clip.png"
    plot_per_genre(res["track"], run.labels, out / "per_genre.png", f"{title} — per genre (tracks)")
    plot_roc(res["track"], out / "roc.png", f"{title} — ROC (tracks)")
    if res.get("calibration"):
        cal = res["calibration"]["track"]
        plot_reliability(cal["reliability_before"], cal["reliability_after"], out / "reliability.png",
                         f"{title} — reliability (tracks)", temperature=res["calibration"]["temperature"])
        plots["reliability diagram before/after temperature scaling (track level)"] = "reliability.png"
    hist = run.path / HISTORY
    if hist.is_file() and read_csv(hist):
        plot_history(read_csv(hist), out / "curves.png", f"{run.path.name} ({run.arch}): training curves")
        plots["training curves"] = "curves.png"
    write_json_atomic(out / METRICS, res, only_if_changed=False)

    write_text_atomic(out / "report.md", evaluation_report(res, title, context, plots)
                      + calibration_report(res.get("calibration"), res.get("open_set")), only_if_changed=False)


def evaluate(run_path, data, split: str = "test", out=None, batch_size: int = 32, tempo_file=None,
             reject_threshold: float | None = None) -> dict:
    """Evaluate a run on ``split`` of a feature folder; results go to ``out`` (default
    ``RUN/eval/<split>/``), labelled with the split."""
    check_split_name(split)
    run = Run(run_path)
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"feature folder not found: {data}" if not data.exists() else f"{data} is not a folder")
    out = Path(out) if out else eval_dir(run.path, split)
    check_results_folder(out)
    run.model()  # a model whose outputs don't match labels.json fails here, first
    with created_or_absent(out):  # a task with figures of its own (tempo) writes them itself
        own = task_of(run).evaluate(run, data, split, out, tempo_file)
    if own is not None:
        return own
    fc = check_feature_config(run, data)
    rows = [r for r in select(read_manifest(data), run.kind, (split,)) if r["augmentation"] == "original"]
    if not rows:
        raise UserError(f"the {split} split of {data} has no {run.kind} rows")
    context = [f"run: `{run.path}` ({run.arch}, {run.config.get('phase')})", f"data: `{data.resolve()}`, split `{split}`",
               f"feature config fingerprint {fc.fingerprint()}"]
    return evaluate_rows(run, data, rows, out, f"{run.arch} on the {split} split", context, batch_size, split,
                         reject_threshold)


def evaluate_folder(run_path, audio_dir, out=None, features_dir=None, workers: int = 1,
                    batch_size: int = 32, progress: bool = True, reject_threshold: float | None = None) -> dict:
    """Score a run on a folder-per-genre audio set (e.g. one built by fetch-spotify): render its
    features with the run's own feature config (no augmentation, every track in "test"), then
    evaluate through the same code as ``genrekit evaluate``."""
    run = Run(run_path)
    if not task_of(run).classifies:
        raise UserError(f"{run.path} is a {run.task} run; eval-spotify scores genre classifiers")
    genres = sorted({t.genre for t in find_tracks(audio_dir)})

    unknown = [g for g in genres if g not in run.labels and g != UNKNOWN]
    if unknown:
        raise UserError(f"genre folder(s) {', '.join(unknown)} in {audio_dir} are not among the run's labels "
                        f"({', '.join(run.labels)}); rename or remove them (music of none of the labels goes "
                        f"into a folder named `{UNKNOWN}`: it gives the rejection figures)")
    out = Path(out) if out else run.path / f"eval-{Path(audio_dir).resolve().name}"
    check_results_folder(out)
    features_dir = Path(features_dir) if features_dir else out / "features"
    own_folder_marker(features_dir, SETTINGS_NAME, "--features", "genrekit augment")  # before the model loads
    run.model()
    settings = AugmentSettings(features=run.feature_config, augment=AugmentConfig(augmentations=()),
                               kinds=run.input_kinds, split="all-test", seed=0)
    with created_or_absent(out), created_or_absent(features_dir):
        skipped: list[str] = []  # shown once the set is known to hold audio: a refusal stays one line
        s = run_augment(audio_dir, features_dir, settings, workers=workers, progress=progress, log=skipped.append,
                        out_flag="--features")
        if s.ok == 0:
            why = f" ({len(skipped)} file(s) skipped, e.g. {skipped[0]})" if skipped else ""
            raise UserError(f"no decodable audio in {audio_dir}{why}")
        for line in skipped:
            print(line, file=sys.stderr)
        rows = [r for r in select(read_manifest(features_dir), run.kind, ("test",))
                if r["augmentation"] == "original"]
        context = [f"run: `{run.path}` ({run.arch}, {run.config.get('phase')})",
                   f"data: `{Path(audio_dir).resolve()}` ({s.ok} tracks; {s.skipped_bad} skipped, "
                   f"see `{features_dir}/report.md`)", "features rendered with the run's own feature config"]
        return evaluate_rows(run, features_dir, rows, out, f"{run.arch} on {Path(audio_dir).name}", context,
                             batch_size, split="test", reject_threshold=reject_threshold)


def format_metrics(res: dict) -> str:
    """Evaluation figures as a table (a task's own figures as the task formats them)."""
    own = format_results(res)
    if own is not None:
        return own
    c, t = res["clip"], res["track"]
    one = bool(res.get("clips_are_tracks"))  # a track model: its clip figures are its track figures

    def row(name, key):
        cv, tv = c[key] if c[key] is not None else float("nan"), t[key] if t[key] is not None else float("nan")
        return f"{name:12s} {tv:8.3f}" if one else f"{name:12s} {cv:8.3f} {tv:8.3f}"

    head = f"{res.get('split', '') + ' split' if res.get('split') else '':12s}"
    return "\n".join([
        f"{head} {'track':>8s}" if one else f"{head} {'clip':>8s} {'track':>8s}",
        row("top-1", "top1"), row("top-2", "top2"), row("F1 macro", "f1_macro"), row("F1 micro", "f1_micro"),
        row("AUC macro", "auc_macro"),
        f"(n = {t['n']} tracks; the model classifies whole tracks)" if one else f"(n = {c['n']} clips, {t['n']} tracks)"]
        + ([f"macro figures over the {len(t['macro_over'])} genres present; absent: {', '.join(res['absent_genres'])}"]
           if res.get("absent_genres") else [])
        + _calibration_lines(res))


def _calibration_lines(res: dict) -> list[str]:
    lines = []
    cal = res.get("calibration")
    if cal:
        c, t = cal["clip"], cal["track"]
        one = bool(res.get("clips_are_tracks"))

        def ece(when):
            return f"{t[when]:8.3f}" if one else f"{c[when]:8.3f} {t[when]:8.3f}"

        lines.append(f"{'ECE before':12s} {ece('ece_before')}   (15 bins; temperature T = {cal['temperature']:.3g})")
        lines.append(f"{'ECE after':12s} {ece('ece_after')}")
    o = res.get("open_set")
    if o and o.get("threshold") is not None:
        def pct(x):
            return "n/a" if x is None else f"{100 * x:.1f}%"

        rule = "embedding distance" if o.get("rule") == "embedding_distance" else "top probability"
        lines.append(f"open set ({rule}, threshold {o['threshold']:.4g}): unknown rejected {pct(o['unknown_rejected'])} "
                     f"of {o['unknown_n']} tracks; known accepted {pct(o['known_accepted'])}, "
                     f"accuracy kept {pct(o['accuracy_kept'])}")
        if o.get("per_genre"):
            g = o["per_genre"]
            lines.append(f"  per-genre thresholds (predict --reject-per-genre): unknown rejected "
                         f"{pct(g['unknown_rejected'])}; known accepted {pct(g['known_accepted'])}, accuracy kept "
                         f"{pct(g['accuracy_kept'])}")
    elif o:
        lines.append(f"open set: {o['unknown_n']} unknown tracks; {o['note']}")
    return lines


def read_metrics(path: Path) -> dict:
    """A metrics.json written by ``genrekit evaluate``; a corrupt one is refused with one line."""
    try:
        met = loads_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"unreadable results file {path} ({_reason(exc)}); rerun `genrekit evaluate` "
                        "to rewrite it") from None
    if not isinstance(met, dict) or not all(isinstance(met.get(lv), dict) for lv in ("clip", "track")):
        raise UserError(f"{path} is not a genrekit metrics file (no clip/track figures); rerun `genrekit evaluate`")
    return met


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def metrics_split(met: dict) -> str | None:
    """The split a metrics.json was computed on: its ``split`` label, or for results written
    before the label existed, the split named in its context lines."""
    if isinstance(met.get("split"), str):
        return met["split"]
    for line in met.get("context") or []:
        m = re.search(r"split `([^`]+)`", str(line))
        if m:
            return m.group(1)
    return None


def split_results(run: Run, split: str) -> tuple[dict, str, Path | None]:
    """A run's figures on ``split``: ``(metrics, source, file)``. From ``RUN/eval/<split>/``,
    else from an older evaluation in the run folder itself when it is labelled with that split,
    else from the figures computed at the end of training; ``({}, "not evaluated", None)``."""
    new = eval_dir(run.path, split) / METRICS
    if new.is_file():
        return read_metrics(new), "genrekit evaluate", new
    legacy = run.path / METRICS
    if legacy.is_file():
        met = read_metrics(legacy)
        if metrics_split(met) == split:
            return met, "genrekit evaluate", legacy
    tm = run.path / "train_metrics.json"
    if tm.is_file():
        try:
            figs = loads_json(tm.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"unreadable results file {tm} ({_reason(exc)})") from None
        figs = figs.get(split) if isinstance(figs, dict) else None
        if isinstance(figs, dict) and figs:
            return figs, "end of training", tm
    return {}, "not evaluated", None


def compare(runs: list[str], csv_path=None, level: str = "track", split: str = "test") -> str:
    """One table of the runs' settings and their figures on ``split`` (each row names the split
    and where its figures come from); Markdown returned, CSV written."""
    check_split_name(split)
    if csv_path:
        check_csv_target(csv_path)
    rows, settings = [], []
    for rp in runs:
        run = Run(rp)
        if not task_of(run).classifies:
            raise UserError(f"{run.path} is a {run.task} run; compare tabulates genre classifiers")
        hist = read_csv(run.path / HISTORY) if (run.path / HISTORY).is_file() else []
        best = min(hist, key=lambda h: _f(h.get("val_loss")) if _f(h.get("val_loss")) is not None else np.inf) \
            if hist else {}
        head_fit = run.config.get("head_fit") if isinstance(run.config.get("head_fit"), dict) else None
        row = {"run": run.path.name, "arch": run.arch, "phase": run.config.get("phase"),
               "epochs": len(hist), "train_top1": _f(best.get("accuracy")), "val_top1": _f(best.get("val_accuracy")),
               "val_source": "best epoch" if hist else None, "level": level, "split": split}
        if head_fit is not None:  # a logistic-regression head (the default recipe): no epochs, an inner CV
            row.update(epochs=None, val_top1=_f(head_fit.get("cv_accuracy")),
                       val_source="inner CV" if head_fit.get("cv_accuracy") is not None else None)
        figs, source, where = split_results(run, split)
        met = figs.get(level, {}) if figs else {}
        if figs and not isinstance(met, dict):
            raise UserError(f"{where} has no {level}-level figures; rerun `genrekit evaluate`")
        row["evaluated_on"] = source
        row.update({"top1": _f(met.get("top1")), "top2": _f(met.get("top2")), "f1_micro": _f(met.get("f1_micro")),
                    "f1_macro": _f(met.get("f1_macro"))})
        rows.append(row)
        settings.append(run_settings(run.config))
    for row, differs in zip(rows, differing_settings(settings), strict=True):
        row["settings"] = differs or None
    if csv_path:
        write_csv_atomic(csv_path, rows, COMPARE_FIELDS, only_if_changed=False)
    return compare_table(rows)


def run_settings(config: dict) -> dict:
    """The settings of a run that a comparison tells apart (config.json), flat: training options,
    the builder's hyper-parameters (``hparam.<name>``), the logistic-regression head's C, the
    feature config and the data folder."""
    out = {k: config.get(k) for k in ("epochs", "batch_size", "learning_rate", "optimizer", "patience", "seed",
                                      "weights", "label_smoothing", "mixup", "image_aug")}
    out.update({f"hparam.{k}": v for k, v in sorted((config.get("hparams") or {}).items())})
    hf = config.get("head_fit")
    out["C"] = hf.get("C") if isinstance(hf, dict) else None
    out["features"] = config.get("feature_fingerprint")
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    out["data"] = data.get("folder")
    return out


def differing_settings(settings: list[dict]) -> list[str]:
    """For each run, ``key=value`` of the settings whose values are not the same in every run
    (in a fixed order; "" when all agree)."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) > 1]
    folders = {k: [s.get(k) for s in settings] for k in ("data",) if k in differ}
    names_differ = "data" in folders and len({Path(f).name for f in folders["data"] if f}) == len(
        {f for f in folders["data"] if f})

    def show(k, v):
        if v is None:
            return "–"
        if k == "data" and names_differ:
            return Path(v).name
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, (list, tuple)):
            return ",".join(map(str, v)) or "none"
        return str(v)

    return ["; ".join(f"{k}={show(k, s.get(k))}" for k in differ) for s in settings]


def _f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
