"""The task plug-ins, one module each, and their registry: one line per task.

An architecture names the plug-in that serves it (``ArchSpec.plugin`` in
``genrekit.models.registry``); :func:`task_for` gives it to training and :func:`task_of` to
every command that uses a run. To add a task: write a module with a
:class:`~genrekit.tasks.base.TaskPlugin` subclass, add it to ``TASKS`` below and name it in an
``ArchSpec``.
"""
from __future__ import annotations

from genrekit.errors import UserError
from genrekit.models.registry import REGISTRY, task_names
from genrekit.tasks import fusion, genre_track, genre_windows, tempo
from genrekit.tasks.base import TaskPlugin

TASKS: dict[str, TaskPlugin] = {t.name: t for t in (
    genre_windows.TASK,
    genre_track.TASK,
    tempo.TASK,
    fusion.TASK,
)}



def task_for(spec, task_option: str = "genre") -> TaskPlugin:
    """The plug-in that trains ``spec`` (an ``ArchSpec``) when ``--task task_option`` is asked."""
    if task_option not in task_names():
        raise UserError(f"unknown task {task_option!r} ({' or '.join(task_names())})")
    task = TASKS[spec.plugin]
    task.check_task_option(spec, task_option)
    return task


def task_of(run) -> TaskPlugin:
    """The plug-in of a trained run: its architecture's (a :class:`~genrekit.runs.Run` refuses
    an architecture this genrekit does not register)."""
    return TASKS[REGISTRY[run.arch].plugin]


def format_results(res: dict) -> str | None:
    """The text of a task's own evaluation figures, by the plug-in of the results' architecture;
    None: the classification table."""
    spec = REGISTRY.get(res.get("arch"))
    return TASKS[spec.plugin].format_metrics(res) if spec is not None else None


__all__ = ["TASKS", "TaskPlugin", "task_for", "task_of", "format_results"]
