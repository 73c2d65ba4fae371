"""The Keras layers of genrekit's track classifiers (:mod:`genrekit.models.track`), registered
for safe-mode loading under the package name ``genrekit``. Importing this module loads Keras;
:func:`genrekit.runs.load_model` imports it before reading a model file.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from genrekit.models.errors import ModelError

POOLINGS = ("mean", "std", "max")  # the statistics TrackPooling (and pool_track) can take


@keras.saving.register_keras_serializable(package="genrekit")
class WindowsToBatch(layers.Layer):
    """(tracks, windows, *window) -> (tracks * windows, *window): every window of every track
    through the per-window backbone in one batch (a plain reshape: no loop in exported graphs)."""

    def call(self, x):
        return ops.reshape(x, (-1, *x.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[2:])


@keras.saving.register_keras_serializable(package="genrekit")
class TrackPooling(layers.Layer):
    """[(tracks * windows, features), (tracks, windows, ...)] -> (tracks, len(stats) * features):
    the window embeddings regrouped by track and summarised by the named statistics over the
    windows, concatenated in the order given (std: population standard deviation, as numpy's)."""

    def __init__(self, stats=("mean", "std"), **kw):
        super().__init__(**kw)
        stats = tuple(stats)
        bad = [s for s in stats if s not in POOLINGS]
        if not stats or bad:
            raise ModelError(f"track pooling {list(stats)}: choose from {', '.join(POOLINGS)}")
        self.stats = stats

    def call(self, inputs):
        emb, windows = inputs
        shape = ops.shape(windows)
        x = ops.reshape(emb, (shape[0], shape[1], emb.shape[-1]))
        mean = ops.mean(x, axis=1)
        parts = []
        for s in self.stats:
            if s == "mean":
                parts.append(mean)
            elif s == "std":
                parts.append(ops.sqrt(ops.maximum(ops.mean(ops.square(x - ops.expand_dims(mean, 1)), axis=1), 0.0)))
            else:
                parts.append(ops.max(x, axis=1))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shapes):
        d = input_shapes[0][-1]
        return (input_shapes[1][0], None if d is None else d * len(self.stats))

    def get_config(self):
        return {**super().get_config(), "stats": list(self.stats)}
