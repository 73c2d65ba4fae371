"""``genrekit adapt``: refit a run's head with the user's labelled tracks into a new run."""
from __future__ import annotations

import argparse

from genrekit import progress
from genrekit.adapt import adapt, format_result
from genrekit.options import add_progress_args, positive_float


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``adapt`` parser."""
    ad = sub.add_parser("adapt", help="teach a run your own music: refit its head with your "
                                      "labelled tracks (new genres welcome) into a new run folder")
    ad.add_argument("--model", required=True,
                    help="run folder of the default recipe (`genrekit train`, no --arch)")
    src = ad.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", default=None, metavar="DIR",
                     help="your labelled tracks, a folder per genre")
    src.add_argument("--labels", default=None, metavar="FILE.csv",
                     help="a path,genre CSV (e.g. `genrekit suggest --csv`, filled in); paths "
                          "relative to its folder")
    ad.add_argument("--out", required=True, metavar="NEW_RUN",
                    help="the new run folder (the old run is untouched)")
    ad.add_argument("--weight", type=positive_float, default=None,
                    help="how many of the run's tracks one of yours weighs (default: as many as it "
                         "takes for your collection to weigh as much as the run's, 1 to 30)")
    ad.add_argument("--seed", type=int, default=0)
    add_progress_args(ad, quiet=None)
    return ad


def run(a) -> int:
    """Adapt; print the new run's figures."""
    print(format_result(adapt(a.model, a.out, data=a.data, labels=a.labels, seed=a.seed,
                              weight=a.weight,
                              progress=progress.enabled())))
    return 0
