"""HTTP for ``genrekit fetch-spotify`` and a small Spotify Web API client.

Everything that comes from the network is untrusted. :class:`Http` therefore

- only speaks ``http`` and ``https``, and follows redirects itself, one hop at a time, checking
  every hop's scheme and host, up to ``max_redirects`` (requests that carry the bearer token
  follow none);
- enforces a **whole-request deadline** (wall clock over connecting, headers, every redirect,
  every retry and the whole body), not only a per-read timeout, so a server that trickles one
  byte every few seconds or lies about ``Content-Length`` costs at most the deadline;
- caps the body size: a declared ``Content-Length`` over the cap is refused before reading, and
  the stream is cut as soon as it passes the cap; bodies are streamed in chunks (to a file when a
  ``sink`` is given), never read whole;
- honours ``Retry-After`` on 429 and retries 5xx and connection errors with exponential back-off,
  but never beyond the deadline; a body that stops short or stalls is not retried.

:class:`SpotifyApi` is ``spotipy.Spotify`` with ``SpotifyClientCredentials`` (ids from
``SPOTIPY_CLIENT_ID`` / ``SPOTIPY_CLIENT_SECRET``; the token in a ``MemoryCacheHandler``, never
in a ``.cache`` file) sending through :class:`SpotifySession`, a requests.Session whose every
request is an :class:`Http` fetch (deadline, size cap, bounded Retry-After, no redirects) and is
refused unless it goes to the API's or the token service's origin. A ``next`` link is checked to
lie on the API's origin (scheme, host, port) before ``Spotify.next`` follows it. spotipy's logger
is kept at CRITICAL: its DEBUG lines print the Authorization headers.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from http.client import responses as HTTP_REASONS
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import loads_json

# endpoints; the environment can point them elsewhere (a proxy, a mirror, or a test server)
ENDPOINTS = {
    "GENREKIT_SPOTIFY_API": "https://api.spotify.com/v1/",
    "GENREKIT_SPOTIFY_TOKEN_URL": "https://accounts.spotify.com/api/token",
    "GENREKIT_DEEZER_API": "https://api.deezer.com/",
    "GENREKIT_ITUNES_API": "https://itunes.apple.com/",
}
API_MAX_BYTES = 10_000_000  # one JSON page of the Web API, Deezer or iTunes is far smaller
CHUNK_BYTES = 65536
SPOTIFY_ID = re.compile(r"[0-9A-Za-z]{22}")  # Spotify ids are 22 base62 characters
REDIRECTS = (301, 302, 303, 307, 308)


def endpoint(name: str) -> str:
    """The URL of ``name``: the environment variable of that name when set, else
    the default in :data:`ENDPOINTS`."""
    return os.environ.get(name) or ENDPOINTS[name]


def is_spotify_id(value) -> bool:
    """Whether ``value`` is a Spotify id (22 base62 characters).

    >>> is_spotify_id("4uLU6hMCjMI75M1A2tKUQC"), is_spotify_id("../etc/passwd")
    (True, False)"""
    return isinstance(value, str) and SPOTIFY_ID.fullmatch(value) is not None


def printable(value, max_len: int = 60) -> str:
    """Untrusted text made safe for one line of a log or a Markdown report."""
    s = ascii(value if isinstance(value, str) else str(value))[1:-1]
    s = s.replace("|", "/").replace("`", "'")
    return s if len(s) <= max_len else s[: max_len - 3] + "..."


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None for anything else."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return None
    scheme = (u.scheme or "").lower()
    if scheme not in ("http", "https") or not u.hostname:
        return None
    return scheme, u.hostname.lower(), port or (443 if scheme == "https" else 80)


class NetworkError(DataError):
    """A request that failed (after retries) or that was refused as unsafe."""


class Refused(NetworkError):
    """The server sent something genrekit will not take: a bad scheme or redirect, a body over the
    size cap, a body that stopped short, a deadline passed. Not retried."""


class _Transient(Exception):
    pass


@dataclass
class Response:
    """One HTTP answer: status, headers, final URL and body (empty when the body went to a
    sink), with the bytes received."""
    status: int
    headers: dict
    url: str
    body: bytes = b""  # empty when the body went to a sink
    n_bytes: int = 0

    def json(self):
        """The body parsed as JSON, or None when it is not JSON in UTF-8."""
        try:
            return loads_json(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


def _retry_after(value, default: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if v == v and v >= 0 else default  # NaN or negative: use the default


class Http:
    """GET/POST with a whole-request deadline, a size cap, checked redirects and retries."""

    def __init__(self, retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 15.0,
                 deadline_s: float = 120.0, max_wait_s: float = 60.0, max_redirects: int = 5, sleep=time.sleep,
                 session: requests.Session | None = None):
        self.session = requests.Session() if session is None else session
        self.session.trust_env = True
        self.session.headers["User-Agent"] = "genrekit (music genre research toolkit)"
        self.session.headers["Accept-Encoding"] = "identity"  # no compression: sizes are what they say
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.deadline_s, self.max_wait_s, self.max_redirects = deadline_s, max_wait_s, max_redirects
        self.sleep = sleep

    # -- public --------------------------------------------------------------------------------

    def fetch(self, url: str, *, params: dict | None = None, method: str = "GET", data: dict | None = None,
              headers: dict | None = None, max_bytes: int = API_MAX_BYTES, sink=None,
              deadline_s: float | None = None, follow_redirects: bool = True) -> Response:
        """One request, retried within the deadline. ``sink`` (a binary file) receives a 2xx body;
        other bodies are kept in memory (at most 64 kB). Raises :class:`NetworkError`."""
        deadline = time.monotonic() + (self.deadline_s if deadline_s is None else deadline_s)
        where = _where(url)
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2 ** attempt
            try:
                r = self._once(url, params=params, method=method, data=data, headers=headers or {},
                               max_bytes=max_bytes, sink=sink, deadline=deadline,
                               follow_redirects=follow_redirects)
            except _Transient as exc:
                last = str(exc)
            else:
                if r.status == 429:
                    last, wait = "HTTP 429", _retry_after(r.headers.get("Retry-After"), wait)
                elif r.status >= 500:
                    last = f"HTTP {r.status}"
                else:
                    return r
            if attempt == self.retries:
                break
            wait = min(wait, self.max_wait_s)
            if time.monotonic() + wait >= deadline:
                raise NetworkError(f"{where}: gave up, the {self._deadline_text(deadline_s)} deadline "
                                   f"would pass ({last})")
            self.sleep(wait)
        raise NetworkError(f"{where}: gave up after {self.retries + 1} tries ({last})")

    def json(self, url: str, params: dict | None = None) -> dict | None:
        """A public JSON API (Deezer, iTunes): the parsed object on HTTP 200, else None."""
        r = self.fetch(url, params=params)
        if r.status != 200:
            return None
        d = r.json()
        return d if isinstance(d, dict) else None

    # -- one try -------------------------------------------------------------------------------

    def _deadline_text(self, deadline_s) -> str:
        return f"{self.deadline_s if deadline_s is None else deadline_s:g} s"

    def _once(self, url, *, params, method, data, headers, max_bytes, sink, deadline, follow_redirects) -> Response:
        cur = url
        for hop in range(self.max_redirects + 1):
            if origin(cur) is None:
                what = "redirect" if hop else "URL"
                raise Refused(f"{what} to a {_scheme(cur)} URL refused (only http and https)")
            r = self._open(method, cur, deadline, params=params if hop == 0 else None, data=data,
                           headers=headers)
            if r.status_code in REDIRECTS:
                loc = r.headers.get("Location")
                r.close()
                if not follow_redirects:
                    raise Refused(f"{_where(cur)}: unexpected redirect refused")
                if not loc:
                    raise Refused(f"{_where(cur)}: redirect without a Location")
                cur = urljoin(r.url, loc)
                if r.status_code == 303:
                    method, data = "GET", None
                continue
            try:
                return self._read(r, deadline, max_bytes, sink if 200 <= r.status_code < 300 else None)
            finally:
                r.close()
        raise Refused(f"{_where(url)}: more than {self.max_redirects} redirects")

    def _open(self, method, url, deadline, **kw):
        """Send the request and wait for the status line and headers, within the deadline (in a
        helper thread, so that headers trickled byte by byte cannot hold the fetch)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused(f"{_where(url)}: deadline passed")
        t = min(self.timeout_s, remaining)
        state: dict = {}
        lock, done = threading.Lock(), threading.Event()

        def work():
            try:
                # requests' own Session.request, also under a subclass that routes its request() here
                r = requests.Session.request(self.session, method, url, stream=True, allow_redirects=False,
                                             timeout=(t, t), **kw)
            except requests.RequestException as exc:
                r, state["exc"] = None, exc
            except Exception as exc:  # noqa: BLE001 - reported below, in the caller's thread
                r, state["exc"] = None, exc
            with lock:
                if state.get("abandoned") and r is not None:
                    r.close()
                else:
                    state["r"] = r
            done.set()

        threading.Thread(target=work, daemon=True, name="genrekit-http").start()
        if not done.wait(remaining):
            with lock:
                state["abandoned"] = True
                r = state.pop("r", None)
            if r is not None:
                r.close()
            raise Refused(f"{_where(url)}: deadline passed waiting for the response")
        exc = state.get("exc")
        if exc is not None:
            if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                raise _Transient(type(exc).__name__)
            if isinstance(exc, requests.RequestException):  # invalid URL, too many headers, ...
                raise Refused(f"{_where(url)}: {type(exc).__name__}")
            raise exc
        return state["r"]

    def _read(self, r, deadline, max_bytes, sink) -> Response:
        where = _where(r.url)
        declared = r.headers.get("Content-Length")
        try:
            declared = int(declared) if declared is not None else None
        except ValueError:
            raise Refused(f"{where}: invalid Content-Length") from None
        if declared is not None and declared > max_bytes and r.status_code < 300:
            raise Refused(f"{where}: body of {declared} bytes is over the {max_bytes}-byte cap")
        small = sink is None and r.status_code >= 300  # an error body: its start is enough
        cap = min(max_bytes, 65536) if small else max_bytes
        raw = r.raw
        sock = _socket(raw)
        read = _reader(raw)
        chunks, n = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Refused(f"{where}: deadline passed after {n} bytes")
            try:
                if sock is not None:
                    try:
                        sock.settimeout(min(self.timeout_s, remaining))
                    except OSError:
                        sock = None
                chunk = read(CHUNK_BYTES)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as _:
                why = "deadline passed" if time.monotonic() >= deadline else "read timed out"
                raise Refused(f"{where}: {why} after {n} bytes") from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise Refused(f"{where}: body ended early after {n} bytes ({type(exc).__name__})") from None
            if not chunk:
                break
            n += len(chunk)
            if n > cap:
                if small:
                    break
                raise Refused(f"{where}: body passed the {max_bytes}-byte cap")
            if sink is not None:
                sink.write(chunk)
            else:
                chunks.append(chunk)
        if declared is not None and n < declared and r.status_code < 300:
            raise Refused(f"{where}: body ended after {n} of {declared} bytes")
        return Response(r.status_code, r.headers, r.url, b"".join(chunks), n)


def _socket(raw):
    """The socket under a streamed response (so each read can wait no longer than the time left),
    or None where the library's internals do not show it (reads then wait at most ``timeout_s``)."""
    try:
        sock = raw._fp.fp.raw._sock
        sock.gettimeout()
        return sock
    except (AttributeError, OSError):
        return None


def _reader(raw):
    """A function reading at most n bytes with at most one socket read (so that the deadline is
    checked between reads however slowly the bytes come): urllib3's ``read1`` (urllib3 >= 2.3),
    else http.client's. Bodies are taken as sent (no decoding: Accept-Encoding is identity)."""
    if hasattr(raw, "read1"):
        return lambda n: raw.read1(n, decode_content=False)
    fp = getattr(raw, "_fp", None)
    if fp is not None and hasattr(fp, "read1"):
        return fp.read1
    return lambda n: raw.read(n, decode_content=False)


def _scheme(url: str) -> str:
    s = urlsplit(url).scheme if isinstance(url, str) else ""
    return printable(s or "scheme-less", 20) + ":"


def _where(url: str) -> str:
    """Scheme, host and path of a URL for messages: no query string (it may hold a signature)."""
    try:
        u = urlsplit(url)
        return printable(f"{u.scheme}://{u.netloc.rpartition('@')[2]}{u.path}", 120)
    except ValueError:
        return "(invalid URL)"


# -- the Spotify Web API, through spotipy ----------------------------------------------------

logging.getLogger("spotipy").setLevel(logging.CRITICAL)  # its DEBUG lines carry the credentials


def _as_requests_response(r: Response) -> requests.Response:
    """A :class:`Response` (body read in full under the cap) as the requests.Response spotipy reads."""
    out = requests.Response()
    out.status_code, out.url, out.encoding = r.status, r.url, "utf-8"
    out.headers = requests.structures.CaseInsensitiveDict(r.headers)
    out.reason = HTTP_REASONS.get(r.status, "")
    out._content, out._content_consumed = r.body, True
    return out


class SpotifySession(requests.Session):
    """The session spotipy sends through: every request goes to the API's origin (``api_origin``)
    or is the POST to ``token_url``, or it is refused; it follows no redirect, and is fetched by
    :class:`Http` (whole-request deadline, body-size cap, 429 and 5xx retried with back-off and a
    Retry-After bounded by ``max_wait_s``, never past the deadline). spotipy's ``timeout`` and
    ``proxies`` arguments are not used: the deadline and per-read timeout are Http's, proxies come
    from the environment; ``allow_redirects`` is ignored (a redirect is refused)."""

    def __init__(self, api_origin: tuple, token_url: str, like: Http | None = None):
        super().__init__()
        self.api_origin, self.token_url = api_origin, token_url
        self.max_bytes = API_MAX_BYTES
        h = like or Http()
        self.http = Http(retries=h.retries, backoff_s=h.backoff_s, timeout_s=h.timeout_s, deadline_s=h.deadline_s,
                         max_wait_s=h.max_wait_s, max_redirects=0, sleep=h.sleep, session=self)

    def request(self, method, url, params=None, data=None, headers=None, timeout=None, proxies=None,
                verify=True, json=None, allow_redirects=False, **unsupported):
        """``requests.Session.request`` as spotipy calls it, through :class:`Http`: only to the
        API's origin (or a POST to the token URL), no redirects; other arguments refused."""
        if unsupported or json is not None or verify is not True:
            raise TypeError(f"SpotifySession does not take {sorted(unsupported) or ['json/verify']}")
        if origin(url) != self.api_origin and not (method.upper() == "POST" and url == self.token_url):
            raise Refused(f"{_where(url)} is not on the Spotify API host; the token is not sent there")
        r = self.http.fetch(url, method=method, params=params, data=data, headers=headers,
                            follow_redirects=False, max_bytes=self.max_bytes)
        return _as_requests_response(r)


# what spotipy raises on an answer of the wrong shape (it indexes the parsed JSON directly), and
# json's error on an answer nested too deeply
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)


class SpotifyApi:
    """The few Web API calls fetch-spotify needs, on ``spotipy.Spotify`` with client credentials
    (token in memory only: ``MemoryCacheHandler``, no ``.cache`` file)."""

    def __init__(self, client_id: str, client_secret: str, http: Http | None = None,
                 api_base: str | None = None, token_url: str | None = None):
        import spotipy
        from spotipy.cache_handler import MemoryCacheHandler
        from spotipy.oauth2 import SpotifyClientCredentials

        self.api_base = api_base or endpoint("GENREKIT_SPOTIFY_API")
        if not self.api_base.endswith("/"):
            self.api_base += "/"
        self.token_url = token_url or endpoint("GENREKIT_SPOTIFY_TOKEN_URL")
        self.origin = origin(self.api_base)
        if self.origin is None:
            raise DataError(f"the Spotify API base {printable(self.api_base)} is not an http(s) URL")
        if origin(self.token_url) is None:
            raise DataError(f"the Spotify token URL {printable(self.token_url)} is not an http(s) URL")
        self.session = SpotifySession(self.origin, self.token_url, like=http)
        self.auth = SpotifyClientCredentials(client_id, client_secret, requests_session=self.session,
                                             cache_handler=MemoryCacheHandler())
        self.auth.OAUTH_TOKEN_URL = self.token_url
        self.sp = spotipy.Spotify(auth_manager=self.auth, requests_session=self.session)
        self.sp.prefix = self.api_base

    def __repr__(self) -> str:  # never show the credentials
        return f"SpotifyApi({self.api_base!r})"

    def bearer(self) -> str:
        """A valid access token (fetched when none is held or it is about to expire)."""
        from spotipy.exceptions import SpotifyOauthError

        try:
            tok = self.auth.get_access_token(as_dict=False)
        except Refused as exc:
            raise NetworkError(f"Spotify token request refused: {exc}") from None
        except NetworkError as exc:
            raise NetworkError(f"cannot reach the Spotify accounts service: {exc}") from None
        except SpotifyOauthError as exc:
            why = exc.error if isinstance(exc.error, str) and len(exc.error) < 40 else "refused"
            raise DataError(f"Spotify rejected the credentials ({printable(why, 40)}); "
                            "check SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET") from None
        except _MALFORMED:
            raise NetworkError("Spotify token request failed (a malformed answer)") from None
        if not isinstance(tok, str) or not tok or not tok.isprintable():
            self.auth.cache_handler.save_token_to_cache(None)
            raise NetworkError("Spotify token request failed (no usable token in the answer)")
        return tok

    def is_api_url(self, url) -> bool:
        """Whether ``url`` is on the Web API's own origin."""
        return isinstance(url, str) and origin(url) == self.origin

    def _call(self, what: str, fn, *args, **kwargs) -> dict:
        """One spotipy call; its errors and malformed answers as one-line :class:`NetworkError`."""
        from spotipy.exceptions import SpotifyException

        self.bearer()  # credential and token-service errors as one line (spotipy then uses it)
        try:
            try:
                d = fn(*args, **kwargs)
            except SpotifyException as exc:
                if exc.http_status != 401:
                    raise
                self.auth.cache_handler.save_token_to_cache(None)  # expired early: one fresh token
                self.bearer()
                d = fn(*args, **kwargs)
        except SpotifyException as exc:
            detail = printable(str(exc.msg).rpartition("\n ")[2], 80) if exc.msg else what
            raise NetworkError(f"Spotify API error {exc.http_status}: {detail} ({what})") from None
        except _MALFORMED as exc:
            raise NetworkError(f"Spotify API: {what} gave a malformed answer ({type(exc).__name__})") from None
        if not isinstance(d, dict):
            raise NetworkError(f"Spotify API: {what} did not return a JSON object")
        return d

    def get(self, url: str, params: dict | None = None) -> dict:
        """GET a Web API path (relative to the base) or an absolute URL on the API's own origin."""
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url) and not self.is_api_url(url):
            raise Refused(f"{_where(url)} is not on the Spotify API host; the token is not sent there")
        if not self.is_api_url(url):
            url = self.api_base + url
        return self._call(_where(url), self.sp._get, url, **(params or {}))

    def search_playlists(self, query: str, limit: int, market: str | None = None) -> list[dict]:
        """Playlists found for ``query`` (at most ``limit``, 1 to 50), malformed items left out."""
        d = self._call("search", self.sp.search, query, limit=max(1, min(50, limit)), type="playlist", market=market)
        items = (d.get("playlists") or {}).get("items") if isinstance(d.get("playlists"), dict) else None
        return [p for p in (items or []) if isinstance(p, dict)] if isinstance(items, list) else []

    def playlist_pages(self, playlist_id: str, market: str | None = None, max_pages: int = 200, refused=None):
        """The pages of a playlist's items, following ``next`` (``Spotify.next``) only on the API's
        own origin."""
        what = f"playlist {playlist_id}"
        page = self._call(what, self.sp.playlist_items, playlist_id, limit=100, market=market,
                          additional_types=("track",))
        seen = set()
        for _ in range(max_pages):
            yield page
            nxt = page.get("next")
            if not nxt:
                return
            if not self.is_api_url(nxt):
                if refused is not None:
                    refused.append(f"playlist {playlist_id}: a `next` link to another host "
                                   f"({_where(nxt) if isinstance(nxt, str) else 'not a URL'}) was refused; "
                                   "the rest of the playlist is skipped")
                return
            if nxt in seen:
                return  # a loop of next links
            seen.add(nxt)
            page = self._call(what, self.sp.next, page)


def spotify_api(http: Http | None = None) -> SpotifyApi:
    """A :class:`SpotifyApi` from SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET (token kept in memory)."""
    cid, secret = os.environ.get("SPOTIPY_CLIENT_ID"), os.environ.get("SPOTIPY_CLIENT_SECRET")
    if not cid or not secret:
        raise DataError("Spotify credentials missing: set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET "
                        "(from a Spotify developer app) in the environment")
    return SpotifyApi(cid, secret, http=http)
