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

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genrekit.data_tools.audio import AUDIO_EXTENSIONS, file_kind
from genrekit.data_tools.errors import DataError

GTZAN_SUBFOLDERS = ("genres", "genres_original", "Data/genres_original", "data/genres_original")


@dataclass(frozen=True)
class Track:
    """One audio file of a data folder, with its genre (the genre folder it lies in)."""
    track_id: str  # "<genre>/<stem>"
    genre: str
    path: Path  # absolute, as seen under the data folder (symbolic links not resolved)

    @property
    def stem(self) -> str:
        """The track id without its genre.

        >>> Track("rock/song", "rock", Path("/music/rock/song.mp3")).stem
        'song'"""
        return self.track_id.split("/", 1)[1]


@dataclass
class Catalogue:
    """The tracks of a data folder and what the walk left out (``skipped``: (path, reason))."""

    root: Path
    tracks: list[Track]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _real(path: str | Path) -> str:
    return os.path.realpath(path)


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _walk_audio(folder: Path, chain: tuple[str, ...], skipped: list, root: Path) -> Iterator[Path]:
    """Audio files below ``folder`` as seen through it (links followed, paths not resolved).

    ``chain``: real paths of the folders walked to get here (the data root first). A folder
    link whose target is one of them or holds one of them (a loop, or a way back up the
    tree) is skipped and reported instead of followed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append((_rel(folder, root), f"cannot list folder: {exc.strerror or exc}"))
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        p = Path(e.path)
        try:
            is_dir = e.is_dir()  # follows links
            is_file = not is_dir and e.is_file()
            is_link = e.is_symlink()
        except OSError:
            is_dir = is_file = False
            is_link = True
        if is_dir:
            real = _real(p)
            if is_link and any(_inside(c, real) for c in chain):
                skipped.append((_rel(p, root), f"link loop: points back to {real}, an enclosing "
                                               "folder (not followed)"))
                continue
            yield from _walk_audio(p, chain + (real,), skipped, root)
        elif is_file:
            if p.suffix.lower() in AUDIO_EXTENSIONS:
                yield p
        elif is_link and not p.exists():
            skipped.append((_rel(p, root), "broken link (its target does not exist)"))
        elif p.suffix.lower() in AUDIO_EXTENSIONS:  # a FIFO, socket or device named like audio
            try:
                what = file_kind(p.stat().st_mode)
            except OSError as exc:
                skipped.append((_rel(p, root), f"cannot read file: {exc.strerror or exc}"))
                continue
            skipped.append((_rel(p, root), f"not a regular file ({what}); never opened"))


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _audio_files(folder: Path, skipped: list | None = None, root: Path | None = None,
                 chain: tuple[str, ...] = ()) -> list[Path]:
    skipped = [] if skipped is None else skipped
    return list(_walk_audio(folder, chain + (_real(folder),), skipped, root or folder))


def _has_audio(folder: Path, chain: tuple[str, ...]) -> bool:
    """True when ``folder`` holds an audio file (the walk stops at the first one)."""
    return next(_walk_audio(folder, chain + (_real(folder),), [], folder), None) is not None


def _genre_folders(root: Path) -> list[Path]:
    chain = (_real(root),)
    out = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if d.is_symlink() and any(_inside(c, _real(d)) for c in chain):
            continue  # a link back up the tree is not a genre (reported by scan_tracks)
        if _has_audio(d, chain):
            out.append(d)
    return out


def resolve_root(root: str | Path) -> Path:
    """Return the folder whose sub-folders are the genres, or raise :class:`DataError`.

    The path is made absolute but symbolic links are not resolved: track ids and output
    names come from paths as seen under the data folder."""
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    try:
        for sub in GTZAN_SUBFOLDERS:
            cand = root / sub
            if cand.is_dir() and _genre_folders(cand):
                return cand
        if _genre_folders(root):
            return root
        if _has_audio(root, ()):
            raise DataError(f"no genre sub-folders in {root}: put each genre's audio in its own "
                            "folder (ROOT/<genre>/<file>)")
    except OSError as exc:
        raise DataError(f"cannot read data folder {root}: {exc.strerror or exc}") from None
    raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}")


def scan_tracks(root: str | Path, genres: list[str] | None = None) -> Catalogue:
    """Walk a folder-per-genre tree: its tracks sorted by track id, and what was left out.

    Folder and file links are followed; a folder link back into an enclosing folder (a loop)
    is reported in ``skipped``, not followed, and so is a broken link. A file reached twice
    (two links to the same audio) is kept once, under its first track id, and the other is
    reported: the same audio under two ids could land in two splits or two genres."""
    base = resolve_root(root)
    skipped: list[tuple[str, str]] = []
    chain = (_real(base),)
    for d in sorted(base.iterdir()):
        if d.is_symlink() and d.is_dir() and any(_inside(c, _real(d)) for c in chain):
            skipped.append((d.name, f"link loop: points back to {_real(d)}, an enclosing folder "
                                    "(not followed)"))
    folders = {d.name: d for d in _genre_folders(base)}
    if genres:
        unknown = [g for g in genres if g not in folders]
        if unknown:
            raise DataError(f"unknown genre(s) {', '.join(unknown)}; the data has: "
                            f"{', '.join(sorted(folders))}")
        folders = {g: folders[g] for g in genres}
    tracks = []
    seen: dict[tuple[int, int], str] = {}
    for genre, folder in sorted(folders.items()):
        for f in _audio_files(folder, skipped, base, chain):
            rel = f.relative_to(folder).with_suffix("")
            tid = f"{genre}/{rel.as_posix()}"
            try:
                st = f.stat()
                key = (st.st_dev, st.st_ino)
            except OSError as exc:
                skipped.append((_rel(f, base), f"cannot read file: {exc.strerror or exc}"))
                continue
            if key in seen:
                skipped.append((_rel(f, base), f"same file as track {seen[key]} (reached twice "
                                               "through links); kept once"))
                continue
            seen[key] = tid
            tracks.append(Track(track_id=tid, genre=genre, path=f))
    tracks.sort(key=lambda t: t.track_id)
    ids = [t.track_id for t in tracks]
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise DataError(f"two files share the track id {dupes[0]} (same name, different "
                        "extension); keep one")
    return Catalogue(root=base, tracks=tracks, skipped=sorted(set(skipped)))


def find_tracks(root: str | Path, genres: list[str] | None = None) -> list[Track]:
    """List the tracks of a folder-per-genre tree, sorted by track id (see :func:`scan_tracks`)."""
    return scan_tracks(root, genres).tracks
