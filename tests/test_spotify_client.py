"""The spotipy-based Web API client against hostile answers from the API host itself (loopback
servers only): a redirect to another host, bodies over the cap, a trickled body, a 429 with a
huge Retry-After, JSON nested too deeply, answers of the wrong shape; no token cache file and
no credentials in the logs, whatever the logging level."""
import base64
import logging
import time

import pytest

from genrekit.cli import main
from genrekit.data_tools.spotify_client import Http, NetworkError, Refused, SpotifyApi
from tests.spotify_server import FakeApis, serve


@pytest.fixture
def apis(monkeypatch, tmp_path):
    a, foreign = FakeApis(), FakeApis()
    httpd, httpd2 = serve(a), serve(foreign)
    a.faults = {"search_429": 0, "items_500": 0, "preview_429": 0}
    monkeypatch.setenv("GENREKIT_SPOTIFY_API", a.base + "/v1/")
    monkeypatch.setenv("GENREKIT_SPOTIFY_TOKEN_URL", a.base + "/api/token")
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "my-client-id")
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", a.accept_secret)
    monkeypatch.chdir(tmp_path)  # where spotipy's default cache handler would write ./.cache
    yield a, foreign
    a.gate.set()
    httpd.shutdown()
    httpd2.shutdown()


def _api(a, **http):
    return SpotifyApi("my-client-id", a.accept_secret, http=Http(**{"retries": 0, "deadline_s": 5, **http}))


def test_a_redirect_off_the_api_host_is_refused(apis):
    a, foreign = apis
    a.scripted["/v1/search"] = (302, b"", {"Location": f"{foreign.base}/v1/search"})
    with pytest.raises(Refused, match="redirect"):
        _api(a).search_playlists("jazz", 5)
    assert foreign.requests == []


def test_the_session_refuses_other_hosts_itself(apis):
    a, foreign = apis
    api = _api(a)
    with pytest.raises(Refused):
        api.session.get(foreign.base + "/v1/search", headers={"Authorization": "Bearer tok"})
    with pytest.raises(Refused):
        api.sp._get(foreign.base + "/v1/search")  # spotipy's own call, below genrekit's host check
    api.token_url = api.auth.OAUTH_TOKEN_URL = api.session.token_url = foreign.base + "/api/token"
    with pytest.raises(Refused):  # the token service's host takes its one POST, no API call
        api.session.get(foreign.base + "/api/token", headers={"Authorization": "Bearer tok"})
    assert foreign.requests == []


def test_oversized_answers_are_refused(apis):
    a, _ = apis
    api = _api(a)
    api.session.max_bytes = 100_000
    a.scripted["/v1/search"] = (200, lambda w: w.write(b" " * 300_000), {"Content-Length": "300000"})
    with pytest.raises(Refused, match="cap"):
        api.search_playlists("jazz", 5)

    def stream(w):  # no Content-Length: cut as soon as it passes the cap
        for _ in range(30):
            w.write(b" " * 10_000)
    a.scripted["/v1/search"] = (200, stream, {"Content-Length": None})
    with pytest.raises(Refused, match="cap"):
        api.search_playlists("jazz", 5)


def test_a_trickled_answer_costs_at_most_the_deadline(apis):
    a, _ = apis

    def trickle(w):
        for _ in range(50):
            w.write(b" ")
            w.flush()
            time.sleep(0.2)
    a.scripted["/v1/search"] = (200, trickle, {"Content-Length": "1000"})
    api = _api(a, deadline_s=1.5)
    api.bearer()
    t0 = time.monotonic()
    with pytest.raises(Refused, match="deadline"):
        api.search_playlists("jazz", 5)
    assert time.monotonic() - t0 < 4


def test_a_huge_retry_after_is_not_waited_for(apis):
    a, _ = apis
    a.scripted["/v1/search"] = (429, {"error": {"status": 429, "message": "slow"}}, {"Retry-After": "1000000000"})
    slept = []
    api = _api(a, retries=3, deadline_s=5, max_wait_s=0.05, sleep=slept.append)
    with pytest.raises(NetworkError, match="429"):
        api.search_playlists("jazz", 5)
    assert slept and max(slept) <= 0.05 and a.hits["/v1/search"] == 4
    slept.clear()
    api = _api(a, retries=3, deadline_s=5, max_wait_s=60, sleep=slept.append)
    with pytest.raises(NetworkError, match="deadline would pass"):  # 60 s > the 5 s left: give up now
        api.search_playlists("jazz", 5)
    assert slept == []


@pytest.mark.parametrize("where, answer", [
    ("/v1/search", (200, b"[" * 200_000 + b"]" * 200_000, {})),  # nested too deeply for json
    ("/v1/search", (404, {"error": "a string, not an object"}, {})),  # spotipy indexes it as a dict
    ("/v1/search", (200, b"not json", {})),
    ("/api/token", (200, {"access_token": "tok"}, {})),  # no expires_in
    ("/api/token", (200, b"[" * 200_000 + b"]" * 200_000, {})),
    ("/api/token", (200, {"access_token": ["tok"], "expires_in": 3600}, {})),
])
def test_malformed_answers_are_one_line_errors(apis, tmp_path, capsys, where, answer):
    a, _ = apis
    a.scripted[where] = answer
    assert main(["fetch-spotify", "--out", str(tmp_path / "o"), "--genres", "jazz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genrekit: error:") and "\n" not in err and "Traceback" not in err, err


def test_no_token_file_and_no_credentials_in_logs(apis, tmp_path, caplog):
    a, _ = apis
    caplog.set_level(logging.DEBUG)  # a user's application logging everything
    api = _api(a)
    assert api.search_playlists("jazz", 5)
    assert list(api.playlist_pages(api.search_playlists("jazz", 5)[0]["id"]))
    basic = base64.b64encode(f"my-client-id:{a.accept_secret}".encode()).decode()
    for secret in (a.accept_secret, basic, "Bearer tok", "'tok'"):
        assert secret not in caplog.text
    assert a.accept_secret not in repr(api) and "my-client-id" not in repr(api)
    assert not (tmp_path / ".cache").exists() and not list(tmp_path.glob(".cache*"))


def test_a_token_refused_early_is_replaced_once(apis):
    a, _ = apis
    api = _api(a)
    api.auth.cache_handler.save_token_to_cache({"access_token": "stale", "expires_in": 3600,
                                                "expires_at": int(time.time()) + 3600})
    assert api.search_playlists("jazz", 5)
    assert a.hits["/api/token"] == 1 and a.hits["/v1/search"] == 2


def test_token_service_on_another_host_gets_only_the_token_post(apis):
    a, accounts = apis  # as on Spotify: accounts.spotify.com and api.spotify.com
    api = SpotifyApi("my-client-id", a.accept_secret, http=Http(retries=0, deadline_s=5),
                     token_url=accounts.base + "/api/token")
    assert api.search_playlists("jazz", 5)
    assert [(p, (auth or "").split()[0]) for p, auth in accounts.requests] == [("/api/token", "Basic")]
    assert all(auth == "Bearer tok" for _, auth in a.requests)
