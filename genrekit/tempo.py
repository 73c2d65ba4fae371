"""Tempo regression behind ``genrekit train --task tempo`` and tempo evaluation.

Targets are BPM from an annotation file (``track_id,bpm``; GTZAN's 999 tempi ship with
genrekit and are the default), scaled to [0, 1] over 40-250 BPM; a time-stretched training
variant's target is the annotation times its stretch rate. The regressor sees tempogram
windows; a track's tempo is the median of its windows' predictions. Figures: MAE and median
absolute error in BPM, accuracy 1 (within 4 %) and accuracy 2 (octave errors allowed), at
window and track level, and a true-vs-predicted scatter plot.
"""
from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.fsio import read_csv, write_json_atomic, write_text_atomic
from genrekit.data_tools.loaders import load_arrays, select
from genrekit.data_tools.manifest import check_no_leak, manifest_checksum, read_manifest
from genrekit.errors import UserError
from genrekit.runs import HISTORY, LABELS, MODEL, Run, library_versions, run_folder, write_config

TEMPO_RANGE = (40.0, 250.0)  # BPM mapped to [0, 1]
KIND = "tempogram"


# -- annotations -------------------------------------------------------------------------------

def load_tempi(path=None) -> dict[str, float]:
    """``track_id,bpm`` rows -> {track id: BPM}. ``None``: GTZAN's ground-truth tempi (package data).
    A track id may be genrekit's (``blues/blues.00000``) or the file's stem (``blues.00000``)."""
    if path is None:
        from importlib import resources

        text = (resources.files("genrekit.data_tools") / "tempo_data" / "gtzan_tempo.csv").read_text(encoding="utf-8")
        where = "GTZAN tempi (package data)"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"tempo file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read tempo file {path}: {exc}") from None
        where = str(path)
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "bpm" not in reader.fieldnames or "track_id" not in reader.fieldnames:
        raise UserError(f"{where}: expected a CSV with columns track_id,bpm")
    out = {}
    for line, row in enumerate(reader, start=2):
        try:
            bpm = float(row["bpm"])
        except (TypeError, ValueError):
            raise UserError(f"{where} line {line}: bad bpm {row['bpm']!r}") from None
        if not 0 < bpm < float("inf"):
            raise UserError(f"{where} line {line}: bpm must be a finite positive number, got {bpm:g}")
        out[row["track_id"].strip()] = bpm
    if not out:
        raise UserError(f"{where} has no tempo rows")
    return out


def stretch_rate(augmentation: str) -> float:
    """A time-stretch variant plays ``rate`` times faster: its tempo is the original's times rate."""
    if augmentation.startswith("stretch_x"):
        return float(augmentation[len("stretch_x"):])
    return 1.0


def row_bpm(row: dict, tempi: dict[str, float]) -> float | None:
    tid = row["track_id"]
    bpm = tempi.get(tid, tempi.get(tid.rsplit("/", 1)[-1]))
    return None if bpm is None else bpm * stretch_rate(row["augmentation"])


def scale(bpm, lo_hi=TEMPO_RANGE):
    lo, hi = lo_hi
    return (np.asarray(bpm, dtype=np.float32) - lo) / (hi - lo)


def unscale(x, lo_hi=TEMPO_RANGE):
    lo, hi = lo_hi
    return np.asarray(x, dtype=np.float64) * (hi - lo) + lo


def accuracy1_metric(lo_hi=TEMPO_RANGE, tolerance: float = 0.04):
    """A Keras metric: share of predictions within ``tolerance`` of the true tempo (scaled units in,
    BPM compared). Early stopping watches it on the validation windows: with octave errors the
    validation MSE is lowest for a model that predicts the median tempo everywhere."""
    import keras
    from keras import ops

    lo, hi = lo_hi

    def accuracy1(y_true, y_pred):
        t = ops.reshape(y_true, (-1,)) * (hi - lo) + lo
        p = ops.reshape(y_pred, (-1,)) * (hi - lo) + lo
        return ops.cast(ops.abs(p - t) <= tolerance * t, "float32")

    return keras.metrics.MeanMetricWrapper(accuracy1, name="accuracy1")


def _targets(rows: list[dict], tempi: dict, what: str, lo_hi) -> tuple[list[dict], np.ndarray]:
    """Rows with an annotation inside the BPM range, and their BPM."""
    keep, bpm, missing, outside = [], [], 0, 0
    for r in rows:
        b = row_bpm(r, tempi)
        if b is None:
            missing += 1
        elif not lo_hi[0] <= b <= lo_hi[1]:
            outside += 1
        else:
            keep.append(r)
            bpm.append(b)
    if missing or outside:
        print(f"{what}: {missing} window(s) without a tempo annotation and {outside} outside "
              f"{lo_hi[0]:g}-{lo_hi[1]:g} BPM left out", file=sys.stderr, flush=True)
    return keep, np.array(bpm, dtype=np.float64)


# -- training ----------------------------------------------------------------------------------

def train_tempo(opts) -> dict:
    import keras

    from genrekit.train import (
        best_model_checkpoint,
        check_finite_features,
        check_finite_model,
        epochs_run,
        find_layer,
        log,
        make_optimizer,
        plot_curves,
        save_model,
        stop_on_non_finite_loss,
    )
    from genrekit.models import build_model, get_arch

    spec = get_arch(opts.arch)
    if spec.task != "tempo":
        raise UserError(f"{spec.name} is a genre classifier; --task tempo trains tempocnn")
    if opts.phase not in (None, "scratch") or opts.from_run:
        raise UserError("tempo regression trains from scratch (no --phase transfer/finetune, no --from)")
    for flag, on in (("--label-smoothing", opts.label_smoothing), ("--mixup", opts.mixup),
                     ("--image-aug", opts.image_aug), ("--synthetic", opts.synthetic)):
        if on:
            raise UserError(f"{flag} is for genre classifiers, not for --task tempo")
    epochs = opts.epochs if opts.epochs is not None else 60
    lr = opts.lr if opts.lr is not None else 1e-3
    data = Path(opts.data)
    fc = FeatureConfig.load(data)
    rows = read_manifest(data)
    check_no_leak(rows)
    if not select(rows, KIND, ("train", "valid", "test")):
        have = sorted({r.get("feature", "?") for r in rows})
        raise UserError(f"tempo regression trains on tempogram features but {data} has only "
                        f"{', '.join(have) or 'no'} features (rerun augment with --features tempogram)")
    tempi = load_tempi(opts.tempo_file)
    train_rows, bpm_tr = _targets(select(rows, KIND, ("train",)), tempi, "train", TEMPO_RANGE)
    valid_rows, bpm_va = _targets(select(rows, KIND, ("valid",)), tempi, "valid", TEMPO_RANGE)
    if not train_rows:
        raise UserError(f"no training tempogram windows of {data} have a tempo in {opts.tempo_file or 'GTZAN tempi'}")
    if not valid_rows:
        raise UserError(f"no annotated validation windows in {data}: early stopping needs a valid split")

    keras.utils.set_random_seed(opts.seed)
    with run_folder(opts.out, spec.name, "tempo") as (run_dir, final_dir):  # complete-or-absent
        input_shape = fc.feature_shape(KIND)
        hp = {"bpm_min": fc.tempo_bpm_min, "bpm_max": fc.tempo_bpm_max, "tempo_range": TEMPO_RANGE, **opts.hparams}
        model = build_model(spec.name, input_shape, 1, **hp)
        x_tr = check_finite_features(load_arrays(data, train_rows, KIND), train_rows, data)
        x_va = check_finite_features(load_arrays(data, valid_rows, KIND), valid_rows, data)
        norm = find_layer(model, "input_norm")
        if norm is not None:
            norm.adapt(x_tr)
        model.compile(optimizer=make_optimizer(opts.optimizer, lr), loss="mse",
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae"), accuracy1_metric()])
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_accuracy1", mode="max", patience=opts.patience,
                                                   restore_best_weights=True),
                     keras.callbacks.CSVLogger(str(run_dir / HISTORY)),
                     best_model_checkpoint(model, run_dir / "checkpoint.keras", "val_accuracy1", "max"),
                     stop_on_non_finite_loss(),
                     *opts.extra_callbacks]
        log(f"training {spec.name} on {len(train_rows)} tempogram windows ({len({r['track_id'] for r in train_rows})} "
             f"tracks), validating on {len(valid_rows)}")
        t0 = time.perf_counter()
        model.fit(x_tr, scale(bpm_tr), validation_data=(x_va, scale(bpm_va)), epochs=epochs,
                  batch_size=opts.batch_size, shuffle=True, callbacks=callbacks, verbose=opts.verbose)
        seconds = time.perf_counter() - t0
        check_finite_model(model)
        save_model(model, run_dir / MODEL)
        write_json_atomic(run_dir / LABELS, ["bpm"], only_if_changed=False)
        fc.save(run_dir)
        write_config(run_dir, {
            "arch": spec.name, "phase": "scratch", "feature_kind": KIND, "task": "tempo",
            "tempo_range": list(TEMPO_RANGE),
            "tempo_file": str(Path(opts.tempo_file).resolve()) if opts.tempo_file else None,
            "epochs": epochs, "batch_size": opts.batch_size, "learning_rate": lr, "optimizer": opts.optimizer,
            "patience": opts.patience, "early_stopping": "val_accuracy1 (max)", "seed": opts.seed,
            "hparams": dict(opts.hparams), "input_shape": list(input_shape), "parameters": int(model.count_params()),
            "feature_config": fc.to_dict(), "feature_fingerprint": fc.fingerprint(),
            "data": {"folder": str(data.resolve()), "manifest_sha256": manifest_checksum(data),
                     "train_tracks": sorted({r["track_id"] for r in train_rows}),
                     "valid_tracks": sorted({r["track_id"] for r in valid_rows}),
                     "train_rows": len(train_rows), "valid_rows": len(valid_rows)},
            "train_seconds": round(seconds, 2), "versions": library_versions(),
            "genrekit_command": " ".join(sys.argv[1:]) or None})
        plot_curves(run_dir, f"{spec.name} tempo regression")
        results = {}
        for split in ("valid", "test"):
            sr = [r for r in select(rows, KIND, (split,)) if r["augmentation"] == "original"]
            sr, _ = _targets(sr, tempi, split, (0.0, np.inf))
            if sr:
                results[split] = tempo_figures(sr, predict_window_bpm(model, data, sr), tempi)
        write_json_atomic(run_dir / "train_metrics.json", results, only_if_changed=False)
        n_epochs = epochs_run(run_dir)
    return {"run": str(final_dir), "phase": "tempo", "metrics": results, "seconds": seconds,
            "epochs_run": n_epochs}


# -- prediction and figures ----------------------------------------------------------------------

def run_tempo_range(run: Run) -> tuple[float, float]:
    """The BPM range a tempo (or fusion) run scales tempi over."""
    return tuple(run.config.get("tempo_range", TEMPO_RANGE))


def audio_bpm(model, windows: np.ndarray, lo_hi, batch_size: int = 64) -> float:
    """One waveform's tempo: the median of its tempogram windows' predictions."""
    return float(np.median(predict_window_bpm(model, None, [], lo_hi, batch_size, x=windows)))


def predict_window_bpm(model, folder, rows: list[dict], lo_hi=TEMPO_RANGE, batch_size: int = 64,
                       x: np.ndarray | None = None) -> np.ndarray:
    """Predicted BPM of tempogram windows: the rows' files under ``folder``, or the arrays ``x``."""
    if x is None:
        x = load_arrays(folder, rows, KIND)
    return unscale(model.predict(x, batch_size=batch_size, verbose=0)[:, 0], lo_hi)


def track_tempi(rows: list[dict], window_bpm) -> dict[tuple[str, str], float]:
    """(track id, augmentation) -> the median of its windows' predicted BPM."""
    groups = defaultdict(list)
    for r, b in zip(rows, window_bpm, strict=True):
        groups[(r["track_id"], r["augmentation"])].append(float(b))
    return {k: float(np.median(v)) for k, v in groups.items()}


def tempo_figures(rows: list[dict], window_bpm, tempi: dict) -> dict:
    """Window ("clip") and track level tempo figures; rows must all have annotations."""
    from genrekit.evaluation.metrics import tempo_metrics

    true_w = np.array([row_bpm(r, tempi) for r in rows])
    per_track = track_tempi(rows, window_bpm)
    keys = sorted(per_track)
    true_t = np.array([row_bpm({"track_id": t, "augmentation": a}, tempi) for t, a in keys])
    pred_t = np.array([per_track[k] for k in keys])
    return {"clip": tempo_metrics(true_w, window_bpm), "track": tempo_metrics(true_t, pred_t),
            "tracks": [{"track_id": t, "true_bpm": round(float(b), 2), "predicted_bpm": round(float(p), 2)}
                       for (t, _), b, p in zip(keys, true_t, pred_t, strict=True)]}


def evaluate_tempo(run: Run, data, split: str = "test", out=None, tempo_file=None) -> dict:
    from genrekit.evaluation.plots import plot_history, plot_tempo_scatter
    from genrekit.evaluate import check_feature_config, check_leakage

    data = Path(data)
    fc = check_feature_config(run, data)
    tempi = load_tempi(tempo_file if tempo_file is not None else run.config.get("tempo_file"))
    rows = [r for r in select(read_manifest(data), KIND, (split,)) if r["augmentation"] == "original"]
    if not rows:
        raise UserError(f"the {split} split of {data} has no tempogram rows")
    rows, _ = _targets(rows, tempi, split, (0.0, np.inf))
    if not rows:
        raise UserError(f"no {split} track of {data} has a tempo annotation")
    check_leakage(run, {r["track_id"] for r in rows})
    lo_hi = run_tempo_range(run)
    res = tempo_figures(rows, predict_window_bpm(run.model(), data, rows, lo_hi), tempi)
    res.update({"task": "tempo", "run": str(run.path), "arch": run.arch, "split": split, "data": str(data),
                "feature_fingerprint": fc.fingerprint()})
    out = Path(out) if out else run.path
    out.mkdir(parents=True, exist_ok=True)
    plot_tempo_scatter([t["true_bpm"] for t in res["tracks"]], [t["predicted_bpm"] for t in res["tracks"]],
                       out / "tempo_scatter.png", f"{run.arch} on {split} ({len(res['tracks'])} tracks)")
    hist = run.path / HISTORY
    history = read_csv(hist) if hist.is_file() else []
    if history:
        plot_history(history, out / "curves.png", f"{run.arch} training curves")
    write_json_atomic(out / "metrics.json", res, only_if_changed=False)
    write_text_atomic(out / "report.md", tempo_report(res), only_if_changed=False)
    return res


def tempo_report(res: dict) -> str:
    def f(x, pct=False):
        return "–" if x is None else (f"{100 * x:.1f} %" if pct else f"{x:.1f}")

    c, t = res["clip"], res["track"]
    L = [f"# {res['arch']} tempo on {res['split']}", "", f"- run: `{res['run']}`", f"- data: `{res['data']}`", "",
         "| figure | window level | track level (median of windows) |", "| --- | --- | --- |",
         f"| samples | {c['n']} | {t['n']} |",
         f"| mean absolute error (BPM) | {f(c['mae'])} | {f(t['mae'])} |",
         f"| median absolute error (BPM) | {f(c['median_ae'])} | {f(t['median_ae'])} |",
         f"| accuracy 1 (within 4 %) | {f(c['accuracy1'], True)} | {f(t['accuracy1'], True)} |",
         f"| accuracy 2 (x1, 2, 3, 1/2, 1/3 within 4 %) | {f(c['accuracy2'], True)} | {f(t['accuracy2'], True)} |",
         "", "![true vs predicted](tempo_scatter.png)", "",
         "Accuracy 1 and 2 as in Gouyon et al. (2006), IEEE TASLP 14(5).", ""]
    return "\n".join(L)


def format_tempo(res: dict) -> str:
    c, t = res["clip"], res["track"]

    def g(x, pct=False):
        return "    –" if x is None else (f"{100 * x:7.1f}%" if pct else f"{x:8.1f}")

    return "\n".join([f"{'':22s} {'window':>8s} {'track':>8s}",
                      f"{'MAE (BPM)':22s} {g(c['mae'])} {g(t['mae'])}",
                      f"{'median AE (BPM)':22s} {g(c['median_ae'])} {g(t['median_ae'])}",
                      f"{'accuracy 1 (4 %)':22s} {g(c['accuracy1'], True)} {g(t['accuracy1'], True)}",
                      f"{'accuracy 2 (octaves)':22s} {g(c['accuracy2'], True)} {g(t['accuracy2'], True)}",
                      f"(n = {c['n']} windows, {t['n']} tracks)"])
