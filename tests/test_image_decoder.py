"""One image decoder: a PNG written by the pipeline gives the same model input, byte for byte,
through load_feature (NumPy arrays), make_dataset (tf.data) and prediction's in-memory map,
and the same as TensorFlow's own PNG decoder gave before."""
import numpy as np
import pytest

from genrekit.data_tools.features import get_kind, image_to_input
from genrekit.data_tools.loaders import load_feature, make_dataset, select
from genrekit.data_tools.manifest import read_manifest
from tests.conftest import GTZAN_MINI, small_settings


@pytest.fixture(scope="module")
def gtzan_pngs(tmp_path_factory):
    """Mel PNGs that `genrekit augment` wrote from real GTZAN clips (default image settings)."""
    if not GTZAN_MINI.is_dir():
        pytest.skip("../shared/data/gtzan_mini is not available")
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import FeatureConfig
    from genrekit.data_tools.pipeline import run_augment

    base = tmp_path_factory.mktemp("gtzan_png")
    for g in ("blues", "metal"):
        (base / "data" / g).mkdir(parents=True)
        for clip in sorted((GTZAN_MINI / g).glob("*.wav"))[:3]:
            (base / "data" / g / clip.name).symlink_to(clip)
    settings = small_settings(features=FeatureConfig(), kinds=("mel",), augment=AugmentConfig(augmentations=()),
                              ratios=(34, 33, 33))
    run_augment(base / "data", base / "feats", settings, workers=1, progress=False)
    return base / "feats"


def _image_rows(folder, n=4):
    rows = select(read_manifest(folder), "mel", ("train", "valid", "test"))
    assert rows, "the fixture has no mel rows"
    return rows[:n]


@pytest.mark.parametrize("source", ["tones", "gtzan"])
def test_every_path_decodes_a_pipeline_png_to_the_same_bytes(source, request):
    import tensorflow as tf
    from PIL import Image

    tiny_features = request.getfixturevalue("tiny_features" if source == "tones" else "gtzan_pngs")
    rows = _image_rows(tiny_features)
    y = np.arange(len(rows), dtype=np.int32)
    ds = make_dataset(tiny_features, rows, y, "mel", batch_size=len(rows), shuffle=False, seed=0, cache=False)
    assert ds.element_spec[0].shape.as_list() == [None, None, None, 1]  # as tf.io.decode_png(channels=1)
    batch = next(iter(ds))[0].numpy()
    for i, r in enumerate(rows):
        path = tiny_features / r["path"]
        arrays = load_feature(path, "mel")
        # TensorFlow's decoder, the pipeline's until the decoders were merged
        before = (tf.cast(tf.io.decode_png(tf.io.read_file(str(path)), channels=1), tf.float32) / 255.0).numpy()
        with Image.open(path) as im:  # prediction maps the rendered uint8 image the same way
            in_memory = image_to_input(np.asarray(im))
        assert arrays.dtype == batch.dtype == before.dtype == np.float32
        assert arrays.shape == before.shape == batch[i].shape and arrays.shape[-1] == 1
        assert arrays.tobytes() == before.tobytes() == batch[i].tobytes() == in_memory.tobytes()
        assert 0.0 <= arrays.min() and arrays.max() <= 1.0 and arrays.std() > 0  # a real spectrogram


def test_the_pipeline_uses_the_kinds_reader(tiny_features, monkeypatch):
    """make_dataset decodes with the kind's reader, not a decoder of its own: swap the reader
    and the pipeline's output follows."""
    rows = _image_rows(tiny_features, 2)
    kind = get_kind("mel")
    real = kind.load
    monkeypatch.setattr(type(kind), "load", lambda self, p: 1.0 - real(p))
    ds = make_dataset(tiny_features, rows, np.zeros(2, dtype=np.int32), "mel", batch_size=2, shuffle=False,
                      seed=0, cache=False)
    got = next(iter(ds))[0].numpy()
    np.testing.assert_array_equal(got[0], 1.0 - real(tiny_features / rows[0]["path"]))


def test_a_truncated_png_is_named_before_the_pipeline_runs(tiny_features, tmp_path):
    import shutil

    from genrekit.data_tools.errors import DataError

    r = _image_rows(tiny_features, 1)[0]
    bad = tmp_path / "bad.png"
    data = (tiny_features / r["path"]).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    shutil.copy(tiny_features / r["path"], tmp_path / "good.png")
    rows = [{**r, "path": "good.png"}, {**r, "path": "bad.png"}]
    with pytest.raises(DataError, match="bad.png is truncated"):
        make_dataset(tmp_path, rows, np.zeros(2, dtype=np.int32), "mel", batch_size=2, shuffle=False, seed=0)
