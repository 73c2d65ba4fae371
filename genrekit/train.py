"""``genrekit train``: picks the task plug-in for the architecture (:mod:`genrekit.tasks`) and
runs the shared training skeleton (:mod:`genrekit.training`).

manifest.csv (split column decides train/validation) -> the task's rows and targets -> model
from the registry -> fit with early stopping, checkpoints and CSV history -> a self-describing
run folder (complete-or-absent) -> figures on the valid and test splits.
"""
from __future__ import annotations

from genrekit.models import get_arch
from genrekit.tasks import task_for
from genrekit.training import TrainOptions, TrainResult, fit_task


def train(opts: TrainOptions) -> TrainResult:
    """Train a model as ``opts`` says; returns the run folder, its phase, figures and timing."""
    return fit_task(task_for(get_arch(opts.arch), opts.task), opts)


__all__ = ["TrainOptions", "TrainResult", "train"]  # the Python API: train() and its types
