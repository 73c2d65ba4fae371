"""``genrekit cv``: K-fold cross-validation by track, reporting mean ± std of the test figures.

Every track of the feature folder (all splits) is assigned to one of K genre-stratified
folds. For each fold: that fold is the test set, a stratified 1/(K-1) share of the other
tracks (at most a quarter) is the validation set (early stopping), the rest trains — with
K = 5 that is 60/20/20 per fold. Augmented variants in the
folder are used only for the fold's training tracks (``--no-augmented`` drops them all).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from genrekit.data_tools.folds import inner_validation, track_folds, write_view
from genrekit.data_tools.fsio import (
    check_no_links,
    loads_json,
    write_json_atomic,
    write_text_atomic,
)
from genrekit.data_tools.loaders import select
from genrekit.data_tools.manifest import manifest_checksum, read_manifest
from genrekit.errors import UserError
from genrekit.evaluate import evaluate_rows
from genrekit.models import get_arch
from genrekit.models.registry import check_hparams, cv_arch_names
from genrekit.progress import bar
from genrekit.runs import Run, atomic_output, make_folders
from genrekit.train import train
from genrekit.training import TrainOptions, check_options

CV_FIGURES = ("top1", "top2", "f1_macro", "f1_micro", "auc_macro")


def cross_validate(data, arch: str, folds: int, out, seed: int = 0, keep_augmented: bool = True,
                   train_kwargs: dict | None = None, log=print, fold_kwargs=None) -> dict:
    """``fold_kwargs(k)`` may add per-fold training options (e.g. ``from_run`` for fine-tuning
    each fold from that fold's transfer run).

    Resumable: ``OUT/cv_settings.json`` records the settings; a rerun with the same settings
    keeps every finished fold (its run folder and evaluation are complete-or-absent) and does
    only the rest; a finished cross-validation is reported again. Other settings are refused."""
    spec = get_arch(arch)
    if arch not in cv_arch_names():
        raise UserError(f"cv cross-validates genre classifiers trained from features; {arch} is not one")
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise UserError(f"--folds must be a whole number of at least 2, got {folds!r}")
    kw0 = dict(train_kwargs or {})
    check_options(TrainOptions(data=str(data), arch=arch, seed=seed, **kw0))
    check_hparams(spec.name, kw0.get("hparams") or {})
    data = Path(data)
    rows = select(read_manifest(data), spec.feature, ("train", "valid", "test"))
    if not rows:
        raise UserError(f"{data} has no {spec.feature} features for {arch} (render them with `genrekit augment "
                        f"--features {spec.feature}`, or name another --arch)")
    genres = {r["track_id"]: r["genre"] for r in rows}
    fold_tracks = track_folds(genres, folds, seed)
    out = Path(out)
    settings = json.loads(json.dumps({
        "arch": arch, "folds": folds, "seed": seed, "data": str(data.resolve()), "keep_augmented": keep_augmented,
        "manifest_sha256": manifest_checksum(data), "train_kwargs": kw0}, default=str))
    settings_path = out / "cv_settings.json"
    if out.is_file() or out.is_symlink():
        raise UserError(f"--out {out} exists and is not a folder; choose another --out")
    if settings_path.is_file():
        try:
            before = loads_json(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if before != settings:
            raise UserError(f"{out} holds a cross-validation with other settings (or other data); "
                            "choose another --out")
        if (out / "cv.json").is_file():
            try:
                done = loads_json((out / "cv.json").read_text(encoding="utf-8"))
                log(f"{out}: this cross-validation is already complete")
                return done
            except (OSError, ValueError):
                pass
    elif (out / "cv.json").exists():
        raise UserError(f"{out} already holds a cross-validation; choose another --out")
    elif out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is a folder that is not empty and holds no genrekit cross-validation; "
                        "choose another --out")
    check_no_links(out, [f"fold-{k}/{sub}" for k in range(1, folds + 1) for sub in ("view", "run", "eval")],
                   files=("cv_settings.json", "cv.json", "cv.md"))
    created = make_folders(out)
    try:
        write_json_atomic(settings_path, settings, only_if_changed=True)
        per_fold = _run_folds(out, data, arch, folds, seed, rows, genres, fold_tracks, keep_augmented, kw0,
                              fold_kwargs, log)
    except BaseException:
        if created and not any(out.glob("fold-*/eval/metrics.json")):  # nothing finished: leave nothing
            shutil.rmtree(out, ignore_errors=True)
            for d in reversed(created[:-1]):
                try:
                    d.rmdir()
                except OSError:
                    break
        raise
    summary = {}
    for lvl in ("clip", "track"):
        summary[lvl] = {}
        for f in CV_FIGURES:
            vals = [p[lvl][f] for p in per_fold if p[lvl][f] is not None]
            summary[lvl][f] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
    result = {"arch": arch, "folds": folds, "seed": seed, "data": str(data.resolve()), "per_fold": per_fold,
              "summary": summary, "train_kwargs": {k: v for k, v in (train_kwargs or {}).items()}}
    write_text_atomic(out / "cv.md", format_cv(result), only_if_changed=False)
    write_json_atomic(out / "cv.json", result, only_if_changed=False)  # last: its presence means complete
    return result


def _run_folds(out: Path, data: Path, arch: str, folds: int, seed: int, rows, genres, fold_tracks,
               keep_augmented: bool, kw0: dict, fold_kwargs, log) -> list[dict]:
    """Each fold: its view, its run (complete-or-absent), its test evaluation (complete-or-absent);
    a fold whose evaluation is complete is taken as it is."""

    per_fold = []
    with bar(folds, desc="cv", unit="fold") as progress:
        for k, test in enumerate(fold_tracks, start=1):
            per_fold.append(_run_fold(out, data, arch, folds, seed, rows, genres, k, test, keep_augmented, kw0,
                                      fold_kwargs, log))
            progress.update(1)
    return per_fold


def _run_fold(out: Path, data: Path, arch: str, folds: int, seed: int, rows, genres, k: int, test,
              keep_augmented: bool, kw0: dict, fold_kwargs, log) -> dict:
    """Fold ``k``: its view, run and test evaluation; its figures."""
    test_set = set(test)
    rest = [t for t in sorted(genres) if t not in test_set]
    valid = inner_validation(rest, genres, min(0.25, 1.0 / (folds - 1)), seed + k)
    split_of = {t: "test" if t in test_set else "valid" if t in valid else "train" for t in genres}
    view = write_view(out / f"fold-{k}" / "view", data, rows, split_of, keep_augmented)
    run_path, eval_path = out / f"fold-{k}" / "run", out / f"fold-{k}" / "eval"
    resumed = False
    if (eval_path / "metrics.json").is_file() and (run_path / "config.json").is_file():
        try:
            ev = loads_json((eval_path / "metrics.json").read_text(encoding="utf-8"))
            resumed = all(f in ev[lvl] for lvl in ("clip", "track") for f in CV_FIGURES)
        except (OSError, ValueError, KeyError, TypeError):
            resumed = False
    if not resumed:
        if not (run_path / "config.json").is_file():  # a run folder is complete-or-absent
            kw = dict(kw0)
            if fold_kwargs is not None:
                kw.update(fold_kwargs(k))
            train(TrainOptions(data=str(view), arch=arch, out=str(run_path), seed=seed, verbose=0, **kw))
        run = Run(run_path)
        test_rows = [r for r in read_manifest(view) if r["split"] == "test"]
        with atomic_output(eval_path, folder=True) as work:
            ev = evaluate_rows(run, view, test_rows, work, f"{arch} fold {k}", [f"fold {k} of {folds}"])
    fig = {lvl: {f: ev[lvl][f] for f in CV_FIGURES} for lvl in ("clip", "track")}
    log(f"fold {k}/{folds}: track top-1 {fig['track']['top1']:.3f} top-2 {fig['track']['top2']:.3f} "
        f"(clip top-1 {fig['clip']['top1']:.3f}; {len(test)} test tracks)" + (" [finished before]" if resumed else ""))
    return fig


def format_cv(res: dict) -> str:
    """The cross-validation summary as Markdown: each figure's mean ± standard deviation over
    the folds, at clip and track level."""
    L = [f"{res['folds']}-fold cross-validation by track: {res['arch']} on {res['data']} (seed {res['seed']})", "",
         "| figure | clip level | track level |", "| --- | --- | --- |"]
    names = {"top1": "top-1", "top2": "top-2", "f1_macro": "F1 macro", "f1_micro": "F1 micro", "auc_macro": "AUC macro"}
    for f in CV_FIGURES:
        c, t = res["summary"]["clip"][f], res["summary"]["track"][f]
        L.append(f"| {names[f]} | {c['mean']:.3f} ± {c['std']:.3f} | {t['mean']:.3f} ± {t['std']:.3f} |")
    return "\n".join(L) + "\n"


__all__ = ["cross_validate", "format_cv"]
