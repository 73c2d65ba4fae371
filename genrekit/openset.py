"""Open-set rejection of a run: which rule it uses, fitting it at the end of training, applying it.

Two rules (the maths is in :mod:`genrekit.evaluation.calibration`):

- ``embedding_distance`` — for models with a track embedding (the default recipe, musicnn_lr):
  the distance of a track's pooled embedding to its nearest training tracks. Fitted by
  :func:`fit_open_set` at the end of training: the training tracks' statistics go into
  ``openset.npz`` in the run folder (a few hundred kB of float32 arrays, loaded without
  pickle) and the threshold, chosen to keep ``REJECT_ACCEPT`` of the validation tracks
  accepted, into ``calibration.json`` (``reject_rule`` and ``distance``).
- ``top_probability`` — the fallback for every other model (and for a run with too few
  training or validation tracks): the top calibrated probability below the run's
  ``reject_threshold`` (also in ``calibration.json``).

``predict --reject``, ``evaluate``'s figures for an ``unknown`` folder and the export bundle
use the rule the run names; ``--reject-threshold P`` always means the top-probability rule at P.
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np

from genrekit.data_tools.fsio import loads_json, write_bytes_atomic, write_json_atomic
from genrekit.data_tools.loaders import select
from genrekit.errors import UserError
from genrekit.evaluation.calibration import (
    KNN_DIMS,
    KNN_K,
    choose_distance_threshold,
    fit_knn_distance,
    knn_distance,
)
from genrekit.models.track import is_track_model
from genrekit.runs import CALIBRATION
from genrekit.trackhead import pooled_embeddings, track_groups

OPENSET_FILE = "openset.npz"
RULE_DISTANCE = "embedding_distance"
RULE_TOP_PROBABILITY = "top_probability"
REJECT_ACCEPT = 0.95  # share of validation tracks the threshold keeps accepted
MIN_TRACKS = 10  # fewer training or validation tracks: the top-probability rule
MIN_PER_GENRE = 5  # fewer held-out tracks of a genre: that genre uses the global threshold
PER_GENRE = "per_genre"  # rejector_for(run, reject=PER_GENRE, ...): the run's per-genre thresholds
STAT_KEYS = ("mean", "scale", "components", "train", "k")


def has_track_embedding(model) -> bool:
    """True for models whose tracks have a pooled embedding (a ``track_pooling`` layer)."""
    return is_track_model(model)


def track_embeddings(model, folder, rows: list[dict]) -> tuple[list[str], np.ndarray]:
    """(track ids sorted, pooled embeddings in that order) of the original rows in ``rows``,
    through the model's own backbone and pooling (the order of ``aggregate_tracks``)."""
    rows = [r for r in rows if r.get("augmentation", "original") == "original"]
    groups = sorted(track_groups(rows), key=lambda ix: rows[ix[0]]["track_id"])
    if not groups:
        return [], np.zeros((0, 0), dtype=np.float32)
    return [rows[ix[0]]["track_id"] for ix in groups], pooled_embeddings(model, folder, rows, groups)


def pooled_probabilities(model, pooled: np.ndarray) -> np.ndarray:
    """The model's class probabilities from pooled track embeddings (its ``predictions`` layer)."""
    return np.asarray(model.get_layer("predictions")(np.asarray(pooled, dtype=np.float32)), dtype=np.float64)


def out_of_fold_distances(x: np.ndarray, splits) -> np.ndarray:
    """Each held-out track's embedding distance to the tracks of the other folds (what a
    track the rule has never seen scores), for the (train, held-out) index pairs ``splits``."""
    d = np.full(len(x), np.nan)
    for tr, te in splits:
        d[te] = knn_distance(fit_knn_distance(x[tr], KNN_K, KNN_DIMS), x[te])
    return d


def per_genre_thresholds(values: np.ndarray, y: np.ndarray, n_classes: int, choose) -> list[float | None]:
    """One threshold per genre: ``choose`` over the rows of ``values`` (scores, or probabilities)
    of the held-out tracks *of* that genre; None for a genre with fewer than ``MIN_PER_GENRE`` of
    them (the global threshold applies there)."""
    out: list[float | None] = []
    for c in range(n_classes):
        sc = values[y == c]
        out.append(float(choose(sc)) if len(sc) >= MIN_PER_GENRE else None)
    return out


def write_distance_rule(run_dir, cal: dict, x: np.ndarray, splits, accept: float = REJECT_ACCEPT,
                        y: np.ndarray | None = None, n_classes: int | None = None) -> dict:
    """The embedding-distance rule fitted on pooled embeddings ``x`` of every known track the
    run has (statistics in ``openset.npz``), its threshold chosen on out-of-fold distances
    (``splits``) to keep ``accept`` of those tracks accepted; recorded in ``cal``. With the
    tracks' genres ``y``, also a threshold per genre (``predict --reject-per-genre``)."""
    stats = fit_knn_distance(x, KNN_K, KNN_DIMS)
    held_all = out_of_fold_distances(x, splits)
    ok = np.isfinite(held_all)
    held = held_all[ok]
    th = choose_distance_threshold(held, accept)
    buf = io.BytesIO()
    np.savez(buf, **stats)
    write_bytes_atomic(Path(run_dir) / OPENSET_FILE, buf.getvalue())
    cal["reject_rule"] = RULE_DISTANCE
    cal.pop("reject_rule_note", None)
    cal["distance"] = {"file": OPENSET_FILE, "threshold": th, "accept": accept, "k": int(stats["k"]),
                       "dims": int(stats["components"].shape[0]), "train_tracks": int(len(x)),
                       "heldout_tracks": int(len(held)), "threshold_from": "out-of-fold distances",
                       "score": "mean squared distance of the pooled track embedding to its k nearest "
                                "training tracks (standardised, principal components)"}
    if y is not None:
        cal["distance"]["threshold_per_genre"] = per_genre_thresholds(
            held, np.asarray(y)[ok], n_classes or int(np.max(y)) + 1, lambda d: choose_distance_threshold(d, accept))
    return cal


def log_rule(cal: dict, accept: float, log) -> None:
    """Log which rejection rule ``cal`` holds, with its threshold."""
    if cal["reject_rule"] == RULE_DISTANCE:
        d = cal["distance"]
        log(f"open set: embedding-distance rule, threshold {d['threshold']:.4g} (keeps {accept:.0%} of "
            f"{d.get('heldout_tracks', d.get('valid_tracks'))} held-out tracks; {d['train_tracks']} tracks in "
            f"{OPENSET_FILE})")
    else:
        log(f"open set: top-probability rule ({cal['reject_rule_note']})")


def fit_open_set(run_dir, model, folder, rows: list[dict], kind: str, accept: float = REJECT_ACCEPT,
                 log=lambda m: print(m, file=sys.stderr, flush=True), embeddings=None) -> dict:
    """Choose and fit the run's rejection rule after ``calibration.json`` is written (by the
    calibration step), and record it there: the embedding-distance rule when the model has a
    track embedding and there are at least ``MIN_TRACKS`` training and validation tracks
    (statistics written to ``openset.npz``), else the top-probability rule. ``embeddings``
    (a track model's ``(x, splits)``: pooled embeddings of its known tracks and out-of-fold
    splits over them, as the default recipe computes them) fits the distance rule on all of
    them with its threshold chosen out of fold. Returns the updated calibration."""
    run_dir = Path(run_dir)
    cal_path = run_dir / CALIBRATION
    cal = loads_json(cal_path.read_text(encoding="utf-8")) if cal_path.is_file() else {}
    cal["reject_rule"] = RULE_TOP_PROBABILITY
    cal.pop("distance", None)
    if not has_track_embedding(model):
        cal["reject_rule_note"] = "the model has no track embedding: rejection by top calibrated probability"
    elif embeddings is not None:
        x, splits, *y = embeddings  # (x, splits) or (x, splits, genres)
        if len(x) < 2 * MIN_TRACKS or not splits:
            cal["reject_rule_note"] = (f"{len(x)} known tracks (fewer than {2 * MIN_TRACKS}, or too few per genre for "
                                       "folds): too few for the embedding-distance rule; rejection by top probability")
        else:
            write_distance_rule(run_dir, cal, x, splits, accept, y[0] if y else None,
                                int(model.output_shape[-1]) if y else None)
    else:
        def originals(split):
            return [r for r in select(rows, kind, (split,)) if r["augmentation"] == "original"]

        n_train = len({r["track_id"] for r in originals("train")})
        n_valid = len({r["track_id"] for r in originals("valid")})
        if n_train < MIN_TRACKS or n_valid < MIN_TRACKS:
            cal["reject_rule_note"] = (f"{n_train} training and {n_valid} validation tracks (fewer than {MIN_TRACKS}): "
                                       "too few for the embedding-distance rule; rejection by top probability")
        else:
            _, xtr = track_embeddings(model, folder, originals("train"))
            _, xva = track_embeddings(model, folder, originals("valid"))
            stats = fit_knn_distance(xtr, KNN_K, KNN_DIMS)
            th = choose_distance_threshold(knn_distance(stats, xva), accept)
            buf = io.BytesIO()
            np.savez(buf, **stats)
            write_bytes_atomic(run_dir / OPENSET_FILE, buf.getvalue())
            cal["reject_rule"] = RULE_DISTANCE
            cal.pop("reject_rule_note", None)
            cal["distance"] = {"file": OPENSET_FILE, "threshold": th, "accept": accept, "k": int(stats["k"]),
                               "dims": int(stats["components"].shape[0]), "train_tracks": int(len(xtr)),
                               "valid_tracks": int(len(xva)), "heldout_tracks": int(len(xva)),
                               "threshold_from": "validation tracks",
                               "score": "mean squared distance of the pooled track embedding to its k nearest "
                                        "training tracks (standardised, principal components)"}
    write_json_atomic(cal_path, cal, only_if_changed=False)
    log_rule(cal, accept, log)
    return cal


def rule_of(run) -> str:
    """The rejection rule a run uses: ``embedding_distance`` or ``top_probability``."""
    return RULE_DISTANCE if run.calibration.get("reject_rule") == RULE_DISTANCE else RULE_TOP_PROBABILITY


def load_distance_stats(run) -> dict:
    """The embedding-distance statistics of a run (``openset.npz``), checked; refused with one
    line when missing or damaged."""
    where = Path(run.path) / OPENSET_FILE
    d = run.calibration.get("distance")
    if not isinstance(d, dict) or not isinstance(d.get("threshold"), (int, float)) \
            or not math.isfinite(d["threshold"]) or d["threshold"] < 0:
        raise UserError(f"{run.path}/calibration.json: reject_rule {RULE_DISTANCE} without a valid distance threshold")
    try:
        with np.load(where, allow_pickle=False) as z:
            stats = {k: np.asarray(z[k]) for k in STAT_KEYS}
    except FileNotFoundError:
        raise UserError(f"{where} is missing: calibration.json names the {RULE_DISTANCE} rule; retrain the run "
                        "or pass --reject-threshold P") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind (BadZipFile, zlib, EOF): one line
        raise UserError(f"{where} is damaged: {' '.join(str(exc).split()) or type(exc).__name__}; "
                        "retrain the run or pass --reject-threshold P") from None
    n_feat = stats["mean"].shape[0] if stats["mean"].ndim == 1 else -1
    ok = (n_feat > 0 and stats["scale"].shape == (n_feat,) and stats["components"].ndim == 2
          and stats["components"].shape[1] == n_feat and stats["train"].ndim == 2
          and stats["train"].shape[1] == stats["components"].shape[0] and stats["k"].ndim == 0
          and 1 <= int(stats["k"]) <= len(stats["train"])
          and all(np.isfinite(stats[k]).all() for k in STAT_KEYS) and (stats["scale"] > 0).all())
    if not ok:
        raise UserError(f"{where} is not a genrekit open-set statistics file (shapes or values do not fit)")
    stats["threshold"] = float(d["threshold"])
    return stats


class Rejector:
    """Decides ``unknown`` for one track: ``rule`` and ``threshold`` say how; ``per_genre`` (one
    threshold or None per genre) replaces the threshold for tracks whose top genre has one."""
    def __init__(self, rule: str, threshold: float, stats: dict | None = None, source: str = "the run",
                 per_genre: list | None = None):
        self.rule, self.threshold, self.stats, self.source = rule, float(threshold), stats, source
        self.per_genre = per_genre

    def thresholds(self, top) -> np.ndarray:
        """The threshold for each track whose top genre (class index) is in ``top``."""
        top = np.atleast_1d(np.asarray(top, dtype=int))
        if self.per_genre is None:
            return np.full(len(top), self.threshold)
        return np.array([self.threshold if self.per_genre[t] is None else float(self.per_genre[t]) for t in top])

    @property
    def needs_embedding(self) -> bool:
        """Whether the rule needs the track's pooled embedding (the distance rule)."""
        return self.rule == RULE_DISTANCE

    def scores(self, proba, pooled=None) -> np.ndarray:
        """Per track: the distance (distance rule) or the top calibrated probability."""
        if self.rule == RULE_DISTANCE:
            return np.atleast_1d(knn_distance(self.stats, np.atleast_2d(pooled)))
        return np.atleast_2d(np.asarray(proba, dtype=np.float64)).max(axis=1)

    def rejected(self, scores, top=None) -> np.ndarray:
        """Which tracks are rejected; ``top`` (their top genres) is needed for per-genre thresholds."""
        s = np.atleast_1d(np.asarray(scores, dtype=np.float64))
        if self.per_genre is not None and top is None:
            raise ValueError("per-genre thresholds need the tracks' top genres")
        th = self.thresholds(top) if top is not None else self.threshold
        return s > th if self.rule == RULE_DISTANCE else s < th

    def describe(self) -> str:
        """The rule and its threshold in words.

        >>> Rejector("top_probability", 0.4).describe()
        'top probability < 0.4000'"""
        if self.per_genre is not None:
            return f"{'embedding distance' if self.rule == RULE_DISTANCE else 'top probability'}, per-genre thresholds"
        if self.rule == RULE_DISTANCE:
            return f"embedding distance > {self.threshold:.4g}"
        return f"top probability < {self.threshold:.4f}"


def _per_genre(run, values, where: str) -> list:
    if not isinstance(values, list) or len(values) != len(run.labels) or not all(
            v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in values):
        raise UserError(f"{run.path} has no per-genre thresholds{where} (made before genrekit fitted them, or "
                        "without held-out tracks): use --reject")
    return values


def rejector_for(run, reject, threshold: float | None) -> Rejector | None:
    """The rejection to apply: ``threshold`` when given (top-probability rule at that value; it
    implies ``reject``), else with ``reject`` the run's own rule and threshold (``reject ==
    "per_genre"``: its per-genre thresholds, the global one for a genre without); None for none.
    For runs whose task classifies (predict refuses the others first)."""
    if threshold is None and not reject:
        return None
    per = reject == PER_GENRE
    if per and threshold is not None:
        raise UserError("--reject-per-genre uses the run's thresholds; it cannot be combined with --reject-threshold")
    if threshold is not None:
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold <= 1):
            raise UserError(f"--reject-threshold must be a probability in [0, 1], got {threshold!r}")
        return Rejector(RULE_TOP_PROBABILITY, float(threshold), source="--reject-threshold")
    if rule_of(run) == RULE_DISTANCE:
        if not has_track_embedding(run.model()):
            raise UserError(f"{run.path}: calibration.json names the {RULE_DISTANCE} rule but the model has no "
                            "track embedding")
        stats = load_distance_stats(run)
        pg = _per_genre(run, run.calibration["distance"].get("threshold_per_genre"), " for the distance rule") \
            if per else None
        return Rejector(RULE_DISTANCE, stats["threshold"], stats, _source(run, per), pg)
    if run.reject_threshold is None:
        raise UserError(f"{run.path} has no rejection threshold (made before genrekit calibrated runs, or "
                        "trained without a validation split): pass --reject-threshold P")
    pg = _per_genre(run, run.calibration.get("reject_threshold_per_genre"), "") if per else None
    return Rejector(RULE_TOP_PROBABILITY, run.reject_threshold, source=_source(run, per), per_genre=pg)


def has_per_genre_thresholds(run) -> bool:
    """Whether the run's rule has per-genre thresholds (runs calibrated since genrekit fits them)."""
    c = run.calibration
    v = (c.get("distance") or {}).get("threshold_per_genre") if rule_of(run) == RULE_DISTANCE \
        else c.get("reject_threshold_per_genre")
    return isinstance(v, list) and len(v) == len(run.labels)


def _source(run, per: bool) -> str:
    held = "held-out" if run.calibration.get("fitted_on") else "validation"
    return f"the run's {'per-genre thresholds' if per else 'threshold'}, chosen on its {held} tracks"
