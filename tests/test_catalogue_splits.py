from collections import Counter

import pytest

from genrekit.data_tools.catalogue import find_tracks, resolve_root
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.splits import (
    parse_ratios,
    read_split_source,
    split_from_source,
    stratified_split,
)
from tests.conftest import write_tree


@pytest.mark.parametrize("layout", ["", "genres", "genres_original", "Data/genres_original"])
def test_finds_gtzan_layouts(tmp_path, layout):
    write_tree(tmp_path / layout if layout else tmp_path, per_genre=2, seconds=0.5)
    tracks = find_tracks(tmp_path)
    assert [t.track_id for t in tracks][:2] == ["high/high.00000", "high/high.00001"]
    assert {t.genre for t in tracks} == {"low", "high", "mid"}


def test_nested_and_mixed_formats(tmp_path):
    import soundfile as sf

    from tests.conftest import tone

    (tmp_path / "jazz" / "album").mkdir(parents=True)
    sf.write(tmp_path / "jazz" / "album" / "a.flac", tone(440, 0.5), 8000)
    sf.write(tmp_path / "jazz" / "b.wav", tone(440, 0.5), 8000)
    (tmp_path / "jazz" / "notes.txt").write_text("not audio")
    assert [t.track_id for t in find_tracks(tmp_path)] == ["jazz/album/a", "jazz/b"]


def test_bad_roots(tmp_path):
    with pytest.raises(DataError, match="not found"):
        resolve_root(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio"):
        resolve_root(tmp_path / "empty")
    import soundfile as sf

    from tests.conftest import tone

    (tmp_path / "flat").mkdir()
    sf.write(tmp_path / "flat" / "x.wav", tone(440, 0.5), 8000)
    with pytest.raises(DataError, match="no genre sub-folders"):
        resolve_root(tmp_path / "flat")


def test_unknown_genre_filter(audio_tree):
    with pytest.raises(DataError, match="unknown genre"):
        find_tracks(audio_tree, ["polka"])


def test_parse_ratios():
    assert parse_ratios("70/20/10") == pytest.approx((0.7, 0.2, 0.1))
    assert parse_ratios("0.6,0.2,0.2") == pytest.approx((0.6, 0.2, 0.2))
    for bad in ("70/30", "a/b/c", "0/50/50"):
        with pytest.raises(DataError):
            parse_ratios(bad)


def test_stratified_split_is_seeded_and_stratified(tmp_path):
    tracks = find_tracks(write_tree(tmp_path, per_genre=10, seconds=0.2))
    a = stratified_split(tracks, (0.7, 0.2, 0.1), seed=1)
    b = stratified_split(tracks, (0.7, 0.2, 0.1), seed=1)
    c = stratified_split(tracks, (0.7, 0.2, 0.1), seed=2)
    assert a.assignment == b.assignment and a.assignment != c.assignment
    assert set(a.assignment) == {t.track_id for t in tracks}
    per = Counter((tid.split("/")[0], s) for tid, s in a.assignment.items())
    for g in ("low", "mid", "high"):
        assert (per[(g, "train")], per[(g, "valid")], per[(g, "test")]) == (7, 2, 1)


def test_small_genres_still_get_every_split(tmp_path):
    tracks = find_tracks(write_tree(tmp_path, per_genre=3, seconds=0.2))
    counts = Counter(stratified_split(tracks, (0.6, 0.2, 0.2), 0).assignment.values())
    assert counts == {"train": 3, "valid": 3, "test": 3}


def test_builtin_fault_filtered_lists():
    named, label = read_split_source("gtzan-filtered")
    c = Counter(named.values())
    assert (c["train"], c["valid"], c["test"]) == (443, 197, 290)
    assert named["blues/blues.00012"] == "test"


def test_split_file_reports_missing_and_unassigned(tmp_path):
    tracks = find_tracks(write_tree(tmp_path / "d", per_genre=3, seconds=0.2))
    f = tmp_path / "split.csv"
    f.write_text("track_id,split\nlow/low.00000.wav,train\nlow/low.00001,test\nlow/low.00099,valid\n")
    r = split_from_source(tracks, str(f))
    assert r.assignment == {"low/low.00000": "train", "low/low.00001": "test"}
    assert r.missing_on_disk == ["low/low.00099"]
    assert "low/low.00002" in r.unassigned


def test_split_file_with_unknown_genre(tmp_path):
    tracks = find_tracks(write_tree(tmp_path / "d", per_genre=2, seconds=0.2))
    f = tmp_path / "split.csv"
    f.write_text("track_id,split\npolka/polka.00000,train\n")
    with pytest.raises(DataError, match="genre"):
        split_from_source(tracks, str(f))


def test_split_folder_of_lists(tmp_path):
    tracks = find_tracks(write_tree(tmp_path / "d", per_genre=2, seconds=0.2))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_x.txt").write_text("low/low.00000.wav\nmid/mid.00000.wav\nhigh/high.00000.wav\n")
    (lists / "test_x.txt").write_text("low/low.00001.wav\n")
    r = split_from_source(tracks, str(lists))
    assert Counter(r.assignment.values()) == {"train": 3, "test": 1}


def test_a_track_in_two_split_lists_is_refused(tmp_path):
    tracks = find_tracks(write_tree(tmp_path / "d", per_genre=2, seconds=0.2))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("low/low.00000.wav\nmid/mid.00000.wav\n")
    (lists / "test.txt").write_text("low/low.00001.wav\nlow/low.00000\n")
    with pytest.raises(DataError, match="train.txt:1: track low/low.00000 is listed twice, for test and for train"):
        split_from_source(tracks, str(lists))


def test_negative_ratios_are_called_ratios(tmp_path):
    from genrekit.data_tools.pipeline import AugmentSettings, _decide_split

    tracks = find_tracks(write_tree(tmp_path / "d", per_genre=2, seconds=0.2))
    for ratios in ((-1, 2, 3), (70, -20, 50), (70, 30), (0, 50, 50), (float("nan"), 1, 1)):
        with pytest.raises(DataError, match="bad --ratios"):
            AugmentSettings(ratios=ratios)
    # --split and --ratios stay apart: a split that looks like ratios is a split file, not ratios
    with pytest.raises(DataError, match="split file not found: 60/20/20"):
        _decide_split(tracks, ["high", "low", "mid"], AugmentSettings(split="60/20/20"))
    got = _decide_split(tracks, ["high", "low", "mid"], AugmentSettings(ratios=(50, 0, 50)))
    assert got.source == "stratified 50/0/50, seed 0" and set(got.assignment.values()) == {"train", "test"}


def test_a_spreadsheet_export_with_bom_and_crlf_is_read(tmp_path):
    """Issue 27 #12: a split CSV saved by a spreadsheet (UTF-8 byte-order mark, CRLF line ends,
    padded header names) names the same tracks as a plain one."""
    tracks = find_tracks(write_tree(tmp_path / "d", per_genre=3, seconds=0.2))
    f = tmp_path / "split.csv"
    f.write_bytes("\ufefftrack_id, Split\r\nlow/low.00000.wav,train\r\nlow/low.00001,Test\r\n".encode("utf-8"))
    r = split_from_source(tracks, str(f))
    assert r.assignment == {"low/low.00000": "train", "low/low.00001": "test"}
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_bytes("\ufefflow/low.00000.wav\r\nmid/mid.00000.wav\r\n".encode("utf-8"))
    assert split_from_source(tracks, str(lists)).assignment == {"low/low.00000": "train", "mid/mid.00000": "train"}
