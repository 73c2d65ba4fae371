"""kill -9 in the middle of train, cv and export, then the same command again: the result is
complete and equivalent to an uninterrupted one, and no temporary file is left anywhere (the
output folders, and the system temporary folder: TMPDIR points at a folder of the test)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
TMP_MARKS = (".genrekit-tmp-", ".genrekit-old-", ".tmp-")


def _env(tmpdir: Path) -> dict:
    tmpdir.mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmpdir), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                PYTHONHASHSEED="0")


def _genrekit(args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genrekit", *args], env=env, capture_output=True, text=True,
                          timeout=900)


def _kill_when(args, env, ready) -> None:
    """Start genrekit and kill -9 it as soon as ``ready()`` is true (the test fails if it ends first)."""
    p = subprocess.Popen([sys.executable, "-m", "genrekit", *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        while p.poll() is None:
            if ready():
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                return
            time.sleep(0.01)
        pytest.fail(f"genrekit ended (rc {p.returncode}) before the kill point: {p.stderr.read().decode()[-2000:]}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()


def _leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if any(m in p.name for m in TMP_MARKS)]


def _same_weights(a: Path, b: Path) -> None:
    from genrekit.runs import load_model

    wa, wb = load_model(a).get_weights(), load_model(b).get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)


def _config(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    for k in ("train_seconds", "base_feature_seconds", "genrekit_command"):
        cfg.pop(k, None)
    return cfg


TRAIN = ["--arch", "fcnn", "--epochs", "3", "--batch-size", "8", "--seed", "5", "--deterministic", "--quiet"]


def test_train_killed_midway_reruns_to_the_same_complete_run(tiny_features, tmp_path):
    env = _env(tmp_path / "systmp")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(tiny_features), "--out", str(runs / "a"), *TRAIN]
    # killed while fitting: the run is being built under a temporary name
    _kill_when(args, env, lambda: any(runs.glob(".genrekit-tmp-*/a/history.csv")))
    assert not (runs / "a").exists()  # complete-or-absent
    r = _genrekit(args, env)
    assert r.returncode == 0, r.stderr
    ref = _genrekit(["train", "--data", str(tiny_features), "--out", str(runs / "ref"), *TRAIN], env)
    assert ref.returncode == 0, ref.stderr
    a, b = runs / "a", runs / "ref"
    for name in ("labels.json", "history.csv", "feature_config.json", "train_metrics.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _config(a) == _config(b)
    _same_weights(a / "model.keras", b / "model.keras")
    assert _leftovers(runs) == [] and list((tmp_path / "systmp").iterdir()) == []
    assert sorted(p.name for p in runs.iterdir()) == ["a", "ref"]


def test_cv_killed_in_the_second_fold_keeps_the_first(tiny_features, tmp_path):
    env = _env(tmp_path / "systmp")
    args = ["cv", "--data", str(tiny_features), "--arch", "fcnn", "--folds", "2", "--epochs", "2",
            "--batch-size", "8", "--deterministic"]
    cv = tmp_path / "cv"
    _kill_when([*args, "--out", str(cv)], env, lambda: any((cv / "fold-2").glob(".genrekit-tmp-*/run/history.csv")))
    fold1 = cv / "fold-1" / "run" / "model.keras"
    before = fold1.stat()
    assert not (cv / "fold-2" / "run").exists() and not (cv / "cv.json").exists()
    r = _genrekit([*args, "--out", str(cv)], env)
    assert r.returncode == 0, r.stderr
    assert "fold 1/2" in r.stdout and "[finished before]" in r.stdout.splitlines()[0]
    after = fold1.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # fold 1 was not redone
    ref = _genrekit([*args, "--out", str(tmp_path / "ref")], env)
    assert ref.returncode == 0, ref.stderr
    res, want = json.loads((cv / "cv.json").read_text()), json.loads((tmp_path / "ref" / "cv.json").read_text())
    assert res["per_fold"] == want["per_fold"] and res["summary"] == want["summary"]
    for k in (1, 2):
        assert (cv / f"fold-{k}" / "view" / "manifest.csv").read_bytes() == \
            (tmp_path / "ref" / f"fold-{k}" / "view" / "manifest.csv").read_bytes()
        _same_weights(cv / f"fold-{k}" / "run" / "model.keras", tmp_path / "ref" / f"fold-{k}" / "run" / "model.keras")
    # a finished cross-validation is reported again, not redone
    again = _genrekit([*args, "--out", str(cv)], env)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert _leftovers(cv, tmp_path / "ref") == [] and list((tmp_path / "systmp").iterdir()) == []


def test_export_killed_midway_keeps_the_previous_export(tiny_features, tmp_path):
    from genrekit.export import run_exported
    from genrekit.runs import Run
    from genrekit.train import TrainOptions, train

    run = Path(train(TrainOptions(data=str(tiny_features), arch="fcnn", epochs=1, batch_size=8, verbose=0,
                                  out=str(tmp_path / "run"))).run)
    env = _env(tmp_path / "systmp")
    args = ["export", "--model", str(run), "--format", "saved_model"]
    first = _genrekit(args, env)
    assert first.returncode == 0, first.stderr
    target = run / "export" / "saved_model"
    snapshot = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    _kill_when(args, env, lambda: any(run.glob(".genrekit-tmp-*/export/saved_model")))  # the bundle being built
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == snapshot
    r = _genrekit(args, env)
    assert r.returncode == 0, r.stderr
    model = Run(run).model()
    x = np.random.default_rng(0).random((2, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(run_exported(target, "saved_model", x), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert _leftovers(run) == [] and list((tmp_path / "systmp").iterdir()) == []
    assert sorted(p.name for p in (run / "export").iterdir()) == sorted([
        "saved_model", "labels.json", "feature_config.json", "calibration.json", "MODEL_CARD.md", "model_card.json",
        "genrekit_export.json"])


def test_a_successful_predict_csv_removes_what_a_killed_one_left(tmp_path):
    """Issue 27 item 9: `.pk.csv.<pid>.genrekit-tmp` of a dead process goes with the next complete
    table; a live process's temporary, another file's and the user's files stay."""
    import hashlib

    from genrekit.predict import CsvOut

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = tmp_path / f".pk.csv.{dead}.genrekit-tmp"
    stale.write_text("file,genre\nhalf")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        keep = [tmp_path / f".pk.csv.{sleeper.pid}.genrekit-tmp", tmp_path / f".other.csv.{dead}.genrekit-tmp",
                tmp_path / "pk.csv.notes", tmp_path / ".pk.csv.genrekit-tmp"]
        for p in keep:
            p.write_text("not this run's")
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in keep}
        with CsvOut(tmp_path / "pk.csv", 3) as out:
            out.write({"file": "a.wav", "top": [{"genre": "low", "probability": 0.9}], "rejected": False})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not stale.exists() and (tmp_path / "pk.csv").read_text().startswith("file,genre")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in keep} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "pk.csv"])


def test_evaluate_killed_with_another_split_keeps_the_earlier_set_whole(tiny_features, tmp_path):
    """Issue 27 item 9: a kill -9 of `evaluate --split valid` over the results of `--split test`
    leaves the test results whole (not a mix of two splits); the rerun gives the valid set alone."""
    import hashlib

    from genrekit.train import TrainOptions, train

    run = train(TrainOptions(data=str(tiny_features), arch="fcnn", epochs=1, batch_size=8, verbose=0,
                             out=str(tmp_path / "run"))).run
    env = _env(tmp_path / "systmp")
    out = tmp_path / "ev"

    def results() -> dict:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.is_file()}

    first = _genrekit(["evaluate", "--model", run, "--data", str(tiny_features), "--split", "test",
                       "--out", str(out)], env)
    assert first.returncode == 0, first.stderr
    before = results()
    args = ["evaluate", "--model", run, "--data", str(tiny_features), "--split", "valid", "--out", str(out)]
    _kill_when(args, env, lambda: any(out.glob(".genrekit-tmp-*/results/confusion.png")))
    assert results() == before
    assert json.loads((out / "metrics.json").read_text())["split"] == "test"
    again = _genrekit(args, env)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["split"] == "valid"
    assert set(results()) == set(before) and results() != before
    assert "valid" in (out / "report.md").read_text()
    assert _leftovers(tmp_path) == []
