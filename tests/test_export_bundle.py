"""The export bundle (model files, labels, feature config, calibration, model card) and the README's
example that uses it without genrekit, checked against ``genrekit predict`` on a tiny musicnn_lr run."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import musicnn_features, one_error, tone, write_tree

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "predict_export.py"


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    """A tiny musicnn_lr run (random backbone: offline), its temperature set to 1.7 so that the
    calibration step is exercised, and an evaluation kept under RUN/eval/ood_dev/."""
    from genrekit.cli import main

    tmp = tmp_path_factory.mktemp("bundle")
    data = write_tree(tmp / "d", per_genre=4, seconds=7.0, sr=16000)
    musicnn_features(data, tmp / "f")
    run = tmp / "run"
    assert main(["train", "--data", str(tmp / "f"), "--weights", "none", "--out", str(run), "--quiet"]) == 0
    cal_path = run / "calibration.json"
    cal = json.loads(cal_path.read_text()) if cal_path.is_file() else {}
    cal_path.write_text(json.dumps({**cal, "temperature": 1.7}))
    assert main(["evaluate", "--model", str(run), "--data", str(tmp / "f"), "--split", "test",
                 "--out", str(run / "eval" / "ood_dev")]) == 0
    return {"run": run, "data": data, "tmp": tmp}


def _example():
    spec = importlib.util.spec_from_file_location("predict_export_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundle_is_self_describing(lr_run, tmp_path, capsys):
    pytest.importorskip("tf2onnx")
    from genrekit.cli import main
    from genrekit.runs import EXPORT_MARKER, Run

    run = Run(lr_run["run"])
    out = tmp_path / "bundle"
    assert main(["export", "--model", str(run.path), "--format", "onnx,tflite", "--out", str(out)]) == 0
    assert f"bundle: {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "model.onnx", "model.tflite", "labels.json", "feature_config.json", "calibration.json", "MODEL_CARD.md",
        "model_card.json", EXPORT_MARKER])
    assert json.loads((out / "labels.json").read_text()) == run.labels
    assert json.loads((out / "feature_config.json").read_text()) == run.feature_config.to_dict()
    assert json.loads((out / "calibration.json").read_text())["temperature"] == 1.7
    card = json.loads((out / "model_card.json").read_text())
    assert card["classes"] == run.labels and card["arch"] == "musicnn_lr"
    inp = card["input"]
    assert (inp["feature_kind"], inp["sample_rate_hz"], inp["n_fft"], inp["hop_length"], inp["n_mels"],
            inp["window_frames"], inp["track_model"]) == ("musicnn", 16000, 512, 256, 96, 187, True)
    assert inp["window_seconds"] == pytest.approx(187 * 256 / 16000)
    assert "log10(10000 * M + 1)" in inp["formula"]
    assert card["training_data"]["split_tracks"] == {"train": 6, "valid": 3, "test": 3}
    splits = {(e["split"], e["source"], e["out_of_domain"]) for e in card["evaluations"]}
    assert {("valid", "train_metrics.json", False), ("test", "train_metrics.json", False),
            ("test", "eval/ood_dev/metrics.json", True)} <= splits
    tm = json.loads((run.path / "train_metrics.json").read_text())
    test = next(e for e in card["evaluations"] if e["source"] == "train_metrics.json" and e["split"] == "test")
    assert test["track"]["top1"] == tm["test"]["track"]["top1"] and test["track"]["n"] == 3
    md = (out / "MODEL_CARD.md").read_text()
    for words in ("research use only", "ISC", "log10(10000 * M + 1)", "onnxruntime", "| test | ", "| yes |"):
        assert words in md, words


def test_model_card_keeps_predicts_constants():
    from genrekit import modelcard, predict

    assert (modelcard.MIN_SECONDS, modelcard.SILENCE_DBFS) == (predict.MIN_SECONDS, predict.SILENCE_DBFS)


def test_example_reproduces_genrekit_predict_without_genrekit(lr_run, tmp_path):
    """examples/predict_export.py (shown in the README) on the ONNX and TFLite exports gives
    genrekit predict's calibrated probabilities to 1e-4: a test track, a stereo 44.1 kHz file
    (resampled, channels averaged) and a 1.5 s file (one window, filled by wrapping)."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from genrekit.evaluation.calibration import apply_temperature
    from genrekit.export import export_bundle
    from genrekit.predict import predict_file, predict_files
    from genrekit.runs import Run

    src = EXAMPLE.read_text()
    assert not re.search(r"^\s*(import|from)\s+(genrekit|data_tools|models|evaluation)\b", src, re.M)
    readme = (ROOT / "README.md").read_text()
    assert src.strip() in readme  # the README shows exactly the tested code

    run = Run(lr_run["run"])
    bundle = export_bundle(run.path, ["onnx", "tflite"], tmp_path / "b")
    stereo = tmp_path / "stereo.wav"
    left, right = tone(700.0, 8.0, 44100, seed=5), tone(1500.0, 8.0, 44100, seed=6)
    sf.write(stereo, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    short = tmp_path / "short.wav"
    sf.write(short, tone(240.0, 1.5, 16000, seed=7), 16000, subtype="PCM_16")
    files = [sorted((lr_run["data"] / "mid").glob("*.wav"))[-1], stereo, short]
    ex = _example()
    for f in files:
        want = apply_temperature(predict_file(f, run), run.temperature)
        assert run.temperature == 1.7 and not np.allclose(want, predict_file(f, run), atol=1e-3)
        for model_file in ("model.onnx", "model.tflite"):
            np.testing.assert_allclose(ex.predict(bundle, f, model_file), want, atol=1e-4, err_msg=f"{f} {model_file}")
    # the script's own output is genrekit predict's top 3, same order, same figures to 4 places
    res = subprocess.run([sys.executable, str(EXAMPLE), str(bundle), *map(str, files)], capture_output=True,
                         text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                                                      "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    for line, entry in zip(lines, predict_files([str(f) for f in files], run.path), strict=True):
        got = line.split()[1:]
        assert got[0::2] == [t["genre"] for t in entry["top"]]
        np.testing.assert_allclose([float(v) for v in got[1::2]], [t["probability"] for t in entry["top"]], atol=2e-4)


def test_bundle_replaces_only_its_own(lr_run, tmp_path, capsys, monkeypatch):
    import errno

    import keras

    from genrekit.cli import main

    run = lr_run["run"]
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("a file")
    before = _tree(tmp_path)
    for out, fmt, says in [(user, "keras", "not a genrekit export bundle"), (tmp_path / "file", "keras", "not a folder"),
                           (run, "keras", "not a genrekit export bundle"),
                           (tmp_path / "m.tflite", "onnx", "names one tflite file")]:
        line = one_error(capsys, main(["export", "--model", str(run), "--format", fmt, "--out", str(out)]))
        assert says in line, line
        assert _tree(tmp_path) == before
    b = tmp_path / "b"
    assert main(["export", "--model", str(run), "--format", "keras,tflite", "--out", str(b)]) == 0
    assert (b / "model.tflite").is_file() and (b / "model.keras").is_file()
    assert main(["export", "--model", str(run), "--format", "keras", "--out", str(b)]) == 0  # its own: replaced
    assert not (b / "model.tflite").exists() and (b / "model.keras").is_file()
    # a failed re-export keeps the bundle as it was
    kept = _tree(b)

    def disk_full(self, path, *a, **k):
        Path(path).write_bytes(b"PK\x03\x04half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(keras.Model, "save", disk_full)
        assert "No space left" in one_error(capsys, main(["export", "--model", str(run), "--out", str(b)]))
    assert _tree(b) == kept and not list(tmp_path.glob(".genrekit-*"))
    # a file the user put into the bundle makes it theirs: refused, nothing lost
    (b / "my_notes.md").write_text("keep me")
    kept = _tree(tmp_path)
    assert "did not write" in one_error(capsys, main(["export", "--model", str(run), "--out", str(b)]))
    assert _tree(tmp_path) == kept
    # the model file alone, as before bundles
    assert main(["export", "--model", str(run), "--format", "tflite", "--out", str(tmp_path / "m.tflite")]) == 0
    assert (tmp_path / "m.tflite").read_bytes()[4:8] == b"TFL3"
    assert "model file only" in capsys.readouterr().out


def test_example_on_a_per_window_model(lr_run, tmp_path):
    """A per-window musicnn run: the example averages the window probabilities as genrekit does."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from genrekit.cli import main
    from genrekit.evaluation.calibration import apply_temperature
    from genrekit.export import export_bundle
    from genrekit.predict import predict_file
    from genrekit.runs import Run

    assert main(["train", "--data", str(lr_run["tmp"] / "f"), "--arch", "musicnn", "--weights", "none", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = Run(tmp_path / "run")
    bundle = export_bundle(run.path, ["onnx"], tmp_path / "b")
    assert json.loads((bundle / "model_card.json").read_text())["input"]["track_model"] is False
    f = sorted((lr_run["data"] / "low").glob("*.wav"))[0]
    want = apply_temperature(predict_file(f, run), run.temperature)
    np.testing.assert_allclose(_example().predict(bundle, f), want, atol=1e-4)


def test_evaluate_writes_predictions_csv(lr_run):
    """evaluate's predictions.csv: one row per track, true/predicted/top-k with the calibrated
    probabilities genrekit predict gives for the same track's audio."""
    import csv

    from genrekit.evaluation.calibration import apply_temperature
    from genrekit.predict import predict_file
    from genrekit.runs import Run

    run = Run(lr_run["run"])
    folder = run.path / "eval" / "ood_dev"
    rows = list(csv.DictReader(open(folder / "predictions.csv", encoding="utf-8")))
    met = json.loads((folder / "metrics.json").read_text())
    assert list(rows[0]) == ["track", "true", "predicted", "correct", "top1", "p1", "top2", "p2", "top3", "p3"]
    assert len(rows) == met["track"]["n"] == 3
    assert np.mean([int(r["correct"]) for r in rows]) == pytest.approx(met["track"]["top1"])
    for r in rows:
        assert r["predicted"] == r["top1"] and int(r["correct"]) == (r["true"] == r["predicted"])
        audio = lr_run["data"] / f"{r['track']}.wav"
        p = apply_temperature(predict_file(audio, run), run.temperature)
        order = np.argsort(-p)
        assert [r["top1"], r["top2"], r["top3"]] == [run.labels[i] for i in order]
        np.testing.assert_allclose([float(r[f"p{i}"]) for i in (1, 2, 3)], p[order], atol=2e-4)
