"""``genrekit merge-shards``: merge the manifests of ``augment --shard K/N`` runs."""
from __future__ import annotations

import argparse

from genrekit.data_tools.pipeline import merge_shards


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``merge-shards`` parser."""
    m = sub.add_parser("merge-shards",
                       help="merge manifest.shard-K-of-N.csv files into manifest.csv")
    m.add_argument("out", help="feature folder holding every shard's output")
    return m


def run(a) -> int:
    """Merge the shards' manifests."""
    s = merge_shards(a.out)
    print(f"merged {s['shards']} shards, {s['files']} rows -> {s['manifest']}")
    return 0
