"""End-to-end `genrekit augment` on real GTZAN audio (skipped when ../shared is absent)."""
from pathlib import Path

import pytest
from PIL import Image

from genrekit.cli import main
from genrekit.data_tools.manifest import read_manifest
from genrekit.data_tools.splits import read_splits_csv

pytestmark = pytest.mark.integration


def test_augment_on_gtzan_mini(gtzan_subset, tmp_path, capsys):
    (gtzan_subset / "metal" / "metal.00099.wav").write_bytes(b"not a riff file" * 100)  # corrupt
    out = tmp_path / "feats"
    argv = ["augment", "--data", str(gtzan_subset.parent), "--out", str(out), "--workers", "2", "--quiet"]
    assert main(argv) == 0
    rows = read_manifest(out)
    splits = read_splits_csv(out / "splits.csv")
    # every track in exactly one split, and rows inherit it
    assert len(splits) == 31
    assert all(splits[r["track_id"]] == r["split"] for r in rows)
    # augmented rows only in train
    assert {r["split"] for r in rows if r["augmentation"] != "original"} == {"train"}
    # every PNG 256x256 mode L; manifest rows match the files on disk
    for r in rows:
        if r["feature"] == "mel":
            with Image.open(out / r["path"]) as im:
                assert im.mode == "L" and im.size == (256, 256)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".png", ".npy")}
    assert files == {r["path"] for r in rows}
    # the corrupt file is reported and skipped
    report = (out / "report.md").read_text()
    assert "metal/metal.00099" in report and "not a RIFF" in report
    assert "metal/metal.00099" not in {r["track_id"] for r in rows}
    # one 30 s image per clip; 3 s MFCC windows with 50 % overlap
    originals = [r for r in rows if r["augmentation"] == "original"]
    assert sum(r["feature"] == "mel" for r in originals) == 30
    assert {int(r["segment"]) for r in originals if r["feature"] == "mfcc"} >= set(range(18))
    # rerun is a no-op
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(argv) == 0
    assert "30 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_fault_filtered_split_on_gtzan_mini(gtzan_subset, tmp_path, capsys):
    out = tmp_path / "ff"
    argv = ["augment", "--data", str(gtzan_subset), "--out", str(out), "--split", "gtzan-filtered",
            "--augment", "none", "--features", "mfcc", "--quiet"]
    assert main(argv) == 0
    splits = read_splits_csv(out / "splits.csv")
    # Kereliuk et al.'s lists put blues.00000-00009 in valid; 29 of these 30 clips are listed
    assert splits["blues/blues.00000"] == "valid" and len(splits) == 29
    report = (out / "report.md").read_text()
    assert "Named in the split but not on disk" in report
    assert "not on disk" in capsys.readouterr().out
    assert Path(out / "manifest.csv").is_file()
