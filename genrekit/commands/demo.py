"""``genrekit demo``: an end-to-end run on a small synthetic set."""
from __future__ import annotations

import argparse

from genrekit.demo import run_demo
from genrekit.errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``demo`` parser."""
    d = sub.add_parser("demo", help="end-to-end run on a small synthetic set (no downloads)")
    d.add_argument("--out", default="genrekit-demo",
                   help="folder for everything (default ./genrekit-demo)")
    d.add_argument("--workers", type=int, default=2, help="processes for augment (default 2)")
    d.add_argument("--quick", action="store_true", help="fewer tracks and epochs (a smoke test)")
    return d


def run(a) -> int:
    """Run the demo."""
    if a.workers < 1:
        raise UserError(f"--workers must be at least 1, got {a.workers}")
    run_demo(a.out, workers=a.workers, quick=a.quick)
    return 0
