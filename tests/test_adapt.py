"""``genrekit adapt`` and ``genrekit suggest`` on a tiny default-recipe run (musicnn_lr, random
backbone: offline): the user's labelled tracks, a genre the run does not know, the old run left
byte-identical, suggest's CSV read back by adapt, bad labels refused with nothing written, and
the adapted run exported."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from genrekit.evaluation.calibration import choose_temperature
from tests.conftest import USER_FREQS, musicnn_features, one_error, user_music, write_tree

SR16 = 16000
FREQS = USER_FREQS


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    from genrekit.cli import main

    base = tmp_path_factory.mktemp("adapt")
    data = write_tree(base / "d", per_genre=8, seconds=4.0, sr=SR16)
    musicnn_features(data, base / "f")
    run = base / "run"
    assert main(["train", "--data", str(base / "f"), "--weights", "none", "--out", str(run), "--quiet"]) == 0
    labelled = user_music(base / "labelled", per_genre=2, seed0=500, buzz=4)
    probe = user_music(base / "probe", per_genre=1, seed0=900, buzz=3)
    adapted = base / "adapted"
    before = _tree(run)
    assert main(["adapt", "--model", str(run), "--data", str(labelled), "--out", str(adapted)]) == 0
    return {"run": run, "data": data, "base": base, "labelled": labelled, "probe": probe, "adapted": adapted,
            "before": before}


@pytest.mark.slow
def test_the_run_keeps_its_tracks_embeddings(lr_run):
    from genrekit.runs import Run
    from genrekit.trackrun import load_embeddings

    e = load_embeddings(Run(lr_run["run"]))
    assert e["x"].shape[0] == 18 and e["x"].dtype == np.float32  # 12 training + 6 validation tracks
    assert set(e["split"]) == {"train", "valid"} and set(e["genre"]) == set(FREQS)
    with np.load(lr_run["run"] / "embeddings.npz", allow_pickle=False) as z:  # plain arrays, no pickle
        assert {"x", "genre", "track_id", "split", "origin"} <= set(z.files)


@pytest.mark.slow
def test_adapt_adds_a_new_genre_and_leaves_the_old_run_untouched(lr_run, capsys):
    from genrekit.predict import predict_files

    assert _tree(lr_run["run"]) == lr_run["before"]  # byte-identical, nothing added
    new = lr_run["adapted"]
    labels = json.loads((new / "labels.json").read_text())
    assert labels[:3] == json.loads((lr_run["run"] / "labels.json").read_text()) and labels[3:] == ["buzz"]
    cfg = json.loads((new / "config.json").read_text())
    a = cfg["adapt"]
    assert cfg["phase"] == "adapt" and a["new_genres"] == ["buzz"] and a["tracks"] == 10
    assert a["tracks_per_genre"] == {"buzz": 4, "high": 2, "low": 2, "mid": 2}
    assert a["weight"] == pytest.approx(18 / 10) and a["source"] == str(lr_run["labelled"].resolve())
    res = predict_files([str(lr_run["probe"])], new)
    got = {Path(r["file"]).name: r["top"][0]["genre"] for r in res}
    buzz = [v for k, v in got.items() if "buzz" in k]
    assert buzz == ["buzz"] * 3  # the new genre is predicted
    tones = {k: v for k, v in got.items() if "buzz" not in k}
    assert sum(v == k.split("-")[1] for k, v in tones.items()) >= 2
    # the old run still has three genres and never answers buzz
    assert all(r["top"][0]["genre"] != "buzz" for r in predict_files([str(lr_run["probe"])], lr_run["run"]))
    # the adapted run's kept embeddings hold the user's tracks: it can be adapted again
    with np.load(new / "embeddings.npz", allow_pickle=False) as z:
        assert len(z["x"]) == 28 and (z["split"] == "user").sum() == 10


@pytest.mark.slow
def test_the_adapted_run_evaluates_and_its_card_says_what_was_added(lr_run, tmp_path, capsys):
    from genrekit.cli import main
    from genrekit.export import export_bundle

    card = (export_bundle(lr_run["adapted"], ["keras"], tmp_path / "bundle") / "MODEL_CARD.md").read_text()
    assert "## Adapted to the user's music" in card and "buzz 4" in card
    assert str(lr_run["labelled"].resolve()) in card and "new genres: buzz" in card
    out = tmp_path / "ev"
    assert main(["eval-spotify", "--model", str(lr_run["adapted"]), "--data", str(lr_run["probe"]),
                 "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "buzz" in json.dumps(m)  # evaluated like the other genres


@pytest.mark.slow
def test_suggest_writes_a_csv_that_adapt_reads_back(lr_run, tmp_path, capsys):
    from genrekit.cli import main

    music = shutil.copytree(lr_run["probe"], tmp_path / "music")
    lists = tmp_path / "lists"
    lists.mkdir()
    csv_path, m3u = lists / "to-label.csv", lists / "to-label.m3u"
    assert main(["suggest", "--model", str(lr_run["run"]), "--data", str(music), "-n", "4",
                 "--csv", str(csv_path), "--m3u", str(m3u)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and all("guess" in line for line in out)
    rows = list(csv.DictReader(csv_path.open()))
    assert [list(r) for r in rows[:1]] == [["path", "genre", "guess", "probability", "margin"]]
    assert len(rows) == 4 and all(r["genre"] == "" for r in rows)
    assert len({r["path"] for r in rows}) == 4
    for r in rows:
        assert (lists / r["path"]).is_file() and not Path(r["path"]).is_absolute()
        assert 0 <= float(r["margin"]) <= float(r["probability"]) <= 1
    entries = [line for line in m3u.read_text().splitlines() if not line.startswith("#")]
    assert entries == [r["path"] for r in rows]
    # an existing CSV (the user's labels) is never replaced
    before = csv_path.read_bytes()
    assert one_error(capsys, main(["suggest", "--model", str(lr_run["run"]), "--data", str(music),
                                    "--csv", str(csv_path)])).endswith("genrekit never replaces it)")
    assert csv_path.read_bytes() == before
    # the user fills in the genre column; adapt reads it back
    for r in rows:
        r["genre"] = Path(r["path"]).parent.name
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    new = tmp_path / "adapted2"
    assert main(["adapt", "--model", str(lr_run["run"]), "--labels", str(csv_path), "--out", str(new)]) == 0
    cfg = json.loads((new / "config.json").read_text())["adapt"]
    assert cfg["tracks"] == 4 and sum(cfg["tracks_per_genre"].values()) == 4
    # suggest on the adapted run leaves out the tracks it was taught
    capsys.readouterr()
    assert main(["suggest", "--model", str(new), "--data", str(music), "-n", "10"]) == 0
    res = capsys.readouterr()
    assert "left out 4 track(s) the run already knows" in res.err
    assert len(res.out.strip().splitlines()) == len(list(music.rglob("*.wav"))) - 4


def test_suggestions_take_turns_over_the_guesses_and_skip_near_duplicates():
    from genrekit.adapt import rank_suggestions

    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6)) * 5
    x[1] = x[0] + 1e-3  # a near-duplicate of track 0
    proba = np.full((8, 3), 0.05)
    guesses = [0, 0, 0, 0, 0, 1, 1, 2]
    margins = [0.10, 0.05, 0.30, 0.40, 0.50, 0.60, 0.20, 0.70]  # track 1 is the most hesitant of genre 0
    for i, (g, m) in enumerate(zip(guesses, margins, strict=True)):
        proba[i, g] = 0.5 + m / 2
        proba[i, (g + 1) % 3] = 0.5 - m / 2
    proba /= proba.sum(1, keepdims=True)
    order = rank_suggestions(proba, x, np.ones(6), 4)
    assert order[:3] == [1, 6, 7]  # genre 0's, 1's and 2's most hesitant track in turn
    assert order[3] == 2 and 0 not in order  # track 0 is track 1 again: skipped while others are left
    assert sorted(rank_suggestions(proba, x, np.ones(6), 8)) == list(range(8))  # all of them when asked
    assert rank_suggestions(proba, x, np.ones(6), 20)[-1] == 0


def _labels_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,genre\n" + "".join(f"{p},{g}\n" for p, g in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing file", "empty genre", "labelled twice", "a training track",
                                  "the same audio twice", "not a default-recipe run"])
def test_bad_labels_are_refused_in_one_line_with_nothing_written(lr_run, tmp_path, capsys, case):
    from genrekit.cli import main

    lab = tmp_path / "lab"
    shutil.copytree(lr_run["labelled"], lab)
    a, b = "low/mine-low-500-0.wav", "mid/mine-mid-500-0.wav"
    run = lr_run["run"]
    if case == "missing file":
        args = ["--labels", str(_labels_csv(lab / "l.csv", [(a, "low"), ("low/nope.wav", "low")]))]
        want = "audio file low/nope.wav not found"
    elif case == "empty genre":
        args = ["--labels", str(_labels_csv(lab / "l.csv", [(a, "low"), (b, "")]))]
        want = "has an empty genre"
    elif case == "labelled twice":
        args = ["--labels", str(_labels_csv(lab / "l.csv", [(a, "low"), (b, "mid"), (a, "mid")]))]
        want = "is labelled twice"
    elif case == "a training track":
        train_track = next(iter(sorted((lr_run["data"] / "low").glob("*.wav"))))
        shutil.copy(train_track, lab / "low" / "my-copy.wav")
        args = ["--data", str(lab)]
        want = "a track the run already knows cannot teach it"
    elif case == "the same audio twice":
        shutil.copy(lab / a, lab / "mid" / "again.wav")
        args = ["--data", str(lab)]
        want = "are the same music; keep one"
    else:
        run = tmp_path / "cnnish"
        shutil.copytree(lr_run["run"], run)
        cfg = json.loads((run / "config.json").read_text())
        cfg["head"] = None
        (run / "config.json").write_text(json.dumps(cfg))
        args = ["--data", str(lab)]
        want = "works with the default recipe's runs"
    before = _tree(tmp_path)
    capsys.readouterr()
    out = tmp_path / "new"
    line = one_error(capsys, main(["adapt", "--model", str(run), *args, "--out", str(out)]))
    assert want in line, line
    assert not out.exists() and _tree(tmp_path) == before


@pytest.mark.slow
def test_the_adapted_run_exports_and_its_bundle_works_without_genrekit(lr_run, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    import importlib.util

    from genrekit.evaluation.calibration import apply_temperature
    from genrekit.export import export_bundle
    from genrekit.predict import predict_file
    from genrekit.runs import Run

    example = Path(__file__).resolve().parents[1] / "examples" / "predict_export.py"
    spec = importlib.util.spec_from_file_location("predict_export_example_adapt", example)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    run = Run(lr_run["adapted"])
    bundle = export_bundle(run.path, ["onnx"], tmp_path / "b")
    assert json.loads((bundle / "labels.json").read_text())[-1] == "buzz"
    for f in sorted(lr_run["probe"].rglob("*.wav"))[:3]:
        want = apply_temperature(predict_file(f, run), run.temperature)
        np.testing.assert_allclose(ex.predict(bundle, f, "model.onnx"), want, atol=1e-4)


def test_an_out_of_fold_temperature_is_never_sharper_than_the_raw_model_without_evidence():
    """A deliberately shifted set: on the training collection's own held-out tracks the model is
    right and under-confident (a temperature fit alone would sharpen, T < 1); on the shifted
    music it is right half the time. The chosen temperature stays 1 and the shifted set's ECE is
    not made worse; over-confident wrong answers still soften it (T > 1); with the user's own
    held-out tracks (allow_sharpen) a clear gain may sharpen."""
    from genrekit.evaluation.calibration import (
        apply_temperature,
        expected_calibration_error,
        fit_temperature,
    )

    rng = np.random.default_rng(0)
    n, k = 300, 5

    def probs(y, right):
        logits = rng.normal(0, 0.3, (len(y), k))
        hit = np.where(rng.random(len(y)) < right, y, (y + 1 + rng.integers(0, k - 1, len(y))) % k)
        logits[np.arange(len(y)), hit] += 1.5
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    y_in, y_out = rng.integers(0, k, n), rng.integers(0, k, n)
    p_in, p_out = probs(y_in, 0.97), probs(y_out, 0.5)
    t_fit = fit_temperature(p_in, y_in)
    t, note = choose_temperature(p_in, y_in, allow_sharpen=False)
    assert t_fit < 0.8 and t == 1.0 and "not used" in note
    raw = expected_calibration_error(p_out, y_out)
    assert expected_calibration_error(apply_temperature(p_out, t), y_out) <= raw + 1e-12
    assert expected_calibration_error(apply_temperature(p_out, t_fit), y_out) > raw  # what the old fit did
    wrong = np.roll(p_in, 1, axis=1) ** 4  # confident and mostly wrong: softened
    wrong /= wrong.sum(1, keepdims=True)
    assert choose_temperature(wrong, y_in, allow_sharpen=False)[0] > 1.0
    assert choose_temperature(p_in, y_in, allow_sharpen=True)[0] == pytest.approx(t_fit)


def test_nothing_is_written_inside_the_run_or_a_bundle(lr_run, tmp_path, capsys):
    """adapt's --out and suggest's --csv/--m3u inside a run folder (the old one) or an export
    bundle are refused: the old run stays byte-identical."""
    from genrekit.cli import main
    from genrekit.export import export_bundle

    run = lr_run["run"]
    bundle = export_bundle(run, ["keras"], tmp_path / "bundle")
    before, before_b = _tree(run), _tree(bundle)
    for argv in (["adapt", "--model", str(run), "--data", str(lr_run["labelled"]), "--out", str(run / "mine")],
                 ["adapt", "--model", str(run), "--data", str(lr_run["labelled"]), "--out", str(bundle / "x")],
                 ["suggest", "--model", str(run), "--data", str(lr_run["probe"]), "--csv", str(run / "l.csv")],
                 ["suggest", "--model", str(run), "--data", str(lr_run["probe"]), "--m3u", str(bundle / "l.m3u")]):
        assert "lies inside" in one_error(capsys, main(argv))
    assert _tree(run) == before and _tree(bundle) == before_b


def test_suggest_and_adapt_never_write_through_a_link_or_over_a_users_file(tmp_path):
    """A link at --csv/--m3u (even one leading nowhere yet) or at adapt's --out, and a user's
    file or folder there, are refused: nothing is written through them."""
    from genrekit.adapt import check_new_file
    from genrekit.errors import UserError
    from genrekit.runs import check_new_run_path

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "dangling.csv").symlink_to(outside / "later.csv")
    (tmp_path / "mine.csv").write_text("my own notes\n")
    (tmp_path / "linked-run").symlink_to(outside, target_is_directory=True)
    (tmp_path / "my-folder").mkdir()
    (tmp_path / "my-folder" / "notes.txt").write_text("mine")
    for name in ("dangling.csv", "mine.csv"):
        with pytest.raises(UserError, match="never replaces it"):
            check_new_file(tmp_path / name, "--csv")
    for name in ("linked-run", "my-folder"):
        with pytest.raises(UserError):
            check_new_run_path(tmp_path / name)
    assert not (outside / "later.csv").exists() and list(outside.iterdir()) == []
    assert (tmp_path / "mine.csv").read_text() == "my own notes\n"
