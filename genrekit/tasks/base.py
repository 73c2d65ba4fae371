"""The task plug-in: a training :class:`~genrekit.training.Task` that also says how a run of
it is applied, evaluated, embedded, adapted, exported and described.

Commands never compare task or architecture names: they ask the run's plug-in
(:func:`genrekit.tasks.task_of`) through the attributes and methods below. The defaults are a
genre classifier's; a plug-in overrides what differs.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from genrekit.errors import UserError
from genrekit.models.registry import default_arch
from genrekit.prediction import Analysis, Block, call_windows, mean_over_windows, predict_rows
from genrekit.runs import Run
from genrekit.training import Task


class TaskPlugin(Task):
    """A task: training (:class:`Task`'s steps) and what its runs do afterwards."""

    classifies = True  # class probabilities: calibration, rejection, timelines, serve, compare
    # a file's answer is the model's mean over its windows (predict batches several files' windows
    # through the model and serve streams them, without :meth:`analyse`): a plug-in that says so
    batchable = False
    embeds = True  # ``genrekit embed`` takes the embedding before its softmax

    def check_task_option(self, spec, task_option: str) -> None:
        """Refuse ``--task TASK`` when it is not what ``spec`` learns (one line)."""
        if task_option != spec.task:
            raise UserError(f"{spec.name} is a {spec.task} classifier; --task {task_option} trains "
                            f"{default_arch(task_option)}")

    def analyse(self, run: Run, blocks: Iterable[Block], batch_size: int = 32, timeline=None,
                pooled: bool = False) -> Analysis:
        """One file's answer from its audible ``blocks`` (at least one): the mean of the window
        probabilities (``timeline`` gets each window's)."""
        model = run.model()
        return Analysis(mean_over_windows(lambda b: call_windows(model, b.x, batch_size), blocks, timeline))

    def answer_fields(self, values: np.ndarray) -> dict:
        """A result's fields for :meth:`analyse`'s values when the task does not classify."""
        return {}

    def predict_rows(self, run: Run, folder, rows: list[dict], batch_size: int = 32) -> np.ndarray:
        """Class probabilities of the run's model for manifest rows of a feature folder made
        with the run's feature config (one row per window)."""
        return predict_rows(run.model(), folder, rows, run.kind, batch_size)

    def evaluate(self, run: Run, data, split: str, out, tempo_file=None) -> dict | None:
        """A task with figures of its own writes them to ``out`` and returns them; None:
        ``genrekit evaluate``'s classification figures."""
        return None

    def format_metrics(self, res: dict) -> str | None:
        """:meth:`evaluate`'s figures as text (None: the classification table)."""
        return None

    def adaptable(self, run: Run) -> bool:
        """Whether ``genrekit adapt`` / ``suggest`` can refit the run's head."""
        return False

    def card_output(self, run: Run) -> str:
        """The model card's description of the model's output."""
        return f"softmax over the {len(run.labels)} classes in labels.json order"

    def export_metadata(self, run: Run) -> dict:
        """What an export records about the task (the model card's ``task``)."""
        return {"task": run.task}
