"""Tempo features, tempo regression, tempo figures and tempo->genre fusion (tiny click tracks)."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf

from genrekit.cli import main
from genrekit.data_tools.features import FeatureConfig, extract, tempo_bpm_axis
from genrekit.errors import UserError
from genrekit.evaluation.metrics import tempo_metrics
from genrekit.tempi import load_tempi, row_bpm, stretch_rate
from tests.conftest import SR, small_features

TEMPO_KW = dict(tempo_hop_length=128, tempo_ac_frames=192, tempo_step_frames=4, tempo_frames=32,
                tempo_hop_frames=16, melspec_frames=64)
# two "genres" told apart by tempo only: the same timbre, slow or fast clicks
TEMPI = {"slow": (70, 76, 82, 88, 94, 100), "fast": (135, 142, 150, 158, 166, 174)}


def clicks(bpm: float, seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = 0.01 * rng.standard_normal(int(seconds * sr))
    burst = rng.standard_normal(int(0.01 * sr)) * np.hanning(int(0.01 * sr))
    for t in np.arange(0.05, seconds - 0.02, 60.0 / bpm):
        i = int(t * sr)
        y[i:i + len(burst)] += 0.8 * burst
    return y.astype(np.float32)


def test_tempogram_peaks_at_the_click_tempo():
    cfg = small_features(**TEMPO_KW)
    axis = tempo_bpm_axis(cfg)
    for bpm in (80.0, 150.0):
        wins = extract(clicks(bpm, 5.0), cfg, "tempogram")
        assert wins[0][1].shape == cfg.feature_shape("tempogram") == (32, cfg.of("tempogram").bins)
        mean = np.mean([w for _, w in wins], axis=(0, 1))
        inside = (axis >= 40) & (axis <= 250)
        best = axis[inside][np.argmax(mean[inside])]
        assert abs(best - bpm) <= 0.04 * bpm or abs(best - 2 * bpm) <= 0.08 * bpm or abs(best - bpm / 2) <= 0.04 * bpm


def test_tempogram_settings_are_checked():
    from genrekit.data_tools.errors import DataError

    with pytest.raises(DataError, match="tempo_ac_frames is too short"):
        FeatureConfig(tempo_ac_frames=64)
    with pytest.raises(DataError, match="BPM range"):
        FeatureConfig(tempo_bpm_min=200.0, tempo_bpm_max=100.0)


def test_tempo_metrics_by_hand():
    m = tempo_metrics([100, 100, 120, 80], [103, 200, 60, 90])
    assert m["n"] == 4
    assert m["mae"] == pytest.approx((3 + 100 + 60 + 10) / 4)
    assert m["median_ae"] == pytest.approx(35.0)
    assert m["accuracy1"] == pytest.approx(0.25)  # only 103 is within 4 %
    assert m["accuracy2"] == pytest.approx(0.75)  # + the double and the half; 90 vs 80 is no octave


def test_annotations_gtzan_by_default_and_user_csv(tmp_path):
    tempi = load_tempi()
    assert len(tempi) == 999 and tempi["blues.00000"] == pytest.approx(125.87)
    row = {"track_id": "blues/blues.00000", "augmentation": "stretch_x1.25"}
    assert row_bpm(row, tempi) == pytest.approx(125.87 * 1.25)  # a faster variant has a faster tempo
    assert stretch_rate("pitch_+2") == 1.0
    p = tmp_path / "t.csv"
    p.write_text("track_id,bpm\nslow/a,90\n")
    assert row_bpm({"track_id": "slow/a", "augmentation": "original"}, load_tempi(p)) == 90
    p.write_text("id,tempo\na,90\n")
    with pytest.raises(UserError, match="track_id,bpm"):
        load_tempi(p)
    p.write_text("track_id,bpm\na,fast\n")
    with pytest.raises(UserError, match="line 2"):
        load_tempi(p)


def test_tempocnn_outputs_a_scaled_tempo_inside_the_range():
    from genrekit.models import build_model

    m = build_model("tempocnn", (32, 128), 1, bpm_min=30.0, bpm_max=480.0)
    w = m.get_layer("tempo").get_weights()[0][:, 0]
    assert w.min() >= 0 and w.max() <= 1 and np.all(np.diff(w) > 0)  # bins 40..250 BPM, scaled
    k = m.get_layer("rescore").get_weights()[0]
    assert np.count_nonzero(k) == len(w) and k.max() == pytest.approx(100.0, rel=0.01)  # prior peak at 120 BPM
    y = np.asarray(m(np.random.default_rng(0).random((3, 32, 128)).astype("float32")))
    assert y.shape == (3, 1) and np.all((y >= 0) & (y <= 1))


@pytest.fixture(scope="module")
def tempo_data(tmp_path_factory):
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    base = tmp_path_factory.mktemp("tempo")
    rows = []
    for g, tempi in TEMPI.items():
        (base / "audio" / g).mkdir(parents=True)
        for i, bpm in enumerate(tempi):
            sf.write(base / "audio" / g / f"{g}{i}.wav", clicks(bpm, 4.5, seed=i), SR, subtype="PCM_16")
            rows.append((f"{g}{i}", bpm))
    with open(base / "tempi.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("track_id", "bpm"), *rows])
    settings = AugmentSettings(features=small_features(**TEMPO_KW), kinds=("melspec", "tempogram"),
                               augment=AugmentConfig(augmentations=("stretch",), stretch_rates=(1.1,)),
                               ratios=(50, 25, 25), seed=1)
    run_augment(base / "audio", base / "feats", settings, workers=1, progress=False)
    return base


@pytest.fixture(scope="module")
def tempo_runs(tempo_data):
    feats, runs = str(tempo_data / "feats"), tempo_data / "runs"
    assert main(["train", "--task", "tempo", "--data", feats, "--tempo-file", str(tempo_data / "tempi.csv"),
                 "--out", str(runs / "tempo"), "--epochs", "3", "--batch-size", "8", "--quiet"]) == 0
    assert main(["train", "--arch", "cnn64x400", "--data", feats, "--out", str(runs / "genre"), "--epochs", "2",
                 "--batch-size", "8", "--quiet"]) == 0
    return runs


@pytest.mark.slow
def test_tempo_run_trains_evaluates_and_predicts(tempo_data, tempo_runs, capsys, tmp_path):
    run = tempo_runs / "tempo"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["task"] == "tempo" and cfg["arch"] == "tempocnn" and cfg["tempo_range"] == [40.0, 250.0]
    assert json.loads((run / "labels.json").read_text()) == ["bpm"]
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(run), "--data", str(tempo_data / "feats"), "--out", str(out)]) == 0
    assert "accuracy 2" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["track"]["n"] == 2 and (out / "tempo_scatter.png").is_file() and (out / "report.md").is_file()
    truth = {t["track_id"]: t["true_bpm"] for t in m["tracks"]}
    tempi = dict(zip([f"{g}{i}" for g in TEMPI for i in range(6)], [b for v in TEMPI.values() for b in v],
                     strict=True))
    assert all(truth[t] == tempi[t.split("/")[1]] for t in truth)
    preds = np.array([t["predicted_bpm"] for t in m["tracks"]])
    assert np.all((preds >= 40) & (preds <= 250))
    assert m["track"]["mae"] == pytest.approx(np.mean(np.abs(preds - [t["true_bpm"] for t in m["tracks"]])),
                                              abs=0.05)
    wav = tempo_data / "audio" / "slow" / "slow0.wav"
    assert main(["predict", str(wav), "--model", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 40 <= res[0]["bpm"] <= 250
    # a tempo run is not a genre classifier
    assert main(["compare", str(run)]) == 2
    assert "tempo run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fusion_run(tempo_data, tempo_runs):
    out = tempo_runs / "fusion"
    assert main(["train", "--arch", "fusion", "--data", str(tempo_data / "feats"), "--genre-run",
                 str(tempo_runs / "genre"), "--tempo-run", str(tempo_runs / "tempo"), "--out", str(out),
                 "--epochs", "2", "--batch-size", "8", "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_fusion_trains_on_a_frozen_embedding_and_the_predicted_tempo(tempo_data, tempo_runs, fusion_run, capsys,
                                                                     tmp_path):
    from genrekit.runs import Run

    feats = str(tempo_data / "feats")
    out = fusion_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "fusion" and cfg["feature_kind"] == "melspec" and (out / "tempo_model.keras").is_file()
    run, genre = Run(out), Run(tempo_runs / "genre")
    for name in ("input_norm", "conv_1", "bn_1", "conv_3", "bn_3"):
        lay = run.model().get_layer(name)
        assert not lay.trainable
        for w_f, w_g in zip(lay.get_weights(), genre.model().get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(w_f, w_g)  # frozen: identical to the genre run's weights
    assert not any(n.startswith("dense") or n == "predictions" for n in (lay.name for lay in run.model().layers))
    # the tempo input matters: the same window with another tempo gets other probabilities
    x = np.zeros((1, 64, 32), dtype="float32")
    p1 = run.model().predict([x, np.array([[0.1]])], verbose=0)
    p2 = run.model().predict([x, np.array([[0.9]])], verbose=0)
    assert not np.allclose(p1, p2)
    ev = tmp_path / "ev"
    assert main(["evaluate", "--model", str(out), "--data", feats, "--out", str(ev)]) == 0
    assert json.loads((ev / "metrics.json").read_text())["arch"] == "fusion"
    capsys.readouterr()
    assert main(["predict", str(tempo_data / "audio" / "fast" / "fast0.wav"), "--model", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)[0]
    assert {t["genre"] for t in res["top"]} == {"fast", "slow"} and 40 <= res["tempo_bpm"] <= 250


@pytest.mark.slow
def test_fusion_exports_to_onnx(fusion_run):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    from genrekit.export import export
    from genrekit.runs import Run

    out = fusion_run
    x = np.zeros((1, 64, 32), dtype="float32")
    p1 = Run(out).model().predict([x, np.array([[0.1]])], verbose=0)
    onnx_path = export(out, "onnx")
    sess = ort.InferenceSession(str(onnx_path))
    feed = dict(zip([i.name for i in sess.get_inputs()], [x, np.array([[0.1]], dtype="float32")], strict=True))
    np.testing.assert_allclose(sess.run(None, feed)[0], p1, atol=1e-5)


@pytest.mark.slow
def test_fusion_and_tempo_refusals(tempo_data, tempo_runs, capsys, tmp_path):
    feats = str(tempo_data / "feats")
    cases = [
        (["--arch", "fusion", "--genre-run", str(tempo_runs / "genre")], "--tempo-run"),
        (["--arch", "fusion", "--genre-run", str(tempo_runs / "tempo"), "--tempo-run", str(tempo_runs / "tempo")],
         "not a genre classifier"),
        (["--arch", "fusion", "--genre-run", str(tempo_runs / "genre"), "--tempo-run", str(tempo_runs / "genre")],
         "--task tempo"),
        (["--arch", "tempocnn"], "--task tempo"),
        (["--task", "tempo", "--arch", "cnn"], "genre classifier"),
        (["--task", "tempo", "--mixup", "0.2"], "--mixup"),
        (["--arch", "cnn64x400", "--genre-run", str(tempo_runs / "genre")], "--arch fusion"),
    ]
    for extra, message in cases:
        assert main(["train", "--data", feats, "--out", str(tmp_path / "x"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "x" / "model.keras").exists()
    # a folder without the tempogram windows: one line, and no run folder left behind
    import shutil

    from genrekit.data_tools.manifest import read_manifest, write_manifest

    bare = tmp_path / "bare"
    shutil.copytree(tempo_data / "feats", bare)
    write_manifest(bare / "manifest.csv", [r for r in read_manifest(bare) if r["feature"] != "tempogram"])
    assert main(["train", "--arch", "fusion", "--data", str(bare), "--genre-run", str(tempo_runs / "genre"),
                 "--tempo-run", str(tempo_runs / "tempo"), "--out", str(tmp_path / "y")]) == 2
    assert "--features <genre kind>,tempogram" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    with pytest.raises(SystemExit) as exc:  # --arch is refused by the parser (one line, exit 2), as for train
        main(["cv", "--data", feats, "--arch", "tempocnn", "--folds", "2", "--out", str(tmp_path / "cv")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("genrekit: error:"), err
    assert "genre classifiers" in err and not (tmp_path / "cv").exists()


def test_untrained_tempocnn_starts_at_the_prior_weighted_tempogram_peak():
    from genrekit.models import build_model
    from genrekit.tempi import unscale

    cfg = small_features(**TEMPO_KW)
    m = build_model("tempocnn", cfg.feature_shape("tempogram"), 1, bpm_min=cfg.of("tempogram").bpm_min,
                    bpm_max=cfg.of("tempogram").bpm_max)
    for bpm in (96.0, 132.0):
        x = np.stack([w for _, w in extract(clicks(bpm, 5.0), cfg, "tempogram")])
        pred = float(np.median(unscale(np.asarray(m(x))[:, 0])))
        assert abs(pred - bpm) <= 0.04 * bpm, (bpm, pred)


def test_fusion_control_ignores_the_tempo():
    from genrekit.models import build_model
    from genrekit.models.tempo import build_fusion

    genre = build_model("cnn64x400", (64, 32), 3)
    m = build_fusion(genre, 3, use_tempo=False)
    x = np.random.default_rng(0).random((2, 64, 32)).astype("float32")
    np.testing.assert_allclose(np.asarray(m([x, np.full((2, 1), 0.1)])), np.asarray(m([x, np.full((2, 1), 0.9)])))
    assert not m.get_layer("tempo_dense_1").trainable
