"""Applying a trained model: the one place that turns features into predictions.

Used by training (figures at the end of a run), evaluate, eval-spotify, cv, fusion and
predict; it imports no training code. Three kinds of model are applied here:

- a genre classifier on windows (one probability vector per window) or a *track* model
  (``genrekit.models.track``: one probability vector per track, each window row gets its
  track's);
- the tempo regressor (BPM per tempogram window; a track's tempo is the median);
- the tempo → genre fusion model, whose inputs are the genre windows plus the track's
  tempo as its own copy of the tempo regressor predicts it.
"""
from __future__ import annotations

import weakref
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from genrekit.data_tools.features import extract
from genrekit.data_tools.loaders import load_arrays, make_dataset, select
from genrekit.data_tools.manifest import read_manifest
from genrekit.errors import UserError
from genrekit.models.folding import fold_batchnorm
from genrekit.models.track import is_track_model, window_embedder
from genrekit.progress import bar
from genrekit.progress import enabled as progress_shown
from genrekit.runs import Run
from genrekit.tempi import KIND as TEMPO_KIND
from genrekit.tempi import TEMPO_RANGE, scale, unscale
from genrekit.trackhead import predict_track_rows

# windows per backbone call of a track model: bounds the memory musicnn's activations take on CPU
PREDICT_EMBED_STEP = 8
TRACK_SPAN_SECONDS = 30.0  # a track model's timeline row covers this much music (GTZAN's clip length)


def _features_only(x, y):
    return x


# -- fast model calls (predict) -------------------------------------------------------------------
# Keras' ``model.predict`` builds a tf.data pipeline and traces its predict function on every
# call (more than the model itself costs on one window), and an eager ``model(x)`` dispatches
# every op from Python: predict, which calls the model once per file, goes through one tf.function per model instead, traced once with the
# batch dimension left free, so any number of windows reuses the same graph.

_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_call(model):
    """``model(x, training=False)`` as a tf.function with a fixed signature (the model's input
    shape, any batch size), made once per model. It calls the model's inference copy with its
    BatchNorm layers folded (``genrekit.models.folding``: the same function to float round-off,
    faster), made from the weights the model has now: for a trained
    model, as predict uses it. The function holds the model weakly (the folded copy owns its
    weights)."""
    fn = _CALLS.get(model)
    if fn is None:
        import tensorflow as tf

        folded = fold_batchnorm(model)
        if folded is model:
            ref = weakref.ref(model)
        else:
            def ref():
                return folded
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        fn = tf.function(lambda x: ref()(x, training=False), input_signature=[spec], reduce_retracing=True)
        _CALLS[model] = fn
    return fn


def call_windows(model, x: np.ndarray, step: int = 32) -> np.ndarray:
    """``model`` applied to windows ``x`` (one input), ``step`` windows per call (bounded memory),
    through :func:`compiled_call`: the same numbers as ``model.predict(x, batch_size=step)``."""
    x = np.asarray(x, dtype=np.float32)
    fn = compiled_call(model)
    return np.concatenate([np.asarray(fn(x[i:i + step])) for i in range(0, len(x), step)])


def split_rows(y: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """The rows of ``y`` cut into consecutive pieces of ``counts`` rows (one piece per file of a batch)."""
    return np.split(y, np.cumsum(counts)[:-1]) if counts else []


# -- genre classifiers ---------------------------------------------------------------------------

def predict_rows(model, folder, rows: list[dict], kind: str, batch_size: int = 32) -> np.ndarray:
    """Class probabilities for manifest rows of a feature folder: one row per window, or, for a
    track model, each row carrying its track's (and variant's) probabilities."""
    if is_track_model(model):
        return predict_track_rows(model, folder, rows)
    y0 = np.zeros(len(rows), dtype=np.int32)
    ds = make_dataset(folder, rows, y0, kind, batch_size, shuffle=False, seed=0, cache=False)
    with bar(len(rows), desc="predict", unit="window") as progress:
        return model.predict(ds.map(_features_only), verbose=0, callbacks=[_progress_callback(progress, batch_size)]
                             if progress_shown() else None)


def _progress_callback(progress, batch_size: int):
    """A Keras callback that moves ``progress`` by each predicted batch's windows."""
    import keras

    class Tick(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            out = (logs or {}).get("outputs")
            progress.update(len(out) if out is not None and hasattr(out, "__len__") else batch_size)

    return Tick()


# -- audio windows (predict) ---------------------------------------------------------------------

@dataclass
class Block:
    """The audible windows of one block of an audio file, as predict cuts them."""
    y: np.ndarray  # the block's waveform at the run's sample rate
    x: np.ndarray  # the model inputs of its audible windows
    starts: list[float]  # their start in seconds from the file's start
    win_s: float  # the window length in seconds


@dataclass
class Analysis:
    """What a task's model says about one file (:meth:`genrekit.tasks.base.TaskPlugin.analyse`)."""
    values: np.ndarray  # mean class probabilities before calibration (a tempo run: [median BPM])
    pooled: np.ndarray | None = None  # a track model's pooled embedding, when asked for
    tempo_bpm: float | None = None  # the tempo a fusion run fed in


def mean_over_windows(predict, blocks: Iterable[Block], timeline=None) -> np.ndarray:
    """The mean of ``predict(block)`` (one probability row per window) over every window of
    ``blocks``; ``timeline`` (a ``predict.Timeline``) receives each window's row."""
    total, n = None, 0
    for b in blocks:
        p = predict(b)
        if timeline is not None:
            for s, pw in zip(b.starts, p, strict=True):
                timeline.add(s, s + b.win_s, pw)
        total = p.sum(axis=0) if total is None else total + p.sum(axis=0)
        n += len(p)
    return total / n


class PooledStats:
    """Running statistics of a track's window embeddings (count, sum, sum of squares, max), so
    its pooled embedding (mean, std, max as the model's pooling asks) is exact for any length
    without keeping the windows."""

    def __init__(self, stats):
        self.stats, self.n, self.sum, self.sq, self.max = tuple(stats), 0, None, None, None

    def add(self, emb: np.ndarray) -> None:
        """Count the window embeddings ``emb`` (windows, features)."""
        e = np.asarray(emb, dtype=np.float64)
        if self.sum is None:
            self.sum, self.sq, self.max = e.sum(0), (e * e).sum(0), e.max(0)
        else:
            self.sum += e.sum(0)
            self.sq += (e * e).sum(0)
            self.max = np.maximum(self.max, e.max(0))
        self.n += len(e)

    def pooled(self) -> np.ndarray:
        """The pooled embedding of every window counted so far."""
        mean = self.sum / self.n
        parts = {"mean": mean, "std": np.sqrt(np.maximum(self.sq / self.n - mean * mean, 0.0)), "max": self.max}
        return np.concatenate([parts[s] for s in self.stats]).astype(np.float32)


def track_block(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities of the block as one track, its window embeddings) of a track model:
    the backbone run ``PREDICT_EMBED_STEP`` windows at a time, then the model's own pooling and head."""
    emb = call_windows(window_embedder(model), x, PREDICT_EMBED_STEP)
    return head_on_windows(model, emb), emb


def head_on_windows(model, emb: np.ndarray) -> np.ndarray:
    """Class probabilities of one span of a track from its window embeddings (track models)."""
    shape_only = np.zeros((1, len(emb), 1), dtype=np.float32)
    pooled = model.get_layer("track_pooling")([np.asarray(emb, dtype=np.float32), shape_only])
    return np.asarray(model.get_layer("predictions")(pooled), dtype=np.float64)[0]


class TrackSpans:
    """Timeline rows of a track model: one row per window start, the model applied to the
    windows within ``TRACK_SPAN_SECONDS`` from it (a track model answers for a stretch of
    music like the clips it was trained on, not for one 3-s window); kept in a rolling buffer,
    so memory is one span whatever the length."""

    def __init__(self, model, timeline):
        self.model, self.timeline, self.buf, self.rows = model, timeline, deque(), 0

    def add(self, starts, win_s: float, emb: np.ndarray) -> None:
        """Buffer windows starting at ``starts``; emit every span they complete."""
        for s, e in zip(starts, emb, strict=True):
            self.buf.append((s, s + win_s, e))
            while self.buf[-1][1] > self.buf[0][0] + TRACK_SPAN_SECONDS and len(self.buf) > 1:
                self._emit(list(self.buf)[:-1])
                self.buf.popleft()

    def _emit(self, items) -> None:
        self.timeline.add(items[0][0], items[-1][1], head_on_windows(self.model, np.stack([e for _, _, e in items])))
        self.rows += 1

    def finish(self) -> None:
        """Emit the last stretch (the whole track when it is shorter than a span)."""
        if self.buf:
            self._emit(list(self.buf))
            self.buf.clear()


def track_analysis(model, blocks: Iterable[Block], timeline=None, pooled: bool = False) -> Analysis:
    """A track model's probabilities for a file, each block answered as one track and weighted
    by its windows (and, with ``pooled``, its pooled embedding over all of them)."""
    stats = PooledStats(model.get_layer("track_pooling").stats) if pooled else None
    spans = TrackSpans(model, timeline) if timeline is not None else None
    total, n = None, 0
    for b in blocks:
        pb, emb = track_block(model, b.x)
        m = len(emb)
        p = m * pb[None]
        if stats is not None:
            stats.add(emb)
        if spans is not None:
            spans.add(b.starts, b.win_s, emb)
        total = p.sum(axis=0) if total is None else total + p.sum(axis=0)
        n += m
    if spans is not None:
        spans.finish()
    return Analysis(total / n, stats.pooled() if stats is not None else None)


# -- tempo -----------------------------------------------------------------------------------------

def run_tempo_range(run: Run) -> tuple[float, float]:
    """The BPM range a tempo (or fusion) run scales tempi over."""
    return tuple(run.config.get("tempo_range", TEMPO_RANGE))


def predict_window_bpm(model, folder, rows: list[dict], lo_hi=TEMPO_RANGE, batch_size: int = 64,
                       x: np.ndarray | None = None) -> np.ndarray:
    """Predicted BPM of tempogram windows: the rows' files under ``folder``, or the arrays ``x``."""
    if x is None:
        x = load_arrays(folder, rows, TEMPO_KIND)
    return unscale(model.predict(x, batch_size=batch_size, verbose=0)[:, 0], lo_hi)


def audio_bpm(model, windows: np.ndarray, lo_hi, batch_size: int = 64) -> float:
    """One waveform's tempo: the median of its tempogram windows' predictions."""
    return float(np.median(predict_window_bpm(model, None, [], lo_hi, batch_size, x=windows)))


def track_tempi(rows: list[dict], window_bpm) -> dict[tuple[str, str], float]:
    """(track id, augmentation) -> the median of its windows' predicted BPM."""
    groups = defaultdict(list)
    for r, b in zip(rows, window_bpm, strict=True):
        groups[(r["track_id"], r["augmentation"])].append(float(b))
    return {k: float(np.median(v)) for k, v in groups.items()}


# -- tempo -> genre fusion -------------------------------------------------------------------------

def predicted_tempi(tempo_model, folder, rows: list[dict], lo_hi) -> dict[tuple[str, str], float]:
    """(track id, augmentation) -> predicted BPM, for every track/variant of ``rows``, from the
    tempogram windows of the same folder."""
    wanted = {(r["track_id"], r["augmentation"]) for r in rows}
    trows = [r for r in select(read_manifest(folder), TEMPO_KIND, ("train", "valid", "test"))
             if (r["track_id"], r["augmentation"]) in wanted]
    found = track_tempi(trows, predict_window_bpm(tempo_model, folder, trows, lo_hi)) if trows else {}
    missing = sorted(wanted - set(found))
    if missing:
        t, a = missing[0]
        raise UserError(f"{folder} has no tempogram windows for {len(missing)} track variant(s) (e.g. {t}, {a}): "
                        "render the genre features and tempograms together "
                        "(genrekit augment --features <genre kind>,tempogram)")
    return found


def fusion_model_inputs(x: np.ndarray, bpm: np.ndarray, lo_hi) -> list:
    """The fusion model's inputs, in order: genre feature windows, scaled predicted tempo."""
    return [x, np.clip(scale(bpm, lo_hi), 0.0, 1.0)[:, None].astype(np.float32)]


def fusion_row_inputs(tempo_model, folder, rows: list[dict], kind: str, lo_hi) -> list:
    """The fusion model's inputs for manifest rows, the tempo predicted by ``tempo_model``."""
    tempi = predicted_tempi(tempo_model, folder, rows, lo_hi)
    bpm = np.array([tempi[(r["track_id"], r["augmentation"])] for r in rows])
    return fusion_model_inputs(load_arrays(folder, rows, kind), bpm, lo_hi)


def fusion_inputs(run: Run, folder, rows: list[dict]) -> list:
    """A fusion run's inputs for manifest rows (its own copy of the tempo regressor)."""
    return fusion_row_inputs(run.tempo_model(), folder, rows, run.kind, run_tempo_range(run))


def fusion_audio_inputs(run: Run, y: np.ndarray, genre_x: np.ndarray) -> tuple[list, float]:
    """Inputs for one waveform (predict): the genre windows plus the track's predicted tempo."""
    lo_hi = run_tempo_range(run)
    tg = np.stack([f for _, f in extract(y, run.feature_config, TEMPO_KIND)])
    bpm = audio_bpm(run.tempo_model(), tg, lo_hi)
    return fusion_model_inputs(genre_x, np.full(len(genre_x), bpm), lo_hi), bpm
