"""The cached transfer phase's one pass of the frozen base (genrekit.genre.base_outputs)."""
import numpy as np


def test_base_outputs_match_the_extractor_in_order_with_a_partial_last_batch():
    import tensorflow as tf

    from genrekit.genre import base_outputs
    from genrekit.models import build_model
    from genrekit.models.transfer import set_phase, split_at_base

    m = build_model("mobilenet", (32, 32, 1), 3, weights=None, bn_inference=True)
    set_phase(m, "transfer")
    extractor, _ = split_at_base(m)
    x = np.random.default_rng(0).random((5, 32, 32, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(5))).batch(2)  # batches of 2, 2, 1
    out = base_outputs(extractor, ds, 5)
    assert out.shape == (5, *extractor.output_shape[1:]) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.asarray(extractor(x, training=False)), rtol=1e-5, atol=1e-6)
    # each row is its own input's output, not a neighbour's
    np.testing.assert_allclose(out[4], np.asarray(extractor(x[4:], training=False))[0], rtol=1e-5, atol=1e-6)


def test_fused_adam_follows_keras_adam():
    import keras

    from genrekit.genre import fused_adam

    sgd = keras.optimizers.SGD(0.1)
    assert fused_adam(sgd) is sgd
    results = []
    for fused in (False, True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
        opt = keras.optimizers.Adam(0.01, epsilon=1e-6)
        model.compile(optimizer=fused_adam(opt) if fused else opt,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert (type(model.optimizer).__name__ == "FusedAdam") is fused
        start = [np.asarray(w) for w in model.weights]
        rng = np.random.default_rng(1)
        x, y = rng.random((64, 16)).astype("float32"), rng.integers(0, 3, 64)
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        results.append([np.asarray(w) for w in model.weights])
    for a, b, s in zip(*results, start, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
        assert np.abs(b - s).max() > 1e-3  # the fused updates moved every weight
    assert int(model.optimizer.iterations) == 12
