"""``genrekit train``: picks the task plug-in for the architecture and runs the shared
training skeleton (:mod:`genrekit.training`).

manifest.csv (split column decides train/validation) -> the task's rows and targets -> model
from the registry -> fit with early stopping, checkpoints and CSV history -> a self-describing
run folder (complete-or-absent) -> figures on the valid and test splits.
"""
from __future__ import annotations

from genrekit import fusion, genre, tempo
from genrekit.errors import UserError
from genrekit.models import get_arch
from genrekit.training import Task, TrainOptions, fit_task, format_summary, parse_hparams

TASKS: dict[str, Task] = {t.name: t for t in (genre.TASK, tempo.TASK, fusion.TASK)}


def task_for(opts: TrainOptions, spec) -> Task:
    """The task that trains ``spec``: tempo regression, tempo -> genre fusion or a genre classifier."""
    if opts.task not in ("genre", "tempo"):
        raise UserError(f"unknown task {opts.task!r} (genre or tempo)")
    if opts.task == "tempo" or spec.task == "tempo":
        if opts.task != "tempo":
            raise UserError(f"{spec.name} regresses tempo: train it with --task tempo")
        return TASKS["tempo"]
    if spec.name == "fusion":
        return TASKS["fusion"]
    return TASKS["genre"]


def train(opts: TrainOptions) -> dict:
    """Train a model as ``opts`` says; returns the run folder, its phase, figures and timing."""
    return fit_task(task_for(opts, get_arch(opts.arch)), opts)


__all__ = ["TrainOptions", "train", "task_for", "format_summary", "parse_hparams"]
