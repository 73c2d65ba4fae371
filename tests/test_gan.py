"""The conditional GAN: shapes, a training step, train-only synthetic rows, error paths."""
import json
from pathlib import Path

import numpy as np
import pytest

from genrekit.cli import main
from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.manifest import read_manifest
from genrekit.errors import UserError
from genrekit.gan import gan_generate, gan_train
from genrekit.models.gan import ConditionalGAN, build_discriminator, build_generator
from genrekit.runs import Run
from genrekit.train import TrainOptions, train

pytestmark = pytest.mark.slow


def test_shapes():
    g = build_generator(40, 13, 3, latent_dim=8)
    d = build_discriminator(40, 13, 3)
    z = np.random.default_rng(0).standard_normal((5, 8)).astype("float32")
    y = np.array([0, 1, 2, 0, 1], dtype="int32")
    fake = np.asarray(g([z, y]))
    assert fake.shape == (5, 40, 13)
    assert np.asarray(d([fake, y])).shape == (5, 1)


def test_one_training_step_changes_both_networks():
    g = build_generator(16, 13, 2, latent_dim=4)
    d = build_discriminator(16, 13, 2)
    gan = ConditionalGAN(g, d, latent_dim=4, seed=0)
    gan.compile()
    x = np.random.default_rng(1).standard_normal((8, 16, 13)).astype("float32")
    y = np.array([0, 1] * 4, dtype="int32")
    gw, dw = [w.copy() for w in g.get_weights()], [w.copy() for w in d.get_weights()]
    hist = gan.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert {"d_loss", "g_loss"} <= set(hist.history)
    assert any(not np.allclose(a, b) for a, b in zip(g.get_weights(), gw, strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(d.get_weights(), dw, strict=True))


def test_gan_train_generate_and_train_with_synthetic(tiny_features, tmp_path, capsys):
    assert main(["gan", "train", "--data", str(tiny_features), "--out", str(tmp_path / "gan"), "--epochs", "2",
                 "--batch-size", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Fréchet" in out
    run = tmp_path / "gan"
    for name in ("generator.keras", "discriminator.keras", "config.json", "history.csv", "real_vs_generated.png",
                 "quality.json", "losses.png"):
        assert (run / name).is_file(), name
    q = json.loads((run / "quality.json").read_text())
    assert set(q) == {"high", "low", "mid"} and all(0 <= v["two_sample_accuracy"] <= 1 for v in q.values())
    res = gan_generate(run, 6, tmp_path / "synth")
    rows = read_manifest(tmp_path / "synth")
    assert res["rows"] == 18 and {(r["split"], r["augmentation"]) for r in rows} == {("train", "synthetic")}
    shape = FeatureConfig.load(tiny_features).feature_shape("mfcc")
    assert np.load(tmp_path / "synth" / rows[0]["path"]).shape == shape
    base = train(TrainOptions(data=str(tiny_features), arch="lstm", epochs=1, batch_size=8, verbose=0,
                              out=str(tmp_path / "plain")))
    mixed = train(TrainOptions(data=str(tiny_features), arch="lstm", epochs=1, batch_size=8, verbose=0,
                               out=str(tmp_path / "mixed"), synthetic=str(tmp_path / "synth")))
    cb = json.loads((Path(base.run) / "config.json").read_text())["data"]
    cm = json.loads((Path(mixed.run) / "config.json").read_text())["data"]
    assert cm["train_rows"] == cb["train_rows"] + 18 and cm["synthetic_rows"] == 18
    assert cm["valid_rows"] == cb["valid_rows"] and cm["train_tracks"] == cb["train_tracks"]
    # validation and test never see synthetic rows
    for split in ("valid", "test"):
        assert mixed.metrics[split]["clip"]["n"] == base.metrics[split]["clip"]["n"]


def test_gan_error_paths(tiny_features, tmp_path):
    gan_train(tiny_features, out=tmp_path / "gan", epochs=1, batch_size=16, verbose=0)
    with pytest.raises(UserError, match="GAN run"):
        Run(tmp_path / "gan")
    with pytest.raises(UserError, match="not a GAN run"):
        gan_generate(tmp_path, 2, tmp_path / "x")
    gan_generate(tmp_path / "gan", 2, tmp_path / "synth")
    other = FeatureConfig.load(tiny_features).to_dict() | {"n_mfcc": 12}
    FeatureConfig.from_dict(other).save(tmp_path / "synth")
    with pytest.raises(UserError, match="another feature config"):
        train(TrainOptions(data=str(tiny_features), arch="lstm", epochs=1, verbose=0, out=str(tmp_path / "r"),
                           synthetic=str(tmp_path / "synth")))
    with pytest.raises(UserError, match="images"):
        train(TrainOptions(data=str(tiny_features), arch="cnn", epochs=1, verbose=0, out=str(tmp_path / "r2"),
                           synthetic=str(tmp_path / "synth")))


def test_quality_figures_on_known_distributions():
    from genrekit.evaluation.gan_quality import frechet_distance, quality_report

    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 10, 3))
    same = rng.standard_normal((200, 10, 3))
    shifted = rng.standard_normal((200, 10, 3)) + 2.0
    q_same = quality_report({"g": real}, {"g": same})["g"]
    q_far = quality_report({"g": real}, {"g": shifted})["g"]
    assert q_same["two_sample_accuracy"] < 0.7 and q_far["two_sample_accuracy"] > 0.95
    assert q_far["frechet_mean_mfcc"] > 10 > q_same["frechet_mean_mfcc"]
    # ||mu1 - mu2||^2 for a shift of 2 in each of 3 dimensions is 12, covariances equal
    assert frechet_distance(real.mean(1), shifted.mean(1)) == pytest.approx(12, rel=0.15)
    assert q_same["frechet_real_halves"] is not None
