"""musicnn and its VGG baseline, re-implemented in Keras 3, loading the pretrained TF1
checkpoints shipped in the ``musicnn`` 0.1.0 wheel (ISC licence; J. Pons and X. Serra,
"musicnn: pre-trained convolutional neural networks for music audio tagging", ISMIR 2019
late-breaking demo). The layer structure follows the published architecture:

musicnn — input (187 frames x 96 log-mel bands) -> BatchNorm ->
  front-end: timbral convs 7x38 and 7x67 (204 filters, time-padded 'valid') and temporal
  convs 128x1, 64x1, 32x1 (51 filters, 'same'), each ReLU -> BatchNorm -> max over
  frequency; concatenated (561 channels) ->
  mid-end: three 7-frame convs of 64 filters (ReLU -> BatchNorm), the 2nd and 3rd residual;
  front- and mid-end outputs concatenated (753) ->
  back-end: max and mean over time, interleaved (1506) -> BatchNorm -> Dropout .5 ->
  Dense 200 ReLU -> BatchNorm (the 200-unit "penultimate" embedding) -> Dropout .5 ->
  Dense 50 (tag logits).
vgg — five 3x3 convs of 128 filters (ReLU -> BatchNorm -> max-pool 4x1/2, 2x2, 2x2, 2x2,
  4x4 -> Dropout .25) -> Flatten (256) -> Dense 50.

The checkpoints' variables are listed in ../shared/weights/musicnn_ckpt_vars.txt; they map
one to one onto the layers below (TF1's automatic names ``conv2d_N``/``batch_normalization_N``
in creation order).

Keras is imported inside the functions, so importing the registry stays free of TensorFlow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrekit.models.errors import ModelError
from genrekit.models.track import build_track_classifier

if TYPE_CHECKING:
    import keras

N_FRAMES, N_MELS = 187, 96
CHECKPOINTS = {"msd": "MSD_musicnn", "mtt": "MTT_musicnn", "msd_vgg": "MSD_vgg", "mtt_vgg": "MTT_vgg"}


def _bn(name):
    from keras import layers

    return layers.BatchNormalization(epsilon=1e-3, name=name)


def musicnn_backbone(frames: int = N_FRAMES, n_mels: int = N_MELS, midend_filters: int = 64,
                     backend_units: int = 200, num_tags: int = 50, name: str = "musicnn") -> keras.Model:
    """The full tagging network: outputs the 200-unit penultimate embedding and the tag logits."""
    import keras
    from keras import layers

    inp = keras.Input((frames, n_mels), name="logmel")
    x = layers.Reshape((frames, n_mels, 1), name="expand")(inp)
    x = _bn("batch_normalization")(x)
    x_pad = layers.ZeroPadding2D(((3, 3), (0, 0)), name="pad_time")(x)
    feats = []
    conv_i, bn_i = 0, 1

    def cname():
        return "conv2d" if conv_i == 0 else f"conv2d_{conv_i}"

    for width in (int(0.4 * n_mels), int(0.7 * n_mels)):  # timbral 7x38, 7x67
        h = layers.Conv2D(int(1.6 * 128), (7, width), padding="valid", activation="relu", name=cname())(x_pad)
        conv_i += 1
        h = _bn(f"batch_normalization_{bn_i}")(h)
        bn_i += 1
        h = layers.MaxPooling2D((1, h.shape[2]), name=f"freq_pool_{len(feats)}")(h)
        feats.append(layers.Reshape((frames, h.shape[-1]), name=f"front_{len(feats)}")(h))
    for length in (128, 64, 32):  # temporal
        h = layers.Conv2D(int(1.6 * 32), (length, 1), padding="same", activation="relu", name=cname())(x)
        conv_i += 1
        h = _bn(f"batch_normalization_{bn_i}")(h)
        bn_i += 1
        h = layers.MaxPooling2D((1, h.shape[2]), name=f"freq_pool_{len(feats)}")(h)
        feats.append(layers.Reshape((frames, h.shape[-1]), name=f"front_{len(feats)}")(h))
    front = layers.Concatenate(axis=-1, name="frontend")(feats)  # (frames, 561)
    mids = [front]
    h = front
    for k in range(3):
        c = layers.ZeroPadding1D(3, name=f"mid_pad_{k}")(h)
        c = layers.Conv1D(midend_filters, 7, padding="valid", activation="relu", name=cname())(c)
        conv_i += 1
        c = _bn(f"batch_normalization_{bn_i}")(c)
        bn_i += 1
        h = c if k == 0 else layers.Add(name=f"mid_res_{k}")([c, h])
        mids.append(h)
    mid = layers.Concatenate(axis=-1, name="midend")(mids)  # (frames, 753)
    mx = layers.Reshape((mid.shape[-1], 1), name="max_col")(layers.GlobalMaxPooling1D(name="max_pool")(mid))
    mn = layers.Reshape((mid.shape[-1], 1), name="mean_col")(layers.GlobalAveragePooling1D(name="mean_pool")(mid))
    pooled = layers.Flatten(name="pooled")(layers.Concatenate(axis=-1, name="max_mean")([mx, mn]))  # interleaved
    h = _bn(f"batch_normalization_{bn_i}")(pooled)
    bn_i += 1
    h = layers.Dropout(0.5, name="backend_dropout")(h)
    h = layers.Dense(backend_units, activation="relu", name="dense")(h)
    pen = _bn(f"batch_normalization_{bn_i}")(h)
    logits = layers.Dense(num_tags, name="dense_1")(layers.Dropout(0.5, name="penultimate_dropout")(pen))
    return keras.Model(inp, {"penultimate": pen, "logits": logits}, name=name)


def vgg_backbone(frames: int = N_FRAMES, n_mels: int = N_MELS, filters: int = 128, num_tags: int = 50,
                 name: str = "musicnn_vgg") -> keras.Model:
    """musicnn's VGG-like baseline as a Keras model (5 conv blocks, tag outputs), untrained."""
    import keras
    from keras import layers

    inp = keras.Input((frames, n_mels), name="logmel")
    x = layers.Reshape((frames, n_mels, 1), name="expand")(inp)
    x = _bn("batch_normalization")(x)
    pools = [((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4))]
    for i, (pool, stride) in enumerate(pools, start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{i}CNN")(x)
        x = _bn(f"batch_normalization_{i}")(x)
        x = layers.MaxPooling2D(pool, strides=stride, name=f"pool{i}")(x)
        x = layers.Dropout(0.25, name=f"dropout{i}")(x)
    flat = layers.Flatten(name="flat_pool5")(x)
    logits = layers.Dense(num_tags, name="dense")(flat)
    return keras.Model(inp, {"penultimate": flat, "logits": logits}, name=name)


def load_checkpoint(model: keras.Model, prefix: str | Path) -> None:
    """Copy a musicnn TF1 checkpoint into ``model`` (layer names = checkpoint scopes)."""
    import tensorflow as tf
    from keras import layers

    prefix = str(prefix)
    if not prefix.endswith("/"):
        prefix += "/"
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)  # files are literally ".index", ".data-…"
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot read the musicnn checkpoint at {prefix}: {str(exc).splitlines()[0]}") from None
    names = reader.get_variable_to_shape_map()
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            keys = ("gamma", "beta", "moving_mean", "moving_variance")
        elif isinstance(layer, (layers.Conv2D, layers.Conv1D, layers.Dense)):
            keys = ("kernel", "bias")
        else:
            continue
        vals = []
        for k in keys:
            full = f"{layer.name}/{k}"
            if full not in names:
                raise ModelError(f"musicnn checkpoint {prefix} lacks {full}: wrong checkpoint for this model?")
            v = reader.get_tensor(full)
            if isinstance(layer, layers.Conv1D) and v.ndim == 4:  # [7, C, 1, F] -> [7, C, F]
                v = v[:, :, 0, :]
            vals.append(v)
        want = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(v.shape) for v in vals] != want:
            raise ModelError(f"musicnn checkpoint {prefix}: {layer.name} has shapes "
                             f"{[v.shape for v in vals]}, the model wants {want}")
        layer.set_weights(vals)


def pretrained_backbone(which: str = "msd", weights_dir: str | Path | None = None) -> keras.Model:
    """A musicnn (``msd``, ``mtt``) or vgg (``msd_vgg``, ``mtt_vgg``) backbone with its weights."""
    if which not in CHECKPOINTS:
        raise ModelError(f"unknown musicnn weights {which!r} (known: {', '.join(CHECKPOINTS)})")
    model = vgg_backbone() if which.endswith("vgg") else musicnn_backbone()
    if weights_dir is not None:
        load_checkpoint(model, Path(weights_dir) / CHECKPOINTS[which])
    return model


def checkpoint_name(weights: str | None, variant: str = "musicnn") -> str:
    """The checkpoint a --weights value names for a variant (random weights: the msd layout)."""
    if weights in (None, "none", "None"):
        return "msd_vgg" if variant == "vgg" else "msd"
    if weights not in ("msd", "mtt", "msd_vgg", "mtt_vgg"):
        raise ModelError(f"musicnn weights are msd or mtt (or none), not {weights!r}")
    return weights if variant != "vgg" or weights.endswith("vgg") else f"{weights}_vgg"


def embedding_model(input_shape, weights: str | None = "msd", weights_dir: str | Path | None = None,
                    variant: str = "musicnn", embedding: str = "penultimate") -> keras.Model:
    """A pretrained backbone cut at the chosen embedding layer, named "base": one 187 x 96 log-mel
    window -> "penultimate" (musicnn: 200 units; vgg: its 256-d pool5), "pooled" (musicnn: the
    1,506-d max+mean pooled mid-end) or "taggram" (the 50 tag probabilities)."""
    import keras
    from keras import layers

    frames, n_mels = tuple(input_shape)[:2]
    if (frames, n_mels) != (N_FRAMES, N_MELS):
        raise ModelError(f"musicnn takes {N_FRAMES} frames x {N_MELS} mel bands; got {frames} x {n_mels} "
                         "(render the data with `genrekit augment --features musicnn`)")
    which = checkpoint_name(weights, variant)
    wdir = None if weights in (None, "none", "None") else (weights_dir or find_weights_dir())
    full = pretrained_backbone(which, wdir)
    if embedding == "penultimate":
        emb = full.output["penultimate"]
    elif embedding == "taggram":
        emb = layers.Activation("sigmoid", name="taggram")(full.output["logits"])
    elif embedding == "pooled" and variant != "vgg":
        emb = full.get_layer("pooled").output
    else:
        raise ModelError(f"embedding {embedding!r}: choose penultimate, taggram" +
                         (" or pooled" if variant != "vgg" else " (vgg has no pooled mid-end)"))
    base = keras.Model(full.input, emb, name="base")
    return base


def build_musicnn_classifier(input_shape, num_classes: int, weights: str | None = "msd",
                             weights_dir: str | Path | None = None, dropout: float = 0.5, l2: float = 1e-3,
                             variant: str = "musicnn", bn_inference: bool = True,
                             embedding: str = "penultimate") -> keras.Model:
    """Genre classifier on a pretrained backbone: window (187 x 96 log-mel) -> an embedding of
    the backbone -> Dropout -> Dense(classes, softmax, L2). ``embedding`` chooses the layer that
    feeds the head: "penultimate" (default: the 200-unit layer; vgg: its 256-d pool5),
    "pooled" (musicnn: the 1,506-d max+mean pooled mid-end features) or "taggram" (the 50 tag
    probabilities). The backbone is the layer named "base", like the ImageNet models', so the
    transfer/finetune phases and the cached-embedding path apply unchanged."""
    import keras
    from keras import layers

    frames, n_mels = input_shape[:2]
    base = embedding_model(input_shape, weights, weights_dir, variant, embedding)
    inp = keras.Input((frames, n_mels), name="logmel")
    x = base(inp, training=False) if bn_inference else base(inp)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32",
                       kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(x)
    return keras.Model(inp, out, name=f"{variant}_{checkpoint_name(weights, variant)}")


def build_musicnn(input_shape, num_classes, **kw):
    """The musicnn classifier (registry builder): see :func:`build_musicnn_classifier`."""
    return build_musicnn_classifier(input_shape, num_classes, variant="musicnn", **kw)


def build_musicnn_vgg(input_shape, num_classes, **kw):
    """The musicnn VGG classifier (registry builder): see :func:`build_musicnn_classifier`."""
    return build_musicnn_classifier(input_shape, num_classes, variant="vgg", **kw)


def build_musicnn_track(input_shape, num_classes: int, weights: str | None = "msd",
                        weights_dir: str | Path | None = None, embedding: str = "penultimate",
                        stats: str = "mean,std", variant: str = "musicnn", bn_inference: bool = True,
                        variants: bool = False) -> keras.Model:
    """genrekit's default genre model: every window of a track through the frozen MSD musicnn,
    its ``embedding`` (default the 200-unit penultimate layer) pooled over the whole track by
    ``stats`` (default mean and standard deviation), then a softmax layer fitted as a
    regularised logistic regression (``genrekit train`` does this; see genrekit.models.track).
    ``variants`` is read by the training, not here: fit on augment's training variants too
    (default: the original recordings only, which held up better on music from outside GTZAN)."""

    stats = tuple(s.strip() for s in stats.split(",") if s.strip()) if isinstance(stats, str) else tuple(stats)
    base = embedding_model(input_shape, weights, weights_dir, variant, embedding)
    return build_track_classifier(base, num_classes, stats=stats, name=f"{variant}_track")


def find_weights_dir() -> Path:
    """Where ``genrekit weights fetch musicnn`` put the checkpoints."""
    root = Path(os.environ.get("GENREKIT_CACHE") or Path.home() / ".cache" / "genrekit") / "musicnn"
    if not (root / "MSD_musicnn" / ".index").is_file():
        raise ModelError(f"musicnn weights are not installed (looked in {root}); run "
                         "`genrekit weights fetch musicnn` (or `--from musicnn-0.1.0-py3-none-any.whl`)")
    return root


def tags_probabilities(model: keras.Model, windows: np.ndarray) -> np.ndarray:
    """Sigmoid tag probabilities per window (the original model's output)."""
    logits = np.asarray(model.predict(windows, verbose=0)["logits"])
    return 1.0 / (1.0 + np.exp(-logits))
