"""The default path's rough edges (issue 23): progress bars, honest summaries, what the recipe
renders, run folders without duplicates, the model card and export hints, predict and
evaluate details. Tiny synthetic audio; the default recipe with a random musicnn (``--weights
none``: offline)."""
import json
from pathlib import Path

import pytest

from genrekit.cli import main
from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig
from genrekit.data_tools.pipeline import AugmentSettings, run_augment
from genrekit.train import TrainOptions, train
from tests.conftest import write_tree

pytestmark = pytest.mark.slow
SR16 = 16000


@pytest.fixture(scope="module")
def cnn_run(tiny_features, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "run"
    res = train(TrainOptions(data=str(tiny_features), arch="cnn", out=str(out), epochs=2, batch_size=8, verbose=0))
    return res


@pytest.fixture(scope="module")
def lr_feats(tmp_path_factory):
    """musicnn features of three tone genres, 8 tracks each (3 s: one window a track)."""
    base = tmp_path_factory.mktemp("lr")
    data = write_tree(base / "d", per_genre=8, seconds=3.0, sr=SR16)
    run_augment(data, base / "f", AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES), kinds=("musicnn",),
                                                  augment=AugmentConfig(augmentations=()), ratios=(50, 25, 25)),
                progress=False)
    return base / "f"


def test_a_run_folder_keeps_no_duplicate_checkpoint(cnn_run):
    run = Path(cnn_run["run"])
    assert (run / "model.keras").is_file()
    assert not (run / "checkpoint.keras").exists()  # the best-so-far checkpoint is model.keras now
