"""``genrekit predict``: top-k genres for any audio file, through the run's own feature code.

The waveform is decoded at the run's sample rate, cut into the run's segments by
``data_tools.features.extract`` (the function ``augment`` used to make the training data)
and the model's probabilities are averaged over the segments.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_tools.audio import load_audio
from data_tools.features import extract, image_to_input
from genrekit.runs import Run


def features_for(y: np.ndarray, run: Run) -> np.ndarray:
    """Model inputs for one waveform: (segments, H, W, 1) images or (segments, frames, n_mfcc)."""
    feats = [f for _, f in extract(y, run.feature_config, run.kind)]
    if run.kind == "mel":
        return np.stack([image_to_input(f) for f in feats])
    return np.stack(feats).astype(np.float32)


def predict_file(path, run: Run, batch_size: int = 32, info: dict | None = None) -> np.ndarray:
    """Mean class probabilities of one file over its segments (a tempo run: the median BPM).
    A fusion run puts the tempo it fed in into ``info["tempo_bpm"]``."""
    audio = load_audio(path, sr=run.feature_config.sr)
    x = features_for(audio.y, run)
    if run.task == "tempo":
        from genrekit.tempo import audio_bpm, run_tempo_range

        return np.array([audio_bpm(run.model(), x, run_tempo_range(run), batch_size)])
    if run.arch == "fusion":
        from genrekit.fusion import fusion_audio_inputs

        x, bpm = fusion_audio_inputs(run, audio.y, x)
        if info is not None:
            info["tempo_bpm"] = round(bpm, 1)
    proba = run.model().predict(x, batch_size=batch_size, verbose=0)
    return proba.mean(axis=0)


def predict_files(files: list[str], run_path, top_k: int = 3) -> list[dict]:
    from data_tools.errors import AudioDecodeError

    run = Run(run_path)
    k = max(1, min(top_k, len(run.labels)))
    out = []
    for f in files:
        entry: dict = {"file": str(f)}
        if not Path(f).is_file():
            entry["error"] = "file not found"
        else:
            try:
                p = predict_file(f, run, info=entry)
            except AudioDecodeError as exc:
                entry["error"] = str(exc)
            else:
                if run.task == "tempo":
                    entry["bpm"] = round(float(p[0]), 1)
                else:
                    order = np.argsort(-p)[:k]
                    entry["top"] = [{"genre": run.labels[i], "probability": round(float(p[i]), 4)} for i in order]
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
        tempo = f"  (tempo {r['tempo_bpm']:.1f} BPM)" if "tempo_bpm" in r else ""
        lines.append(f"{r['file']}: {tops}{tempo}")
    return "\n".join(lines)
