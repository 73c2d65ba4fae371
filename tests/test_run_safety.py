"""Run folders, exports and training refuse what would lose or fake a user's work: exports never
replace what genrekit did not write, a failed re-export keeps the previous one, a failed train
leaves no folder, bad numbers and hyper-parameters are one-line errors before anything is made,
NaN training stops, edited run folders are refused in one line."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from genrekit.cli import main
from genrekit.runs import EXPORT_MARKER, TMP_MARKER, remove_stale_temporaries
from genrekit.train import TrainOptions, train
from tests.conftest import one_error

pytestmark = pytest.mark.slow
TMP_MARKS = (".genrekit-tmp-", ".genrekit-old-", ".tmp-")


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if any(m in p.name for m in TMP_MARKS)]


@pytest.fixture(scope="module")
def fcnn_run(tiny_features, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    train(TrainOptions(data=str(tiny_features), arch="fcnn", epochs=1, batch_size=8, verbose=0, out=str(out)))
    return out


@pytest.fixture
def run_copy(fcnn_run, tmp_path) -> Path:
    return Path(shutil.copytree(fcnn_run, tmp_path / "runs" / "r"))


# -- export ------------------------------------------------------------------------------------

def test_export_never_deletes_or_replaces_what_it_did_not_write(run_copy, tmp_path, capsys):
    user = tmp_path / "feats"
    (user / "mfcc").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    (user / "mfcc" / "a.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / "model.tflite").write_bytes(b"my own file")
    (tmp_path / "other.keras").write_bytes(b"not a keras zip")
    before = _tree(tmp_path)
    for fmt, out, says in [("saved_model", user, "not a genrekit export bundle"),
                           ("saved_model", run_copy.parent, "not a genrekit export bundle"),  # the run's parent
                           ("saved_model", run_copy, "not a genrekit export bundle"),
                           ("keras", user, "not a genrekit export bundle"),
                           ("keras", tmp_path / "exports.tflite", "names one tflite file"),
                           ("tflite", user, "not a genrekit export bundle"),
                           ("tflite", tmp_path / "model.tflite", "not an earlier single-file export"),
                           ("keras", tmp_path / "other.keras", "not an earlier single-file export")]:
        line = one_error(capsys, main(["export", "--model", str(run_copy), "--format", fmt, "--out", str(out)]))
        assert says in line, line
        assert _tree(tmp_path) == before, (fmt, out)
    one_error(capsys, main(["export", "--model", str(run_copy), "--format", "keras,tflite", "--out", str(user)]))
    one_error(capsys, main(["export", "--model", str(run_copy), "--format", "pickle"]))
    assert _tree(tmp_path) == before


def test_export_replaces_its_own_previous_export(run_copy, tmp_path, capsys):
    for fmt, out in (("saved_model", tmp_path / "sm"), ("keras", tmp_path / "m.keras"), ("tflite", None)):
        args = ["export", "--model", str(run_copy), "--format", fmt] + (["--out", str(out)] if out else [])
        assert main(args) == 0 and main(args) == 0, capsys.readouterr().err
    assert (tmp_path / "sm" / EXPORT_MARKER).is_file() and (tmp_path / "sm" / "saved_model" / "saved_model.pb").is_file()
    assert zipfile.is_zipfile(tmp_path / "m.keras")
    assert (run_copy / "export" / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert _leftovers(tmp_path) == []


def _sha_tree(root: Path) -> dict:
    """sha256 of every file under ``root``, the target of every link (links not followed)."""
    import hashlib

    snap = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            snap[str(p.relative_to(root))] = ("link:" + os.readlink(p) if p.is_symlink() else
                                              hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
    return snap


def test_a_single_file_export_replaces_only_its_own_recorded_export(run_copy, tmp_path, capsys):
    """Issue 27 E07-E13, E22b: a model file of the user's, another run's model.keras, the run's own
    checkpoint, a file inside a bundle, TFLite magic bytes, a link, a read-only export: refused."""
    other = Path(shutil.copytree(run_copy, tmp_path / "runs" / "lstm"))
    shutil.copyfile(run_copy / "model.keras", run_copy / "checkpoint.keras")
    shutil.copyfile(run_copy / "model.keras", tmp_path / "my_own_model.keras")  # a real .keras, the user's
    (tmp_path / "mine.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3 my bytes")
    assert main(["export", "--model", str(other), "--format", "keras", "--out", str(tmp_path / "bundle")]) == 0
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.keras").write_bytes(b"victim")
    os.symlink(tmp_path / "outside" / "victim.keras", tmp_path / "link.keras")
    assert main(["export", "--model", str(other), "--format", "keras", "--out", str(tmp_path / "theirs.keras")]) == 0
    assert main(["export", "--model", str(run_copy), "--format", "tflite", "--out", str(tmp_path / "ro.tflite")]) == 0
    (tmp_path / "ro.tflite").chmod(0o444)
    user_dir = tmp_path / "models"
    user_dir.mkdir()
    shutil.copyfile(run_copy / "model.keras", user_dir / "model.keras")
    capsys.readouterr()
    before = _sha_tree(tmp_path)
    for fmt, out, says in [("keras", tmp_path / "my_own_model.keras", "not an earlier single-file export"),  # E07
                           ("keras", other / "model.keras", "inside a run folder"),  # E08
                           ("keras", run_copy / "checkpoint.keras", "inside a run folder"),  # E09
                           ("keras", tmp_path / "bundle" / "model.keras", "inside an export bundle"),  # E22b
                           ("keras", tmp_path / "bundle" / "new.keras", "inside an export bundle"),
                           ("tflite", tmp_path / "mine.tflite", "not an earlier single-file export"),  # E13
                           ("keras", tmp_path / "link.keras", "symbolic link"),
                           ("keras", tmp_path / "theirs.keras", "not an earlier single-file export"),  # another run's
                           ("tflite", tmp_path / "ro.tflite", "read-only"),
                           ("keras", user_dir, "not a genrekit export bundle"),  # E10
                           ("keras,tflite", tmp_path / "runs" / "lstm" / "exp", "inside a run folder")]:
        line = one_error(capsys, main(["export", "--model", str(run_copy), "--format", fmt, "--out", str(out)]))
        assert says in line and str(out) in line, line
        assert _sha_tree(tmp_path) == before, (fmt, out)
    # its own recorded export is replaced, and only the record and the file change
    (tmp_path / "ro.tflite").chmod(0o644)
    assert main(["export", "--model", str(run_copy), "--format", "tflite", "--out", str(tmp_path / "ro.tflite")]) == 0
    after = _sha_tree(tmp_path)
    assert {k for k in set(before) | set(after) if before.get(k) != after.get(k)} <= {
        "ro.tflite", ".ro.tflite.genrekit-export.json"}
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_a_failed_reexport_keeps_the_previous_export(run_copy, capsys, monkeypatch, fmt):
    assert main(["export", "--model", str(run_copy), "--format", fmt]) == 0
    export_dir = run_copy / "export"
    before = _tree(export_dir)

    def disk_full(self, path, *a, **k):  # the writer starts, then the disk is full
        p = Path(path)
        if fmt == "saved_model":
            p.mkdir(exist_ok=True)
            (p / "saved_model.pb").write_bytes(b"half")
        else:
            p.write_bytes(b"PK\x03\x04half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "export" if fmt == "saved_model" else "save", disk_full)
    line = one_error(capsys, main(["export", "--model", str(run_copy), "--format", fmt]))
    assert "No space left on device" in line
    assert _tree(export_dir) == before and _leftovers(run_copy) == []


# -- train: refused before anything is made ------------------------------------------------------

@pytest.mark.parametrize("extra", [
    ["--lr", "nan"], ["--lr", "inf"], ["--lr", "0"], ["--lr", "-0.1"], ["--epochs", "0"], ["--batch-size", "-2"],
    ["--patience", "-1"], ["--seed", "-3"], ["--label-smoothing", "nan"], ["--mixup", "inf"],
    ["--hparam", "dropout=NaN"], ["--hparam", "units=[Infinity]"],
    # the six bad --hparam values of issue 13, and more
    ["--hparam", "units=abc"], ["--hparam", "units=[0]"], ["--hparam", "dropout=2"], ["--hparam", "nonsense=1"],
    ["--hparam", "name=a b"], ["--hparam", "units=[true]"], ["--hparam", "dropout=[1]"],
    ["--arch", "lstm", "--hparam", "units=0"], ["--arch", "lstm", "--hparam", "units=1.5"],
    ["--arch", "cnn", "--hparam", "filters=[8,8,8,8,8,8]"],  # too deep for 32x32 images: the builder refuses
])
def test_bad_numbers_and_hparams_are_one_line_and_create_nothing(tiny_features, tmp_path, capsys, extra):
    arch = [] if "--arch" in extra else ["--arch", "fcnn"]
    rc = main(["train", "--data", str(tiny_features), *arch, "--epochs", "1", "--out", str(tmp_path / "runs" / "x"),
               "--quiet", *extra])
    one_error(capsys, rc)
    assert list(tmp_path.iterdir()) == []


def test_nan_features_stop_training_without_a_run_folder(tiny_features, tmp_path, capsys):
    from genrekit.data_tools.manifest import read_manifest

    feats = Path(shutil.copytree(tiny_features, tmp_path / "feats"))
    for r in read_manifest(feats):
        if r["feature"] == "mfcc":
            x = np.load(feats / r["path"])
            np.save(feats / r["path"], np.full_like(x, np.nan))
    line = one_error(capsys, main(["train", "--data", str(feats), "--arch", "fcnn", "--epochs", "2",
                                    "--out", str(tmp_path / "runs" / "nan"), "--quiet"]))
    assert "NaN or infinite" in line and "mfcc/" in line
    assert not (tmp_path / "runs").exists()


def test_non_finite_losses_and_weights_are_refused():
    from genrekit.errors import UserError
    from genrekit.training import check_finite_model, stop_on_non_finite_loss

    cb = stop_on_non_finite_loss()
    cb.on_epoch_begin(0)
    cb.on_train_batch_end(0, {"loss": np.float32(1.5), "accuracy": float("nan")})  # only losses are watched
    with pytest.raises(UserError, match="diverged: loss became nan at epoch 1, batch 3"):
        cb.on_train_batch_end(2, {"loss": np.float32("nan")})
    with pytest.raises(UserError, match="val_loss became inf"):
        cb.on_epoch_end(0, {"loss": 1.0, "val_loss": float("inf")})
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    check_finite_model(model)
    w, b = model.get_layer("d").get_weights()
    w[0, 0] = np.nan
    model.get_layer("d").set_weights([w, b])
    with pytest.raises(UserError, match="non-finite values in d/kernel"):
        check_finite_model(model)


def test_a_failing_train_leaves_nothing_and_an_existing_folder_is_not_reused(tiny_features, tmp_path, capsys):
    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(TrainOptions(data=str(tiny_features), arch="fcnn", epochs=2, batch_size=8, verbose=0,
                           out=str(tmp_path / "new" / "run"), extra_callbacks=[Boom()]))
    assert list(tmp_path.iterdir()) == []  # no run folder, no temporary, not even the parent it made
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tmp-v2.docx").write_text("draft")
    before = _tree(tmp_path)
    line = one_error(capsys, main(["train", "--data", str(tiny_features), "--arch", "fcnn", "--epochs", "1",
                                    "--out", str(mine), "--quiet"]))
    assert "not empty" in line and _tree(tmp_path) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    r = train(TrainOptions(data=str(tiny_features), arch="fcnn", epochs=1, batch_size=8, verbose=0, out=str(empty)))
    assert r.run == str(empty) and (empty / "config.json").is_file() and _leftovers(empty) == []
    capsys.readouterr()  # that training's progress lines (calibration) are not the next command's output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine"]
    line = one_error(capsys, main(["train", "--data", str(tiny_features), "--arch", "fcnn", "--epochs", "1",
                                    "--out", str(empty), "--quiet"]))
    assert "already holds a run" in line


def test_only_dead_genrekit_temporaries_are_removed(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    dead, me = p.pid, os.getpid()

    def tmp_dir(name, marker=True):
        d = tmp_path / name
        d.mkdir()
        if marker:
            import socket

            (d / TMP_MARKER).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
        (d / "model.keras").write_bytes(b"x")
        return d

    tmp_dir(f".genrekit-tmp-{dead}-run")
    tmp_dir(f".genrekit-tmp-{dead}-users-own", marker=False)
    tmp_dir(f".genrekit-tmp-{me}-alive")
    (tmp_path / f".genrekit-tmp-{dead}-model.keras").write_bytes(b"half")
    (tmp_path / ".genrekit-tmp-notes.txt").write_text("mine")
    (tmp_path / "thesis.tmp-v2.docx").write_text("mine")
    old = tmp_path / f".genrekit-old-{dead}-saved_model"
    old.mkdir()
    (old / EXPORT_MARKER).write_text("{}")
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f".genrekit-tmp-{dead}-users-own", f".genrekit-tmp-{me}-alive", ".genrekit-tmp-notes.txt",
        "thesis.tmp-v2.docx", "saved_model"])  # the export parked by a killed swap is put back


# -- edited run folders ------------------------------------------------------------------------------

def _edit_config(key, value):
    def edit(run):
        cfg = json.loads((run / "config.json").read_text())
        cfg[key] = value
        (run / "config.json").write_text(json.dumps(cfg))
    return edit


def _edit_feature_config(run):
    """A valid feature config other than the one the run was trained with (and fingerprinted)."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["feature_config"]["hop_length"] *= 2
    (run / "config.json").write_text(json.dumps(cfg))


def _edit_model_config(old, new):
    def edit(run):
        src = run / "model.keras"
        with zipfile.ZipFile(src) as z:
            members = {n: z.read(n) for n in z.namelist()}
        members["config.json"] = members["config.json"].replace(old, new)
        with zipfile.ZipFile(src, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
    return edit


@pytest.mark.parametrize("tamper", [
    _edit_config("arch", "alexnet"), _edit_config("feature_kind", "wave"), _edit_config("feature_config", "x"),
    _edit_config("feature_config", {"bogus": 1}), _edit_config("tempo_range", [250, "a"]),
    lambda run: (run / "config.json").write_text("[1, 2]"),
    lambda run: (run / "labels.json").write_text('{"a": 1}'),
    lambda run: (run / "labels.json").write_text('["high", "high", "low"]'),
    _edit_model_config(b'"class_name": "Dense"', b'"class_name": "NoSuchLayer"'),
    _edit_model_config(b'"class_name": "Dense"', b'"class_name": "Lambda"'),
    lambda run: (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:500]),  # truncated
    _edit_feature_config,
], ids=["arch", "kind", "fc-str", "fc-key", "tempo-range", "list", "labels-dict", "labels-dup", "layer", "lambda",
        "truncated", "fc-fingerprint"])
def test_an_edited_run_folder_is_refused_in_one_line(run_copy, capsys, tamper):
    tamper(run_copy)
    before = _tree(run_copy)
    one_error(capsys, main(["export", "--model", str(run_copy), "--format", "keras"]))
    assert _tree(run_copy) == before


def test_cv_refuses_a_folder_of_other_settings(tiny_features, tmp_path, capsys):
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps({"arch": "lstm"}))
    before = _tree(tmp_path)
    line = one_error(capsys, main(["cv", "--data", str(tiny_features), "--arch", "fcnn", "--folds", "2",
                                    "--out", str(cv)]))
    assert "other settings" in line and _tree(tmp_path) == before
    for extra in (["--folds", "1"], ["--folds", "2", "--hparam", "dropout=NaN"], ["--folds", "2", "--epochs", "0"]):
        one_error(capsys, main(["cv", "--data", str(tiny_features), "--arch", "fcnn", "--out", str(tmp_path / "x"),
                                 *extra]))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bpm", ["inf", "nan", "0", "-90"])
def test_tempo_annotations_must_be_finite_and_positive(tmp_path, bpm):
    from genrekit.errors import UserError
    from genrekit.tempi import load_tempi

    (tmp_path / "t.csv").write_text(f"track_id,bpm\na/a.00000,120\nb/b.00000,{bpm}\n")
    with pytest.raises(UserError, match="line 3: bpm must be a finite positive number"):
        load_tempi(tmp_path / "t.csv")


def test_a_cv_that_fails_before_any_fold_finishes_leaves_nothing(tiny_features, tmp_path, capsys, monkeypatch):
    import genrekit.cv
    from genrekit.errors import UserError

    def fails(opts):
        raise UserError("simulated failure in fold 1")

    monkeypatch.setattr(genrekit.cv, "train", fails)  # the name cv calls
    line = one_error(capsys, main(["cv", "--data", str(tiny_features), "--arch", "fcnn", "--folds", "2",
                                    "--out", str(tmp_path / "new" / "cv")]))
    assert "simulated failure" in line and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["../../etc/passwd", "/etc/passwd", "mel/../../../x.png", "link"])
def test_manifest_paths_are_confined_to_the_feature_folder(tiny_features, tmp_path, capsys, where):
    """Issue 27 item 11: a row path that leads out of the feature folder is refused, naming the row."""
    feats = Path(shutil.copytree(tiny_features, tmp_path / "feats"))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.npy").write_bytes(b"not yours")
    lines = (feats / "manifest.csv").read_text().splitlines()
    cols = lines[0].split(",")
    row = lines[3].split(",")
    if where == "link":
        os.symlink(tmp_path / "outside" / "secret.npy", feats / "mfcc" / "leak.npy")
        row[cols.index("path")] = "mfcc/leak.npy"
    else:
        row[cols.index("path")] = where
    lines[3] = ",".join(row)
    (feats / "manifest.csv").write_text("\n".join(lines) + "\n")
    before = _sha_tree(tmp_path)
    line = one_error(capsys, main(["train", "--data", str(feats), "--arch", "lstm", "--epochs", "1",
                                    "--out", str(tmp_path / "run")]))
    assert "row 3" in line and "outside the feature folder" in line, line
    assert _sha_tree(tmp_path) == before


def test_cv_views_still_read_their_source(tiny_features, tmp_path):
    from genrekit.data_tools.folds import write_view
    from genrekit.data_tools.manifest import read_manifest

    rows = read_manifest(tiny_features)
    view = write_view(tmp_path / "view", Path(tiny_features), rows, {r["track_id"]: "train" for r in rows})
    assert len(read_manifest(view)) == len(rows)
