"""The genre track model task: the default recipe ``musicnn_lr``.

The frozen backbone embeds every window of a track, the track statistics (mean, std) are
fitted by a logistic regression (:mod:`genrekit.trackhead`) folded into the model's softmax
layer — no epochs. The run keeps the pooled embeddings of its training and validation tracks
(``embeddings.npz``, for ``genrekit adapt``); its temperature and rejection rules are fitted
on out-of-fold predictions over all of them (:mod:`genrekit.trackrun`). Everything else is the
genre classifier's (:mod:`genrekit.tasks.genre_windows`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genrekit.data_tools.loaders import label_ids, select
from genrekit.multidata import row_weights
from genrekit.openset import track_embeddings
from genrekit.tasks.genre_windows import GenrePlan, GenreTask
from genrekit.trackhead import grouped_folds
from genrekit.trackrun import refit_rules, save_embeddings
from genrekit.training import TrainOptions, log


class GenreTrackTask(GenreTask):
    """A track model with a logistic-regression head on its pooled window embeddings."""

    name = "genre_track"

    def calibrate(self, run_dir: Path, model, plan: GenrePlan, opts: TrainOptions, predict) -> None:
        """Out-of-fold calibration and rejection rules over every known track."""
        keep_track_embeddings(run_dir, model, plan, opts.seed)


def keep_track_embeddings(run_dir: Path, model, plan: GenrePlan, seed: int) -> None:
    """A track-model run keeps the pooled embeddings of its training and validation tracks
    (``embeddings.npz``, for ``genrekit adapt``), and its temperature and rejection rules are
    fitted on out-of-fold predictions over all of them (:mod:`genrekit.trackrun`)."""
    def originals(split):
        return [r for r in select(plan.rows, plan.kind, (split,)) if r["augmentation"] == "original"]

    if plan.head_embeddings is not None:
        x_tr, y_tr, ids_tr = plan.head_embeddings
    else:  # the head was fitted on augmented variants too: the originals' embeddings
        ids, x_tr = track_embeddings(model, plan.data, originals("train"))
        ids_tr = ids
        y_tr = label_ids([{"genre": g} for g in genres_of(plan.rows, ids)], plan.labels)
    ids_va, x_va = track_embeddings(model, plan.data, originals("valid"))
    y_va = label_ids([{"genre": g} for g in genres_of(plan.rows, ids_va)], plan.labels)
    x = np.concatenate([x_tr, x_va]) if len(ids_va) else np.asarray(x_tr)
    y = np.concatenate([np.asarray(y_tr), np.asarray(y_va)]).astype(int)
    ids = [*map(str, ids_tr), *ids_va]
    save_embeddings(run_dir, x, [plan.labels[i] for i in y], ids,
                    ["train"] * len(ids_tr) + ["valid"] * len(ids_va), ["run"] * len(ids))
    C = float(plan.head_fit["C"])
    # several --data folders: the out-of-fold heads weigh each track as the run's head did
    w = row_weights(plan.track_weights, [{"track_id": t} for t in ids])
    refit_rules(run_dir, model, x, y, grouped_folds(y, np.array(ids), 5, seed), len(plan.labels), C,
                sample_weight=w, seed=seed, log=log)


def genres_of(rows: list[dict], track_ids) -> list[str]:
    """The genre of each track id, from the manifest rows."""
    genre = {r["track_id"]: r["genre"] for r in rows}
    return [genre[t] for t in track_ids]


TASK = GenreTrackTask()
