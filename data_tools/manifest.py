"""manifest.csv: one row per feature file; the only input of training.

Columns: ``path`` (relative to the feature folder), ``feature`` (mel | mfcc), ``track_id``,
``genre``, ``split`` (train | valid | test), ``augmentation`` (original, stretch_x1.25, ...),
``segment`` (index within the track), ``start_s``, ``padded_s``, ``source`` (audio file
relative to the data root).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import loads_json, read_csv, write_csv_atomic

MANIFEST_NAME = "manifest.csv"
FIELDS = ["path", "feature", "track_id", "genre", "split", "augmentation", "segment",
          "start_s", "padded_s", "source"]
REQUIRED = ["path", "track_id", "genre", "split", "augmentation", "segment"]


VIEW_SOURCE = "view_source.json"  # in a manifest view (cv): the feature folder its absolute paths lie in


def check_paths(manifest: Path, rows: list[dict]) -> None:
    """Every row's ``path`` lies inside the feature folder: relative, no ``..``, and not led out by
    a link (a view's absolute paths lie inside the folder its ``view_source.json`` names). A row
    that points elsewhere (an edited manifest) is refused with one line naming it."""
    folder = manifest.parent
    root, absolute = folder, False
    if (folder / VIEW_SOURCE).is_file():
        try:
            root, absolute = Path(loads_json((folder / VIEW_SOURCE).read_text(encoding="utf-8"))["source"]), True
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise DataError(f"unreadable {folder / VIEW_SOURCE}; rerun the command that made {folder}") from None
    base = os.path.realpath(root)
    inside: dict[str, bool] = {}
    for i, r in enumerate(rows, start=1):
        rel = str(r.get("path") or "")
        full = os.path.join(root, rel)
        ok = bool(rel) and os.path.isabs(rel) == absolute and ".." not in Path(rel).parts
        if ok:
            parent = os.path.dirname(full)
            if parent not in inside:
                inside[parent] = _within(os.path.realpath(parent), base)
            ok = inside[parent] and (not os.path.islink(full) or _within(os.path.realpath(full), base))
        if not ok:
            raise DataError(f"manifest {manifest} row {i}: path {rel!r} lies outside the feature folder {root} "
                            "(an edited manifest?); genrekit reads only feature files inside it")


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def sort_rows(rows: list[dict]) -> list[dict]:
    """Manifest rows in their canonical order (feature, track, augmentation, segment)."""
    return sorted(rows, key=lambda r: (r["feature"], r["track_id"], r["augmentation"], int(r["segment"])))


def write_manifest(path, rows: list[dict]) -> bool:
    """Write ``manifest.csv`` atomically in canonical order; False when it was already identical."""
    return write_csv_atomic(path, sort_rows(rows), FIELDS)


def read_manifest(folder_or_file) -> list[dict]:
    """A feature folder's ``manifest.csv`` (or the file itself), checked, as a list of rows."""
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
    check_paths(p, rows)
    return rows


def manifest_checksum(folder_or_file) -> str:
    """SHA-256 (hex) of a feature folder's ``manifest.csv``, or of the file given."""
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
