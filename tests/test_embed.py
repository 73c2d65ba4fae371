"""genrekit embed: per-window embeddings from a run or the musicnn backbone, .npy and CSV with start times."""

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import musicnn_features, one_error, tone, write_tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    from genrekit.cli import main

    tmp = tmp_path_factory.mktemp("embed")
    data = write_tree(tmp / "d", per_genre=4, seconds=7.0, sr=16000)
    musicnn_features(data, tmp / "f")
    assert main(["train", "--data", str(tmp / "f"), "--weights", "none", "--out", str(tmp / "run"), "--quiet"]) == 0
    return {"run": tmp / "run", "data": data}


def test_run_embeddings_are_the_track_models_windows(lr_run, tmp_path, capsys):
    """A folder with a bad file in it: one error line, the rest embedded; the .npy rows are the
    track model's per-window backbone outputs on predict's windows, the CSV the same with start times."""
    from genrekit.cli import main
    from genrekit.data_tools.audio import load_audio
    from genrekit.data_tools.features import extract
    from genrekit.models.track import window_embedder
    from genrekit.runs import Run

    music = tmp_path / "music"
    (music / "live").mkdir(parents=True)
    sf.write(music / "live" / "long.wav", tone(500.0, 10.0, 22050, seed=3), 22050, subtype="PCM_16")  # resampled
    sf.write(music / "b.wav", tone(900.0, 4.0, 16000, seed=4), 16000, subtype="PCM_16")
    (music / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    out = tmp_path / "emb"
    rc = main(["embed", str(music), "--model", str(lr_run["run"]), "--out", str(out)])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "broken.wav" in err[0] and err[0].startswith("genrekit: error:")
    assert "long.wav: 3 windows x 200" in captured.out  # the default recipe: the 200-unit penultimate layer
    run = Run(lr_run["run"])
    y = load_audio(music / "live" / "long.wav", sr=16000).y
    segs = extract(y, run.feature_config, "musicnn")
    want = np.asarray(window_embedder(run.model())(np.stack([f for _, f in segs])))
    got = np.load(out / "music" / "live" / "long.npy")
    assert got.shape == (3, 200) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    csv = np.loadtxt(out / "music" / "live" / "long.csv", delimiter=",", skiprows=1)
    header = (out / "music" / "live" / "long.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["start_s", "e0"] and len(header) == 201
    np.testing.assert_allclose(csv[:, 0], [0.0, 2.992, 5.984])
    np.testing.assert_allclose(csv[:, 1:], want, rtol=1e-5, atol=1e-5)
    assert (out / "music" / "b.npy").is_file() and not list(out.rglob("broken*"))
    assert not list(out.rglob(".*tmp*"))

    # a rerun replaces its own outputs; a file of the user's in --out is never replaced
    (out / "music" / "b.npy").unlink()
    (out / "music" / "b.npy").write_bytes(b"my own")
    np.save(out / "music" / "live" / "long.npy", np.zeros((1, 2), np.float32))  # genrekit's own: rewritten
    rc = main(["embed", str(music), "--model", str(lr_run["run"]), "--out", str(out), "--format", "npy"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 2, err  # the user's b.npy and broken.wav
    assert any("b.npy exists and genrekit embed did not write it" in e for e in err)
    assert (out / "music" / "b.npy").read_bytes() == b"my own"
    np.testing.assert_allclose(np.load(out / "music" / "live" / "long.npy"), want, rtol=1e-5, atol=1e-5)


def test_backbone_embeddings_and_refusals(tmp_path, capsys):
    import keras

    from genrekit.cli import main
    from genrekit.data_tools.audio import load_audio
    from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig, extract
    from genrekit.models.musicnn import N_FRAMES, N_MELS, embedding_model

    song = tmp_path / "song.flac"
    sf.write(song, tone(300.0, 6.5, 44100, seed=1), 44100)
    out = tmp_path / "e"
    keras.utils.set_random_seed(7)  # random weights (no download), made the same twice
    assert main(["embed", str(song), "--backbone", "musicnn", "--weights", "none", "--format", "csv",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["genrekit_embed.json", "song.csv"]
    rows = (out / "song.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["start_s", "e0"] and len(rows[0].split(",")) == 201 and len(rows) == 3
    keras.utils.set_random_seed(7)
    ref = embedding_model((N_FRAMES, N_MELS), weights="none")
    x = np.stack([f for _, f in extract(load_audio(song, sr=16000).y, FeatureConfig(**MUSICNN_FEATURES), "musicnn")])
    got = np.loadtxt(out / "song.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(got[:, 0], [0.0, 2.992])
    np.testing.assert_allclose(got[:, 1:], np.asarray(ref(x)), rtol=1e-4, atol=1e-5)

    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.txt").write_text("x")
    for args, says in [
        (["--backbone", "musicnn", "--weights", "none", "--out", str(user)], "did not make"),
        (["--out", str(tmp_path / "n")], "either --model"),
        (["--backbone", "vggish", "--out", str(tmp_path / "n")], "unknown --backbone"),
        (["--backbone", "musicnn", "--weights", "none", "--format", "parquet", "--out", str(tmp_path / "n")],
         "unknown --format"),
    ]:
        assert says in one_error(capsys, main(["embed", str(song), *args]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "song.flac", "user"]
    assert (user / "thesis.txt").read_text() == "x"
    # nothing embeddable: nothing created
    assert "file not found" in one_error(capsys, main(["embed", str(tmp_path / "nope.wav"), "--backbone", "musicnn",
                                                        "--weights", "none", "--out", str(tmp_path / "n")]))
    assert not (tmp_path / "n").exists()
