"""fetch-spotify against a real HTTP server on loopback: the Web API client and the preview
resolvers talk to it over HTTP; nothing is mocked."""
import errno

import pytest
import soundfile as sf

import genrekit.data_tools.spotify as spotify
from genrekit.cli import main
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import read_csv
from genrekit.data_tools.spotify import (
    NAME_MAX_BYTES,
    FetchOptions,
    fetch_spotify,
    safe_name,
    track_file,
)
from tests.spotify_server import FakeApis, _track, serve, sid


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


def test_safe_names_keep_letters_of_any_script_and_drop_controls():
    assert safe_name("坂本龍一 — 戦場のメリークリスマス") == "坂本龍一 — 戦場のメリークリスマス"
    assert safe_name("Björk / Sigur Rós") == "Björk _ Sigur Rós"
    s = safe_name("a\x85b\u202ecod.exe\ud800c\u2028d")  # C1 control, bidi override, lone surrogate, separator
    assert s == "a_b_cod.exe_c_d"
    s.encode("utf-8")  # a name that can be written (no surrogates)
    assert len(safe_name("語" * 200, 200, 100).encode("utf-8")) <= 100


def test_track_file_names_fit_255_bytes_and_keep_the_id():
    tid = sid("tZ")
    for artist, title in (("🎸" * 100, "音楽" * 300), ("a" * 500, "b" * 500), ("", ""), ("é" * 90, "ü" * 90)):
        rel = track_file("rock", artist, title, tid)
        genre, name = rel.split("/")
        assert genre == "rock" and len(name.encode("utf-8")) <= NAME_MAX_BYTES, (name, len(name.encode()))
        assert name.endswith(f" [{tid}].wav")
    assert "音楽" in track_file("rock", "x", "音楽" * 300, tid)
    # short ASCII names are as before (a set fetched by an older genrekit resumes)
    assert track_file("blues", "Ann Lee", "Slow Train", tid) == f"blues/Ann Lee - Slow Train [{tid}].wav"


def _world(apis):
    b = apis.base
    apis.extra_playlists = {"world": [{"id": sid("plW1"), "name": "World"}]}
    apis.extra_items = {sid("plW1"): [
        _track("tW1", "夜の音楽" * 40, "坂本 龍一 🎹" * 10, "", f"{b}/previews/p1.mp3"),
        _track("tW2", "Blocked", "Bob", "", f"{b}/previews/p2.mp3"),
        _track("tW3", "Fine", "Jo", "", f"{b}/previews/p5.mp3"),
    ]}


def test_long_wide_names_fit_and_an_unwritable_track_is_one_skipped_track(apis, tmp_path, capsys):
    """Issue 27 #6: a 300-byte CJK name is cut to 255 bytes (it used to end the fetch with
    ENAMETOOLONG); a track whose file cannot be written is one failed track, reported, and the
    fetch goes on."""
    _world(apis)
    out = tmp_path / "w"
    blocked = out / "world" / f"Bob - Blocked [{sid('tW2')}].wav"
    blocked.mkdir(parents=True)  # a folder where the track's file goes: writing it fails (EISDIR)
    assert main(["fetch-spotify", "--out", str(out), "--genres", "world", "--per-genre", "10",
                 "--preview-source", "spotify"]) == 0
    err = capsys.readouterr().err
    rows = {r["track_id"]: r for r in read_csv(out / "spotify_manifest.csv")}
    wide = rows[sid("tW1")]
    assert wide["status"] == "ok" and (out / wide["file"]).is_file()
    name = wide["file"].split("/")[1]
    assert len(name.encode("utf-8")) <= NAME_MAX_BYTES and sid("tW1") in name and "夜の音楽" in name
    assert name.startswith("坂本 龍一 🎹")
    assert rows[sid("tW3")]["status"] == "ok"
    assert rows[sid("tW2")]["status"].startswith("failed: cannot write") and not rows[sid("tW2")]["file"]
    assert "Blocked" in err
    assert blocked.is_dir() and not any(blocked.iterdir())  # what was there is left as it was
    report = (out / "fetch_report.md").read_text()
    assert "| world | 2 | 2 | 0 | 1 |" in report and "Blocked" in report


def test_a_name_the_file_system_refuses_falls_back_to_the_track_id(apis, tmp_path, monkeypatch):
    _world(apis)
    real = spotify.write_atomic

    def ascii_only(out, rel, data):  # a file system that takes no non-ASCII names
        if rel.endswith(".wav") and not rel.isascii():
            raise OSError(errno.EILSEQ, "Invalid or incomplete multibyte or wide character", rel)
        return real(out, rel, data)

    monkeypatch.setattr(spotify, "write_atomic", ascii_only)
    out = tmp_path / "w"
    fetch_spotify(FetchOptions(out=str(out), genres=["world"], per_genre=10, preview_sources=("spotify",),
                               log=lambda m: None))
    rows = {r["track_id"]: r for r in read_csv(out / "spotify_manifest.csv")}
    assert rows[sid("tW1")]["file"] == f"world/{sid('tW1')}.wav" and rows[sid("tW1")]["status"] == "ok"
    assert rows[sid("tW2")]["file"] == f"world/Bob - Blocked [{sid('tW2')}].wav"


def test_a_preview_service_answer_nested_too_deeply_is_no_preview(apis, tmp_path):
    """Issue 27 #10: Deezer's or iTunes' JSON nested 100,000 deep (RecursionError in json) is an
    answer with nothing in it, not the end of the fetch."""
    nested = b"[" * 100_000 + b"]" * 100_000
    for path in ("/deezer/search", "/itunes/search", "/deezer/track/isrc:USAAA0000002"):
        apis.scripted[path] = (200, nested, {})
    out = tmp_path / "n"
    assert main(["fetch-spotify", "--out", str(out), "--genres", "blues", "--per-genre", "10"]) == 0
    st = {r["track_id"]: r["status"] for r in read_csv(out / "spotify_manifest.csv")}
    assert st[sid("t1")] == "ok" and st[sid("t2")] == "no audio" and st[sid("t9")] == "no audio"
