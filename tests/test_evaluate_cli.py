"""genrekit evaluate / compare / cv end to end on tiny data, and their refusals."""
import csv
import json
from pathlib import Path

import pytest

from genrekit.cli import main
from genrekit.data_tools.features import FeatureConfig
from genrekit.errors import UserError
from genrekit.evaluate import evaluate
from genrekit.train import TrainOptions, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(tiny_features, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    runs = []
    for arch in ("cnn", "fcnn"):
        r = train(TrainOptions(data=str(tiny_features), arch=arch, out=str(base / arch), epochs=2,
                               batch_size=8, verbose=0))
        runs.append(r.run)
    return runs


def test_evaluate_writes_figures_plots_and_report(tiny_features, two_runs, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", two_runs[0], "--data", str(tiny_features), "--out", str(out)]) == 0
    assert "top-2" in capsys.readouterr().out
    for name in ("metrics.json", "report.md", "confusion.png", "confusion_clip.png", "per_genre.png", "roc.png",
                 "curves.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for lvl in ("clip", "track"):
        for key in ("top1", "top2", "loss", "f1_macro", "f1_micro", "auc_macro", "per_genre", "confusion",
                    "confusion_normalised", "roc"):
            assert key in m[lvl], (lvl, key)
    assert m["track"]["n"] == 3  # one test track per genre
    report = (out / "report.md").read_text()
    assert "clip / segment level" in report and "track level" in report and "Confusion matrix" in report


def test_compare_prints_markdown_and_writes_csv(two_runs, tmp_path, capsys):
    csv_path = tmp_path / "cmp.csv"
    assert main(["compare", *two_runs, "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "| run | model |" in out and "cnn" in out and "fcnn" in out
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["arch"] for r in rows] == ["cnn", "fcnn"] and rows[0]["top1"] != ""
    assert {r["split"] for r in rows} == {"test"}


def test_each_split_has_its_own_labelled_results(tiny_features, two_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[1], run)
    assert main(["evaluate", "--model", str(run), "--data", str(tiny_features)]) == 0
    assert "test split" in capsys.readouterr().out
    test_dir = run / "eval" / "test"
    before = {p.name: p.read_bytes() for p in test_dir.iterdir()}
    assert main(["evaluate", "--model", str(run), "--data", str(tiny_features), "--split", "valid"]) == 0
    assert "eval/valid/report.md" in capsys.readouterr().out
    # the valid evaluation wrote its own folder and left the test results as they were
    assert {p.name: p.read_bytes() for p in test_dir.iterdir()} == before
    valid = json.loads((run / "eval" / "valid" / "metrics.json").read_text())
    test = json.loads((test_dir / "metrics.json").read_text())
    assert valid["split"] == "valid" and test["split"] == "test"
    assert "split: **valid**" in (run / "eval" / "valid" / "report.md").read_text()
    assert not (run / "metrics.json").exists()
    # compare shows the split it was asked for, with that split's figures
    for split, met in (("test", test), ("valid", valid)):
        csv_path = tmp_path / f"{split}.csv"
        assert main(["compare", str(run), "--split", split, "--csv", str(csv_path)]) == 0
        out = capsys.readouterr().out
        assert f"| {split} |" in out and "genrekit evaluate" in out
        row = next(csv.DictReader(open(csv_path)))
        assert row["split"] == split and float(row["top1"]) == pytest.approx(met["track"]["top1"])
        assert row["evaluated_on"] == "genrekit evaluate"


def test_compare_reads_results_written_before_the_per_split_folders(tiny_features, two_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(two_runs[0], run)
    evaluate(run, tiny_features, split="valid", out=tmp_path / "ev")
    legacy = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    del legacy["split"]  # the old layout: no label, the split named only in the context lines
    (run / "metrics.json").write_text(json.dumps(legacy))
    csv_path = tmp_path / "c.csv"
    assert main(["compare", str(run), "--split", "valid", "--csv", str(csv_path)]) == 0
    row = next(csv.DictReader(open(csv_path)))
    assert row["evaluated_on"] == "genrekit evaluate" and float(row["top1"]) == pytest.approx(legacy["track"]["top1"])
    # asked for test, the valid figures in the run folder are not shown as test ones
    assert main(["compare", str(run), "--csv", str(csv_path)]) == 0
    row = next(csv.DictReader(open(csv_path)))
    assert row["split"] == "test" and row["evaluated_on"] == "end of training"
    train_test = json.loads((run / "train_metrics.json").read_text())["test"]["track"]["top1"]
    assert float(row["top1"]) == pytest.approx(train_test)
    capsys.readouterr()
    (run / "metrics.json").write_text('{"clip": {"top1": 0.5')
    assert main(["compare", str(run), "--split", "valid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genrekit: error:") and "metrics.json" in err and "\n" not in err


def test_refuses_leaky_and_mismatched_evaluations(tiny_features, two_runs, tmp_path):
    with pytest.raises(UserError, match="training data"):
        evaluate(two_runs[0], tiny_features, split="train")
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.csv").write_text((tiny_features / "manifest.csv").read_text())
    fc = FeatureConfig.load(tiny_features).to_dict() | {"n_mels": 16}
    FeatureConfig.from_dict(fc).save(other)
    with pytest.raises(UserError, match="another feature config"):
        evaluate(two_runs[0], other)
    with pytest.raises(UserError, match="no mel rows"):
        evaluate(two_runs[0], tiny_features, split="holdout")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(UserError, match="missing"):
        evaluate(broken, tiny_features)
    run = Path(two_runs[1])
    labels = json.loads((run / "labels.json").read_text())
    bad = tmp_path / "badlabels"
    import shutil

    shutil.copytree(run, bad)
    (bad / "labels.json").write_text(json.dumps(labels[:2]))
    with pytest.raises(UserError, match="classes"):
        evaluate(bad, tiny_features)


def test_cv_reports_mean_and_std(tmp_path, capsys):
    from genrekit.data_tools.augment import AugmentConfig
    from genrekit.data_tools.pipeline import run_augment
    from tests.conftest import small_settings, write_tree

    data = write_tree(tmp_path / "d", per_genre=4, seconds=2.5)
    feats = tmp_path / "f"
    run_augment(data, feats, small_settings(augment=AugmentConfig(augmentations=()), kinds=("mfcc",)),
                progress=False)
    assert main(["cv", "--data", str(feats), "--arch", "fcnn", "--folds", "2", "--epochs", "2",
                 "--out", str(tmp_path / "cv")]) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation" in out and "±" in out
    res = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert len(res["per_fold"]) == 2
    # each fold's test tracks were never trained on
    for k in (1, 2):
        cfg = json.loads((tmp_path / "cv" / f"fold-{k}" / "run" / "config.json").read_text())
        test = {r["track_id"] for r in csv.DictReader(open(tmp_path / "cv" / f"fold-{k}" / "view" / "manifest.csv"))
                if r["split"] == "test"}
        assert test and not test & set(cfg["data"]["train_tracks"])


def test_eval_spotify_on_a_local_mp3_set(two_runs, tmp_path, capsys):
    import soundfile as sf

    from tests.conftest import tone

    data = tmp_path / "ood"
    for g, f in (("low", 230.0), ("high", 1700.0), ("mid", 640.0)):
        (data / g).mkdir(parents=True)
        for i in range(2):
            sf.write(data / g / f"song{i}.mp3", tone(f * (1 + 0.03 * i), 3.0, 22050), 22050,
                     format="MP3", subtype="MPEG_LAYER_III")
    out = tmp_path / "es"
    assert main(["eval-spotify", "--model", two_runs[0], "--data", str(data), "--out", str(out), "--quiet"]) == 0
    assert "top-1" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["track"]["n"] == 6
    for name in ("report.md", "confusion.png", "per_genre.png", "roc.png"):
        assert (out / name).is_file()
    # features were rendered with the run's own config (8 kHz, 32x32)
    fc = FeatureConfig.load(out / "features")
    assert fc == FeatureConfig.load(Path(two_runs[0]))
    (data / "polka").mkdir()
    sf.write(data / "polka" / "x.mp3", tone(300, 2.0, 22050), 22050, format="MP3", subtype="MPEG_LAYER_III")
    assert main(["eval-spotify", "--model", two_runs[0], "--data", str(data), "--out", str(tmp_path / "e2")]) == 2
    assert "polka" in capsys.readouterr().err


# -- macro figures over the genres present; publishable plots (issue 15) -----------------------------

def _capture_figures(monkeypatch):
    """Record every figure evaluation.plots saves (and still save it)."""
    from genrekit.evaluation import plots

    figs = []
    real = plots._save

    def keep(fig, path):
        figs.append((Path(path).name, fig, [t.get_text() for ax in fig.axes for t in ax.texts],
                     " ".join([fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes])))
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_macro_figures_are_over_the_genres_present_and_absent_ones_are_named():
    import numpy as np
    from sklearn.metrics import f1_score

    from genrekit.evaluate import format_metrics, macro_over_present
    from genrekit.evaluation.metrics import evaluate_predictions
    from genrekit.evaluation.report import evaluation_report

    labels = ["blues", "jazz", "rock", "pop"]
    y = np.array([0, 0, 0, 1, 1, 1])  # only blues and jazz in the set
    p = np.array([[.8, .1, .05, .05], [.6, .3, .05, .05], [.2, .1, .6, .1],  # one blues track called rock
                  [.1, .8, .05, .05], [.2, .7, .05, .05], [.3, .6, .05, .05]])
    res = macro_over_present(evaluate_predictions([f"t{i}" for i in range(6)], y, p, labels))
    t = res["track"]
    assert res["absent_genres"] == ["rock", "pop"] and t["macro_over"] == ["blues", "jazz"]
    pred = p.argmax(1)
    assert t["f1_macro"] == pytest.approx(f1_score(y, pred, labels=[0, 1], average="macro"))
    assert t["f1_macro"] > f1_score(y, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)  # not over 4
    assert t["recall_macro"] == pytest.approx((2 / 3 + 1) / 2) and t["top1_per_genre_mean"] == pytest.approx(5 / 6)
    assert t["auc_macro"] == pytest.approx(np.mean([t["per_genre"][g]["auc"] for g in ("blues", "jazz")]))
    report = evaluation_report({**res, "split": "test"}, "x", [], {})
    assert "genres absent from this set: rock, pop" in report and "0 (absent)" in report
    assert "absent: rock, pop" in format_metrics(res)


def test_plots_mark_absent_genres_the_best_epoch_and_keep_roc_curves_apart(tmp_path, monkeypatch):
    import numpy as np

    from genrekit.evaluate import macro_over_present
    from genrekit.evaluation.metrics import evaluate_predictions
    from genrekit.evaluation.plots import plot_confusion, plot_history, plot_per_genre, plot_roc

    figs = _capture_figures(monkeypatch)
    labels = ["blues", "jazz", "rock"]
    y = np.array([0, 0, 1, 1])
    p = np.array([[.1, .9, 0], [.2, .8, 0], [.3, .7, 0], [.4, .6, 0]])  # blues: 0 % right; rock absent
    t = macro_over_present(evaluate_predictions(["a", "b", "c", "d"], y, p, labels))["track"]
    plot_per_genre(t, labels, tmp_path / "pg.png", "r1: cnn on the test split")
    _, fig, texts, _ = figs[-1]
    assert texts == ["absent"]  # rock says absent; blues (0 %) does not
    ax = fig.axes[0]
    hatched = [b for b in ax.patches if b.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_x() + hatched[0].get_width() / 2 == pytest.approx(2)
    plot_confusion(t["confusion"], labels, tmp_path / "c.png", "r1")
    ticks = [lab.get_text() for lab in figs[-1][1].axes[0].get_yticklabels()]
    assert ticks == ["blues", "jazz", "rock (absent)"]
    rows = [{"epoch": i, "loss": 1 / (i + 1), "val_loss": v, "accuracy": .5, "val_accuracy": .5}
            for i, v in enumerate([1.0, 0.7, 0.5, 0.6, 0.65])]
    plot_history([{k: str(v) for k, v in r.items()} for r in rows], tmp_path / "h.png", "r1 (cnn): training curves")
    lines = [ln for ln in figs[-1][1].axes[0].lines if "best epoch" in str(ln.get_label())]
    assert len(lines) == 1 and lines[0].get_xdata()[0] == 3  # epoch 3 (1-based) has the lowest validation loss
    # two genres with identical ROC curves stay distinguishable
    p2 = np.array([[.9, .1, 0], [.8, .2, 0], [.1, .9, 0], [.2, .8, 0]])
    t2 = evaluate_predictions(["a", "b", "c", "d"], y, p2, labels)["track"]
    plot_roc(t2, tmp_path / "roc.png", "r1")
    curves = [ln for ln in figs[-1][1].axes[0].lines if "AUC" in str(ln.get_label())]
    assert len(curves) == 2 and curves[0].get_xydata().tolist() == curves[1].get_xydata().tolist()
    assert curves[0].get_linestyle() != curves[1].get_linestyle() and curves[0].get_marker() != curves[1].get_marker()
    assert curves[0].get_linewidth() > curves[1].get_linewidth() and curves[0].get_alpha() < 1
    assert [c.get_label() for c in curves] == ["blues (AUC 1.000)", "jazz (AUC 1.000)"]


def test_evaluate_titles_carry_the_run_and_the_split(tiny_features, two_runs, tmp_path, monkeypatch):
    figs = _capture_figures(monkeypatch)
    evaluate(two_runs[0], tiny_features, split="test", out=tmp_path / "ev")
    name = Path(two_runs[0]).name
    assert {f[0] for f in figs} >= {"confusion.png", "per_genre.png", "roc.png", "curves.png"}
    for fname, _, _, title in figs:
        assert name in title, (fname, title)
        if fname != "curves.png":
            assert "test split" in title, (fname, title)
