"""The tempo study's compact CNN on 64x400 dB mel windows, with train-split band statistics."""
import json
from pathlib import Path

import numpy as np
import pytest

from genrekit.data_tools.features import MELSPEC_64X400_FEATURES, FeatureConfig, extract
from genrekit.data_tools.loaders import load_arrays
from genrekit.data_tools.manifest import read_manifest
from genrekit.models import build_model


def test_melspec_windows_are_64_by_400():
    fc = FeatureConfig(**MELSPEC_64X400_FEATURES)
    assert fc.feature_shape("melspec") == (400, 64)
    y = (0.1 * np.random.default_rng(0).standard_normal(22050 * 25)).astype("float32")
    wins = extract(y, fc, "melspec")
    assert len(wins) == (1 + len(y) // 551) // 400 == 2
    assert all(w.shape == (400, 64) and w.dtype == np.float32 for _, w in wins)
    (seg, w), = extract(y[: 22050 * 5], fc, "melspec")  # 5 s < 400 frames: padded
    assert seg.padded_s > 0 and w.shape == (400, 64)


def test_architecture():
    m = build_model("cnn64x400", (400, 64), 10)
    assert m.output_shape == (None, 10)
    assert [m.get_layer(f"conv_{i}").kernel_size for i in (1, 2, 3)] == [(5, 5), (5, 5), (3, 3)]
    assert [m.get_layer(f"pool_{i}").pool_size for i in (1, 2, 3)] == [(4, 4), (4, 4), (2, 1)]
    assert m.get_layer("dense").units == 128
    assert all(not np.any(m.get_layer(f"conv_{i}").bias.numpy()) for i in (1, 2, 3))  # zero biases
    k = m.get_layer("conv_1").kernel.numpy()
    limit = np.sqrt(6.0 / (5 * 5 * 1))  # He/Kaiming uniform bound for fan_in 25
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit


@pytest.mark.slow
def test_train_uses_training_split_band_statistics(tmp_path):
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment
    from genrekit.runs import Run
    from genrekit.train import TrainOptions, train
    from tests.conftest import write_tree

    data = write_tree(tmp_path / "d", per_genre=4, seconds=3.0)
    feats = tmp_path / "f"
    fc = FeatureConfig(sr=8000, n_fft=256, hop_length=128, n_mels=64, melspec_frames=40)
    run_augment(data, feats, AugmentSettings(features=fc, kinds=("melspec",), augment=AugmentConfig(augmentations=()),
                                             ratios=(50, 25, 25)), progress=False)
    r = train(TrainOptions(data=str(feats), arch="cnn64x400", epochs=2, batch_size=8, verbose=0, out=str(tmp_path / "r")))
    run = Run(r.run)
    norm = run.model().get_layer("input_norm")
    train_rows = [row for row in read_manifest(feats) if row["split"] == "train"]
    x = load_arrays(feats, train_rows, "melspec")
    np.testing.assert_allclose(np.ravel(norm.mean), x.mean(axis=(0, 1)), rtol=1e-4, atol=1e-3)
    assert json.loads((Path(r.run) / "config.json").read_text())["feature_kind"] == "melspec"
