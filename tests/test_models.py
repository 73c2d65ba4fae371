import keras
import numpy as np
import pytest

from genrekit.models import ModelError, build_model, get_arch
from genrekit.models.transfer import set_phase, split_at_base


@pytest.mark.parametrize("name,expected", [("cnn", 15_764_554), ("mobilenet", 7_423_882), ("vgg16", 16_812_554)])
def test_parameter_counts_match_the_studies(name, expected):
    kw = {"weights": None} if get_arch(name).is_transfer else {}
    m = build_model(name, (256, 256, 1), 10, **kw)
    assert m.count_params() == expected
    assert m.output_shape == (None, 10)


# every registered builder's output and named layers: tests/test_registry.py


def test_hyper_parameters_are_overridable():
    m = build_model("cnn", (32, 32, 1), 3, dense_units=16, dropout=0.1)
    assert m.get_layer("dense").units == 16
    assert m.get_layer("dropout_1").rate == pytest.approx(0.1)
    with pytest.raises(ModelError):
        build_model("cnn", (32, 32, 1), 3, no_such_option=1)


def test_unknown_architecture():
    with pytest.raises(ModelError, match="unknown architecture"):
        get_arch("resnet9000")


def test_transfer_phases_and_head_split():
    m = build_model("mobilenet", (32, 32, 1), 3, weights=None)
    set_phase(m, "transfer")
    frozen = len(m.trainable_weights)
    assert frozen == 4  # head_dense and predictions kernels + biases
    set_phase(m, "finetune")
    bns = [layer for layer in m.get_layer("base")._flatten_layers(include_self=False)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(b.trainable for b in bns)
    assert len(m.trainable_weights) > frozen
    extractor, head = split_at_base(m)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(head(extractor(x))), np.asarray(m(x)), rtol=1e-5, atol=1e-6)
    assert head.get_layer("predictions") is m.get_layer("predictions")


@pytest.mark.slow
def test_scratch_training_of_a_transfer_architecture_trains_batchnorm(tiny_features, tmp_path):
    from genrekit.runs import load_model
    from genrekit.train import TrainOptions, train

    r = train(TrainOptions(data=str(tiny_features), arch="mobilenet", phase="scratch", epochs=1, batch_size=8,
                           verbose=0, out=str(tmp_path / "s")))
    m = load_model(f"{r.run}/model.keras")
    bns = [layer for layer in m.get_layer("base")._flatten_layers(include_self=False)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(b.trainable for b in bns)
    # moving statistics moved away from their initial values (mean 0): BN ran in training mode
    assert any(abs(float(np.asarray(b.moving_mean).mean())) > 0 for b in bns)
