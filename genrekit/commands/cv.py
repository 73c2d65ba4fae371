"""``genrekit cv``: K-fold cross-validation by track. Its training options are
:class:`~genrekit.training.TrainOptions`' fields, as ``genrekit train`` offers them."""
from __future__ import annotations

import argparse
from pathlib import Path

from genrekit import progress
from genrekit.cv import cross_validate, format_cv
from genrekit.errors import UserError
from genrekit.models.registry import DEFAULT_ARCH, cv_arch_names  # no TensorFlow
from genrekit.multidata import folders_of
from genrekit.options import add_options, add_progress_args, arch_type, option_values
from genrekit.training import PHASE_DEFAULTS, TrainOptions

# the training options cv offers; data and seed are cross_validate's own arguments
SHARED = ("data", "phase", "epochs", "batch_size", "patience", "weights", "hparams", "seed",
          "deterministic", "image_aug", "label_smoothing", "mixup")


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``cv`` parser: its own options and the training options it shares with train."""
    cv = sub.add_parser("cv", help="K-fold cross-validation by track (mean ± std of test figures)")
    add_options(cv, TrainOptions, ["data"])
    cv_archs = cv_arch_names()
    cv.add_argument("--arch", default=DEFAULT_ARCH, metavar="ARCH", choices=cv_archs,
                    type=arch_type(cv_archs,
                                   "cv cross-validates genre classifiers trained from features"),
                    help=f"architecture: {', '.join(cv_archs)} (default {DEFAULT_ARCH}, the "
                         "default recipe, as for train)")
    cv.add_argument("--folds", type=int, default=5, help="folds (default %(default)s)")
    cv.add_argument("--out", default=None, help="folder for the folds (default "
                                                "runs/cv-<arch>-<K>fold)")
    add_options(cv, TrainOptions, SHARED, skip=["data"],
                help={"phase": "scratch | transfer (default as for train)",
                      "epochs": "default " + ", ".join(f"{e} {ph}" for ph, (e, _) in PHASE_DEFAULTS.items())})
    cv.add_argument("--no-augmented", action="store_true", help="train on un-augmented rows only")
    add_progress_args(cv, "no progress bars (the per-fold lines stay)")
    return cv


def train_kwargs(a) -> dict:
    """The folds' TrainOptions from the options given (what ``cv_settings.json`` records; a
    --phase only when one was given)."""
    kw = option_values(TrainOptions, a, SHARED)
    del kw["data"], kw["seed"]
    if not kw["phase"]:
        del kw["phase"]
    return kw


def run(a) -> int:
    """Cross-validate; print the table."""
    data = folders_of(option_values(TrainOptions, a, ["data"])["data"])
    if len(data) > 1:
        raise UserError(f"cv cross-validates one feature folder; got {len(data)} --data folders "
                        "(train takes several)")
    out = a.out or f"runs/cv-{a.arch}-{a.folds}fold"
    res = cross_validate(data[0], a.arch, a.folds, out, seed=a.seed,
                         keep_augmented=not a.no_augmented,
                         train_kwargs=train_kwargs(a), log=progress.write)
    print(format_cv(res), end="")
    print(f"results: {Path(out) / 'cv.json'}, {Path(out) / 'cv.md'}")
    return 0
