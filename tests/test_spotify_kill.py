"""kill -9 in the middle of a preview download (loopback server), then a rerun: the set is
byte-identical to an uninterrupted fetch, and no temporary file is left anywhere, the system
temp folder included."""
import os
import subprocess
import sys
import time

import pytest

from genrekit.cli import main
from genrekit.data_tools.spotify import TMP_DIR
from tests.spotify_server import FakeApis, serve


def _env(a: FakeApis) -> dict:
    return {"GENREKIT_SPOTIFY_API": a.base + "/v1/", "GENREKIT_SPOTIFY_TOKEN_URL": a.base + "/api/token",
            "GENREKIT_DEEZER_API": a.base + "/deezer/", "GENREKIT_ITUNES_API": a.base + "/itunes/",
            "SPOTIPY_CLIENT_ID": "my-client-id", "SPOTIPY_CLIENT_SECRET": a.accept_secret}


def _tree(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _partials(out) -> list:
    found = []
    for p in (out / TMP_DIR).glob("*") if (out / TMP_DIR).is_dir() else []:
        try:
            if p.stat().st_size > 0:
                found.append(p)
        except OSError:
            pass  # renamed meanwhile
    return found


@pytest.mark.slow
def test_kill_9_mid_download_then_rerun_matches_an_uninterrupted_fetch(tmp_path, monkeypatch):
    a = FakeApis()
    httpd = serve(a)
    a.faults = {"search_429": 0, "items_500": 0, "preview_429": 0}
    a.held = {"p1"}  # the second track's preview (Deezer's, by ISRC) stops half-sent until the gate opens
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env = {**os.environ, **_env(a), "TMPDIR": str(systmp), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "genrekit.cli", "fetch-spotify", "--out", str(out), "--genres", "blues,jazz",
           "--per-genre", "10"]
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial = []
        for _ in range(1200):  # wait (at most about 2 minutes) until the download is half on disk
            partial = _partials(out)
            if (a.half_sent.is_set() and partial) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None and partial, "the fetch did not reach the held download"
        proc.kill()  # SIGKILL
        proc.wait(timeout=30)
        assert _partials(out), "the kill left no partial download (nothing was tested)"
        a.gate.set()

        rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert "temporary file(s) left by an interrupted fetch" in rerun.stderr

        for k, v in _env(a).items():
            monkeypatch.setenv(k, v)
        ref = tmp_path / "uninterrupted"
        assert main(["fetch-spotify", "--out", str(ref), "--genres", "blues,jazz", "--per-genre", "10"]) == 0
    finally:
        a.gate.set()
        httpd.shutdown()
    got, want = _tree(out), _tree(ref)
    assert sorted(got) == sorted(want) and any(k.endswith(".wav") for k in got)
    assert got == want
    assert not (out / TMP_DIR).exists() and not any("genrekit-part" in k or ".tmp-" in k for k in got)
    assert list(systmp.iterdir()) == []
