"""A real HTTP server on loopback that speaks enough of the Spotify Web API, Deezer's and
iTunes' search APIs, and serves MP3 previews made by the tests. Scripted faults: a 429 with
Retry-After, a 500, a missing preview, a preview that is not audio, a cross-genre duplicate;
hostile previews under ``/hostile/`` (redirects to file:// and in a loop, bodies over the cap,
trickled bodies and headers, lying Content-Length) and a preview held half-sent for kill tests."""
from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import soundfile as sf


def mp3_bytes(freq: float, seconds: float = 2.0, sr: int = 44100) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    y = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="MP3", subtype="MPEG_LAYER_III")
    return buf.getvalue()


def sid(short: str) -> str:
    """A Spotify-shaped id (22 base62 characters) from a short test name."""
    return short + "0" * (22 - len(short))


def _track(tid, name, artist, isrc, preview):
    return {"id": sid(tid) if len(tid) < 22 and tid.isalnum() else tid, "name": name, "type": "track", "artists": [{"name": artist}],
            "external_ids": {"isrc": isrc}, "preview_url": preview}


class FakeApis:
    """State and routes. ``base`` is filled in once the server listens."""

    def __init__(self):
        self.base = ""
        self.hits: Counter = Counter()
        self.faults = {"search_429": 1, "items_500": 1, "preview_429": 1}
        self.accept_secret = "s3cret"
        self.previews = {f"p{i}": mp3_bytes(220 * (i + 1)) for i in range(8)}
        self.previews["junk"] = b"<html>this is not audio</html>" * 20
        self.extra_playlists: dict = {}  # genre -> playlists, added by a test
        self.extra_items: dict = {}  # playlist id -> tracks
        self.next_override: dict = {}  # playlist id -> the `next` link of its first page
        self.requests: list = []  # (path, Authorization header) of every request
        self.gate = threading.Event()  # held previews wait for it (at most 30 s)
        self.held = set()  # preview names sent half, then held until the gate opens
        self.half_sent = threading.Event()
        self.broken = set()  # preview names answering 503
        self.foreign_base = ""  # another loopback server, for redirects off this host
        self.scripted: dict = {}  # path -> (status, body, headers) answered instead of the route's own

    def playlists(self):
        b = self.base
        return {
            "blues": [{"id": sid("plB1"), "name": "Blues Classics"}, {"id": sid("plB2"), "name": "Blues Mix"}],
            "jazz": [{"id": sid("plJ1"), "name": "Jazz Vibes"}],
            **self.extra_playlists,
            "polka": [],
        }, {
            # blues: t1 (spotify preview), t2 (no preview -> deezer by ISRC), t3 duplicate of t1 by ISRC,
            #        t4 (also in jazz: cross-genre, dropped from both), t5 (preview is not audio -> itunes)
            sid("plB1"): [_track("t1", "Slow Train", "Ann Lee", "USAAA0000001", f"{b}/previews/p0.mp3"),
                     _track("t2", "Muddy Road", "Bo Diddly", "USAAA0000002", None),
                     _track("t4", "Crossroads", "Cy Twain", "USAAA0000004", f"{b}/previews/p3.mp3")],
            sid("plB2"): [_track("t3", "Slow Train (Remaster)", "Ann Lee", "USAAA0000001", f"{b}/previews/p0.mp3"),
                     _track("t5", "Broken Preview", "Di Vox", "USAAA0000005", f"{b}/previews/junk.mp3"),
                     _track("t9", "No Audio Anywhere", "Ed Null", "", None)],
            sid("plJ1"): [_track("t4", "Crossroads", "Cy Twain", "USAAA0000004", f"{b}/previews/p3.mp3"),
                     _track("t6", "Blue Smoke", "Fay Keys", "USAAA0000006", f"{b}/previews/p4.mp3"),
                     _track("t7", "Night Walk", "Gus Horn", "USAAA0000007", None)],
            **self.extra_items,
        }

    def route(self, h: BaseHTTPRequestHandler):
        u = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        self.hits[u.path] += 1
        self.requests.append((h.path, h.headers.get("Authorization")))
        if u.path in self.scripted:
            return self.scripted[u.path]
        pls, items = self.playlists()
        if u.path == "/api/token":
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length).decode()
            import base64

            auth = base64.b64decode(h.headers.get("Authorization", "Basic ").split()[-1] or b"").decode()
            if "grant_type=client_credentials" not in body or not auth.endswith(":" + self.accept_secret):
                return 400, {"error": "invalid_client", "error_description": "Invalid client"}
            return 200, {"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}
        if u.path.startswith("/v1/"):
            if h.headers.get("Authorization") != "Bearer tok":
                return 401, {"error": {"status": 401, "message": "No token provided"}}
        if u.path == "/v1/search":
            if self.faults["search_429"] > 0:
                self.faults["search_429"] -= 1
                return 429, {"error": {"status": 429, "message": "rate limited"}}, {"Retry-After": "1"}
            found = pls.get(q["q"], [])
            return 200, {"playlists": {"items": [None, *found] if found else [], "next": None,
                                       "total": len(found)}}
        if u.path.startswith("/v1/playlists/") and u.path.endswith(("/items", "/tracks")):
            pid = u.path.split("/")[3]
            if self.faults["items_500"] > 0:
                self.faults["items_500"] -= 1
                return 500, {"error": {"status": 500, "message": "boom"}}
            its = items.get(pid, [])
            offset = int(q.get("offset", 0))
            page = its[offset:offset + 2]  # two per page: exercises pagination
            nxt = f"{self.base}{u.path}?offset={offset + 2}&limit=2" if offset + 2 < len(its) else None
            if offset == 0 and pid in self.next_override:
                nxt = self.next_override[pid]
            return 200, {"items": [{"track": t} for t in page], "next": nxt, "offset": offset, "total": len(its)}
        if u.path.startswith("/deezer/track/isrc:"):
            isrc = u.path.split(":")[-1]
            if isrc == "USAAA0000002":
                return 200, {"id": 2, "title": "Muddy Road", "preview": f"{self.base}/previews/p1.mp3"}
            return 200, {"error": {"type": "DataException", "message": "no data", "code": 800}}
        if u.path == "/deezer/search":
            return 200, {"data": [], "total": 0}
        if u.path == "/itunes/search":
            term = q.get("term", "")
            if "Broken Preview" in term:
                return 200, {"resultCount": 1, "results": [{"artistName": "Di Vox", "trackName": "Broken Preview",
                                                             "previewUrl": f"{self.base}/previews/p5.mp3"}]}
            if "Night Walk" in term:
                return 200, {"resultCount": 1, "results": [{"artistName": "Gus Horn", "trackName": "Night Walk",
                                                             "previewUrl": f"{self.base}/previews/p6.mp3"}]}
            return 200, {"resultCount": 0, "results": []}
        if u.path.startswith("/hostile/"):
            return self.hostile(u.path.rsplit("/", 1)[-1], q)
        if u.path.startswith("/previews/"):
            name = u.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if name in self.broken:
                return 503, b"unavailable", {"Content-Type": "text/plain"}
            if name in self.held:
                return 200, self._held(self.previews[name]), {"Content-Type": "audio/mpeg",
                                                              "Content-Length": str(len(self.previews[name]))}
            if name == "p4" and self.faults["preview_429"] > 0:
                self.faults["preview_429"] -= 1
                return 429, b"slow down", {"Retry-After": "0", "Content-Type": "text/plain"}
            if name in self.previews:
                return 200, self.previews[name], {"Content-Type": "audio/mpeg"}
        return 404, {"error": {"status": 404, "message": f"no route {u.path}"}}

    def _held(self, data: bytes):
        def write(w):
            w.write(data[: len(data) // 2])
            w.flush()
            self.half_sent.set()
            self.gate.wait(30)
            w.write(data[len(data) // 2:])
        return write

    def hostile(self, name: str, q: dict):
        """Previews that misbehave. Every loop here is bounded and ends by itself."""
        mp3 = self.previews["p2"]
        if name == "to-file":
            return 302, b"", {"Location": "file:///etc/passwd"}
        if name == "to-foreign":  # another http host: allowed for previews
            return 302, b"", {"Location": f"{self.foreign_base}/previews/p2.mp3"}
        if name == "loop":
            return 302, b"", {"Location": f"{self.base}/hostile/loop?n={int(q.get('n', 0)) + 1}"}
        if name == "big-declared":  # Content-Length over the cap
            def write(w):
                for _ in range(50):
                    w.write(b"\0" * 100_000)
            return 200, write, {"Content-Type": "audio/mpeg", "Content-Length": "5000000"}
        if name == "big-stream":  # no Content-Length: the body ends when the connection closes
            def write(w):
                for _ in range(50):
                    w.write(mp3[:100_000] + b"\0" * (100_000 - len(mp3[:100_000])))
            return 200, write, {"Content-Type": "audio/mpeg", "Content-Length": None}
        if name == "trickle":  # one byte every 0.2 s, at most 50 of them
            def write(w):
                for b in mp3[:50]:
                    w.write(bytes([b]))
                    w.flush()
                    time.sleep(0.2)
            return 200, write, {"Content-Type": "audio/mpeg", "Content-Length": str(len(mp3))}
        if name == "liar-close":  # says more than it sends, then closes
            return 200, mp3, {"Content-Type": "audio/mpeg", "Content-Length": str(len(mp3) * 3)}
        if name == "liar-open":  # says more than it sends, then keeps the connection open (at most 10 s)
            def write(w):
                w.write(mp3)
                w.flush()
                self.gate.wait(10)
            return 200, write, {"Content-Type": "audio/mpeg", "Content-Length": str(len(mp3) * 3)}
        if name == "slow-headers":  # the status line, then one header byte every 0.2 s (at most 50)
            def write(w):
                w.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                for _ in range(50):
                    w.write(b"a")
                    w.flush()
                    time.sleep(0.2)
            return None, write, {}
        return 404, b"no such fault", {"Content-Type": "text/plain"}


def serve(apis: FakeApis):
    class Handler(BaseHTTPRequestHandler):
        def _go(self):
            res = apis.route(self)
            status, body = res[0], res[1]
            headers = dict(res[2]) if len(res) > 2 else {}
            try:
                if status is None:  # the route writes the raw response itself
                    body(self.wfile)
                    return
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                data = None if callable(body) else body if isinstance(body, bytes) else json.dumps(body).encode()
                if "Content-Length" not in headers:
                    headers["Content-Length"] = str(len(data))
                for k, v in headers.items():
                    if v is not None:
                        self.send_header(k, v)
                self.end_headers()
                if callable(body):
                    body(self.wfile)
                else:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (as it should from a hostile server)
            self.close_connection = True

        do_GET = do_POST = _go

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    apis.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd
