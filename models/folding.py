"""An inference copy of a Keras model with its BatchNorm layers folded into the layer before them.

In inference a BatchNormalization layer is an affine map per channel,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``. When ``x`` is the output of a linear
convolution or dense layer (no activation) that feeds nothing else, the map folds into that
layer's kernel and bias: ``kernel * s`` and ``(bias - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. The copy computes the same function (up to float rounding)
with one pass over each activation instead of three, and lets TensorFlow fuse the
convolution, its bias and the activation after it into one kernel
(``benchmarks/bench_transfer.py`` uses it for the one pass of the frozen base).

The copy is for inference only (BatchNorm in inference mode: a frozen base, a trained model);
training the copy would not train the original. Models with nothing to fold are returned as
they are. Keras is imported inside the functions (the registry imports without TensorFlow).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


@functools.cache
def _folded_away():
    import keras

    class FoldedBatchNorm(keras.layers.Layer):
        """Stands where a folded BatchNormalization layer stood: passes its input through."""

        def call(self, x, training=None, mask=None):
            return x

    return FoldedBatchNorm


def foldable_pairs(model: keras.Model) -> dict[int, tuple]:
    """``{id(layer): (layer, bn)}`` for each linear Dense/Conv layer whose only consumer is a
    channels-last BatchNormalization layer, and ``{id(bn): (bn, None)}`` for that BatchNorm;
    nested models included."""
    import keras
    from keras import activations, layers

    inside = list(model._flatten_layers(include_self=False))
    own = {id(x) for x in inside}
    # tensors that a model (this one or a nested one) gives out: a layer's output that is one
    # of them is seen outside, so the BatchNorm after it cannot be folded into it
    outputs = {id(t) for m in [model] + [x for x in inside if isinstance(x, keras.Model)]
               for t in keras.tree.flatten(getattr(m, "outputs", None) or [])}
    pairs: dict[int, tuple] = {}
    for bn in inside:
        if not isinstance(bn, layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        if bn.axis not in (-1, len(bn.input.shape) - 1):
            continue
        x = bn._inbound_nodes[0].input_tensors[0]
        src = x._keras_history.operation
        if not isinstance(src, (layers.Conv1D, layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            continue
        if (id(src) not in own or id(x) in outputs  # a model that starts after src, or src's output given out
                or src.activation is not activations.linear or len(src._inbound_nodes) != 1
                or len(src._outbound_nodes) != 1 or getattr(src, "data_format", "channels_last") != "channels_last"
                or getattr(src, "lora_enabled", False) or src.dtype_policy.quantization_mode is not None
                # float32 only: under mixed precision the folded scale would be applied in float16
                or src.compute_dtype != "float32" or bn.compute_dtype != "float32"):
            continue
        pairs[id(src)] = (src, bn)
        pairs[id(bn)] = (bn, None)
    return pairs


def folded_weights(layer, bn) -> list[np.ndarray]:
    """[kernel, bias] of ``layer`` with the inference-mode ``bn`` after it folded in."""
    from keras import layers

    depthwise = isinstance(layer, layers.DepthwiseConv2D)
    kernel = np.asarray(layer.kernel, dtype=np.float64)
    bias = np.asarray(layer.bias, dtype=np.float64) if layer.use_bias else 0.0
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else 0.0
    s = gamma / np.sqrt(np.asarray(bn.moving_variance, dtype=np.float64) + bn.epsilon)
    if kernel.shape[-1] * (kernel.shape[-2] if depthwise else 1) != len(s):
        raise ValueError(f"{layer.name}: {kernel.shape} kernel does not match {bn.name}'s {len(s)} channels")
    # a depthwise kernel is (h, w, in, multiplier): output channel c * multiplier + m
    k = kernel * s.reshape(kernel.shape[-2:]) if depthwise else kernel * s
    b = (bias - np.asarray(bn.moving_mean, dtype=np.float64)) * s + beta
    dtype = layer.kernel.dtype
    return [k.astype(dtype), b.astype(dtype)]


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` for inference with every foldable BatchNorm folded (see the module's
    docstring), or ``model`` itself when there is none. The copy owns its weights (the model's
    values now): later changes to the model do not reach it."""
    import keras

    pairs = foldable_pairs(model)
    if not pairs:
        return model
    passthrough = _folded_away()

    def clone(layer):
        if id(layer) not in pairs:
            return layer.__class__.from_config(layer.get_config())
        if pairs[id(layer)][1] is None:
            return passthrough(name=layer.name)
        return layer.__class__.from_config({**layer.get_config(), "use_bias": True})

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    old = [x for x in model._flatten_layers(include_self=False) if not isinstance(x, keras.layers.InputLayer)]
    new = [x for x in copy._flatten_layers(include_self=False) if not isinstance(x, keras.layers.InputLayer)]
    if [x.name for x in old] != [x.name for x in new]:
        raise RuntimeError(f"the folded copy of {model.name} does not mirror its layers")
    for a, b in zip(old, new, strict=True):
        if isinstance(a, keras.Model):  # a nested model: its layers are in the flattened lists
            continue
        if id(a) in pairs:
            if pairs[id(a)][1] is not None:
                b.set_weights(folded_weights(*pairs[id(a)]))
        elif a.weights:  # the layer's own state, as saving and loading copy it (a Normalization
            store: dict = {}  # layer recomputes its adapted mean and variance on loading)
            a.save_own_variables(store)
            b.load_own_variables(store)
    return copy
