"""``genrekit train``: train a model on a feature folder into a run folder. Its options but
--arch and --quiet are :class:`~genrekit.training.TrainOptions`' fields (flag, help, default)."""
from __future__ import annotations

import argparse

from genrekit.models.registry import (  # no TensorFlow
    DEFAULT_ARCH,
    REGISTRY,
    arch_help,
    default_arch,
)
from genrekit.options import add_options, add_progress_args, arch_type, from_args
from genrekit.train import train
from genrekit.training import TrainOptions, format_summary


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``train`` parser: --data, --arch, then the other option fields of TrainOptions."""
    t = sub.add_parser("train", help="train a model on a feature folder; writes a run folder",
                       description="Train an architecture on the manifest of a feature folder "
                                   "(train split; the valid split drives early stopping).")
    add_options(t, TrainOptions, ["data"])
    t.add_argument("--arch", default=None, metavar="ARCH", choices=list(REGISTRY),
                   type=arch_type(list(REGISTRY)),
                   help=f"architecture, by the features it reads: {arch_help()}. Default "
                        f"{DEFAULT_ARCH} ({REGISTRY[DEFAULT_ARCH].description}); tempocnn for "
                        "--task tempo")
    add_options(t, TrainOptions, skip=["data"])
    add_progress_args(t, "no per-epoch log and no progress bars")
    return t


def run(a) -> int:
    """Train; print the summary."""
    opts = from_args(TrainOptions, a, arch=a.arch or default_arch(a.task),
                     verbose=0 if a.quiet else 2)
    print(format_summary(train(opts)))
    return 0
