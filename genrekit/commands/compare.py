"""``genrekit compare``: one table of several runs' settings and figures."""
from __future__ import annotations

import argparse

from genrekit.evaluate import compare


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``compare`` parser."""
    co = sub.add_parser("compare",
                        help="one table of several runs' settings and figures on one split")
    co.add_argument("runs", nargs="+", help="run folders")
    co.add_argument("--split", default="test",
                    help="the split whose figures to show (default test): from `genrekit evaluate "
                         "--split` (RUN/eval/<split>/), else from the end of training")
    co.add_argument("--csv", default=None, help="also write the table as CSV here")
    co.add_argument("--level", default="track", choices=("track", "clip"),
                    help="figures at this level")
    return co


def run(a) -> int:
    """Print the table (and write the CSV)."""
    print(compare(a.runs, csv_path=a.csv, level=a.level, split=a.split), end="")
    if a.csv:
        print(f"\nCSV: {a.csv}")
    return 0
