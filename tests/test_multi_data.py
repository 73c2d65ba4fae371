"""``genrekit train --data A --data B``: several labelled collections in one run (issue 22).

Two tiny musicnn feature folders (random backbone: offline) with different genres and a track
id found in both train one default-recipe run: the label set is their union, the two tracks of
one id stay two, the later folder's tracks weigh what the rule says and the head is the
weighted fit. One folder trains as before; bad folders are refused in one line with nothing
written; the Keras architectures take the weights as (x, y, w) batches."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.loaders import make_dataset
from genrekit.data_tools.manifest import read_manifest
from genrekit.data_tools.pipeline import run_augment
from genrekit.multidata import read_training_data, row_weights, weights_of_tracks
from genrekit.trackhead import collection_weight, fit_logistic_regression
from tests.conftest import (
    SR,
    musicnn_features,
    noise_bursts,
    one_error,
    small_settings,
    tone,
    user_music,
    write_tree,
)

SR16 = 16000


def _second_collection(root: Path, per_genre: int = 4) -> Path:
    """Another user's collection: new low tones (their files named as the first folder's, so
    the track ids ``low.00000``... exist in both) and a genre the first lacks, ``buzz``."""
    (root / "low").mkdir(parents=True)
    (root / "buzz").mkdir(parents=True)
    for i in range(per_genre):
        sf.write(root / "low" / f"low.{i:05d}.wav", tone(250.0 * (1 + 0.03 * i), 4.0, SR16, seed=700 + i),
                 SR16, subtype="PCM_16")
        sf.write(root / "buzz" / f"buzz.{i:05d}.wav", noise_bursts(4.0, 800 + i), SR16, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    from genrekit.cli import main

    base = tmp_path_factory.mktemp("multi")
    musicnn_features(write_tree(base / "a", per_genre=6, seconds=4.0, sr=SR16), base / "fa")
    musicnn_features(_second_collection(base / "b"), base / "fb")
    run = base / "run"
    assert main(["train", "--data", str(base / "fa"), "--data", str(base / "fb"), "--weights", "none",
                 "--out", str(run), "--quiet"]) == 0
    return {"base": base, "fa": base / "fa", "fb": base / "fb", "run": run}


@pytest.mark.slow
def test_two_folders_train_one_run_on_both_collections_genres(two, capsys):
    from genrekit.cli import main

    run = two["run"]
    assert json.loads((run / "labels.json").read_text()) == ["buzz", "high", "low", "mid"]  # the union
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["folder"] == str(two["fa"].resolve())  # the first folder, as with one
    cols = data["collections"]
    assert [c["folder"] for c in cols] == [str(two["fa"].resolve()), str(two["fb"].resolve())]
    assert [c["track_prefix"] for c in cols] == ["", "2:"] and cols[1]["genres"] == ["buzz", "low"]
    assert all(c["manifest_sha256"] and c["rows"] > 0 for c in cols)
    # each track of the second folder weighs the first's training tracks / its own (clipped to [1, 30])
    assert cols[0]["weight"] == 1.0
    assert cols[1]["weight"] == pytest.approx(collection_weight(cols[0]["train_tracks"], cols[1]["train_tracks"], 2))
    assert cols[1]["weight"] > 1
    # the model card names both folders and their weights
    assert main(["export", "--model", str(run), "--out", str(two["base"] / "bundle"), "--format", "keras"]) == 0
    card = (two["base"] / "bundle" / "MODEL_CARD.md").read_text()
    assert str(two["fb"].resolve()) in card and f"weight {cols[1]['weight']:.3g}" in card
    # the run evaluates on either folder's test split; the second folder's training tracks are known
    capsys.readouterr()
    for folder in ("fa", "fb"):
        assert main(["evaluate", "--model", str(run), "--data", str(two[folder]), "--out",
                     str(two["base"] / f"eval-{folder}")]) == 0
    m = json.loads((two["base"] / "eval-fb" / "metrics.json").read_text())
    assert m["track"]["n"] >= 2
    capsys.readouterr()
    rc = main(["evaluate", "--model", str(run), "--data", str(two["fb"]), "--split", "train", "--out",
               str(two["base"] / "leak")])
    assert "were in the run's training data" in one_error(capsys, rc)


@pytest.mark.slow
def test_one_folder_trains_as_before(two):
    """One --data: the config.json of before (no collections, no weights), the head unweighted."""
    from genrekit.cli import main
    from genrekit.runs import Run

    out = two["base"] / "one"
    assert main(["train", "--data", str(two["fa"]), "--weights", "none", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "config.json").read_text())["data"]
    assert set(data) == {"folder", "manifest_sha256", "train_tracks", "valid_tracks", "train_rows", "valid_rows",
                         "synthetic", "synthetic_rows"}
    run = Run(out)
    with np.load(out / "embeddings.npz", allow_pickle=False) as z:
        train = z["split"] == "train"
        x, ids, genres = z["x"][train].astype(np.float64), z["track_id"][train], z["genre"][train]
    plain = fit_logistic_regression(x, np.array([run.labels.index(g) for g in genres]), ids, len(run.labels))
    np.testing.assert_allclose(run.model().get_layer("predictions").get_weights()[0], plain["kernel"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_track_id_in_both_folders_stays_two_tracks(two):
    ids_a = {r["track_id"] for r in read_manifest(two["fa"])}
    ids_b = {r["track_id"] for r in read_manifest(two["fb"])}
    both = ids_a & ids_b
    assert both  # low.00000 ... are in both folders
    data = json.loads((two["run"] / "config.json").read_text())["data"]
    known = set(data["train_tracks"]) | set(data["valid_tracks"])
    with np.load(two["run"] / "embeddings.npz", allow_pickle=False) as z:
        ids, genres = list(z["track_id"]), list(z["genre"])
    assert len(ids) == len(set(ids)) == len(known)  # one embedding per track, none merged
    for t in both:  # the first folder's id unchanged, the second's prefixed
        assert (t in known) == (t in ids) and (f"2:{t}" in known) == (f"2:{t}" in ids)
    assert any(i.startswith("2:") for i in ids) and "buzz" in genres


@pytest.mark.slow
def test_the_head_is_the_weighted_fit(two):
    """The saved head is the logistic regression fitted with the rule's weights (standardisation,
    inner CV and final fit), not the unweighted one."""
    from genrekit.runs import Run

    run = Run(two["run"])
    cols = run.config["data"]["collections"]
    with np.load(two["run"] / "embeddings.npz", allow_pickle=False) as z:
        train = z["split"] == "train"
        x, ids, genres = z["x"][train].astype(np.float64), z["track_id"][train], z["genre"][train]
    y = np.array([run.labels.index(g) for g in genres])
    w = np.where(np.char.startswith(ids, "2:"), cols[1]["weight"], 1.0)
    kernel = run.model().get_layer("predictions").get_weights()[0]
    weighted = fit_logistic_regression(x, y, ids, len(run.labels), seed=0, sample_weight=w)
    plain = fit_logistic_regression(x, y, ids, len(run.labels), seed=0)
    assert weighted["C"] == run.config["head_fit"]["C"]
    np.testing.assert_allclose(kernel, weighted["kernel"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(kernel, plain["kernel"], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_adapting_a_two_folder_run_keeps_its_weights(two):
    """``genrekit adapt`` refits the head on the run's kept tracks weighted as the run weighed
    them (the second folder's by its weight) plus the user's."""
    from genrekit.adapt import fit_adapted_head
    from genrekit.cli import main
    from genrekit.runs import Run

    base = two["base"]
    labelled = user_music(base / "labelled", per_genre=2, seed0=500, buzz=2)
    out = base / "adapted"
    assert main(["adapt", "--model", str(two["run"]), "--data", str(labelled), "--out", str(out)]) == 0
    run, new = Run(two["run"]), Run(out)
    assert new.config["data"]["collections"] == run.config["data"]["collections"]
    with np.load(out / "embeddings.npz", allow_pickle=False) as z:
        e = {k: z[k] for k in z.files}
    mine = e["origin"] == "user"
    known = {k: v[~mine] for k, v in e.items()}
    w_run = weights_of_tracks(run.config, known["track_id"])
    assert set(w_run) == {1.0, run.config["data"]["collections"][1]["weight"]}

    def head(run_weight):
        return fit_adapted_head(known, e["x"][mine], list(e["genre"][mine]), list(run.labels),
                                list(e["track_id"][mine]), seed=0, out_of_fold_too=False, run_weight=run_weight)

    kernel = new.model().get_layer("predictions").get_weights()[0]
    np.testing.assert_allclose(kernel, head(w_run).kernel, rtol=1e-4, atol=1e-5)
    assert not np.allclose(kernel, head(None).kernel, rtol=1e-3, atol=1e-4)


def test_weights_follow_the_rule_and_weight_one_is_the_plain_concatenation(tmp_path):
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    _mel_folder(tmp_path / "a", fa, ("low", "high", "mid"), 5)
    _mel_folder(tmp_path / "b", fb, ("low", "high"), 2)
    td = read_training_data([str(fa), str(fb)])
    a, b = td.collections
    assert b.weight == collection_weight(a.train_tracks, b.train_tracks, 2) > 1
    first = [r for r in td.rows if r["collection"] == 0]
    assert [r["track_id"] for r in first] == [r["track_id"] for r in read_manifest(fa)]  # ids unchanged
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in td.rows)
    assert {r["track_id"][:2] for r in td.rows if r["collection"] == 1} == {"2:"}
    w = row_weights(td.track_weights, td.rows)
    assert set(np.unique(w)) == {1.0, np.float32(b.weight)}
    # --collection-weight 1: nothing is weighed, every fit is the plain fit of the joined rows
    assert read_training_data([str(fa), str(fb)], 1.0).track_weights is None
    assert read_training_data([str(fa), str(fb)], 2.5).collections[1].weight == 2.5
    # one folder: its manifest's rows as they are, no collections, no weights
    one = read_training_data(str(fa))
    assert one.rows == read_manifest(fa) and one.collections == [] and one.track_weights is None


def test_keras_batches_carry_the_weights(tmp_path):
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    _mel_folder(tmp_path / "a", fa, ("low", "high"), 3)
    _mel_folder(tmp_path / "b", fb, ("low", "high"), 2)
    td = read_training_data([str(fa), str(fb)], 3.0)
    rows = [r for r in td.rows if r["feature"] == "mel"]
    y = np.zeros(len(rows), dtype=np.int32)
    w = row_weights(td.track_weights, rows)
    batch = next(iter(make_dataset(fa, rows, y, "mel", len(rows), shuffle=False, seed=0, weights=w)))
    assert len(batch) == 3
    np.testing.assert_array_equal(batch[2].numpy(), w)
    assert len(next(iter(make_dataset(fa, rows, y, "mel", 4, shuffle=False, seed=0)))) == 2  # as before


@pytest.mark.slow
def test_a_keras_architecture_trains_on_two_folders(tmp_path):
    from genrekit.train import TrainOptions, train

    fa, fb = tmp_path / "fa", tmp_path / "fb"
    _mel_folder(tmp_path / "a", fa, ("low", "high", "mid"), 5)
    _mel_folder(tmp_path / "b", fb, ("low", "high"), 3)
    # the plain tf.data path (with mixup), an MFCC model, and the cached frozen-base transfer path
    for arch, kw in (("cnn", {"mixup": 0.2}), ("fcnn", {}), ("mobilenet", {"phase": "transfer", "weights": "none"})):
        r = train(TrainOptions(data=[str(fa), str(fb)], arch=arch, epochs=1, batch_size=8, verbose=0,
                               out=str(tmp_path / arch), **kw))
        cfg = json.loads((Path(r.run) / "config.json").read_text())
        assert len(cfg["data"]["collections"]) == 2 and cfg["data"]["collections"][1]["weight"] > 1
        assert cfg.get("cached_base") is (arch == "mobilenet")


def _mel_folder(audio: Path, out: Path, genres, per_genre: int) -> Path:
    write_tree(audio, genres=genres, per_genre=per_genre, seconds=2.5, sr=SR)
    run_augment(audio, out, small_settings(kinds=("mel", "mfcc"), augment=AugmentConfig(augmentations=()),
                                           ratios=(60, 20, 20)), workers=1, progress=False)
    return out


@pytest.mark.parametrize("case", ["other settings", "twice", "twice by a link", "not a feature folder",
                                  "missing", "tempo", "cv", "weight with one folder", "bad weight"])
def test_bad_folders_are_refused_in_one_line_with_nothing_written(tmp_path, capsys, case):
    from genrekit.cli import main

    fa, fb = tmp_path / "fa", tmp_path / "fb"
    _mel_folder(tmp_path / "a", fa, ("low", "high"), 3)
    shutil.copytree(fa, fb)
    out = tmp_path / "run"
    args = {"other settings": ["--data", str(fa), "--data", str(_other_settings(fb))],
            "twice": ["--data", str(fa), "--data", str(fa)],
            "twice by a link": ["--data", str(fa), "--data", str(_link(fa, tmp_path / "link"))],
            "not a feature folder": ["--data", str(fa), "--data", str(tmp_path / "a")],
            "missing": ["--data", str(fa), "--data", str(tmp_path / "nowhere")],
            "tempo": ["--data", str(fa), "--data", str(fb), "--task", "tempo"],
            "cv": ["--data", str(fa), "--data", str(fb)],
            "weight with one folder": ["--data", str(fa), "--collection-weight", "2"],
            "bad weight": ["--data", str(fa), "--data", str(fb), "--collection-weight", "0"]}[case]
    command = "cv" if case == "cv" else "train"
    want = {"other settings": "other feature settings", "twice": "given twice", "twice by a link": "given twice",
            "not a feature folder": "not a feature folder", "missing": "not found",
            "tempo": "trains on one feature folder", "cv": "cv cross-validates one feature folder",
            "weight with one folder": "give several --data folders", "bad weight": "--collection-weight"}[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    if case == "bad weight":  # refused by the parser, before any work
        with pytest.raises(SystemExit) as e:
            main([command, *args, "--arch", "cnn", "--out", str(out)])
        assert e.value.code == 2 and want in capsys.readouterr().err
    else:
        arch = "tempocnn" if case == "tempo" else "cnn"
        rc = main([command, *args, "--arch", arch, "--out", str(out), "--epochs", "1"])
        assert want in one_error(capsys, rc)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not out.exists()  # nothing written


def _other_settings(folder: Path) -> Path:
    p = folder / "feature_config.json"
    cfg = json.loads(p.read_text())
    cfg["hop_length"] = cfg["hop_length"] * 2
    p.write_text(json.dumps(cfg))
    return folder


def _link(folder: Path, link: Path) -> Path:
    link.symlink_to(folder, target_is_directory=True)
    return link


@pytest.mark.slow
def test_a_folder_without_the_architectures_kind_is_refused(two, capsys, tmp_path):
    """A later folder rendered with other feature kinds only (here: every row relabelled mfcc)
    would otherwise add nothing but its genre names and a weight: refused, nothing written."""
    from genrekit.cli import main

    other = tmp_path / "fb-mfcc"
    shutil.copytree(two["fb"], other)
    man = other / "manifest.csv"
    lines = man.read_text().splitlines()
    head = lines[0].split(",")
    col = head.index("feature")
    lines = [lines[0]] + [",".join(v if i != col else "mfcc" for i, v in enumerate(line.split(",")))
                          for line in lines[1:]]
    man.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    rc = main(["train", "--data", str(two["fa"]), "--data", str(other), "--weights", "none", "--out", str(out),
               "--quiet"])
    assert "has no training rows of musicnn features" in one_error(capsys, rc)
    assert not out.exists()


@pytest.mark.slow
def test_an_edited_collections_record_is_refused_in_one_line(two, capsys, tmp_path):
    from genrekit.cli import main

    run = tmp_path / "run"
    shutil.copytree(two["run"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["collections"].append("junk")
    (run / "config.json").write_text(json.dumps(cfg))
    rc = main(["evaluate", "--model", str(run), "--data", str(two["fb"]), "--out", str(tmp_path / "ev")])
    assert "data.collections is not a list of folder records" in one_error(capsys, rc)
    assert not (tmp_path / "ev").exists()
