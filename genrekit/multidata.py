"""Several feature folders as one training set (``genrekit train --data A --data B``).

A user with more than one labelled collection trains one run on all of them. The folders must
share one feature config (the same ``genrekit augment`` settings); each keeps its own split.
Their rows are joined: every row's path becomes absolute (``folder / path`` still finds the
file), the track ids of the second and later collections get a prefix (``2:``, ``3:``, ...: a
track id found in two folders stays two tracks, so grouping by track — inner CV, folds,
calibration — never merges them), and each row records its ``collection``. The first
collection's ids are unchanged. Each track of a later collection weighs
:func:`genrekit.trackhead.collection_weight` tracks of the first (the rule ``genrekit adapt``
weighs the user's tracks by), or ``--collection-weight`` given.

One folder is read exactly as before (its rows as its manifest holds them, no weights).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import CONFIG_NAME, FeatureConfig
from genrekit.data_tools.loaders import select
from genrekit.data_tools.manifest import (
    MANIFEST_NAME,
    check_no_leak,
    manifest_checksum,
    read_manifest,
)
from genrekit.errors import UserError
from genrekit.trackhead import MAX_WEIGHT, collection_weight

AUTO = "auto"
SPLITS = ("train", "valid", "test")
WEIGHT_RULE = f"n_first / n_collection training tracks, clipped to [1, {MAX_WEIGHT:g}] (1 for one genre)"


def track_prefix(index: int) -> str:
    """The prefix of collection ``index``'s track ids: none for the first, ``"2:"`` for the
    second, ...

    >>> [track_prefix(i) for i in range(3)]
    ['', '2:', '3:']"""
    return "" if index == 0 else f"{index + 1}:"


def folders_of(data) -> list[str]:
    """``TrainOptions.data`` as a list of folders (one folder, or a list or tuple of them).

    >>> folders_of("feats"), folders_of(["a", "b"])
    (['feats'], ['a', 'b'])"""
    if isinstance(data, (list, tuple)):
        return [os.fspath(d) for d in data]
    return [os.fspath(data)]


def data_option(items: list[str]):
    """The parsed ``--data`` items (``action="append"``): one folder as a string, as before;
    several as a list."""
    return items[0] if len(items) == 1 else list(items)


def weight_option(text: str):
    """``--collection-weight``: ``auto`` or a number in (0, 1000]."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 1000:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected auto or a number in (0, 1000], got {text!r}")
    return v


@dataclass
class Collection:
    """One feature folder of several: what config.json records of it."""
    folder: Path
    manifest_sha256: str
    prefix: str
    rows: int
    train_tracks: int
    genres: list[str]
    weight: float = 1.0

    def record(self) -> dict:
        """The collection's entry of config.json's ``data.collections``."""
        return {"folder": str(self.folder.resolve()), "manifest_sha256": self.manifest_sha256,
                "track_prefix": self.prefix, "train_tracks": self.train_tracks, "rows": self.rows,
                "genres": list(self.genres), "weight": self.weight}


@dataclass
class TrainingData:
    """The rows a run trains on: one feature folder's, or several joined."""
    folder: Path  # the first folder (config.json's data.folder)
    fc: FeatureConfig
    rows: list[dict]
    collections: list[Collection] = field(default_factory=list)  # [] for one folder
    track_weights: dict[str, float] | None = None  # None: every row weighs 1
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The data in words, for refusals: the folder, or "the N --data folders"."""
        return str(self.folder) if not self.collections else f"the {len(self.collections)} --data folders"


def check_weight_option(weight) -> None:
    """Refuse a ``collection_weight`` that is neither ``auto`` nor a number in (0, 1000]."""
    ok = weight == AUTO or (isinstance(weight, (int, float)) and not isinstance(weight, bool)
                            and 0 < weight <= 1000)
    if not ok:
        raise UserError(f"--collection-weight must be auto or a number in (0, 1000], got {weight!r}")


def _is_feature_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / MANIFEST_NAME).is_file() and (folder / CONFIG_NAME).is_file()


def _train_tracks(rows: list[dict]) -> list[str]:
    return sorted({r["track_id"] for r in rows if r["split"] == "train"})


def read_training_data(data, weight=AUTO, kind: str | None = None) -> TrainingData:
    """The training data of ``data`` (one folder or several, :func:`folders_of`): one folder's
    feature config and checked manifest as they are; several joined (see the module), each
    refused in one line when it is not a feature folder, is given twice, was made with other
    feature settings than the first or (given the ``kind`` the model reads) has no training
    rows of that kind. With several, only the rows of ``kind`` are kept, and each folder's
    tracks, genres and weight are counted over them."""
    check_weight_option(weight)
    folders = [Path(f) for f in folders_of(data)]
    if not folders:
        raise UserError("--data: give at least one feature folder")
    if len(folders) == 1:
        if weight != AUTO:
            raise UserError("--collection-weight weighs the second and later --data folders: "
                            "give several --data folders, or leave it out")
        fc = FeatureConfig.load(folders[0])
        rows = read_manifest(folders[0])
        check_no_leak(rows)
        return TrainingData(folders[0], fc, rows)
    seen: dict[str, Path] = {}
    for f in folders:
        if not _is_feature_folder(f):
            what = "not found" if not f.exists() else "not a feature folder"
            raise UserError(f"--data {f}: {what} (a feature folder holds {MANIFEST_NAME} and {CONFIG_NAME}; "
                            "render one with `genrekit augment`)")
        real = os.path.realpath(f)
        if real in seen:
            raise UserError(f"--data {f} is given twice (the same folder as --data {seen[real]}); "
                            "give each collection once")
        seen[real] = f
    fc = FeatureConfig.load(folders[0])
    first = fc.to_dict()
    for f in folders[1:]:
        other = FeatureConfig.load(f)
        if other.fingerprint() != fc.fingerprint():
            diff = sorted(k for k in {*first, *other.to_dict()} if first.get(k) != other.to_dict().get(k))
            raise UserError(f"--data {f} was made with other feature settings than --data {folders[0]} "
                            f"(differs in: {', '.join(diff)}); render every collection with the same "
                            "`genrekit augment` settings")
    rows, collections = [], []
    for i, f in enumerate(folders):
        own = read_manifest(f)
        check_no_leak(own)
        if kind is not None:
            own = select(own, kind, SPLITS)
            if not select(own, kind, ("train",)):
                raise UserError(f"--data {f} has no training rows of {kind} features, the kind this "
                                f"architecture reads (render it with `genrekit augment --features {kind}`)")
        prefix, base = track_prefix(i), Path(os.path.abspath(f))
        rows += [{**r, "path": str(base / r["path"]), "track_id": prefix + r["track_id"], "collection": i}
                 for r in own]
        train = [r for r in own if r["split"] == "train"]
        collections.append(Collection(f, manifest_checksum(f), prefix, len(own), len(_train_tracks(own)),
                                      sorted({r["genre"] for r in train})))
    notes = []
    n0 = collections[0].train_tracks
    for c in collections[1:]:
        if weight != AUTO:
            c.weight = float(weight)
            continue
        c.weight = collection_weight(n0, c.train_tracks, len(c.genres))
        if len(c.genres) < 2 and c.train_tracks:
            notes.append(f"--data {c.folder} trains on one genre only: its tracks weigh 1 each (a collection "
                         "of one genre, weighted up, teaches the model to call all music like it that genre)")
    weights = None
    if any(c.weight != 1.0 for c in collections):
        weights = {r["track_id"]: collections[r["collection"]].weight for r in rows}
    return TrainingData(folders[0], fc, rows, collections, weights, notes)


def row_weights(track_weights: dict[str, float] | None, rows: list[dict]) -> np.ndarray | None:
    """Each row's sample weight, by its track (1 for a track not weighed, e.g. ``--synthetic``);
    None when nothing is weighed (every fit then runs exactly as with one folder).

    >>> row_weights({"2:a": 3.0}, [{"track_id": "x"}, {"track_id": "2:a"}]).tolist()
    [1.0, 3.0]
    >>> row_weights(None, [{"track_id": "x"}]) is None
    True"""
    if track_weights is None:
        return None
    return np.array([track_weights.get(r["track_id"], 1.0) for r in rows], dtype=np.float32)


def weights_of_tracks(config: dict, track_ids) -> np.ndarray | None:
    """The sample weight a run trained on several --data folders gave each of ``track_ids``
    (by prefix; 1 for the first folder's and any other id), or None when it weighed none.

    >>> cfg = {"data": {"collections": [{"track_prefix": "", "weight": 1.0},
    ...                                 {"track_prefix": "2:", "weight": 2.5}]}}
    >>> weights_of_tracks(cfg, ["a", "2:a", "user:b"]).tolist()
    [1.0, 2.5, 1.0]
    >>> weights_of_tracks({"data": {}}, ["a"]) is None
    True"""
    cols = [c for c in (config.get("data") or {}).get("collections") or []
            if isinstance(c, dict) and c.get("track_prefix") and c.get("weight", 1.0) != 1.0]
    if not cols:
        return None
    w = np.ones(len(track_ids))
    for i, t in enumerate(map(str, track_ids)):
        for c in cols:
            if t.startswith(c["track_prefix"]):
                w[i] = float(c["weight"])
    return w


def collection_of(config: dict, folder) -> dict | None:
    """The ``data.collections`` entry of a run's config whose folder is ``folder`` (same real
    path), or None (a run of one folder, or another folder)."""
    real = os.path.realpath(folder)
    for c in (config.get("data") or {}).get("collections") or []:
        if isinstance(c, dict) and os.path.realpath(str(c.get("folder", ""))) == real:
            return c
    return None


__all__ = ["AUTO", "Collection", "TrainingData", "WEIGHT_RULE", "check_weight_option", "collection_of",
           "data_option", "folders_of", "read_training_data", "row_weights", "track_prefix", "weight_option",
           "weights_of_tracks"]
