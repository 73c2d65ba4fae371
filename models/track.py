"""Track-level classifiers: a frozen backbone embeds every window of a track, the embeddings
are pooled over the whole track (mean, standard deviation, max), and one linear softmax layer
scores the pooled vector.

The model's input is one track's windows, ``(tracks, windows, *window_shape)``, so a track is
one sample and the model's output is already the track's probability. The linear layer is
meant to be fitted outside Keras (a regularised logistic regression on the pooled vectors,
see :mod:`genrekit.trackhead`) and written into the layer named ``predictions``; the input
standardisation is folded into it, so the saved model is plain Keras layers that load in safe
mode and export like any other model.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from genrekit.models.errors import ModelError

POOLINGS = ("mean", "std", "max")


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


def pool_track(embeddings: np.ndarray, stats) -> np.ndarray:
    """NumPy twin of :class:`TrackPooling` for one track: (windows, features) -> pooled vector."""
    e = np.asarray(embeddings, dtype=np.float64)
    funcs = {"mean": lambda a: a.mean(0), "std": lambda a: a.std(0), "max": lambda a: a.max(0)}
    return np.concatenate([funcs[s](e) for s in stats]).astype(np.float32)


def build_track_classifier(base: keras.Model, num_classes: int, stats=("mean", "std"),
                           name: str = "track_classifier") -> keras.Model:
    """``base`` maps one window to an embedding vector; the result maps a track's windows
    ``(tracks, windows, *window)`` to class probabilities through :class:`TrackPooling` and a
    softmax layer named ``predictions`` (initialised to zero: fit it with
    :func:`genrekit.trackhead.fit_track_head`)."""
    base.trainable = False
    if base.name != "base":
        raise ModelError(f"the per-window backbone must be named 'base', not {base.name!r}")
    window = tuple(base.input_shape[1:])
    inp = keras.Input((None, *window), name="track_windows")
    emb = base(WindowsToBatch(name="windows_to_batch")(inp))
    pooled = TrackPooling(stats, name="track_pooling")([emb, inp])
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32",
                       kernel_initializer="zeros")(pooled)
    return keras.Model(inp, out, name=name)


def window_embedder(model: keras.Model) -> keras.Model:
    """The per-window backbone inside a track classifier."""
    return model.get_layer("base")


def is_track_model(model) -> bool:
    """True for models built by :func:`build_track_classifier` (input: a track's windows)."""
    return any(getattr(t, "name", "").startswith("track_windows") for t in model.inputs) or \
        any(layer.name == "track_pooling" for layer in model.layers)
