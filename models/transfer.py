"""ImageNet transfer learning on grayscale mel images: VGG16, MobileNet v1 and v2.

The model takes the 1-channel image in [0, 1], repeats it to 3 channels and applies the
base's own preprocessing inside the model (a fixed Normalization layer), so a saved model
needs nothing outside itself. Head: base -> Flatten -> Dense 64 ReLU -> Dense classes
softmax (7,423,882 parameters for MobileNet and 16,812,554 for VGG16 at 256x256, 10 classes).

Phases: ``transfer`` freezes the base and trains the head; ``finetune`` unfreezes the base
with its BatchNorm layers kept in inference mode (frozen statistics) and trains at a low
learning rate.

Keras is imported inside the functions, so importing the registry stays free of TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from genrekit.models.errors import ModelError

if TYPE_CHECKING:
    import keras

# preprocessing expressed as (x - mean) / sqrt(variance) on inputs in [0, 1]
_CAFFE_BGR_MEAN = [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0]
PREPROCESS = {
    "tf": ([0.5] * 3, [0.25] * 3),  # x * 2 - 1: MobileNet v1/v2 (Keras' imagenet weights)
    "caffe": (_CAFFE_BGR_MEAN, [(1 / 255.0) ** 2] * 3),  # x * 255 - BGR means: VGG16
    "torch": ([0.485, 0.456, 0.406], [0.229 ** 2, 0.224 ** 2, 0.225 ** 2]),  # torchvision weights
}
HEAD_LAYERS = ("head_flatten", "head_dense", "head_dropout", "predictions")
BASE_NAME = "base"


def _constructor(arch: str):
    import keras

    apps = keras.applications
    # (constructor, preprocessing, whether it takes a width multiplier ``alpha``)
    return {"vgg16": (apps.VGG16, "caffe", False), "mobilenet": (apps.MobileNet, "tf", True),
            "mobilenetv2": (apps.MobileNetV2, "tf", True)}[arch]


def default_preprocess(arch: str, weights) -> str:
    """The base's own preprocessing; torchvision-converted weight files use "torch"."""
    if isinstance(weights, str) and "torch" in Path(weights).name.lower():
        return "torch"
    return _constructor(arch)[1]


def _make_base(arch: str, input_shape3, weights, alpha: float):
    ctor, _, has_width = _constructor(arch)
    kw = {"alpha": alpha} if has_width else {}
    if weights in (None, "none", "None"):
        w = None
    elif weights == "imagenet":
        w = "imagenet"
    else:
        p = Path(str(weights)).expanduser()
        if not p.is_file():
            raise ModelError(f"weights file not found: {weights}")
        w = str(p)
    try:
        return ctor(input_shape=input_shape3, include_top=False, weights=w, **kw)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001
        text = f"{type(exc).__name__}: {exc}"
        if w == "imagenet" and any(s in text for s in ("URL", "urlopen", "Connection", "resolution",
                                                       "HTTP", "download", "Network", "socket")):
            raise ModelError(f"could not download the ImageNet weights for {arch} (offline?); pass a "
                             "weights file instead: --weights PATH/TO/*.weights.h5") from None
        if w not in (None, "imagenet"):
            raise ModelError(f"weights file {w} does not fit {arch}: {str(exc).splitlines()[0]}") from None
        raise


def build_transfer(arch: str, input_shape, num_classes: int, weights="imagenet", dense_units: int = 64,
                   dropout: float = 0.0, preprocess: str | None = None, alpha: float = 1.0,
                   bn_inference: bool = True) -> keras.Model:
    """``bn_inference=True`` (transfer and fine-tuning) runs the base's BatchNorm layers in
    inference mode with their pretrained statistics; ``False`` lets them learn (training a
    randomly initialised base from scratch)."""
    import keras
    from keras import layers

    h, w, c = (tuple(input_shape) + (1,))[:3] if len(input_shape) == 2 else tuple(input_shape)
    if c not in (1, 3):
        raise ModelError(f"{arch} needs 1- or 3-channel images, got {c} channels")
    preprocess = preprocess or default_preprocess(arch, weights)
    if preprocess not in PREPROCESS:
        raise ModelError(f"unknown preprocessing {preprocess!r} (known: {', '.join(PREPROCESS)})")
    inp = keras.Input(shape=(h, w, c), name="image")
    x = layers.Concatenate(axis=-1, name="gray_to_rgb")([inp, inp, inp]) if c == 1 else inp
    mean, var = PREPROCESS[preprocess]
    x = layers.Normalization(axis=-1, mean=mean, variance=var, name="preprocess")(x)
    base = _make_base(arch, (h, w, 3), weights, alpha)
    base.name = BASE_NAME
    x = base(x, training=False) if bn_inference else base(x)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name=arch)


def build_vgg16(input_shape, num_classes, **kw):
    """VGG16 transfer model (registry builder): see :func:`build_transfer`."""
    return build_transfer("vgg16", input_shape, num_classes, **kw)


def build_mobilenet(input_shape, num_classes, **kw):
    """MobileNet v1 transfer model (registry builder): see :func:`build_transfer`."""
    return build_transfer("mobilenet", input_shape, num_classes, **kw)


def build_mobilenetv2(input_shape, num_classes, **kw):
    """MobileNet v2 transfer model (registry builder): see :func:`build_transfer`."""
    return build_transfer("mobilenetv2", input_shape, num_classes, **kw)


def base_of(model: keras.Model):
    """The pretrained base layer of a transfer model (a ModelError when it has none)."""
    try:
        return model.get_layer(BASE_NAME)
    except ValueError:
        raise ModelError(f"model {model.name} has no pretrained base (is it a transfer model?)") from None


def set_phase(model: keras.Model, phase: str) -> None:
    """``transfer``: base frozen. ``finetune``: base trainable, BatchNorm layers frozen."""
    from keras import layers

    base = base_of(model)
    if phase == "transfer":
        base.trainable = False
    elif phase == "finetune":
        base.trainable = True
        for layer in base._flatten_layers(include_self=False):
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    else:
        raise ModelError(f"unknown phase {phase!r} for a transfer model (transfer or finetune)")


def split_at_base(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(extractor, head): the frozen part up to the base's output, and the trainable head
    sharing the full model's layer objects, so training the head trains the full model."""
    import keras

    base_out = model.get_layer("head_flatten").input
    extractor = keras.Model(model.inputs, base_out, name="extractor")
    h_in = keras.Input(shape=tuple(base_out.shape[1:]), name="base_features")
    x = h_in
    for name in HEAD_LAYERS:
        try:
            x = model.get_layer(name)(x)
        except ValueError:
            continue
    return extractor, keras.Model(h_in, x, name="head")
