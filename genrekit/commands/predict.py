"""``genrekit predict``: top-k genres for audio files."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genrekit import progress
from genrekit.data_tools.audio import stderr_line_guard
from genrekit.options import add_progress_args, in_range, probability
from genrekit.predict import CsvOut, check_csv_target, format_line, iter_predictions


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``predict`` parser."""
    pr = sub.add_parser("predict", help="top-k genres for audio files")
    pr.add_argument("files", nargs="+",
                    help="audio files or folders (recursive; wav, au, mp3, flac, ogg)")
    pr.add_argument("--model", required=True, help="run folder")
    pr.add_argument("--top-k", type=in_range(int, 1), default=3,
                    help="genres to show per file, at least 1 (default 3; at most the run's genres "
                         "are shown)")
    pr.add_argument("--json", action="store_true", help="JSON instead of a table")
    pr.add_argument("--reject", action="store_true",
                    help="answer `unknown` when the run's rejection rule says so (chosen at "
                         "training time, threshold on the validation split): the embedding "
                         "distance to the training tracks for models with a track embedding (the "
                         "default recipe), else the top calibrated probability")
    pr.add_argument("--reject-per-genre", action="store_true",
                    help="like --reject, with the run's threshold for the track's top genre (each "
                         "keeps 95%% of that genre's held-out tracks accepted; the global one for "
                         "a genre with fewer than 5)")
    pr.add_argument("--reject-threshold", type=probability, default=None, metavar="P",
                    help="reject below this top probability instead of the run's rule (implies "
                         "--reject)")
    pr.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                    help="hop between analysis windows (default: the run's own)")
    pr.add_argument("--timeline", default=None, metavar="DIR",
                    help="write each file's per-window genre probabilities (<name>.timeline.csv) "
                         "and a plot of genre over time (<name>.timeline.png) into DIR")
    pr.add_argument("--csv", default=None, metavar="FILE",
                    help="also write the results as a CSV table (written when every file is done)")
    add_progress_args(pr, quiet=None)
    return pr


def run(a) -> int:
    """Predict every file; a file that fails is one error line and the rest goes on (exit 2)."""
    reject = "per_genre" if a.reject_per_genre else a.reject
    preds = iter_predictions(a.files, a.model, top_k=a.top_k, reject=reject, reject_threshold=a.reject_threshold,
                             hop_s=a.hop, timeline_dir=a.timeline)
    if a.csv:
        check_csv_target(a.csv)
    results, failed, drawn = [], 0, 0
    with CsvOut(a.csv, preds.k) as out, progress.bar(len(preds), desc="predict", unit="file") as bar:
        for r in preds:  # each result as it comes: a table line, or one error line and the rest goes on
            bar.update(1)
            drawn += "timeline" in r
            out.write(r)
            if a.json:
                results.append(r)
            if "error" in r:
                failed += 1
                with stderr_line_guard():  # decoder threads may hold fd 2 silenced meanwhile
                    bar.write(f"genrekit: error: {r['file']}: {r['error']}", file=sys.stderr)
            elif not a.json:
                bar.write(format_line(r), file=sys.stdout)
    if a.json:
        print(json.dumps(results, indent=2))
    if a.csv:
        print(f"csv: {a.csv}", file=sys.stderr)
    if a.timeline:
        print(f"timelines: {drawn} file(s) -> {Path(a.timeline)}/ (<name>.timeline.csv: per-window genre "
              "probabilities, <name>.timeline.png: genre over time)", file=sys.stderr)
    return 2 if failed else 0
