"""``genrekit predict``: top-k genres for any audio file, through the run's own feature code.

The waveform is decoded at the run's sample rate, cut into the run's segments by
``genrekit.data_tools.features.extract`` (the function ``augment`` used to make the training data)
and the model's probabilities are averaged over the segments.

A file longer than ``STREAM_ABOVE_SECONDS`` is never decoded whole: it is read block by
block (``genrekit.data_tools.audio.stream_audio``), each block goes through the same ``extract`` and
the window probabilities are averaged over the whole track, so memory stays bounded
whatever the length. Windows that are digitally silent are left out of the average, and a
file that is shorter than ``MIN_SECONDS``, silent, or whose samples are far outside -1..1 is
refused with one line, instead of getting a confident genre.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Required, TypedDict

import numpy as np
from threadpoolctl import threadpool_limits

from genrekit.data_tools.audio import (
    AUDIO_EXTENSIONS,
    audio_files_under,
    audio_info,
    load_audio,
    stream_audio,
)
from genrekit.data_tools.errors import AudioDecodeError
from genrekit.data_tools.features import extract, get_kind
from genrekit.data_tools.fsio import atomic_path, csv_header, remove_stale_temporaries
from genrekit.errors import UserError
from genrekit.evaluation.calibration import UNKNOWN, apply_temperature
from genrekit.evaluation.plots import plot_timeline
from genrekit.models.track import is_track_model, window_embedder
from genrekit.openset import rejector_for
from genrekit.prediction import (
    PREDICT_EMBED_STEP,
    Block,
    PooledStats,
    call_windows,
    head_on_windows,
    split_rows,
)
from genrekit.runs import Run
from genrekit.tasks import task_of

MIN_SECONDS = 1.0  # shorter files are refused (augment skips them too: --min-seconds 1)
SILENCE_DBFS = -80.0  # a window whose peak is below this is silent and left out
MAX_PEAK = 1000.0  # samples beyond +-1000 (60 dB over full scale) are not audio
STREAM_ABOVE_SECONDS = 600.0  # longer files are analysed block by block
BLOCK_SECONDS = 300.0  # audio per block when streaming (about 26 MB at 22,050 Hz)
MAX_BLOCK_WINDOWS = 256  # at most this many windows per block (a short --hop would make more)
MIN_HOP_SECONDS, MAX_HOP_SECONDS = 0.1, 3600.0  # --hop range
# a folder is analysed in batches: the windows of up to BATCH_FILES files (fewer once they reach
# BATCH_WINDOWS) go through the model together, while worker threads decode the next files (one
# per core, at most 4, so that the model does not wait for the decoding)
BATCH_FILES, BATCH_WINDOWS = 8, 64
PREDICT_WORKERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else (os.cpu_count() or 1)))
WINDOW_STEP = 32  # windows per call of a window classifier (as Keras' predict batches)


def features_for(y: np.ndarray, run: Run) -> np.ndarray:
    """Model inputs for one waveform: (segments, H, W, 1) images or (segments, frames, n_mfcc)."""
    return model_inputs([f for _, f in extract(y, run.feature_config, run.kind)], run.kind)


def model_inputs(feats: list[np.ndarray], kind: str) -> np.ndarray:
    """The model's input batch for feature arrays of ``kind`` (as the kind's files load)."""
    to_input = get_kind(kind).to_input  # what load_feature gives for the feature's file
    return np.stack([to_input(f) for f in feats])


def window_geometry(run: Run, streaming: bool = False, hop_s: float | None = None) -> tuple[int, int]:
    """(window length, hop between windows) in samples at the run's sample rate for its kind
    (``streaming``: the geometry of :func:`streaming_config`; ``hop_s``: of :func:`config_with_hop`)."""
    return _geometry(analysis_config(run, streaming, hop_s), run.kind)


def _geometry(cfg, kind: str) -> tuple[int, int]:
    return cfg.windows(kind).samples(cfg.sr)


def streaming_config(cfg):
    """The feature config used block by block: N evenly spaced windows per track cannot be laid
    out one block at a time, so a config that asks for them gets back-to-back windows instead."""
    if cfg.of("mel").segments is None and cfg.of("mfcc").segments is None:
        return cfg
    return dataclasses.replace(cfg, image_segments=None, mfcc_segments=None, image_hop_seconds=None,
                               mfcc_hop_seconds=None)


def check_hop(hop_s) -> float | None:
    """``--hop`` checked: None, or a finite number of seconds of at least ``MIN_HOP_SECONDS``."""
    if hop_s is None:
        return None
    if not (isinstance(hop_s, (int, float)) and math.isfinite(hop_s) and MIN_HOP_SECONDS <= hop_s <= MAX_HOP_SECONDS):
        raise UserError(f"--hop must be a number of seconds from {MIN_HOP_SECONDS:g} to {MAX_HOP_SECONDS:g}, "
                        f"got {hop_s!r}")
    return float(hop_s)


def config_with_hop(cfg, kind: str, hop_s: float | None):
    """``cfg`` with windows of ``kind`` every ``hop_s`` seconds (the feature kind's own
    ``with_hop``: rounded to whole frames for the kinds cut from a spectrogram; N evenly spaced
    windows become windows every ``hop_s``); the window length is unchanged. None: ``cfg``."""
    if hop_s is None:
        return cfg
    return get_kind(kind).with_hop(streaming_config(cfg), hop_s)


def analysis_config(run: Run, streaming: bool, hop_s: float | None = None):
    """The feature settings prediction cuts windows with (streaming and hop applied)."""
    cfg = streaming_config(run.feature_config) if streaming else run.feature_config
    return config_with_hop(cfg, run.kind, hop_s)


def _silent(y: np.ndarray) -> bool:
    return y.size == 0 or float(np.max(np.abs(y))) < 10.0 ** (SILENCE_DBFS / 20.0)


def audible_inputs(y: np.ndarray, cfg, kind: str) -> tuple[list[float], np.ndarray | None]:
    """(start seconds, model inputs) of the windows of ``y`` that are not silent (None when all are)."""
    if _silent(y):
        return [], None
    win, _ = _geometry(cfg, kind)
    keep, starts = [], []
    for seg, f in extract(y, cfg, kind):
        start = int(round(seg.start_s * cfg.sr))
        if not _silent(y[start:start + win]):
            keep.append(f)
            starts.append(float(seg.start_s))
    return (starts, model_inputs(keep, kind)) if keep else ([], None)


def _audible_windows(y: np.ndarray, run: Run, streaming: bool = False) -> np.ndarray | None:
    """Model inputs of the windows of ``y`` that are not silent (None when all are)."""
    return audible_inputs(y, analysis_config(run, streaming), run.kind)[1]


def _check_level(y: np.ndarray) -> None:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > MAX_PEAK:
        raise AudioDecodeError(f"sample values reach {peak:.3g}, far outside -1..1: not usable audio")


def _streamed(path, run: Run, hop_s: float | None = None) -> bool:
    """Whether ``path`` is read block by block (long, or too many windows at ``hop_s``); refuses
    a file shorter than ``MIN_SECONDS`` by its header."""
    native_sr, _, frames = audio_info(path)
    seconds = frames / native_sr
    if seconds < MIN_SECONDS:
        raise AudioDecodeError(f"too short: {seconds:.3g} s of audio; predict needs at least {MIN_SECONDS:g} s")
    _, hop = window_geometry(run, streaming=True, hop_s=hop_s)
    return not (seconds <= STREAM_ABOVE_SECONDS and
                (hop_s is None or seconds * run.feature_config.sr / hop <= MAX_BLOCK_WINDOWS))


def _block_windows(y: np.ndarray, i: int, streaming: bool, run: Run, hop_s: float | None,
                   info: dict | None) -> tuple[int, list[float], np.ndarray | None]:
    """(window length in samples, start seconds in the block and model inputs of the audible
    windows, or None when all are silent) of block ``i`` of a file, checked as predict checks audio."""
    sr = run.feature_config.sr
    _check_level(y)
    if i == 0 and len(y) < MIN_SECONDS * sr:  # the header's length can be wrong (mp3)
        raise AudioDecodeError(f"too short: {len(y) / sr:.3g} s of audio; predict needs at least "
                               f"{MIN_SECONDS:g} s")
    cfg = analysis_config(run, streaming, hop_s)
    win = _geometry(cfg, run.kind)[0]
    if i == 0 and not streaming and info is not None and len(y) < win:
        info["padded_s"] = round((win - len(y)) / sr, 2)
    starts, x = audible_inputs(y, cfg, run.kind)
    return win, starts, x


def _whole_file_windows(path, run: Run, hop_s: float | None, info: dict) -> np.ndarray | None:
    """The model inputs of a file analysed whole (what :func:`analyse_file` feeds the model), or
    None for a file read block by block; raises :class:`AudioDecodeError` as it does."""
    if _streamed(path, run, hop_s):
        return None
    _, _, x = _block_windows(load_audio(path, sr=run.feature_config.sr).y, 0, False, run, hop_s, info)
    if x is None:
        raise AudioDecodeError(f"silent: no window peaks above {SILENCE_DBFS:g} dBFS; nothing to classify")
    return x


def waveform_windows(y: np.ndarray, run: Run, info: dict | None = None) -> np.ndarray | None:
    """The model inputs of the audible windows of a waveform already at the run's sample rate,
    analysed whole as a short file is (``genrekit serve``'s live stream: the last seconds
    heard), or None when all of it is silent; raises :class:`AudioDecodeError` as predict does
    for audio that is too short or far outside -1..1. :func:`batch_probabilities` gives its
    probabilities."""
    return _block_windows(np.asarray(y, dtype=np.float32), 0, False, run, None, info)[2]


def _blocks(path, run: Run, hop_s: float | None = None):
    """The waveform of ``path`` as ``(block, streaming, first sample)``: the whole file when it
    is short, else overlapping blocks of about ``BLOCK_SECONDS`` (and at most
    ``MAX_BLOCK_WINDOWS`` windows) laid so that every window of the whole track falls inside
    exactly one block."""
    sr = run.feature_config.sr
    if not _streamed(path, run, hop_s):
        yield load_audio(path, sr=sr).y, False, 0
        return
    win, hop = window_geometry(run, streaming=True, hop_s=hop_s)
    k = max(1, min(math.ceil(BLOCK_SECONDS * sr / hop), MAX_BLOCK_WINDOWS))
    block, advance = (k - 1) * hop + win, k * hop
    for i, y in enumerate(stream_audio(path, sr, block, advance)):
        if i > 0 and len(y) < win:  # a tail shorter than a window: the whole track has no window there
            break
        yield y, True, i * advance


def predict_file(path, run: Run, batch_size: int = 32, info: dict | None = None, hop_s: float | None = None,
                 timeline=None) -> np.ndarray:
    """Mean class probabilities of one file over its audible windows (a tempo run: the median
    BPM). A fusion run puts the tempo it fed in into ``info["tempo_bpm"]``; a file shorter than
    one window (filled as augment fills it) gets the seconds of fill in ``info["padded_s"]``.
    ``hop_s`` sets the hop between windows; ``timeline`` (a :class:`Timeline`) receives the
    per-window probabilities.

    Raises :class:`AudioDecodeError` for a file that is not decodable, shorter than
    ``MIN_SECONDS``, silent, or not audio (samples beyond ``MAX_PEAK``)."""
    return analyse_file(path, run, batch_size, info, hop_s=hop_s, timeline=timeline)[0]


def analyse_file(path, run: Run, batch_size: int = 32, info: dict | None = None, hop_s: float | None = None,
                 timeline=None, pooled: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`predict_file`'s probabilities and, with ``pooled`` for a track model, the track's
    pooled embedding over all its audible windows (exact for any length: running statistics).
    The run's task plug-in answers from the file's audible blocks."""
    task = task_of(run)
    what = "classify" if task.classifies else "analyse"
    a = task.analyse(run, _audible_blocks(path, run, hop_s, info, what), batch_size, timeline, pooled)
    if info is not None and a.tempo_bpm is not None:
        info["tempo_bpm"] = a.tempo_bpm
    return a.values, a.pooled


def _audible_blocks(path, run: Run, hop_s: float | None, info: dict | None, what: str):
    """The :class:`Block` of each block of ``path`` with audible windows; raises
    :class:`AudioDecodeError` at the end when there was none (nothing to ``what``)."""
    sr = run.feature_config.sr
    heard = False
    for i, (y, streaming, first) in enumerate(_blocks(path, run, hop_s)):
        win, starts, x = _block_windows(y, i, streaming, run, hop_s, info)
        if x is None:
            continue
        heard = True
        yield Block(y=y, x=x, starts=[first / sr + s for s in starts], win_s=win / sr)
    if not heard:
        raise AudioDecodeError(f"silent: no window peaks above {SILENCE_DBFS:g} dBFS; nothing to {what}")


def batch_probabilities(model, xs: list[np.ndarray], pooled: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(class probabilities, pooled embedding or None) of each file whose audible windows are in
    ``xs``, the model applied once to all of them: what :func:`analyse_file` gives file by file
    for a file analysed whole (a window classifier: the mean over its windows; a track model: its
    own pooling and head over its windows' embeddings)."""
    if not xs:
        return []
    counts = [len(x) for x in xs]
    x = np.concatenate(xs)
    if not is_track_model(model):
        return [(p.sum(axis=0) / len(p), None) for p in split_rows(call_windows(model, x, WINDOW_STEP), counts)]
    out = []
    for emb in split_rows(call_windows(window_embedder(model), x, PREDICT_EMBED_STEP), counts):
        stats = None
        if pooled:
            stats = PooledStats(model.get_layer("track_pooling").stats)
            stats.add(emb)
        out.append((head_on_windows(model, emb), stats.pooled() if stats is not None else None))
    return out


def expand_inputs(items) -> list[tuple[str, str | None]]:
    """Command-line inputs as ``(file, error or None)``: a folder stands for the audio files
    below it (recursively, sorted, symlinked folders not followed)."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = [str(f) for f in audio_files_under(p)]
            if not found:
                out.append((str(item), f"is a folder with no audio files ({', '.join(AUDIO_EXTENSIONS)})"))
            out += [(f, None) for f in found]
        elif not p.exists():
            out.append((str(item), "file not found"))
        elif not p.is_file():
            out.append((str(item), "not a regular file"))
        else:
            out.append((str(item), None))
    return out


# -- timelines --------------------------------------------------------------------------------

TIMELINE_FIELDS = ("start_s", "end_s", "genre")


class Timeline:
    """Per-window genre probabilities of one file (calibrated with the run's temperature),
    streamed to ``csv_path`` under a temporary name (:func:`atomic_path`: renamed when the
    ``with`` block completes, removed when it fails) and then plotted to ``png_path``. Rows are
    kept as float32 for the plot (40 bytes a window for ten genres: 0.5 MB for ten hours at a
    3-s hop)."""

    def __init__(self, csv_path: Path, png_path: Path, labels: list[str], temperature: float, title: str):
        self.csv_path, self.png_path, self.labels, self.T, self.title = csv_path, png_path, labels, temperature, title
        self._file = ExitStack()
        self.fh = self._file.enter_context(open(self._file.enter_context(atomic_path(csv_path)), "w",
                                                encoding="utf-8", newline=""))
        self.writer = csv.writer(self.fh)
        self.writer.writerow([*TIMELINE_FIELDS, *labels])
        self.start, self.end, self.proba = [], [], []

    def add(self, start_s: float, end_s: float, proba) -> None:
        """One row: a stretch of the file and its probabilities (before calibration)."""
        p = apply_temperature(np.asarray(proba, dtype=np.float64), self.T)
        self.writer.writerow([f"{start_s:.3f}", f"{end_s:.3f}", self.labels[int(np.argmax(p))],
                              *(f"{v:.4f}" for v in p)])
        self.start.append(start_s)
        self.end.append(end_s)
        self.proba.append(p.astype(np.float32))

    @property
    def files(self) -> list[str]:
        """The CSV and PNG paths (a result's ``timeline``)."""
        return [str(self.csv_path), str(self.png_path)]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.__exit__(exc_type, exc, tb)  # the CSV closed, then renamed into place or removed
        if exc_type is None:
            plot_timeline(self.start, self.end, np.array(self.proba), self.labels, self.png_path, self.title)


def _is_timeline_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip().split(",")[:3] == list(TIMELINE_FIELDS)
    except (OSError, UnicodeDecodeError):
        return False


def timeline_targets(folder, files: list[str]) -> dict[str, tuple[Path, Path]]:
    """``file -> (CSV, PNG)`` in ``folder`` for each file (``<stem>.timeline.csv/.png``; a stem
    seen before gets ``-2``, ``-3``...). Refused with one line when ``folder`` is not a folder or
    a target is in the way and not a genrekit timeline (a PNG is replaced only beside its own
    genrekit CSV)."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"--timeline {folder} exists and is not a folder")
    out, used = {}, set()
    for f in files:
        stem, i = Path(f).stem, 1
        while (stem if i == 1 else f"{stem}-{i}") in used:
            i += 1
        name = stem if i == 1 else f"{stem}-{i}"
        used.add(name)
        csv_p, png_p = folder / f"{name}.timeline.csv", folder / f"{name}.timeline.png"
        for t in (csv_p, png_p):
            if t.is_symlink() or (t.exists() and not t.is_file()):
                raise UserError(f"--timeline: {t} is in the way (not a regular file); choose another folder")
        if csv_p.exists() and not _is_timeline_csv(csv_p):
            raise UserError(f"--timeline: {csv_p} exists and is not a genrekit timeline; choose another folder")
        if png_p.exists() and not csv_p.exists():
            raise UserError(f"--timeline: {png_p} exists and was not written by genrekit; choose another folder")
        out[f] = (csv_p, png_p)
    return out


# -- predictions --------------------------------------------------------------------------------

class GenreScore(TypedDict):
    """One of a result's top-k genres, its calibrated probability to 4 decimals."""
    genre: str
    probability: float


class Prediction(TypedDict, total=False):
    """One input's result, as :func:`predict_files` and :class:`Predictions` give it and as
    ``predict --json``, ``--csv`` and ``genrekit serve``'s API write it: a plain mapping on
    purpose (it is the wire format; the keys appear in this order and only when they apply)."""
    file: Required[str]
    padded_s: float  # a file shorter than one window: seconds of fill
    tempo_bpm: float  # a fusion run: the tempo fed to the model
    top: list[GenreScore]  # a genre run: the top-k genres, best first
    rejected: bool  # with --reject: whether the rule said unknown ...
    genre: str  # ... the top genre, or "unknown"
    reject_rule: str  # ... "embedding_distance" or "top_probability"
    reject_score: float  # ... the file's score under that rule
    reject_threshold: float  # ... and the rule's threshold for its top genre
    bpm: float  # a tempo run: the file's tempo
    timeline: list[str]  # with --timeline: the CSV and PNG written
    error: str  # a file that could not be analysed: why (one line); nothing else is set


class Predictions:
    """The results of ``predict`` on some inputs, computed one file at a time as they are
    iterated (``len()`` is the number of files): what :func:`iter_predictions` returns. Every
    argument is checked when it is made, before any file is analysed."""

    def __init__(self, files, run_path, top_k: int = 3, reject: bool = False, reject_threshold: float | None = None,
                 hop_s: float | None = None, timeline_dir=None, batch: bool = True):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise UserError(f"--top-k must be a whole number of at least 1, got {top_k!r}")
        self.run = run = run_path if isinstance(run_path, Run) else Run(run_path)  # a Run: its loaded model reused
        self.batch = batch
        self.task = task = task_of(run)
        if (reject or reject_threshold is not None) and not task.classifies:
            raise UserError(f"{run.path} is a {run.task} run; --reject is for genre classifiers")
        self.rejector = rejector_for(run, reject, reject_threshold)
        self.hop_s = check_hop(hop_s)
        if timeline_dir is not None and not task.classifies:
            raise UserError(f"{run.path} is a {run.task} run; --timeline draws genre probabilities")
        self.temperature = run.temperature if task.classifies else 1.0
        self.k = max(1, min(top_k, len(run.labels)))
        self.items = expand_inputs(files)
        self.timeline_dir = Path(timeline_dir) if timeline_dir is not None else None
        self.targets = timeline_targets(self.timeline_dir, [f for f, e in self.items if not e]) \
            if self.timeline_dir is not None else {}

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        # NumPy's BLAS on one thread while predicting: the feature maths is small (a mel filter
        # bank on one clip), and OpenBLAS's threads spin after each call, taking the cores that
        # TensorFlow's model call and the decoding workers need. The limit is process-wide while the results are being
        # iterated, and restored when the iteration ends or is closed.
        with threadpool_limits(limits=1, user_api="blas"):
            yield from self._results()

    def _results(self):
        run = self.run
        if not self.batch or not self.task.classifies or not self.task.batchable:
            for f, problem in self.items:
                yield self._one(f, problem)
            return
        # batches: worker threads decode and cut the files ahead (at most two batches) while the
        # model runs on the windows of the batch before; results still come in input order
        items, ahead = iter(self.items), deque()
        pool = ThreadPoolExecutor(max_workers=PREDICT_WORKERS, thread_name_prefix="genrekit-predict")

        def fill():
            while len(ahead) < 2 * BATCH_FILES:
                nxt = next(items, None)
                if nxt is None:
                    return
                f, problem = nxt
                entry = Prediction(file=f)
                if problem:
                    entry["error"] = problem
                job = None if problem or f in self.targets else \
                    pool.submit(_whole_file_windows, f, run, self.hop_s, entry)
                ahead.append((f, entry, job))

        try:
            fill()
            while ahead:
                batch, n = [], 0
                while ahead and len(batch) < BATCH_FILES and n < BATCH_WINDOWS:
                    f, entry, job = ahead.popleft()
                    x = None
                    if job is not None:
                        try:
                            x = job.result()
                        except AudioDecodeError as exc:
                            entry["error"] = str(exc)
                        n += 0 if x is None else len(x)
                    batch.append((f, entry, x))
                fill()
                yield from self._batch(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batch(self, batch):
        """The results of one batch in order: the model applied once to all its files' windows."""
        ready = [x for _, _, x in batch if x is not None]
        answers = iter(batch_probabilities(self.run.model(), ready,
                                           pooled=bool(self.rejector and self.rejector.needs_embedding)))
        for f, entry, x in batch:
            if x is not None:
                yield self._answer(entry, *next(answers))
            elif "error" in entry:
                yield entry
            else:  # a long file (read block by block) or one with a --timeline: analysed on its own
                yield self._one(f, None)

    def _one(self, f: str, problem: str | None) -> Prediction:
        run, entry = self.run, Prediction(file=f)
        if problem:
            entry["error"] = problem
            return entry
        tl = None
        if f in self.targets:
            self.timeline_dir.mkdir(parents=True, exist_ok=True)
            csv_p, png_p = self.targets[f]
            tl = Timeline(csv_p, png_p, list(run.labels), self.temperature,
                          f"{Path(f).name} — genre over time ({run.path.name})")
        try:
            with tl if tl is not None else nullcontext():  # a timeline is kept only when complete
                p, pooled = analyse_file(f, run, info=entry, hop_s=self.hop_s, timeline=tl,
                                         pooled=bool(self.rejector and self.rejector.needs_embedding))
                if self.task.classifies:
                    self._answer(entry, p, pooled)
        except AudioDecodeError as exc:
            entry["error"] = str(exc)
            return entry
        if not self.task.classifies:
            entry.update(self.task.answer_fields(p))
            return entry
        if tl is not None:
            entry["timeline"] = tl.files
        return entry

    def answer(self, entry: Prediction, p: np.ndarray, pooled: np.ndarray | None) -> Prediction:
        """``entry`` completed as a result of these predictions is, from a file's (or a
        waveform's) mean probabilities ``p`` before calibration and, for the embedding rule,
        its pooled embedding (:func:`analyse_file`'s pair): top-k and rejection."""
        return self._answer(entry, p, pooled)

    def _answer(self, entry: Prediction, p: np.ndarray, pooled: np.ndarray | None) -> Prediction:
        """``entry`` completed with the top-k genres (and the rejection) of probabilities ``p``."""
        run = self.run
        p = apply_temperature(p, self.temperature)
        order = np.argsort(-p)[:self.k]
        entry["top"] = [GenreScore(genre=run.labels[i], probability=round(float(p[i]), 4)) for i in order]
        if self.rejector is not None:
            score = float(self.rejector.scores(p, pooled)[0])
            entry["rejected"] = bool(self.rejector.rejected(score, [order[0]])[0])
            entry["genre"] = UNKNOWN if entry["rejected"] else run.labels[order[0]]
            entry["reject_rule"] = self.rejector.rule
            entry["reject_score"] = round(score, 4)
            entry["reject_threshold"] = round(float(self.rejector.thresholds([order[0]])[0]), 4)
        return entry


def iter_predictions(files, run_path, top_k: int = 3, reject: bool = False, reject_threshold: float | None = None,
                     hop_s: float | None = None, timeline_dir=None, batch: bool = True) -> Predictions:
    """:func:`predict_files` as results come, in input order (see :class:`Predictions`); ``batch``
    (default) applies the model to several files' windows at once, False one file at a time
    (the same probabilities to float round-off)."""
    return Predictions(files, run_path, top_k, reject, reject_threshold, hop_s, timeline_dir, batch)


def predict_files(files: list[str], run_path, top_k: int = 3, reject: bool = False,
                  reject_threshold: float | None = None, hop_s: float | None = None, timeline_dir=None) -> list[Prediction]:
    """Top-k genres (or a tempo) for each file; a file that cannot be analysed gets ``error``.
    Folders stand for the audio files below them. Genre probabilities are calibrated with the
    run's temperature. With ``reject`` each result also gets ``genre``: the top genre, or
    ``unknown`` when the run's rejection rule says so (``reject_rule``: ``embedding_distance``
    for a model with a track embedding, else ``top_probability``; ``reject_score`` and
    ``reject_threshold`` say how far); an explicit ``reject_threshold`` uses the top-probability
    rule at that value. ``hop_s`` sets the hop between windows; ``timeline_dir`` gets each
    file's per-window probabilities (``<stem>.timeline.csv`` and ``.png``)."""
    return list(iter_predictions(files, run_path, top_k, reject, reject_threshold, hop_s, timeline_dir))


def format_line(r: Prediction) -> str:
    """One result as a table line (a file that failed: ``file: error: ...``)."""
    if "error" in r:
        return f"{r['file']}: error: {r['error']}"
    if "bpm" in r:
        return f"{r['file']}: {r['bpm']:.1f} BPM"
    tops = "  ".join(f"{t['genre']} {t['probability'] * 100:5.1f}%" for t in r["top"])
    if r.get("rejected"):
        if r.get("reject_rule") == "embedding_distance":
            why = f"embedding distance {r['reject_score']:.4g} > threshold {r['reject_threshold']:.4g}"
        else:
            why = (f"top probability {r['top'][0]['probability'] * 100:.1f}% < threshold "
                   f"{r['reject_threshold'] * 100:.1f}%")
        tops = f"unknown ({why})  {tops}"
    tempo = f"  (tempo {r['tempo_bpm']:.1f} BPM)" if "tempo_bpm" in r else ""
    padded = f"  (shorter than one window: {r['padded_s']:.1f} s filled)" if "padded_s" in r else ""
    return f"{r['file']}: {tops}{tempo}{padded}"


def format_table(results: list[Prediction]) -> str:
    """The results as :func:`format_line` lines."""
    return "\n".join(format_line(r) for r in results)


# -- --csv --------------------------------------------------------------------------------------

def csv_fields(k: int) -> list[str]:
    """The columns of ``predict --csv`` with ``k`` top genres."""
    return ["file", "genre"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("top", "p")] + \
        ["rejected", "reject_rule", "reject_score", "reject_threshold", "bpm", "error"]


def check_csv_target(path) -> None:
    """Refuse a ``--csv`` path that holds anything but an earlier ``genrekit predict`` table."""
    p = Path(path)
    if p.is_symlink() or p.is_dir() or (p.exists() and not p.is_file()):
        raise UserError(f"--csv {p} is not a regular file path")
    if not p.parent.is_dir():
        raise UserError(f"--csv {p}: folder {p.parent} not found")
    header = csv_header(p) if p.exists() else None
    if header is not None and (header[:2] != ["file", "genre"] or "reject_rule" not in header):
        raise UserError(f"--csv {p} already exists and is not a genrekit predict table; choose another path")


class CsvOut:
    """``--csv FILE``: rows written as results come, under a temporary name in FILE's folder,
    renamed to FILE when every input is done (complete-or-absent; an earlier table is replaced
    only then)."""

    def __init__(self, path, k: int):
        self.path, self.k, self.fh = (Path(path) if path else None), k, None
        if self.path is None:  # no --csv: writes nothing
            return
        check_csv_target(path)
        self._file = ExitStack()
        self.fh = self._file.enter_context(open(self._file.enter_context(atomic_path(self.path)), "w",
                                                encoding="utf-8", newline=""))
        self.writer = csv.DictWriter(self.fh, fieldnames=csv_fields(k))
        self.writer.writeheader()

    def write(self, r: Prediction) -> None:
        """One result as a table row (nothing without ``--csv``)."""
        if self.fh is None:
            return
        row = {"file": r["file"], "error": r.get("error", ""), "bpm": r.get("bpm", "")}
        if "top" in r:
            row["genre"] = r.get("genre", r["top"][0]["genre"])
            for i, t in enumerate(r["top"][:self.k], 1):
                row[f"top{i}"], row[f"p{i}"] = t["genre"], f"{t['probability']:.4f}"
            for key in ("reject_rule", "reject_score", "reject_threshold"):
                row[key] = r.get(key, "")
            row["rejected"] = int(r["rejected"]) if "rejected" in r else ""
        self.writer.writerow(row)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.fh is None:
            return
        self._file.__exit__(exc_type, exc, tb)  # the table closed, then renamed onto FILE or removed
        if exc_type is None:
            remove_stale_temporaries(self.path.parent, of=self.path.name)  # what a killed earlier run left
