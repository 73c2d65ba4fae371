"""On-the-fly image augmentation: training only, seeded, and it turns off the cached-base path."""
import json
from pathlib import Path

import numpy as np
import pytest

from genrekit.errors import UserError
from genrekit.models import ModelError
from genrekit.models.image_aug import image_augmenter
from genrekit.train import TrainOptions, train


def test_each_augmentation_changes_images_and_is_seeded():
    import tensorflow as tf

    x = np.random.default_rng(0).random((4, 32, 48, 1)).astype("float32")
    for name in ("crop", "affine", "erase"):
        a1 = np.asarray(image_augmenter((name,), seed=3)(tf.constant(x)))
        a2 = np.asarray(image_augmenter((name,), seed=3)(tf.constant(x)))
        assert a1.shape == x.shape and not np.allclose(a1, x), name
        np.testing.assert_allclose(a1, a2, err_msg=name)
    with pytest.raises(ModelError, match="unknown image augmentation"):
        image_augmenter(("flip",))


@pytest.mark.slow
def test_train_with_image_aug(tiny_features, tmp_path):
    r = train(TrainOptions(data=str(tiny_features), arch="mobilenet", phase="transfer", weights="none", epochs=1,
                           batch_size=8, verbose=0, out=str(tmp_path / "m"), image_aug=("crop", "affine", "erase")))
    cfg = json.loads((Path(r.run) / "config.json").read_text())
    assert cfg["image_aug"] == ["crop", "affine", "erase"] and cfg["cached_base"] is False
    from genrekit.runs import load_model

    m = load_model(Path(r.run) / "model.keras")  # nothing of the augmentation is in the saved model
    assert not any("random" in layer.name for layer in m.layers)
    with pytest.raises(UserError, match="image models"):
        train(TrainOptions(data=str(tiny_features), arch="lstm", epochs=1, verbose=0, out=str(tmp_path / "l"),
                           image_aug=("crop",)))
