"""Track-level classifiers: a frozen backbone embeds every window of a track, the embeddings
are pooled over the whole track (mean, standard deviation, max), and one linear softmax layer
scores the pooled vector.

The model's input is one track's windows, ``(tracks, windows, *window_shape)``, so a track is
one sample and the model's output is already the track's probability. The linear layer is
meant to be fitted outside Keras (a regularised logistic regression on the pooled vectors,
see :mod:`genrekit.trackhead`) and written into the layer named ``predictions``; the input
standardisation is folded into it, so the saved model is plain Keras layers that load in safe
mode and export like any other model.

This module loads no TensorFlow (its helpers read a model's layers by name); the layers
themselves are in :mod:`genrekit.models.track_layers`.
"""
from __future__ import annotations

import numpy as np

from genrekit.models.errors import ModelError


def pool_track(embeddings: np.ndarray, stats) -> np.ndarray:
    """NumPy twin of :class:`TrackPooling` for one track: (windows, features) -> pooled vector."""
    e = np.asarray(embeddings, dtype=np.float64)
    funcs = {"mean": lambda a: a.mean(0), "std": lambda a: a.std(0), "max": lambda a: a.max(0)}
    return np.concatenate([funcs[s](e) for s in stats]).astype(np.float32)


def build_track_classifier(base, num_classes: int, stats=("mean", "std"), name: str = "track_classifier"):
    """``base`` maps one window to an embedding vector; the result maps a track's windows
    ``(tracks, windows, *window)`` to class probabilities through :class:`TrackPooling` and a
    softmax layer named ``predictions`` (initialised to zero: fit it with
    :func:`genrekit.trackhead.fit_track_head`)."""
    import keras
    from keras import layers

    from genrekit.models.track_layers import TrackPooling, WindowsToBatch

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


def window_embedder(model):
    """The per-window backbone inside a track classifier."""
    return model.get_layer("base")


def is_track_model(model) -> bool:
    """True for models built by :func:`build_track_classifier` (input: a track's windows)."""
    return any(getattr(t, "name", "").startswith("track_windows") for t in model.inputs) or \
        any(layer.name == "track_pooling" for layer in model.layers)
