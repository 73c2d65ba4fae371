"""The task plug-ins, one module each, and their registry: one line per task.

An architecture names the plug-in that serves it (``ArchSpec.plugin`` in
``genrekit.models.registry``); :func:`task_for` gives it to training and :func:`task_of` to
every command that uses a run. To add a task: write a module with a
:class:`~genrekit.tasks.base.TaskPlugin` subclass, add it to ``TASKS`` below and name it in an
``ArchSpec``.
"""
from __future__ import annotations

from genrekit.errors import UserError
from genrekit.models.registry import REGISTRY
from genrekit.tasks import fusion, genre_track, genre_windows, tempo
from genrekit.tasks.base import TaskPlugin

TASKS: dict[str, TaskPlugin] = {t.name: t for t in (
    genre_windows.TASK,
    genre_track.TASK,
    tempo.TASK,
    fusion.TASK,
)}

# a run of an architecture this genrekit does not register: its plug-in by config.json's task
_BY_RUN_TASK = {"genre": genre_windows.TASK.name, "tempo": tempo.TASK.name}
TASK_OPTIONS = ("genre", "tempo")  # ``genrekit train --task``


def task_for(spec, task_option: str = "genre") -> TaskPlugin:
    """The plug-in that trains ``spec`` (an ``ArchSpec``) when ``--task task_option`` is asked."""
    if task_option not in TASK_OPTIONS:
        raise UserError(f"unknown task {task_option!r} ({' or '.join(TASK_OPTIONS)})")
    task = TASKS[spec.plugin]
    task.check_task_option(spec, task_option)
    return task


def task_of(run) -> TaskPlugin:
    """The plug-in of a trained run: its architecture's, else the one of its config's task."""
    spec = REGISTRY.get(run.arch)
    if spec is not None:
        return TASKS[spec.plugin]
    try:
        return TASKS[_BY_RUN_TASK[run.task]]
    except KeyError:
        raise UserError(f"{run.path}: unknown task {run.task!r} in config.json") from None


def format_results(res: dict) -> str | None:
    """The text of a task's own evaluation figures (those with a ``task`` entry), else None."""
    task = TASKS.get(res.get("task"))
    return task.format_metrics(res) if task is not None else None


__all__ = ["TASKS", "TaskPlugin", "task_for", "task_of", "format_results"]
