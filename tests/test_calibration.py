"""Calibration (temperature scaling, ECE) and open-set rejection (`predict --reject`, evaluate's
`unknown` folder): the maths on synthetic probabilities, then a tiny run trained on tones."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrekit.errors import UserError
from genrekit.evaluation.calibration import (
    UNKNOWN,
    apply_temperature,
    calibration_figures,
    choose_reject_threshold,
    expected_calibration_error,
    fit_temperature,
    open_set_figures,
    reliability_bins,
)
from tests.conftest import SR, tone, write_tree


def _overconfident(n=3000, k=6, sharpness=4.0, seed=0):
    """Softmax of logits that are ``sharpness`` times too large: right ~60 % of the time but
    nearly always ~100 % sure."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.2
    z = sharpness * logits
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    p, y = _overconfident()
    t = fit_temperature(p, y)
    assert 3.0 < t < 5.0  # the logits were 4x too large
    after = apply_temperature(p, t)
    before_ece, after_ece = expected_calibration_error(p, y), expected_calibration_error(after, y)
    assert before_ece > 0.2
    assert after_ece < before_ece / 3
    assert (after.argmax(1) == p.argmax(1)).all()  # top-1 never changes
    figs = calibration_figures(p, y, t)
    assert figs["nll_after"] < figs["nll_before"] and figs["ece_after"] == pytest.approx(after_ece)
    assert sum(figs["reliability_before"]["count"]) == len(y) and len(figs["reliability_after"]["count"]) == 15


def test_an_underconfident_model_is_sharpened():
    p, y = _overconfident(sharpness=0.3)
    t = fit_temperature(p, y)
    assert t < 1.0
    assert expected_calibration_error(apply_temperature(p, t), y) < expected_calibration_error(p, y)


def test_apply_temperature_is_p_to_the_one_over_t_renormalised():
    p = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-12)
    q = apply_temperature(p, 2.0)
    expect = p[0] ** 0.5 / (p[0] ** 0.5).sum()
    np.testing.assert_allclose(q[0], expect, atol=1e-12)
    assert q[0, 3] == 0.0  # an impossible class stays impossible
    np.testing.assert_allclose(q[1], 0.25)
    np.testing.assert_allclose(apply_temperature(p[0], 0.5), p[0] ** 2 / (p[0] ** 2).sum())  # one vector too
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            apply_temperature(p, bad)


def test_ece_of_a_perfectly_calibrated_bin_is_zero_and_bins_are_counted():
    # 10 predictions at 0.8 confidence, 8 right: calibrated; 10 at 1.0, 5 right: gap 0.5
    p = np.array([[0.8, 0.2]] * 10 + [[1.0, 0.0]] * 10)
    y = np.array([0] * 8 + [1] * 2 + [0] * 5 + [1] * 5)
    assert expected_calibration_error(p[:10], y[:10]) == pytest.approx(0.0)
    assert expected_calibration_error(p, y) == pytest.approx(0.25)
    bins = reliability_bins(p, y)
    assert sum(bins["count"]) == 20 and bins["count"][-1] == 10 and bins["accuracy"][-1] == pytest.approx(0.5)


def test_threshold_keeps_the_asked_share_accepted_and_open_set_figures():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4) * 0.5, size=200)
    th = choose_reject_threshold(p, 0.95)
    kept = (p.max(1) >= th).mean()
    assert 0.95 <= kept < 0.96
    y = p.argmax(1)
    y[:20] = (y[:20] + 1) % 4  # 20 wrong
    flat = np.full((50, 4), 0.25)
    f = open_set_figures(p, y, flat, th)
    assert f["unknown_rejected"] == 1.0 and f["known_accepted"] == pytest.approx(kept)
    assert f["known_top1"] == pytest.approx(0.9)
    assert 0 < f["accuracy_kept"] <= 1


# -- a tiny run trained on tones: calibration saved by train, applied by predict and evaluate ------------

@pytest.fixture(scope="module")
def tone_run(tmp_path_factory):
    """A small CNN trained on three tone 'genres' (12 validation tracks), and a probe folder of
    music of none of them: the three tones sounding together (the model splits its belief)."""
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.pipeline import run_augment
    from genrekit.train import TrainOptions, train
    from tests.conftest import small_features, small_settings

    base = tmp_path_factory.mktemp("cal")
    data = write_tree(base / "data", per_genre=12, seconds=2.5)
    settings = small_settings(features=small_features(image_width=32), ratios=(50, 30, 20),
                              augment=AugmentConfig(augmentations=()))
    run_augment(data, base / "feats", settings, workers=1, progress=False)
    res = train(TrainOptions(data=str(base / "feats"), arch="cnn", out=str(base / "run"), epochs=20, batch_size=4,
                             verbose=0, seed=0))
    # an eval-spotify style folder: the known genres' test-like tracks plus an `unknown` folder
    probe = base / "probe"
    for gi, (g, f0) in enumerate((("low", 220.0), ("mid", 660.0), ("high", 1760.0))):
        (probe / g).mkdir(parents=True)
        for i in range(4):  # new tracks (names and noise) of the known genres
            y = tone(f0 * (1.01 + 0.02 * i), 2.5, SR, seed=500 + 10 * gi + i)
            sf.write(probe / g / f"new-{g}.{i:05d}.wav", y, SR, subtype="PCM_16")
    (probe / UNKNOWN).mkdir()
    for i in range(6):
        y = sum(tone(f * (1 + 0.03 * i), 2.5, SR, seed=900 + i) for f in (220.0, 660.0, 1760.0)) / 3
        sf.write(probe / UNKNOWN / f"mix.{i:05d}.wav", y.astype(np.float32), SR, subtype="PCM_16")
    return {"run": Path(res.run), "feats": base / "feats", "probe": probe, "base": base}


@pytest.mark.slow
def test_train_saves_temperature_and_threshold(tone_run):
    from genrekit.runs import Run

    cal = json.loads((tone_run["run"] / "calibration.json").read_text())
    run = Run(tone_run["run"])
    assert run.temperature == pytest.approx(cal["temperature"]) and run.temperature > 0
    assert cal["level"] == "track" and cal["valid_tracks"] == 12
    assert run.reject_threshold == pytest.approx(cal["reject_threshold"]) and 0 < run.reject_threshold <= 1
    # a CNN has no track embedding: its rule is the top probability, and calibration.json says why
    assert cal["reject_rule"] == "top_probability" and "no track embedding" in cal["reject_rule_note"]
    assert not (tone_run["run"] / "openset.npz").exists()


@pytest.mark.slow
def test_predict_applies_the_temperature_and_rejects(tone_run, tmp_path):
    import shutil

    from genrekit.predict import predict_file, predict_files
    from genrekit.runs import Run

    run_copy = tmp_path / "run"
    shutil.copytree(tone_run["run"], run_copy)
    cal = json.loads((run_copy / "calibration.json").read_text())
    cal["temperature"], cal["reject_threshold"] = 3.0, 0.999
    (run_copy / "calibration.json").write_text(json.dumps(cal))
    f = str(tone_run["probe"] / "low" / "new-low.00000.wav")
    raw = predict_file(f, Run(run_copy))
    expect = apply_temperature(raw, 3.0)
    [r] = predict_files([f], run_copy, top_k=3)
    assert r["top"][0]["probability"] == pytest.approx(float(expect.max()), abs=1e-4)
    assert "genre" not in r  # no --reject: the answer is unchanged in form
    [r] = predict_files([f], run_copy, reject=True)  # T=3 flattens: below the 0.999 threshold
    assert r["rejected"] and r["genre"] == UNKNOWN and r["reject_threshold"] == pytest.approx(0.999)
    [r] = predict_files([f], run_copy, reject_threshold=0.0)  # an explicit threshold overrides the run's
    assert not r["rejected"] and r["genre"] == r["top"][0]["genre"]
    # a run made before calibration: T = 1, and --reject needs an explicit threshold
    (run_copy / "calibration.json").unlink()
    assert Run(run_copy).temperature == 1.0 and Run(run_copy).reject_threshold is None
    [r] = predict_files([f], run_copy)
    assert r["top"][0]["probability"] == pytest.approx(float(raw.max()), abs=1e-4)
    with pytest.raises(UserError, match="no rejection threshold"):
        predict_files([f], run_copy, reject=True)
    (run_copy / "calibration.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(UserError, match="bad temperature"):
        predict_files([f], run_copy)


@pytest.mark.slow
def test_cli_predict_reject(tone_run, capsys):
    from genrekit.cli import main

    f = str(tone_run["probe"] / UNKNOWN / "mix.00000.wav")
    assert main(["predict", f, "--model", str(tone_run["run"]), "--reject-threshold", "1", "--json"]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["genre"] == UNKNOWN and r["rejected"] is True
    with pytest.raises(SystemExit) as exc:  # argparse refuses it: one line, exit 2
        main(["predict", f, "--model", str(tone_run["run"]), "--reject-threshold", "1.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrekit: error:") and "probability" in err[0]


@pytest.mark.slow
def test_evaluate_reports_ece_and_rejects_the_probe_more_than_known_genres(tone_run, capsys):
    from genrekit.cli import main

    out = tone_run["base"] / "eval-probe"
    assert main(["eval-spotify", "--model", str(tone_run["run"]), "--data", str(tone_run["probe"]),
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ECE before" in printed and "unknown rejected" in printed
    met = json.loads((out / "metrics.json").read_text())
    assert UNKNOWN not in met["labels"] and met["track"]["n"] == 12  # unknown tracks are not scored as a genre
    cal = met["calibration"]
    assert cal["temperature"] == pytest.approx(json.loads((tone_run["run"] / "calibration.json").read_text())
                                               ["temperature"])
    for level in ("track", "clip"):
        assert 0 <= cal[level]["ece_before"] <= 1 and 0 <= cal[level]["ece_after"] <= 1
    o = met["open_set"]
    assert o["unknown_n"] == 6 and o["known_n"] == 12
    assert o["threshold"] == pytest.approx(json.loads((tone_run["run"] / "calibration.json").read_text())
                                           ["reject_threshold"])
    assert o["unknown_rejected"] > 1 - o["known_accepted"]  # the probe is rejected more than the known genres
    assert (out / "reliability.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## Calibration" in report and "## Open set" in report


@pytest.mark.slow
def test_evaluate_threshold_override_and_an_all_unknown_set(tone_run, tmp_path):
    from genrekit.evaluate import evaluate_folder

    res = evaluate_folder(tone_run["run"], tone_run["probe"], out=tmp_path / "e1", progress=False,
                          reject_threshold=1.0)
    assert res["open_set"]["unknown_rejected"] == 1.0 and res["open_set"]["known_accepted"] <= 1.0
    only = tmp_path / "only"
    (only / UNKNOWN).mkdir(parents=True)
    sf.write(only / UNKNOWN / "a.wav", tone(500.0, 2.5), SR, subtype="PCM_16")
    with pytest.raises(UserError, match="known genres are needed"):
        evaluate_folder(tone_run["run"], only, out=tmp_path / "e2", progress=False)
    assert not (tmp_path / "e2").exists()
