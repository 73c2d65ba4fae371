"""fetch-spotify against a hostile network (loopback servers only): traversal ids, a `next` link
to another host, preview redirects to file:// and in a loop, bodies over the size cap, trickled
bodies and headers, lying Content-Length. Each bad track is one skipped, reported track; the rest
is fetched; the token never leaves the API host; nothing is written outside --out."""
import os

import pytest

from genrekit.cli import main
from genrekit.data_tools.fsio import read_csv
from genrekit.data_tools.spotify import (
    TMP_DIR,
    FetchOptions,
    fetch_spotify,
    remove_stale_temporaries,
)
from genrekit.data_tools.spotify_client import Http, Refused, SpotifyApi
from tests.spotify_server import FakeApis, _track, serve, sid


@pytest.fixture
def apis(monkeypatch):
    a, foreign = FakeApis(), FakeApis()
    httpd, httpd2 = serve(a), serve(foreign)
    a.foreign_base = foreign.base
    a.faults = {"search_429": 0, "items_500": 0, "preview_429": 0}
    monkeypatch.setenv("GENREKIT_SPOTIFY_API", a.base + "/v1/")
    monkeypatch.setenv("GENREKIT_SPOTIFY_TOKEN_URL", a.base + "/api/token")
    monkeypatch.setenv("GENREKIT_DEEZER_API", a.base + "/deezer/")
    monkeypatch.setenv("GENREKIT_ITUNES_API", a.base + "/itunes/")
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "my-client-id")
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", a.accept_secret)
    b, h = a.base, a.base + "/hostile/"
    a.extra_playlists = {"rock": [{"id": sid("plR1"), "name": "Rock"}, {"id": "../../pl", "name": "bad id"},
                                  {"id": sid("plR2"), "name": "Rock Two"}]}
    a.extra_items = {
        sid("plR1"): [
            _track("../../../x", "Traversal", "Evil", "", f"{b}/previews/p2.mp3"),
            _track("t1/../../yyyyyyyyyyyyyy", "Traversal Two", "Evil", "", f"{b}/previews/p2.mp3"),
            _track("tA", "To File", "Ann", "", h + "to-file"),
            _track("tB", "File Url", "Bob", "", "file:///etc/passwd"),
            _track("tC", "Elsewhere", "Cat", "", h + "to-foreign"),
            _track("tD", "Big Declared", "Dan", "", h + "big-declared"),
            _track("tE", "Big Stream", "Eve", "", h + "big-stream"),
            _track("tF", "Loop", "Fox", "", h + "loop"),
            _track("tG", "Trickle", "Gil", "", h + "trickle"),
            _track("tH", "Liar Close", "Hal", "", h + "liar-close"),
            _track("tI", "Liar Open", "Ivy", "", h + "liar-open"),
            _track("tK", "Slow Headers", "Kim", "", h + "slow-headers"),
            _track("tJ", "Fine", "Jo", "", f"{b}/previews/p7.mp3"),
        ],
        # first page tL, tM; its `next` points at another host: refused, tN is never fetched
        sid("plR2"): [_track("tL", "Lemon", "Lu", "", f"{b}/previews/p6.mp3"),
                      _track("tM", "Mango", "Mo", "", f"{b}/previews/p5.mp3"),
                      _track("tN", "Never", "Ned", "", f"{b}/previews/p4.mp3")],
    }
    a.next_override = {sid("plR2"): f"{foreign.base}/v1/playlists/{sid('plR2')}/items?offset=2&limit=2"}
    yield a, foreign
    a.gate.set()
    httpd.shutdown()
    httpd2.shutdown()


ARGS = ["--genres", "rock", "--per-genre", "20", "--preview-source", "spotify",
        "--max-preview-mb", "0.2", "--preview-deadline-seconds", "2"]


def test_hostile_previews_and_ids_are_skipped_and_reported(apis, tmp_path, capsys):
    a, foreign = apis
    out = tmp_path / "deep" / "set"
    assert main(["fetch-spotify", "--out", str(out), *ARGS]) == 0
    capsys.readouterr()
    st = {r["track_id"]: r["status"] for r in read_csv(out / "spotify_manifest.csv")}
    for t in ("tC", "tJ", "tL", "tM"):  # tC: a redirect to another http host is fine for a preview
        assert st[sid(t)] == "ok", (t, st[sid(t)])
    expect = {"tA": "file", "tB": "file", "tD": "cap", "tE": "cap", "tF": "redirects", "tG": "deadline",
              "tH": "ended", "tI": "deadline", "tK": "deadline"}
    for t, word in expect.items():
        assert st[sid(t)].startswith("skipped: spotify preview") and word in st[sid(t)], (t, st[sid(t)])
    assert sid("tN") not in st  # behind the refused `next`
    assert not any(k.startswith(("..", "t1/")) for k in st)
    # nothing outside --out: the traversal ids wrote nothing anywhere
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == []
    assert sorted(p.parent.name for p in out.rglob("*.wav")) == ["rock"] * 4
    # the token went to the API host only; the foreign host saw the preview redirect, no API call
    assert foreign.requests and all(auth is None for _, auth in foreign.requests)
    assert not any(path.startswith("/v1/") for path, _ in foreign.requests)
    assert all(auth is None for path, auth in a.requests if not path.startswith(("/v1/", "/api/")))
    report = (out / "fetch_report.md").read_text()
    assert "| rock | 4 | 4 | 0 | 9 |" in report
    assert "'../../../x'" not in report and "../../../x is not a Spotify id" in report
    assert "../../pl is not a Spotify id" in report
    assert "`next` link to another host" in report
    assert f"{foreign.base.split('//')[1]}/v1/playlists/{sid('plR2')}/items" in report
    assert "Trickle" in report and "Liar Open" in report
    assert not (out / TMP_DIR).exists()
    # a rerun does not fetch the skipped tracks again, and the set is unchanged
    hits = sum(v for k, v in a.hits.items() if k.startswith("/hostile/"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["fetch-spotify", "--out", str(out), *ARGS]) == 0
    assert sum(v for k, v in a.hits.items() if k.startswith("/hostile/")) == hits
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_all_previews_refused_is_a_one_line_error(apis, tmp_path, capsys):
    a, _ = apis
    a.extra_items[sid("plR1")] = a.extra_items[sid("plR1")][2:4]  # to-file and file://
    a.extra_playlists["rock"] = a.extra_playlists["rock"][:1]
    assert main(["fetch-spotify", "--out", str(tmp_path / "o"), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "genrekit: error: no track with audio was fetched"


def test_bad_options_refused_before_anything_is_created(apis, tmp_path, capsys):
    for bad in (["--max-preview-mb", "0"], ["--max-preview-mb", "nan"], ["--preview-deadline-seconds", "-1"],
                ["--preview-deadline-seconds", "inf"]):
        with pytest.raises(SystemExit) as e:  # argparse's exit, one line
            main(["fetch-spotify", "--out", str(tmp_path / "o"), "--genres", "rock", *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genrekit: error:") and "\n" not in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "f").write_text("a user's file")
    for bad in (["--out", str(tmp_path / "f")], ["--out", str(tmp_path / "o"), "--per-genre", "0"]):
        assert main(["fetch-spotify", "--genres", "rock", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genrekit: error:") and "\n" not in err
    assert (tmp_path / "f").read_text() == "a user's file" and not (tmp_path / "o").exists()


def test_a_linked_temporary_folder_is_refused(apis, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "set"
    out.mkdir()
    (out / TMP_DIR).symlink_to(elsewhere)
    assert main(["fetch-spotify", "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genrekit: error:") and "not a folder genrekit made" in err[-1]
    assert list(elsewhere.iterdir()) == []


def test_token_never_sent_off_the_api_origin(apis):
    a, foreign = apis
    api = SpotifyApi("id", a.accept_secret, http=Http(retries=0, deadline_s=5))
    assert api.get("search", {"q": "jazz", "type": "playlist"})["playlists"]["items"]
    # same host, other port; other scheme; no scheme; userinfo tricks: all refused before any request
    port = a.base.rsplit(":", 1)[1]
    for url in (foreign.base + "/v1/search", a.base.replace("http:", "https:") + "/v1/search",
                f"http://127.0.0.1:{port}@{foreign.base.split('//')[1]}/v1/search", "file:///etc/passwd",
                "http:/v1/search"):
        with pytest.raises(Refused):
            api.get(url)
    assert foreign.requests == []


def test_a_transient_failure_is_retried_by_the_next_run(apis, tmp_path):
    a, _ = apis
    a.extra_items[sid("plR1")] = a.extra_items[sid("plR1")][-1:]  # tJ, preview p7
    a.extra_playlists["rock"] = a.extra_playlists["rock"][:1]
    a.broken = {"p7"}
    opts = FetchOptions(out=str(tmp_path / "o"), genres=["rock"], preview_sources=("spotify",), log=lambda m: None)
    fetch_spotify(opts, http=Http(retries=1, backoff_s=0.01))
    (row,) = read_csv(tmp_path / "o" / "spotify_manifest.csv")
    assert row["status"].startswith("failed:") and "HTTP 503" in row["status"] and not row["file"]
    assert "failed ones are retried" in (tmp_path / "o" / "fetch_report.md").read_text()
    a.broken = set()
    rep = fetch_spotify(opts, http=Http(retries=1, backoff_s=0.01))
    (row,) = read_csv(tmp_path / "o" / "spotify_manifest.csv")
    assert row["status"] == "ok" and (tmp_path / "o" / row["file"]).is_file() and rep.fetched_now == 1


def test_tampered_manifest_cannot_move_files_outside(apis, tmp_path):
    a, _ = apis
    a.extra_items[sid("plR1")] = a.extra_items[sid("plR1")][-1:]
    a.extra_playlists["rock"] = a.extra_playlists["rock"][:1]
    out = tmp_path / "set"
    out.mkdir()
    victim = tmp_path / "victim.wav"
    victim.write_bytes(b"mine")
    (out / "spotify_manifest.csv").write_text(
        "track_id,isrc,artist,title,playlist,genre,preview_source,file,sha256,status\n"
        f"{sid('zz')},,a,b,p,rock,spotify,../victim.wav,abc,ok\n"
        f"../../evil,,a,b,p,rock,spotify,rock/x.wav,abc,ok\n")
    logs = []
    fetch_spotify(FetchOptions(out=str(out), genres=["rock"], preview_sources=("spotify",), log=logs.append,
                               max_preview_bytes=200_000, preview_deadline_s=5))
    assert victim.read_bytes() == b"mine" and not (out / ".dropped" / ".." / "victim.wav").exists()
    rows = read_csv(out / "spotify_manifest.csv")
    assert all(r["track_id"] != sid("zz") and ".." not in r["track_id"] for r in rows)
    assert sum("row for track" in m for m in logs) == 2


def test_stale_temporaries_only_genrekit_own_are_removed(tmp_path):
    out = tmp_path / "set"
    (out / TMP_DIR).mkdir(parents=True)
    dead = 2 ** 22 + 12345  # above any default pid_max: no such process
    own = [out / TMP_DIR / f"{sid('t1')}.{dead}.genrekit-part", out / TMP_DIR / f"{sid('t1')}.{dead}.genrekit-part.mp3"]
    user = [out / TMP_DIR / "notes.txt", out / TMP_DIR / f"x.{dead}.genrekit-part.backup",
            out / "thesis.tmp-v2.docx", out / f"{sid('t1')}.{dead}.genrekit-part"]
    alive = out / TMP_DIR / f"{sid('t2')}.{os.getppid()}.genrekit-part"  # a running process's file
    for p in own + user + [alive]:
        p.write_bytes(b"x")
    assert remove_stale_temporaries(out) == 2
    assert not any(p.exists() for p in own) and all(p.exists() for p in user) and alive.exists()
