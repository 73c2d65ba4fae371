"""Tempo annotations and the BPM scale shared by the tempo regressor, the fusion model and
their prediction: ``track_id,bpm`` files (GTZAN's 999 ground-truth tempi ship with genrekit),
the tempo of a time-stretched variant, and the mapping of 40-250 BPM onto [0, 1]."""
from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from genrekit.errors import UserError

TEMPO_RANGE = (40.0, 250.0)  # BPM mapped to [0, 1]
KIND = "tempogram"  # the feature kind tempo is regressed from


# -- annotations -------------------------------------------------------------------------------

def load_tempi(path=None) -> dict[str, float]:
    """``track_id,bpm`` rows -> {track id: BPM}. ``None``: GTZAN's ground-truth tempi (package data).
    A track id may be genrekit's (``blues/blues.00000``) or the file's stem (``blues.00000``)."""
    if path is None:
        text = (resources.files("genrekit.data_tools") / "tempo_data" / "gtzan_tempo.csv").read_text(encoding="utf-8")
        where = "GTZAN tempi (package data)"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"tempo file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read tempo file {path}: {exc}") from None
        where = str(path)
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "bpm" not in reader.fieldnames or "track_id" not in reader.fieldnames:
        raise UserError(f"{where}: expected a CSV with columns track_id,bpm")
    out = {}
    for line, row in enumerate(reader, start=2):
        try:
            bpm = float(row["bpm"])
        except (TypeError, ValueError):
            raise UserError(f"{where} line {line}: bad bpm {row['bpm']!r}") from None
        if not 0 < bpm < float("inf"):
            raise UserError(f"{where} line {line}: bpm must be a finite positive number, got {bpm:g}")
        out[row["track_id"].strip()] = bpm
    if not out:
        raise UserError(f"{where} has no tempo rows")
    return out


def stretch_rate(augmentation: str) -> float:
    """A time-stretch variant plays ``rate`` times faster: its tempo is the original's times rate."""
    if augmentation.startswith("stretch_x"):
        return float(augmentation[len("stretch_x"):])
    return 1.0


def row_bpm(row: dict, tempi: dict[str, float]) -> float | None:
    """A manifest row's tempo: its track's annotation (by track id, or by the id's last part)
    times its variant's stretch rate; None when the track is not annotated.

    >>> row = {"track_id": "blues/blues.00000", "augmentation": "stretch_x1.25"}
    >>> row_bpm(row, {"blues.00000": 120.0})
    150.0"""
    tid = row["track_id"]
    bpm = tempi.get(tid, tempi.get(tid.rsplit("/", 1)[-1]))
    return None if bpm is None else bpm * stretch_rate(row["augmentation"])


def scale(bpm, lo_hi=TEMPO_RANGE):
    """BPM mapped onto [0, 1] over ``lo_hi`` (float32).

    >>> scale([40.0, 145.0, 250.0]).tolist()
    [0.0, 0.5, 1.0]"""
    lo, hi = lo_hi
    return (np.asarray(bpm, dtype=np.float32) - lo) / (hi - lo)


def unscale(x, lo_hi=TEMPO_RANGE):
    """:func:`scale` undone: [0, 1] back to BPM (float64).

    >>> unscale([0.0, 0.5, 1.0]).tolist()
    [40.0, 145.0, 250.0]"""
    lo, hi = lo_hi
    return np.asarray(x, dtype=np.float64) * (hi - lo) + lo
