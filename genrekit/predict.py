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

import dataclasses
import math
from pathlib import Path

import numpy as np

from genrekit.data_tools.audio import AUDIO_EXTENSIONS, audio_files_under, audio_info, load_audio, stream_audio
from genrekit.data_tools.errors import AudioDecodeError
from genrekit.data_tools.features import extract, image_to_input
from genrekit.errors import UserError
from genrekit.prediction import fusion_audio_inputs, predict_window_bpm, run_tempo_range
from genrekit.runs import Run
from genrekit.trackhead import predict_track
from genrekit.models.track import is_track_model

MIN_SECONDS = 1.0  # shorter files are refused (augment skips them too: --min-seconds 1)
SILENCE_DBFS = -80.0  # a window whose peak is below this is silent and left out
MAX_PEAK = 1000.0  # samples beyond +-1000 (60 dB over full scale) are not audio
STREAM_ABOVE_SECONDS = 600.0  # longer files are analysed block by block
BLOCK_SECONDS = 300.0  # audio per block when streaming (about 26 MB at 22,050 Hz)


def features_for(y: np.ndarray, run: Run) -> np.ndarray:
    """Model inputs for one waveform: (segments, H, W, 1) images or (segments, frames, n_mfcc)."""
    return _inputs([f for _, f in extract(y, run.feature_config, run.kind)], run.kind)


def _inputs(feats: list[np.ndarray], kind: str) -> np.ndarray:
    if kind == "mel":
        return np.stack([image_to_input(f) for f in feats])
    return np.stack(feats).astype(np.float32)


def window_geometry(run: Run, streaming: bool = False) -> tuple[int, int]:
    """(window length, hop between windows) in samples at the run's sample rate for its kind
    (``streaming``: the geometry of :func:`streaming_config`)."""
    cfg, kind = streaming_config(run.feature_config) if streaming else run.feature_config, run.kind
    if kind in ("mel", "mfcc"):
        seg = cfg.segment_samples(kind)
        hop_s = cfg.image_hop_seconds if kind == "mel" else cfg.mfcc_hop_seconds
        count = cfg.image_segments if kind == "mel" else cfg.mfcc_segments
        return seg, (int(round(hop_s * cfg.sr)) if hop_s and count is None else seg)
    if kind == "tempogram":
        frame, hop = cfg.tempo_step_frames * cfg.tempo_hop_length, cfg.tempo_hop_frames
    else:
        frame = cfg.hop_length
        hop = cfg.musicnn_hop_frames if kind == "musicnn" else cfg.melspec_hop_frames
    n = cfg.frames(kind)
    return n * frame, (hop or n) * frame


def streaming_config(cfg):
    """The feature config used block by block: N evenly spaced windows per track cannot be laid
    out one block at a time, so a config that asks for them gets back-to-back windows instead."""
    if cfg.image_segments is None and cfg.mfcc_segments is None:
        return cfg
    return dataclasses.replace(cfg, image_segments=None, mfcc_segments=None, image_hop_seconds=None,
                               mfcc_hop_seconds=None)


def _silent(y: np.ndarray) -> bool:
    return y.size == 0 or float(np.max(np.abs(y))) < 10.0 ** (SILENCE_DBFS / 20.0)


def _audible_windows(y: np.ndarray, run: Run, streaming: bool = False) -> np.ndarray | None:
    """Model inputs of the windows of ``y`` that are not silent (None when all are)."""
    if _silent(y):
        return None
    cfg = streaming_config(run.feature_config) if streaming else run.feature_config
    win, _ = window_geometry(run, streaming)
    keep = []
    for seg, f in extract(y, cfg, run.kind):
        start = int(round(seg.start_s * cfg.sr))
        if not _silent(y[start:start + win]):
            keep.append(f)
    return _inputs(keep, run.kind) if keep else None


def _check_level(y: np.ndarray) -> None:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > MAX_PEAK:
        raise AudioDecodeError(f"sample values reach {peak:.3g}, far outside -1..1: not usable audio")


def _blocks(path, run: Run):
    """The waveform of ``path`` as blocks that hold whole windows: the whole file when it is
    short, else overlapping blocks of about ``BLOCK_SECONDS`` laid so that every window of the
    whole track falls inside exactly one block."""
    native_sr, _, frames = audio_info(path)
    seconds = frames / native_sr
    if seconds < MIN_SECONDS:
        raise AudioDecodeError(f"too short: {seconds:.3g} s of audio; predict needs at least {MIN_SECONDS:g} s")
    sr = run.feature_config.sr
    if seconds <= STREAM_ABOVE_SECONDS:
        yield load_audio(path, sr=sr).y, False
        return
    win, hop = window_geometry(run, streaming=True)
    k = max(1, math.ceil(BLOCK_SECONDS * sr / hop))
    block, advance = (k - 1) * hop + win, k * hop
    for i, y in enumerate(stream_audio(path, sr, block, advance)):
        if i > 0 and len(y) < win:  # a tail shorter than a window: the whole track has no window there
            break
        yield y, True


def predict_file(path, run: Run, batch_size: int = 32, info: dict | None = None) -> np.ndarray:
    """Mean class probabilities of one file over its audible windows (a tempo run: the median
    BPM). A fusion run puts the tempo it fed in into ``info["tempo_bpm"]``; a file shorter than
    one window (filled as augment fills it) gets the seconds of fill in ``info["padded_s"]``.

    Raises :class:`AudioDecodeError` for a file that is not decodable, shorter than
    ``MIN_SECONDS``, silent, or not audio (samples beyond ``MAX_PEAK``)."""
    sr = run.feature_config.sr
    total, n, bpms, tempo_bpms = None, 0, [], []
    for i, (y, streaming) in enumerate(_blocks(path, run)):
        _check_level(y)
        if i == 0 and len(y) < MIN_SECONDS * sr:  # the header's length can be wrong (mp3)
            raise AudioDecodeError(f"too short: {len(y) / sr:.3g} s of audio; predict needs at least "
                                   f"{MIN_SECONDS:g} s")
        if i == 0 and not streaming and info is not None:
            win, _ = window_geometry(run)
            if len(y) < win:
                info["padded_s"] = round((win - len(y)) / sr, 2)
        x = _audible_windows(y, run, streaming)
        if x is None:
            continue
        if run.task == "tempo":
            bpms.extend(predict_window_bpm(run.model(), None, [], run_tempo_range(run), batch_size, x=x).tolist())
            continue
        if run.arch == "fusion":
            x, bpm = fusion_audio_inputs(run, y, x)
            tempo_bpms.append(bpm)
        if is_track_model(run.model()):  # one answer per track (a block of a long file), weighted by its windows
            m = len(x)
            p = m * predict_track(run.model(), x)[None]
        else:
            p = run.model().predict(x, batch_size=batch_size, verbose=0)
            m = len(p)  # windows (a fusion run's x is a list of two inputs)
        total = p.sum(axis=0) if total is None else total + p.sum(axis=0)
        n += m
    if run.task == "tempo":
        if not bpms:
            raise AudioDecodeError(f"silent: no window peaks above {SILENCE_DBFS:g} dBFS; nothing to analyse")
        return np.array([float(np.median(bpms))])
    if total is None:
        raise AudioDecodeError(f"silent: no window peaks above {SILENCE_DBFS:g} dBFS; nothing to classify")
    if info is not None and tempo_bpms:
        info["tempo_bpm"] = round(float(np.median(tempo_bpms)), 1)
    return total / n


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


def reject_threshold_for(run: Run, reject: bool, threshold: float | None) -> float | None:
    """The rejection threshold to use: ``threshold`` when given (it implies ``reject``), else the
    run's own (chosen on its validation split) when ``reject``; None for no rejection."""
    if threshold is None and not reject:
        return None
    if run.task != "genre":
        raise UserError(f"{run.path} is a {run.task} run; --reject is for genre classifiers")
    if threshold is not None:
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold <= 1):
            raise UserError(f"--reject-threshold must be a probability in [0, 1], got {threshold!r}")
        return float(threshold)
    if run.reject_threshold is None:
        raise UserError(f"{run.path} has no rejection threshold (made before genrekit calibrated runs, or "
                        "trained without a validation split): pass --reject-threshold P")
    return run.reject_threshold


def predict_files(files: list[str], run_path, top_k: int = 3, reject: bool = False,
                  reject_threshold: float | None = None) -> list[dict]:
    """Top-k genres (or a tempo) for each file; a file that cannot be analysed gets ``error``.
    Folders stand for the audio files below them. Genre probabilities are calibrated with the
    run's temperature. With ``reject`` (or an explicit ``reject_threshold``) each result also
    gets ``genre``: the top genre, or ``unknown`` when its probability is below the threshold."""
    from genrekit.evaluation.calibration import UNKNOWN, apply_temperature

    run = Run(run_path)
    threshold = reject_threshold_for(run, reject, reject_threshold)
    temperature = run.temperature if run.task == "genre" else 1.0
    k = max(1, min(top_k, len(run.labels)))
    out = []
    for f, problem in expand_inputs(files):
        entry: dict = {"file": f}
        if problem:
            entry["error"] = problem
        else:
            try:
                p = predict_file(f, run, info=entry)
            except AudioDecodeError as exc:
                entry["error"] = str(exc)
            else:
                if run.task == "tempo":
                    entry["bpm"] = round(float(p[0]), 1)
                else:
                    p = apply_temperature(p, temperature)
                    order = np.argsort(-p)[:k]
                    entry["top"] = [{"genre": run.labels[i], "probability": round(float(p[i]), 4)} for i in order]
                    if threshold is not None:
                        entry["rejected"] = bool(p[order[0]] < threshold)
                        entry["genre"] = UNKNOWN if entry["rejected"] else run.labels[order[0]]
                        entry["reject_threshold"] = round(threshold, 4)
        out.append(entry)
    return out


def format_table(results: list[dict]) -> str:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['file']}: error: {r['error']}")
            continue
        if "bpm" in r:
            lines.append(f"{r['file']}: {r['bpm']:.1f} BPM")
            continue
        tops = "  ".join(f"{t['genre']} {t['probability'] * 100:5.1f}%" for t in r["top"])
        if r.get("rejected"):
            tops = (f"unknown (top probability {r['top'][0]['probability'] * 100:.1f}% < threshold "
                    f"{r['reject_threshold'] * 100:.1f}%)  {tops}")
        tempo = f"  (tempo {r['tempo_bpm']:.1f} BPM)" if "tempo_bpm" in r else ""
        padded = f"  (shorter than one window: {r['padded_s']:.1f} s filled)" if "padded_s" in r else ""
        lines.append(f"{r['file']}: {tops}{tempo}{padded}")
    return "\n".join(lines)
