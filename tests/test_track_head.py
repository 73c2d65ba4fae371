"""genrekit's default recipe: track-pooled musicnn embeddings + a logistic-regression head."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_tree


def test_folded_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from genrekit.trackhead import fit_logistic_regression

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = rng.normal(size=(24, 6)) * [1, 10, 0.1, 5, 1, 2] + y[:, None] * [1, 0, 0.2, 0, 0, 3] + 7.0
    groups = np.arange(24) // 2  # two variants per track
    fit = fit_logistic_regression(x, y, groups, n_classes=4, seed=0)
    assert 1e-4 <= fit["C"] <= 100 and fit["cv_folds"] == 4  # 4 tracks per genre
    logits = x @ fit["kernel"] + fit["bias"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # the folded layer is exactly scaler + classifier ...
    z = fit["scaler"].transform(x)
    np.testing.assert_allclose(p[:, :3], fit["classifier"].predict_proba(z), atol=1e-6)
    # ... which is a plain L2 logistic regression at the chosen C on standardised features
    ref = LogisticRegression(C=fit["C"], max_iter=5000).fit(StandardScaler().fit_transform(x), y)
    np.testing.assert_allclose(p[:, :3], ref.predict_proba(z), atol=2e-3)
    assert p[:, 3].max() < 1e-6  # a label absent from training never wins


def test_two_classes_give_two_columns():
    from genrekit.trackhead import fit_logistic_regression

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 6)
    x = rng.normal(size=(12, 3)) + y[:, None] * 2
    fit = fit_logistic_regression(x, y, np.arange(12), n_classes=2)
    logits = x @ fit["kernel"] + fit["bias"]
    assert fit["kernel"].shape == (3, 2)
    assert (np.argmax(logits, 1) == y).mean() >= 0.9


def test_track_pooling_layer_matches_numpy():
    import keras

    from genrekit.models.track import pool_track
    from genrekit.models.track_layers import TrackPooling

    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype(np.float32)
    layer = TrackPooling(("mean", "std", "max"))
    got = np.asarray(layer([x.reshape(10, 4), np.zeros((2, 5, 7), np.float32)]))
    for i in range(2):
        np.testing.assert_allclose(got[i], pool_track(x[i], ("mean", "std", "max")), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="choose from"):
        TrackPooling(("median",))
    assert keras.saving.get_registered_object("genrekit>TrackPooling") is TrackPooling


@pytest.mark.slow
def test_default_recipe_trains_predicts_and_reloads(tmp_path):
    """No --arch: musicnn_lr. Random backbone weights keep the test offline; the pipeline is the same."""
    from genrekit.cli import main
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig
    from genrekit.data_tools.manifest import read_manifest
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment
    from genrekit.predict import predict_file
    from genrekit.runs import Run
    from genrekit.trackhead import predict_track_rows

    data = write_tree(tmp_path / "d", per_genre=5, seconds=7.0, sr=16000)
    feats = tmp_path / "f"
    run_augment(data, feats, AugmentSettings(features=FeatureConfig(**MUSICNN_FEATURES), kinds=("musicnn",),
                                             augment=AugmentConfig(augmentations=("pitch",), pitch_semitones=(1.0,)),
                                             ratios=(60, 20, 20)), progress=False)
    run = tmp_path / "run"
    assert main(["train", "--data", str(feats), "--weights", "none", "--out", str(run), "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["arch"] == "musicnn_lr" and cfg["head"] == "logreg"
    # 3 genres x 3 training tracks, originals only by default; inner CV over tracks
    assert cfg["head_fit"]["samples"] == 9 and cfg["head_fit"]["tracks"] == 9 and cfg["head_fit"]["cv_folds"] == 3
    assert cfg["head_fit"]["variants"] is False
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert metrics["test"]["track"]["n"] == 3
    assert metrics["test"]["clip"]["top1"] == metrics["test"]["track"]["top1"]  # one answer per track
    # tones of three pitches are separable even through a random backbone
    assert metrics["valid"]["track"]["top1"] >= 2 / 3

    with_variants = tmp_path / "run-variants"  # original + pitch variant of each track: two samples per track
    assert main(["train", "--data", str(feats), "--weights", "none", "--hparam", "variants=true",
                 "--out", str(with_variants), "--quiet"]) == 0
    hf = json.loads((with_variants / "config.json").read_text())["head_fit"]
    assert hf["samples"] == 18 and hf["tracks"] == 9 and hf["variants"] is True

    r = Run(run)  # reloads in safe mode
    rows = [x for x in read_manifest(feats) if x["split"] == "test" and x["augmentation"] == "original"]
    p_rows = predict_track_rows(r.model(), feats, rows)
    track = rows[0]["track_id"]
    audio = next(p for p in data.rglob("*.wav") if track.endswith(p.stem))
    p_file = predict_file(audio, r)
    np.testing.assert_allclose(p_file, p_rows[0], atol=1e-5)  # predict == evaluate's path, same windows
    assert p_file.sum() == pytest.approx(1.0, abs=1e-5)

    # exports take a track's windows and give its probabilities, like the Keras model
    from genrekit.export import export

    x = np.stack([np.load(feats / r["path"]) for r in rows if r["track_id"] == track])[None]
    want = np.asarray(r.model()(x))[0]
    tfl = Path(export(run, "tflite", str(tmp_path / "m.tflite")))
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(tfl))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    np.testing.assert_allclose(it.get_tensor(it.get_output_details()[0]["index"])[0], want, atol=1e-4)
    try:
        import onnxruntime as ort
        import tf2onnx  # noqa: F401
    except ImportError:
        return
    onx = Path(export(run, "onnx", str(tmp_path / "m.onnx")))
    sess = ort.InferenceSession(str(onx))
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_default_recipe_names_its_input(tmp_path, tiny_features, capsys):
    from genrekit.cli import main

    assert main(["train", "--data", str(tiny_features), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "musicnn" in err[0] and "--features musicnn" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra,needle", [(["--phase", "finetune", "--from", "x"], "only the transfer phase"),
                                          (["--mixup", "0.2"], "logistic regression")])
def test_track_head_refuses_keras_only_options(tmp_path, tiny_features, capsys, extra, needle):
    from genrekit.cli import main

    assert main(["train", "--data", str(tiny_features), "--arch", "musicnn_lr", "--out", str(tmp_path / "r"),
                 *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not Path(tmp_path / "r").exists()


def test_long_tracks_are_embedded_in_steps_with_the_same_answer():
    from genrekit.models import build_model
    from genrekit.trackhead import EMBED_STEP, predict_track

    m = build_model("musicnn_lr", (187, 96), 3, weights="none", embedding="pooled")
    rng = np.random.default_rng(3)
    k, b = rng.normal(size=(3012, 3)).astype(np.float32) * 0.01, np.zeros(3, np.float32)
    m.get_layer("predictions").set_weights([k, b])
    x = rng.normal(size=(EMBED_STEP + 5, 187, 96)).astype(np.float32)
    whole = np.asarray(m(x[None], training=False))[0]
    np.testing.assert_allclose(predict_track(m, x), whole, atol=1e-5)
