"""``genrekit serve`` (issue 26) against a real uvicorn server on a free loopback port, with a
tiny default-recipe run (musicnn_lr, random backbone: offline): /v1/model, /v1/predict giving
predict's numbers, timelines, hostile uploads, the token rule, the live stream, the library's
suggest -> label -> adapt loop (a new run beside the old one, the old byte-identical) and
paths that try to leave the library."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import USER_FREQS, musicnn_features, tone, user_music, write_tree

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")

SR16 = 16000
FREQS = USER_FREQS


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


class Server:
    """``genrekit.serve.serve`` in a thread on a free loopback port (real uvicorn)."""

    def __init__(self, run, **kw):
        from genrekit.serve import serve

        self.ready, self.error = threading.Event(), None

        def ready(server, port):
            self.server, self.port = server, port
            self.service = server.config.app.state.service
            self.ready.set()

        def target():
            try:
                serve(run, host="127.0.0.1", port=0, ready=ready, **kw)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc
                self.ready.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        assert self.ready.wait(180), "the server did not start"
        assert self.error is None, self.error

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            ctype = r.getheader("content-type", "")
            return r.status, (json.loads(data) if ctype.startswith("application/json") else data), r
        finally:
            conn.close()

    def post_files(self, path: str, files: list[tuple[str, bytes]], headers: dict | None = None,
                   content_type: str = "audio/wav"):
        body, ctype = multipart(files, content_type)
        return self.request("POST", path, body, {"Content-Type": ctype, **(headers or {})})

    def post_json(self, path: str, obj, headers: dict | None = None):
        return self.request("POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json",
                                                                     **(headers or {})})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def multipart(files: list[tuple[str, bytes]], content_type: str = "audio/wav") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    from genrekit.cli import main

    base = tmp_path_factory.mktemp("serve")
    data = write_tree(base / "d", per_genre=8, seconds=4.0, sr=SR16)
    musicnn_features(data, base / "f")
    run = base / "runs" / "run"
    assert main(["train", "--data", str(base / "f"), "--weights", "none", "--out", str(run), "--quiet"]) == 0
    probe = user_music(base / "probe", per_genre=1, seed0=900, buzz=1)
    return {"run": run, "base": base, "data": data, "probe": probe}


@pytest.fixture(scope="module")
def server(lr_run):
    s = Server(lr_run["run"], max_upload_mb=1.0)
    yield s
    s.stop()


def _clips(lr_run) -> list[Path]:
    return sorted(lr_run["probe"].rglob("*.wav"))


def test_model_describes_the_run(server, lr_run):
    status, body, _ = server.request("GET", "/v1/model")
    assert status == 200
    labels = json.loads((lr_run["run"] / "labels.json").read_text())
    assert body["labels"] == labels and body["sample_rate"] == SR16 and body["arch"] == "musicnn_lr"
    cal = json.loads((lr_run["run"] / "calibration.json").read_text())
    assert body["temperature"] == pytest.approx(cal["temperature"])
    assert body["rejection"]["rule"] == cal["reject_rule"]
    assert body["rejection"]["threshold"] == pytest.approx(cal["reject_threshold"])
    assert body["metrics"] == json.loads((lr_run["run"] / "train_metrics.json").read_text())
    assert body["feature_config"]["sr"] == SR16 and body["window_s"] > 0 and not body["library"]


def _same_results(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert Path(g["file"]).name == Path(w["file"]).name
        assert [t["genre"] for t in g["top"]] == [t["genre"] for t in w["top"]]
        np.testing.assert_allclose([t["probability"] for t in g["top"]], [t["probability"] for t in w["top"]],
                                   atol=1e-5)
        for key in ("genre", "rejected", "reject_rule"):
            assert g.get(key) == w.get(key)
        if "reject_score" in w:
            assert g["reject_score"] == pytest.approx(w["reject_score"], abs=1e-5)


@pytest.mark.parametrize("query,kw", [("", {}), ("?reject=1&top_k=2", {"reject": True, "top_k": 2}),
                                      ("?reject=per_genre", {"reject": "per_genre"}),
                                      ("?reject_threshold=0.34", {"reject_threshold": 0.34})])
def test_predict_gives_predicts_numbers(server, lr_run, query, kw):
    from genrekit.predict import predict_files

    clips = _clips(lr_run)
    status, body, _ = server.post_files(f"/v1/predict{query}", [(c.name, c.read_bytes()) for c in clips])
    assert status == 200, body
    _same_results(body["results"], predict_files([str(c) for c in clips], lr_run["run"], **kw))
    assert os.listdir(server.service.tmp) == []  # the uploads were deleted


def test_predict_timeline_matches_predicts_timeline(server, lr_run, tmp_path):
    import csv

    from genrekit.predict import predict_files

    clip = _clips(lr_run)[0]
    status, body, _ = server.post_files("/v1/predict?timeline=1", [(clip.name, clip.read_bytes())])
    assert status == 200, body
    [r] = body["results"]
    want = predict_files([str(clip)], lr_run["run"], timeline_dir=tmp_path)[0]
    _same_results([r], [want])
    with open(want["timeline"][0], encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    tl = r["timeline"]
    assert len(tl["rows"]) == len(rows) >= 1
    for got, w in zip(tl["rows"], rows, strict=True):
        assert got["start_s"] == pytest.approx(float(w["start_s"]), abs=1e-3)
        assert got["end_s"] == pytest.approx(float(w["end_s"]), abs=1e-3)
        assert got["genre"] == w["genre"]
        np.testing.assert_allclose(got["probabilities"], [float(w[g]) for g in tl["labels"]], atol=1e-4)


def test_hostile_uploads_get_the_clis_line_and_the_server_goes_on(server, lr_run, tmp_path, capsys):
    from genrekit.cli import main

    clip = _clips(lr_run)[0]
    wav = clip.read_bytes()
    cases = {"empty.wav": b"", "notes.wav": b"these are my notes, not audio\n" * 20, "cut.wav": wav[:len(wav) // 3]}
    for name, data in cases.items():
        status, body, _ = server.post_files("/v1/predict", [(name, data)])
        assert status == 422, body
        # the CLI's own line for the same bytes
        f = tmp_path / name
        f.write_bytes(data)
        assert main(["predict", "--model", str(lr_run["run"]), str(f)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"genrekit: error: {f}: {body['results'][0]['error']}"]
        assert body["error"] == f"{name}: {body['results'][0]['error']}"
    # a mix: the good file is answered, the bad one says why
    status, body, _ = server.post_files("/v1/predict", [("good.wav", wav), ("empty.wav", b"")])
    assert status == 200 and "top" in body["results"][0] and "error" in body["results"][1]
    # not multipart, no file, a client name that is a path
    status, body, _ = server.request("POST", "/v1/predict", wav, {"Content-Type": "audio/wav"})
    assert status == 415 and "multipart/form-data" in body["error"]
    body_, ctype = multipart([])
    status, body, _ = server.request("POST", "/v1/predict", body_, {"Content-Type": ctype})
    assert status == 400 and "no file" in body["error"]
    status, body, _ = server.post_files("/v1/predict", [("../../etc/passwd", wav)])
    assert status == 200 and body["results"][0]["file"] == "passwd"
    assert os.listdir(server.service.tmp) == []
    status, _, _ = server.request("GET", "/v1/model")
    assert status == 200  # still serving


def test_oversized_uploads_are_refused_with_413(server):
    # declared too long: answered before any of the body is sent
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/v1/predict")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "max-upload-mb" in json.loads(r.read())["error"]
    conn.close()
    # no length (chunked): refused once it passes the limit (1 MB here)
    body, ctype = multipart([("big.wav", b"\0" * (1024 * 1024 + 5000))])
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v1/predict", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                     headers={"Content-Type": ctype}, encode_chunked=True)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = conn.getresponse()
    assert r.status == 413
    conn.close()
    assert os.listdir(server.service.tmp) == []


def test_a_client_that_goes_away_mid_upload_leaves_nothing(server, lr_run):
    import time

    body, ctype = multipart([("clip.wav", _clips(lr_run)[0].read_bytes())])
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:len(body) // 2])
    time.sleep(0.5)
    sock.close()
    deadline = time.time() + 30
    while os.listdir(server.service.tmp) and time.time() < deadline:
        time.sleep(0.2)
    assert os.listdir(server.service.tmp) == []
    assert server.request("GET", "/v1/model")[0] == 200


def test_too_long_audio_is_refused(lr_run):
    s = Server(lr_run["run"], max_seconds=2.0)
    try:
        clip = _clips(lr_run)[0]
        status, body, _ = s.post_files("/v1/predict", [(clip.name, clip.read_bytes())])
        assert status == 413 and "more than --max-seconds 2" in body["error"]
    finally:
        s.stop()


def test_a_full_queue_answers_503(server, lr_run):
    svc = server.service
    with svc._count_lock:
        saved, svc._admitted = svc._admitted, svc.workers + svc.queue
    try:
        clip = _clips(lr_run)[0]
        status, body, r = server.post_files("/v1/predict", [(clip.name, clip.read_bytes())])
        assert status == 503 and r.getheader("Retry-After") == "1" and "busy" in body["error"]
    finally:
        with svc._count_lock:
            svc._admitted = saved


def test_foreign_host_and_origin_are_refused(server):
    status, body, _ = server.request("GET", "/v1/model", headers={"Host": "evil.example"})
    assert status == 403
    status, body, _ = server.request("GET", "/v1/model", headers={"Origin": "http://evil.example"})
    assert status == 403
    status, body, _ = server.request("GET", "/v1/model", headers={"Origin": "null"})  # a sandboxed page
    assert status == 403
    status, body, _ = server.request("GET", "/v1/model", headers={"Sec-Fetch-Site": "cross-site"})  # <audio src>
    assert status == 403
    status, _, _ = server.request("GET", "/v1/model", headers={"Origin": f"http://127.0.0.1:{server.port}",
                                                              "Sec-Fetch-Site": "same-origin"})
    assert status == 200


def test_the_token_rule(lr_run, capsys):
    from genrekit.cli import main

    assert main(["serve", "--model", str(lr_run["run"]), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrekit: error: --host 0.0.0.0") and "--token" in err[0]
    token = "correct-horse-battery"
    s = Server(lr_run["run"], token=token)
    try:
        assert s.request("GET", "/v1/model")[0] == 401
        assert s.request("GET", "/v1/model", headers={"Authorization": "Bearer wrong-token-here"})[0] == 401
        assert s.request("GET", "/v1/model", headers={"Authorization": f"Bearer {token}"})[0] == 200
        clip = _clips(lr_run)[0]
        assert s.post_files("/v1/predict", [(clip.name, clip.read_bytes())])[0] == 401
        assert s.post_files("/v1/predict", [(clip.name, clip.read_bytes())],
                            {"Authorization": f"Bearer {token}"})[0] == 200
        assert s.request("GET", "/")[0] == 200  # the page itself is public; its requests carry the token
        ws = pytest.importorskip("websockets.sync.client")
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus):
            ws.connect(f"ws://127.0.0.1:{s.port}/v1/stream", open_timeout=30).close()
        with ws.connect(f"ws://127.0.0.1:{s.port}/v1/stream", subprotocols=[f"bearer.{token}"],
                        open_timeout=30) as c:
            assert json.loads(c.recv(timeout=30))["type"] == "hello"
    finally:
        s.stop()


def test_streams_are_bounded(server):
    ws = pytest.importorskip("websockets.sync.client")
    from websockets.exceptions import InvalidStatus

    from genrekit.serve import MAX_STREAMS

    server.service.streams = MAX_STREAMS  # as if that many were open
    try:
        with pytest.raises(InvalidStatus):
            ws.connect(f"ws://127.0.0.1:{server.port}/v1/stream", open_timeout=30).close()
    finally:
        server.service.streams = 0


def test_stream_gives_rolling_estimates(server, lr_run):
    ws = pytest.importorskip("websockets.sync.client")
    y = tone(660.0 * 1.02, 12.0, SR16, seed=77).astype(np.float32)
    with ws.connect(f"ws://127.0.0.1:{server.port}/v1/stream?top_k=2", open_timeout=30) as c:
        hello = json.loads(c.recv(timeout=30))
        assert hello["type"] == "hello" and hello["sample_rate"] == SR16
        c.send(json.dumps({"sr": SR16}))
        assert json.loads(c.recv(timeout=30))["type"] == "ready"
        c.send(b"\0\0\0")  # not float32: said, and the stream goes on
        assert json.loads(c.recv(timeout=30))["type"] == "error"
        step = SR16 // 2
        estimates = []
        for i in range(0, len(y), step):
            c.send(y[i:i + step].tobytes())
        while len(estimates) < 3:
            m = json.loads(c.recv(timeout=60))
            if m["type"] == "estimate":
                estimates.append(m)
    labels = json.loads((lr_run["run"] / "labels.json").read_text())
    assert [e["t_s"] for e in estimates] == sorted(e["t_s"] for e in estimates)
    for e in estimates:
        assert len(e["top"]) == 2 and all(t["genre"] in labels for t in e["top"])
        assert e["span_s"] <= 10.0 + 1e-6
    # the estimate is predict's answer for the audio in the buffer
    from genrekit.predict import predict_files

    last = estimates[-1]
    n = int(round(last["t_s"] * SR16))
    seg = y[max(0, n - int(round(last["span_s"] * SR16))):n]
    f = lr_run["base"] / "stream-check.wav"
    sf.write(f, seg, SR16, subtype="FLOAT")
    want = predict_files([str(f)], lr_run["run"], top_k=2)[0]
    np.testing.assert_allclose([t["probability"] for t in last["top"]], [t["probability"] for t in want["top"]],
                               atol=1e-4)
    # another sample rate is resampled; silence is said
    with ws.connect(f"ws://127.0.0.1:{server.port}/v1/stream", open_timeout=30) as c:
        c.recv(timeout=30)
        c.send(json.dumps({"sr": 8000}))
        assert json.loads(c.recv(timeout=30))["sr"] == 8000
        c.send(np.zeros(8000 * 4, dtype=np.float32).tobytes())
        m = json.loads(c.recv(timeout=60))
        assert m["type"] == "estimate" and m["silent"]


@pytest.fixture(scope="module")
def library(lr_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("library")
    runs = base / "runs"
    shutil.copytree(lr_run["run"], runs / "run")
    lib = user_music(base / "music", per_genre=2, seed0=500, buzz=4)
    secret = base / "secret.wav"
    sf.write(secret, tone(440.0, 2.0, SR16, seed=3), SR16, subtype="PCM_16")
    os.symlink(secret, lib / "link.wav")  # a link out of the library
    os.symlink(base, lib / "up")  # a folder link out of it
    s = Server(runs / "run", library=lib)
    yield {"server": s, "run": runs / "run", "lib": lib, "secret": secret}
    s.stop()


def test_library_files_are_served_and_confined(library):
    s, lib = library["server"], library["lib"]
    status, body, _ = s.request("GET", "/v1/library")
    assert status == 200 and "buzz/mine-buzz-500-0.wav" in body["files"] and "link.wav" not in body["files"]
    status, data, r = s.request("GET", "/v1/library/low/mine-low-500-0.wav")
    assert status == 200 and data == (lib / "low" / "mine-low-500-0.wav").read_bytes()
    for bad in ("/v1/library/link.wav", "/v1/library/up/secret.wav", "/v1/library/..%2Fsecret.wav",
                "/v1/library/low/..%2F..%2Fsecret.wav", "/v1/library/%2Fetc%2Fpasswd"):
        status, body, _ = s.request("GET", bad)
        assert status in (403, 404), (bad, status)
        assert isinstance(body, dict) and "error" in body
    for path in ("../secret.wav", str(library["secret"]), "link.wav", "up/secret.wav", "low/../../secret.wav",
                 "", "low/nothing.wav"):
        status, body, _ = s.post_json("/v1/label", {"path": path, "genre": "low"})
        assert status in (403, 404), (path, status, body)
    status, body, _ = s.post_json("/v1/label", {"path": "low/mine-low-500-0.wav", "genre": "../x"})
    assert status == 400
    assert s.request("GET", "/v1/labels")[1]["labels"] == []


def test_suggest_label_adapt_round_trip(library, lr_run):
    s, lib, run = library["server"], library["lib"], library["run"]
    before = _tree(run)
    status, body, _ = s.post_json("/v1/suggest", {"n": 4})
    assert status == 200, body
    assert len(body["suggestions"]) == 4 and all((lib / x["path"]).is_file() for x in body["suggestions"])
    assert s.post_json("/v1/adapt", {})[0] == 400  # nothing labelled yet
    files = s.request("GET", "/v1/library")[1]["files"]
    for f in files:
        status, body, _ = s.post_json("/v1/label", {"path": f, "genre": f.split("/")[0]})
        assert status == 200, body
    assert len(body["labels"]) == 10
    status, body, _ = s.post_json("/v1/adapt", {})
    assert status == 200, body
    assert body["run"] == "run-adapted-1" and body["previous"] == "run"
    new = run.with_name("run-adapted-1")
    assert (new / "model.keras").is_file() and body["result"]["new_genres"] == ["buzz"]
    assert body["result"]["after_accuracy"] is not None
    assert _tree(run) == before  # the old run is byte-identical
    status, model, _ = s.request("GET", "/v1/model")
    assert model["run"] == "run-adapted-1" and model["labels"][-1] == "buzz"
    probe = sorted((lr_run["probe"] / "buzz").glob("*.wav"))[0]
    status, body, _ = s.post_files("/v1/predict", [(probe.name, probe.read_bytes())])
    assert status == 200 and body["run"] == "run-adapted-1" and body["results"][0]["top"][0]["genre"] == "buzz"
    assert s.request("GET", "/v1/labels")[1]["labels"] == []  # they are in the new run now


def test_library_endpoints_need_a_library(server):
    for path in ("/v1/suggest", "/v1/adapt", "/v1/label"):
        status, body, _ = server.post_json(path, {})
        assert status == 404 and "--library" in body["error"]


# -- the page in a headless Chromium ----------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """The least of the Chrome DevTools protocol: commands on one page, events kept."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.ws, self.n = connect(url, max_size=64 * 1024 * 1024, open_timeout=30), 0

    def __call__(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def eval(self, expr: str):
        return self("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A page in a headless Chromium (fake microphone) driven through the DevTools protocol."""
    import subprocess
    import time
    import urllib.request

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    pytest.importorskip("websockets.sync.client")
    profile = tmp_path_factory.mktemp("chromium")
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1000,1100", "--use-fake-ui-for-media-stream",
                             "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                             "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = None
    try:
        port = None
        t0 = time.time()
        while port is None and time.time() - t0 < 60:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.skip("Chromium did not start")
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].rsplit(":", 1)[1])
        if port is None:
            pytest.skip("Chromium gave no DevTools port")
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        dt = DevTools(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        dt("Page.enable")
        dt("Runtime.enable")
        yield dt
    finally:
        if dt is not None:
            dt.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait(dt: DevTools, expr: str, seconds: float = 90):
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        v = dt.eval(expr)
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"the page never got to {expr}: {dt.eval('document.body.innerText')}")


def _open(dt: DevTools, url: str, run_name: str) -> int:
    """Load the page at ``url``; the node id of its file input."""
    dt("Page.navigate", url=url)
    _wait(dt, f"document.querySelector('#run-name') && document.querySelector('#run-name').textContent == "
              f"{json.dumps(run_name)}", 60)
    root = dt("DOM.getDocument")["root"]["nodeId"]
    return dt("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]


def test_the_page_in_a_headless_browser(page, server, lr_run, tmp_path):
    import base64
    import time

    from genrekit.predict import predict_files

    dt = page
    node = _open(dt, server.url("/"), "run")
    clip = tmp_path / "low-mid-high.flac"  # three 'genres' one after the other: a timeline with a story
    sf.write(clip, np.concatenate([tone(f0 * 1.02, 12.0, SR16, seed=40 + i)
                                   for i, f0 in enumerate(FREQS.values())]), SR16, subtype="PCM_16")
    dt("DOM.setFileInputFiles", files=[str(clip)], nodeId=node)
    _wait(dt, "document.querySelectorAll('.result.done .bar').length")
    bars = dt.eval("[...document.querySelectorAll('.result.done .bar')].map(b => b.textContent)")
    labels = json.loads((lr_run["run"] / "labels.json").read_text())
    assert len(bars) == len(labels)
    want = predict_files([str(clip)], lr_run["run"], top_k=len(labels), reject=True)[0]
    shown = [re.fullmatch(r"(.+?)([0-9.]+)%", b).groups() for b in bars]
    assert [g for g, _ in shown] == [t["genre"] for t in want["top"]]
    np.testing.assert_allclose([float(v) for _, v in shown], [100 * t["probability"] for t in want["top"]], atol=0.051)
    assert dt.eval("document.querySelector('.result.done .genre').textContent") == want["genre"]
    assert dt.eval("document.querySelector('.result.done .genre').classList.contains('unknown')") == \
        (want["genre"] == "unknown")
    assert dt.eval("document.querySelector('.result.done .error').textContent") == ""
    assert dt.eval("document.querySelector('.result.done canvas').width") > 0
    # a bad file says why on the page
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n" * 50)
    dt("DOM.setFileInputFiles", files=[str(bad)], nodeId=node)
    _wait(dt, "[...document.querySelectorAll('.result .error')].some(e => e.textContent)", 60)
    assert "not a RIFF/WAVE file" in dt.eval("document.querySelector('.result .error').textContent")
    # listening: Chromium's fake microphone (a beep) through the worklet and the websocket
    dt.eval("document.querySelector('#listen-toggle').click()")
    _wait(dt, "document.querySelectorAll('#live-bars .bar').length || "
              "document.querySelector('#live-genre').textContent == 'silence'", 60)
    assert "s heard" in dt.eval("document.querySelector('#live').innerText")
    dt.eval("document.querySelector('#listen-toggle').click()")
    dt.eval("window.scrollTo(0, 0)")
    dt("Emulation.setDeviceMetricsOverride", width=1000, height=1250, deviceScaleFactor=1, mobile=False)
    time.sleep(0.5)
    png = base64.b64decode(dt("Page.captureScreenshot", format="png")["data"])
    dt("Emulation.clearDeviceMetricsOverride")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "serve.png").write_bytes(png)


def test_the_library_loop_from_the_page(page, lr_run, tmp_path):
    """Suggest, play, label with the page's buttons (a new genre typed in), adapt: the page
    shows the before/after figures and the new run; the old one is untouched."""
    runs = tmp_path / "runs"
    shutil.copytree(lr_run["run"], runs / "run")
    before = _tree(runs / "run")
    lib = user_music(tmp_path / "music", per_genre=1, seed0=600, buzz=2)
    s = Server(runs / "run", library=lib)
    try:
        dt = page
        _open(dt, s.url("/"), "run")
        assert not dt.eval("document.querySelector('#library').hidden")
        dt.eval("document.querySelector('#suggest-n').value = 5; document.querySelector('#suggest').click()")
        n = _wait(dt, "document.querySelectorAll('#suggestions li').length")
        assert n == 5
        dt.eval("document.querySelector('#suggestions li .genre-buttons button').click()")  # play
        _wait(dt, "document.querySelector('#library-player').src.startsWith('blob:')", 30)
        for i in range(n):
            path = dt.eval(f"document.querySelectorAll('#suggestions li')[{i}].dataset.path")
            genre = path.split("/")[0]
            dt.eval(f"""(() => {{
                const li = document.querySelectorAll('#suggestions li')[{i}];
                const b = [...li.querySelectorAll('.genre-buttons button')].find(b => b.dataset.genre === {json.dumps(genre)});
                if (b) {{ b.click(); return; }}
                const inp = li.querySelector('input'); inp.value = {json.dumps(genre)};
                inp.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter'}}));
            }})()""")
            _wait(dt, f"document.querySelector('#label-count').textContent == '{i + 1}'", 30)
        assert sorted(x["genre"] for x in s.request("GET", "/v1/labels")[1]["labels"]) == \
            sorted(p.parent.name for p in lib.rglob("*.wav"))
        dt.eval("document.querySelector('#adapt').click()")
        _wait(dt, "!document.querySelector('#adapt-result').hidden", 180)
        text = dt.eval("document.querySelector('#adapt-result').innerText")
        assert "now serving run-adapted-1" in text and "buzz" in text and "before" in text and "after" in text
        _wait(dt, "document.querySelector('#run-name').textContent == 'run-adapted-1'", 30)
        assert (runs / "run-adapted-1" / "model.keras").is_file() and _tree(runs / "run") == before
    finally:
        s.stop()


def test_the_page_with_a_token(page, lr_run):
    """The page asks for the token, then its requests (an upload, the websocket) carry it."""
    token = "page-token-1234"
    s = Server(lr_run["run"], token=token)
    try:
        dt = page
        dt("Page.navigate", url=s.url("/"))
        _wait(dt, "!document.querySelector('#token-box').hidden", 60)
        dt.eval(f"document.querySelector('#token').value = {json.dumps(token)}; "
                "document.querySelector('#token-save').click()")
        _wait(dt, "document.querySelector('#run-name').textContent == 'run'", 60)
        root = dt("DOM.getDocument")["root"]["nodeId"]
        node = dt("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]
        dt("DOM.setFileInputFiles", files=[str(_clips(lr_run)[0])], nodeId=node)
        _wait(dt, "document.querySelectorAll('.result.done .bar').length")
        dt.eval("document.querySelector('#listen-toggle').click()")
        _wait(dt, "document.querySelectorAll('#live-bars .bar').length || "
                  "document.querySelector('#live-genre').textContent == 'silence'", 60)
        dt.eval("document.querySelector('#listen-toggle').click()")
        dt.eval("sessionStorage.clear()")
    finally:
        s.stop()


def test_the_page_ships_as_package_data_and_fetches_nothing_from_elsewhere():
    import configparser

    import genrekit.serve

    static = Path(genrekit.serve.__file__).with_name("serve_static")
    names = {p.name for p in static.iterdir()}
    assert {"index.html", "app.js", "style.css", "worklet.js"} <= names
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "serve_static/*" in cfg["options.package_data"]["genrekit"]
    for p in static.iterdir():
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), p  # no CDN, no external URL
