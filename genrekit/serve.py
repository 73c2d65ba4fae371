"""``genrekit serve``: a run as a local web app and JSON API.

``/v1/model`` describes the run; ``/v1/predict`` gives ``genrekit predict``'s results for
uploaded files (the same code: :class:`genrekit.predict.Predictions`); ``/v1/stream`` (a
websocket) takes PCM from a microphone and answers a rolling genre estimate over the last
``STREAM_SECONDS`` heard; with ``--library DIR`` (read only) ``/v1/suggest``, ``/v1/label``
and ``/v1/adapt`` run genrekit's suggest -> label -> adapt loop from the browser, adapting
into a new run folder beside the old one and switching to it. The page at ``/`` is static
package data (``genrekit/serve_static``); nothing is fetched from anywhere else.

Safety: bound to 127.0.0.1 by default; any other address needs ``--token`` (every ``/v1``
request then carries ``Authorization: Bearer T``, compared in constant time). Without a token
the Host header must name a loopback address (no DNS rebinding) and a browser's Origin must be
the server's own. Uploads are bounded (``--max-upload-mb``: 413 before the body is read when
it says its length, else as soon as it passes the limit; ``--max-seconds`` of audio), written
to private temporary files (never under the client's name) and deleted after. At most
``--workers`` analyses run at once and ``--queue`` wait; beyond that the answer is 503 with
Retry-After. Every failure is a JSON ``{"error": "<one line>"}``, the line the CLI prints.

The web framework (Starlette, uvicorn) is the ``serve`` extra and is imported only here, when
the server is made.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from threadpoolctl import threadpool_limits

from genrekit.adapt import Labelled, adapt, adaptable_run, suggest
from genrekit.data_tools.audio import AUDIO_EXTENSIONS, audio_files_under, audio_info
from genrekit.data_tools.errors import AudioDecodeError
from genrekit.data_tools.fsio import TempScheme, remove_stale_temporaries, unlink_quietly
from genrekit.errors import UserError
from genrekit.evaluation.calibration import apply_temperature
from genrekit.predict import (
    MIN_SECONDS,
    Prediction,
    Predictions,
    analyse_file,
    batch_probabilities,
    waveform_windows,
    window_geometry,
)
from genrekit.runs import Run
from genrekit.tasks import task_of

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
MAX_UPLOAD_MB = 50.0  # --max-upload-mb: the whole request body
# --max-seconds: audio per uploaded file (predict reads any length; a server bounds it)
MAX_SECONDS = 3600.0
MAX_FILES = 32  # files per /v1/predict request
STREAM_SECONDS = 10.0  # /v1/stream estimates over the last this many seconds (a ring buffer)
MAX_STREAMS = 16  # websockets open at once (each holds a STREAM_SECONDS ring buffer)
STREAM_MAX_MESSAGE = 1 << 20  # bytes per websocket message (16 s of float32 at 16 kHz)
RETRY_AFTER_S = 1
STATIC = Path(__file__).with_name("serve_static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
TRUE = ("1", "true", "yes", "on")
TOKEN_CHARS = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{8,}")  # an HTTP token (RFC 9110 tchar)
GENRE_NAME = re.compile(r"[^/\\\x00-\x1f]{1,64}")


class Problem(Exception):
    """A request refused: an HTTP status and one line for ``{"error": ...}``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Busy(Problem):
    """503 with ``Retry-After``: every worker and queue place is taken."""
    def __init__(self):
        super().__init__(503, "the server is busy (every worker and queue place is taken); "
                              "retry shortly", {"Retry-After": str(RETRY_AFTER_S)})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse, with one line, to listen beyond this machine without a token."""
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        raise UserError("--token must be at least 8 characters: letters, digits and "
                        "!#$%&'*+-.^_`|~ (a browser sends it as a websocket subprotocol, which "
                        "allows no others)")
    if not is_loopback(host) and token is None:
        raise UserError(f"--host {host} is reachable from other machines: give --token T "
                        "(clients then send 'Authorization: Bearer T'), or keep the default "
                        "--host 127.0.0.1")


def _query_int(q, name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise Problem(400, f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= v <= hi:
        raise Problem(400, f"{name} must be from {lo} to {hi}, got {v}")
    return v


def _query_probability(q, name: str) -> float | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not 0 <= v <= 1:
        raise Problem(400, f"{name} must be a probability in [0, 1], got {raw!r}")
    return v


def _reject_param(q):
    """``?reject=``: 1/true (the run's rule), ``per_genre`` (its per-genre thresholds, as
    ``predict --reject-per-genre``), else none."""
    v = (q.get("reject") or "").lower()
    return "per_genre" if v in ("per_genre", "per-genre") else v in TRUE


def _display_name(name: str | None, i: int) -> str:
    """What a result calls an upload: the client's file name without folders (shown, never used
    as a path), or ``upload-<i>``."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable())[:200].strip()
    return base or f"upload-{i}"


def _sniff_suffix(path: Path, name: str) -> str:
    """The extension the audio reader expects, from the file's first bytes (the client's name
    only when they say nothing): a WAV or AU header is then checked as predict checks it."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return ".wav"
    if head[:4] == b".snd":
        return ".au"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ".mp3"
    ext = os.path.splitext(name)[1].lower()
    return ext if ext in AUDIO_EXTENSIONS else ".upload"


TMP_PREFIX = "genrekit-serve-"  # <system temp>/genrekit-serve-<pid>-<random>: a server's uploads


def _remove_upload_folder(path: Path, match: re.Match) -> int:
    """A dead server's upload folder is deleted when it is a real folder of this user's: 1,
    else 0."""
    try:
        if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
            return 0
    except OSError:
        return 0
    shutil.rmtree(path, ignore_errors=True)
    return 1


UPLOAD_FOLDERS = TempScheme(re.compile(re.escape(TMP_PREFIX) + r"(?P<pid>\d+)-.*\Z", re.DOTALL),
                            _remove_upload_folder)


def remove_stale_upload_folders() -> int:
    """Remove the upload folders that killed servers of this user left in the temporary folder."""
    return remove_stale_temporaries(tempfile.gettempdir(), schemes=(UPLOAD_FOLDERS,))


class TimelineRows:
    """A :class:`genrekit.predict.Timeline` kept in memory for JSON: the per-window genre
    probabilities, calibrated with the run's temperature as the CSV's are."""

    def __init__(self, labels: list[str], temperature: float):
        self.labels, self.T, self.rows = labels, temperature, []

    def add(self, start_s: float, end_s: float, proba) -> None:
        """Add one window's row: start and end seconds, top genre and calibrated probabilities."""
        p = apply_temperature(np.asarray(proba, dtype=np.float64), self.T)
        self.rows.append({"start_s": round(float(start_s), 3), "end_s": round(float(end_s), 3),
                          "genre": self.labels[int(np.argmax(p))],
                          "probabilities": [round(float(v), 4) for v in p]})


class Ring:
    """The last ``n`` samples heard (a fixed buffer: memory is bounded however long the stream)."""

    def __init__(self, n: int):
        self.buf, self.filled = np.zeros(n, dtype=np.float32), 0

    def push(self, x: np.ndarray) -> None:
        """Append the samples ``x``; only the last ``n`` are kept."""
        n, m = len(self.buf), len(x)
        if m >= n:
            self.buf[:] = x[-n:]
        elif m:
            self.buf[:n - m] = self.buf[m:]
            self.buf[n - m:] = x
        self.filled = min(n, self.filled + m)

    def view(self) -> np.ndarray:
        """The samples heard so far, oldest first (at most ``n``; a view of the buffer).

        >>> r = Ring(3)
        >>> r.push(np.array([1, 2], dtype=np.float32))
        >>> r.view().tolist()
        [1.0, 2.0]
        >>> r.push(np.array([3, 4], dtype=np.float32))
        >>> r.view().tolist()
        [2.0, 3.0, 4.0]"""
        return self.buf[len(self.buf) - self.filled:]


def checked_run_and_library(run_path, library=None) -> tuple[Run, Path | None]:
    """The run to serve and the library's real path, or one line saying why not (checked before
    anything else starts, and before the serve extra is needed)."""
    run = Run(run_path)
    if not task_of(run).classifies:
        raise UserError(f"{run.path} is a {run.task} run; genrekit serve serves genre classifiers")
    if library is None:
        return run, None
    lib = Path(library)
    if not lib.is_dir():
        raise UserError(f"--library {lib}: folder not found")
    adaptable_run(run, "--library (suggest, label, adapt)")
    return run, Path(os.path.realpath(lib))


class UploadParts:
    """python-multipart's callbacks for one request: each file part is streamed into a private
    temporary file in ``folder`` (``mkstemp``, never the client's name), at most MAX_FILES of
    them; plain form fields are ignored."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: list[list] = []  # [path, display name, open file]
        self.headers: dict = {}
        self.field, self.value, self.current = b"", b"", None

    def callbacks(self) -> dict:
        """The callbacks, by python-multipart's names."""
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self):
        """A new part: its headers start empty."""
        self.headers, self.current = {}, None

    def on_header_field(self, data, start, end):
        """More of the current header's name."""
        self.field += data[start:end]

    def on_header_value(self, data, start, end):
        """More of the current header's value."""
        self.value += data[start:end]

    def on_header_end(self):
        """The header is complete: kept under its lower-cased name."""
        self.headers[self.field.decode("latin-1").lower()] = self.value
        self.field, self.value = b"", b""

    def on_headers_finished(self):
        """The part's headers are complete: a file part (one with a ``filename``) gets its
        private temporary file; 413 past ``MAX_FILES`` files."""
        from python_multipart.multipart import parse_options_header

        _, disp = parse_options_header(self.headers.get("content-disposition", b""))
        if b"filename" not in disp:
            return  # a plain form field: ignored
        if len(self.files) >= MAX_FILES:
            raise Problem(413, f"more than {MAX_FILES} files in one request")
        fd, path = tempfile.mkstemp(dir=self.folder, prefix="upload-")
        name = _display_name(disp[b"filename"].decode("utf-8", "replace"), len(self.files) + 1)
        item = [Path(path), name, os.fdopen(fd, "wb")]
        self.files.append(item)
        self.current = item

    def on_part_data(self, data, start, end):
        """More of a file part's bytes, written to its file."""
        if self.current is not None:
            self.current[2].write(data[start:end])

    def on_part_end(self):
        """The part is complete: its file is closed."""
        if self.current is not None:
            self.current[2].close()
            self.current = None

    def finish(self) -> list[tuple[Path, str]]:
        """The complete files as ``(private path, display name)``, each renamed to end in the
        extension its first bytes call for."""
        out = []
        for path, name, fh in self.files:
            fh.close()
            final = path.with_name(path.name + _sniff_suffix(path, name))
            os.rename(path, final)
            out.append((final, name))
        return out

    def discard(self) -> None:
        """Close and delete every file written so far."""
        Service._remove([f[0] for f in self.files], [f[2] for f in self.files])


class Service:
    """What the server does, without the web framework: the current run (switched by adapt),
    the bounded worker pool, the library and its labels held in memory."""

    def __init__(self, run_path, library=None, workers: int = 2, queue: int = 16,
                 max_upload_mb: float = MAX_UPLOAD_MB, max_seconds: float = MAX_SECONDS, log=None):
        if not 1 <= workers <= 64:
            raise UserError(f"--workers must be from 1 to 64, got {workers}")
        if not 0 <= queue <= 10000:
            raise UserError(f"--queue must be from 0 to 10000, got {queue}")
        if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= 100000):
            raise UserError("--max-upload-mb must be a positive number of megabytes, "
                            f"got {max_upload_mb!r}")
        if not (math.isfinite(max_seconds) and MIN_SECONDS <= max_seconds):
            raise UserError(f"--max-seconds must be at least {MIN_SECONDS:g}, got {max_seconds!r}")
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        run, self.library = checked_run_and_library(run_path, library)
        self.origin = run.path  # adapted runs are named after it: <origin>-adapted-<k>
        self.workers, self.queue = workers, queue
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_upload_mb, self.max_seconds = max_upload_mb, max_seconds
        self._load(run)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genrekit-serve")
        self._admitted, self._count_lock = 0, threading.Lock()
        self._adapt_lock = threading.Lock()
        self.streams = 0
        # real path -> (path within the library, genre)
        self.labels: dict[str, tuple[str, str]] = {}
        remove_stale_upload_folders()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))  # 0700: ours alone
        self.started = time.time()

    # -- the run -----------------------------------------------------------------------------

    def _load(self, run: Run) -> None:
        """Load ``run``'s model and compile its calls before any request uses it, then switch."""
        run.model()
        if not task_of(run).batchable:  # fusion's two inputs: predicted file by file (no stream)
            self.run = run
            return
        sr = run.feature_config.sr
        t = np.arange(int(max(window_geometry(run)[0], 2 * MIN_SECONDS * sr))) / sr
        y = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        with threadpool_limits(limits=1, user_api="blas"):
            x = waveform_windows(y, run)
            for pooled in (False, True):
                batch_probabilities(run.model(), [x], pooled=pooled and self._has_pooling(run))
        self.run = run

    @staticmethod
    def _has_pooling(run: Run) -> bool:
        try:
            run.model().get_layer("track_pooling")
        except ValueError:
            return False
        return True

    def model_info(self) -> dict:
        """``GET /v1/model``'s answer: the run served, its labels, windows, calibration and
        rejection, end-of-training figures and adaptation, the server's limits, the stream format."""
        run = self.run
        win, hop = window_geometry(run, streaming=True)
        sr = run.feature_config.sr
        try:
            r = Predictions([], run, reject=True).rejector
            rejection = {"rule": r.rule, "threshold": r.threshold, "source": r.source}
        except UserError as exc:
            rejection = {"rule": None, "note": str(exc)}
        try:
            per = Predictions([], run, reject="per_genre").rejector.per_genre
            if per is not None:
                rejection["per_genre_thresholds"] = dict(zip(run.labels, per, strict=True))
        except (UserError, TypeError, ValueError):
            pass
        metrics = None
        p = run.path / "train_metrics.json"
        if p.is_file():
            try:
                metrics = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                metrics = None
        a = run.config.get("adapt")
        return {
            "run": run.path.name, "task": run.task, "arch": run.arch, "feature_kind": run.kind,
            "labels": list(run.labels), "sample_rate": sr, "window_s": win / sr, "hop_s": hop / sr,
            "feature_config": run.config.get("feature_config"),
            "calibration": run.calibration, "temperature": run.temperature, "rejection": rejection,
            "metrics": metrics,
            "adapted": None if not a else {k: a.get(k) for k in (
                "tracks", "tracks_per_genre", "new_genres", "before_accuracy", "after_accuracy")},
            "library": self.library is not None,
            "limits": {"max_upload_mb": self.max_upload_mb, "max_seconds": self.max_seconds,
                       "max_files": MAX_FILES, "workers": self.workers, "queue": self.queue},
            "stream": {"sample_rate": sr, "hop_s": hop / sr,
                       "buffer_s": max(STREAM_SECONDS, win / sr),
                       "format": "float32 little-endian mono PCM, binary messages"},
        }

    # -- the pool -----------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self):
        """A place among the ``workers + queue`` admitted requests, or :class:`Busy`."""
        with self._count_lock:
            if self._admitted >= self.workers + self.queue:
                raise Busy()
            self._admitted += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._admitted -= 1

    async def run_in_pool(self, fn, *args):
        def call():
            # one BLAS thread per worker, as predict does (see Predictions.__iter__)
            with threadpool_limits(limits=1, user_api="blas"):
                return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    # -- predict -------------------------------------------------------------------------------

    def predict_paths(self, uploads: list[tuple[Path, str]], top_k: int = 3, reject: bool = False,
                      reject_threshold: float | None = None,
                      timeline: bool = False) -> tuple[int, dict]:
        """(HTTP status, body) for uploaded files ``(private path, display name)``: each result
        is ``genrekit predict``'s for that file, named by its display name."""
        run = self.run
        results: list[dict | None] = [None] * len(uploads)
        too_long = False
        todo = []
        for i, (path, name) in enumerate(uploads):
            try:
                native_sr, _, frames = audio_info(path)
                if native_sr > 0 and frames / native_sr > self.max_seconds:
                    results[i] = {"file": name,
                                  "error": f"{frames / native_sr:.0f} s long, more than "
                                           f"--max-seconds {self.max_seconds:g}"}
                    too_long = True
                    continue
            except AudioDecodeError:
                pass  # predict says why, in its own words
            todo.append(i)
        preds = Predictions([str(uploads[i][0]) for i in todo], run, top_k=top_k, reject=reject,
                            reject_threshold=reject_threshold)
        if not timeline:
            for i, r in zip(todo, preds, strict=True):
                r["file"] = uploads[i][1]
                results[i] = r
        else:
            needs = bool(preds.rejector and preds.rejector.needs_embedding)
            for i in todo:
                entry = Prediction(file=uploads[i][1])
                rows = TimelineRows(list(run.labels), preds.temperature)
                try:
                    p, pooled = analyse_file(str(uploads[i][0]), run, info=entry, timeline=rows, pooled=needs)
                except AudioDecodeError as exc:
                    entry["error"] = str(exc)
                else:
                    preds.answer(entry, p, pooled)
                    entry["timeline"] = {"labels": list(run.labels), "rows": rows.rows}
                results[i] = entry
        body = {"run": run.path.name, "results": results}
        failed = [r for r in results if "error" in r]
        if failed and len(failed) == len(results):
            body["error"] = f"{failed[0]['file']}: {failed[0]['error']}"
            return (413 if too_long else 422), body
        return 200, body

    async def read_uploads(self, request) -> list[tuple[Path, str]]:
        """The files of a ``multipart/form-data`` request, streamed into private temporary files
        (``mkstemp`` in the server's own 0700 folder) as they arrive; the body is refused with
        413 before it is read when its declared length is over the limit, else as soon as it
        passes it. The caller deletes the files."""
        from python_multipart.exceptions import MultipartParseError
        from python_multipart.multipart import MultipartParser, parse_options_header

        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        if ctype != b"multipart/form-data" or not params.get(b"boundary"):
            raise Problem(415, "send the audio as multipart/form-data (curl -F file=@clip.wav), "
                               f"not {ctype.decode('latin-1') or 'no content type'}")
        self._check_declared_length(request.headers.get("content-length"))
        parts = UploadParts(self.tmp)
        parser = MultipartParser(params[b"boundary"], parts.callbacks())
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > self.max_upload_bytes:
                    raise Problem(413, f"upload is over --max-upload-mb {self.max_upload_mb:g}")
                if chunk:
                    parser.write(chunk)
            parser.finalize()
            if not parts.files:
                raise Problem(400, "no file in the upload: send one or more files as "
                                   "multipart/form-data fields")
            return parts.finish()
        except MultipartParseError as exc:
            parts.discard()
            why = " ".join(str(exc).split())
            raise Problem(400, f"malformed multipart upload: {why}") from None
        except BaseException:
            parts.discard()
            raise

    def _check_declared_length(self, declared: str | None) -> None:
        """Refuse (413) a body whose Content-Length says it is over ``--max-upload-mb``."""
        if declared is None:
            return
        try:
            n = int(declared)
        except ValueError:
            raise Problem(400, f"bad Content-Length {declared!r}") from None
        if n > self.max_upload_bytes:
            raise Problem(413, f"upload of {n / 1048576:.1f} MB is over --max-upload-mb "
                               f"{self.max_upload_mb:g}")

    @staticmethod
    def _remove(paths, handles=()) -> None:
        for fh in handles:
            try:
                fh.close()
            except OSError:
                pass
        for p in paths:
            unlink_quietly(p)

    # -- the live stream ---------------------------------------------------------------------

    def estimate(self, y: np.ndarray, answerer: Predictions, t_s: float) -> dict:
        """A rolling estimate over waveform ``y`` (the ring buffer's contents), as predict
        would answer for a file holding that audio."""
        run = answerer.run
        entry = {"type": "estimate", "t_s": round(t_s, 3),
                 "span_s": round(len(y) / run.feature_config.sr, 3)}
        try:
            x = waveform_windows(y, run)
        except AudioDecodeError as exc:
            return {**entry, "type": "error", "error": str(exc)}
        if x is None:
            entry["silent"] = True
            return entry
        needs = bool(answerer.rejector and answerer.rejector.needs_embedding)
        [(p, pooled)] = batch_probabilities(run.model(), [x], pooled=needs)
        return answerer.answer(entry, p, pooled)

    # -- the library ------------------------------------------------------------------------

    def _need_library(self) -> Path:
        if self.library is None:
            raise Problem(404, "no library: start the server with --library DIR for suggest, "
                               "label and adapt")
        return self.library

    def library_file(self, rel: str) -> Path:
        """The real path of the audio file ``rel`` names within the library; refused with 403
        when it (or a link on the way) leads outside it, 404 when it is not an audio file there."""
        lib = self._need_library()
        if (not isinstance(rel, str) or not rel or "\x00" in rel or os.path.isabs(rel)
                or rel.startswith(("\\", "~"))):
            raise Problem(403, f"{rel!r} is not a path within the library")
        real = Path(os.path.realpath(lib / rel))
        if not self._inside(real):
            raise Problem(403, f"{rel} is outside the library")
        if not real.is_file():
            raise Problem(404, f"{rel}: file not found in the library")
        if real.suffix.lower() not in AUDIO_EXTENSIONS:
            raise Problem(403, f"{rel} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})")
        return real

    def library_listing(self) -> dict:
        """The library's audio files (paths within it; links out of it left out) and the labels
        given so far."""
        lib = self._need_library()
        files = [os.path.relpath(f, lib) for f in audio_files_under(lib) if self._inside(f)]
        return {"files": files, "labels": self.label_list()}

    def _inside(self, path) -> bool:
        """Whether ``path`` is in the library once links are followed."""
        real = Path(os.path.realpath(path))
        return self.library in real.parents

    def label_list(self) -> list[dict]:
        """The labels given so far, as ``{"path", "genre"}`` entries sorted by path."""
        return [{"path": rel, "genre": g} for rel, g in sorted(self.labels.values())]

    def label(self, rel, genre) -> dict:
        """Label the library file ``rel`` with ``genre`` (empty or None: remove its label; 400
        for an unusable genre name); returns the labels."""
        real = self.library_file(rel)
        if genre is None or genre == "":
            self.labels.pop(str(real), None)
            return {"labels": self.label_list()}
        if (not isinstance(genre, str) or not GENRE_NAME.fullmatch(genre.strip())
                or genre.strip().startswith(".") or genre.strip().lower() == "unknown"):
            raise Problem(400, f"{genre!r} is not a usable genre name")
        self.labels[str(real)] = (os.path.relpath(real, self.library), genre.strip())
        return {"labels": self.label_list()}

    def suggest(self, n: int) -> dict:
        """The ``n`` library tracks to label first (:func:`genrekit.adapt.suggest`), each with
        the label given so far; files reached through a link out of the library are left out."""
        lib = self._need_library()
        notes: list[str] = []
        # files reached through a link out of the library are never suggested
        outside = sum(not self._inside(f) for f in audio_files_under(lib))
        found = suggest(self.run, lib, n=n + outside, log=notes.append)
        items = [it for it in found if self._inside(it.path)][:n]
        by_real = {k: g for k, (_, g) in self.labels.items()}
        return {"run": self.run.path.name, "notes": notes, "suggestions": [
            {"path": os.path.relpath(s.path, lib), "guess": s.guess,
             "probability": round(s.probability, 4), "margin": round(s.margin, 4),
             "label": by_real.get(os.path.realpath(s.path))} for s in items]}

    def next_adapted_path(self) -> Path:
        """The first ``<origin>-adapted-<k>`` beside the original run that does not exist yet."""
        k = 1
        while True:
            p = self.origin.with_name(f"{self.origin.name}-adapted-{k}")
            if not p.exists() and not p.is_symlink():
                return p
            k += 1

    def adapt(self) -> dict:
        """Adapt the served run to the labelled library tracks (:func:`genrekit.adapt.adapt`)
        and serve the new run; 409 while another adapt runs, 400 with no labels. Returns both
        runs' labels and figures."""
        lib = self._need_library()
        if not self._adapt_lock.acquire(blocking=False):
            raise Problem(409, "an adapt is already running")
        try:
            if not self.labels:
                raise Problem(400, "no labelled tracks yet: label some with /v1/label first")
            items = [Labelled(Path(real), g, f"{g}/{Path(rel).with_suffix('').as_posix()}")
                     for real, (rel, g) in sorted(self.labels.items(), key=lambda kv: kv[1])]
            old = self.run
            before = self.model_info()
            out = self.next_adapted_path()
            result = adapt(old, out, items=items, source=str(lib))
            new = Run(result.run)
            self._load(new)
            # they are in the new run now (adapting again with them would be refused)
            self.labels.clear()
            self.log(f"genrekit serve: adapted {old.path.name} -> {new.path.name}; serving it")
            return {"run": new.path.name, "previous": old.path.name, "result": asdict(result),
                    "before": {"labels": before["labels"], "metrics": before["metrics"]},
                    "after": {"labels": list(new.labels), "metrics": self.model_info()["metrics"]}}
        finally:
            self._adapt_lock.release()

    def close(self) -> None:
        """Stop the worker pool and remove the server's upload folder."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- the web app ---------------------------------------------------------------------------------

def _json(body, status: int = 200, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


def _host_of(value: str) -> str:
    return urlsplit(f"//{value}").hostname or ""


def _authorised(headers, token: str | None) -> None:
    """Raise :class:`Problem` unless the request may use ``/v1``: the token when there is one,
    else a loopback Host (no DNS rebinding); a browser's Origin must be the server itself."""
    host = headers.get("host", "")
    origin = headers.get("origin")
    # an Origin "null" (a sandboxed page) is refused too
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        raise Problem(403, f"requests from {origin} are not allowed (only from this server's "
                           "own page)")
    # e.g. an <audio src> on another site
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Problem(403, "requests from other sites are not allowed (only from this server's "
                           "own page)")
    if token is None:
        if not is_loopback(_host_of(host)):
            raise Problem(403, f"Host {host!r} is not this machine; use http://127.0.0.1:PORT/")
        return
    auth = headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if (scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), token.encode())):
        raise Problem(401, "missing or wrong token: send 'Authorization: Bearer T' (the --token "
                           "the server was started with)", {"WWW-Authenticate": "Bearer"})


def _ws_token(websocket) -> dict:
    """A browser cannot set headers on a websocket: it may pass the token as the subprotocol
    ``bearer.<T>`` instead (never in the URL, which lands in logs)."""
    headers = dict(websocket.headers)
    for proto in websocket.scope.get("subprotocols", []):
        if proto.startswith("bearer.") and "authorization" not in headers:
            headers["authorization"] = "Bearer " + proto[len("bearer."):]
    return headers


def _guarded(handler, token: str | None):
    """``handler`` behind the ``/v1`` checks, its refusals answered as ``{"error": ...}``."""
    from starlette.requests import ClientDisconnect

    async def endpoint(request):
        try:
            _authorised(request.headers, token)
            return await handler(request)
        except Problem as exc:
            return _json({"error": exc.message}, exc.status, exc.headers)
        except UserError as exc:
            return _json({"error": " ".join(str(exc).split())}, 400)
        except MemoryError:
            return _json({"error": "out of memory (the input is too large for this machine)"}, 507)
        except ClientDisconnect:
            return _json({"error": "the client went away before the upload was complete"}, 400)
    return endpoint


async def _json_body(request) -> dict:
    """A request's JSON object (at most 64 KB), or :class:`Problem`."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Problem(415, "send a JSON body with Content-Type: application/json")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > 65536:
            raise Problem(413, "JSON body over 64 KB")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise Problem(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "the JSON body must be an object")
    return body


def _stream_rate(text: str, default: int) -> int | None:
    """The sample rate a stream's text message ``{"sr": <Hz>}`` names (``default`` when the
    object names none), None when it is not such a message or the rate is out of range."""
    try:
        cfg = json.loads(text)
        new_sr = int(cfg.get("sr", default)) if isinstance(cfg, dict) else None
    except (ValueError, TypeError):
        new_sr = None
    return new_sr if new_sr is not None and 1000 <= new_sr <= 384000 else None


class Endpoints:
    """The handlers of :func:`make_app`'s routes, over one :class:`Service`."""

    def __init__(self, service: Service, token: str | None):
        self.service, self.token = service, token
        self.static_files = ({p.name: p for p in STATIC.iterdir() if p.suffix in STATIC_TYPES}
                             if STATIC.is_dir() else {})

    async def model(self, request):
        """GET /v1/model: what the server serves (:meth:`Service.model_info`)."""
        return _json(self.service.model_info())

    async def predict(self, request):
        """POST /v1/predict: ``genrekit predict``'s results for the uploaded files."""
        service = self.service
        q = request.query_params
        top_k = _query_int(q, "top_k", 3, 1, 1000)
        reject = _reject_param(q)
        threshold = _query_probability(q, "reject_threshold")
        timeline = q.get("timeline", "").lower() in TRUE
        async with service.slot():
            uploads = await service.read_uploads(request)
            try:
                status, body = await service.run_in_pool(service.predict_paths, uploads, top_k,
                                                         reject, threshold, timeline)
            finally:
                Service._remove([p for p, _ in uploads])
        return _json(body, status)

    async def library_index(self, request):
        """GET /v1/library: the library's audio files and the labels given so far."""
        return _json(self.service.library_listing())

    async def library_get(self, request):
        """GET /v1/library/PATH: one audio file of the library (to listen to it)."""
        from starlette.responses import FileResponse

        real = self.service.library_file(request.path_params["path"])
        return FileResponse(real, headers={"Cache-Control": "no-store",
                                           "X-Content-Type-Options": "nosniff"})

    async def label(self, request):
        """POST /v1/label ``{"path", "genre"}``: label a library file (no genre unlabels it)."""
        self.service._need_library()
        body = await _json_body(request)
        return _json(self.service.label(body.get("path"), body.get("genre")))

    async def labels(self, request):
        """GET /v1/labels: the labels given so far."""
        self.service._need_library()
        return _json({"labels": self.service.label_list()})

    async def suggest(self, request):
        """POST /v1/suggest ``{"n"}``: the library's tracks most worth labelling."""
        service = self.service
        service._need_library()
        body = await _json_body(request)
        n = body.get("n", 10)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
            raise Problem(400, f"n must be a whole number from 1 to 1000, got {n!r}")
        service._need_library()
        async with service.slot():
            return _json(await service.run_in_pool(service.suggest, n))

    async def adapt(self, request):
        """POST /v1/adapt: adapt the run to the labels into a new run folder, and serve it."""
        service = self.service
        service._need_library()
        await _json_body(request)
        async with service.slot():
            return _json(await service.run_in_pool(service.adapt))

    async def stream(self, websocket):
        """WS /v1/stream: a rolling genre estimate of the PCM the client sends."""
        service, token = self.service, self.token
        try:
            _authorised(_ws_token(websocket), token)
            q = websocket.query_params
            top_k = _query_int(q, "top_k", 3, 1, 1000)
            reject = _reject_param(q)
            answerer = Predictions([], service.run, top_k=top_k, reject=reject)
            if not answerer.task.batchable:
                raise Problem(400, f"a {service.run.arch} run cannot be streamed (its answer needs more than "
                              "the windows heard: a fusion run needs a whole track's tempo)")
            if service.streams >= MAX_STREAMS:
                raise Problem(503, f"{MAX_STREAMS} streams are open already; retry later")
        except (Problem, UserError) as exc:
            await websocket.close(code=1008, reason=str(getattr(exc, "message", exc))[:120])
            return
        service.streams += 1  # the event loop's own count: no lock needed
        try:
            await self._stream(websocket, answerer)
        finally:
            service.streams -= 1

    async def _stream(self, websocket, answerer):
        from starlette.websockets import WebSocketDisconnect

        protos = [p for p in websocket.scope.get("subprotocols", []) if p.startswith("bearer.")]
        await websocket.accept(subprotocol=protos[0] if protos else None)
        run = answerer.run
        listener = _Listener(run, self.service, answerer)
        await websocket.send_json({"type": "hello", "run": run.path.name,
                                   "sample_rate": listener.run_sr,
                                   "hop_s": listener.hop / listener.run_sr,
                                   "buffer_s": len(listener.ring.buf) / listener.run_sr,
                                   "labels": list(run.labels)})
        try:
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("text") is not None:
                    out = listener.configure(msg["text"])
                else:
                    out = await listener.hear(msg.get("bytes") or b"")
                if out is not None:
                    await websocket.send_json(out)
        except WebSocketDisconnect:
            return

    def page(self, name: str):
        """A file of the page (``serve_static``), or 404."""
        from starlette.responses import Response

        p = self.static_files.get(name)
        if p is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(p.read_bytes(), media_type=STATIC_TYPES[p.suffix],
                        headers={"Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})

    async def index(self, request):
        """GET /: the page."""
        return self.page("index.html")

    async def static(self, request):
        """GET /static/NAME: the page's scripts, styles and images."""
        return self.page(request.path_params["name"])

    async def not_found(self, request, exc):
        """Starlette's HTTP errors (404, 405) as ``{"error": ...}``."""
        return _json({"error": f"{request.url.path}: {exc.detail}"}, exc.status_code)

    async def failed(self, request, exc):
        """Anything unexpected: logged, and answered 500 without details."""
        why = " ".join(str(exc).split())
        self.service.log(f"genrekit serve: internal error: {type(exc).__name__}: {why}")
        return _json({"error": f"internal error: {type(exc).__name__}"}, 500)


class _Listener:
    """One ``/v1/stream`` connection's state: the sample rate the client sends at (resampled to
    the run's), the ring buffer of what was heard, and when the next estimate is due."""

    def __init__(self, run: Run, service: Service, answerer: Predictions):
        self.service, self.answerer = service, answerer
        self.sr = self.run_sr = run.feature_config.sr
        win, self.hop = window_geometry(run, streaming=True)
        self.ring = Ring(max(win, int(STREAM_SECONDS * self.run_sr)))
        self.resampler, self.received, self.due = None, 0, win

    def configure(self, text: str) -> dict:
        """The answer to a text message: ``{"sr": <Hz>}`` sets the client's rate (before any
        PCM)."""
        new_sr = _stream_rate(text, self.run_sr)
        if new_sr is None:
            return {"type": "error",
                    "error": "expected {\"sr\": <sample rate in Hz>} then binary float32 PCM"}
        if self.received == 0 and new_sr != self.sr:
            import soxr

            self.sr = new_sr
            self.resampler = None if self.sr == self.run_sr else soxr.ResampleStream(
                self.sr, self.run_sr, 1, dtype="float32", quality="HQ")
        return {"type": "ready", "sr": self.sr}

    async def hear(self, data: bytes) -> dict | None:
        """Take a binary message of PCM; the estimate when one is due (None until then)."""
        if len(data) % 4:
            return {"type": "error",
                    "error": "binary messages must be float32 PCM (a multiple of 4 bytes)"}
        x = np.frombuffer(data, dtype="<f4")
        if not np.all(np.isfinite(x)):
            return {"type": "error", "error": "PCM holds NaN or infinite samples"}
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x)
        self.ring.push(x)
        self.received += len(x)
        if self.received < self.due:
            return None
        self.due = self.received + self.hop
        service, t_s = self.service, self.received / self.run_sr
        try:
            async with service.slot():
                return await service.run_in_pool(service.estimate, self.ring.view().copy(),
                                                 self.answerer, t_s)
        except Busy:
            return {"type": "busy", "t_s": round(t_s, 3)}


def make_app(service: Service, token: str | None = None):
    """The Starlette application serving ``service``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route, WebSocketRoute

    h = Endpoints(service, token)

    def guarded(handler):
        return _guarded(handler, token)

    routes = [
        Route("/", h.index),
        Route("/static/{name}", h.static),
        Route("/v1/model", guarded(h.model)),
        Route("/v1/predict", guarded(h.predict), methods=["POST"]),
        WebSocketRoute("/v1/stream", h.stream),
        Route("/v1/library", guarded(h.library_index)),
        Route("/v1/library/{path:path}", guarded(h.library_get)),
        Route("/v1/labels", guarded(h.labels)),
        Route("/v1/label", guarded(h.label), methods=["POST"]),
        Route("/v1/suggest", guarded(h.suggest), methods=["POST"]),
        Route("/v1/adapt", guarded(h.adapt), methods=["POST"]),
    ]
    app = Starlette(routes=routes,
                    exception_handlers={HTTPException: h.not_found, Exception: h.failed})
    app.state.service = service
    return app


def serve(run_path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          max_upload_mb: float = MAX_UPLOAD_MB, max_seconds: float = MAX_SECONDS, library=None,
          workers: int = 2, queue: int = 16, ready=None) -> None:
    """Serve ``run_path`` until interrupted (``ready``: called with the server once it listens)."""
    check_bind(host, token)
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {port}")
    # a bad run or library is refused without the extra too
    checked_run_and_library(run_path, library)
    try:
        import python_multipart  # noqa: F401 - the upload parser, used by read_uploads
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UserError(f"genrekit serve needs its extra ({exc.name} is missing): "
                        "pip install 'genrekit[serve]'") from None
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        service = Service(run_path, library, workers, queue, max_upload_mb, max_seconds)
    except BaseException:
        sock.close()
        raise
    app = make_app(service, token)
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            ws_max_size=STREAM_MAX_MESSAGE, lifespan="off", server_header=False,
                            timeout_keep_alive=5)
    class _Server(uvicorn.Server):
        # signals are handled below: uvicorn's re-raise would skip the clean-up
        @contextmanager
        def capture_signals(self):
            yield

    server = _Server(config)
    bound = sock.getsockname()[1]

    def stop():
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True
    where = f"[{host}]" if ":" in host else host

    async def main():
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            service.log(f"genrekit serve: {service.run.path.name} on http://{where}:{bound}/"
                        + (" (token required)" if token else "")
                        + (f", library {service.library} (read only)" if service.library else ""))
            if ready is not None:
                ready(server, bound)
        await task

    try:
        asyncio.run(main())
        service.log("genrekit serve: stopped")
    finally:
        service.close()
