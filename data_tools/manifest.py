"""manifest.csv: one row per feature file; the only input of training.

Columns: ``path`` (relative to the feature folder), ``feature`` (mel | mfcc), ``track_id``,
``genre``, ``split`` (train | valid | test), ``augmentation`` (original, stretch_x1.25, ...),
``segment`` (index within the track), ``start_s``, ``padded_s``, ``source`` (audio file
relative to the data root).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import read_csv, write_csv_atomic

MANIFEST_NAME = "manifest.csv"
FIELDS = ["path", "feature", "track_id", "genre", "split", "augmentation", "segment",
          "start_s", "padded_s", "source"]
REQUIRED = ["path", "track_id", "genre", "split", "augmentation", "segment"]


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["feature"], r["track_id"], r["augmentation"], int(r["segment"])))


def write_manifest(path, rows: list[dict]) -> bool:
    return write_csv_atomic(path, sort_rows(rows), FIELDS)


def read_manifest(folder_or_file) -> list[dict]:
    p = Path(folder_or_file)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise DataError(f"no manifest at {p} (run `genrekit augment` first)")
    try:
        rows = read_csv(p)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read manifest {p}: {exc}") from None
    if rows:
        missing = [c for c in REQUIRED if c not in rows[0]]
        if missing:
            raise DataError(f"manifest {p} lacks column(s): {', '.join(missing)}")
    return rows


def manifest_checksum(folder_or_file) -> str:
    p = Path(folder_or_file)
    if p.is_dir():
        p = p / MANIFEST_NAME
    return hashlib.sha256(p.read_bytes()).hexdigest()


def check_no_leak(rows: list[dict]) -> None:
    """Raise if a track appears in two splits or an augmented row lies outside train."""
    seen: dict[str, str] = {}
    for r in rows:
        s = seen.setdefault(r["track_id"], r["split"])
        if s != r["split"]:
            raise DataError(f"track {r['track_id']} appears in both {s} and {r['split']}")
        if r["augmentation"] not in ("original", "synthetic") and r["split"] != "train":
            raise DataError(f"augmented row {r['path']} is in split {r['split']} (only train may be augmented)")
