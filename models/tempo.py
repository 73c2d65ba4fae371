"""Tempo regression and tempo->genre fusion.

``tempocnn`` regresses a track's tempo from a log-BPM tempogram window
(:func:`data_tools.features.tempogram`): convolutions along the BPM axis score each tempo and
the output is the expected tempo under those scores, scaled to [0, 1] over the run's BPM
range (MSE loss). Chosen over a flatten-and-dense head, which on gtzan_mini's 70 training
tracks memorised the training tempi and predicted little better than their median on the
validation tracks.

``fusion`` is the tempo study's design: a genre model's frozen convolutional embedding
concatenated with a small MLP embedding of the predicted tempo, with new dense layers on top.
"""
from __future__ import annotations

import keras
from keras import layers

from models.errors import ModelError


def build_tempocnn(input_shape, num_outputs: int = 1, bpm_min: float = 30.0, bpm_max: float = 480.0,
                   tempo_range=(40.0, 250.0), filters: int = 32, kernel: int = 5, dilations=(1, 2, 4, 8, 16),
                   name: str = "tempocnn") -> keras.Model:
    """Tempo regressor on (steps, bins) log-BPM tempogram windows whose bins are log-spaced from
    ``bpm_min`` to ``bpm_max``. One scalar standardisation (a per-bin one would treat tempi
    differently), mean over time, then dilated 1-D convolutions along the BPM axis (receptive
    field of about +-60 bins, about two octaves either way, so octave relations are visible);
    the layers are the same at every tempo, so a tempo change shifts the answer. A 1x1
    convolution scores each bin inside ``tempo_range`` and the output is the softmax-weighted
    mean of those bins' tempi, scaled to [0, 1] over the range (a "soft argmax")."""
    import numpy as np

    steps, bins = input_shape
    if num_outputs != 1:
        raise ModelError("tempocnn outputs one tempo")
    axis = np.geomspace(bpm_min, bpm_max, bins)
    lo, hi = tempo_range
    inside = np.flatnonzero((axis >= lo) & (axis <= hi))
    if len(inside) < 2:
        raise ModelError(f"the tempogram's BPM axis ({bpm_min:g}-{bpm_max:g}) barely covers {lo:g}-{hi:g} BPM")
    inp = keras.Input(shape=(steps, bins), name="tempogram")
    x = layers.Normalization(axis=None, name="input_norm")(inp)
    x = layers.GlobalAveragePooling1D(name="time_mean")(x)
    x = layers.Reshape((bins, 1), name="bpm_axis")(x)
    for i, d in enumerate(dilations):
        x = layers.Conv1D(filters, kernel, dilation_rate=d, padding="same", activation="relu", name=f"conv_{i + 1}")(x)
    x = layers.Cropping1D((int(inside[0]), int(bins - 1 - inside[-1])), name="tempo_range_bins")(x)
    logits = layers.Flatten(name="bin_scores")(layers.Conv1D(1, 1, name="score")(x))
    prob = layers.Softmax(name="bin_probabilities")(logits)
    expect = layers.Dense(1, use_bias=False, trainable=False, name="tempo", dtype="float32")
    out = expect(prob)
    expect.set_weights([((axis[inside] - lo) / (hi - lo)).astype("float32")[:, None]])
    return keras.Model(inp, out, name=name)


def genre_embedding(genre_model: keras.Model, layer: str | None = None):
    """The genre model's convolutional embedding tensor: the input of its first top-level Dense
    layer (after the last conv block's pooling/flatten), or the output of ``layer``."""
    if layer:
        try:
            return genre_model.get_layer(layer).output
        except ValueError:
            raise ModelError(f"the genre model has no layer {layer!r}") from None
    dense = next((lay for lay in genre_model.layers if isinstance(lay, layers.Dense)), None)
    if dense is None:
        raise ModelError("the genre model has no Dense layer: name its embedding layer with "
                         "--hparam embedding_layer=NAME")
    return dense.input


def build_fusion(genre_model: keras.Model, num_classes: int, embedding_layer: str | None = None,
                 tempo_units=(16, 16), dense_units: int = 128, dropout: float = 0.3,
                 name: str = "fusion") -> keras.Model:
    """Inputs: the genre model's feature window and the predicted tempo scaled to [0, 1]
    (shape (1,), named "tempo"), in that order. The genre model's layers up to its embedding
    become the first layers of this model (one flat graph, which exports cleanly), frozen:
    their weights do not change and BatchNorm runs in inference mode."""
    emb = genre_embedding(genre_model, embedding_layer)
    for lay in genre_model.layers:
        lay.trainable = False
    if len(emb.shape) > 2:
        emb = layers.Flatten(name="embedding_flatten")(emb)
    bpm = keras.Input(shape=(1,), name="tempo")
    t = bpm
    for i, u in enumerate(tempo_units):
        t = layers.Dense(u, activation="relu", name=f"tempo_dense_{i + 1}")(t)
    x = layers.Concatenate(name="fusion_concat")([emb, t])
    x = layers.Dense(dense_units, activation="relu", name="fusion_dense")(x)
    x = layers.Dropout(dropout, name="fusion_dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="fusion_predictions", dtype="float32")(x)
    return keras.Model([*genre_model.inputs, bpm], out, name=name)
