"""``genrekit suggest``: which of the user's unlabelled tracks to label first."""
from __future__ import annotations

import argparse
import sys

from genrekit import progress
from genrekit.adapt import format_suggestions, suggest
from genrekit.options import add_progress_args


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``suggest`` parser."""
    sg = sub.add_parser("suggest",
                        help="which of your unlabelled tracks to label first for `genrekit adapt`")
    sg.add_argument("--model", required=True, help="run folder of the default recipe")
    sg.add_argument("--data", required=True, metavar="DIR",
                    help="your music (any folder, searched recursively)")
    sg.add_argument("-n", type=int, default=10, help="how many tracks to suggest (default 10)")
    sg.add_argument("--csv", default=None, metavar="FILE",
                    help="write path,genre,guess,probability,margin with an empty genre column to "
                         "fill in (a new file)")
    sg.add_argument("--m3u", default=None, metavar="FILE",
                    help="write the suggested tracks as a playlist (a new file)")
    add_progress_args(sg, quiet=None)
    return sg


def run(a) -> int:
    """Suggest; print the list (and where the CSV / playlist went)."""
    items = suggest(a.model, a.data, n=a.n, csv_path=a.csv, m3u_path=a.m3u,
                    progress=progress.enabled())
    print(format_suggestions(items))
    for flag, path in (("csv", a.csv), ("m3u", a.m3u)):
        if path:
            print(f"{flag}: {path}", file=sys.stderr)
    if a.csv:
        print(f"fill in the genre column of {a.csv}, then: genrekit adapt --model {a.model} "
              f"--labels {a.csv} --out NEW_RUN", file=sys.stderr)
    return 0
