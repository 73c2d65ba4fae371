"""What a track-model run (the default recipe, ``musicnn_lr``) keeps beside its model, and the
calibration fitted from it.

- ``embeddings.npz``: the pooled embedding of every known track of the run (its training and
  validation tracks; for an adapted run also the user's labelled tracks), with the track's
  genre, id, split and origin (``run`` or ``user``) — plain arrays, loaded without pickle.
  ``genrekit adapt`` refits the head on them plus the user's tracks, so it never re-embeds the
  training collection.
- :func:`calibrate_from_folds`: the temperature and both rejection thresholds fitted on
  *out-of-fold* predictions of those tracks (each one predicted by a head fitted without it,
  grouped by track), not on a small validation split; a run trained with no validation split
  is calibrated the same way. A temperature sharper than the raw model is used only when
  held-out tracks of other music than the training collection's (the user's, in ``adapt``)
  support it (:func:`genrekit.evaluation.calibration.choose_temperature`).
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from genrekit.data_tools.fsio import write_bytes_atomic, write_json_atomic
from genrekit.errors import UserError
from genrekit.evaluation.calibration import (
    apply_temperature,
    choose_reject_threshold,
    choose_temperature,
    expected_calibration_error,
    nll,
)
from genrekit.openset import REJECT_ACCEPT, fit_open_set, per_genre_thresholds
from genrekit.runs import CALIBRATION
from genrekit.trackhead import out_of_fold

EMBEDDINGS = "embeddings.npz"
EMBEDDING_KEYS = ("x", "genre", "track_id", "split", "origin")
MIN_FOLD_TRACKS = 10  # fewer held-out tracks: the temperature stays 1


def save_embeddings(run_dir, x: np.ndarray, genres, track_ids, splits, origins) -> None:
    """Write ``embeddings.npz`` (complete-or-absent): float32 ``x`` (tracks x features) and
    one string per track in each of the other arrays."""
    x = np.asarray(x, dtype=np.float32)
    arrays = {"x": x}
    for key, values in zip(EMBEDDING_KEYS[1:], (genres, track_ids, splits, origins), strict=True):
        arrays[key] = np.asarray([str(v) for v in values], dtype=str)
        if len(arrays[key]) != len(x):
            raise ValueError(f"{key}: {len(arrays[key])} values for {len(x)} embeddings")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(Path(run_dir) / EMBEDDINGS, buf.getvalue())


def load_embeddings(run) -> dict:
    """A run's ``embeddings.npz``, checked (one-line errors for a missing or damaged file)."""
    where = Path(run.path) / EMBEDDINGS
    if not where.is_file():
        raise UserError(f"{run.path} has no {EMBEDDINGS}: only runs of the default recipe (musicnn_lr) trained by "
                        "this genrekit keep the embeddings adapting needs; retrain it with `genrekit train`")
    try:
        with np.load(where, allow_pickle=False) as z:
            e = {k: np.asarray(z[k]) for k in EMBEDDING_KEYS}
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind: one line
        raise UserError(f"{where} is damaged: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    n = len(e["x"])
    ok = (e["x"].ndim == 2 and n > 0 and np.isfinite(e["x"]).all()
          and all(e[k].shape == (n,) and e[k].dtype.kind == "U" for k in EMBEDDING_KEYS[1:])
          and set(e["genre"]) <= set(run.labels))
    if not ok:
        raise UserError(f"{where} is not a genrekit embeddings file for this run (shapes, values or genres do not fit)")
    return e


def calibrate_from_folds(run_dir, x: np.ndarray, y: np.ndarray, splits, n_classes: int, C: float,
                         sample_weight=None, sharpen_rows=None, seed: int = 0, accept: float = REJECT_ACCEPT,
                         log=lambda m: print(m, file=sys.stderr, flush=True), oof=None) -> dict:
    """Write ``calibration.json`` (and ``openset.npz``) of a track-model run from out-of-fold
    predictions over its known tracks ``x`` (one row per track, classes ``y``): the head at
    ``C`` (with ``sample_weight``) refitted without each fold. ``sharpen_rows`` (a boolean mask:
    the user's own tracks) are held-out tracks of other music than the training collection: the
    temperature is fitted on them when there are at least ``MIN_FOLD_TRACKS`` of them, and only
    they may make it sharper than 1. The top-probability threshold and the distance threshold
    keep ``accept`` of the held-out tracks accepted. ``oof``: those out-of-fold
    ``(probabilities, held)`` when the caller already has them (the same folds)."""
    proba, held = oof if oof is not None else out_of_fold(x, y, n_classes, C, splits, sample_weight, seed)
    cal: dict = {"temperature": 1.0, "level": "track", "reject_threshold": None, "reject_accept": accept,
                 "reject_score": "top calibrated track probability", "fitted_on": "out-of-fold predictions",
                 "heldout_tracks": int(held.sum()), "valid_tracks": 0}
    sharpen = np.zeros(len(x), dtype=bool) if sharpen_rows is None else np.asarray(sharpen_rows, dtype=bool)
    user = held & sharpen
    fit_rows = user if user.sum() >= MIN_FOLD_TRACKS else held
    if fit_rows.sum() < MIN_FOLD_TRACKS:
        cal["note"] = (f"only {int(fit_rows.sum())} held-out tracks (fewer than {MIN_FOLD_TRACKS}): temperature "
                       "left at 1")
    elif (proba[fit_rows].argmax(axis=1) == y[fit_rows]).all():
        cal["note"] = "every held-out track is right: the NLL has no finite optimum, temperature left at 1"
    else:
        t, note = choose_temperature(proba[fit_rows], y[fit_rows], allow_sharpen=bool(user.sum() >= MIN_FOLD_TRACKS))
        cal["temperature"] = t
        if note:
            cal["note"] = note
    cal["temperature_tracks"] = int(fit_rows.sum())
    cal["temperature_from"] = "the user's held-out tracks" if fit_rows is user else "the run's held-out tracks"
    if held.any():
        p, yy = proba[held], y[held]
        after = apply_temperature(p, cal["temperature"])
        cal["reject_threshold"] = choose_reject_threshold(after, accept)
        cal["reject_threshold_per_genre"] = per_genre_thresholds(after, yy, n_classes,
                                                                 lambda a: choose_reject_threshold(a, accept))
        cal.update({"heldout_ece_before": expected_calibration_error(p, yy),
                    "heldout_ece_after": expected_calibration_error(after, yy),
                    "heldout_nll_before": nll(p, yy), "heldout_nll_after": nll(after, yy),
                    "heldout_accuracy": float((p.argmax(axis=1) == yy).mean())})
    write_json_atomic(Path(run_dir) / CALIBRATION, cal, only_if_changed=False)
    log(f"calibration: temperature {cal['temperature']:.3g} from {cal['temperature_from']}"
        + (f", rejection threshold {cal['reject_threshold']:.3g} (keeps {accept:.0%} of {int(held.sum())} "
           "held-out tracks)" if cal["reject_threshold"] is not None else "")
        + (f" ({cal['note']})" if "note" in cal else ""))
    return cal


def refit_rules(run_dir, model, x: np.ndarray, y: np.ndarray, splits, n_classes: int, C: float,
                sample_weight=None, sharpen_rows=None, seed: int = 0, log=None, oof=None) -> dict:
    """:func:`calibrate_from_folds`, then the open-set rule on the same tracks and folds."""
    kw = {} if log is None else {"log": log}
    calibrate_from_folds(run_dir, x, y, splits, n_classes, C, sample_weight, sharpen_rows, seed, oof=oof, **kw)
    return fit_open_set(run_dir, model, None, [], "musicnn", embeddings=(x, splits, y), **kw)
