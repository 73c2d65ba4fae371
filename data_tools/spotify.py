"""An out-of-domain test set from Spotify playlists (``genrekit fetch-spotify``): the set builder.

For each genre: search playlists for the genre's name (Spotify's relevance order), collect
their tracks, get a 30 s preview — Spotify's ``preview_url`` where it still exists, else a
public preview source looked up by ISRC or by artist and title (Deezer, iTunes; see
:mod:`genrekit.data_tools.previews`) — convert it to 22,050 Hz mono WAV, and write
``spotify_manifest.csv``. Then clean the set: duplicates by track id / ISRC / audio content are
dropped, and tracks found under two genres are dropped from both (as the MobileNet study did).

Everything from the network is untrusted (:mod:`genrekit.data_tools.spotify_client`): a track or
playlist id that is not a Spotify id (22 base62 characters) is refused with a report line and
never reaches a file name; every output path is checked to lie under ``--out``; a preview that is
refused (bad scheme or redirect, over the size cap, past the deadline, cut short) or is not
audio is one skipped track, reported, and the fetch goes on with the rest.

Files: downloads and every other temporary live only in ``OUT/.genrekit-tmp/`` under names
``<stem>.<pid>.genrekit-part[.ext]`` and are renamed into place when complete; a rerun removes
such files left by a killed fetch (only those: nothing else there is touched) and skips what is
already on disk. ``fetch_report.md`` describes the whole set on disk, every run so far.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from genrekit.data_tools.audio import load_audio
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import TempScheme, atomic_path, read_csv, unlink_quietly
from genrekit.data_tools.fsio import remove_stale_temporaries as fsio_remove_stale
from genrekit.data_tools.previews import (
    DEFAULT_MAX_PREVIEW_BYTES,
    DEFAULT_PREVIEW_DEADLINE_S,
    RESOLVERS,
    download_preview,
)
from genrekit.data_tools.spotify_client import (
    ENDPOINTS,
    Http,
    NetworkError,
    Refused,
    SpotifyApi,
    endpoint,
    is_spotify_id,
    printable,
    spotify_api,
)

__all__ = ["FetchOptions", "FetchReport", "fetch_spotify", "format_fetch_report", "safe_name",
           "track_file", "Http", "NetworkError", "Refused", "SpotifyApi", "ENDPOINTS", "endpoint",
           "MANIFEST", "REPORT", "TMP_DIR"]

MANIFEST = "spotify_manifest.csv"
REPORT = "fetch_report.md"
FIELDS = ["track_id", "isrc", "artist", "title", "playlist", "genre", "preview_source", "file",
          "sha256", "status"]
PREVIEW_SOURCES = ("spotify", "deezer", "itunes")
SR = 22050
MAX_PREVIEW_S = 120.0  # previews are 30 s; decode no more than this of whatever arrives
DROPPED = ".dropped"
TMP_DIR = ".genrekit-tmp"
TMP_MARK = ".genrekit-part"
# <stem>.<pid>.genrekit-part[.ext]
_TMP_SCHEME = TempScheme(re.compile(r"[0-9A-Za-z_]+\.(?P<pid>\d+)" + re.escape(TMP_MARK)
                                    + r"(\.[a-z0-9]{1,4})?\Z"))
_ISRC = re.compile(r"[A-Za-z0-9]{12}")
MAX_LISTED = 200  # report lines per list


# -- file names and paths --------------------------------------------------------------------

# one path component, in bytes of UTF-8 (ext4, XFS, btrfs, APFS; NTFS: 255 UTF-16 units)
NAME_MAX_BYTES = 255
# replaced in names: control characters (C0, DEL, C1), lone surrogates (no UTF-8 for them), line and
# paragraph separators, bidirectional overrides and isolates (they make a listing lie about a
# name), the path separators and what Windows refuses in a name
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069"
                     "/\\\\:*?\"<>|]+")


def _cut_bytes(s: str, max_bytes: int) -> str:
    """The longest prefix of ``s`` whose UTF-8 is at most ``max_bytes`` bytes (never half a
    character)."""
    b = s.encode("utf-8")
    return s if len(b) <= max_bytes else b[:max_bytes].decode("utf-8", "ignore")


def safe_name(text: str, max_len: int = 80, max_bytes: int = NAME_MAX_BYTES) -> str:
    """A file-name fragment with no path separators, no '..', no control characters, at most
    ``max_len`` characters and ``max_bytes`` bytes of UTF-8; letters of any script are kept."""
    s = unicodedata.normalize("NFKC", text if isinstance(text, str) else "")
    s = _UNSAFE.sub("_", s)
    s = re.sub(r"\.{2,}", ".", s).strip(" ._")
    return (_cut_bytes(s[:max_len], max_bytes).rstrip(" ._") or "untitled")


def track_file(genre: str, artist: str, title: str, track_id: str) -> str:
    """``<genre>/<artist> - <title> [<track id>].wav``: the id keeps names unique, and the file
    name is at most NAME_MAX_BYTES bytes of UTF-8 however long (or however wide the script of)
    the artist and title the API sent."""
    tail = f" [{track_id}].wav"
    budget = NAME_MAX_BYTES - len(tail.encode("utf-8")) - len(" - ")
    a = safe_name(artist, 40, budget // 3)
    t = safe_name(title, 60, budget - len(a.encode("utf-8")))
    return f"{safe_name(genre, 40)}/{a} - {t}{tail}"


def plain_track_file(genre: str, track_id: str) -> str:
    """The fallback name where the file system refuses the full one: ``<genre>/<track id>.wav``."""
    return f"{safe_name(genre, 40)}/{track_id}.wav"


def _inside(out: Path, path: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies strictly under ``out``."""
    root = os.path.realpath(out)
    return os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep)


def _safe_rel(out: Path, rel) -> bool:
    """A manifest ``file`` value: relative, no '..', and under ``out`` (and its .dropped/)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    p = Path(rel)
    if (p.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/"))
            or p.parts[0] in (DROPPED, TMP_DIR)):
        return False
    return _inside(out, out / p) and _inside(out, out / DROPPED / p)


def _tmp_path(out: Path, stem: str) -> Path:
    folder = out / TMP_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise DataError(f"{folder} is not a folder genrekit made (a link or a file); move it away")
    folder.mkdir(exist_ok=True)
    return folder / f"{stem}.{os.getpid()}{TMP_MARK}"


def write_atomic(out: Path, rel: str, data: bytes) -> None:
    """Write ``out/rel`` complete-or-absent: into OUT/.genrekit-tmp/, then rename into place."""
    dest = out / rel
    if not _inside(out, dest):
        raise DataError(f"refusing to write outside {out}: {printable(rel)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(out, re.sub(r"[^0-9A-Za-z_]", "_", Path(rel).stem)[:40] or "file")
    with atomic_path(dest, tmp=tmp) as work, open(work, "wb") as fh:
        fh.write(data)


def remove_stale_temporaries(out: Path) -> int:
    """Delete the temporaries a killed fetch left in OUT/.genrekit-tmp/ (genrekit's own name
    pattern, from processes no longer running). Anything else there is left alone."""
    folder = out / TMP_DIR
    if not folder.is_dir() or folder.is_symlink():
        return 0
    return fsio_remove_stale(folder, schemes=(_TMP_SCHEME,))


def _drop_tmp_dir(out: Path) -> None:
    try:
        (out / TMP_DIR).rmdir()  # only when empty
    except OSError:
        pass


# -- options and report ----------------------------------------------------------------------

@dataclass
class FetchOptions:
    """``genrekit fetch-spotify``'s options: the output folder, genres, tracks and playlists
    per genre, preview sources, market, log, and the preview size and time limits."""
    out: str
    genres: list[str]
    per_genre: int = 50
    playlists_per_genre: int = 5
    preview_sources: tuple[str, ...] = PREVIEW_SOURCES
    market: str | None = None
    log: object = None
    max_preview_bytes: int = DEFAULT_MAX_PREVIEW_BYTES
    preview_deadline_s: float = DEFAULT_PREVIEW_DEADLINE_S


@dataclass
class FetchReport:
    """The whole set on disk (cumulative over runs), plus what this run refused."""
    genres: list[str] = field(default_factory=list)
    preview_sources: tuple[str, ...] = ()
    before: Counter = field(default_factory=Counter)
    after: Counter = field(default_factory=Counter)
    no_audio: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)  # kept previews by source
    duplicates: int = 0
    cross_genre: int = 0
    skipped_tracks: list[str] = field(default_factory=list)
    # this run: ids, links and manifest rows refused
    refused: list[str] = field(default_factory=list)
    no_playlists: list[str] = field(default_factory=list)
    fetched_now: int = 0


# -- the fetch -------------------------------------------------------------------------------

def _check_options(opts: FetchOptions) -> None:
    bad = [s for s in opts.preview_sources if s not in PREVIEW_SOURCES]
    if bad or not opts.preview_sources:
        named = ", ".join(printable(b, 20) for b in bad) or "(none)"
        raise DataError(f"unknown preview source(s) {named} (known: {', '.join(PREVIEW_SOURCES)})")
    if not opts.genres:
        raise DataError("no genres given (--genres blues,classical,...)")
    if opts.per_genre < 1 or opts.playlists_per_genre < 1:
        raise DataError("--per-genre and --playlists must be at least 1")
    if not (opts.max_preview_bytes >= 1):
        raise DataError("the preview size cap must be positive")
    if not (0 < opts.preview_deadline_s < float("inf")):
        raise DataError("the preview deadline must be a positive number of seconds")
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")


def fetch_spotify(opts: FetchOptions, api: SpotifyApi | None = None,
                  http: Http | None = None) -> FetchReport:
    """Build or resume the set in ``opts.out`` (see the module's description); the report of
    the whole set on disk."""
    log = opts.log or (lambda m: print(m, file=sys.stderr, flush=True))
    _check_options(opts)
    out = Path(opts.out)
    http = http or Http()
    api = api or spotify_api(http)
    api.bearer()  # credentials are checked before anything is created
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {out}: {exc.strerror or exc}") from None
    report = FetchReport(genres=list(opts.genres), preview_sources=tuple(opts.preview_sources))
    stale = remove_stale_temporaries(out)
    if stale:
        log(f"removed {stale} temporary file(s) left by an interrupted fetch")
    try:
        return _fetch_into(out, opts, api, http, report, log)
    finally:
        _drop_tmp_dir(out)


def _fetch_into(out: Path, opts: FetchOptions, api: SpotifyApi, http: Http, report: FetchReport,
                log) -> FetchReport:
    rows = _load_manifest(out, report, log)
    done = {(r["genre"], r["track_id"]): r for r in rows}
    try:
        for genre in opts.genres:
            tracks = _genre_tracks(api, genre, opts, report, log)
            if not tracks:
                report.no_playlists.append(genre)
                log(f"genre {genre}: Spotify found no playlists (or no tracks) for it; skipped")
                continue
            have = sum(1 for r in rows if r["genre"] == genre and r["file"])
            for t in tracks:
                if have >= opts.per_genre:
                    break
                key = (genre, t["track_id"])
                prev = done.get(key)
                if prev and not prev["status"].startswith("failed") and (
                        not prev["file"] or (out / prev["file"]).is_file()
                        or (out / DROPPED / prev["file"]).is_file()):
                    continue  # fetched, found to have no audio, or skipped, in an earlier run
                row = _fetch_one(t, out, http, opts, log)
                rows = [r for r in rows if (r["genre"], r["track_id"]) != key] + [row]
                done[key] = row
                if row["file"]:
                    have += 1
                    report.fetched_now += 1
                _write_manifest(out, rows)  # resumable after every track
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"disk full while writing to {out}; what was fetched so far is kept "
                            "(free space and rerun to resume)") from None
        raise
    _clean(out, rows, report, log)
    _write_manifest(out, rows)
    write_atomic(out, REPORT, format_fetch_report(report, opts).encode("utf-8"))
    return report


def _load_manifest(out: Path, report: FetchReport, log) -> list[dict]:
    path = out / MANIFEST
    if not path.is_file():
        return []
    try:
        raw = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}; move it away to start the set "
                        "afresh") from None
    rows: dict = {}
    for r in raw:
        r = {k: (r.get(k) or "") if isinstance(r.get(k), str) else "" for k in FIELDS}
        if (not is_spotify_id(r["track_id"]) or not r["genre"]
                or (r["file"] and not _safe_rel(out, r["file"]))):
            msg = (f"{MANIFEST}: row for track {printable(r['track_id'], 40)} ignored (not a "
                   "Spotify id, or a file outside the set)")
            report.refused.append(msg)
            log(msg)
            continue
        rows[(r["genre"], r["track_id"])] = r
    return list(rows.values())


def _write_manifest(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_atomic(out, MANIFEST, buf.getvalue().encode("utf-8"))


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _refuse(report: FetchReport, log, msg: str) -> None:
    report.refused.append(msg)
    log(msg)


def _genre_tracks(api: SpotifyApi, genre: str, opts: FetchOptions, report: FetchReport,
                  log) -> list[dict]:
    """Tracks of the first playlists Spotify finds for the genre's name (deduplicated by id)."""
    playlists = api.search_playlists(genre, opts.playlists_per_genre, opts.market)
    seen, out = set(), []
    for pl in playlists[: opts.playlists_per_genre]:
        pid = pl.get("id")
        if not is_spotify_id(pid):
            _refuse(report, log, f"genre {genre}: playlist id {printable(pid, 40)} is not a "
                                 "Spotify id; skipped")
            continue
        refused: list[str] = []
        for page in api.playlist_pages(pid, opts.market, refused=refused):
            items = page.get("items")
            for item in items if isinstance(items, list) else []:
                t = item.get("track") if isinstance(item, dict) else None
                # an episode, a local file, a removed track: not a track
                if (not isinstance(t, dict) or t.get("type", "track") != "track"
                        or t.get("id") is None):
                    continue
                tid = t.get("id")
                if not is_spotify_id(tid):
                    _refuse(report, log, f"genre {genre}: track id {printable(tid, 40)} is not a "
                                         "Spotify id (22 letters and digits); skipped")
                    continue
                if tid in seen:
                    continue
                seen.add(tid)
                artists = [a for a in t.get("artists") or [] if isinstance(a, dict)] \
                    if isinstance(t.get("artists"), list) else []
                ext = t.get("external_ids") if isinstance(t.get("external_ids"), dict) else {}
                isrc = _str(ext.get("isrc"))
                out.append({"track_id": tid, "isrc": isrc if _ISRC.fullmatch(isrc) else "",
                            "artist": ", ".join(_str(a.get("name")) for a in artists),
                            "first_artist": _str(artists[0].get("name")) if artists else "",
                            "title": _str(t.get("name")), "playlist": _str(pl.get("name")),
                            "preview_url": t.get("preview_url"), "genre": genre})
        for msg in refused:
            _refuse(report, log, f"genre {genre}: {msg}")
    return out


def _decode_to_wav(path: Path) -> bytes:
    """Decode a downloaded preview (mp3/m4a/...) to 22,050 Hz mono PCM16 WAV bytes."""
    y = load_audio(path, sr=SR, duration_s=MAX_PREVIEW_S).y
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1, 1), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _fetch_one(t: dict, out: Path, http: Http, opts: FetchOptions, log) -> dict:
    row = {k: t.get(k, "") for k in FIELDS}
    row.update(preview_source="", file="", sha256="", status="no audio")
    label = f"{printable(t['artist'])} - {printable(t['title'])} [{t['track_id']}]"
    problems: list[tuple[str, bool]] = []  # (reason, transient)
    for source in opts.preview_sources:
        try:
            url = t.get("preview_url") if source == "spotify" else \
                RESOLVERS[source](http, t["isrc"], t["first_artist"], t["title"])
        except NetworkError as exc:
            problems.append((f"{source} lookup: {exc}", not isinstance(exc, Refused)))
            log(f"{label}: {source} lookup: {exc}")
            continue
        if not url:
            continue
        tmp = _tmp_path(out, t["track_id"])
        audio = tmp
        try:
            try:
                with open(tmp, "wb") as fh:
                    suffix = download_preview(http, url, fh, opts.max_preview_bytes,
                                              opts.preview_deadline_s)
                audio = tmp.with_name(tmp.name + suffix)
                os.replace(tmp, audio)
                wav = _decode_to_wav(audio)
            except NetworkError as exc:
                problems.append((f"{source} preview: {exc}", not isinstance(exc, Refused)))
                log(f"{label}: {source} preview skipped: {exc}")
                continue
            except DataError as exc:  # not audio, too long, ...
                why = printable(str(exc), 80)
                problems.append((f"{source} preview is not audio ({why})", False))
                log(f"{label}: {source} preview is not audio ({exc}); skipped")
                continue
        finally:
            unlink_quietly(tmp)
            unlink_quietly(audio)
        rel, problem = _write_track(out, t, wav)
        if rel is None:  # this track's file cannot be written: one failed track, retried by a rerun
            log(f"{label}: {problem}; skipped")
            row["status"] = f"failed: {problem}"[:300]
            return row
        row.update(preview_source=source, file=rel, sha256=hashlib.sha256(wav).hexdigest(),
                   status="ok")
        return row
    if problems:
        transient = any(tr for _, tr in problems)
        why = "; ".join(p for p, _ in problems)[:300]
        row["status"] = ("failed: " if transient else "skipped: ") + why
    return row


def _write_track(out: Path, t: dict, wav: bytes) -> tuple[str | None, str]:
    """Write a track's WAV under its full name, else (a file system that refuses the name: too
    long, or not in its encoding) under ``<genre>/<track id>.wav``. Returns (the name written,
    "") or (None, why not) for an error of this one file; a full disk is raised (every track
    would fail)."""
    full = track_file(t["genre"], t["first_artist"], t["title"], t["track_id"])
    problem = ""
    for rel in dict.fromkeys((full, plain_track_file(t["genre"], t["track_id"]))):
        try:
            write_atomic(out, rel, wav)
            return rel, ""
        except UnicodeEncodeError:
            problem = f"cannot write {printable(rel)}: the file system's encoding has no such name"
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            problem = f"cannot write {printable(rel)}: {exc.strerror or exc}"
            if exc.errno not in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
                break  # not the name's fault: another name would fail the same way
    return None, problem


def _clean(out: Path, rows: list[dict], report: FetchReport, log) -> None:
    """Drop duplicates (track id, ISRC, audio content) and tracks found under two genres."""
    have = [r for r in rows if r["file"]]
    report.before = Counter(r["genre"] for r in have)
    genres_of = defaultdict(set)
    for r in have:
        for key in _keys(r):
            genres_of[key].add(r["genre"])
    kept_keys: set = set()
    for r in sorted(have, key=lambda r: (r["genre"], r["track_id"])):
        keys = _keys(r)
        if any(len(genres_of[k]) > 1 for k in keys):
            r["status"] = "dropped: in several genres"
            report.cross_genre += 1
        elif keys & kept_keys:
            r["status"] = "dropped: duplicate"
            report.duplicates += 1
        else:
            r["status"] = "ok"
            kept_keys |= keys
        _place(out, r)
    report.after = Counter(r["genre"] for r in have if r["status"] == "ok")
    report.sources = Counter(r["preview_source"] for r in have if r["status"] == "ok")
    missing = [r for r in rows if not r["file"]]
    report.no_audio = Counter(r["genre"] for r in missing if r["status"] == "no audio")
    report.skipped = Counter(r["genre"] for r in missing if r["status"] != "no audio")
    report.skipped_tracks = [f"{r['genre']}: {printable(r['artist'])} - {printable(r['title'])} "
                             f"[{r['track_id']}]: {printable(r['status'], 300)}"
                             for r in rows if not r["file"] and r["status"] != "no audio"]
    for g in sorted({r["genre"] for r in rows} - set(report.genres)):
        report.genres.append(g)


def _keys(r: dict) -> set:
    keys = {("id", r["track_id"]), ("sha", r["sha256"])}
    if r.get("isrc"):
        keys.add(("isrc", r["isrc"].upper()))
    return keys


def _place(out: Path, r: dict) -> None:
    """Kept files live in the genre folders; dropped ones under .dropped/ (ignored by augment)."""
    live, dead = out / r["file"], out / DROPPED / r["file"]
    if not (_inside(out, live) and _inside(out, dead)):
        return
    src, dst = (dead, live) if r["status"] == "ok" else (live, dead)
    if src.is_file() and not src.is_symlink():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def _listed(lines: list[str]) -> list[str]:
    shown = [f"- {s}" for s in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"- ... and {len(lines) - MAX_LISTED} more")
    return shown


def format_fetch_report(rep: FetchReport, opts: FetchOptions | None = None) -> str:
    """``fetch_report.md``: the set's counts by genre, then what was skipped and refused."""
    sources = rep.preview_sources or (opts.preview_sources if opts else ())
    kept = ", ".join(f"{k} {v}" for k, v in sorted(rep.sources.items())) or "none"
    L = ["# genrekit fetch-spotify report", "",
         "The whole set on disk (every run so far); refusals are this run's.", "",
         f"- preview sources, in order: {', '.join(sources)}",
         f"- kept previews by source: {kept}",
         f"- duplicates dropped: {rep.duplicates}; tracks in several genres dropped (from all of "
         f"them): {rep.cross_genre}",
         "", "| genre | with audio, before cleaning | after cleaning | tracks with no audio "
             "| skipped or failed |",
         "| --- | --- | --- | --- | --- |"]
    for g in rep.genres:
        L.append(f"| {printable(g, 40)} | {rep.before[g]} | {rep.after[g]} | {rep.no_audio[g]} "
                 f"| {rep.skipped[g]} |")
    if rep.no_playlists:
        none_found = ", ".join(printable(g, 40) for g in rep.no_playlists)
        L += ["", f"No playlists found for: {none_found}"]
    if rep.skipped_tracks:
        L += ["", "## Skipped or failed tracks (failed ones are retried by a rerun)", "",
              *_listed(rep.skipped_tracks)]
    if rep.refused:
        L += ["", "## Refused this run", "", *_listed(list(dict.fromkeys(rep.refused)))]
    return "\n".join(L) + "\n"
