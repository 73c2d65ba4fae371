import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.manifest import check_no_leak, read_manifest
from genrekit.data_tools.pipeline import merge_shards, run_augment
from genrekit.data_tools.splits import read_splits_csv
from tests.conftest import small_settings


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".state" not in p.parts
            and p.name != "report.md"}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_augment_writes_a_leak_free_manifest(audio_tree, tmp_path):
    out = tmp_path / "feats"
    s = run_augment(audio_tree, out, small_settings(), workers=2, progress=False)
    assert s.ok == 15 and s.skipped_bad == 0
    assert s.to_dict() == {"out": str(out), "manifest": str(out / "manifest.csv"), "tracks": 15, "ok": 15,
                           "skipped_bad": 0, "resumed": 0, "files": s.files, "missing_on_disk": 0,
                           "unassigned": 0, "skipped_paths": 0}
    assert s.files > 0
    rows = read_manifest(out)
    check_no_leak(rows)
    splits = read_splits_csv(out / "splits.csv")
    assert len(splits) == 15 and Counter(splits.values()) == {"train": 9, "valid": 3, "test": 3}
    for r in rows:
        assert splits[r["track_id"]] == r["split"]
        assert (out / r["path"]).is_file()
        if r["augmentation"] != "original":
            assert r["split"] == "train"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".png", ".npy")}
    assert on_disk == {r["path"] for r in rows}
    augs = {r["augmentation"] for r in rows if r["split"] == "train"}
    assert augs == {"original", "stretch_x1.25", "stretch_x0.85", "pitch_+2", "pitch_-1", "freqmask", "timemask"}
    png = next(r["path"] for r in rows if r["feature"] == "mel")
    im = Image.open(out / png)
    assert im.mode == "L" and im.size == (48, 32)
    assert (out / "feature_config.json").is_file() and (out / "report.md").is_file()
    assert "## Catalogue" in (out / "report.md").read_text()


def test_same_seed_same_bytes_whatever_the_workers(audio_tree, tmp_path):
    run_augment(audio_tree, tmp_path / "a", small_settings(), workers=1, progress=False)
    run_augment(audio_tree, tmp_path / "b", small_settings(), workers=2, progress=False)
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb and len(ha) > 100
    run_augment(audio_tree, tmp_path / "c", small_settings(seed=4), workers=2, progress=False)
    assert _hashes(tmp_path / "c")["splits.csv"] != ha["splits.csv"]


def test_rerun_is_a_no_op_and_resume_completes(audio_tree, tmp_path):
    out = tmp_path / "f"
    run_augment(audio_tree, out, small_settings(), workers=2, progress=False)
    before = _mtimes(out)
    s = run_augment(audio_tree, out, small_settings(), workers=2, progress=False)
    assert s.resumed == 15
    assert _mtimes(out) == before
    # simulate a killed run: one track's state gone, one file gone, a stale temporary left
    rows = read_manifest(out)
    victim = rows[0]
    (out / victim["path"]).unlink()
    (out / ".state" / f"{rows[-1]['track_id']}.json").unlink()
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that has exited: its temporaries are stale
    stale = [out / "mel" / "low" / f".low.00001.original.000.png.{dead}.genrekit-tmp",
             out / ".state" / "low" / f".low.00001.json.{dead}.genrekit-tmp", out / f".manifest.csv.{dead}.genrekit-tmp"]
    for p in stale:
        p.write_bytes(b"half")
    s = run_augment(audio_tree, out, small_settings(), workers=1, progress=False)
    assert s.resumed == 13
    assert (out / victim["path"]).is_file()
    assert not any(p.exists() for p in stale)
    assert not [p for p in out.rglob("*") if p.name.endswith(".genrekit-tmp")]
    assert read_manifest(out) == rows


def test_corrupt_files_are_reported_and_skipped(audio_tree, tmp_path):
    (audio_tree / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (audio_tree / "low" / "empty.wav").write_bytes(b"")
    data = (audio_tree / "mid" / "mid.00000.wav").read_bytes()
    (audio_tree / "mid" / "cut.wav").write_bytes(data[: len(data) // 3])
    import numpy as np
    import soundfile as sf

    sf.write(audio_tree / "high" / "silent.wav", np.zeros(8000 * 2, dtype=np.float32), 8000)
    sf.write(audio_tree / "high" / "tiny.wav", np.ones(800, dtype=np.float32) * 0.1, 8000)
    out = tmp_path / "f"
    msgs = []
    s = run_augment(audio_tree, out, small_settings(), workers=2, progress=False, log=msgs.append)
    assert s.ok == 15 and s.skipped_bad == 5
    report = (out / "report.md").read_text()
    for name, why in [("low/empty", "empty"), ("mid/cut", "truncated"), ("high/silent", "silent"),
                      ("high/tiny", "short"), ("low/broken", "bad")]:
        assert name in report and why in report, name
        assert any(name in m for m in msgs)
    assert not any("broken" in r["track_id"] for r in read_manifest(out))


def test_changed_settings_refuse_to_mix(audio_tree, tmp_path):
    out = tmp_path / "f"
    run_augment(audio_tree, out, small_settings(), progress=False)
    with pytest.raises(DataError, match="other settings"):
        run_augment(audio_tree, out, small_settings(seed=9), progress=False)


def test_shards_merge_to_the_full_run(audio_tree, tmp_path):
    run_augment(audio_tree, tmp_path / "full", small_settings(), workers=2, progress=False)
    sh = tmp_path / "sharded"
    for k in (1, 2, 3):
        run_augment(audio_tree, sh, small_settings(), shard=(k, 3), progress=False)
    with pytest.raises(DataError, match="missing shard"):
        (sh / "manifest.shard-2-of-3.csv").rename(sh / "x.csv")
        merge_shards(sh)
    (sh / "x.csv").rename(sh / "manifest.shard-2-of-3.csv")
    merge_shards(sh)
    assert (sh / "manifest.csv").read_bytes() == (tmp_path / "full" / "manifest.csv").read_bytes()


def test_unwritable_output(audio_tree, tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "sub"  # a folder below a file can never be created
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "out"
    with pytest.raises(DataError, match="cannot write"):
        run_augment(audio_tree, target, small_settings(), progress=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_audio_is_reported_and_never_opened(audio_tree, tmp_path):
    """Issue 27 #12: a FIFO in the audio tree (opening it would block for ever) is listed as
    skipped, "not a regular file", in the log and the report; the run goes on without it."""
    os.mkfifo(audio_tree / "low" / "stream.wav")
    out = tmp_path / "f"
    msgs = []
    s = run_augment(audio_tree, out, small_settings(), workers=1, progress=False, log=msgs.append)
    assert s.ok == 15 and s.skipped_paths == 1
    report = (out / "report.md").read_text()
    assert "low/stream.wav" in report and "not a regular file (a FIFO)" in report
    assert any("low/stream.wav" in m and "not a regular file" in m for m in msgs)
    assert not any("stream" in r["track_id"] for r in read_manifest(out))
