"""BatchNorm folding (genrekit.models.folding): the inference copy computes what the model
computes, for every architecture, and owns its weights."""
import numpy as np
import pytest

from genrekit.models.folding import fold_batchnorm, foldable_pairs
from genrekit.models.registry import REGISTRY
from tests.test_registry import _tiny_model


def _randomise_batchnorm(model, seed=0):
    """Statistics far from the initial (0, 1, 1, 0), so that folding them changes the kernels."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([w for w in (rng.uniform(0.5, 2.0, n) if layer.scale else None,
                                           rng.normal(0, 0.5, n) if layer.center else None,
                                           rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)) if w is not None])


@pytest.mark.parametrize("name", [n for n in REGISTRY if n != "fusion"])
def test_the_folded_copy_computes_what_the_model_computes(name):
    import keras

    model, shapes = _tiny_model(name)
    _randomise_batchnorm(model)
    x = np.random.default_rng(1).random((3, *shapes[0])).astype("float32") * 5 + 3
    for layer in model._flatten_layers(include_self=False):  # an input_norm adapted far from (0, 1)
        if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            layer.adapt(x)
    want = np.asarray(model(x, training=False))
    pairs = foldable_pairs(model)
    folded = fold_batchnorm(model)
    if not pairs:
        assert folded is model
        return
    assert folded is not model
    n_bn = [sum(isinstance(layer, keras.layers.BatchNormalization) for layer in m._flatten_layers(include_self=False))
            for m in (model, folded)]
    assert n_bn[1] == n_bn[0] - len(pairs) // 2  # each folded BatchNorm is gone from the copy
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), want, rtol=1e-4, atol=1e-5)


def test_what_folds_in_the_transfer_and_scratch_models():
    names = {}
    for name in ("mobilenet", "mobilenetv2", "cnn64x400", "musicnn"):
        model, _ = _tiny_model(name)
        names[name] = sorted(layer.name for layer, bn in foldable_pairs(model).values() if bn is not None)
    assert len(names["mobilenet"]) == 27  # every conv of MobileNet v1 (conv1, 13 depthwise, 13 pointwise)
    assert "conv_pw_13" in names["mobilenet"] and "conv_dw_1" in names["mobilenet"]
    assert len(names["mobilenetv2"]) == 52
    assert names["cnn64x400"] == ["conv_1", "conv_2", "conv_3"]
    assert names["musicnn"] == []  # its BatchNorm layers come after the ReLU: nothing folds


def test_the_copy_owns_its_weights_and_a_conv_with_an_activation_is_not_folded():
    import keras

    inp = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="a")(inp)
    a = keras.layers.BatchNormalization(name="bn_a")(a)
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(a)  # BN after an activation
    b = keras.layers.BatchNormalization(name="bn_b")(b)
    c = keras.layers.Conv2D(4, 1, name="c")(b)
    side = keras.layers.BatchNormalization(name="bn_c")(c)
    out = keras.layers.Add()([c, side])  # c feeds two layers: its BatchNorm cannot fold into it
    model = keras.Model(inp, out)
    _randomise_batchnorm(model, seed=3)
    assert sorted(layer.name for layer, bn in foldable_pairs(model).values() if bn is not None) == ["a"]
    x = np.random.default_rng(2).random((2, 8, 8, 2)).astype("float32")
    folded = fold_batchnorm(model)
    want = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), want, rtol=1e-4, atol=1e-5)
    model.get_layer("c").set_weights([w * 0 for w in model.get_layer("c").get_weights()])
    assert not np.allclose(np.asarray(model(x, training=False)), want)
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), want, rtol=1e-4, atol=1e-5)


def test_a_conv_seen_from_outside_is_not_folded():
    """A conv whose output is also a model output, or that lies before the model's own input,
    keeps its BatchNorm."""
    import keras

    def conv_bn():
        inp = keras.Input((6, 6, 2))
        t = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inp)
        return inp, t, keras.layers.BatchNormalization(name="bn")(t)

    inp, t, u = conv_bn()
    both = keras.Model(inp, [u, t])  # the conv's output is given out too
    assert foldable_pairs(both) == {} and fold_batchnorm(both) is both
    inp, t, u = conv_bn()
    after = keras.Model(t, u)  # a model that starts at the conv's output
    assert foldable_pairs(after) == {} and fold_batchnorm(after) is after
    inp, t, u = conv_bn()
    whole = keras.Model(inp, u)  # nothing seen from outside: folds
    assert sorted(layer.name for layer, b in foldable_pairs(whole).values() if b is not None) == ["conv"]


def test_nothing_folds_under_mixed_precision():
    import keras

    keras.config.set_dtype_policy("mixed_float16")
    try:
        inp = keras.Input((6, 6, 2))
        model = keras.Model(inp, keras.layers.BatchNormalization()(keras.layers.Conv2D(3, 3, use_bias=False)(inp)))
    finally:
        keras.config.set_dtype_policy("float32")
    assert foldable_pairs(model) == {} and fold_batchnorm(model) is model
