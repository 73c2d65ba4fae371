"""Short fits on tiny data for each family, transfer -> finetune, predict and export round trips."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.loaders import load_feature
from genrekit.data_tools.manifest import read_manifest
from genrekit.errors import UserError
from genrekit.export import export_bundle, run_exported
from genrekit.modelcard import MODEL_FILES
from genrekit.models import ModelError
from genrekit.predict import features_for, predict_file
from genrekit.runs import Run, load_model
from genrekit.train import TrainOptions, train
from tests.conftest import SHARED

pytestmark = pytest.mark.slow
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v1_1.0_tfslim_imagenet_notop.weights.h5"


def _train(feats, tmp_path, arch, **kw):
    opts = TrainOptions(data=str(feats), arch=arch, out=str(tmp_path / arch / kw.pop("name", "run")),
                        epochs=kw.pop("epochs", 2), batch_size=8, verbose=0, **kw)
    return train(opts)


@pytest.mark.parametrize("arch", ["cnn", "cnn_bn", "fcnn", "lstm", "crnn"])
def test_short_fit_writes_a_self_describing_run(tiny_features, tmp_path, arch):
    res = _train(tiny_features, tmp_path, arch)
    run = Path(res.run)
    for name in ("model.keras", "labels.json", "config.json", "history.csv", "curves.png"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["arch"] == arch and cfg["seed"] == 0 and cfg["feature_config"]["sr"] == 8000
    assert cfg["data"]["manifest_sha256"] and "tensorflow" in cfg["versions"]
    assert json.loads((run / "labels.json").read_text()) == ["high", "low", "mid"]
    hist = (run / "history.csv").read_text().splitlines()
    assert "top2" in hist[0] and "val_loss" in hist[0] and len(hist) == 3
    assert set(res.metrics) == {"valid", "test"}
    assert 0 <= res.metrics["test"]["track"]["top1"] <= 1


def test_transfer_then_finetune(tiny_features, tmp_path):
    if MOBILENET_WEIGHTS.is_file():
        weights = str(MOBILENET_WEIGHTS)
    else:  # no ImageNet weights here: pretrain a base from scratch (a random frozen base passes no gradient)
        s = _train(tiny_features, tmp_path, "mobilenet", phase="scratch", name="s")
        weights = str(tmp_path / "base.weights.h5")
        load_model(Path(s.run) / "model.keras").get_layer("base").save_weights(weights)
    t = _train(tiny_features, tmp_path, "mobilenet", phase="transfer", weights=weights, name="t")
    cfg = json.loads((Path(t.run) / "config.json").read_text())
    assert cfg["phase"] == "transfer" and cfg["cached_base"] is True
    before = load_model(Path(t.run) / "model.keras")
    f = _train(tiny_features, tmp_path, "mobilenet", phase="finetune", from_run=t.run, name="f", epochs=1)
    after = load_model(Path(f.run) / "model.keras")
    wb = before.get_layer("base").get_weights()
    wa = after.get_layer("base").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(wa, wb, strict=True))  # the base was trained
    assert json.loads((Path(f.run) / "config.json").read_text())["from_run"] == str(Path(t.run).resolve())


def test_cached_transfer_trains_the_full_models_head(tiny_features, tmp_path):
    t = _train(tiny_features, tmp_path, "mobilenet", phase="transfer", weights="none", name="c")
    run = Run(t.run)
    rows = [r for r in read_manifest(tiny_features) if r["feature"] == "mel" and r["split"] == "test"]
    x = np.stack([load_feature(tiny_features / r["path"], "mel") for r in rows])
    # the saved full model reproduces the metrics computed during training
    from genrekit.data_tools.loaders import label_ids
    from genrekit.evaluation.metrics import evaluate_predictions

    proba = run.model().predict(x, verbose=0)
    res = evaluate_predictions([r["track_id"] for r in rows], label_ids(rows, run.labels), proba, run.labels)
    assert res["clip"]["top1"] == pytest.approx(t.metrics["test"]["clip"]["top1"])


def test_predict_uses_the_training_feature_path(tiny_features, tmp_path):
    res = _train(tiny_features, tmp_path, "cnn")
    run = Run(res.run)
    row = next(r for r in read_manifest(tiny_features) if r["feature"] == "mel" and r["augmentation"] == "original")
    data_root = Path(json.loads((tiny_features / "augment_config.json").read_text())["data_root"])
    src = data_root / (row["source"])
    from genrekit.data_tools.audio import load_audio

    y = load_audio(src, run.feature_config.sr).y
    x_predict = features_for(y, run)
    x_train = load_feature(tiny_features / row["path"], "mel")[None]
    np.testing.assert_array_equal(x_predict[:1], x_train)  # same bytes as the training PNG
    # mp3 and wav both work; probabilities sum to one
    sf.write(tmp_path / "clip.mp3", y, 8000, format="MP3", subtype="MPEG_LAYER_III")
    for f in (src, tmp_path / "clip.mp3"):
        p = predict_file(f, run)
        assert p.shape == (3,) and p.sum() == pytest.approx(1.0, abs=1e-5)


def test_cli_predict_json_and_bad_file(tiny_features, tmp_path, capsys):
    from genrekit.cli import main

    res = _train(tiny_features, tmp_path, "lstm")
    f = tmp_path / "x.wav"
    sf.write(f, np.sin(np.arange(8000 * 2) / 5).astype("float32"), 8000)
    assert main(["predict", str(f), "--model", res.run, "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out[0]["top"]) == 2 and out[0]["top"][0]["probability"] >= out[0]["top"][1]["probability"]
    (tmp_path / "bad.wav").write_bytes(b"nope")
    assert main(["predict", str(tmp_path / "bad.wav"), "--model", res.run]) == 2
    assert "not a RIFF" in capsys.readouterr().err


@pytest.mark.parametrize("fmt,arch", [("keras", "cnn"), ("saved_model", "cnn"), ("tflite", "cnn"), ("onnx", "cnn"),
                                      ("onnx", "fcnn")])  # fcnn: an adapted Normalization layer
def test_export_round_trip(tiny_features, tmp_path, fmt, arch):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    res = _train(tiny_features, tmp_path, arch, epochs=1)
    run = Run(res.run)
    bundle = export_bundle(res.run, [fmt])  # RUN/export/: the model beside its labels and feature settings
    assert bundle == Path(res.run) / "export" and json.loads((bundle / "labels.json").read_text()) == run.labels
    assert FeatureConfig.from_dict(json.loads((bundle / "feature_config.json").read_text())) == run.feature_config
    path = bundle / MODEL_FILES[fmt]
    shape = run.model().input_shape[1:]
    x = np.random.default_rng(0).random((3, *shape)).astype("float32")
    np.testing.assert_allclose(run_exported(path, fmt, x), np.asarray(run.model()(x)), rtol=1e-4, atol=1e-5)


def test_safe_mode_refuses_code_in_a_model_file(tmp_path):
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    keras.Model(inp, out).save(tmp_path / "evil.keras")
    with pytest.raises(UserError, match="safely"):
        load_model(tmp_path / "evil.keras")


def test_error_paths(tiny_features, tmp_path):
    mel_only = tmp_path / "melonly"
    mel_only.mkdir()
    rows = (tiny_features / "manifest.csv").read_text().splitlines()
    (mel_only / "manifest.csv").write_text("\n".join([rows[0]] + [r for r in rows[1:] if ",mel," in r]) + "\n")
    FeatureConfig.load(tiny_features).save(mel_only)
    with pytest.raises(UserError, match="mfcc features"):
        train(TrainOptions(data=str(mel_only), arch="lstm", out=str(tmp_path / "r1")))
    with pytest.raises(UserError, match="needs --from"):
        train(TrainOptions(data=str(tiny_features), arch="mobilenet", phase="finetune", out=str(tmp_path / "r2")))
    with pytest.raises(ModelError, match="unknown architecture"):
        train(TrainOptions(data=str(tiny_features), arch="alexnet", out=str(tmp_path / "r3")))
    cnn = _train(tiny_features, tmp_path, "cnn", epochs=1)
    with pytest.raises(UserError, match="not mobilenet"):
        train(TrainOptions(data=str(tiny_features), arch="mobilenet", phase="finetune", from_run=cnn.run,
                           out=str(tmp_path / "r4")))
    with pytest.raises(UserError, match="no pretrained base"):
        train(TrainOptions(data=str(tiny_features), arch="cnn", phase="transfer", out=str(tmp_path / "r5")))
    with pytest.raises(ModelError, match="weights file not found"):
        train(TrainOptions(data=str(tiny_features), arch="mobilenet", weights=str(tmp_path / "none.h5"),
                           out=str(tmp_path / "r6")))
    with pytest.raises(UserError, match="not a complete run"):
        Run(tmp_path)


@pytest.mark.parametrize("extra", [{"label_smoothing": 0.1}, {"mixup": 0.4}])
def test_label_smoothing_and_mixup(tiny_features, tmp_path, extra):
    import csv

    # the cached transfer path and the plain path both take soft targets
    for arch, phase in (("mobilenet", "transfer"), ("cnn", None)):
        kw = {"weights": "none"} if arch == "mobilenet" else {}
        r = train(TrainOptions(data=str(tiny_features), arch=arch, phase=phase, epochs=2, batch_size=8, verbose=0,
                               out=str(tmp_path / f"{arch}"), **kw, **extra))
        cfg = json.loads((Path(r.run) / "config.json").read_text())
        assert cfg[next(iter(extra))] == next(iter(extra.values()))
        hist = list(csv.DictReader(open(Path(r.run) / "history.csv")))
        assert {"accuracy", "top2", "val_loss"} <= set(hist[0]) and len(hist) == 2
    with pytest.raises(UserError, match="label-smoothing"):
        train(TrainOptions(data=str(tiny_features), arch="cnn", label_smoothing=1.5, out=str(tmp_path / "bad")))


def test_mixup_makes_convex_mixes_of_pairs():
    import tensorflow as tf

    from genrekit.training import prepare_targets as _prepare

    x = np.stack([np.full((4, 4, 1), float(i), dtype="float32") for i in range(8)])
    y = np.arange(8) % 4
    ds = _prepare(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), TrainOptions(data="", arch="cnn", mixup=0.4),
                  4, train=True)
    xb, yb = next(iter(ds))
    xb, yb = xb.numpy(), yb.numpy()
    np.testing.assert_allclose(yb.sum(axis=1), 1.0, rtol=1e-5)
    assert (yb.max(axis=1) < 1 - 1e-6).any()  # some targets are soft
    # each mixed image is constant: lam * i + (1 - lam) * j of two source images
    assert np.allclose(xb.std(axis=(1, 2, 3)), 0, atol=1e-5) and xb.min() >= 0 and xb.max() <= 7
    plain = _prepare(tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
                     TrainOptions(data="", arch="cnn", label_smoothing=0.1), 4, train=True)
    _, yp = next(iter(plain))
    np.testing.assert_array_equal(yp.numpy(), np.eye(4)[y])  # smoothing lives in the loss, targets stay one-hot
