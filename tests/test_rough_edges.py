"""The default path's rough edges (issue 23): progress bars, honest summaries, what the recipe
renders, run folders without duplicates, the model card and export hints, predict and
evaluate details. Tiny synthetic audio; the default recipe with a random musicnn (``--weights
none``: offline)."""
import contextlib
import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from genrekit.cli import main
from genrekit.train import TrainOptions, train
from tests.conftest import musicnn_features, write_tree

pytestmark = pytest.mark.slow
SR16 = 16000


@pytest.fixture(scope="module")
def cnn_run(tiny_features, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "run"
    res = train(TrainOptions(data=str(tiny_features), arch="cnn", out=str(out), epochs=2, batch_size=8, verbose=0))
    return res


@pytest.fixture(scope="module")
def lr_feats(tmp_path_factory):
    """musicnn features of three tone genres, 8 tracks each (3 s: one window a track)."""
    base = tmp_path_factory.mktemp("lr")
    data = write_tree(base / "d", per_genre=8, seconds=3.0, sr=SR16)
    musicnn_features(data, base / "f")
    return base / "f"


def test_a_run_folder_keeps_no_duplicate_checkpoint(cnn_run):
    run = Path(cnn_run.run)
    assert (run / "model.keras").is_file()
    assert not (run / "checkpoint.keras").exists()  # the best-so-far checkpoint is model.keras now


def _cli(argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a genrekit command (stderr is not a terminal here)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def lr_run(lr_feats, tmp_path_factory):
    """The default recipe (no --arch) trained with --progress forced: (run folder, stdout, stderr)."""
    run = tmp_path_factory.mktemp("lrrun") / "run"
    rc, out, err = _cli(["train", "--data", lr_feats, "--weights", "none", "--out", run, "--progress"])
    assert rc == 0, err
    return run, out, err


def test_train_shows_the_embedding_progress_when_asked_and_nothing_when_quiet(lr_feats, lr_run, tmp_path):
    _, _, err = lr_run
    assert re.search(r"embed: +100%.*track/s", err)  # tqdm's bar of the frozen backbone's pass
    rc, out, err = _cli(["train", "--data", lr_feats, "--weights", "none", "--out", tmp_path / "q", "--quiet",
                         "--progress"])
    assert rc == 0 and "track/s" not in err and "\r" not in err  # --quiet wins over --progress
    rc, out, err = _cli(["train", "--data", lr_feats, "--weights", "none", "--out", tmp_path / "n"])
    assert rc == 0 and "\r" not in err  # stderr is no terminal: no bar unless asked


def test_train_summary_ends_with_what_was_fitted_and_the_wall_time(lr_run, cnn_run):
    from genrekit.training import format_summary

    run, out, _ = lr_run
    last = out.strip().splitlines()[-1]
    cfg = json.loads((run / "config.json").read_text())
    hf = cfg["head_fit"]
    assert last.startswith(f"run: {run} (musicnn_lr: logistic regression")
    assert f"C = {hf['C']:.3g}, {hf['samples']} tracks" in last and re.search(r"; \d+\.\d s wall time\)$", last)
    assert "epochs" not in last and "transfer" not in last
    assert "clip top-1" not in out and "track top-1" in out  # a track model: its clips are its tracks
    keras_last = format_summary(cnn_run).splitlines()[-1]
    assert re.fullmatch(r"run: .* \(cnn scratch, 2 epochs; \d+\.\d s wall time\)", keras_last)
    assert "clip top-1" in format_summary(cnn_run)


def test_a_track_models_reports_have_no_clip_column_equal_to_the_track_one(lr_feats, lr_run, tmp_path):
    run, _, _ = lr_run
    rc, out, err = _cli(["evaluate", "--model", run, "--data", lr_feats, "--out", tmp_path / "ev"])
    assert rc == 0, err
    head = out.splitlines()[0].split()
    assert head == ["test", "split", "track"] and "the model classifies whole tracks" in out
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "clip / segment level" not in report and "(clip level)" not in report
    assert "clip-level figures are the track-level ones" in report
    assert not (tmp_path / "ev" / "confusion_clip.png").exists() and (tmp_path / "ev" / "confusion.png").is_file()
    met = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert met["clips_are_tracks"] is True and "clip" in met  # metrics.json keeps both levels


def test_compare_shows_the_settings_that_differ_and_the_default_recipes_cv_accuracy(lr_feats, lr_run, cnn_run,
                                                                                      tmp_path):
    run, _, _ = lr_run
    other = tmp_path / "seed1"
    assert _cli(["train", "--data", lr_feats, "--weights", "none", "--out", other, "--seed", "1", "--quiet"])[0] == 0
    csv_path = tmp_path / "cmp.csv"
    rc, out, err = _cli(["compare", run, other, "--csv", csv_path])
    assert rc == 0, err
    cv_acc = json.loads((run / "config.json").read_text())["head_fit"]["cv_accuracy"]
    lines = [ln for ln in out.splitlines() if ln.startswith("| run ") or ln.startswith(f"| {run.name} ")]
    assert "settings that differ" in lines[0]
    assert f"| {100 * cv_acc:.1f} (CV) |" in lines[1] and "| – |" in lines[1]  # no epochs
    assert "seed=0" in lines[1] and "inner cross-validation accuracy" in out
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["settings"].split("; ")[0] for r in rows] == ["seed=0", "seed=1"]
    assert rows[0]["val_source"] == "inner CV" and float(rows[0]["val_top1"]) == pytest.approx(cv_acc)
    rc, out, _ = _cli(["compare", run, cnn_run.run])
    assert rc == 0 and "epochs=–" in out and "epochs=2" in out and "C=" in out
    rc, out, _ = _cli(["compare", run])
    assert rc == 0 and out.splitlines()[2].rstrip().endswith("| – |")  # one run: nothing differs


def test_augment_renders_no_variants_for_musicnn_features_alone_unless_asked(tmp_path):
    from genrekit.data_tools.manifest import read_manifest

    data = write_tree(tmp_path / "d", per_genre=3, seconds=3.0, sr=SR16)
    rc, out, err = _cli(["augment", "--data", data, "--out", tmp_path / "f", "--features", "musicnn"])
    assert rc == 0, err
    assert "note: --features musicnn: no augmented variants" in err
    assert {r["augmentation"] for r in read_manifest(tmp_path / "f")} == {"original"}
    rc, _, err = _cli(["augment", "--data", data, "--out", tmp_path / "g", "--features", "musicnn",
                       "--augment", "pitch", "--pitch-semitones", "1"])
    assert rc == 0 and "note:" not in err
    assert {r["augmentation"] for r in read_manifest(tmp_path / "g")} == {"original", "pitch_+1"}


def test_cv_without_arch_runs_the_default_recipe(lr_feats, tmp_path):
    rc, out, err = _cli(["cv", "--data", lr_feats, "--folds", "2", "--weights", "none", "--out", tmp_path / "cv"])
    assert rc == 0, err
    res = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert res["arch"] == "musicnn_lr" and "musicnn_lr" in out
    assert json.loads((tmp_path / "cv" / "fold-1" / "run" / "config.json").read_text())["head"] == "logreg"


def test_the_model_card_names_the_real_example_and_one_spelling_of_the_data(lr_feats, lr_run, tmp_path,
                                                                            monkeypatch):
    from genrekit.export import export_bundle

    run = tmp_path / "run"
    shutil.copytree(lr_run[0], run)
    monkeypatch.chdir(lr_feats.parent)
    assert _cli(["evaluate", "--model", run, "--data", lr_feats.name])[0] == 0  # a relative spelling
    bundle = export_bundle(run, ("keras",), tmp_path / "bundle")
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "examples/predict_export.py" in card and "predict_onnx" not in card
    assert (Path(__file__).resolve().parents[1] / "examples" / "predict_export.py").is_file()
    assert 'pip install ".[export]"' in card and "onnxruntime" in card
    evals = json.loads((bundle / "model_card.json").read_text())["evaluations"]
    assert {e["data"] for e in evals} == {str(lr_feats.resolve())}
    assert "| test | `" + str(lr_feats.resolve()) + "` | no | end of training | track |" in card  # rows say their source
    assert "| no | `eval/test/metrics.json` | track |" in card
    assert all("track" in e and "clip" not in e for e in evals)  # a track model: no copy of its figures as clips
    assert "| clip |" not in card and "| track |" in card


def test_the_onnx_install_hint_works_from_a_checkout_and_names_onnxruntime(lr_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx fails
    rc, _, err = _cli(["export", "--model", lr_run[0], "--format", "onnx", "--out", tmp_path / "b"])
    assert rc == 2 and 'pip install ".[export]"' in err and "onnxruntime" in err and err.count("\n") == 1


def test_predict_timeline_says_where_it_wrote(lr_feats, lr_run, tmp_path):
    song = next(iter(sorted((lr_feats.parent / "d" / "low").glob("*.wav"))))
    rc, out, err = _cli(["predict", song, "--model", lr_run[0], "--timeline", tmp_path / "tl"])
    assert rc == 0, err
    assert f"timelines: 1 file(s) -> {tmp_path / 'tl'}/" in err and "timeline.csv" in err
    assert (tmp_path / "tl" / f"{song.stem}.timeline.csv").is_file()
    rc, out, err = _cli(["predict", song, "--model", lr_run[0]])
    assert rc == 0 and "timelines" not in err


def test_the_augment_report_lists_the_settings_of_the_kinds_it_rendered(lr_feats, tiny_features):
    line = next(ln for ln in (lr_feats / "report.md").read_text().splitlines() if ln.startswith("- features:"))
    assert "musicnn 187 frames x 96 mels per 2.99 s" in line and "16000 Hz" in line
    assert "image" not in line and "MFCC" not in line and "mfcc" not in line and "floor" not in line
    line = next(ln for ln in (tiny_features / "report.md").read_text().splitlines() if ln.startswith("- features:"))
    assert "mel 32 x 32 image per 2 s" in line and "mfcc 13 coefficients" in line and "floor -80 dB" in line


def test_the_per_genre_table_shows_a_dash_for_an_undefined_precision():
    import numpy as np

    from genrekit.evaluation.metrics import evaluate_predictions
    from genrekit.evaluation.report import evaluation_report

    labels = ["a", "b", "c", "d"]  # c is never predicted; d is absent from the set (and never predicted)
    y = np.array([0, 1, 2, 2])
    p = np.array([[.7, .2, .1, 0], [.2, .7, .1, 0], [.6, .3, .1, 0], [.1, .8, .1, 0]])
    res = evaluate_predictions(["t1", "t2", "t3", "t4"], y, p, labels)
    pg = res["track"]["per_genre"]
    assert pg["a"]["precision"] == pytest.approx(0.5) and pg["c"]["precision"] is None and pg["d"]["precision"] is None
    table = evaluation_report(res, "t", [], {}).split("## Per genre (track level)")[1].split("##")[0]
    rows = {ln.split(" | ")[0].strip("| "): ln.split(" | ") for ln in table.splitlines() if ln.startswith("| ")}
    assert rows["c"][4] == "–" and rows["d"][4] == "–"  # precision column
    assert rows["a"][4] == "50.0" and rows["c"][5] == "0.0"  # recall of a present genre stays 0


def test_the_demo_runs_augment_train_evaluate_and_predict(tmp_path):
    rc, out, err = _cli(["demo", "--out", tmp_path / "demo", "--quick", "--workers", "1"])
    assert rc == 0, err
    steps = [ln.split("]")[0] + "]" for ln in out.splitlines() if re.match(r"\[\d/5\]", ln)]
    assert steps == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert "[4/5] evaluate on the test split" in out and "SYNTHETIC" in out
    run = tmp_path / "demo" / "runs" / "cnn"
    assert (run / "eval" / "test" / "report.md").is_file() and (run / "eval" / "test" / "metrics.json").is_file()
    assert not (run / "checkpoint.keras").exists()
