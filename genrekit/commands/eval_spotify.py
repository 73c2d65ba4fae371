"""``genrekit eval-spotify``: score a run on a folder-per-genre audio set."""
from __future__ import annotations

import argparse
from pathlib import Path

from genrekit import progress
from genrekit.evaluate import evaluate_folder, format_metrics
from genrekit.options import add_progress_args, probability


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``eval-spotify`` parser."""
    es = sub.add_parser("eval-spotify", help="score a run on a folder-per-genre audio set (e.g. "
                                             "from fetch-spotify)")
    es.add_argument("--model", required=True, help="run folder")
    es.add_argument("--data", required=True, help="folder-per-genre audio (wav/mp3/...)")
    es.add_argument("--out", default=None,
                    help="output folder (default RUN/eval-<data folder name>)")
    es.add_argument("--features", default=None,
                    help="where to render the features (default OUT/features)")
    es.add_argument("--workers", type=int, default=1)
    es.add_argument("--batch-size", type=int, default=32)
    add_progress_args(es)
    es.add_argument("--reject-threshold", type=probability, default=None, metavar="P",
                    help="open-set figures (an `unknown` folder's rejection rate) at this "
                         "threshold instead of the run's own")
    return es


def run(a) -> int:
    """Evaluate on the folder; print the figures and where the report is."""
    res = evaluate_folder(a.model, a.data, out=a.out, features_dir=a.features, workers=a.workers,
                          batch_size=a.batch_size, progress=progress.enabled(),
                          reject_threshold=a.reject_threshold)
    print(format_metrics(res))
    out = Path(a.out) if a.out else Path(a.model) / f"eval-{Path(a.data).resolve().name}"
    print(f"report: {out / 'report.md'}")
    return 0
