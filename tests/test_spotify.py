"""fetch-spotify against a real HTTP server on loopback: the Web API client and the preview
resolvers talk to it over HTTP; nothing is mocked."""
import errno

import pytest
import soundfile as sf

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import read_csv
from genrekit.data_tools.spotify import FetchOptions, fetch_spotify, safe_name
from genrekit.cli import main
from tests.spotify_server import FakeApis, serve, sid


@pytest.fixture
def apis(monkeypatch):
    a = FakeApis()
    httpd = serve(a)
    monkeypatch.setenv("GENREKIT_SPOTIFY_API", a.base + "/v1/")
    monkeypatch.setenv("GENREKIT_SPOTIFY_TOKEN_URL", a.base + "/api/token")
    monkeypatch.setenv("GENREKIT_DEEZER_API", a.base + "/deezer/")
    monkeypatch.setenv("GENREKIT_ITUNES_API", a.base + "/itunes/")
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "my-client-id")
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", a.accept_secret)
    yield a
    httpd.shutdown()


def test_fetch_builds_a_clean_set(apis, tmp_path, capsys):
    out = tmp_path / "spot"
    rc = main(["fetch-spotify", "--out", str(out), "--genres", "blues,jazz,polka", "--per-genre", "10"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "polka" in err and "no playlists" in err
    import base64

    basic = base64.b64encode(f"my-client-id:{apis.accept_secret}".encode()).decode()
    assert apis.accept_secret not in err and "my-client-id" not in err and basic not in err and "Bearer" not in err
    rows = {(r["genre"], r["track_id"]): r for r in read_csv(out / "spotify_manifest.csv")}
    st = {k: (r["status"], r["preview_source"]) for k, r in rows.items()}
    assert st[("blues", sid("t1"))] == ("ok", "spotify")
    assert st[("blues", sid("t2"))] == ("ok", "deezer")  # missing preview resolved by ISRC
    assert st[("blues", sid("t3"))][0] == "dropped: duplicate"  # same ISRC and audio as t1
    assert st[("blues", sid("t4"))][0] == st[("jazz", sid("t4"))][0] == "dropped: in several genres"
    assert st[("blues", sid("t5"))] == ("ok", "itunes")  # Spotify's preview was not audio
    assert st[("blues", sid("t9"))] == ("no audio", "")
    assert st[("jazz", sid("t6"))] == ("ok", "spotify") and st[("jazz", sid("t7"))] == ("ok", "itunes")
    # the clean set is a folder-per-genre tree of 22,050 Hz mono WAVs; dropped files are aside
    kept = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav"))
    assert len(kept) == 5 and all(p.startswith(("blues/", "jazz/")) for p in kept)
    info = sf.info(out / kept[0])
    assert info.samplerate == 22050 and info.channels == 1
    assert len(list((out / ".dropped").rglob("*.wav"))) == 3
    # the faults were met and retried over HTTP
    assert apis.hits["/v1/search"] >= 4 and apis.faults == {"search_429": 0, "items_500": 0, "preview_429": 0}
    report = (out / "fetch_report.md").read_text()
    assert "| blues | 5 | 3 | 1 | 0 |" in report and "| jazz | 3 | 2 | 0 | 0 |" in report
    # credentials never written
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".csv", ".md", ".json"):
            text = p.read_text()
            assert apis.accept_secret not in text and "my-client-id" not in text
    # a rerun downloads nothing again
    before = sum(v for k, v in apis.hits.items() if k.startswith("/previews/"))
    assert main(["fetch-spotify", "--out", str(out), "--genres", "blues,jazz", "--per-genre", "10"]) == 0
    assert sum(v for k, v in apis.hits.items() if k.startswith("/previews/")) == before
    assert len(list(out.glob("*/*.wav"))) == 5


def test_missing_and_rejected_credentials(apis, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "wrong")
    assert main(["fetch-spotify", "--out", str(tmp_path / "a"), "--genres", "blues"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genrekit: error:") and "rejected" in err and "\n" not in err
    assert not (tmp_path / "a").exists()  # refused before anything was created
    monkeypatch.delenv("SPOTIPY_CLIENT_ID")
    assert main(["fetch-spotify", "--out", str(tmp_path / "b"), "--genres", "blues"]) == 2
    assert "SPOTIPY_CLIENT_ID" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_full_disk_keeps_what_was_fetched(apis, tmp_path, monkeypatch):
    import genrekit.data_tools.spotify as spotify

    real = spotify.write_atomic
    calls = {"n": 0}

    def flaky(out, rel, data):
        calls["n"] += rel.endswith(".wav")
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out, rel, data)

    monkeypatch.setattr(spotify, "write_atomic", flaky)
    out = tmp_path / "full"
    with pytest.raises(DataError, match="disk full"):
        fetch_spotify(FetchOptions(out=str(out), genres=["blues"], per_genre=10, log=lambda m: None))
    rows = read_csv(out / "spotify_manifest.csv")
    assert [r["track_id"] for r in rows if r["file"]] == [sid("t1")]
    assert (out / rows[0]["file"]).is_file()


def test_safe_names():
    for evil in ("../../etc/passwd", "a/b\\c", "..", "con:tr\x00ol", ""):
        s = safe_name(evil)
        assert "/" not in s and "\\" not in s and ".." not in s and s not in ("", ".")
