"""Track-level stratified folds and manifest "views" that reassign splits.

A view is a small folder holding a ``manifest.csv`` whose ``path`` column is absolute and a
copy of the feature config: training code reads it like any feature folder, while the
feature files stay where they are.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.fsio import write_json_atomic
from genrekit.data_tools.manifest import VIEW_SOURCE, write_manifest


def track_folds(track_genres: dict[str, str], k: int, seed: int = 0) -> list[list[str]]:
    """Split tracks into k folds, stratified by genre, seeded."""
    from sklearn.model_selection import StratifiedKFold

    ids = sorted(track_genres)
    genres = [track_genres[t] for t in ids]
    counts = {g: genres.count(g) for g in set(genres)}
    if k < 2:
        raise DataError("--folds must be at least 2")
    if min(counts.values()) < k:
        small = min(counts, key=counts.get)
        raise DataError(f"genre {small} has {counts[small]} tracks, fewer than --folds {k}")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [[ids[i] for i in test] for _, test in skf.split(np.zeros(len(ids)), genres)]


def inner_validation(train_tracks: list[str], track_genres: dict[str, str], fraction: float, seed: int) -> set[str]:
    """A stratified share of the training tracks held out for early stopping: ``fraction`` of
    each genre's tracks (rounded, at least one, and always leaving one to train on; a genre with a
    single track keeps it for training), drawn by ``StratifiedShuffleSplit`` (seeded)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    counts = Counter(track_genres[t] for t in train_tracks)
    ids = sorted(t for t in set(train_tracks) if counts[track_genres[t]] >= 2)
    n_valid = sum(min(max(1, int(round(fraction * n))), n - 1) for n in counts.values() if n >= 2)
    if n_valid == 0:
        return set()
    split = StratifiedShuffleSplit(n_splits=1, test_size=n_valid, random_state=seed)
    _, valid = next(split.split(np.zeros(len(ids)), [track_genres[t] for t in ids]))
    return {ids[i] for i in valid}


def write_view(view: Path, source: Path, rows: list[dict], split_of: dict[str, str],
               keep_augmented: bool = True) -> Path:
    """Write a manifest view: rows re-split by ``split_of[track_id]``; augmented rows kept only
    for training tracks (and only when ``keep_augmented``)."""
    view.mkdir(parents=True, exist_ok=True)
    out = []
    for r in rows:
        split = split_of.get(r["track_id"])
        if split is None:
            continue
        if r["augmentation"] != "original" and (split != "train" or not keep_augmented):
            continue
        out.append({**r, "split": split, "path": str((source / r["path"]).resolve())})
    write_json_atomic(view / VIEW_SOURCE, {"source": str(source.resolve())})  # where its paths may lie
    write_manifest(view / "manifest.csv", out)
    FeatureConfig.load(source).save(view)
    return view
