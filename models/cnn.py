"""Convolutional and dense models trained from scratch.

Keras is imported inside each builder, so importing the registry stays free of TensorFlow.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def build_fcnn(input_shape, num_classes: int, units=(512, 256), dropout: float = 0.0,
               name: str = "fcnn") -> keras.Model:
    """Flatten -> Dense 512 -> Dense 256 -> classes (ReLU), the GTZAN MFCC baseline."""
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(input_shape), name="features")
    x = layers.Normalization(axis=-1, name="input_norm")(inp)
    x = layers.Flatten(name="flatten")(x)
    for i, u in enumerate(units):
        x = layers.Dense(u, activation="relu", name=f"dense_{i + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


def build_cnn(input_shape, num_classes: int, filters=(32, 64), dense_units: int = 64,
              dropout: float = 0.35, name: str = "cnn") -> keras.Model:
    """The custom CNN of the mel-spectrogram/MobileNet study: Conv32 3x3 -> MaxPool 2 ->
    Dropout .35 -> Conv64 3x3 -> MaxPool 2 -> Dropout .35 -> Flatten -> Dense 64 ->
    Dropout .35 -> classes. 15,764,554 parameters at 256x256x1 with 10 classes."""
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(input_shape), name="image")
    x = inp
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, activation="relu", name=f"conv_{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool_{i + 1}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout_dense")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


def build_cnn_bn(input_shape, num_classes: int, filters=(32, 64, 128, 256), dense_units: int = 256,
                 pooling: str = "gap", name: str = "cnn_bn") -> keras.Model:
    """Four 3x3 convs with BatchNorm before ReLU, max-pool after the 2nd and 4th, Dense 256
    with BatchNorm, classes. ``pooling="gap"`` (default) averages the last feature map
    before the dense layer; ``"flatten"`` flattens it (268 M parameters at 256x256)."""
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(input_shape), name="image")
    x = inp
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv_{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn_{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu_{i + 1}")(x)
        if i % 2 == 1:
            x = layers.MaxPooling2D(2, name=f"pool_{i + 1}")(x)
    x = (layers.GlobalAveragePooling2D(name="gap")(x) if pooling == "gap"
         else layers.Flatten(name="flatten")(x))
    x = layers.Dense(dense_units, use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(name="bn_dense")(x)
    x = layers.Activation("relu", name="relu_dense")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


def build_cnn64x400(input_shape, num_classes: int, filters=(64, 128, 128), dense_units: int = 128,
                    name: str = "cnn64x400") -> keras.Model:
    """The compact CNN of the tempo study on 64-band x 400-frame dB mel inputs. Each mel band is
    standardised with the training split's mean and std (a Normalization layer adapted at
    training time and saved with the model); then 64 filters 5x5 -> BatchNorm -> ReLU ->
    MaxPool 4x4; 128 filters 5x5 -> BatchNorm -> ReLU -> MaxPool 4x4; 128 filters 3x3 ->
    BatchNorm -> ReLU -> MaxPool 2x1 (over bands); Dense 128 ReLU; classes. Kaiming-uniform
    weights, zero biases."""
    import keras
    from keras import layers

    frames, bands = input_shape
    init = keras.initializers.HeUniform()
    inp = keras.Input(shape=(frames, bands), name="melspec")
    x = layers.Normalization(axis=-1, name="input_norm")(inp)  # per mel band
    x = layers.Permute((2, 1), name="bands_by_frames")(x)
    x = layers.Reshape((bands, frames, 1), name="to_image")(x)
    for i, (f, k, pool) in enumerate(zip(filters, (5, 5, 3), ((4, 4), (4, 4), (2, 1)), strict=True)):
        x = layers.Conv2D(f, k, padding="same", kernel_initializer=init, bias_initializer="zeros",
                          name=f"conv_{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn_{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu_{i + 1}")(x)
        x = layers.MaxPooling2D(pool, name=f"pool_{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_initializer=init, name="dense")(x)
    out = layers.Dense(num_classes, activation="softmax", kernel_initializer=init, name="predictions",
                       dtype="float32")(x)
    return keras.Model(inp, out, name=name)
