"""Tempo regression and tempo->genre fusion.

``tempocnn`` regresses a track's tempo from a log-BPM tempogram window
(:func:`genrekit.data_tools.features.tempogram`): it scores each tempo and outputs the expected tempo
under those scores, scaled to [0, 1] over the run's BPM range (MSE loss), starting from the
classic prior-weighted tempogram peak. Chosen after a flatten-and-dense head and a
convolution-only scorer, trained from random weights on gtzan_mini's training tracks,
predicted the validation tracks' tempi no better than their median tempo.

``fusion`` is the tempo study's design: a genre model's frozen convolutional embedding
concatenated with a small MLP embedding of the predicted tempo, with new dense layers on top.

Keras is imported inside the builders, so importing the registry stays free of TensorFlow.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from genrekit.models.errors import ModelError

if TYPE_CHECKING:
    import keras


def build_tempocnn(input_shape, num_outputs: int = 1, bpm_min: float = 30.0, bpm_max: float = 480.0,
                   tempo_range=(40.0, 250.0), sharpness: float = 100.0, prior_bpm: float = 120.0,
                   prior_octaves: float = 1.0, filters: int = 16, kernel: int = 5, dilations=(1, 2, 4, 8, 16),
                   name: str = "tempocnn") -> keras.Model:
    """Tempo regressor on (steps, bins) log-BPM tempogram windows whose bins are log-spaced from
    ``bpm_min`` to ``bpm_max``.

    The window is averaged over time. Each tempo inside ``tempo_range`` gets a score from two
    branches that are added: a dense "re-scoring" of all bins (harmonics outside the range
    included), initialised to the classic estimator — the tempogram weighted by a log-normal
    tempo prior centred at ``prior_bpm`` (Ellis 2007) with ``prior_octaves`` std (librosa's
    default spread), times ``sharpness`` — and a CNN of dilated 1-D convolutions along the BPM axis
    (receptive field about +-60 bins, two octaves either way), whose last layer starts at
    zero. The output is the softmax-weighted mean of the range's tempi, scaled to [0, 1] (a
    "soft argmax"). Training (MSE) thus starts from the prior-weighted tempogram peak and learns
    corrections from the annotations."""
    import keras
    from keras import layers

    steps, bins = input_shape
    if num_outputs != 1:
        raise ModelError("tempocnn outputs one tempo")
    axis = np.geomspace(bpm_min, bpm_max, bins)
    lo, hi = tempo_range
    inside = np.flatnonzero((axis >= lo) & (axis <= hi))
    if len(inside) < 2:
        raise ModelError(f"the tempogram's BPM axis ({bpm_min:g}-{bpm_max:g}) barely covers {lo:g}-{hi:g} BPM")
    n_in = len(inside)
    inp = keras.Input(shape=(steps, bins), name="tempogram")
    v = layers.GlobalAveragePooling1D(name="time_mean")(inp)
    rescore = layers.Dense(n_in, name="rescore")
    scores = rescore(v)
    if filters:
        x = layers.Reshape((bins, 1), name="bpm_axis")(v)
        for i, d in enumerate(dilations):
            x = layers.Conv1D(filters, kernel, dilation_rate=d, padding="same", activation="relu",
                              name=f"conv_{i + 1}")(x)
        x = layers.Cropping1D((int(inside[0]), int(bins - 1 - inside[-1])), name="tempo_range_bins")(x)
        cnn = layers.Flatten(name="cnn_scores")(layers.Conv1D(1, 1, kernel_initializer="zeros", name="score")(x))
        scores = layers.Add(name="scores")([scores, cnn])
    prob = layers.Softmax(name="bin_probabilities")(scores)
    expect = layers.Dense(1, use_bias=False, trainable=False, name="tempo", dtype="float32")
    out = expect(prob)
    prior = np.exp(-0.5 * (np.log2(axis / prior_bpm) / prior_octaves) ** 2)
    k0 = np.zeros((bins, n_in), dtype="float32")
    k0[inside, np.arange(n_in)] = sharpness * prior[inside]
    rescore.set_weights([k0, np.zeros(n_in, dtype="float32")])
    expect.set_weights([((axis[inside] - lo) / (hi - lo)).astype("float32")[:, None]])
    return keras.Model(inp, out, name=name)


def genre_embedding(genre_model: keras.Model, layer: str | None = None):
    """The genre model's convolutional embedding tensor: the input of its first top-level Dense
    layer (after the last conv block's pooling/flatten), or the output of ``layer``."""
    from keras import layers

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
                 tempo_units=(16, 16), dense_units: int = 128, dropout: float = 0.3, use_tempo: bool = True,
                 name: str = "fusion") -> keras.Model:
    """Inputs: the genre model's feature window and the predicted tempo scaled to [0, 1]
    (shape (1,), named "tempo"), in that order. The genre model's layers up to its embedding
    become the first layers of this model (one flat graph, which exports cleanly), frozen:
    their weights do not change and BatchNorm runs in inference mode. ``use_tempo=False`` is the
    control experiment: the same model with the tempo branch's first layer frozen at zero, so
    the new layers learn from the embedding alone."""
    import keras
    from keras import layers

    emb = genre_embedding(genre_model, embedding_layer)
    for lay in genre_model.layers:
        lay.trainable = False
    if len(emb.shape) > 2:
        emb = layers.Flatten(name="embedding_flatten")(emb)
    bpm = keras.Input(shape=(1,), name="tempo")
    t = bpm
    tempo_layers = [layers.Dense(u, activation="relu", name=f"tempo_dense_{i + 1}") for i, u in enumerate(tempo_units)]
    for lay in tempo_layers:
        t = lay(t)
    x = layers.Concatenate(name="fusion_concat")([emb, t])
    x = layers.Dense(dense_units, activation="relu", name="fusion_dense")(x)
    x = layers.Dropout(dropout, name="fusion_dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="fusion_predictions", dtype="float32")(x)
    model = keras.Model([*genre_model.inputs, bpm], out, name=name)
    if not use_tempo and tempo_layers:
        first = tempo_layers[0]
        first.set_weights([w * 0 for w in first.get_weights()])
        first.trainable = False
    return model
