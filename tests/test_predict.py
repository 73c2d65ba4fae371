"""predict on long files (streamed block by block, bounded memory, same result as whole-file
decoding), folders as input, and the streaming decoder itself."""
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from genrekit import predict as P
from genrekit import prediction
from genrekit.data_tools.audio import load_audio, stream_audio
from genrekit.errors import UserError
from genrekit.runs import Run


def _music(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f = 300 + 250 * np.sin(2 * np.pi * t / 7.0)  # a slow glide, so that windows differ
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.02 * np.sin(2 * np.pi * 1900 * t)).astype(np.float32)


def test_stream_audio_blocks_are_slices_of_the_whole_waveform(tmp_path):
    y = _music(23.0, 8000)
    sf.write(tmp_path / "a.wav", y, 8000, subtype="FLOAT")
    whole = load_audio(tmp_path / "a.wav", 8000).y
    block, advance = 8000 * 7, 8000 * 5  # overlapping blocks
    blocks = list(stream_audio(tmp_path / "a.wav", 8000, block, advance, read_seconds=3.0))
    assert len(blocks) == 5 and len(blocks[-1]) == len(whole) - 4 * advance
    for i, b in enumerate(blocks):
        np.testing.assert_array_equal(b, whole[i * advance:i * advance + block])
    gaps = list(stream_audio(tmp_path / "a.wav", 8000, 8000, 8000 * 3))  # blocks with gaps between them
    np.testing.assert_array_equal(gaps[2], whole[6 * 8000:7 * 8000])


def test_stream_audio_resamples_like_the_whole_file_decoder(tmp_path):
    y = _music(12.0, 16000)
    sf.write(tmp_path / "a.wav", y, 16000, subtype="FLOAT")
    whole = load_audio(tmp_path / "a.wav", 8000).y
    streamed = np.concatenate(list(stream_audio(tmp_path / "a.wav", 8000, 8000 * 2, 8000 * 2, read_seconds=1.5)))
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    np.testing.assert_allclose(streamed[100:n - 100], whole[100:n - 100], atol=1e-3)


def test_stream_audio_memory_is_one_block_not_the_file(tmp_path):
    sr = 8000
    y = np.zeros(sr * 600, dtype=np.float32)  # 10 minutes: 19 MB as float32 when decoded whole
    y[::97] = 0.25
    sf.write(tmp_path / "long.wav", y, sr, subtype="PCM_16")
    del y
    tracemalloc.start()
    try:
        n = sum(len(b) for b in stream_audio(tmp_path / "long.wav", sr, sr * 30, sr * 30, read_seconds=10.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == sr * 600
    assert peak < 4_000_000, peak  # about a block (30 s = 1 MB) and a read (10 s), far below 19 MB


@pytest.fixture(scope="module")
def mfcc_run(tiny_features, tmp_path_factory):
    from genrekit.train import TrainOptions, train

    out = tmp_path_factory.mktemp("predict") / "fcnn"
    return Run(train(TrainOptions(data=str(tiny_features), arch="fcnn", out=str(out), epochs=1, batch_size=8,
                                  verbose=0)).run)


@pytest.mark.slow
def test_a_streamed_long_file_gets_the_whole_file_answer(mfcc_run, tmp_path, monkeypatch):
    sr = mfcc_run.feature_config.sr
    sf.write(tmp_path / "song.wav", _music(21.3, sr), sr, subtype="FLOAT")
    whole = P.predict_file(tmp_path / "song.wav", mfcc_run)
    calls = []
    real = P.stream_audio
    monkeypatch.setattr(P, "stream_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(P, "STREAM_ABOVE_SECONDS", 5.0)
    monkeypatch.setattr(P, "BLOCK_SECONDS", 4.0)
    streamed = P.predict_file(tmp_path / "song.wav", mfcc_run)
    assert calls  # it really went block by block
    # the blocks overlap so that the 1 s windows every 0.5 s are exactly those of the whole track
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)
    win, hop = P.window_geometry(mfcc_run)
    assert (win, hop) == (sr, sr // 2)


@pytest.mark.slow
def test_silent_windows_are_left_out_and_silence_is_refused(mfcc_run, tmp_path):
    from genrekit.data_tools.errors import AudioDecodeError

    sr = mfcc_run.feature_config.sr
    music = _music(4.0, sr)
    sf.write(tmp_path / "m.wav", music, sr, subtype="FLOAT")
    gap = np.concatenate([music[: 2 * sr], np.zeros(6 * sr, dtype=np.float32), music[2 * sr:]])
    sf.write(tmp_path / "gap.wav", gap, sr, subtype="FLOAT")
    x_music = P._audible_windows(music, mfcc_run)
    x_gap = P._audible_windows(gap, mfcc_run)
    # the 6 s of digital silence add no window of their own
    all_gap = P.features_for(gap, mfcc_run)
    assert len(x_gap) < len(all_gap) and len(x_gap) <= len(x_music) + 2
    sf.write(tmp_path / "quiet.wav", np.full(3 * sr, 1e-5, dtype=np.float32), sr, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="silent"):
        P.predict_file(tmp_path / "quiet.wav", mfcc_run)


def test_folders_expand_to_their_audio_files(tmp_path):
    (tmp_path / "m" / "b").mkdir(parents=True)
    (tmp_path / "m" / ".hidden").mkdir()
    for p in ("m/b/2.wav", "m/a.MP3", "m/notes.txt", "m/.hidden/x.wav", "m/.y.wav"):
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "m" / "b", tmp_path / "m" / "loop")
    (tmp_path / "empty").mkdir()
    got = P.expand_inputs([tmp_path / "m", tmp_path / "empty", tmp_path / "none.wav"])
    assert got[:2] == [(str(tmp_path / "m" / "a.MP3"), None), (str(tmp_path / "m" / "b" / "2.wav"), None)]
    assert got[2][0] == str(tmp_path / "empty") and "no audio" in got[2][1]
    assert got[3] == (str(tmp_path / "none.wav"), "file not found") and len(got) == 4


@pytest.mark.slow
def test_a_file_shorter_than_one_window_is_filled_and_said(mfcc_run, tmp_path, monkeypatch, capsys):
    sr = mfcc_run.feature_config.sr
    sf.write(tmp_path / "short.wav", _music(0.6, sr), sr, subtype="FLOAT")
    monkeypatch.setattr(P, "MIN_SECONDS", 0.5)
    res = P.predict_files([str(tmp_path / "short.wav")], mfcc_run.path)
    assert res[0]["padded_s"] == pytest.approx(0.4, abs=0.01) and len(res[0]["top"]) == 3
    assert "0.4 s filled" in P.format_table(res)
    sf.write(tmp_path / "long.wav", _music(3.0, sr), sr, subtype="FLOAT")
    assert "padded_s" not in P.predict_files([str(tmp_path / "long.wav")], mfcc_run.path)[0]


# -- --hop, --timeline, --csv, folders with a bad file (issue 15) ---------------------------------

def _folder_with_a_bad_file(tmp_path, sr):
    d = tmp_path / "music"
    (d / "sub").mkdir(parents=True)
    sf.write(d / "a.wav", _music(3.0, sr), sr, subtype="FLOAT")
    sf.write(d / "sub" / "b.wav", _music(4.0, sr)[::-1].copy(), sr, subtype="FLOAT")
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00 not really a wave file")
    return d


@pytest.mark.slow
def test_cli_folder_with_a_bad_file_streams_a_table_and_one_error_line(mfcc_run, tmp_path, capsys):
    from genrekit.cli import main

    d = _folder_with_a_bad_file(tmp_path, mfcc_run.feature_config.sr)
    csv_path = tmp_path / "out.csv"
    assert main(["predict", str(d), "--model", str(mfcc_run.path), "--csv", str(csv_path), "--no-progress"]) == 2
    cap = capsys.readouterr()
    out = cap.out.strip().splitlines()
    err = [line for line in cap.err.strip().splitlines() if line.startswith("genrekit:")]
    assert [line.split(":")[0] for line in out] == [str(d / "a.wav"), str(d / "sub" / "b.wav")]
    assert len(err) == 1 and err[0].startswith(f"genrekit: error: {d / 'broken.wav'}: ")
    rows = list(__import__("csv").DictReader(csv_path.open()))
    assert [r["file"] for r in rows] == [str(d / "a.wav"), str(d / "broken.wav"), str(d / "sub" / "b.wav")]
    assert rows[1]["error"] and not rows[1]["top1"]
    assert rows[0]["genre"] == rows[0]["top1"] and float(rows[0]["p1"]) >= float(rows[0]["p2"])
    # the table is the same as predict_files gives, in the same order
    ref = P.predict_files([str(d)], mfcc_run.path)
    assert [P.format_line(r) for r in ref if "error" not in r] == out
    # a file the user made is never overwritten; a genrekit table is replaced
    mine = tmp_path / "mine.csv"
    mine.write_text("name,score\nx,1\n")
    assert main(["predict", str(d / "a.wav"), "--model", str(mfcc_run.path), "--csv", str(mine)]) == 2
    assert mine.read_text() == "name,score\nx,1\n"
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("genrekit: error: --csv")
    assert main(["predict", str(d / "a.wav"), "--model", str(mfcc_run.path), "--csv", str(csv_path)]) == 0
    assert len(list(__import__("csv").DictReader(csv_path.open()))) == 1
    assert not [p for p in tmp_path.iterdir() if "genrekit-tmp" in p.name]


@pytest.mark.slow
def test_the_progress_bar_is_on_stderr_only_when_asked(mfcc_run, tmp_path, capsys):
    from genrekit.cli import main

    d = _folder_with_a_bad_file(tmp_path, mfcc_run.feature_config.sr)
    (d / "broken.wav").unlink()
    assert main(["predict", str(d), "--model", str(mfcc_run.path), "--progress"]) == 0
    cap = capsys.readouterr()
    assert "predict" in cap.err and "2/2" in cap.err and "2/2" not in cap.out
    assert main(["predict", str(d), "--model", str(mfcc_run.path)]) == 0  # stderr is not a terminal here
    assert capsys.readouterr().err.strip() == ""


@pytest.mark.slow
def test_timeline_csv_and_plot_with_a_hop(mfcc_run, tmp_path):
    sr = mfcc_run.feature_config.sr
    sf.write(tmp_path / "song.wav", _music(6.0, sr), sr, subtype="FLOAT")
    [r] = P.predict_files([str(tmp_path / "song.wav")], mfcc_run.path, timeline_dir=tmp_path / "tl")
    lines = (tmp_path / "tl" / "song.timeline.csv").read_text().splitlines()
    head, body = lines[0].split(","), [x.split(",") for x in lines[1:]]
    assert head == ["start_s", "end_s", "genre", *mfcc_run.labels]
    # the run's windows: 1 s every 0.5 s over 6 s
    assert [float(b[0]) for b in body] == pytest.approx([0.5 * i for i in range(11)])
    assert all(float(b[1]) - float(b[0]) == pytest.approx(1.0) for b in body)
    p = np.array([[float(v) for v in b[3:]] for b in body])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-3)
    assert [b[2] for b in body] == [mfcc_run.labels[i] for i in p.argmax(1)]
    # the track's answer is the (calibrated) mean of the same windows
    from genrekit.evaluation.calibration import apply_temperature

    raw = P.predict_file(tmp_path / "song.wav", mfcc_run)
    assert r["top"][0]["probability"] == pytest.approx(float(apply_temperature(raw, mfcc_run.temperature).max()),
                                                       abs=1e-4)
    png = tmp_path / "tl" / "song.timeline.png"
    assert r["timeline"] == [str(tmp_path / "tl" / "song.timeline.csv"), str(png)] and png.stat().st_size > 5000
    # --hop 2: windows every 2 s; the same folder is reused (genrekit's own files are replaced)
    P.predict_files([str(tmp_path / "song.wav")], mfcc_run.path, hop_s=2.0, timeline_dir=tmp_path / "tl")
    body = [x.split(",") for x in (tmp_path / "tl" / "song.timeline.csv").read_text().splitlines()[1:]]
    assert [float(b[0]) for b in body] == pytest.approx([0.0, 2.0, 4.0])


@pytest.mark.slow
def test_timeline_and_hop_refusals_create_nothing(mfcc_run, tmp_path):
    sr = mfcc_run.feature_config.sr
    sf.write(tmp_path / "song.wav", _music(3.0, sr), sr, subtype="FLOAT")
    tl = tmp_path / "tl"
    tl.mkdir()
    (tl / "song.timeline.csv").write_text("my,own,table\n")
    with pytest.raises(UserError, match="not a genrekit timeline"):
        P.predict_files([str(tmp_path / "song.wav")], mfcc_run.path, timeline_dir=tl)
    assert (tl / "song.timeline.csv").read_text() == "my,own,table\n" and len(list(tl.iterdir())) == 1
    (tl / "song.timeline.csv").unlink()
    (tl / "song.timeline.png").write_bytes(b"a user's picture")
    with pytest.raises(UserError, match="not written by genrekit"):
        P.predict_files([str(tmp_path / "song.wav")], mfcc_run.path, timeline_dir=tl)
    for bad in (0.0, -1.0, float("nan"), 1e9):
        with pytest.raises(UserError, match="--hop"):
            P.predict_files([str(tmp_path / "song.wav")], mfcc_run.path, hop_s=bad)
    with pytest.raises(UserError, match="not a folder"):
        P.predict_files([str(tmp_path / "song.wav")], mfcc_run.path, timeline_dir=tmp_path / "song.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav", "tl"]


def test_two_files_with_one_name_get_two_timelines(tmp_path):
    t = P.timeline_targets(tmp_path / "tl", ["a/x.wav", "b/x.mp3", "c/y.wav"])
    assert [c.name for c, _ in t.values()] == ["x.timeline.csv", "x-2.timeline.csv", "y.timeline.csv"]


@pytest.mark.slow
def test_a_long_hop_bounded_block_matches_the_whole_file(mfcc_run, tmp_path, monkeypatch):
    """A short --hop makes many windows: the file is then analysed in blocks of at most
    MAX_BLOCK_WINDOWS windows, with the same answer as one pass."""
    sr = mfcc_run.feature_config.sr
    sf.write(tmp_path / "song.wav", _music(9.0, sr), sr, subtype="FLOAT")
    whole = P.predict_file(tmp_path / "song.wav", mfcc_run, hop_s=0.25)
    monkeypatch.setattr(P, "MAX_BLOCK_WINDOWS", 7)
    blocks = list(P._blocks(tmp_path / "song.wav", mfcc_run, 0.25))
    assert len(blocks) > 3 and all(b[1] for b in blocks)
    np.testing.assert_allclose(P.predict_file(tmp_path / "song.wav", mfcc_run, hop_s=0.25), whole,
                               rtol=1e-4, atol=1e-5)


# -- batched folders (issue 16) -------------------------------------------------------------------

def _folder_of_tracks(tmp_path, sr):
    """Six short tracks in order, the third not audio at all and the fifth silent."""
    d = tmp_path / "tracks"
    d.mkdir()
    for i in range(6):
        name = d / f"t{i}.wav"
        if i == 2:
            name.write_bytes(b"RIFF\x00\x00 not really a wave file")
        elif i == 4:
            sf.write(name, np.zeros(int(3.0 * sr), np.float32), sr, subtype="FLOAT")
        else:
            y = _music(3.0 + i, sr)
            sf.write(name, np.roll(y, 977 * i) * (0.5 + 0.1 * i), sr, subtype="FLOAT")
    return d


@pytest.mark.slow
def test_a_batched_folder_gives_the_per_file_results_in_order(mfcc_run, tmp_path, monkeypatch):
    d = _folder_of_tracks(tmp_path, mfcc_run.feature_config.sr)
    monkeypatch.setattr(P, "BATCH_FILES", 2)  # several batches, one of them holding the bad file
    one = list(P.iter_predictions([str(d)], mfcc_run, top_k=5, batch=False))
    many = list(P.iter_predictions([str(d)], mfcc_run, top_k=5))
    assert [r["file"] for r in many] == [str(d / f"t{i}.wav") for i in range(6)]
    assert [("error" in r) for r in many] == [False, False, True, False, True, False]
    assert many[2]["error"] == one[2]["error"] and many[4]["error"] == one[4]["error"]
    for a, b in zip(one, many, strict=True):
        assert a.keys() == b.keys()
        for ta, tb in zip(a.get("top", []), b.get("top", []), strict=True):
            assert ta["probability"] == pytest.approx(tb["probability"], abs=1e-4)  # rounded to 4 places
    # the unrounded probabilities: the model applied to all files' windows at once = file by file
    good = [d / f"t{i}.wav" for i in (0, 1, 3, 5)]
    xs = [P._whole_file_windows(f, mfcc_run, None, {}) for f in good]
    batched = P.batch_probabilities(mfcc_run.model(), xs)
    assert len({len(x) for x in xs}) > 1  # files of different lengths
    for f, (p, pooled) in zip(good, batched, strict=True):
        np.testing.assert_allclose(p, P.predict_file(f, mfcc_run), atol=1e-5)
        assert pooled is None


@pytest.mark.slow
def test_blas_runs_on_one_thread_while_predicting_and_is_given_back(mfcc_run, tmp_path):
    """OpenBLAS's spinning threads took the cores the model call and the decoding workers need:
    predict limits NumPy's BLAS to one thread while it iterates, in both modes, and only then."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    np.ones((64, 64)) @ np.ones((64, 64))  # NumPy's BLAS loaded
    d = _folder_of_tracks(tmp_path, mfcc_run.feature_config.sr)
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == {2}
        for batch in (False, True):
            seen = []
            for _ in P.iter_predictions([str(d)], mfcc_run, batch=batch):
                seen.append(blas_threads())
            assert len(seen) == 6 and all(s == {1} for s in seen)
            assert blas_threads() == {2}  # given back when the iteration ends
        it = iter(P.iter_predictions([str(d)], mfcc_run))
        next(it)
        assert blas_threads() == {1}
        it.close()  # ... or is abandoned
        assert blas_threads() == {2}


def test_a_track_model_batched_over_files_equals_file_by_file():
    """The default recipe's model (random backbone weights: offline) on three tracks' windows at
    once: each track's probabilities and pooled embedding as when it is analysed alone."""
    from genrekit.models import build_model

    m = build_model("musicnn_lr", (187, 96), 3, weights="none", embedding="pooled")
    rng = np.random.default_rng(5)
    m.get_layer("predictions").set_weights([rng.normal(size=(3012, 3)).astype(np.float32) * 0.01,
                                            np.zeros(3, np.float32)])
    xs = [rng.normal(size=(n, 187, 96)).astype(np.float32) for n in (3, prediction.PREDICT_EMBED_STEP + 2, 1)]
    batched = P.batch_probabilities(m, xs, pooled=True)
    for x, (p, pooled) in zip(xs, batched, strict=True):
        p1, emb = prediction.track_block(m, x)
        np.testing.assert_allclose(p, p1, atol=1e-5)
        np.testing.assert_allclose(p, np.asarray(m(x[None], training=False))[0], atol=1e-5)
        stats = prediction.PooledStats(m.get_layer("track_pooling").stats)
        stats.add(emb)
        np.testing.assert_allclose(pooled, stats.pooled(), atol=1e-5)


def _check_declared(r: dict) -> None:
    """``r`` holds only keys that ``Prediction`` declares, in its order, of the declared types."""
    import typing

    hints = typing.get_type_hints(P.Prediction)
    order = list(hints)
    assert list(r) == sorted(r, key=order.index), list(r)
    plain = {"float": (float, int), "str": str, "bool": bool}
    for key, v in r.items():
        t = hints[key]
        want = plain.get(getattr(typing.get_origin(t) or t, "__name__", ""), list)
        assert isinstance(v, want), (key, v)
    if "error" in r:
        assert set(r) <= {"file", "padded_s", "error"}
    for t in r.get("top", []):
        assert set(t) == set(typing.get_type_hints(P.GenreScore))


def test_every_result_holds_the_declared_prediction_fields(mfcc_run, tmp_path):
    d = _folder_with_a_bad_file(tmp_path, mfcc_run.feature_config.sr)
    results = P.predict_files([str(d)], mfcc_run.path, reject=True, timeline_dir=tmp_path / "tl") + \
        P.predict_files([str(d)], mfcc_run.path, top_k=2)
    assert {("error" in r) for r in results} == {True, False}
    assert any("timeline" in r for r in results) and any("rejected" in r for r in results)
    for r in results:
        _check_declared(r)
