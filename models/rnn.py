"""Recurrent models on MFCC sequences (frames, n_mfcc).

Keras is imported inside each builder, so importing the registry stays free of TensorFlow.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def build_lstm(input_shape, num_classes: int, units: int = 128, dropout: float = 0.3,
               name: str = "lstm") -> keras.Model:
    """Two bidirectional LSTM layers of 128 units with dropout .3 on MFCC sequences.
    The input is standardised per coefficient by a Normalization layer adapted on the
    training split (its statistics are saved with the model)."""
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(input_shape), name="mfcc")
    x = layers.Normalization(axis=-1, name="input_norm")(inp)
    x = layers.Bidirectional(layers.LSTM(units, return_sequences=True), name="bilstm_1")(x)
    x = layers.Dropout(dropout, name="dropout_1")(x)
    x = layers.Bidirectional(layers.LSTM(units), name="bilstm_2")(x)
    x = layers.Dropout(dropout, name="dropout_2")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


def build_crnn(input_shape, num_classes: int, filters: int = 32, lstm_units: int = 64,
               dense_units: int = 64, dropout: float = 0.3, name: str = "crnn") -> keras.Model:
    """Three conv blocks (32 filters; kernels 3x3, 3x3, 2x2; max-pool 3x3, 3x3, 2x2 with
    stride 2; BatchNorm), dropout .3, two BiLSTM layers, Dense 64 + dropout .3, classes."""
    import keras
    from keras import layers

    frames, coeffs = input_shape
    inp = keras.Input(shape=(frames, coeffs), name="mfcc")
    x = layers.Normalization(axis=-1, name="input_norm")(inp)
    x = layers.Reshape((frames, coeffs, 1), name="to_image")(x)
    for i, (k, p) in enumerate([(3, 3), (3, 3), (2, 2)]):
        x = layers.Conv2D(filters, k, padding="same", activation="relu", name=f"conv_{i + 1}")(x)
        x = layers.MaxPooling2D(p, strides=2, padding="same", name=f"pool_{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn_{i + 1}")(x)
    x = layers.Dropout(dropout, name="dropout_conv")(x)
    t, f, c = x.shape[1], x.shape[2], x.shape[3]
    x = layers.Reshape((t, f * c), name="to_sequence")(x)
    x = layers.Bidirectional(layers.LSTM(lstm_units, return_sequences=True), name="bilstm_1")(x)
    x = layers.Bidirectional(layers.LSTM(lstm_units), name="bilstm_2")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout_dense")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name=name)
