"""``genrekit fetch-spotify``: an out-of-domain test set from Spotify playlists."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrekit.options import names, positive_float


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``fetch-spotify`` parser."""
    fs = sub.add_parser("fetch-spotify",
                        help="build an out-of-domain test set from Spotify playlists",
                        description="Search Spotify playlists per genre, download 30 s previews "
                                    "(Spotify's, else Deezer's or iTunes' by ISRC / artist and "
                                    "title), convert to 22,050 Hz mono WAV, deduplicate, drop "
                                    "cross-genre tracks. Needs SPOTIPY_CLIENT_ID and "
                                    "SPOTIPY_CLIENT_SECRET in the environment.")
    fs.add_argument("--out", required=True, help="folder for the set (resumable)")
    fs.add_argument("--genres", type=names, required=True,
                    help="comma-separated genre names to search for")
    fs.add_argument("--per-genre", type=int, default=50,
                    help="tracks with audio per genre (default 50)")
    fs.add_argument("--playlists", type=int, default=5, help="playlists per genre (default 5)")
    fs.add_argument("--preview-source", type=names, default=("spotify", "deezer", "itunes"),
                    help="where to look for a preview, in order (default spotify,deezer,itunes)")
    fs.add_argument("--market", default=None, help="ISO country code for Spotify (optional)")
    fs.add_argument("--max-preview-mb", type=positive_float, default=20.0,
                    help="refuse a preview larger than this many megabytes (default 20)")
    fs.add_argument("--preview-deadline-seconds", type=positive_float, default=60.0,
                    help="wall-clock limit for one preview download, redirects and retries "
                         "included (default 60); a slower preview is skipped and reported")
    return fs


def run(a) -> int:
    """Fetch the set; exit 2 when no track with audio was fetched."""
    from genrekit.data_tools.spotify import FetchOptions, fetch_spotify, format_fetch_report

    opts = FetchOptions(out=a.out, genres=list(a.genres), per_genre=a.per_genre,
                        playlists_per_genre=a.playlists, preview_sources=a.preview_source,
                        market=a.market,
                        max_preview_bytes=int(a.max_preview_mb * 1_000_000),
                        preview_deadline_s=a.preview_deadline_seconds)
    rep = fetch_spotify(opts)
    print(format_fetch_report(rep, opts), end="")
    print(f"set: {a.out} (folder per genre), manifest: {Path(a.out) / 'spotify_manifest.csv'}")
    if not sum(rep.after.values()):
        print("genrekit: error: no track with audio was fetched", file=sys.stderr)
        return 2
    return 0
