"""The model card of an export bundle: what the model is, what it was trained and measured on,
exactly what input it takes, and how to use it without genrekit (``MODEL_CARD.md`` + ``model_card.json``).

Everything here is read from the run folder (config.json, train_metrics.json, calibration,
RUN/eval/<split>/metrics.json); nothing is re-typed.
"""
from __future__ import annotations

from pathlib import Path

from genrekit.data_tools.features import get_kind
from genrekit.data_tools.fsio import loads_json
from genrekit.models.track import is_track_model
from genrekit.runs import Run
from genrekit.tasks import task_of

EXAMPLE = "examples/predict_export.py"  # in the genrekit repository (tests/test_export_bundle.py runs it)
RUNTIME_INSTALL = ("`pip install numpy librosa onnxruntime` (for model.tflite: tensorflow instead of onnxruntime), "
                   "or from a genrekit checkout `pip install \".[export]\"` (tf2onnx, onnx and onnxruntime)")
MIN_SECONDS = 1.0  # genrekit.predict.MIN_SECONDS (kept equal by tests/test_export_bundle.py)
SILENCE_DBFS = -80.0  # genrekit.predict.SILENCE_DBFS
FIGURES = ("top1", "top2", "f1_macro", "n")
MODEL_FILES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
LICENCE_NOTES = [
    "GTZAN (and models trained on it) carries no licence: research use only; the audio is "
    "copyrighted and the data set has known faults (repeats, mislabellings, artist overlap, see "
    "Sturm 2013) that inflate figures measured on random splits.",
    "musicnn weights (Pons & Serra 2019, MSD/MTT checkpoints): ISC licence; keep its notice when "
    "redistributing a model built on them.",
    "Data you trained on yourself: its own licence applies to the model.",
]
INTENDED_USE = (
    "Music genre tagging of whole audio files for research, teaching and prototyping with the "
    "classes listed. Not for moderation, royalty or any decision about people. The model only "
    "knows its classes: music of another genre gets one of them (look at the top probability, "
    "or at genrekit predict --reject), and figures on GTZAN do not carry over to other music "
    "(see the out-of-domain figures when present).")


def input_spec(run: Run, track: bool) -> dict:
    """What the model takes: decoding, the exact feature formula of the run's kind, the window
    geometry and the tensor layout."""
    cfg, kind = run.feature_config, run.kind
    spec = {"feature_kind": kind, "sample_rate_hz": cfg.sr, "n_fft": cfg.n_fft, "hop_length": cfg.hop_length,
            "n_mels": cfg.n_mels, "fmin_hz": cfg.fmin, "fmax_hz": cfg.fmax, "pad_mode": cfg.pad_mode,
            "decoding": f"mono (channels averaged), float32, resampled to {cfg.sr} Hz with soxr HQ "
                        f"(librosa.load(path, sr={cfg.sr}, mono=True, res_type='soxr_hq'))",
            "min_seconds": MIN_SECONDS,
            "silent_windows": f"windows whose peak is below {SILENCE_DBFS:g} dBFS are left out"}
    feature_kind, w = get_kind(kind), cfg.windows(kind)
    if w.frames is not None:  # windows cut from the whole file's spectrogram
        frames, hop = w.frames, w.hop_frames or w.frames
        step_s = w.frame_samples / cfg.sr
        width = feature_kind.shape(cfg)[1]
        spec.update(window_frames=frames, window_hop_frames=hop, window_seconds=round(frames * step_s, 6),
                    window_hop_seconds=round(hop * step_s, 6), window_shape=[frames, width])
        spec["windows"] = (f"X (frames, {width}) = the feature transposed to time first; windows X[i*{hop}:i*{hop}+{frames}] "
                           f"for i = 0, 1, ... while complete (an incomplete last window is dropped); a file shorter "
                           f"than one window is filled to {frames} frames with numpy.pad mode "
                           f"'{'wrap' if cfg.pad_mode == 'wrap' else 'constant'}'")
    else:  # segments of the waveform, each rendered on its own
        spec.update(window_seconds=w.seconds, window_hop_seconds=w.hop_seconds, windows_per_file=w.count,
                    window_shape=list(feature_kind.input_shape(cfg)))
    spec["formula"] = feature_kind.describe(cfg)
    spec["model_input"] = ("one track: float32 (1, windows, " + ", ".join(map(str, spec["window_shape"])) +
                           "), all windows of the file at once; output: the track's class probabilities"
                           if track else
                           "float32 (windows, " + ", ".join(map(str, spec["window_shape"])) +
                           "), any number of windows; output: per-window class probabilities, averaged over "
                           "the file's windows")
    spec["track_model"] = bool(track)
    return spec


def _figures(block) -> dict:
    out = {}
    for level in ("track", "clip"):
        m = block.get(level) if isinstance(block, dict) else None
        if isinstance(m, dict):
            out[level] = {k: m[k] for k in FIGURES if isinstance(m.get(k), (int, float))}
    return out


def _read_json(path: Path):
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def one_spelling(path: str | None) -> str | None:
    """A data folder's path as one spelling (``Path.resolve()``: absolute, no ``..``, links
    followed), so that one data set recorded as ``feats`` by evaluate and as ``/home/me/feats``
    by train is listed once; a relative path that no longer resolves from here is kept as
    recorded."""
    if not path:
        return path
    p = Path(path)
    try:
        return str(p.resolve()) if p.is_absolute() or p.exists() else path
    except (OSError, RuntimeError):
        return path


def training_data_name(config: dict) -> str | None:
    """The data the end-of-training figures are on: the feature folder, or each of several
    ``--data`` folders joined with " + " (their valid and test splits are pooled).

    >>> training_data_name({"data": {"folder": "/f/a", "collections": [{"folder": "/f/a"}, {"folder": "/f/b"}]}})
    '/f/a + /f/b'"""
    data = config.get("data") or {}
    cols = data.get("collections") or []
    if cols:
        return " + ".join(str(one_spelling(str(c.get("folder")))) for c in cols)
    return one_spelling(data.get("folder"))


def evaluations(run: Run) -> list[dict]:
    """Figures measured on the run: train_metrics.json (valid/test at the end of training) and
    each ``RUN/eval/<split>/metrics.json``; an evaluation whose data folder or split names ood
    marks out-of-domain figures."""
    out = []
    tm = _read_json(run.path / "train_metrics.json")
    if isinstance(tm, dict):
        for split in ("valid", "test"):
            if isinstance(tm.get(split), dict):
                out.append({"split": split, "source": "train_metrics.json",
                            "data": training_data_name(run.config),
                            "out_of_domain": False, **_figures(tm[split])})
    root = run.path / "eval"
    for p in sorted(root.glob("*/metrics.json")) if root.is_dir() else []:
        met = _read_json(p)
        if not isinstance(met, dict):
            continue
        ctx = [c for c in met.get("context", []) if isinstance(c, str)]
        data = one_spelling(next((c.split("`")[1] for c in ctx if c.startswith("data:") and c.count("`") >= 2), None))
        split = met.get("split") if isinstance(met.get("split"), str) else p.parent.name
        # the data folder's own name, not its parents' ("/home/goodwin/feats" is not out of domain)
        ood = "ood" in f"{Path(data).name if data else ''} {split} {p.parent.name}".lower()
        out.append({"split": split, "source": f"eval/{p.parent.name}/metrics.json", "data": data,
                    "out_of_domain": ood, **_figures(met)})
    return out


def model_card(run: Run, formats, temperature: float, calibration: dict) -> dict:
    """The model card of ``run`` as a mapping (``model_card.json``): classes, the files of
    ``formats``, training data, every evaluation found, adaptations, input, output (with
    ``temperature`` and ``calibration``'s rejection rule), intended use, licences, versions."""
    model, task = run.model(), task_of(run)
    track = is_track_model(model)
    data = run.config.get("data") or {}
    evals = evaluations(run)
    if track:  # each clip carries its track's probabilities: the clip figures are the track figures again
        for e in evals:
            e.pop("clip", None)
    split_tracks = {s: len(data.get(f"{s}_tracks") or []) for s in ("train", "valid", "test")
                    if data.get(f"{s}_tracks") is not None}
    for e in evals:  # the test tracks are not listed in config.json: train_metrics.json counts them
        if e["source"] == "train_metrics.json" and e["split"] not in split_tracks and "n" in e.get("track", {}):
            split_tracks[e["split"]] = e["track"]["n"]
    return {
        "name": run.path.name, "arch": run.arch, "phase": run.config.get("phase"), **task.export_metadata(run),
        "classes": list(run.labels), "files": {f: MODEL_FILES[f] for f in formats},
        "training_data": {"folder": data.get("folder"), "manifest_sha256": data.get("manifest_sha256"),
                          "split_tracks": split_tracks,
                          "split_rows": {s: data.get(f"{s}_rows") for s in ("train", "valid", "test")
                                         if data.get(f"{s}_rows") is not None},
                          "seed": run.config.get("seed"), "weights": run.config.get("weights"),
                          **({"collections": data["collections"], "collection_weight": data.get("collection_weight")}
                             if data.get("collections") else {})},
        "evaluations": evals,
        "adapted": _adapted(run.config.get("adapt")),
        "input": input_spec(run, track),
        "output": {"probabilities": task.card_output(run),
                   "aggregation": "the model pools all windows of the track" if track else
                   "mean of the per-window probabilities over the file's windows",
                   "calibration": f"p_calibrated = p ** (1 / T) / sum(p ** (1 / T)) with T = {temperature:g} "
                                  "(calibration.json; T = 1 changes nothing)",
                   "temperature": temperature, "reject_threshold": calibration.get("reject_threshold"),
                   "reject_rule": calibration.get("reject_rule", "top_probability"),
                   "reject_distance": calibration.get("distance")},
        "intended_use": INTENDED_USE, "licence_notes": LICENCE_NOTES,
        "versions": run.config.get("versions"),
    }


def _adapted(a) -> list[dict]:
    """What ``genrekit adapt`` added to the run, latest first (an adapted run can be adapted again)."""
    out = []
    while isinstance(a, dict):
        out.append({k: a.get(k) for k in ("source", "tracks", "tracks_per_genre", "new_genres", "weight",
                                          "weight_rule", "C", "run_tracks", "before_accuracy", "after_accuracy")})
        a = a.get("previous")
    return out


def _adapted_markdown(steps: list[dict]) -> list[str]:
    if not steps:
        return []
    lines = ["", "## Adapted to the user's music", ""]
    for a in steps:
        per = ", ".join(f"{g} {n}" for g, n in (a.get("tracks_per_genre") or {}).items())
        lines.append(f"- `genrekit adapt` added {a.get('tracks')} labelled tracks ({per}) from `{a.get('source')}` to "
                     f"the {a.get('run_tracks')} tracks the head was fitted on; each weighs {a.get('weight'):.3g} of "
                     f"them ({a.get('weight_rule')}), C = {a.get('C')}"
                     + (f"; new genres: {', '.join(a['new_genres'])}" if a.get("new_genres") else ""))
        figs = []
        if a.get("before_accuracy") is not None:
            figs.append(f"before, the run got {a['before_accuracy']:.1%} of those tracks of genres it knew right")
        if a.get("after_accuracy") is not None:
            figs.append(f"after, {a['after_accuracy']:.1%} out of fold (each track predicted by a head fitted "
                        "without it)")
        if figs:
            lines.append(f"  ({'; '.join(figs)})")
    return lines


def _collections_markdown(td: dict) -> list[str]:
    """The feature folders of a run trained on several, with their weights (none for one)."""
    cols = td.get("collections") or []
    if not cols:
        return []
    lines = [f"- trained on {len(cols)} feature folders (`genrekit train --data A --data B`), each track of a "
             f"later folder weighing the given number of the first's ({td.get('collection_weight')}):"]
    for c in cols:
        prefix = f", track ids prefixed `{c['track_prefix']}`" if c.get("track_prefix") else ""
        lines.append(f"  - `{c.get('folder')}`: {c.get('train_tracks')} training tracks, {c.get('rows')} rows, "
                     f"genres {', '.join(c.get('genres') or [])}; weight {c.get('weight'):.3g}{prefix}")
    return lines


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def model_card_markdown(card: dict) -> str:
    """``MODEL_CARD.md``: :func:`model_card`'s ``card`` as Markdown, with the steps to use
    the model without genrekit."""
    inp, out = card["input"], card["output"]
    lines = [f"# Model card: {card['name']}", "",
             f"Genre classifier `{card['arch']}` ({card['phase']}) exported by genrekit. "
             f"Files: {', '.join(f'`{v}`' for v in card['files'].values())}, `labels.json`, `feature_config.json`, "
             "`calibration.json`, `model_card.json`.", "",
             "## Classes", "", ", ".join(card["classes"]), "",
             "## Training data and split", ""]
    td = card["training_data"]
    lines += [f"- feature folder: `{td['folder']}` (manifest sha256 `{td['manifest_sha256']}`)",
              f"- tracks per split: {', '.join(f'{k} {v}' for k, v in td['split_tracks'].items()) or 'not recorded'}",
              f"- seed {td['seed']}, backbone weights: {td['weights']}"]
    lines += _collections_markdown(td)
    lines += ["", "## Figures", ""]
    if card["evaluations"]:
        lines += ["| split | data | out of domain | from | level | top-1 | top-2 | macro F1 | n |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in card["evaluations"]:
            source = "end of training" if e["source"] == "train_metrics.json" else f"`{e['source']}`"
            for level in ("track", "clip"):
                if e.get(level):
                    f = e[level]
                    lines.append(f"| {e['split']} | `{e['data']}` | {'yes' if e['out_of_domain'] else 'no'} | {source} "
                                 f"| {level} | " + " | ".join(_fmt(f.get(k, '')) for k in FIGURES) + " |")
        if not any(e["out_of_domain"] for e in card["evaluations"]):
            lines += ["", "No out-of-domain evaluation (e.g. `genrekit evaluate` on ood_dev) was found in the run."]
    else:
        lines.append("No figures were found in the run.")
    lines += _adapted_markdown(card.get("adapted") or [])
    lines += ["", "## Input", ""]
    for k in ("decoding", "formula", "windows", "model_input", "silent_windows"):
        if inp.get(k):
            lines.append(f"- {k.replace('_', ' ')}: {inp[k]}")
    lines.append(f"- files shorter than {inp['min_seconds']:g} s are refused by genrekit predict")
    geo = {k: inp[k] for k in ("sample_rate_hz", "n_fft", "hop_length", "n_mels", "window_frames", "window_seconds",
                                "window_hop_frames", "window_hop_seconds") if k in inp}
    lines += [f"- settings: {', '.join(f'{k} {v}' for k, v in geo.items())}", "", "## Output", "",
              f"- {out['probabilities']}; {out['aggregation']}", f"- calibration: {out['calibration']}"]
    if out.get("reject_rule") == "embedding_distance" and out.get("reject_distance"):
        d = out["reject_distance"]
        lines.append(f"- genrekit predict --reject answers `unknown` when the track's pooled embedding is farther than "
                     f"{d['threshold']:.4g} (mean squared distance to its {d['k']} nearest of {d['train_tracks']} "
                     f"training tracks, standardised, {d['dims']} principal components; `openset.npz`) — the "
                     f"threshold keeps {d['accept']:.0%} of {d.get('heldout_tracks', d.get('valid_tracks'))} held-out "
                     f"tracks accepted ({d.get('threshold_from', 'validation tracks')})")
    elif out.get("reject_threshold") is not None:
        lines.append(f"- genrekit predict --reject answers `unknown` below a calibrated top probability of "
                     f"{out['reject_threshold']:.3f}")
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Licence notes", ""]
    lines += [f"- {n}" for n in card["licence_notes"]]
    lines += ["", "## Use it without genrekit", "",
              f"The genrekit repository's `{EXAMPLE}` (`python {EXAMPLE} BUNDLE_FOLDER song.wav [--tflite]`) does "
              "all of the steps below with only numpy, librosa and onnxruntime (or TensorFlow's TFLite interpreter) "
              "and gives the probabilities of `genrekit predict` (to 1e-4) for the musicnn and melspec feature kinds. "
              f"Install those with {RUNTIME_INSTALL}.", "", "```python",
              "import json, librosa, numpy as np, onnxruntime as ort",
              "cfg = json.load(open('feature_config.json')); labels = json.load(open('labels.json'))",
              "y, _ = librosa.load('song.wav', sr=cfg['sr'], mono=True, res_type='soxr_hq')",
              "# ... features and windows as in 'Input' above -> x",
              "sess = ort.InferenceSession('model.onnx')",
              "p = sess.run(None, {sess.get_inputs()[0].name: x})[0]" +
              ("[0]  # x: (1, windows, ...)" if inp["track_model"] else ".mean(axis=0)  # x: (windows, ...)"),
              "T = json.load(open('calibration.json'))['temperature']; p = p ** (1 / T); p /= p.sum()",
              "print(sorted(zip(p, labels), reverse=True)[:3])", "```", ""]
    return "\n".join(lines)
