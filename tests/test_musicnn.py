"""musicnn: golden outputs of the original model, the feature path, weights install, training."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig, extract
from genrekit.errors import UserError
from genrekit.models import ModelError
from genrekit.models.musicnn import (
    musicnn_backbone,
    pretrained_backbone,
    tags_probabilities,
    vgg_backbone,
)
from genrekit.weights import MUSICNN_FILES, cache_root, fetch
from tests.conftest import GTZAN_MINI, SHARED, musicnn_features

GOLDEN = SHARED / "weights" / "musicnn_msd_golden.json"


def _installed() -> Path | None:
    d = cache_root() / "musicnn"
    return d if all((d / rel).is_file() for rel in MUSICNN_FILES) else None


def test_architectures_match_the_checkpoints_parameter_counts():
    assert musicnn_backbone().count_params() == 792_079  # ../shared/weights/musicnn_ckpt_vars.txt
    assert vgg_backbone().count_params() == 607_030


@pytest.mark.skipif(_installed() is None, reason="musicnn weights not installed (genrekit weights fetch musicnn)")
def test_reproduces_the_original_msd_musicnn_outputs():
    if not GOLDEN.is_file() or not GTZAN_MINI.is_dir():
        pytest.skip("golden file or gtzan_mini not available")
    from genrekit.data_tools.audio import load_audio

    golden = json.loads(GOLDEN.read_text())
    model = pretrained_backbone("msd", _installed())
    fc = FeatureConfig(**MUSICNN_FEATURES)
    for clip, ref in golden["clips"].items():
        y = load_audio(GTZAN_MINI / clip, sr=16000).y
        windows = np.stack([w for _, w in extract(y, fc, "musicnn")])  # genrekit's own feature path
        assert len(windows) == ref["n_windows"]
        p = tags_probabilities(model, windows)
        np.testing.assert_allclose(p[0], ref["first_window_probs"], atol=1e-4)
        np.testing.assert_allclose(p.mean(axis=0), ref["mean_probs"], atol=1e-4)
        top5 = [golden["labels"][i] for i in np.argsort(-p.mean(axis=0))[:5]]
        assert top5 == [tag for tag, _ in ref["top5_mean"]]


def test_musicnn_windows_follow_the_original_framing():
    fc = FeatureConfig(**MUSICNN_FEATURES)
    y = np.random.default_rng(0).standard_normal(16000 * 7).astype("float32") * 0.1
    wins = extract(y, fc, "musicnn")
    frames = 1 + len(y) // 256
    assert len(wins) == frames // 187
    assert all(w.shape == (187, 96) and w.dtype == np.float32 for _, w in wins)
    assert [s.start_s for s, _ in wins] == [i * 187 * 256 / 16000 for i in range(len(wins))]
    short = extract(y[:16000], fc, "musicnn")
    assert len(short) == 1 and short[0][0].padded_s > 0


def test_weights_fetch_from_a_folder_verifies_and_installs(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREKIT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    for rel in MUSICNN_FILES:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"not the real checkpoint")
    with pytest.raises(UserError, match="checksum"):
        fetch("musicnn", source=str(src))
    assert not (tmp_path / "cache" / "musicnn").exists()
    with pytest.raises(UserError, match="not found"):
        fetch("musicnn", source=str(tmp_path / "nope"))
    (tmp_path / "bad.whl").write_bytes(b"zip? no")
    with pytest.raises(UserError, match="wheel"):
        fetch("musicnn", source=str(tmp_path / "bad.whl"))
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as z:
        z.writestr("musicnn/__init__.py", "")
    with pytest.raises(UserError, match="musicnn 0.1.0 wheel"):
        fetch("musicnn", source=str(tmp_path / "empty.whl"))
    installed = _real_installed()
    if installed:
        dest = fetch("musicnn", source=str(installed))
        assert all((dest / rel).is_file() for rel in MUSICNN_FILES)


def _real_installed():
    import os

    d = Path(os.environ.get("HOME", "~")).expanduser() / ".cache" / "genrekit" / "musicnn"
    return d if (d / "MSD_musicnn" / ".index").is_file() else None


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    from genrekit.models.musicnn import find_weights_dir

    monkeypatch.setenv("GENREKIT_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="genrekit weights fetch musicnn"):
        find_weights_dir()


@pytest.mark.slow
def test_musicnn_transfer_then_finetune_on_tiny_audio(tmp_path):
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment
    from genrekit.predict import predict_file
    from genrekit.runs import Run
    from genrekit.train import TrainOptions, train
    from tests.conftest import write_tree

    data = write_tree(tmp_path / "d", per_genre=3, seconds=3.5, sr=16000)
    feats = tmp_path / "f"
    musicnn_features(data, feats, (60, 20, 20))
    weights = "msd" if _installed() else "none"
    t = train(TrainOptions(data=str(feats), arch="musicnn", phase="transfer", weights=weights, epochs=2,
                           batch_size=4, verbose=0, out=str(tmp_path / "t")))
    assert json.loads((Path(t.run) / "config.json").read_text())["cached_base"] is True
    f = train(TrainOptions(data=str(feats), arch="musicnn", phase="finetune", from_run=t.run, epochs=1,
                           batch_size=4, verbose=0, out=str(tmp_path / "ft")))
    p = predict_file(next(data.glob("low/*.wav")), Run(f.run))
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0, abs=1e-5)
    bad = tmp_path / "bad"
    run_augment(data, bad, AugmentSettings(features=FeatureConfig(sr=16000, n_fft=512, hop_length=256, n_mels=64),
                                           kinds=("musicnn",), augment=AugmentConfig(augmentations=())),
                progress=False)
    with pytest.raises(UserError, match="n_mels"):
        train(TrainOptions(data=str(bad), arch="musicnn", epochs=1, verbose=0, out=str(tmp_path / "x")))


@pytest.mark.parametrize("embedding,dim", [("penultimate", 200), ("pooled", 1506), ("taggram", 50)])
def test_the_head_can_read_another_musicnn_layer(embedding, dim):
    from genrekit.models import build_model

    m = build_model("musicnn", (187, 96), 4, weights="none", embedding=embedding)
    assert m.get_layer("base").output.shape[-1] == dim
    assert m.output_shape == (None, 4)


def test_vgg_has_no_pooled_midend():
    from genrekit.models import build_model

    with pytest.raises(ModelError, match="vgg has no pooled"):
        build_model("musicnn_vgg", (187, 96), 4, weights="none", embedding="pooled")
