"""An out-of-domain test set from Spotify playlists (``genrekit fetch-spotify``).

For each genre: search playlists for the genre's name (Spotify's relevance order), collect
their tracks, get a 30 s preview — Spotify's ``preview_url`` where it still exists, else a
public preview source looked up by ISRC or by artist and title (Deezer, iTunes) — convert
it to 22,050 Hz mono WAV, and write ``spotify_manifest.csv``. Then clean the set:
duplicates by track id / ISRC / audio content are dropped, and tracks found under two
genres are dropped from both (as the MobileNet study did).

Network use: spotipy talks to the Web API with client-credentials auth (ids from
``SPOTIPY_CLIENT_ID`` / ``SPOTIPY_CLIENT_SECRET``; the token lives in memory only);
preview downloads honour HTTP 429 ``Retry-After``, retry transient errors with exponential
back-off, time out, and write atomically; a rerun skips what is already on disk.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_tools.errors import AudioDecodeError, DataError
from data_tools.fsio import read_csv, write_bytes_atomic, write_csv_atomic, write_text_atomic

MANIFEST = "spotify_manifest.csv"
FIELDS = ["track_id", "isrc", "artist", "title", "playlist", "genre", "preview_source", "file", "sha256",
          "status"]
PREVIEW_SOURCES = ("spotify", "deezer", "itunes")
SR = 22050
DROPPED = ".dropped"

# endpoints; the environment can point them elsewhere (a proxy, a mirror, or a test server)
ENDPOINTS = {
    "GENREKIT_SPOTIFY_API": "https://api.spotify.com/v1/",
    "GENREKIT_SPOTIFY_TOKEN_URL": "https://accounts.spotify.com/api/token",
    "GENREKIT_DEEZER_API": "https://api.deezer.com/",
    "GENREKIT_ITUNES_API": "https://itunes.apple.com/",
}


def endpoint(name: str) -> str:
    return os.environ.get(name) or ENDPOINTS[name]


# -- HTTP with retries -----------------------------------------------------------------------

class Http:
    """GET with a timeout, Retry-After on 429, exponential back-off on 5xx and connection errors."""

    def __init__(self, retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 15.0, max_wait_s: float = 60.0,
                 sleep=time.sleep):
        import requests

        self.session = requests.Session()
        self.session.headers["User-Agent"] = "genrekit (music genre research toolkit)"
        self.retries, self.backoff_s, self.timeout_s, self.max_wait_s = retries, backoff_s, timeout_s, max_wait_s
        self.sleep = sleep

    def get(self, url: str, params: dict | None = None):
        import requests

        last = ""
        for attempt in range(self.retries + 1):
            try:
                r = self.session.get(url, params=params, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}"
                self.sleep(self.backoff_s * 2 ** attempt)
                continue
            if r.status_code == 429:
                wait = _retry_after(r.headers.get("Retry-After"), self.backoff_s * 2 ** attempt)
                last = "HTTP 429"
                self.sleep(min(wait, self.max_wait_s))
                continue
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                self.sleep(self.backoff_s * 2 ** attempt)
                continue
            return r
        raise NetworkError(f"{url.split('?')[0]}: gave up after {self.retries + 1} tries ({last})")

    def json(self, url: str, params: dict | None = None) -> dict | None:
        r = self.get(url, params)
        if r.status_code != 200:
            return None
        try:
            return r.json()
        except ValueError:
            return None


class NetworkError(DataError):
    pass


def _retry_after(value, default: float) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


# -- preview resolvers -----------------------------------------------------------------------

def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s or "").encode("ascii", "ignore").decode().lower()
    s = re.sub(r"\(.*?\)|\[.*?\]| - .*$", "", s)  # (feat. x), [remastered], " - 2011 remaster"
    return re.sub(r"[^a-z0-9]+", " ", s).strip()


def _same_song(a_artist, a_title, b_artist, b_title) -> bool:
    return _norm(a_artist) == _norm(b_artist) and _norm(a_title) == _norm(b_title)


def deezer_preview(http: Http, isrc: str, artist: str, title: str) -> str | None:
    if isrc:
        d = http.json(f"{endpoint('GENREKIT_DEEZER_API')}track/isrc:{isrc}")
        if d and not d.get("error") and d.get("preview"):
            return d["preview"]
    d = http.json(f"{endpoint('GENREKIT_DEEZER_API')}search", {"q": f'artist:"{artist}" track:"{title}"'})
    for item in (d or {}).get("data", []) or []:
        if item.get("preview") and _same_song(artist, title, (item.get("artist") or {}).get("name", ""),
                                              item.get("title", "")):
            return item["preview"]
    return None


def itunes_preview(http: Http, isrc: str, artist: str, title: str) -> str | None:
    d = http.json(f"{endpoint('GENREKIT_ITUNES_API')}search", {"term": f"{artist} {title}", "entity": "song", "limit": 10})
    for item in (d or {}).get("results", []) or []:
        if item.get("previewUrl") and _same_song(artist, title, item.get("artistName", ""), item.get("trackName", "")):
            return item["previewUrl"]
    return None


RESOLVERS = {"deezer": deezer_preview, "itunes": itunes_preview}


# -- file names ------------------------------------------------------------------------------

def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name fragment with no path separators, no '..', no control characters."""
    s = unicodedata.normalize("NFKC", text or "")
    s = re.sub(r"[\x00-\x1f\x7f/\\:*?\"<>|]+", "_", s)
    s = re.sub(r"\.{2,}", ".", s).strip(" ._")
    return (s[:max_len].rstrip(" ._") or "untitled")


# -- the fetch -------------------------------------------------------------------------------

@dataclass
class FetchOptions:
    out: str
    genres: list[str]
    per_genre: int = 50
    playlists_per_genre: int = 5
    preview_sources: tuple[str, ...] = PREVIEW_SOURCES
    market: str | None = None
    log: object = None


@dataclass
class FetchReport:
    before: Counter = field(default_factory=Counter)
    after: Counter = field(default_factory=Counter)
    no_audio: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    duplicates: int = 0
    cross_genre: int = 0
    no_playlists: list[str] = field(default_factory=list)


def spotify_client():
    """A spotipy client from SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET (token kept in memory)."""
    import spotipy
    from spotipy.cache_handler import MemoryCacheHandler
    from spotipy.oauth2 import SpotifyClientCredentials

    cid, secret = os.environ.get("SPOTIPY_CLIENT_ID"), os.environ.get("SPOTIPY_CLIENT_SECRET")
    if not cid or not secret:
        raise DataError("Spotify credentials missing: set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET "
                        "(from a Spotify developer app) in the environment")
    auth = SpotifyClientCredentials(client_id=cid, client_secret=secret, cache_handler=MemoryCacheHandler(),
                                    requests_timeout=15)
    auth.OAUTH_TOKEN_URL = endpoint("GENREKIT_SPOTIFY_TOKEN_URL")
    sp = spotipy.Spotify(auth_manager=auth, requests_timeout=15, retries=5, status_retries=5, backoff_factor=0.5)
    sp.prefix = endpoint("GENREKIT_SPOTIFY_API")
    return sp


def _spotify_call(fn, *args, **kw):
    import requests
    from spotipy.exceptions import SpotifyException
    from spotipy.oauth2 import SpotifyOauthError

    try:
        return fn(*args, **kw)
    except SpotifyOauthError as exc:
        raise DataError(f"Spotify rejected the credentials ({getattr(exc, 'error', None) or 'token request failed'}); "
                        "check SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET") from None
    except SpotifyException as exc:
        raise NetworkError(f"Spotify API error {exc.http_status}: {str(exc.msg).splitlines()[-1].strip()}") from None
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError) as exc:
        raise NetworkError(f"cannot reach the Spotify API: {type(exc).__name__}") from None


def _genre_tracks(sp, genre: str, opts: FetchOptions) -> list[dict]:
    """Tracks of the first playlists Spotify finds for the genre's name (deduplicated by id)."""
    res = _spotify_call(sp.search, q=genre, type="playlist", limit=min(50, opts.playlists_per_genre),
                        market=opts.market)
    playlists = [p for p in ((res or {}).get("playlists") or {}).get("items", []) or [] if p]
    seen, out = set(), []
    for pl in playlists[: opts.playlists_per_genre]:
        page = _spotify_call(sp.playlist_items, pl["id"], additional_types=("track",), market=opts.market)
        while page:
            for item in page.get("items", []) or []:
                t = (item or {}).get("track")
                if not t or not t.get("id") or t.get("type", "track") != "track" or t["id"] in seen:
                    continue
                seen.add(t["id"])
                out.append({"track_id": t["id"], "isrc": (t.get("external_ids") or {}).get("isrc", ""),
                            "artist": ", ".join(a.get("name", "") for a in t.get("artists", []) if a),
                            "first_artist": (t.get("artists") or [{}])[0].get("name", ""),
                            "title": t.get("name", ""), "playlist": pl.get("name", ""),
                            "preview_url": t.get("preview_url"), "genre": genre})
            page = _spotify_call(sp.next, page) if page.get("next") else None
    if not playlists:
        return []
    return out


def _to_wav_bytes(audio_bytes: bytes, suffix: str) -> bytes:
    """Decode a preview (mp3/m4a/...) and re-encode it as 22,050 Hz mono PCM16 WAV bytes."""
    import tempfile

    import soundfile as sf

    from data_tools.audio import load_audio

    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(audio_bytes)
        tmp.flush()
        y = load_audio(tmp.name, sr=SR).y
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1, 1), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def fetch_spotify(opts: FetchOptions, sp=None, http: Http | None = None) -> FetchReport:
    log = opts.log or (lambda m: print(m, file=sys.stderr, flush=True))
    bad = [s for s in opts.preview_sources if s not in PREVIEW_SOURCES]
    if bad or not opts.preview_sources:
        raise DataError(f"unknown preview source(s) {', '.join(bad) or '(none)'} (known: {', '.join(PREVIEW_SOURCES)})")
    if not opts.genres:
        raise DataError("no genres given (--genres blues,classical,...)")
    out = Path(opts.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {out}: {exc.strerror or exc}") from None
    sp = sp or spotify_client()
    http = http or Http()
    manifest_path = out / MANIFEST
    done = {(r["genre"], r["track_id"]): r for r in read_csv(manifest_path)} if manifest_path.is_file() else {}
    rows = list(done.values())
    report = FetchReport()
    try:
        for genre in opts.genres:
            tracks = _genre_tracks(sp, genre, opts)
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
                if prev and (not prev["file"] or (out / prev["file"]).is_file() or
                             (out / DROPPED / prev["file"]).is_file()):
                    continue  # fetched (or found to have no audio) in an earlier run
                row = _fetch_one(t, out, http, opts, log)
                rows = [r for r in rows if (r["genre"], r["track_id"]) != key] + [row]
                done[key] = row
                if row["file"]:
                    have += 1
                    report.sources[row["preview_source"]] += 1
                write_csv_atomic(manifest_path, rows, FIELDS)  # resumable after every track
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(f"disk full while writing to {out}; what was fetched so far is kept "
                            "(free space and rerun to resume)") from None
        raise
    _clean(out, rows, report, log)
    write_csv_atomic(manifest_path, rows, FIELDS)
    write_text_atomic(out / "fetch_report.md", format_fetch_report(report, opts))
    return report


def _fetch_one(t: dict, out: Path, http: Http, opts: FetchOptions, log) -> dict:
    row = {k: t.get(k, "") for k in FIELDS}
    row.update(preview_source="", file="", sha256="", status="no audio")
    for source in opts.preview_sources:
        url = t.get("preview_url") if source == "spotify" else \
            RESOLVERS[source](http, t["isrc"], t["first_artist"], t["title"])
        if not url:
            continue
        try:
            r = http.get(url)
        except NetworkError as exc:
            log(f"{t['artist']} - {t['title']}: {source} preview: {exc}")
            continue
        if r.status_code != 200 or not r.content:
            continue
        suffix = ".m4a" if ".m4a" in url or "aac" in r.headers.get("Content-Type", "") else ".mp3"
        try:
            wav = _to_wav_bytes(r.content, suffix)
        except AudioDecodeError as exc:
            log(f"{t['artist']} - {t['title']}: {source} preview is not audio ({exc}); skipped")
            row["status"] = "preview not audio"
            continue
        rel = f"{safe_name(t['genre'], 40)}/{safe_name(t['first_artist'], 40)} - {safe_name(t['title'], 60)} [{t['track_id']}].wav"
        write_bytes_atomic(out / rel, wav)
        row.update(preview_source=source, file=rel, sha256=hashlib.sha256(wav).hexdigest(), status="ok")
        return row
    return row


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
    report.no_audio = Counter(r["genre"] for r in rows if not r["file"])


def _keys(r: dict) -> set:
    keys = {("id", r["track_id"]), ("sha", r["sha256"])}
    if r.get("isrc"):
        keys.add(("isrc", r["isrc"].upper()))
    return keys


def _place(out: Path, r: dict) -> None:
    """Kept files live in the genre folders; dropped ones under .dropped/ (ignored by augment)."""
    live, dead = out / r["file"], out / DROPPED / r["file"]
    src, dst = (dead, live) if r["status"] == "ok" else (live, dead)
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def format_fetch_report(rep: FetchReport, opts: FetchOptions) -> str:
    L = ["# genrekit fetch-spotify report", "",
         f"- preview sources, in order: {', '.join(opts.preview_sources)}",
         f"- previews by source: {', '.join(f'{k} {v}' for k, v in sorted(rep.sources.items())) or 'none this run'}",
         f"- duplicates dropped: {rep.duplicates}; tracks in several genres dropped (from all of them): {rep.cross_genre}",
         "", "| genre | with audio, before cleaning | after cleaning | tracks with no audio |", "| --- | --- | --- | --- |"]
    for g in opts.genres:
        L.append(f"| {g} | {rep.before[g]} | {rep.after[g]} | {rep.no_audio[g]} |")
    if rep.no_playlists:
        L += ["", f"No playlists found for: {', '.join(rep.no_playlists)}"]
    return "\n".join(L) + "\n"
