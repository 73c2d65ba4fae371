"""``genrekit embed``: per-window embeddings of audio files for users' own downstream models.

The embedding of a run is its backbone's output for one window: for a track model
(``musicnn_lr``) the per-window backbone (:func:`genrekit.models.track.window_embedder`), for any other
genre run the input of its ``predictions`` layer (for musicnn runs: the output of the layer
named "base"). ``--backbone musicnn`` uses the pretrained MSD/MTT musicnn without any run.

Each audio file gives ``<name>.npy`` (float32, windows x dims) and/or ``<name>.csv`` (a
``start_s`` column, then ``e0 ... e{dims-1}``), written under ``--out`` complete-or-absent.
Windows are cut by the same feature code as training and predict (long files block by block).
"""
from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from genrekit.data_tools.audio import (
    AUDIO_EXTENSIONS,
    audio_files_under,
    audio_info,
    load_audio,
    stream_audio,
)
from genrekit.data_tools.errors import AudioDecodeError, DataError
from genrekit.data_tools.features import MUSICNN_FEATURES, FeatureConfig, extract
from genrekit.data_tools.fsio import (
    check_no_links,
    loads_json,
    write_bytes_atomic,
    write_json_atomic,
)
from genrekit.errors import UserError
from genrekit.models.errors import ModelError
from genrekit.models.musicnn import N_FRAMES, N_MELS, embedding_model
from genrekit.models.track import is_track_model, window_embedder
from genrekit.predict import (
    BLOCK_SECONDS,
    MIN_SECONDS,
    STREAM_ABOVE_SECONDS,
    model_inputs,
    streaming_config,
    window_geometry,
)
from genrekit.runs import Run
from genrekit.tasks import task_of

MARKER = "genrekit_embed.json"  # in --out: the files embed wrote there (only those are ever replaced)
FORMATS = ("npy", "csv")
BATCH_WINDOWS = 32  # windows per backbone call: bounds activation memory (as training and predict)


def run_embedder(run_path):
    """(source, per-window embedding model) of a run."""
    run = Run(run_path)
    if not task_of(run).embeds or len(run.model().inputs) != 1:
        raise UserError(f"{run.path}: embed takes a genre run with one input (this is a {run.task} {run.arch} run)")
    model = run.model()
    if is_track_model(model):
        emb = window_embedder(model)
    else:
        import keras

        try:
            head = model.get_layer("predictions")
        except ValueError:
            raise UserError(f"{run.path}: the model has no layer named 'predictions' to take the embedding "
                            "before") from None
        emb = keras.Model(model.inputs, head.input, name="embedding")
    return SimpleNamespace(feature_config=run.feature_config, kind=run.kind, model=emb,
                           source=f"run {run.path} ({run.arch})")


def backbone_embedder(name: str, weights: str = "msd", layer: str = "penultimate"):
    """(source, per-window embedding model) of a pretrained backbone: ``musicnn`` only,
    with its ``weights`` and embedding ``layer``."""

    if name != "musicnn":
        raise UserError(f"unknown --backbone {name!r} (known: musicnn)")
    try:
        model = embedding_model((N_FRAMES, N_MELS), weights=weights, embedding=layer)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    return SimpleNamespace(feature_config=FeatureConfig(**MUSICNN_FEATURES), kind="musicnn", model=model,
                           source=f"musicnn backbone ({weights} weights, {layer} layer)")


def _inputs(feats, kind):

    return model_inputs(feats, kind)


def embed_file(path, emb) -> tuple[np.ndarray, np.ndarray]:
    """(start seconds of each window, embeddings windows x dims) of one audio file; a file
    longer than predict's streaming limit is read block by block, in bounded memory."""
    cfg, sr = emb.feature_config, emb.feature_config.sr
    native_sr, _, frames = audio_info(path)
    seconds = frames / native_sr
    if seconds < MIN_SECONDS:
        raise AudioDecodeError(f"too short: {seconds:.3g} s of audio; embed needs at least {MIN_SECONDS:g} s")
    if seconds <= STREAM_ABOVE_SECONDS:
        blocks = [(0, load_audio(path, sr=sr).y)]
        block_cfg = cfg
    else:
        win, hop = window_geometry(emb, streaming=True)
        k = max(1, math.ceil(BLOCK_SECONDS * sr / hop))
        block, advance = (k - 1) * hop + win, k * hop
        blocks = ((i * advance, y) for i, y in enumerate(stream_audio(path, sr, block, advance)))
        block_cfg = streaming_config(cfg)
    starts, out = [], []
    for offset, y in blocks:
        if offset and len(y) < window_geometry(emb, streaming=True)[0]:
            break
        if y.size and float(np.max(np.abs(y))) > 1000.0:
            raise AudioDecodeError("sample values far outside -1..1: not usable audio")
        segs = extract(y, block_cfg, emb.kind)
        if not segs:
            continue
        x = _inputs([f for _, f in segs], emb.kind)
        for i in range(0, len(x), BATCH_WINDOWS):
            out.append(np.asarray(emb.model(x[i:i + BATCH_WINDOWS], training=False), dtype=np.float32))
        starts += [offset / sr + s.start_s for s, _ in segs]
    if not out:
        raise AudioDecodeError("no window to embed")
    e = np.concatenate(out)
    return np.round(np.asarray(starts, dtype=np.float64), 6), e.reshape(len(e), -1)


def _plan(items, out: Path) -> list[tuple[str, Path | None, str | None]]:
    """(audio file, output stem under ``out`` or None, error or None) for each input; a folder
    stands for the audio files below it, named by their path inside it."""
    plan = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = audio_files_under(p)
            if not found:
                plan.append((str(item), None, f"is a folder with no audio files ({', '.join(AUDIO_EXTENSIONS)})"))
            base = Path(p.resolve().name or "audio")
            plan += [(str(f), out / base / f.relative_to(p).with_suffix(""), None) for f in found]
        elif not p.exists():
            plan.append((str(item), None, "file not found"))
        elif not p.is_file():
            plan.append((str(item), None, "not a regular file"))
        else:
            plan.append((str(item), out / p.with_suffix("").name, None))
    return plan


def _check_out(out: Path) -> set[str]:
    """The files an earlier embed wrote under ``out`` (which may be replaced); refuse an --out
    that is a file, a link, or a folder of someone else's."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out} exists and is not a folder; choose a new --out")
    if not out.exists() or not any(out.iterdir()):
        return set()
    try:
        mine = loads_json((out / MARKER).read_text(encoding="utf-8"))
        if isinstance(mine, dict) and isinstance(mine.get("files"), list):
            return {f for f in mine["files"] if isinstance(f, str)}
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    raise UserError(f"--out {out} is a folder that genrekit embed did not make (no {MARKER}); "
                    "choose a new or empty --out")


def _looks_like_ours(path: Path) -> bool:
    """An output embed wrote and nobody replaced since: a float32 2-D .npy, or a CSV whose
    first column is start_s."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            if path.suffix == ".npy":
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                return dtype == np.float32 and len(shape) == 2
            return fh.read(8) == b"start_s,"
    except (OSError, ValueError):
        return False


def _csv_bytes(starts: np.ndarray, e: np.ndarray) -> bytes:
    buf = io.StringIO()
    buf.write(",".join(["start_s"] + [f"e{i}" for i in range(e.shape[1])]) + "\n")
    np.savetxt(buf, np.column_stack([starts, e]), delimiter=",", fmt="%.9g")
    return buf.getvalue().encode("utf-8")


def embed_files(items, out, emb, formats=FORMATS, progress: bool = False) -> list[dict]:
    """Embed every audio file of ``items`` into ``out``; one result per file, with ``error`` for
    a file that could not be embedded (the rest goes on)."""
    out = Path(os.path.abspath(out))
    formats = list(dict.fromkeys(formats))
    if not formats or any(f not in FORMATS for f in formats):
        raise UserError(f"unknown --format {','.join(formats)!r} (known: {', '.join(FORMATS)})")
    mine = _check_out(out)
    plan = _plan(items, out)
    check_no_links(out, sorted({stem.parent.relative_to(out) for _, stem, _ in plan if stem is not None}),
                   files=(MARKER,))
    results, seen = [], set()
    made = not out.exists()
    for n, (f, stem, problem) in enumerate(plan, 1):
        entry: dict = {"file": f}
        targets = [] if stem is None else [stem.with_name(stem.name + "." + fmt) for fmt in formats]
        rel = [str(t.relative_to(out)) for t in targets]
        if problem is None:
            clash = [r for r in rel if r in seen]
            theirs = [r for t, r in zip(targets, rel, strict=True) if (t.exists() or t.is_symlink())
                      and not (r in mine and _looks_like_ours(t))]
            if clash:
                problem = f"its output {clash[0]} is also another input's (rename one of them)"
            elif theirs:
                problem = f"{out / theirs[0]} exists and genrekit embed did not write it"
        if problem is None:
            try:
                starts, e = embed_file(f, emb)
            except (AudioDecodeError, DataError) as exc:
                problem = str(exc)
            else:
                for t, fmt in zip(targets, formats, strict=True):
                    if fmt == "npy":
                        buf = io.BytesIO()
                        np.save(buf, e)
                        data = buf.getvalue()
                    else:
                        data = _csv_bytes(starts, e)
                    write_bytes_atomic(t, data)
                    mine.add(str(t.relative_to(out)))
                write_json_atomic(out / MARKER, {"files": sorted(mine), "source": emb.source}, only_if_changed=False)
                entry.update(windows=int(e.shape[0]), dims=int(e.shape[1]), outputs=[str(t) for t in targets],
                             hop_s=round(float(starts[1] - starts[0]), 6) if len(starts) > 1 else None)
        seen.update(rel)
        if problem is not None:
            entry["error"] = problem
        results.append(entry)
        if progress:
            print(f"\r{n}/{len(plan)} files", end="", file=sys.stderr, flush=True)
    if progress and plan:
        print(file=sys.stderr)
    if made and out.exists() and not any(out.iterdir()):
        out.rmdir()  # nothing embedded: nothing left behind
    return results
