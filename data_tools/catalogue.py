"""Finding tracks in a folder-per-genre tree (GTZAN or a user's own collection).

Accepted layouts (the genre is the name of the folder under the root):

* ``ROOT/<genre>/**/<file>.(wav|au|mp3|flac|ogg)`` — any folder-per-genre tree;
* GTZAN as released, ``ROOT/genres/<genre>/<genre>.000NN.au``;
* the common Kaggle copy, ``ROOT/Data/genres_original/<genre>/<genre>.000NN.wav``
  (or ``ROOT/genres_original/...``).

A track id is ``<genre>/<path below the genre folder, without extension>``, e.g.
``blues/blues.00000`` — the same form as the lines of the fault-filtered GTZAN lists.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_tools.audio import AUDIO_EXTENSIONS
from data_tools.errors import DataError

GTZAN_SUBFOLDERS = ("genres", "genres_original", "Data/genres_original", "data/genres_original")


@dataclass(frozen=True)
class Track:
    track_id: str  # "<genre>/<stem>"
    genre: str
    path: Path  # absolute

    @property
    def stem(self) -> str:
        return self.track_id.split("/", 1)[1]


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def _genre_folders(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and _audio_files(d))


def resolve_root(root: str | Path) -> Path:
    """Return the folder whose sub-folders are the genres, or raise :class:`DataError`."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    for sub in GTZAN_SUBFOLDERS:
        cand = root / sub
        if cand.is_dir() and _genre_folders(cand):
            return cand.resolve()
    if _genre_folders(root):
        return root.resolve()
    if _audio_files(root):
        raise DataError(f"no genre sub-folders in {root}: put each genre's audio in its own "
                        "folder (ROOT/<genre>/<file>)")
    raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}")


def find_tracks(root: str | Path, genres: list[str] | None = None) -> list[Track]:
    """List the tracks of a folder-per-genre tree, sorted by track id."""
    base = resolve_root(root)
    folders = {d.name: d for d in _genre_folders(base)}
    if genres:
        unknown = [g for g in genres if g not in folders]
        if unknown:
            raise DataError(f"unknown genre(s) {', '.join(unknown)}; the data has: "
                            f"{', '.join(sorted(folders))}")
        folders = {g: folders[g] for g in genres}
    tracks = []
    for genre, folder in sorted(folders.items()):
        for f in _audio_files(folder):
            rel = f.relative_to(folder).with_suffix("")
            tracks.append(Track(track_id=f"{genre}/{rel.as_posix()}", genre=genre, path=f.resolve()))
    ids = [t.track_id for t in tracks]
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise DataError(f"two files share the track id {dupes[0]} (same name, different "
                        "extension); keep one")
    return tracks
