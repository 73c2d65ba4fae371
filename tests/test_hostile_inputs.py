"""Hostile input, every command: one table of bad inputs, each run as ``python -m genrekit``.

Each case must be refused with exit code 2 and exactly one stderr line starting
``genrekit: error:`` (no traceback, no library start-up noise), and must leave every file
system tree it could reach exactly as it was: nothing created (no empty --out or run folder),
nothing outside --out touched, pre-existing files untouched. The cases that need a model share
one tiny run trained once per session; the others are refused before TensorFlow is imported.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import write_tree

REPO = Path(__file__).resolve().parents[1]
SR = 8000


# -- the shared world: audio, a feature folder, a trained run (read-only for every case) -------

@dataclass
class World:
    root: Path
    audio: Path  # folder-per-genre tones
    feats: Path  # tiny_features: mel 32x32 + MFCC
    run: Path  # a cnn run trained on feats


@pytest.fixture(scope="session")
def world(tiny_features, tmp_path_factory) -> World:
    from genrekit.train import TrainOptions, train

    root = tmp_path_factory.mktemp("hostile-world")
    audio = write_tree(root / "audio", per_genre=2, seconds=1.5)
    res = train(TrainOptions(data=str(tiny_features), arch="cnn", out=str(root / "run"), epochs=1, batch_size=8,
                             verbose=0))
    return World(root=root, audio=audio, feats=Path(tiny_features), run=Path(res.run))


# -- helpers that build inputs inside a case's own workspace -----------------------------------

def wav(path: Path, y, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(y, dtype=np.float32), sr, subtype=subtype)
    return path


def tone(seconds: float = 2.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.4 * np.sin(2 * np.pi * freq * t)


def copy_run(w: World, ws: Path, name: str = "run") -> Path:
    dst = ws / name
    shutil.copytree(w.run, dst)
    return dst


def copy_feats(w: World, ws: Path, name: str = "feats") -> Path:
    dst = ws / name
    shutil.copytree(w.feats, dst)
    return dst


def audio_tree(ws: Path, name: str = "d") -> Path:
    return write_tree(ws / name, per_genre=2, seconds=1.5)


def truncated_png(w: World, ws: Path) -> Path:
    feats = copy_feats(w, ws)
    rows = (feats / "manifest.csv").read_text().splitlines()
    path_col = rows[0].split(",").index("path")
    victim = next(feats / r.split(",")[path_col] for r in rows[1:] if r.split(",")[path_col].endswith(".png")
                  and ",train," in r)
    victim.write_bytes(victim.read_bytes()[:100])
    return feats


def truncated_model(w: World, ws: Path) -> Path:
    run = copy_run(w, ws)
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 3])
    return run


def lambda_model(w: World, ws: Path) -> Path:
    """A copy of the run whose model.keras holds a Lambda layer (code): refused by safe mode."""
    import keras

    run = copy_run(w, ws)
    inp = keras.Input((32, 32, 1))
    out = keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(inp)))
    (run / "model.keras").unlink()
    keras.Model(inp, out).save(run / "model.keras")
    return run


def foreign_model(w: World, ws: Path) -> Path:
    """A copy of the run whose model.keras is another architecture's (MFCC sequences in, the same
    three classes out): it loads, but its input does not fit the run's mel windows (issue 27 #5)."""
    import keras

    run = copy_run(w, ws)
    inp = keras.Input((63, 13), name="features")
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(keras.layers.Flatten()(inp))
    (run / "model.keras").unlink()
    keras.Model(inp, out).save(run / "model.keras")
    return run


def tampered_config(w: World, ws: Path, **changes) -> Path:
    run = copy_run(w, ws)
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(changes)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def user_folder(ws: Path, name: str = "u") -> Path:
    """A user's folder holding files with genrekit's names (issue 27 A05, S02)."""
    u = ws / name
    (u / "mel" / "low").mkdir(parents=True)
    (u / "report.md").write_text("# my thesis notes\n")
    (u / "manifest.csv").write_text("path,track_id\nmine.png,x\n")
    (u / "feature_config.json").write_text("{}\n")
    (u / "mel" / "low" / "low.00000.original.000.png").write_bytes(b"my own image")
    return u


def traversal_manifest(w: World, ws: Path) -> Path:
    """A copy of the feature folder whose third row points at ../../etc/passwd."""
    feats = copy_feats(w, ws)
    lines = (feats / "manifest.csv").read_text().splitlines()
    cols = lines[0].split(",")
    row = lines[3].split(",")
    row[cols.index("path")] = "../../etc/passwd"
    lines[3] = ",".join(row)
    (feats / "manifest.csv").write_text("\n".join(lines) + "\n")
    return feats


def refingerprinted(w: World, ws: Path) -> Path:
    """A copy of the run whose feature_config was edited (its feature_fingerprint left as it was)."""
    fc = json.loads((w.run / "config.json").read_text())["feature_config"]
    return tampered_config(w, ws, feature_config={**fc, "hop_length": fc["hop_length"] * 2})


def corrupt_metrics(w: World, ws: Path) -> Path:
    run = copy_run(w, ws)
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "metrics.json").write_text('{"clip": {"top1": 0.5, ')
    return run


def one_hz(path: Path) -> Path:
    """Rewrite a PCM WAV header's sample rate (and byte rate) to 1 Hz."""
    data = bytearray(path.read_bytes())
    data[24:28] = (1).to_bytes(4, "little")
    data[28:32] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the table ---------------------------------------------------------------------------------

Make = Callable[[Path, World], list]


@dataclass
class Case:
    id: str
    make: Make  # builds the inputs under the workspace, returns argv (after `genrekit`)
    needle: str  # a piece of the expected error line (case-insensitive)
    env: dict | None = None
    xfail: str | None = None  # "awaiting fix: ..." for a defect another change is fixing


def _o(ws):
    return str(ws / "out")


CASES = [
    # ---- top level / argument parsing
    Case("unknown-command", lambda ws, w: ["frobnicate"], "invalid choice"),
    Case("bad-int-option", lambda ws, w: ["augment", "--data", "x", "--out", _o(ws), "--workers", "two"],
         "invalid int"),
    # ---- augment
    Case("augment-missing-data", lambda ws, w: ["augment", "--data", str(ws / "nope"), "--out", _o(ws)],
         "not found"),
    Case("augment-data-is-a-file", lambda ws, w: ["augment", "--data", str(wav(ws / "a.wav", tone())),
                                                  "--out", _o(ws)], "a.wav"),
    Case("augment-no-audio", lambda ws, w: [(ws / "d" / "g").mkdir(parents=True), "augment", "--data",
                                            str(ws / "d"), "--out", _o(ws)][1:], "no audio"),
    Case("augment-unknown-augmentation", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                        "--augment", "reverse"], "unknown augmentation"),
    Case("augment-pitch-1000", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                              "--pitch-semitones", "1000"], "pitch"),
    Case("augment-hop-length-1", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                "--hop-length", "1"], "hop"),
    Case("augment-mfcc-seconds-1e7", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                    "--mfcc-seconds", "1e7"], "mfcc_seconds"),
    # issue 27 #10: bounds a user would accept, refused by the parser
    Case("augment-image-seconds-0.001", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                       "--image-seconds", "0.001"], "--image-seconds"),
    Case("augment-mfcc-hop-0.0001", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                   "--mfcc-hop", "0.0001"], "--mfcc-hop"),
    Case("augment-sr-1", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws), "--sr", "1"],
         "--sr: expected a whole number from 8000"),
    Case("augment-n-fft-1", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                           "--n-fft", "1"], "--n-fft"),
    Case("augment-seed-minus-1", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                "--seed", "-1"], "--seed"),
    Case("augment-negative-ratio", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                                  "--ratios", "-10/60/50"], "ratio"),
    Case("augment-bad-shard", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out", _o(ws),
                                             "--shard", "5/2"], "shard"),
    Case("augment-out-is-a-file", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out",
                                                 str(wav(ws / "x.wav", tone()) / "o")], "x.wav"),
    Case("augment-track-listed-twice", lambda ws, w: [
        (ws / "s.csv").write_text("track_id,split\nlow/low.00000,train\nlow/low.00000,test\n"),
        "augment", "--data", str(audio_tree(ws)), "--out", _o(ws), "--split", str(ws / "s.csv")][1:],
        "low.00000"),
    Case("augment-split-unknown-genre", lambda ws, w: [
        (ws / "s.csv").write_text("track_id,split\npolka/p1,train\n"),
        "augment", "--data", str(audio_tree(ws)), "--out", _o(ws), "--split", str(ws / "s.csv")][1:], "polka"),
    Case("augment-out-is-a-user-folder", lambda ws, w: ["augment", "--data", str(audio_tree(ws)), "--out",
                                                        str(user_folder(ws))], "did not make"),
    # ---- merge-shards
    Case("merge-shards-missing", lambda ws, w: ["merge-shards", str(ws / "nope")], "nope"),
    Case("merge-shards-no-shards", lambda ws, w: [(ws / "f").mkdir(), "merge-shards", str(ws / "f")][1:], "shard"),
    # ---- train
    Case("train-missing-data", lambda ws, w: ["train", "--data", str(ws / "nope"), "--arch", "cnn",
                                              "--out", _o(ws)], "nope"),
    Case("train-folder-without-manifest", lambda ws, w: [(ws / "f").mkdir(), "train", "--data", str(ws / "f"),
                                                         "--arch", "cnn", "--out", _o(ws)][1:], "feature config"),
    Case("train-unknown-arch", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "alexnet",
                                              "--out", _o(ws)], "unknown architecture"),
    Case("train-lr-nan", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "cnn", "--lr", "nan",
                                        "--out", _o(ws)], "lr"),
    Case("train-hparam-not-a-number", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "cnn",
                                                     "--hparam", "dropout=abc", "--out", _o(ws)], "dropout"),
    Case("train-hparam-out-of-range", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "cnn",
                                                     "--hparam", "dropout=5", "--out", _o(ws)], "dropout"),
    Case("train-hparam-unknown-choice", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "cnn_bn",
                                                       "--hparam", "pooling=x", "--out", _o(ws)],
         "choose from gap, flatten"),
    Case("train-finetune-without-from", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "mobilenet",
                                                       "--phase", "finetune", "--out", _o(ws)], "--from"),
    Case("train-out-holds-a-run", lambda ws, w: ["train", "--data", str(w.feats), "--arch", "cnn",
                                                 "--out", str(copy_run(w, ws))], "already"),
    Case("train-truncated-png", lambda ws, w: ["train", "--data", str(truncated_png(w, ws)), "--arch", "cnn",
                                               "--epochs", "1", "--out", _o(ws)], ".png"),
    Case("train-manifest-path-traversal", lambda ws, w: ["train", "--data", str(traversal_manifest(w, ws)), "--arch",
                                                         "cnn", "--out", _o(ws)], "row 3"),
    # ---- cv
    Case("cv-one-fold", lambda ws, w: ["cv", "--data", str(w.feats), "--arch", "cnn", "--folds", "1",
                                       "--out", _o(ws)], "fold"),
    Case("cv-missing-data", lambda ws, w: ["cv", "--data", str(ws / "nope"), "--arch", "cnn", "--out", _o(ws)],
         "nope"),
    # ---- predict
    Case("predict-one-sample", lambda ws, w: ["predict", str(wav(ws / "one.wav", [0.3])), "--model", str(w.run)],
         "too short"),
    Case("predict-silence", lambda ws, w: ["predict", str(wav(ws / "sil.wav", np.zeros(SR * 5))),
                                           "--model", str(w.run)], "silent"),
    Case("predict-huge-float-samples", lambda ws, w: ["predict", str(wav(ws / "big.wav", np.full(SR * 2, 1e30),
                                                                         subtype="FLOAT")),
                                                      "--model", str(w.run)], "outside -1..1"),
    Case("predict-nan-samples", lambda ws, w: ["predict", str(wav(ws / "nan.wav", np.full(SR * 2, np.nan),
                                                                  subtype="FLOAT")),
                                               "--model", str(w.run)], "nan"),
    Case("predict-random-bytes-mp3", lambda ws, w: [(ws / "r.mp3").write_bytes(os.urandom(4000)), "predict",
                                                    str(ws / "r.mp3"), "--model", str(w.run)][1:], "audio format"),
    Case("predict-empty-file", lambda ws, w: [(ws / "e.wav").write_bytes(b""), "predict", str(ws / "e.wav"),
                                              "--model", str(w.run)][1:], "empty"),
    Case("predict-truncated-wav", lambda ws, w: [
        (ws / "t.wav").write_bytes(wav(ws / "full.wav", tone()).read_bytes()[:3000]),
        "predict", str(ws / "t.wav"), "--model", str(w.run)][1:], "truncated"),
    Case("predict-header-says-1-hz", lambda ws, w: ["predict", str(one_hz(wav(ws / "h.wav", tone()))),
                                                    "--model", str(w.run)], "hz"),
    Case("predict-missing-file", lambda ws, w: ["predict", str(ws / "nope.wav"), "--model", str(w.run)],
         "not found"),
    Case("predict-folder-with-a-fifo", lambda ws, w: [(ws / "live").mkdir(), os.mkfifo(ws / "live" / "radio.mp3"),
                                                      "predict", str(ws / "live"), "--model", str(w.run)][2:],
         "not a regular file (a FIFO)"),
    Case("predict-folder-without-audio", lambda ws, w: [(ws / "docs").mkdir(), (ws / "docs" / "a.txt").write_text("x"),
                                                        "predict", str(ws / "docs"), "--model", str(w.run)][2:],
         "folder with no audio"),
    Case("predict-missing-run", lambda ws, w: ["predict", str(wav(ws / "a.wav", tone())), "--model",
                                               str(ws / "norun")], "run folder not found"),
    Case("predict-truncated-model", lambda ws, w: ["predict", str(wav(ws / "a.wav", tone())), "--model",
                                                   str(truncated_model(w, ws))], "truncated"),
    Case("predict-tampered-arch", lambda ws, w: ["predict", str(wav(ws / "a.wav", tone())), "--model",
                                                 str(tampered_config(w, ws, arch="evil"))], "architecture"),
    Case("predict-model-with-code", lambda ws, w: ["predict", str(wav(ws / "a.wav", tone())), "--model",
                                                   str(lambda_model(w, ws))], "safely"),
    Case("predict-top-k-0", lambda ws, w: ["predict", str(wav(ws / "a.wav", tone())), "--model", str(w.run),
                                           "--top-k", "0"], "--top-k"),
    Case("predict-config-nested-100000-deep", lambda ws, w: [
        (copy_run(w, ws) / "config.json").write_text("[" * 100_000 + "]" * 100_000),
        "predict", str(wav(ws / "a.wav", tone())), "--model", str(ws / "run")][1:], "nested too deeply"),
    Case("predict-another-archs-model", lambda ws, w: ["predict", str(wav(ws / "a.wav", tone())), "--model",
                                                       str(foreign_model(w, ws))], "expects inputs of shape"),
    Case("predict-damaged-calibration", lambda ws, w: [
        (copy_run(w, ws) / "calibration.json").write_bytes(b'{"temperature": 1.0, "reject_thr\xff'),
        "predict", str(wav(ws / "a.wav", tone())), "--model", str(ws / "run")][1:], "calibration.json is damaged"),
    # ---- evaluate
    Case("evaluate-another-archs-model", lambda ws, w: ["evaluate", "--model", str(foreign_model(w, ws)),
                                                        "--data", str(w.feats), "--out", _o(ws)],
         "expects inputs of shape"),
    Case("evaluate-tampered-feature-config", lambda ws, w: [
        "evaluate", "--model", str(tampered_config(w, ws, feature_config={
            **json.loads((w.run / "config.json").read_text())["feature_config"], "hop_length": 0})),
        "--data", str(w.feats), "--out", _o(ws)], "feature_config"),
    Case("evaluate-feature-config-nested-100000-deep", lambda ws, w: [
        (copy_feats(w, ws) / "feature_config.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000),
        "evaluate", "--model", str(w.run), "--data", str(ws / "feats"), "--out", _o(ws)][1:], "nested too deeply"),
    Case("evaluate-split-traversal", lambda ws, w: ["evaluate", "--model", str(w.run), "--data", str(w.feats),
                                                    "--split", "../../x"], "split"),
    Case("evaluate-missing-data", lambda ws, w: ["evaluate", "--model", str(w.run), "--data", str(ws / "nope"),
                                                 "--out", _o(ws)], "not found"),
    Case("evaluate-empty-split", lambda ws, w: ["evaluate", "--model", str(w.run), "--data", str(w.feats),
                                                "--split", "holdout", "--out", _o(ws)], "holdout"),
    Case("evaluate-training-tracks", lambda ws, w: ["evaluate", "--model", str(w.run), "--data", str(w.feats),
                                                    "--split", "train", "--out", _o(ws)], "training data"),
    Case("evaluate-truncated-png", lambda ws, w: ["evaluate", "--model", str(w.run), "--data",
                                                  str(truncated_png_test(w, ws)), "--out", _o(ws)], ".png"),
    Case("evaluate-out-holds-a-user-report", lambda ws, w: [
        (ws / "o").mkdir(), (ws / "o" / "report.md").write_text("# my thesis notes\n"),
        "evaluate", "--model", str(w.run), "--data", str(w.feats), "--out", str(ws / "o")][2:], "report.md"),
    Case("evaluate-feature-config-edited", lambda ws, w: ["evaluate", "--model", str(refingerprinted(w, ws)),
                                                          "--data", str(w.feats), "--out", _o(ws)],
         "feature_fingerprint"),
    # ---- compare
    Case("compare-csv-over-a-user-file", lambda ws, w: [
        (ws / "grades.csv").write_text("student,grade\nann,A\n"), "compare", str(w.run), "--csv",
        str(ws / "grades.csv")][1:], "grades.csv"),
    Case("compare-corrupt-metrics", lambda ws, w: ["compare", str(corrupt_metrics(w, ws))], "metrics.json"),
    Case("compare-missing-run", lambda ws, w: ["compare", str(w.run), str(ws / "nope")], "not found"),
    Case("compare-bad-split", lambda ws, w: ["compare", str(w.run), "--split", "a/b"], "split"),
    Case("compare-labels-not-a-list", lambda ws, w: [
        (copy_run(w, ws) / "labels.json").write_text('{"a": 1}'), "compare", str(ws / "run")][1:], "labels.json"),
    # ---- export
    Case("export-truncated-model", lambda ws, w: ["export", "--model", str(truncated_model(w, ws)), "--format",
                                                  "tflite", "--out", str(ws / "m.tflite")], "truncated"),
    Case("export-unknown-format", lambda ws, w: ["export", "--model", str(w.run), "--format", "pickle"],
         "format"),
    Case("export-keras-onto-a-folder", lambda ws, w: [(ws / "o").mkdir(), (ws / "o" / "mine.txt").write_text("x"),
                                                      "export", "--model", str(w.run), "--format", "keras",
                                                      "--out", str(ws / "o")][2:], "not a genrekit export bundle"),
    Case("export-saved-model-onto-a-user-folder", lambda ws, w: [
        (ws / "feats").mkdir(), (ws / "feats" / "thesis.docx").write_text("x"),
        "export", "--model", str(w.run), "--format", "saved_model", "--out", str(ws / "feats")][2:], "exists"),
    Case("export-keras-over-another-runs-model", lambda ws, w: [
        "export", "--model", str(w.run), "--format", "keras", "--out", str(copy_run(w, ws, "lstm") / "model.keras")],
        "inside a run folder"),
    Case("export-keras-over-a-users-model", lambda ws, w: [
        shutil.copyfile(w.run / "model.keras", ws / "my_own_model.keras"), "export", "--model", str(w.run),
        "--format", "keras", "--out", str(ws / "my_own_model.keras")][1:], "not an earlier single-file export"),
    Case("export-bundle-over-a-users-model-folder", lambda ws, w: [
        (ws / "m").mkdir(), shutil.copyfile(w.run / "model.keras", ws / "m" / "model.keras"), "export", "--model",
        str(w.run), "--out", str(ws / "m")][2:], "not a genrekit export bundle"),
    Case("export-another-archs-model", lambda ws, w: ["export", "--model", str(foreign_model(w, ws))],
         "expects inputs of shape"),
    Case("export-missing-run", lambda ws, w: ["export", "--model", str(ws / "nope")], "not found"),
    # ---- embed
    Case("embed-missing-file", lambda ws, w: ["embed", str(ws / "nope.wav"), "--model", str(w.run), "--out", _o(ws)],
         "file not found"),
    Case("embed-random-bytes", lambda ws, w: [(ws / "x.wav").write_bytes(os.urandom(2000)), "embed", str(ws / "x.wav"),
                                              "--model", str(w.run), "--out", _o(ws)][1:], "x.wav"),
    Case("embed-onto-a-user-folder", lambda ws, w: [(ws / "u").mkdir(), (ws / "u" / "thesis.docx").write_text("x"),
                                                    "embed", str(wav(ws / "a.wav", tone())), "--model", str(w.run),
                                                    "--out", str(ws / "u")][2:], "did not make"),
    Case("embed-no-source", lambda ws, w: ["embed", str(wav(ws / "a.wav", tone())), "--out", _o(ws)], "either --model"),
    # ---- serve (refused before it listens or loads anything)
    Case("serve-non-loopback-host-without-token", lambda ws, w: ["serve", "--model", str(w.run), "--host", "0.0.0.0",
                                                                 "--port", "0"], "--token"),
    Case("serve-short-token", lambda ws, w: ["serve", "--model", str(w.run), "--token", "abc", "--port", "0"],
         "at least 8"),
    Case("serve-missing-run", lambda ws, w: ["serve", "--model", str(ws / "nope"), "--port", "0"], "not found"),
    Case("serve-library-not-a-folder", lambda ws, w: ["serve", "--model", str(w.run), "--library", str(ws / "nope"),
                                                      "--port", "0"], "--library"),
    Case("serve-library-with-a-cnn-run", lambda ws, w: ["serve", "--model", str(w.run), "--library",
                                                        str(audio_tree(ws)), "--port", "0"], "default recipe"),
    # ---- fetch-spotify
    Case("fetch-spotify-no-credentials", lambda ws, w: ["fetch-spotify", "--out", _o(ws), "--genres", "rock"],
         "SPOTIPY_CLIENT_ID", env={"SPOTIPY_CLIENT_ID": None, "SPOTIPY_CLIENT_SECRET": None}),
    Case("fetch-spotify-bad-preview-cap", lambda ws, w: ["fetch-spotify", "--out", _o(ws), "--genres", "rock",
                                                         "--max-preview-mb", "-1"], "positive"),
    Case("fetch-spotify-api-unreachable", lambda ws, w: ["fetch-spotify", "--out", _o(ws), "--genres", "rock",
                                                         "--per-genre", "1"], "cannot reach",
         env={"SPOTIPY_CLIENT_ID": "id", "SPOTIPY_CLIENT_SECRET": "secret",
              "GENREKIT_SPOTIFY_TOKEN_URL": "http://127.0.0.1:{port}/api/token",
              "GENREKIT_SPOTIFY_API": "http://127.0.0.1:{port}/v1/"}),
    # ---- eval-spotify
    Case("eval-spotify-unknown-genre", lambda ws, w: [
        wav(ws / "set" / "polka" / "p.wav", tone()), "eval-spotify", "--model", str(w.run), "--data",
        str(ws / "set"), "--out", _o(ws)][1:], "polka"),
    Case("eval-spotify-missing-data", lambda ws, w: ["eval-spotify", "--model", str(w.run), "--data",
                                                     str(ws / "nope"), "--out", _o(ws)], "nope"),
    Case("eval-spotify-nothing-decodable", lambda ws, w: [
        (ws / "set" / "low").mkdir(parents=True), (ws / "set" / "low" / "a.mp3").write_bytes(os.urandom(3000)),
        "eval-spotify", "--model", str(w.run), "--data", str(ws / "set"), "--out", _o(ws), "--quiet"][2:],
        "decodable"),
    Case("eval-spotify-features-is-a-user-folder", lambda ws, w: [
        wav(ws / "set" / "low" / "a.wav", tone()), "eval-spotify", "--model", str(w.run), "--data", str(ws / "set"),
        "--features", str(user_folder(ws)), "--out", _o(ws), "--quiet"][1:], "did not make"),
    # ---- gan
    Case("gan-train-missing-data", lambda ws, w: ["gan", "train", "--data", str(ws / "nope"), "--out", _o(ws)],
         "nope"),
    Case("gan-generate-not-a-gan", lambda ws, w: ["gan", "generate", "--model", str(w.run), "--per-genre", "2",
                                                  "--out", _o(ws)], "gan"),
    Case("gan-generate-missing-model", lambda ws, w: ["gan", "generate", "--model", str(ws / "nope"),
                                                      "--per-genre", "2", "--out", _o(ws)], "not a gan run"),
    # ---- weights
    Case("weights-unknown-name", lambda ws, w: ["weights", "fetch", "alexnet"], "alexnet"),
    Case("weights-from-missing-file", lambda ws, w: ["weights", "fetch", "musicnn", "--from", str(ws / "nope.whl")],
         "nope.whl"),
    Case("weights-from-random-bytes", lambda ws, w: [(ws / "w.whl").write_bytes(os.urandom(2000)), "weights",
                                                     "fetch", "musicnn", "--from", str(ws / "w.whl")][1:], "w.whl"),
    # ---- demo
    Case("demo-out-is-a-file", lambda ws, w: [(ws / "f").write_text("mine"), "demo", "--out", str(ws / "f"),
                                              "--quick"][1:], "not a directory"),
    Case("demo-zero-workers", lambda ws, w: ["demo", "--out", _o(ws), "--workers", "0", "--quick"], "workers"),
    # ---- adapt / suggest (the world's run is a cnn: not one of the default recipe's)
    Case("adapt-a-cnn-run", lambda ws, w: ["adapt", "--model", str(w.run), "--data", str(audio_tree(ws)),
                                           "--out", _o(ws)], "works with the default recipe's runs"),
    Case("adapt-missing-run", lambda ws, w: ["adapt", "--model", str(ws / "nope"), "--labels", str(ws / "l.csv"),
                                             "--out", _o(ws)], "nope"),
    Case("adapt-no-source", lambda ws, w: ["adapt", "--model", str(w.run), "--out", _o(ws)], "--data"),
    Case("adapt-zero-weight", lambda ws, w: ["adapt", "--model", str(w.run), "--data", str(audio_tree(ws)),
                                             "--out", _o(ws), "--weight", "0"], "weight"),
    Case("suggest-a-cnn-run", lambda ws, w: ["suggest", "--model", str(w.run), "--data", str(audio_tree(ws))],
         "works with the default recipe's runs"),
    Case("suggest-missing-run", lambda ws, w: ["suggest", "--model", str(ws / "nope"), "--data", str(ws)], "nope"),
]


def truncated_png_test(w: World, ws: Path) -> Path:
    """A copy of the feature folder whose first test-split PNG is cut short."""
    feats = copy_feats(w, ws)
    rows = (feats / "manifest.csv").read_text().splitlines()
    cols = rows[0].split(",")
    for r in rows[1:]:
        f = dict(zip(cols, r.split(","), strict=False))
        if f["path"].endswith(".png") and f["split"] == "test":
            victim = feats / f["path"]
            victim.write_bytes(victim.read_bytes()[:100])
            return feats
    raise AssertionError("no test PNG in the feature folder")


# -- snapshots and the runner --------------------------------------------------------------------

def snapshot(*roots: Path) -> dict:
    """Every entry under ``roots``: kind, size, mtime and, for files, a content hash."""
    snap = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(dirpath) / name
                st = p.lstat()
                if p.is_file() and not p.is_symlink():
                    snap[str(p)] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
                else:
                    snap[str(p)] = ("dir" if p.is_dir() else "other", st.st_mtime_ns if not p.is_dir() else 0)
    return snap


def run_genrekit(argv: list[str], cwd: Path, env_changes: dict | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GENREKIT_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    port = free_port()
    for k, v in (env_changes or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v.format(port=port)
    return subprocess.run([sys.executable, "-m", "genrekit", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=False, reason=c.xfail)] if c.xfail else []
        yield pytest.param(c, id=c.id, marks=marks)


def test_the_table_is_large_and_covers_every_command():
    from genrekit.cli import build_parser

    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(sub.choices)
    covered = {c.id.split("-")[0] if not c.id.startswith(("merge-shards", "fetch-spotify", "eval-spotify"))
               else "-".join(c.id.split("-")[:2]) for c in CASES}
    assert commands <= covered, commands - covered


@pytest.mark.slow
@pytest.mark.parametrize("case", _params())
def test_hostile_input_is_refused_in_one_line_and_touches_nothing(case, world, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    argv = [str(a) for a in case.make(ws, world)]
    before = snapshot(ws, world.root, world.feats)
    proc = run_genrekit(argv, ws, case.env)
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("genrekit: error:"), err
    assert case.needle.lower() in err.lower(), err
    after = snapshot(ws, world.root, world.feats)
    created = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k] and before[k][0] == "file")
    assert not created and not removed and not changed, (created, removed, changed)


@pytest.mark.slow
def test_many_bad_files_give_one_error_line_each(world, tmp_path):
    """Issue 27 #8: predict decodes a folder in worker threads, each silencing fd 2 while
    libsndfile/mpg123 read a file (and TensorFlow's import silences it too); every bad file's
    error line still reaches stderr, and none of the decoders' notes do."""
    bad = tmp_path / "bad"
    bad.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        (bad / f"b{i:02d}.mp3").write_bytes(rng.integers(0, 256, 3000 + i, dtype=np.uint8).tobytes())
    proc = run_genrekit(["predict", str(bad), "--model", str(world.run)], tmp_path, None)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 30 and all(ln.startswith("genrekit: error: ") for ln in lines), proc.stderr[-3000:]
    assert sorted(ln.split(": ")[2] for ln in lines) == sorted(str(p) for p in bad.iterdir())
