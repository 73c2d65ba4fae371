"""Music libraries assembled from symbolic links (issue 17): a track's identity comes from its
path as seen under the data folder, links are followed, loops are reported and not followed."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from genrekit.cli import main
from genrekit.data_tools.catalogue import find_tracks, scan_tracks
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.manifest import read_manifest
from genrekit.data_tools.pipeline import run_augment
from genrekit.data_tools.splits import read_splits_csv
from tests.conftest import small_settings, write_tree


def _feature_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".png", ".npy")}


@pytest.fixture
def linked_and_copied(tmp_path):
    """The same library twice: a copied folder, and a folder of links to audio stored elsewhere
    (one genre a folder link, the others folders of file links, one file link in a subfolder)."""
    store = write_tree(tmp_path / "store", per_genre=4, seconds=2.5)
    for f in sorted(store.rglob("*.wav")):  # names no training set of the tests uses
        f.rename(f.with_name(f"ood-{f.name}"))
    copied = tmp_path / "copied"
    shutil.copytree(store, copied)
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(store / "low", linked / "low")  # a genre folder link
    for g in ("high", "mid"):
        (linked / g).mkdir()
        for f in sorted((store / g).iterdir()):
            os.symlink(f, linked / g / f.name)  # file links
    # a file link one folder down, under another name: the id comes from the link's path
    (linked / "mid" / "live").mkdir()
    os.symlink(store / "high" / "ood-high.00000.wav", linked / "mid" / "live" / "encore.wav")
    (copied / "mid" / "live").mkdir()
    (copied / "high" / "ood-high.00000.wav").rename(copied / "mid" / "live" / "encore.wav")
    os.unlink(linked / "high" / "ood-high.00000.wav")
    return linked, copied


def test_catalogue_ids_come_from_paths_under_the_data_folder(linked_and_copied):
    linked, copied = linked_and_copied
    lt, ct = find_tracks(linked), find_tracks(copied)
    assert [t.track_id for t in lt] == [t.track_id for t in ct]
    assert "mid/live/encore" in {t.track_id for t in lt}
    for t in lt:  # the path as seen under the data folder, links not resolved
        assert t.path.is_relative_to(linked)


@pytest.mark.parametrize("split", [{"ratios": (60, 20, 20)}, {"split": "all-test"}])  # all-test: eval-spotify's path
def test_linked_folder_gives_the_same_manifest_as_a_copy(linked_and_copied, tmp_path, split):
    linked, copied = linked_and_copied
    settings = small_settings(**split)
    a = run_augment(linked, tmp_path / "fl", settings, workers=1, progress=False)
    b = run_augment(copied, tmp_path / "fc", settings, workers=2, progress=False)
    assert a.ok == b.ok == 12 and a.skipped_bad == 0
    assert read_manifest(tmp_path / "fl") == read_manifest(tmp_path / "fc")
    assert read_splits_csv(tmp_path / "fl" / "splits.csv") == read_splits_csv(tmp_path / "fc" / "splits.csv")
    ha, hb = _feature_hashes(tmp_path / "fl"), _feature_hashes(tmp_path / "fc")
    assert ha == hb and len(ha) > 20
    sources = {r["source"] for r in read_manifest(tmp_path / "fl")}
    assert "mid/live/encore.wav" in sources and "low/ood-low.00001.wav" in sources


def test_link_loops_are_reported_not_followed(tmp_path):
    data = write_tree(tmp_path / "data", per_genre=3, seconds=2.5)
    os.symlink(data, data / "everything")  # a "genre" that is the whole tree again
    os.symlink(data / "low", data / "low" / "again")  # a folder that holds itself
    os.symlink(tmp_path, data / "mid" / "up")  # a way up, above the data folder
    os.symlink(tmp_path / "nowhere.wav", data / "high" / "gone.wav")  # a broken link
    cat = scan_tracks(data)
    assert sorted({t.genre for t in cat.tracks}) == ["high", "low", "mid"]
    assert len(cat.tracks) == 9
    why = dict(cat.skipped)
    assert set(why) == {"everything", "low/again", "mid/up", "high/gone.wav"}
    assert all("loop" in why[k] for k in ("everything", "low/again", "mid/up"))
    assert "broken link" in why["high/gone.wav"]
    msgs = []
    out = tmp_path / "f"
    s = run_augment(data, out, small_settings(), progress=False, log=msgs.append)
    assert s.ok == 9 and s.skipped_paths == 4
    assert {r["genre"] for r in read_manifest(out)} == {"high", "low", "mid"}
    assert any("low/again" in m and "loop" in m for m in msgs)
    report = (out / "report.md").read_text()
    assert "Left out of the catalogue" in report and "`everything`" in report


def test_the_same_audio_through_two_links_is_kept_once(tmp_path):
    data = write_tree(tmp_path / "data", per_genre=2, seconds=2.5)
    os.symlink(data / "low" / "low.00000.wav", data / "mid" / "dup.wav")  # same audio, another genre
    cat = scan_tracks(data)
    ids = [t.track_id for t in cat.tracks]
    assert "low/low.00000" in ids and "mid/dup" not in ids
    assert cat.skipped == [("mid/dup.wav", "same file as track low/low.00000 (reached twice through links); "
                                           "kept once")]


def test_a_catalogue_that_fails_creates_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(data, data / "loop")  # nothing but a loop: no audio
    out = tmp_path / "out"
    with pytest.raises(DataError, match="no audio"):
        run_augment(data, out, small_settings(), progress=False)
    assert main(["augment", "--data", str(data), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrekit: error:")
    assert not out.exists()


def test_cli_augment_on_a_linked_library(linked_and_copied, tmp_path, capsys):
    linked, _ = linked_and_copied
    out = tmp_path / "cli"
    assert main(["augment", "--data", str(linked), "--out", str(out), "--quiet", "--sr", "8000",
                 "--n-fft", "256", "--hop-length", "128", "--n-mels", "32", "--image-size", "32x32",
                 "--image-seconds", "2", "--mfcc-seconds", "1", "--augment", "none"]) == 0
    assert "12 tracks" in capsys.readouterr().out
    assert json.loads((out / "augment_config.json").read_text())["data_root"] == str(linked)


@pytest.mark.slow
def test_eval_spotify_on_a_linked_library(linked_and_copied, tiny_features, tmp_path, capsys):
    """eval-spotify through links gives the same features and figures as on a copy."""
    from genrekit.train import TrainOptions, train

    linked, copied = linked_and_copied
    run = train(TrainOptions(data=str(tiny_features), arch="fcnn", out=str(tmp_path / "run"), epochs=1,
                             batch_size=8, verbose=0)).run
    results = {}
    for name, data in (("linked", linked), ("copied", copied)):
        out = tmp_path / f"es-{name}"
        assert main(["eval-spotify", "--model", run, "--data", str(data), "--out", str(out), "--quiet"]) == 0
        results[name] = out
    capsys.readouterr()
    fl, fc = results["linked"] / "features", results["copied"] / "features"
    assert read_manifest(fl) == read_manifest(fc)
    assert _feature_hashes(fl) == _feature_hashes(fc)
    ml = json.loads((results["linked"] / "metrics.json").read_text())
    mc = json.loads((results["copied"] / "metrics.json").read_text())
    assert ml["track"] == mc["track"] and ml["track"]["n"] == 12


# -- issue 27 item 7: never a write through a link planted inside an output folder ---------------

def _tree(root: Path) -> dict[str, str]:
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            snap[str(p.relative_to(root))] = ("link:" + os.readlink(p) if p.is_symlink() else
                                              hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
    return snap


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrekit: error:"), err
    return err[0]


def _link_in_place_of(folder: Path, target: Path) -> None:
    shutil.rmtree(folder)
    os.symlink(os.path.relpath(target, folder.parent), folder)


@pytest.mark.slow
def test_embed_and_cv_reruns_refuse_a_planted_link(tiny_features, tmp_path, capsys):
    import soundfile as sf

    from tests.conftest import SR, tone

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    # embed: emb/music/live -> ../../victim
    assert main(["train", "--data", str(tiny_features), "--arch", "fcnn", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    music = tmp_path / "music"
    (music / "live").mkdir(parents=True)
    sf.write(music / "live" / "a.wav", tone(500.0, 3.0), SR)
    sf.write(music / "b.wav", tone(700.0, 3.0), SR)
    emb = tmp_path / "emb"
    embed = ["embed", str(music), "--model", str(tmp_path / "run"), "--out", str(emb)]
    assert main(embed) == 0
    _link_in_place_of(emb / "music" / "live", victim)
    # cv resumed with fold-2 a link
    cv = ["cv", "--data", str(tiny_features), "--arch", "fcnn", "--folds", "2", "--epochs", "1", "--batch-size", "8",
          "--out", str(tmp_path / "cv")]
    assert main(cv) == 0
    (tmp_path / "cv" / "cv.json").unlink()
    _link_in_place_of(tmp_path / "cv" / "fold-2", victim)
    capsys.readouterr()
    before = _tree(tmp_path)
    for argv, link in ((embed, emb / "music" / "live"), (cv, tmp_path / "cv" / "fold-2")):
        assert main(argv) == 2
        line = _one_line(capsys)
        assert "symbolic link" in line and str(link) in line, line
        assert _tree(tmp_path) == before
