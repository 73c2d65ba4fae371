"""Atomic file writes: write to a temporary file in the same folder, then rename.

A killed process therefore leaves either the old file or the new one, never half of one.
(No fsync: the rename is atomic against a killed process, which is what resume needs;
syncing every one of thousands of small feature files costs more than it protects.)
Temporary names are ``.<name>.<pid>.genrekit-tmp`` (hidden, in the target's own folder, a
pattern no user file is likely to match); :func:`remove_stale_temporaries` clears only files of
that exact pattern, only in the folders it is given (below them only when asked). It is the one
stale-temporary cleanup: modules with a scheme of their own (run folders, the Spotify fetch, the
Beam runner) pass it a :class:`TempScheme` naming their pattern, and :func:`pid_alive` is the one
liveness check.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrekit.data_tools.errors import DataError

TMP_SUFFIX = ".genrekit-tmp"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.genrekit-tmp$")


def tmp_name(path: Path) -> Path:
    """The temporary beside ``path`` this process writes before renaming:
    ``.<name>.<pid>.genrekit-tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def is_temporary(name: str) -> bool:
    """True for a file name genrekit's atomic writes use as a temporary
    (``.<name>.<pid>.genrekit-tmp``)."""
    return bool(_TMP_RE.match(name))


@contextmanager
def atomic_path(path, tmp: Path | None = None):
    """Yield a temporary path (default ``.<name>.<pid>.genrekit-tmp`` beside ``path``; a module
    with a scheme of its own passes ``tmp``, in the same file system) for the caller to write;
    it is renamed onto ``path`` when the block completes and removed when the block fails, so
    ``path`` is either its old self or complete."""
    path = Path(path)
    tmp = tmp_name(path) if tmp is None else Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path) -> None:
    """Delete the file ``path`` if it is there (a temporary being given up: errors are ignored)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def write_bytes_atomic(path: str | os.PathLike, data: bytes, only_if_changed: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically. Returns True when the file was (re)written."""
    path = Path(path)
    if only_if_changed and path.is_file():
        try:
            if path.read_bytes() == data:
                return False
        except OSError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return True


def write_text_atomic(path, text: str, only_if_changed: bool = True) -> bool:
    """Write ``text`` as UTF-8 to ``path`` atomically (by default only when it changed)."""
    return write_bytes_atomic(path, text.encode("utf-8"), only_if_changed=only_if_changed)


def write_json_atomic(path, obj, only_if_changed: bool = True) -> bool:
    """Write ``obj`` as indented JSON with sorted keys to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return write_text_atomic(path, text, only_if_changed)


def write_csv_atomic(path, rows: list[dict], fieldnames: list[str],
                     only_if_changed: bool = True) -> bool:
    """Write ``rows`` as CSV (``fieldnames`` in that order, ``\\n`` line ends) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return write_text_atomic(path, buf.getvalue(), only_if_changed)


def loads_json(text: str | bytes):
    """``json.loads`` for text read from a file or the network: a document nested too deeply for
    Python's parser (``[[[[...`` 100,000 deep raises RecursionError) is a ValueError like any
    other malformed JSON, so callers refuse it in one line."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def read_csv(path, encoding: str = "utf-8") -> list[dict]:
    """The rows of a CSV file as dicts (any line ends: CRLF from a spreadsheet too);
    ``encoding="utf-8-sig"`` also takes the byte-order mark a spreadsheet's export puts first."""
    with open(path, newline="", encoding=encoding) as fh:
        return list(csv.DictReader(fh))


def csv_header(path) -> list[str]:
    """The column names on an existing CSV file's first line; ``[]`` when it cannot be read as text
    (how a command recognises a table it wrote before replacing it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return []


def save_npy_atomic(path, array: np.ndarray) -> None:
    """Save ``array`` as a .npy file (no pickles) atomically."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def save_png_atomic(path, image: np.ndarray) -> None:
    """Save a 2-D uint8 array as an 8-bit grayscale (mode "L") PNG (zlib level 3: the same
    pixels as Pillow's default level 6, encoded faster, files a little larger)."""
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", compress_level=3)
    write_bytes_atomic(path, buf.getvalue())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be writing its temporaries: this process itself, or
    one ``os.kill(pid, 0)`` finds (one of another user's too). A pid reused by an unrelated
    process only delays a cleanup. Where there is no such check (not POSIX: there signal 0 is
    a console Ctrl-C) every pid counts as alive, so nothing in flight is ever removed."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # PermissionError: exists, someone else's
        return True
    return True


def remove_file(path: Path, match: re.Match) -> int:
    """A stale temporary that is a plain file (never a link, never a folder) is deleted: 1,
    else 0."""
    if path.is_symlink() or not path.is_file():
        return 0
    try:
        os.unlink(path)
    except OSError:
        return 0
    return 1


@dataclass(frozen=True)
class TempScheme:
    """One on-disk naming scheme for temporaries: ``pattern`` matches a whole name, its group
    ``pid`` is the writing process (group ``name``, where the scheme has one, the final name);
    ``remove`` handles an entry of a process that is gone and says how many it removed."""
    pattern: re.Pattern
    remove: Callable[[Path, re.Match], int] = remove_file


ATOMIC_FILES = TempScheme(_TMP_RE)  # what atomic_path writes: .<name>.<pid>.genrekit-tmp


def remove_stale_temporaries(folder, recursive: bool = False, of: str | None = None,
                             schemes: tuple[TempScheme, ...] = (ATOMIC_FILES,)) -> int:
    """Remove temporaries a killed run left in ``folder`` (and below it if ``recursive``: pass
    only folders genrekit itself writes): only entries named by one of ``schemes`` (default:
    the files :func:`tmp_name` names) whose process is gone (a concurrent shard's writes in
    flight are left alone), never a user's file, never through a link; with ``of``, only the
    temporaries of that one final name (what a command writing one file into a user's folder
    may clean). Returns how many were removed."""
    n = 0
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return 0
    for e in entries:
        if recursive and e.is_dir(follow_symlinks=False):
            n += remove_stale_temporaries(e.path, recursive=True, of=of, schemes=schemes)
            continue
        for scheme in schemes:
            m = scheme.pattern.match(e.name)
            if m and (of is None or m.group("name") == of):
                if not pid_alive(int(m.group("pid"))):
                    n += scheme.remove(Path(e.path), m)
                break
    return n


def check_writable(folder) -> None:
    """Create ``folder`` if needed and prove a file can be written there. On failure, folders
    this call created are removed again (nothing is left behind)."""
    folder = Path(folder)
    created = []
    p = folder
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tmp_name(folder / "write-probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                pass
        raise DataError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None


def own_folder_marker(folder, marker: str, flag: str, command: str) -> dict | None:
    """The one rule for an output folder a command writes into: it is new, empty (genrekit's
    own temporaries aside), or holds ``marker``, a JSON object the command itself wrote there
    (returned). A link, a file, or a folder holding anything else without it is refused, so
    a user's folder is never written into; file names alone prove nothing."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise DataError(f"{flag} {folder} is a broken symbolic link; choose a new {flag}")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{flag} {folder} exists and is not a folder; choose a new {flag}")
    try:
        names = [n for n in os.listdir(folder) if not is_temporary(n)] if folder.is_dir() else []
    except OSError as exc:
        raise DataError(f"cannot read {flag} {folder}: {exc.strerror or exc}") from None
    if not names:
        return None
    try:
        doc = loads_json((folder / marker).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict) or (folder / marker).is_symlink():
        raise DataError(f"{flag} {folder} is a folder that {command} did not make (no {marker}); "
                        "genrekit does not write into folders it did not make: choose a new or "
                        f"empty {flag}")
    return doc


def check_no_links(root, folders, flag: str = "--out", files=()) -> None:
    """Refuse, in one line, to write below ``root`` when one of ``folders`` (paths relative to
    ``root``) is reached through a symbolic link or is not a folder, or one of ``files`` is a
    link or a file made read-only: genrekit never writes through a link planted inside its
    output folder, nor replaces a file someone protected."""
    root = Path(root)
    for rel in files:
        if (root / rel).is_symlink():
            raise DataError(f"{root / rel} is a symbolic link inside {flag} {root}; genrekit does "
                            f"not write through links: remove it or choose a new {flag}")
        if (root / rel).is_file() and not (root / rel).stat().st_mode & stat.S_IWUSR:
            raise DataError(f"{root / rel} is read-only; genrekit does not replace a file made "
                            f"read-only: make it writable or choose a new {flag}")
    seen: set[Path] = set()
    for rel in folders:
        p = root
        for part in Path(rel).parts:
            p = p / part
            if p in seen:
                continue
            seen.add(p)
            if p.is_symlink():
                raise DataError(f"{p} is a symbolic link inside {flag} {root}; genrekit does not "
                                f"write through links: remove it or choose a new {flag}")
            if not p.exists():
                break
            if not p.is_dir():
                raise DataError(f"{p} is in the way inside {flag} {root} (a file where genrekit "
                                f"writes a folder); remove it or choose a new {flag}")
