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

from models.errors import ModelError

POOLINGS = ("mean", "std", "max")


@keras.saving.register_keras_serializable(package="genrekit")
class TrackPooling(layers.Layer):
    """(batch, windows, features) -> (batch, len(stats) * features): the named statistics over
    the windows axis, concatenated in the order given (std is the population standard deviation,
    as ``numpy.std``)."""

    def __init__(self, stats=("mean", "std"), **kw):
        super().__init__(**kw)
        stats = tuple(stats)
        bad = [s for s in stats if s not in POOLINGS]
        if not stats or bad:
            raise ModelError(f"track pooling {list(stats)}: choose from {', '.join(POOLINGS)}")
        self.stats = stats

    def call(self, x):
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

    def compute_output_shape(self, input_shape):
        d = input_shape[-1]
        return (input_shape[0], None if d is None else d * len(self.stats))

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
    window = tuple(base.input_shape[1:])
    inp = keras.Input((None, *window), name="track_windows")
    emb = layers.TimeDistributed(base, name="window_embeddings")(inp)
    pooled = TrackPooling(stats, name="track_pooling")(emb)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32",
                       kernel_initializer="zeros")(pooled)
    return keras.Model(inp, out, name=name)


def window_embedder(model: keras.Model) -> keras.Model:
    """The per-window backbone inside a track classifier."""
    return model.get_layer("window_embeddings").layer


def is_track_model(model) -> bool:
    """True for models built by :func:`build_track_classifier` (input: a track's windows)."""
    return any(getattr(t, "name", "").startswith("track_windows") for t in model.inputs) or \
        any(layer.name == "track_pooling" for layer in model.layers)
