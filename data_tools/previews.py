"""Preview audio for ``genrekit fetch-spotify``: where to find a 30 s preview, and how to get it.

Spotify's ``preview_url`` is used where it still exists; otherwise public preview sources are
looked up by ISRC or by artist and title (Deezer, iTunes). A preview URL is untrusted: only
``http``/``https`` URLs are fetched, redirects are checked hop by hop, the body is streamed to a
file in chunks under a size cap and within a whole-download deadline (see
:class:`genrekit.data_tools.spotify_client.Http`).
"""
from __future__ import annotations

import re
import unicodedata

from genrekit.data_tools.spotify_client import Http, Refused, endpoint, origin, printable

DEFAULT_MAX_PREVIEW_BYTES = 20_000_000
DEFAULT_PREVIEW_DEADLINE_S = 60.0


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s if isinstance(s, str) else "").encode("ascii", "ignore").decode().lower()
    s = re.sub(r"\(.*?\)|\[.*?\]| - .*$", "", s)  # (feat. x), [remastered], " - 2011 remaster"
    return re.sub(r"[^a-z0-9]+", " ", s).strip()


def _same_song(a_artist, a_title, b_artist, b_title) -> bool:
    return _norm(a_artist) == _norm(b_artist) and _norm(a_title) == _norm(b_title)


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def deezer_preview(http: Http, isrc: str, artist: str, title: str) -> str | None:
    """A 30 s preview URL from Deezer's public API, by ISRC, else by artist and title; None if none."""
    if isrc:
        d = http.json(f"{endpoint('GENREKIT_DEEZER_API')}track/isrc:{isrc}")
        if d and not d.get("error") and isinstance(d.get("preview"), str) and d["preview"]:
            return d["preview"]
    d = http.json(f"{endpoint('GENREKIT_DEEZER_API')}search", {"q": f'artist:"{artist}" track:"{title}"'})
    items = (d or {}).get("data")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("preview"), str) or not item["preview"]:
            continue
        a = item.get("artist")
        if _same_song(artist, title, _str(a.get("name")) if isinstance(a, dict) else "", _str(item.get("title"))):
            return item["preview"]
    return None


def itunes_preview(http: Http, isrc: str, artist: str, title: str) -> str | None:
    """A 30 s preview URL from the iTunes Search API matching artist and title; None if none."""
    d = http.json(f"{endpoint('GENREKIT_ITUNES_API')}search", {"term": f"{artist} {title}", "entity": "song", "limit": 10})
    items = (d or {}).get("results")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("previewUrl"), str) or not item["previewUrl"]:
            continue
        if _same_song(artist, title, _str(item.get("artistName")), _str(item.get("trackName"))):
            return item["previewUrl"]
    return None


RESOLVERS = {"deezer": deezer_preview, "itunes": itunes_preview}


def check_preview_url(url) -> None:
    """Raise :class:`Refused` unless ``url`` is an http(s) URL with a host."""
    if not isinstance(url, str) or origin(url) is None:
        scheme = url.split(":", 1)[0] if isinstance(url, str) and ":" in url else "scheme-less"
        raise Refused(f"preview URL with a {printable(scheme, 20)}: scheme refused (only http and https)")


def download_preview(http: Http, url: str, fh, max_bytes: int = DEFAULT_MAX_PREVIEW_BYTES,
                     deadline_s: float = DEFAULT_PREVIEW_DEADLINE_S) -> str:
    """Stream a preview into the open binary file ``fh``. Returns a file suffix for the decoder
    (``.m4a`` or ``.mp3``). Raises :class:`~genrekit.data_tools.spotify_client.NetworkError` (or its
    :class:`Refused`) with a one-line reason; ``fh`` may then hold a partial body."""
    check_preview_url(url)
    r = http.fetch(url, max_bytes=max_bytes, sink=fh, deadline_s=deadline_s)
    if r.status != 200:
        raise Refused(f"preview answered HTTP {r.status}")
    if r.n_bytes == 0:
        raise Refused("preview is empty")
    ctype = str(r.headers.get("Content-Type", ""))
    path = url.split("?", 1)[0].lower()
    return ".m4a" if path.endswith((".m4a", ".mp4", ".aac")) or "aac" in ctype or "mp4" in ctype else ".mp3"
