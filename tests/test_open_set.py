"""Open-set rejection by embedding distance (genrekit.openset): the maths against a brute-force
reference, then a tiny default-recipe run (musicnn_lr, random backbone: offline) whose rule is
fitted at the end of training and used by predict --reject, eval-spotify's `unknown` folder,
the export bundle and a track model's timeline."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrekit.cli import main as cli_main
from genrekit.errors import UserError
from genrekit.evaluation.calibration import (
    UNKNOWN,
    choose_distance_threshold,
    fit_knn_distance,
    knn_distance,
)
from tests.conftest import musicnn_features, tone, write_tree

SR16 = 16000


def test_knn_distance_is_the_mean_squared_distance_to_the_nearest_training_tracks():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 12)) * rng.uniform(0.1, 10, 12) + 5
    query = np.vstack([train[:3] + 0.01, rng.normal(size=(4, 12)) * 30])
    stats = fit_knn_distance(train, k=5, dims=6)
    got = knn_distance(stats, query)
    sc = StandardScaler().fit(train)  # reference: scikit-learn's scaler and PCA, brute-force neighbours
    pca = PCA(6).fit(sc.transform(train))
    ztr, zq = pca.transform(sc.transform(train)), pca.transform(sc.transform(query))
    ref = np.sort(((zq[:, None] - ztr[None]) ** 2).sum(-1), axis=1)[:, :5].mean(1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert got[:3].max() < got[3:].min()  # near the training tracks is close, far noise is far
    assert knn_distance(stats, query[0]) == pytest.approx(got[0], rel=1e-6)  # one vector
    with pytest.raises(ValueError, match="features"):
        knn_distance(stats, np.zeros((2, 5)))


def test_distance_threshold_keeps_the_asked_share_accepted():
    d = np.arange(1.0, 21.0)  # 20 validation tracks
    th = choose_distance_threshold(d, 0.95)
    assert th == 19.0 and (d <= th).mean() == 0.95
    assert choose_distance_threshold(d, 1.0) == 20.0
    with pytest.raises(ValueError):
        choose_distance_threshold(d, 0.0)


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    """A musicnn_lr run on three tone 'genres' with 12 training and 12 validation tracks (enough
    for the distance rule), a probe folder of the known genres' new tracks plus `unknown` music
    (noise bursts and chirps, nothing like a tone), and an export."""
    from genrekit.cli import main

    base = tmp_path_factory.mktemp("openset")
    data = write_tree(base / "d", per_genre=10, seconds=4.0, sr=SR16)
    musicnn_features(data, base / "f", (40, 40, 20))
    run = base / "run"
    assert main(["train", "--data", str(base / "f"), "--weights", "none", "--out", str(run), "--quiet"]) == 0
    probe = base / "probe"
    for gi, (g, f0) in enumerate((("low", 220.0), ("mid", 660.0), ("high", 1760.0))):
        (probe / g).mkdir(parents=True)
        for i in range(3):
            sf.write(probe / g / f"new-{g}.{i}.wav", tone(f0 * (1.01 + 0.02 * i), 4.0, SR16, seed=700 + 10 * gi + i),
                     SR16, subtype="PCM_16")
    (probe / UNKNOWN).mkdir()
    rng = np.random.default_rng(5)
    t = np.arange(4 * SR16) / SR16
    for i in range(4):
        if i % 2:
            y = 0.4 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * (2 + i) * t) > 0)  # noise bursts
        else:
            y = 0.5 * np.sin(2 * np.pi * (100 + 1500 * t ** 2 * (1 + i / 4)) * t)  # a fast chirp
        sf.write(probe / UNKNOWN / f"other.{i}.wav", y.astype(np.float32), SR16, subtype="PCM_16")
    return {"run": run, "feats": base / "f", "probe": probe, "base": base}


@pytest.mark.slow
def test_training_fits_the_distance_rule(lr_run):
    from genrekit.openset import OPENSET_FILE, RULE_DISTANCE, load_distance_stats, rule_of
    from genrekit.runs import Run

    cal = json.loads((lr_run["run"] / "calibration.json").read_text())
    assert cal["reject_rule"] == RULE_DISTANCE and "reject_threshold" in cal  # the fallback is kept too
    d = cal["distance"]
    # fitted on all 24 known tracks (12 training + 12 validation), the threshold on their
    # out-of-fold distances (each track scored against the folds without it)
    assert d["train_tracks"] == 24 and d["heldout_tracks"] == 24 and d["k"] == 5 and d["accept"] == 0.95
    assert d["threshold_from"] == "out-of-fold distances"
    assert d["dims"] == 23  # at most one fewer than the tracks
    run = Run(lr_run["run"])
    stats = load_distance_stats(run)
    assert rule_of(run) == RULE_DISTANCE and stats["train"].shape == (24, 23)
    assert (lr_run["run"] / OPENSET_FILE).stat().st_size < 100_000


@pytest.mark.slow
def test_predict_rejects_the_probe_more_than_known_genres(lr_run, capsys):
    from genrekit.cli import main
    from genrekit.predict import predict_files

    res = predict_files([str(lr_run["probe"])], lr_run["run"], reject=True)
    assert all(r["reject_rule"] == "embedding_distance" for r in res)
    unknown = [r for r in res if f"/{UNKNOWN}/" in r["file"]]
    known = [r for r in res if f"/{UNKNOWN}/" not in r["file"]]
    assert len(unknown) == 4 and len(known) == 9
    rej_u = np.mean([r["rejected"] for r in unknown])
    rej_k = np.mean([r["rejected"] for r in known])
    assert rej_u > rej_k and rej_u >= 0.75
    for r in res:
        assert r["rejected"] == (r["reject_score"] > r["reject_threshold"])
        assert r["genre"] == (UNKNOWN if r["rejected"] else r["top"][0]["genre"])
    # the table says which rule and how far; an explicit threshold is the top-probability rule
    assert main(["predict", str(lr_run["probe"] / UNKNOWN), "--model", str(lr_run["run"]), "--reject"]) == 0
    out = capsys.readouterr().out
    assert "embedding distance" in out and "> threshold" in out
    [r] = predict_files([str(lr_run["probe"] / "low" / "new-low.0.wav")], lr_run["run"], reject_threshold=1.0)
    assert r["reject_rule"] == "top_probability" and r["rejected"]


@pytest.mark.slow
def test_a_damaged_statistics_file_is_refused_in_one_line(lr_run, tmp_path):
    from genrekit.predict import predict_files

    run = tmp_path / "run"
    shutil.copytree(lr_run["run"], run)
    (run / "openset.npz").write_bytes(b"not a numpy file")
    f = str(lr_run["probe"] / "low" / "new-low.0.wav")
    with pytest.raises(UserError, match="openset.npz"):
        predict_files([f], run, reject=True)
    assert predict_files([f], run)[0]["top"]  # without --reject the file is not needed
    np.savez(run / "openset.npz", mean=np.zeros(3), scale=np.ones(3), components=np.zeros((2, 4)),
             train=np.zeros((5, 2)), k=np.array(5))
    with pytest.raises(UserError, match="not a genrekit open-set"):
        predict_files([f], run, reject=True)


@pytest.mark.slow
def test_a_truncated_statistics_file_is_one_line_in_predict_evaluate_and_export(lr_run, tmp_path, capsys):
    """A cut-short openset.npz (a zip archive with its end missing: BadZipFile) is "damaged" in
    one line, exit 2, in every command that reads it (issue 27 #5), never an internal error."""
    run = tmp_path / "run"
    shutil.copytree(lr_run["run"], run)
    data = (run / "openset.npz").read_bytes()
    (run / "openset.npz").write_bytes(data[: len(data) // 2])
    f = str(lr_run["probe"] / "low" / "new-low.0.wav")
    for argv in (["predict", f, "--model", str(run), "--reject"],
                 ["evaluate", "--model", str(run), "--data", str(lr_run["feats"]), "--out", str(tmp_path / "ev")],
                 ["export", "--model", str(run), "--out", str(tmp_path / "bundle")]):
        capsys.readouterr()
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("genrekit: error:"), (argv, err)
        assert f"{run}/openset.npz is damaged" in err[0], err
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_eval_spotify_reports_the_distance_rule(lr_run, capsys):
    from genrekit.cli import main

    out = lr_run["base"] / "ev"
    assert main(["eval-spotify", "--model", str(lr_run["run"]), "--data", str(lr_run["probe"]), "--out", str(out),
                 "--quiet"]) == 0
    assert "open set (embedding distance" in capsys.readouterr().out
    o = json.loads((out / "metrics.json").read_text())["open_set"]
    assert o["rule"] == "embedding_distance" and o["unknown_n"] == 4 and o["known_n"] == 9
    assert o["unknown_rejected"] > 1 - o["known_accepted"]
    assert "nearest training tracks" in (out / "report.md").read_text()
    # the figures agree with predict --reject on the same tracks
    from genrekit.predict import predict_files

    res = predict_files([str(lr_run["probe"] / UNKNOWN)], lr_run["run"], reject=True)
    assert o["unknown_rejected"] == pytest.approx(np.mean([r["rejected"] for r in res]))


@pytest.mark.slow
def test_the_export_bundle_carries_the_rule(lr_run, tmp_path):
    from genrekit.export import export_bundle
    from genrekit.runs import EXPORT_MARKER

    out = export_bundle(lr_run["run"], ["keras"], tmp_path / "bundle")
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["reject_rule"] == "embedding_distance" and cal["distance"]["threshold"] > 0
    assert (out / "openset.npz").read_bytes() == (lr_run["run"] / "openset.npz").read_bytes()
    assert "openset.npz" in json.loads((out / EXPORT_MARKER).read_text())["files"]
    assert "farther than" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_a_track_models_timeline_follows_the_music(lr_run, tmp_path, monkeypatch):
    """Low tone then high tone: the timeline's first rows say low, its last rows high; each row
    covers TRACK_SPAN_SECONDS of windows (shortened here to fit a short test file)."""
    from genrekit import predict as P
    from genrekit import prediction

    monkeypatch.setattr(prediction, "TRACK_SPAN_SECONDS", 6.0)
    y = np.concatenate([tone(222.0, 15.0, SR16, seed=1), tone(1790.0, 15.0, SR16, seed=2)])
    sf.write(tmp_path / "two.wav", y, SR16, subtype="PCM_16")
    [r] = P.predict_files([str(tmp_path / "two.wav")], lr_run["run"], timeline_dir=tmp_path / "tl")
    rows = (tmp_path / "tl" / "two.timeline.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert head[:3] == ["start_s", "end_s", "genre"] and sorted(head[3:]) == ["high", "low", "mid"]
    body = [line.split(",") for line in rows[1:]]
    assert body[0][2] == "low" and body[-1][2] == "high"
    spans = [float(b[1]) - float(b[0]) for b in body]
    assert max(spans) <= 6.0 + 1e-6 and float(body[-1][1]) == pytest.approx(30.0, abs=3.0)
    assert r["timeline"][1].endswith("two.timeline.png") and Path(r["timeline"][1]).stat().st_size > 5000


@pytest.mark.slow
def test_per_genre_thresholds_are_fitted_and_used_by_predict_and_evaluate(lr_run, capsys):
    """Each genre's threshold keeps 95 % of that genre's held-out tracks accepted; predict
    --reject-per-genre applies the threshold of the track's top genre; evaluate reports the
    per-genre figures beside the global rule's."""
    from genrekit.cli import main
    from genrekit.openset import PER_GENRE, Rejector, has_per_genre_thresholds, rejector_for
    from genrekit.predict import predict_files
    from genrekit.runs import Run

    run = Run(lr_run["run"])
    cal = run.calibration
    per = cal["distance"]["threshold_per_genre"]
    assert has_per_genre_thresholds(run) and len(per) == 3 and all(v is None or v > 0 for v in per)
    assert len(cal["reject_threshold_per_genre"]) == 3
    assert per != [cal["distance"]["threshold"]] * 3  # not the global threshold copied
    res = predict_files([str(lr_run["probe"])], run.path, reject=PER_GENRE)
    for r in res:
        top = run.labels.index(r["top"][0]["genre"])
        want = per[top] if per[top] is not None else cal["distance"]["threshold"]
        assert r["reject_threshold"] == pytest.approx(want, abs=1e-4)
        assert r["rejected"] == (r["reject_score"] > r["reject_threshold"])
    assert main(["predict", str(lr_run["probe"] / "low"), "--model", str(run.path), "--reject-per-genre"]) == 0
    assert main(["predict", str(lr_run["probe"] / "low"), "--model", str(run.path), "--reject-per-genre",
                 "--reject-threshold", "0.5"]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    # a genre without enough held-out tracks falls back to the global threshold
    r = Rejector("embedding_distance", 10.0, per_genre=[None, 5.0, 20.0])
    assert r.rejected([7.0, 7.0, 7.0], [0, 1, 2]).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="top genres"):
        r.rejected([7.0])
    assert rejector_for(run, True, None).per_genre is None
    out = lr_run["base"] / "ev-per-genre"
    assert main(["eval-spotify", "--model", str(run.path), "--data", str(lr_run["probe"]), "--out", str(out),
                 "--quiet"]) == 0
    assert "per-genre thresholds (predict --reject-per-genre)" in capsys.readouterr().out
    o = json.loads((out / "metrics.json").read_text())["open_set"]
    assert set(o["per_genre"]) == {"unknown_rejected", "known_accepted", "known_top1_accepted", "accuracy_kept"}
