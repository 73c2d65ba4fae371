"""--split and --ratios stay two fields from the CLI to the pipeline (issue 14): nothing is
guessed from how a value looks; feature folders written when they were one field still resume."""
from __future__ import annotations

import json

import pytest

from genrekit.cli import main
from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import read_csv
from genrekit.data_tools.pipeline import SETTINGS_NAME, AugmentSettings, run_augment
from tests.conftest import small_features, write_tree

FAST = ["--features", "mel", "--augment", "none", "--sr", "8000", "--n-fft", "256", "--hop-length", "128",
        "--n-mels", "32", "--image-size", "32x32", "--image-seconds", "1", "--quiet"]


def test_a_split_that_looks_like_ratios_is_a_split_file(tmp_path, capsys):
    data = write_tree(tmp_path / "data", per_genre=4, seconds=1.2)
    code = main(["augment", "--data", str(data), "--out", str(tmp_path / "o"), "--split", "60/20/20", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("genrekit: error: split file not found: 60/20/20")
    assert not (tmp_path / "o").exists()


def test_ratios_go_to_the_pipeline_as_numbers(tmp_path, capsys):
    data = write_tree(tmp_path / "data", per_genre=4, seconds=1.2)
    out = tmp_path / "o"
    assert main(["augment", "--data", str(data), "--out", str(out), "--ratios", "50/25/25", *FAST]) == 0
    doc = json.loads((out / SETTINGS_NAME).read_text())
    assert doc["split"] is None and doc["ratios"] == [50.0, 25.0, 25.0]
    counts = {}
    for r in read_csv(out / "splits.csv"):
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    assert counts == {"train": 6, "valid": 3, "test": 3}
    assert "stratified 50/25/25, seed 0" in (out / "report.md").read_text()
    # a named split overrides the ratios, and the ratios are not recorded then
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("low/low.00000\nmid/mid.00000\nhigh/high.00000\n")
    (lists / "test.txt").write_text("low/low.00001\nmid/mid.00001\nhigh/high.00001\n")
    out2 = tmp_path / "o2"
    assert main(["augment", "--data", str(data), "--out", str(out2), "--split", str(lists), "--ratios", "50/25/25",
                 *FAST]) == 0
    doc = json.loads((out2 / SETTINGS_NAME).read_text())
    assert doc["split"] == str(lists) and doc["ratios"] is None
    assert len(read_csv(out2 / "splits.csv")) == 6


def test_bad_ratios_are_refused_in_one_line(tmp_path, capsys):
    data = write_tree(tmp_path / "data", per_genre=2, seconds=1.2)
    for bad in ("70/30", "a/b/c", "0/50/50", "-1/2/3"):
        code = main(["augment", "--data", str(data), "--out", str(tmp_path / "o"), f"--ratios={bad}", *FAST])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "bad --ratios" in err[0], (bad, err)
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="bad --ratios"):
        AugmentSettings(ratios="60/20/20")  # the Python API takes numbers, not the CLI's text


@pytest.mark.parametrize("legacy_split, refused", [
    ("60/20/20", None),  # the same ratios, written the old way: the folder resumes
    ("60:20:20", None),
    ("50/25/25", "ratios"),
    ("gtzan-filtered", "ratios, split"),
])
def test_a_folder_written_when_split_and_ratios_were_one_field(tmp_path, legacy_split, refused):
    data = write_tree(tmp_path / "data", per_genre=3, seconds=1.2)
    settings = AugmentSettings(features=small_features(), kinds=("mfcc",), augment=AugmentConfig(augmentations=()),
                               ratios=(60, 20, 20))
    out = tmp_path / "o"
    run_augment(data, out, settings, progress=False)
    doc = json.loads((out / SETTINGS_NAME).read_text())
    del doc["ratios"]
    doc["split"] = legacy_split
    (out / SETTINGS_NAME).write_text(json.dumps(doc))
    if refused is None:
        assert run_augment(data, out, settings, progress=False).resumed == 9
    else:
        with pytest.raises(DataError, match=f"differs in: {refused}\\)"):
            run_augment(data, out, settings, progress=False)
