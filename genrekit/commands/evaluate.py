"""``genrekit evaluate``: figures, plots and report for a run on a split of a feature folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from genrekit.evaluate import eval_dir, evaluate, format_metrics
from genrekit.options import add_progress_args, probability


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``evaluate`` parser."""
    ev = sub.add_parser("evaluate",
                        help="figures, plots and report for a run on a split of a feature folder")
    ev.add_argument("--model", required=True, help="run folder")
    ev.add_argument("--data", required=True,
                    help="feature folder made with the run's feature config")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--out", default=None, help="output folder (default: RUN/eval/<split>/)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--tempo-file", default=None,
                    help="tempo runs: CSV track_id,bpm of true tempi (default: the one the run "
                         "trained with)")
    ev.add_argument("--reject-threshold", type=probability, default=None, metavar="P",
                    help="open-set figures at this top-probability threshold instead of the run's "
                         "own")
    add_progress_args(ev)
    return ev


def run(a) -> int:
    """Evaluate; print the figures and where the report is."""
    res = evaluate(a.model, a.data, split=a.split, out=a.out, batch_size=a.batch_size,
                   tempo_file=a.tempo_file,
                   reject_threshold=a.reject_threshold)
    print(format_metrics(res))
    print(f"report ({a.split} split): "
          f"{Path(a.out) if a.out else eval_dir(a.model, a.split)}/report.md")
    return 0
