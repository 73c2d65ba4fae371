"""The cached transfer phase's one pass of the frozen base (genrekit.tasks.genre_windows.base_outputs)."""
import re

import numpy as np
import pytest


def test_base_outputs_match_the_extractor_in_order_with_a_partial_last_batch():
    from genrekit.models import build_model
    from genrekit.models.transfer import set_phase, split_at_base
    from genrekit.tasks.genre_windows import base_outputs

    m = build_model("mobilenet", (32, 32, 1), 3, weights=None, bn_inference=True)
    set_phase(m, "transfer")
    extractor, _ = split_at_base(m)
    x = np.random.default_rng(0).random((5, 32, 32, 1)).astype("float32")
    out = np.asarray(base_outputs(extractor, iter([x[0:2], x[2:4], x[4:5]]), 5))  # a partial last batch
    assert out.shape == (5, *extractor.output_shape[1:]) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.asarray(extractor(x, training=False)), rtol=1e-5, atol=1e-6)
    # each row is its own input's output, not a neighbour's
    np.testing.assert_allclose(out[4], np.asarray(extractor(x[4:], training=False))[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fused_adam_follows_keras_adam():
    import keras

    from genrekit.tasks.genre_windows import fused_adam

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


def test_cached_batches_come_in_the_order_of_a_shuffled_tensor_slice_dataset():
    """The head's batches are gathered from the cached array where it lies, in the order (and
    per-epoch reshuffling) that ``from_tensor_slices(...).shuffle(n, seed).batch(b)`` gives."""
    import tensorflow as tf

    from genrekit.tasks.genre_windows import cached_batches

    rng = np.random.default_rng(3)
    f, y = rng.random((30, 4, 2)).astype("float32"), rng.integers(0, 5, 23)
    rows = np.arange(7, 30)  # 23 rows of the cache, not the first 7
    ours = cached_batches(tf.Variable(f, trainable=False), rows, y, 5, seed=7)
    ref = tf.data.Dataset.from_tensor_slices((f[7:], y)).shuffle(23, seed=7, reshuffle_each_iteration=True).batch(5)
    epochs = []
    for _ in range(2):
        got, want = list(ours), list(ref)
        assert [len(b[0]) for b in got] == [5, 5, 5, 5, 3]
        for (xa, ya), (xb, yb) in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb))
            np.testing.assert_array_equal(np.asarray(ya), np.asarray(yb))
        epochs.append(np.concatenate([np.asarray(b[1]) for b in got]))
    assert not np.array_equal(epochs[0], epochs[1]) or len(set(y)) == 1  # reshuffled every epoch


def test_base_outputs_refuse_a_count_that_does_not_match():
    from genrekit.models import build_model
    from genrekit.models.transfer import set_phase, split_at_base
    from genrekit.tasks.genre_windows import base_outputs

    m = build_model("mobilenet", (32, 32, 1), 3, weights=None)
    set_phase(m, "transfer")
    extractor, _ = split_at_base(m)
    x = np.zeros((3, 32, 32, 1), np.float32)
    for n in (2, 4):
        with pytest.raises(RuntimeError, match="outputs"):
            base_outputs(extractor, iter([x]), n)


def test_feature_batches_read_ahead_in_order_and_name_a_broken_file(tiny_features, tmp_path):
    import shutil

    from genrekit.data_tools.errors import DataError
    from genrekit.data_tools.loaders import load_arrays
    from genrekit.data_tools.manifest import read_manifest
    from genrekit.tasks.genre_windows import feature_batches

    rows = [r for r in read_manifest(tiny_features) if r["feature"] == "mel"][:11]
    got = list(feature_batches(tiny_features, rows, "mel", 4))
    assert [len(x) for x in got] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(got), load_arrays(tiny_features, rows, "mel"))
    assert list(feature_batches(tiny_features, [], "mel", 4)) == []
    # a truncated file in the third batch: the first two come, then an error naming it
    copy = tmp_path / "feats"
    shutil.copytree(tiny_features, copy)
    bad = copy / rows[9]["path"]
    bad.write_bytes(bad.read_bytes()[:40])
    it = feature_batches(copy, rows, "mel", 4)
    assert len(next(it)) == 4 and len(next(it)) == 4
    with pytest.raises(DataError, match=re.escape(rows[9]["path"].split("/")[-1])):
        next(it)
