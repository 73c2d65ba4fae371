"""Track-level train/valid/test splits, decided before any segmenting or augmentation.

Three sources: a seeded split stratified by genre with configurable ratios; the
fault-filtered GTZAN split of Kereliuk, Sturm & Larsen (2015), shipped as package data
(``gtzan-filtered``); or a user's split file (CSV with ``track_id,split`` columns, or a
folder of ``train*.txt``/``valid*.txt``/``test*.txt`` lists of ``genre/file`` lines).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from genrekit.data_tools.catalogue import Track
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import read_csv, write_csv_atomic

_SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "val": "valid",
                  "validation": "valid", "dev": "valid", "test": "test", "testing": "test"}
BUILTIN_SPLITS = {"gtzan-filtered": "gtzan_fault_filtered"}


@dataclass
class SplitResult:
    """Which split each track is in, and what the split file and the folder disagree on."""
    assignment: dict[str, str]  # track_id -> split
    missing_on_disk: list[str] = field(default_factory=list)  # named in the split file, not found
    unassigned: list[str] = field(default_factory=list)  # on disk, not named in the split file
    source: str = ""


def ratio_numbers(text: str) -> tuple[float, ...]:
    """The numbers of a ratio written ``70/20/10``, ``0.6,0.2,0.2`` or ``60:20:20`` (as written,
    not normalised; see :func:`normalise_ratios`)."""
    parts = [p for p in text.replace(",", "/").replace(":", "/").split("/") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise DataError(f"bad --ratios {text!r}: expected three numbers like 70/20/10") from None


def check_ratios(vals) -> tuple[float, float, float]:
    """``vals`` as three floats, refused unless non-negative with train > 0 (not normalised)."""
    try:
        vals = tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        raise DataError(f"bad --ratios {vals!r}: expected three numbers like 70/20/10") from None
    shown = "/".join(f"{v:g}" for v in vals)
    if len(vals) != 3 or not all(0 <= v < float("inf") for v in vals) or vals[0] == 0:
        raise DataError(f"bad --ratios '{shown}': expected three non-negative numbers "
                        "(train > 0) like 70/20/10")
    return vals  # type: ignore[return-value]


def normalise_ratios(vals) -> tuple[float, float, float]:
    """Three non-negative numbers (train > 0) as fractions summing to 1."""
    vals = check_ratios(vals)
    s = sum(vals)
    return tuple(v / s for v in vals)  # type: ignore[return-value]


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``70/20/10``, ``0.6,0.2,0.2`` or ``60:20:20`` into fractions summing to 1."""
    return normalise_ratios(ratio_numbers(text))


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder allocation of n items; every non-zero ratio gets one item when n allows."""
    raw = [r * n for r in ratios]
    counts = [int(np.floor(x)) for x in raw]
    order = sorted(range(3), key=lambda i: (raw[i] - counts[i], -i), reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):  # make sure a wanted split is not empty when we can afford it
        if ratios[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def stratified_split(tracks: list[Track], ratios=(0.7, 0.2, 0.1), seed: int = 0) -> SplitResult:
    """Split tracks per genre with a seeded shuffle: the same seed gives the same split."""
    by_genre: dict[str, list[str]] = {}
    for t in tracks:
        by_genre.setdefault(t.genre, []).append(t.track_id)
    assignment: dict[str, str] = {}
    for genre in sorted(by_genre):
        ids = sorted(by_genre[genre])
        # one generator per genre: adding a genre does not reshuffle the others
        gseed = [seed, *genre.encode("utf-8")]
        rng = np.random.default_rng(gseed)
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_train, n_valid, _ = _allocate(len(ids), ratios)
        for k, tid in enumerate(order):
            assignment[tid] = "train" if k < n_train else "valid" if k < n_train + n_valid else "test"
    pct = "/".join(f"{r * 100:g}" for r in ratios)
    return SplitResult(assignment=assignment, source=f"stratified {pct}, seed {seed}")


def _normalise_id(text: str) -> str:
    text = text.strip().replace("\\", "/")
    for ext in (".wav", ".au", ".mp3", ".flac", ".ogg"):
        if text.lower().endswith(ext):
            return text[: -len(ext)]
    return text


def _name(named: dict[str, str], tid: str, split: str, where: str) -> None:
    """Record ``tid -> split``; a track named for two different splits is refused (the last line
    silently winning would put a track where its user did not mean it)."""
    old = named.get(tid)
    if old is not None and old != split:
        raise DataError(f"{where}: track {tid} is listed twice, for {old} and for {split}; "
                        "keep one line per track")
    named[tid] = split


def _read_list_folder(folder: Path) -> dict[str, str]:
    named: dict[str, str] = {}
    found = False
    for f in sorted(folder.glob("*.txt")):
        key = f.stem.split("_")[0].lower()
        split = _SPLIT_ALIASES.get(key)
        if split is None:
            continue
        found = True
        try:
            lines = f.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark, any line ends
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read split list {f}: {exc}") from None
        for i, line in enumerate(lines, start=1):
            if line.strip() and not line.startswith("#"):
                _name(named, _normalise_id(line), split, f"{f}:{i}")
    if not found:
        raise DataError(f"split folder {folder} has no train*.txt / valid*.txt / test*.txt lists")
    return named


def _read_split_csv(path: Path) -> dict[str, str]:
    try:  # a spreadsheet's CSV export: a UTF-8 byte-order mark, CRLF line ends, padded header names
        rows = [{(k or "").strip().lower(): v for k, v in r.items()} for r in read_csv(path, encoding="utf-8-sig")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    if not rows or "split" not in rows[0] or not ({"track_id", "path"} & set(rows[0])):
        raise DataError(f"split file {path} needs columns track_id (or path) and split")
    named = {}
    for i, row in enumerate(rows, start=2):
        split = _SPLIT_ALIASES.get((row.get("split") or "").strip().lower())
        if split is None:
            raise DataError(f"{path}:{i}: unknown split {row.get('split')!r} "
                            "(use train, valid or test)")
        _name(named, _normalise_id(row.get("track_id") or row.get("path") or ""), split, f"{path}:{i}")
    return named


def read_split_source(source: str) -> tuple[dict[str, str], str]:
    """Read a builtin split name, a split CSV or a folder of split lists: {track_id: split}."""
    if source in BUILTIN_SPLITS:
        pkg = resources.files("genrekit.data_tools") / "splits_data" / BUILTIN_SPLITS[source]
        with resources.as_file(pkg) as folder:
            return _read_list_folder(Path(folder)), source
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"split file not found: {source} (or use one of: "
                        f"{', '.join(BUILTIN_SPLITS)})")
    if path.is_dir():
        return _read_list_folder(path), str(path)
    return _read_split_csv(path), str(path)


def split_from_source(tracks: list[Track], source: str, all_genres: list[str] | None = None) -> SplitResult:
    """Assign tracks to splits from a named split; report mismatches both ways.

    ``all_genres`` are the genres present in the data tree (before any ``--genres``
    filter): a user's split naming a genre outside them is an error (a typo or the wrong
    file); lines of genres that exist but were filtered out are ignored. A builtin split
    (GTZAN's) may name genres the tree lacks: they are reported as missing on disk.
    """
    named, label = read_split_source(source)
    present = {t.genre for t in tracks}
    known = set(all_genres) if all_genres else present
    unknown = sorted({tid.split("/", 1)[0] for tid in named} - known)
    if unknown and source not in BUILTIN_SPLITS:
        raise DataError(f"split {label} names genre(s) not in the data: {', '.join(unknown[:5])}"
                        f"{' …' if len(unknown) > 5 else ''}")
    named = {tid: s for tid, s in named.items()
             if tid.split("/", 1)[0] in present or tid.split("/", 1)[0] in unknown}
    on_disk = {t.track_id for t in tracks}
    assignment = {tid: s for tid, s in named.items() if tid in on_disk}
    if not assignment:
        raise DataError(f"no track of the data is named in split {label}")
    return SplitResult(assignment=assignment,
                       missing_on_disk=sorted(set(named) - on_disk),
                       unassigned=sorted(on_disk - set(named)),
                       source=label)


SPLITS_FIELDS = ["track_id", "genre", "split"]


def write_splits_csv(path, tracks: list[Track], split: SplitResult) -> bool:
    """Write ``splits.csv`` (track_id, genre, split) atomically; False when it was already identical."""
    genre = {t.track_id: t.genre for t in tracks}
    rows = [{"track_id": tid, "genre": genre[tid], "split": s}
            for tid, s in sorted(split.assignment.items())]
    return write_csv_atomic(path, rows, SPLITS_FIELDS)


def read_splits_csv(path) -> dict[str, str]:
    """``splits.csv`` read back: track id -> split."""
    return {r["track_id"]: r["split"] for r in read_csv(path)}
