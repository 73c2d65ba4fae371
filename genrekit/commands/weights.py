"""``genrekit weights fetch``: install pretrained weights."""
from __future__ import annotations

import argparse

from genrekit.weights import fetch


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``weights`` parser and its action."""
    w = sub.add_parser("weights", help="install pretrained weights (musicnn)")
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=type(w),
                            required=True)
    wf = wsub.add_parser("fetch",
                         help="download (pip) or unpack, verify and cache pretrained weights")
    wf.add_argument("name", help="musicnn")
    wf.add_argument("--from", dest="source", default=None,
                    help="offline: a musicnn-0.1.0 wheel file, or a folder holding MSD_musicnn/ "
                         "etc.")
    return w


def run(a) -> int:
    """Fetch (the one action)."""
    dest = fetch(a.name, source=a.source)
    print(f"{a.name} weights verified and installed in {dest}")
    return 0
